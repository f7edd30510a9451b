"""Channels -> keyframes on a Cadence rig: one take = new action(s), written in bulk, user keys kept.

Mapping (the rig contract): expression[t, k] -> shape key expr_names[k] on the mesh's Key datablock
(eyelids override eyeBlink_L/R); head_rotation/neck/jaw/eyes -> pose-bone Euler XYZ on the armature
(continuous over time); bone locations = (I - R_j) @ (joint_expr_dirs[j] @ psi) (+ translation on root).

Timing: channel sample i sits at time i / channels.fps; scene frame f sits at (f - frame_start) / scene_fps
with scene_fps = render.fps / render.fps_base (29.97 etc. included). Keys land on integer scene frames;
when the rates differ, values are resampled there: linearly for scalars, by quaternion slerp for rotations.

Takes and safety: each take writes "<take> face" (Key datablock) and "<take> head" (armature) actions
marked action["cadence_take"]. NEW pushes the previous actions onto NLA tracks (previous Cadence takes
muted, anybody else's actions left playing) so nothing is lost. REPLACE rewrites, in the currently
assigned Cadence take, only the curves of the groups written and only within the frames written. An
action without the Cadence marker (the user's own keys) is never modified: a new take is written instead.
"""

from __future__ import annotations

import re

import bpy
import numpy as np

from ...inference.protocol import EYELID_COMPONENTS, GROUPS, Channels
from ..rig.build import RigError, rig_mesh, rig_model_info
from ..rig.pose import bone_locations
from ..rig.rotations import euler_compatible, euler_xyz_to_matrix, matrix_to_euler_xyz
from . import fcurves as fc
from . import key_reduction

MARKER = "cadence_take"
FACE_GROUPS = frozenset({"expression", "eyelids"})
# Channel group -> (bone index in joint_names order) for rotations; eyes handled as two bones.
ROTATION_GROUPS = {"head_rotation": (0,), "neck": (1,), "jaw": (2,), "eyes": (3, 4)}
LOCATION_TOLERANCE_SCALE = 0.01  # reduce_tolerance 1.0 (shape value / radian) <-> 1 cm of bone location


class KeyframeError(ValueError):
    """Channels cannot be written onto this rig (not a rig, unknown names, bad options)."""


# ----------------------------------------------------------------------------------- timing
def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def sample_positions(n_samples: int, channel_fps: float, target_fps: float) -> np.ndarray:
    """Fractional channel-sample index at each integer scene frame offset 0, 1, ... covering the take."""
    if n_samples <= 0:
        raise KeyframeError("the take has no frames")
    ratio = channel_fps / target_fps
    if abs(ratio - 1.0) < 1e-9:
        return np.arange(n_samples, dtype=np.float64)
    n_frames = int(np.floor((n_samples - 1) / ratio + 1e-6)) + 1
    return np.minimum(np.arange(n_frames) * ratio, n_samples - 1)


def resample_linear(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, max(arr.shape[0] - 2, 0))
    i1 = np.minimum(i0 + 1, arr.shape[0] - 1)
    w = (pos - i0).reshape((-1,) + (1,) * (arr.ndim - 1))
    return arr[i0] * (1 - w) + arr[i1] * w


def resample_rotations(aa: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Axis-angle samples (n, 3) -> rotation matrices (len(pos), 3, 3), slerped between samples."""
    theta = np.linalg.norm(aa, axis=-1)
    axis = aa / np.where(theta < 1e-12, 1.0, theta)[:, None]
    q = np.concatenate([np.cos(theta / 2)[:, None], axis * np.sin(theta / 2)[:, None]], axis=1)
    flip = np.cumprod(np.where(np.sum(q[1:] * q[:-1], axis=1) < 0, -1.0, 1.0))  # stay on one hemisphere
    q[1:] *= flip[:, None]
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, max(len(q) - 2, 0))
    i1 = np.minimum(i0 + 1, len(q) - 1)
    w = pos - i0
    qa, qb = q[i0], q[i1]
    cos = np.clip(np.sum(qa * qb, axis=1), -1.0, 1.0)
    ang = np.arccos(cos)
    small = ang < 1e-6
    s = np.where(small, 1.0, np.sin(ang))
    wa = np.where(small, 1 - w, np.sin((1 - w) * ang) / s)
    wb = np.where(small, w, np.sin(w * ang) / s)
    qr = qa * wa[:, None] + qb * wb[:, None]
    qr /= np.linalg.norm(qr, axis=1, keepdims=True)
    qw, qx, qy, qz = qr.T
    return np.stack([
        1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw),
        2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw),
        2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy),
    ], axis=-1).reshape(-1, 3, 3)


def continuous_euler(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) -> Euler XYZ (T, 3), each the equivalent nearest to the previous one."""
    eul = matrix_to_euler_xyz(rot)
    for t in range(1, len(eul)):
        eul[t] = euler_compatible(eul[t], eul[t - 1])
    return eul


# -------------------------------------------------------------------------------- the rig
def _path_bone(bone: str, prop: str) -> str:
    return f'pose.bones["{bpy.utils.escape_identifier(bone)}"].{prop}'


def _path_key(name: str) -> str:
    return f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'


def _rig_parts(rig):
    if rig is None or getattr(rig, "type", None) != "ARMATURE" or "cadence" not in rig:
        raise KeyframeError(f"{getattr(rig, 'name', rig)!r} is not a Cadence rig (select the head's armature)")
    try:
        info = rig_model_info(rig)
        mesh = rig_mesh(rig)
    except (RigError, KeyError, ValueError) as exc:
        raise KeyframeError(f"the rig {rig.name!r} is incomplete: {exc}") from exc
    key = mesh.data.shape_keys
    return info, key


def _next_take_name() -> str:
    used = [int(m.group(1)) for a in bpy.data.actions if (m := re.fullmatch(r"Take (\d+)", str(a.get(MARKER, ""))))]
    return f"Take {max(used, default=0) + 1}"


# ------------------------------------------------------------------------------ curves
def _existing(action, id_block, path: str, index: int, frames: np.ndarray) -> np.ndarray | None:
    """Values the take being replaced already has on (path, index) at ``frames`` (None: no such curve)."""
    if action is None or id_block is None:
        return None
    curve = fc.find_fcurve(action, id_block, path, index)
    if curve is None or not len(curve.keyframe_points):
        return None
    return fc.evaluate(curve, frames)


def _curves(info: dict, key, rig, channels: Channels, groups: set[str], pos, frames, previous, notes):
    """Everything to write: part -> list of (data_path, index, group, values (K,), kind).

    ``previous`` maps part -> the Cadence take being replaced (REPLACE) or None: inputs of the bone
    locations that are not written (expression, rotations, translation) are read from it, so a partial
    replace keeps the rig exact; without one they are zero / identity.
    """
    names = info["expr_names"]
    joints = info["joint_names"]
    jed = info["joint_expr_dirs"]
    E, K, J = len(names), len(pos), len(joints)
    out: dict[str, list] = {"face": [], "head": []}
    blocks = key.key_blocks if key is not None else {}

    psi = np.zeros((K, E))
    for k, n in enumerate(names):
        old = _existing(previous.get("face"), key, _path_key(n), 0, frames)
        if old is not None:
            psi[:, k] = old
    rot = np.broadcast_to(np.eye(3), (K, J, 3, 3)).copy()
    for j, n in enumerate(joints):
        old = [_existing(previous.get("head"), rig, _path_bone(n, "rotation_euler"), i, frames) for i in range(3)]
        if any(o is not None for o in old):
            rot[:, j] = euler_xyz_to_matrix(np.stack([np.zeros(K) if o is None else o for o in old], -1))
    old_root = [_existing(previous.get("head"), rig, _path_bone(joints[0], "location"), i, frames) for i in range(3)]
    trans = np.zeros((K, 3))
    if any(o is not None for o in old_root):  # recover t from the root location the take has
        loc0 = np.stack([np.zeros(K) if o is None else o for o in old_root], -1)
        trans = loc0 - bone_locations(jed, psi, rot, np.zeros(3))[:, 0]

    face_cols: dict[str, np.ndarray] = {}
    if "expression" in groups:
        missing = [n for n in channels.expr_names if n not in names or n not in blocks]
        if missing:
            raise KeyframeError(
                f"the channels animate expression components this head does not have: {', '.join(missing[:8])}"
                + (" ..." if len(missing) > 8 else "")
            )
        expr = resample_linear(channels.get("expression"), pos)
        for k, n in enumerate(channels.expr_names):
            face_cols[n] = expr[:, k]
    if "eyelids" in groups:
        lids = resample_linear(channels.get("eyelids"), pos)
        if not any(n in blocks for n in EYELID_COMPONENTS):
            notes.append("eyelids skipped: this head has no eyeBlink_L/eyeBlink_R shape keys")
        for side, n in enumerate(EYELID_COMPONENTS):
            if n in blocks:
                face_cols[n] = lids[:, side]  # eyelids take precedence over the expression channel
    for n, col in face_cols.items():
        out["face"].append((_path_key(n), 0, "Face", col, "shape"))
        if n in names:
            psi[:, names.index(n)] = col

    rotated = set()
    for group, bone_ids in ROTATION_GROUPS.items():
        if group not in groups:
            continue
        aa = channels.get(group).reshape(channels.n_frames, -1, 3)
        for col, j in enumerate(bone_ids):
            if j >= J:
                notes.append(f"{group} skipped for joint {j}: the head has only {J} joints")
                continue
            eul = continuous_euler(resample_rotations(aa[:, col], pos))
            rot[:, j] = euler_xyz_to_matrix(eul)  # exactly what the Euler keys produce
            rotated.add(j)
            for i in range(3):
                out["head"].append((_path_bone(joints[j], "rotation_euler"), i, joints[j], eul[:, i], "rotation"))
    if "head_translation" in groups:
        trans = resample_linear(channels.get("head_translation"), pos)
    # Locations depend on psi, R_j (and t for the root): write them wherever one of those was written.
    locs = bone_locations(jed, psi, rot, trans)
    for j in range(J):
        if face_cols or j in rotated or (j == 0 and "head_translation" in groups):
            for i in range(3):
                out["head"].append((_path_bone(joints[j], "location"), i, joints[j], locs[:, j, i], "location"))
    return out


def _tolerance_for(kind: str, tol: float) -> float:
    return tol * LOCATION_TOLERANCE_SCALE if kind == "location" else tol


def _write_curve(action, id_block, path, index, group, frames, values, interpolation, tol):
    curve = fc.ensure_fcurve(action, id_block, path, index, group)
    if tol is None:
        return fc.write_keys(curve, frames, values, interpolation)
    # float32 storage rounds values: keep a margin so the bound holds on what Blender stores.
    margin = 4 * np.finfo(np.float32).eps * (np.abs(values).max() + 1.0)
    keep = key_reduction.reduce_keys(frames, values, max(tol - margin, 0.0), interpolation)
    n = fc.write_keys(curve, frames[keep], values[keep], interpolation)
    if interpolation != "LINEAR":  # verify on Blender's own curve; add keys if the emulation ever disagrees
        for _ in range(8):
            err = np.abs(fc.evaluate(curve, frames) - values)
            if err.max() <= tol:
                break
            keep = np.union1d(keep, np.flatnonzero(err > tol))
            n = fc.write_keys(curve, frames[keep], values[keep], interpolation)
        else:
            n = fc.write_keys(curve, frames, values, interpolation)
    return n


# -------------------------------------------------------------------------------- takes
def action_name(take: str, part: str, limit: int = 63) -> str:
    """"<take> <part>" within Blender's 63-byte ID names: a long take name is shortened, never the part, so a
    take's face and head actions stay told apart."""
    room = limit - len(part.encode()) - 1
    return f"{take.encode()[:room].decode('utf-8', 'ignore').rstrip()} {part}"


def _target_action(id_block, part: str, take: str, mode: str, notes: list[str]):
    """The action to write ``part`` into, following the NEW / REPLACE policy; returns (action, created)."""
    ad = id_block.animation_data
    current = ad.action if ad is not None else None
    if ad is not None and ad.use_tweak_mode:
        raise KeyframeError(f"{id_block.name!r} is in NLA tweak mode: leave tweak mode before writing a take")
    if mode == "REPLACE" and current is not None and MARKER in current:
        fc.assign_action(id_block, current)
        return current, False
    if current is not None:
        ours = MARKER in current
        if mode == "REPLACE" and not ours:
            notes.append(f"{current.name!r} holds keys not made by Cadence: kept on the NLA, wrote a new take")
        fc.push_to_nla(id_block, current, mute=ours)
        if not ours:  # the user's keys play on the NLA outside the take's frames, not the take's held ends
            id_block.animation_data.action_extrapolation = "NOTHING"
    action = fc.new_action(id_block, action_name(take, part))
    action[MARKER] = take
    action["cadence_part"] = part
    action.use_fake_user = True  # a take stays in the file even when nothing uses it
    fc.assign_action(id_block, action)
    return action, True


def set_scene_range(scene: bpy.types.Scene, first: int, last: int) -> str | None:
    """Set the scene's frame range to a take's frames; a note instead when it starts below 0 (Blender's scene
    range cannot)."""
    if first < 0:
        return f"the take starts at frame {first}: the scene's frame range, which cannot start below 0, was left as it was"
    scene.frame_start, scene.frame_end = first, last
    return None


# Blender's frame limits (MINAFRAME / MAXFRAME): keys outside them cannot be written.
MIN_FRAME, MAX_FRAME = -1048574, 1048574


def check_frames(first: int, last: int) -> None:
    """KeyframeError unless a take on frames ``first``..``last`` fits Blender's timeline (check before writing)."""
    if first < MIN_FRAME or last > MAX_FRAME:
        raise KeyframeError(f"A take on frames {first}–{last} does not fit Blender's timeline (frames {MIN_FRAME} "
                            f"to {MAX_FRAME}); choose another start frame.")


def write_take(
    rig: bpy.types.Object,
    channels: Channels,
    frame_start: int = 1,
    take_name: str = "",
    mode: str = "NEW",
    groups: set[str] | None = None,
    reduce_tolerance: float | None = None,
    interpolation: str = "LINEAR",
) -> dict:
    """Write ``channels`` onto ``rig`` as a take; returns what was written (see the module docstring).

    ``groups``: channel groups to write (default: every group the channels have). ``reduce_tolerance``:
    drop keys while the curve stays within this error (shape values, radians; bone locations use it
    x LOCATION_TOLERANCE_SCALE metres). ``interpolation``: 'LINEAR' (exact resampling) or 'BEZIER'.
    """
    if not isinstance(channels, Channels):
        raise KeyframeError("channels must be a Cadence Channels object")
    if mode not in ("NEW", "REPLACE"):
        raise KeyframeError(f"mode must be 'NEW' or 'REPLACE', got {mode!r}")
    if interpolation not in key_reduction.INTERPOLATIONS:
        raise KeyframeError(f"interpolation must be 'LINEAR' or 'BEZIER', got {interpolation!r}")
    if reduce_tolerance is not None and not (np.isfinite(reduce_tolerance) and reduce_tolerance >= 0):
        raise KeyframeError(f"reduce_tolerance must be a number >= 0, got {reduce_tolerance!r}")
    available = {g for g in GROUPS if channels.get(g) is not None}
    groups = set(available if groups is None else groups)
    unknown = groups - set(GROUPS)
    if unknown:
        raise KeyframeError(f"unknown channel groups {sorted(unknown)} (known: {', '.join(GROUPS)})")
    absent = groups - available
    if absent:
        raise KeyframeError(f"the channels have no {', '.join(sorted(absent))} to write")
    if not groups:
        raise KeyframeError("nothing to write: the channels hold no animation groups")
    info, key = _rig_parts(rig)
    if groups & FACE_GROUPS and key is None:
        raise KeyframeError(f"the head mesh of {rig.name!r} has no shape keys to animate")
    for j in {j for g in groups & set(ROTATION_GROUPS) for j in ROTATION_GROUPS[g]} | {0}:
        if j < len(info["joint_names"]):
            pb = rig.pose.bones.get(info["joint_names"][j])
            if pb is None:
                raise KeyframeError(f"the rig {rig.name!r} has no bone {info['joint_names'][j]!r}")
            if pb.rotation_mode != "XYZ":
                raise KeyframeError(f"bone {pb.name!r} uses rotation mode {pb.rotation_mode}; Cadence writes XYZ Euler")

    scene = bpy.context.scene
    pos = sample_positions(channels.n_frames, channels.fps, scene_fps(scene))
    frames = float(int(frame_start)) + np.arange(len(pos), dtype=np.float64)
    notes: list[str] = []
    previous = {}
    if mode == "REPLACE":
        for part, id_block in (("face", key), ("head", rig)):
            ad = id_block.animation_data if id_block is not None else None
            if ad is not None and ad.action is not None and MARKER in ad.action:
                previous[part] = ad.action
    curves = _curves(info, key, rig, channels, groups, pos, frames, previous, notes)
    take = take_name.strip() or _next_take_name()
    result = {"take": take, "mode": mode, "frame_range": (frames[0], frames[-1]), "actions": {},
              "takes": {}, "created": {}, "channels": {}, "keys": {}, "notes": notes}
    for part, id_block in (("face", key), ("head", rig)):
        items = curves[part]
        if not items:
            continue
        action, created = _target_action(id_block, part, take, mode, notes)
        n_keys = 0
        for path, index, group, values, kind in items:
            tol = None if reduce_tolerance is None else _tolerance_for(kind, reduce_tolerance)
            n_keys += _write_curve(action, id_block, path, index, group, frames, values, interpolation, tol)
        result["actions"][part] = action.name
        result["takes"][part] = str(action[MARKER])
        result["created"][part] = created
        result["channels"][part] = len(items)
        result["keys"][part] = n_keys
    scene.frame_set(scene.frame_current)  # re-evaluate so the viewport shows the new take at once
    return result
