"""Heads get a material per named part (default head) or skin (any other head)."""

from __future__ import annotations

import numpy as np


def test_default_head_parts_get_their_materials(clean_scene):
    import bpy

    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    rig = bpy.context.active_object
    mesh = bpy.data.objects[rig["cadence"]["mesh"]].data
    names = [m.name for m in mesh.materials]
    assert {"Cadence Skin", "Cadence Lips", "Cadence Iris", "Cadence Teeth", "Cadence Brows"} <= set(names)
    idx = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("material_index", idx)
    from inference.heads.default_head import build_default_head

    groups = build_default_head().meta["material_groups"]
    for part, faces in groups.items():
        expected = names.index({"skin": "Cadence Skin", "lips": "Cadence Lips", "mouth": "Cadence Mouth",
                                "eyes": "Cadence Eye White", "iris": "Cadence Iris", "pupil": "Cadence Pupil",
                                "teeth": "Cadence Teeth", "brows": "Cadence Brows"}[part])
        assert np.all(idx[np.asarray(faces)] == expected), part
    # A second head shares the materials instead of duplicating them.
    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    assert len([m for m in bpy.data.materials if m.name.startswith("Cadence Skin")]) == 1


def test_head_without_parts_gets_skin(clean_scene, cadence, tmp_path):
    import bpy
    import flame_fixture

    path = tmp_path / "flame.pkl"
    flame_fixture.write_flame_pkl(path)
    assert bpy.ops.cadence.add_head(filepath=str(path)) == {"FINISHED"}
    mesh = bpy.data.objects[bpy.context.active_object["cadence"]["mesh"]].data
    assert [m.name for m in mesh.materials] == ["Cadence Skin"]
