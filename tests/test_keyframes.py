"""The keyframe writer: values read back after frame_set equal the channels; takes never lose user keys.

Runs on bpy 4.5 and 5.0 (slotted actions; 5.0 has no Action.fcurves).
"""

from __future__ import annotations

import ast
import importlib
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPR = ("jawOpen", "mouthSmile_L", "eyeBlink_L", "eyeBlink_R", "browInnerUp")
TOL = 2e-5  # float32 key storage


def _mods(cadence):
    kf = importlib.import_module(f"{cadence.__name__}.operators.keys.keyframes")
    rig = importlib.import_module(f"{cadence.__name__}.operators.rig.build")
    return kf, rig


def small_head(cadence, seed: int = 3):
    """A tiny closed head whose joints move with expression (non-zero joint_expr_dirs)."""
    hm = cadence.inference.heads.head_model
    rng = np.random.default_rng(seed)
    n_lat, n_lon = 6, 8
    la, lo = np.meshgrid(np.linspace(0.3, math.pi - 0.3, n_lat), np.linspace(0, 2 * math.pi, n_lon, endpoint=False),
                         indexing="ij")
    v = np.stack([np.sin(la) * np.sin(lo) * 0.08, np.cos(la) * 0.1, np.sin(la) * np.cos(lo) * 0.09], -1).reshape(-1, 3)
    faces = [(i * n_lon + j, i * n_lon + (j + 1) % n_lon, (i + 1) * n_lon + (j + 1) % n_lon)
             for i in range(n_lat - 1) for j in range(n_lon)]
    V = len(v)
    weights = rng.random((V, 5)) + 0.1
    weights /= weights.sum(1, keepdims=True)
    j_reg = rng.random((5, V))
    j_reg /= j_reg.sum(1, keepdims=True)
    return hm.HeadModel(
        name="kfhead", v_template=v, faces=np.array(faces), shapedirs=rng.normal(0, 0.01, (V, 3, 2)),
        exprdirs=rng.normal(0, 0.02, (V, 3, len(EXPR))), posedirs=np.zeros((V, 3, 36)), j_regressor=j_reg,
        weights=weights, expr_names=EXPR, source="test",
    )


@pytest.fixture
def rig(cadence, clean_scene):
    import bpy

    _, rig_mod = _mods(cadence)
    return rig_mod.build_rig(small_head(cadence), bpy.context, model_file="")


def smooth_channels(cadence, n: int = 40, fps: float = 25.0, seed: int = 0, big_turn: bool = False, hz: float = 1.5,
                    f0: float = 0.3):
    Channels = cadence.inference.protocol.Channels
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / fps

    def wave(k, amp):
        return amp * np.sin(2 * np.pi * (f0 + rng.random((1, k)) * hz) * t + rng.random((1, k)) * 6)

    head = wave(3, 0.4)
    if big_turn:  # a full turn and a half: Euler curves must stay continuous through +-pi
        head = np.zeros((n, 3))
        head[:, 2] = np.linspace(0, 3 * np.pi, n)  # about Z: no gimbal lock on the way
        head[:, 0] = 0.1
    groups = {
        "expression": wave(len(EXPR), 0.8), "jaw": wave(3, 0.3), "neck": wave(3, 0.2),
        "head_rotation": head, "head_translation": wave(3, 0.02),
        "eyes": wave(6, 0.3).reshape(n, 2, 3), "eyelids": 0.5 + 0.5 * wave(2, 1.0),
    }
    return Channels(fps=fps, n_frames=n, expr_names=EXPR, groups=groups)


def rodrigues(aa):
    aa = np.asarray(aa, float)
    th = np.linalg.norm(aa)
    if th < 1e-12:
        return np.eye(3)
    k = aa / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * K + (1 - math.cos(th)) * K @ K


def expected_at(rig, ch, s: float) -> dict:
    """What the rig should show at fractional channel sample s (linear / slerp between samples)."""
    from scipy.spatial.transform import Rotation, Slerp

    i0 = min(int(math.floor(s)), ch.n_frames - 2)
    w = s - i0

    def lin(name):
        a = ch.get(name)
        return a[i0] * (1 - w) + a[i0 + 1] * w

    def rot(aa_seq):
        sl = Slerp([0.0, 1.0], Rotation.from_rotvec(np.stack([aa_seq[i0], aa_seq[i0 + 1]])))
        return sl([w]).as_matrix()[0]

    expr = lin("expression").copy()
    expr[2:4] = lin("eyelids")  # eyeBlink_L/R come from the eyelid channel
    rots = [rot(ch.get("head_rotation")), rot(ch.get("neck")), rot(ch.get("jaw")),
            rot(ch.get("eyes")[:, 0]), rot(ch.get("eyes")[:, 1])]
    info = rig["cadence"]
    jed = np.asarray(info["joint_expr_dirs"], float).reshape(5, 3, len(EXPR))
    locs = [(np.eye(3) - rots[j]) @ (jed[j] @ expr) for j in range(5)]
    locs[0] = locs[0] + lin("head_translation")
    return {"expr": expr, "rots": rots, "locs": locs}


def read_state(rig, frame: int) -> dict:
    import bpy

    bpy.context.scene.frame_set(frame)
    key = bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys
    bones = [rig.pose.bones[n] for n in ("root", "neck", "jaw", "eye_L", "eye_R")]
    return {
        "expr": np.array([key.key_blocks[n].value for n in EXPR]),
        "rots": [np.array(pb.rotation_euler.to_matrix()) for pb in bones],  # mathutils, independent of ours
        "locs": [np.array(pb.location) for pb in bones],
    }


def assert_state(got, exp, tol=TOL):
    np.testing.assert_allclose(got["expr"], exp["expr"], atol=tol)
    for a, b in zip(got["rots"], exp["rots"]):
        np.testing.assert_allclose(a, b, atol=tol)
    for a, b in zip(got["locs"], exp["locs"]):
        np.testing.assert_allclose(a, b, atol=tol)


def set_fps(scene, fps: float):
    if abs(fps - 29.97) < 1e-6:
        scene.render.fps, scene.render.fps_base = 30, 1.001
    else:
        scene.render.fps, scene.render.fps_base = int(fps), 1.0


# ------------------------------------------------------------------------------------- tests
def test_values_read_back_at_every_frame(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    ch = smooth_channels(cadence)
    res = kf.write_take(rig, ch, frame_start=1)
    assert res["keys"]["face"] == len(EXPR) * ch.n_frames
    assert res["channels"]["head"] == 5 * 3 * 2  # rotation + location of 5 bones
    for f in range(1, ch.n_frames + 1):
        assert_state(read_state(rig, f), expected_at(rig, ch, f - 1))
    # Shape keys animate the Key datablock, bones the armature; both actions are marked takes.
    key = bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys
    assert key.animation_data.action.name == res["actions"]["face"] == "Take 1 face"
    assert rig.animation_data.action["cadence_take"] == "Take 1"


@pytest.mark.parametrize("scene_fps", [29.97, 24, 25, 30, 60])
def test_resampled_to_scene_fps(cadence, rig, scene_fps):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, scene_fps)
    ch = smooth_channels(cadence, n=30, fps=25.0, seed=1)
    res = kf.write_take(rig, ch, frame_start=1)
    true_fps = 30 / 1.001 if scene_fps == 29.97 else scene_fps
    n_frames = int(math.floor((ch.n_frames - 1) * true_fps / 25.0 + 1e-6)) + 1
    assert res["frame_range"] == (1.0, float(n_frames))
    for k in sorted({0, 1, n_frames // 3, n_frames // 2, n_frames - 2, n_frames - 1}):
        s = k * 25.0 / true_fps
        assert_state(read_state(rig, 1 + k), expected_at(rig, ch, s))


def test_fractional_channel_rate_on_integer_scene(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 30)
    ch = smooth_channels(cadence, n=30, fps=30 / 1.001, seed=2)
    kf.write_take(rig, ch, frame_start=1)
    for k in (0, 7, 28):
        assert_state(read_state(rig, 1 + k), expected_at(rig, ch, k * (30 / 1.001) / 30))


def test_frame_start_offset_and_hold(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    ch = smooth_channels(cadence, n=20, seed=3)
    res = kf.write_take(rig, ch, frame_start=101)
    assert res["frame_range"] == (101.0, 120.0)
    for i in (0, 5, 19):
        assert_state(read_state(rig, 101 + i), expected_at(rig, ch, i))
    assert_state(read_state(rig, 90), expected_at(rig, ch, 0))  # constant extrapolation before the take


def test_euler_curves_are_continuous_through_large_turns(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    ch = smooth_channels(cadence, n=60, seed=4, big_turn=True)
    kf.write_take(rig, ch, groups={"head_rotation"})
    eul = []
    for f in range(1, 61):
        st = read_state(rig, f)
        np.testing.assert_allclose(st["rots"][0], rodrigues(ch.get("head_rotation")[f - 1]), atol=TOL)
        eul.append(tuple(rig.pose.bones["root"].rotation_euler))
    step = np.abs(np.diff(np.array(eul), axis=0)).max()
    assert step < 0.5, f"Euler curve jumps by {step} rad between frames"


def test_new_take_keeps_previous_take_reachable(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    a, b = smooth_channels(cadence, seed=5), smooth_channels(cadence, seed=6)
    first = kf.write_take(rig, a)
    second = kf.write_take(rig, b, mode="NEW")
    assert second["take"] == "Take 2" and first["actions"]["head"] != second["actions"]["head"]
    old = bpy.data.actions[first["actions"]["head"]]
    strips = [(t, s) for t in rig.animation_data.nla_tracks for s in t.strips]
    assert [s.action for _, s in strips] == [old] and strips[0][0].mute
    key = bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys
    assert any(s.action.name == first["actions"]["face"] for t in key.animation_data.nla_tracks for s in t.strips)
    assert_state(read_state(rig, 10), expected_at(rig, b, 9))


def test_a_long_take_name_keeps_face_and_head_apart(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    res = kf.write_take(rig, smooth_channels(cadence), take_name="Très longue prise " * 8)
    names = res["actions"]
    assert names["face"].endswith(" face") and names["head"].endswith(" head"), names
    assert all(len(n.encode()) <= 63 for n in names.values())


def test_replace_keeps_keys_outside_the_written_range(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    a = smooth_channels(cadence, n=50, seed=7)
    kf.write_take(rig, a, frame_start=1)
    key = bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys
    face_action = key.animation_data.action
    block = key.key_blocks["jawOpen"]
    block.value = 0.77  # the animator adds a key of their own later in the take
    block.keyframe_insert("value", frame=200)
    b = smooth_channels(cadence, n=20, seed=8)
    res = kf.write_take(rig, b, frame_start=10, mode="REPLACE")
    assert key.animation_data.action == face_action and not res["created"]["face"]
    assert len(bpy.data.actions) == 2
    for f in (1, 9, 30, 50):  # outside 10..29: the first take
        assert_state(read_state(rig, f), expected_at(rig, a, f - 1))
    for f in (10, 20, 29):
        assert_state(read_state(rig, f), expected_at(rig, b, f - 10))
    read_state(rig, 200)
    assert abs(block.value - 0.77) < 1e-6


def test_replace_only_touches_the_groups_written(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    a = smooth_channels(cadence, n=30, seed=9)
    kf.write_take(rig, a)
    b = smooth_channels(cadence, n=30, seed=10)
    kf.write_take(rig, b, mode="REPLACE", groups={"jaw"})
    mixed = expected_at(rig, a, 12)
    jaw_b = expected_at(rig, b, 12)["rots"][2]
    mixed["rots"][2] = jaw_b
    jed = np.asarray(rig["cadence"]["joint_expr_dirs"], float).reshape(5, 3, len(EXPR))
    mixed["locs"][2] = (np.eye(3) - jaw_b) @ (jed[2] @ mixed["expr"])  # uses the take's expression
    assert_state(read_state(rig, 13), mixed)


def test_user_keys_are_never_modified(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    key = bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys
    pb = rig.pose.bones["neck"]
    for f, v in ((1, 0.1), (40, -0.3)):
        pb.rotation_euler = (v, 0, 0)
        pb.keyframe_insert("rotation_euler", frame=f)
        key.key_blocks["browInnerUp"].value = v
        key.key_blocks["browInnerUp"].keyframe_insert("value", frame=f)
    user_head, user_face = rig.animation_data.action, key.animation_data.action

    def snapshot(action, id_block):
        fcs = kf.fc.all_fcurves(action)
        return sorted((c.data_path, c.array_index, tuple(k.co[:] for k in c.keyframe_points)) for c in fcs)

    before = snapshot(user_head, rig), snapshot(user_face, key)
    for mode in ("REPLACE", "NEW"):
        res = kf.write_take(rig, smooth_channels(cadence, seed=11), mode=mode)
        assert res["created"] == {"face": True, "head": True}
    assert (snapshot(user_head, rig), snapshot(user_face, key)) == before
    assert "cadence_take" not in user_head and rig.animation_data.action != user_head
    user_strips = [(t, s) for t in rig.animation_data.nla_tracks for s in t.strips if s.action == user_head]
    assert len(user_strips) == 1 and not user_strips[0][0].mute  # the user's animation still plays
    assert any(s.action == user_face for t in key.animation_data.nla_tracks for s in t.strips)


@pytest.mark.parametrize("interpolation", ["LINEAR", "BEZIER"])
def test_reduction_keeps_error_bound(cadence, rig, interpolation):
    import bpy

    kf, _ = _mods(cadence)
    set_fps(bpy.context.scene, 25)
    ch = smooth_channels(cadence, n=250, seed=12, f0=0.1, hz=0.2)
    tol = 5e-3
    res = kf.write_take(rig, ch, reduce_tolerance=tol, interpolation=interpolation)
    dense = 250 * (len(EXPR) + 30)
    total = res["keys"]["face"] + res["keys"]["head"]
    assert total < {"LINEAR": 0.3, "BEZIER": 0.15}[interpolation] * dense, (total, dense)
    worst = 0.0
    for f in range(1, 251, 3):
        got, exp = read_state(rig, f), expected_at(rig, ch, f - 1)
        worst = max(worst, np.abs(got["expr"] - exp["expr"]).max())
        for j in range(5):  # Euler error of tol rad per angle bounds the matrix error by ~3 tol
            worst = max(worst, np.abs(got["rots"][j] - exp["rots"][j]).max() / 3)
            worst = max(worst, np.abs(got["locs"][j] - exp["locs"][j]).max() / kf.LOCATION_TOLERANCE_SCALE)
    assert worst <= tol * 1.01, worst


def test_bad_input_gives_clear_errors(cadence, rig):
    import bpy

    kf, _ = _mods(cadence)
    Channels = cadence.inference.protocol.Channels
    ch = smooth_channels(cadence, n=5)
    mesh = bpy.data.objects[rig["cadence"]["mesh"]]
    with pytest.raises(kf.KeyframeError, match="not a Cadence rig"):
        kf.write_take(mesh, ch)
    with pytest.raises(kf.KeyframeError, match="mode"):
        kf.write_take(rig, ch, mode="MERGE")
    with pytest.raises(kf.KeyframeError, match="no neck"):
        kf.write_take(rig, Channels(fps=25, n_frames=5, groups={"jaw": np.zeros((5, 3))}), groups={"neck"})
    alien = Channels(fps=25, n_frames=5, expr_names=("smirk",), groups={"expression": np.zeros((5, 1))})
    with pytest.raises(kf.KeyframeError, match="smirk"):
        kf.write_take(rig, alien)
    assert rig.animation_data is None or rig.animation_data.action is None  # nothing half-written


def test_writer_never_inserts_keys_one_by_one():
    for name in ("keyframes.py", "fcurves.py"):
        tree = ast.parse((ROOT / "operators" / "keys" / name).read_text())
        attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "keyframe_insert" not in attrs and "insert" not in attrs, name
