"""ARKit-52 in and out: tolerant name matching, retargeting a take onto an ARKit-named character built here,
and a Live Link Face style CSV exported, imported as a take and exported again (same curves within 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.blender
FPS, N = 30, 40


def _take(cadence, rig):
    """A known take: a blink, a press, a smile on one side, the jaw opening, head and eyes turning."""
    names = tuple(rig["cadence"]["expr_names"])
    t = np.arange(N) / FPS
    expr = np.zeros((N, len(names)))
    expr[:, names.index("eyeBlink_L")] = np.clip(np.sin(np.pi * t / t[-1]), 0, 1)
    expr[:, names.index("mouthPress")] = 0.5 + 0.4 * np.sin(2 * np.pi * t)
    expr[:, names.index("mouthSmile_R")] = np.linspace(0, 0.8, N)
    jaw = np.stack([0.3 * np.abs(np.sin(3 * t)), np.zeros(N), np.zeros(N)], -1)
    rot = np.stack([0.2 * np.sin(2 * t), 0.4 * np.sin(1.3 * t), 0.05 * np.cos(t)], -1)
    eyes = np.stack([np.stack([0.1 * np.sin(t), 0.2 * np.cos(t), np.zeros(N)], -1)] * 2, axis=1)
    ch = cadence.inference.protocol.Channels(fps=FPS, n_frames=N, expr_names=names, groups={
        "expression": expr, "jaw": jaw, "head_rotation": rot, "head_translation": np.zeros((N, 3)), "eyes": eyes})
    cadence.operators.keys.keyframes.write_take(rig, ch, frame_start=1, take_name="Known")
    return ch


@pytest.fixture
def rig(clean_scene):
    import bpy

    clean_scene.render.fps, clean_scene.render.fps_base = FPS, 1.0
    clean_scene.frame_start, clean_scene.frame_end = 1, N
    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    return bpy.context.active_object


def test_names_match_whatever_their_case_and_separators(cadence):
    arkit = cadence.operators.keys.arkit
    keys = {arkit.name_key(n) for n in ("eyeBlinkLeft", "EyeBlinkLeft", "eyeBlink_L", "eye_blink.l", "EYE_BLINK_LEFT")}
    assert keys == {"eyeblinkleft"}
    assert arkit.name_key("mouthSmile_R") == arkit.name_key("MouthSmileRight") != arkit.name_key("mouthSmileLeft")
    found = arkit.match_names(["Basis", "jawOpen", "JAW_OPEN", "browInnerUp", "mouthSmile_L", "smile"])
    assert found == {"JawOpen": "jawOpen", "BrowInnerUp": "browInnerUp", "MouthSmileLeft": "mouthSmile_L"}


def test_retarget_onto_an_arkit_character(cadence, rig):
    import bpy

    ch = _take(cadence, rig)
    bpy.ops.mesh.primitive_plane_add()
    target = bpy.context.active_object
    target.name = "Character"
    target.shape_key_add(name="Basis")
    for n in ("eyeBlinkLeft", "EyeBlink_R", "jawOpen", "mouth_press.l", "mouthPressRight", "mouthSmileRight",
              "notArkit"):
        target.shape_key_add(name=n)
    untouched = target.data.shape_keys.key_blocks["notArkit"].value  # (new keys start at 0 on 4.5, 1 on 5.0)
    bpy.context.view_layer.objects.active = rig
    assert bpy.ops.cadence.retarget_arkit(target="Character") == {"FINISHED"}
    status = bpy.context.scene.cadence.status
    assert "EyeBlinkLeft" in status and "MouthPressLeft" in status and "notArkit" not in status
    blocks = target.data.shape_keys.key_blocks
    names = ch.expr_names
    expr, jaw = ch.get("expression"), ch.get("jaw")
    scene = bpy.context.scene
    for f in (1, 11, 27, N):
        scene.frame_set(f)
        k = f - 1
        assert blocks["eyeBlinkLeft"].value == pytest.approx(expr[k, names.index("eyeBlink_L")], abs=1e-4)
        assert blocks["mouth_press.l"].value == pytest.approx(expr[k, names.index("mouthPress")], abs=1e-4)
        assert blocks["mouthPressRight"].value == pytest.approx(expr[k, names.index("mouthPress")], abs=1e-4)
        assert blocks["mouthSmileRight"].value == pytest.approx(expr[k, names.index("mouthSmile_R")], abs=1e-4)
        assert blocks["jawOpen"].value == pytest.approx(jaw[k, 0] / cadence.operators.keys.arkit.JAW_OPEN_RAD,
                                                        abs=1e-4)
        assert blocks["EyeBlink_R"].value == pytest.approx(0.0, abs=1e-6)
    assert blocks["notArkit"].value == untouched
    action = target.data.shape_keys.animation_data.action
    paths = {c.data_path for c in cadence.operators.keys.fcurves.all_fcurves(action)}
    assert len(paths) == 6 and not any("notArkit" in p for p in paths)
    bpy.ops.mesh.primitive_plane_add()
    target2 = bpy.context.active_object
    bpy.context.view_layer.objects.active = rig
    with pytest.raises(RuntimeError, match="has no shape keys"):  # an operator's ERROR report, in background mode
        bpy.ops.cadence.retarget_arkit(target=target2.name)


def test_live_link_csv_round_trip(cadence, rig, tmp_path):
    import bpy

    arkit = cadence.operators.keys.arkit
    ch = _take(cadence, rig)
    first = tmp_path / "take.csv"
    assert bpy.ops.cadence.export_arkit_csv(filepath=str(first)) == {"FINISHED"}
    cols, rate = arkit.read_csv(str(first))
    assert rate == FPS and len(cols["EyeBlinkLeft"]) == N
    header = first.read_text().splitlines()[0].split(",")
    assert header[:3] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft"] and len(header) == 2 + 52 + 9
    assert np.allclose(cols["HeadYaw"], cadence.operators.rig.rotations.axis_angle_to_euler_xyz(
        ch.get("head_rotation"), continuous=True)[:, 1], atol=1e-4)
    # Imported as a take on the head, then exported again: the same curves.
    assert bpy.ops.cadence.import_arkit_csv(filepath=str(first), frame_start=1) == {"FINISHED"}
    assert rig.animation_data.action.name.startswith("take ARKit")
    second = tmp_path / "again.csv"
    assert bpy.ops.cadence.export_arkit_csv(filepath=str(second)) == {"FINISHED"}
    again, _ = arkit.read_csv(str(second))
    for name, col in cols.items():
        assert np.allclose(again[name], col, atol=1e-4), name
    # And the take's own curves came through (named components, the jaw, the head).
    names = ch.expr_names
    assert np.allclose(cols["EyeBlinkLeft"], ch.get("expression")[:, names.index("eyeBlink_L")], atol=1e-4)
    assert np.allclose(cols["JawOpen"] * arkit.JAW_OPEN_RAD, ch.get("jaw")[:, 0], atol=1e-4)


def test_bad_csv_files_are_clear_errors_and_change_nothing(cadence, rig, tmp_path):
    import bpy

    actions = sorted(a.name for a in bpy.data.actions)
    cases = {"empty.csv": ("", "empty"), "other.csv": ("a,b\n1,2\n", "no ARKit blendshape columns"),
             "words.csv": ("Timecode,JawOpen\n00:00:00:00.000,open\n", "not numbers"),
             "none.csv": (None, "not found")}
    for name, (text, why) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(RuntimeError, match=why):
            bpy.ops.cadence.import_arkit_csv(filepath=str(tmp_path / name))
    assert sorted(a.name for a in bpy.data.actions) == actions
