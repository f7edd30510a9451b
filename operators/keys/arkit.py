"""ARKit's 52 blendshapes in and out: retarget a take onto a character with ARKit-named shape keys, and Live Link
Face style CSV files (what an iPhone records) exported from and imported onto a Cadence head.

Names match case- and separator-tolerantly (``eyeBlinkLeft``, ``EyeBlinkLeft``, ``eyeBlink_L``, ``eye_blink.l``
are one name), so Faceit, Ready Player Me and VRoid/VRM "perfect sync" rigs match as they are. A Cadence head's
value for an ARKit name is its expression component of that name; the head's merged components
(``mouthPress``, ``mouthUpperUp``, ``mouthLowerDown``) feed both sides, ``jawOpen`` is the jaw bone's opening
(``JAW_OPEN_RAD`` = 1), and head and eye rotations go to the CSV's pose columns (radians).
"""

from __future__ import annotations

import csv
import re
from collections import Counter

import bpy
import numpy as np

from ...inference.protocol import name_key
from ..rig.build import rig_mesh, rig_model_info
from ..rig.rotations import euler_xyz_to_axis_angle
from .fcurves import anim_data, assign_action, ensure_fcurve, new_action, push_to_nla, write_keys

# Apple's ARFaceAnchor order, as Live Link Face writes its CSV columns.
ARKIT_NAMES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)
POSE_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
JAW_OPEN_RAD = 0.35  # jawOpen 1.0: the widest opening Cadence calibrates and animates
_JOINTS = {"head": 0, "jaw": 2, "eye_L": 3, "eye_R": 4}


class ArkitError(ValueError):
    """A CSV or a target Cadence cannot use, with a message for the user."""



def match_names(names) -> dict[str, str]:
    """ARKit name -> the given name it matches (each at most once)."""
    by_key = {}
    for n in names:
        by_key.setdefault(name_key(n), n)
    return {a: by_key[name_key(a)] for a in ARKIT_NAMES if name_key(a) in by_key}


def _source_of(arkit: str, expr_names) -> str | None:
    """The Cadence component an ARKit curve reads: the same name, else the merged (side-less) one."""
    found = match_names(expr_names)
    if arkit in found:
        return found[arkit]
    merged = {name_key(n): n for n in expr_names}
    return merged.get(name_key(re.sub(r"(Left|Right)$", "", arkit)))


def sample_take(rig: bpy.types.Object, scene: bpy.types.Scene, first: int, last: int) -> dict[str, np.ndarray]:
    """The rig's animation as ARKit curves (T, 52) and pose columns (T, 9), frame by frame as Blender plays it
    (NLA, edits and all). The scene's current frame is restored."""
    info = rig_model_info(rig)
    names, joints = list(info["expr_names"]), list(info["joint_names"])
    blocks = rig_mesh(rig).data.shape_keys.key_blocks
    sources = [_source_of(a, names) for a in ARKIT_NAMES]
    jaw_open = "JawOpen" not in match_names(names)  # the head has no jawOpen component: the jaw bone says it
    frames = range(int(first), int(last) + 1)
    curves, pose = np.zeros((len(frames), len(ARKIT_NAMES))), np.zeros((len(frames), len(POSE_COLUMNS)))
    current = scene.frame_current
    try:
        for t, f in enumerate(frames):
            scene.frame_set(f)
            for k, src in enumerate(sources):
                if src is not None and src in blocks:
                    curves[t, k] = blocks[src].value
            eul = {j: np.array(rig.pose.bones[joints[i]].rotation_euler) for j, i in _JOINTS.items() if i < len(joints)}
            if "jaw" in eul and jaw_open:
                curves[t, ARKIT_NAMES.index("JawOpen")] = eul["jaw"][0] / JAW_OPEN_RAD
            for c, j in enumerate(("head", "eye_L", "eye_R")):
                if j in eul:
                    pose[t, 3 * c:3 * c + 3] = eul[j][1], eul[j][0], eul[j][2]  # yaw (Y), pitch (X), roll (Z)
    finally:
        scene.frame_set(current)
    return {"curves": curves, "pose": pose}


def _timecode(frame: int, fps: float) -> str:
    whole = max(1, round(fps))
    s, ff = divmod(int(frame), whole)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}.000"


def write_csv(path: str, curves: np.ndarray, pose: np.ndarray, fps: float) -> None:
    """A Live Link Face style CSV: Timecode, BlendShapeCount, the 52 curves, the 9 pose columns."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["Timecode", "BlendShapeCount", *ARKIT_NAMES, *POSE_COLUMNS])
        for t in range(len(curves)):
            out.writerow([_timecode(t, fps), len(ARKIT_NAMES), *(f"{v:.6f}" for v in curves[t]),
                          *(f"{v:.6f}" for v in pose[t])])


def read_csv(path: str) -> tuple[dict[str, np.ndarray], float | None]:
    """Columns by ARKit / pose name (missing ones absent) and the frame rate the timecodes imply (None when they
    do not say). Raises ArkitError with what is wrong."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ArkitError(f"cannot read {path!r} as a CSV file: {exc}") from exc
    if len(rows) < 2:
        raise ArkitError(f"{path!r} has no rows of blendshape values")
    header = rows[0]
    found = match_names(header)
    pose_found = {p: h for p in POSE_COLUMNS for h in header if name_key(h) == name_key(p)}
    if not found:
        raise ArkitError(f"{path!r} has no ARKit blendshape columns (expected e.g. EyeBlinkLeft, JawOpen)")
    index = {h: i for i, h in enumerate(header)}
    try:
        table = np.array([[float(r[index[h]]) for h in (*found.values(), *pose_found.values())]
                          for r in rows[1:] if r], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise ArkitError(f"{path!r} has a row that is not numbers where the blendshapes are: {exc}") from exc
    if not np.all(np.isfinite(table)):
        raise ArkitError(f"{path!r} holds non-finite values")
    cols = dict(zip((*found.keys(), *pose_found.keys()), table.T))
    return cols, _rate_of([r[index["Timecode"]] for r in rows[1:] if r] if "Timecode" in index else [])


def _rate_of(codes: list[str]) -> float | None:
    """Rows per second of timecode (the frames of whole seconds inside the recording)."""
    secs = [c.rsplit(":", 1)[0] for c in codes if c.count(":") == 3]
    if len(secs) != len(codes) or not secs:
        return None
    counts = list(Counter(secs).values())[1:-1]  # insertion order: the first and last seconds are partial
    if counts:
        return float(np.median(counts))
    return float(max(int(float(c.rsplit(":", 1)[1])) for c in codes) + 1) if len(codes) > 1 else None


def channels_columns(cols: dict[str, np.ndarray], expr_names) -> dict[str, np.ndarray]:
    """A CSV's columns as a Cadence head's channel groups: expression (by name; a merged component is the mean
    of its sides), jaw (jawOpen), head rotation and eyes (pose columns), as axis-angle."""
    n = len(next(iter(cols.values())))
    expr = np.zeros((n, len(expr_names)))
    for k, name in enumerate(expr_names):
        sides = [a for a in ARKIT_NAMES if _source_of(a, [name]) == name]
        have = [cols[a] for a in sides if a in cols]
        if have:
            expr[:, k] = np.mean(have, axis=0)
    out = {"expression": expr}
    if "JawOpen" in cols and "JawOpen" not in match_names(expr_names):
        out["jaw"] = np.stack([cols["JawOpen"] * JAW_OPEN_RAD, np.zeros(n), np.zeros(n)], -1)
    rot = []
    for prefix in ("Head", "LeftEye", "RightEye"):
        yaw, pitch, roll = (cols.get(prefix + a) for a in ("Yaw", "Pitch", "Roll"))
        rot.append(None if yaw is None or pitch is None or roll is None
                   else euler_xyz_to_axis_angle(np.stack([pitch, yaw, roll], -1)))
    if rot[0] is not None:
        out["head_rotation"] = rot[0]
    if rot[1] is not None and rot[2] is not None:
        out["eyes"] = np.stack([rot[1], rot[2]], axis=1)
    return out


def retarget(curves: np.ndarray, target: bpy.types.Object, frame_start: int, action_name: str) -> list[str]:
    """Key ARKit curves (T, 52) onto ``target``'s ARKit-named shape keys in a new action; the matched ARKit
    names. The target's previous shape-key action is kept (pushed aside, not deleted)."""
    keys = getattr(getattr(target, "data", None), "shape_keys", None)
    if keys is None:
        raise ArkitError(f"{target.name!r} has no shape keys to retarget onto")
    matched = match_names([b.name for b in keys.key_blocks[1:]])  # [0] is the basis
    if not matched:
        raise ArkitError(f"none of {target.name!r}'s shape keys has an ARKit name (e.g. eyeBlinkLeft, jawOpen)")
    action = new_action(keys, action_name)
    frames = frame_start + np.arange(len(curves), dtype=np.float64)
    for a, block in matched.items():
        curve = ensure_fcurve(action, keys, f'key_blocks["{bpy.utils.escape_identifier(block)}"].value', 0, "ARKit")
        write_keys(curve, frames, np.clip(curves[:, ARKIT_NAMES.index(a)], 0.0, 1.0))
    previous = anim_data(keys).action
    if previous is not None:
        push_to_nla(keys, previous, mute=True)
    assign_action(keys, action)
    return list(matched)
