"""Simple look-development for Cadence heads: one material per part (skin, lips, eyes, teeth, …).

Heads that name their parts (``model.meta["material_groups"]``: part -> face ids, e.g. the
default head) get a material per part; any other head gets skin. Materials are shared by name, so
every Cadence head in a file uses the same "Cadence Skin" that a user can edit once.
"""

from __future__ import annotations

import bpy
import numpy as np

# part -> (material name, base colour (linear RGBA), roughness)
PALETTE: dict[str, tuple[str, tuple[float, float, float, float], float]] = {
    "skin": ("Cadence Skin", (0.80, 0.56, 0.46, 1.0), 0.55),
    "lips": ("Cadence Lips", (0.62, 0.28, 0.26, 1.0), 0.45),
    "mouth": ("Cadence Mouth", (0.30, 0.06, 0.07, 1.0), 0.6),
    "eyes": ("Cadence Eye White", (0.85, 0.83, 0.80, 1.0), 0.15),
    "iris": ("Cadence Iris", (0.18, 0.28, 0.38, 1.0), 0.2),
    "pupil": ("Cadence Pupil", (0.01, 0.01, 0.01, 1.0), 0.1),
    "teeth": ("Cadence Teeth", (0.86, 0.84, 0.76, 1.0), 0.3),
    "brows": ("Cadence Brows", (0.045, 0.028, 0.018, 1.0), 0.8),
}


def material(part: str) -> bpy.types.Material:
    """The shared material for a part (created on first use)."""
    name, color, roughness = PALETTE.get(part, PALETTE["skin"])
    mat = bpy.data.materials.get(name)
    if mat is None:
        mat = bpy.data.materials.new(name)
        if bpy.app.version < (5, 0, 0):  # 5.0: materials always use nodes (use_nodes is deprecated)
            mat.use_nodes = True
        bsdf = mat.node_tree.nodes.get("Principled BSDF")
        if bsdf is not None:
            bsdf.inputs["Base Color"].default_value = color
            bsdf.inputs["Roughness"].default_value = roughness
        mat.diffuse_color = color  # what Workbench and the viewport show
        mat.roughness = roughness
    return mat


def assign(mesh: bpy.types.Mesh, groups: dict | None) -> None:
    """Give ``mesh`` its materials: one per named part of ``groups``, else skin only."""
    if not groups:
        mesh.materials.append(material("skin"))
        return
    index = np.zeros(len(mesh.polygons), dtype=np.int32)
    for slot, (part, faces) in enumerate(groups.items()):
        mesh.materials.append(material(part))
        faces = np.asarray(faces, dtype=np.int64)
        index[faces[(faces >= 0) & (faces < len(index))]] = slot
    mesh.polygons.foreach_set("material_index", index)
