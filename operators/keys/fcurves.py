"""Version-safe access to actions, slots and F-curves, and fast bulk key writing.

Blender 4.2/4.3 keep F-curves on ``Action.fcurves``. 4.4+ actions are *slotted*: F-curves live in
layer -> strip -> channelbag(slot), and an action assigned without a slot animates nothing. 5.0 removes
``Action.fcurves`` altogether. Everything here picks the branch by feature, not by version number.

Keys are written with ``keyframe_points.add(n)`` + ``foreach_set`` (about 500x faster than
``keyframe_insert`` per key); existing keys outside the written range are carried over untouched.
"""

from __future__ import annotations

import math

import bpy
import numpy as np

# Slotted (layered) actions exist from Blender 4.4 on.
LAYERED = hasattr(bpy.types, "ActionSlot")

# Per-key properties carried over when keys outside a written range are kept.
_FLOAT2 = ("co", "handle_left", "handle_right")
_ENUMS = ("interpolation", "handle_left_type", "handle_right_type", "easing", "type")
_FLOATS = ("back", "amplitude", "period")
_BOOLS = ("select_control_point", "select_left_handle", "select_right_handle")


class FCurveError(RuntimeError):
    """Keys cannot be written where asked (bad arrays, an action in NLA tweak mode, ...)."""


def _enum_value(prop: str, identifier: str) -> int:
    """The integer foreach_set expects for an enum item (read from RNA rather than hard-coded)."""
    return bpy.types.Keyframe.bl_rna.properties[prop].enum_items[identifier].value


def id_type_of(id_block: bpy.types.ID) -> str:
    """The ID type code actions and slots use: 'OBJECT', 'KEY', ..."""
    return id_block.id_type


def anim_data(id_block: bpy.types.ID) -> bpy.types.AnimData:
    ad = id_block.animation_data or id_block.animation_data_create()
    if ad.use_tweak_mode:
        raise FCurveError(
            f"{id_block.name!r} is in NLA tweak mode; leave tweak mode (Tab in the NLA editor) before writing keys"
        )
    return ad


def ensure_slot(action: bpy.types.Action, id_block: bpy.types.ID):
    """The slot of ``action`` for ``id_block`` (created if missing). None on 4.2/4.3 (no slots)."""
    if not LAYERED:
        return None
    id_type = id_type_of(id_block)
    ad = id_block.animation_data
    if ad is not None and ad.action == action and ad.action_slot is not None:
        return ad.action_slot
    for slot in action.slots:
        if slot.target_id_type in {id_type, "UNSPECIFIED"} and slot.name_display == id_block.name:
            return slot
    for slot in action.slots:
        if slot.target_id_type == id_type:
            return slot
    return action.slots.new(id_type=id_type, name=id_block.name)


def assign_action(id_block: bpy.types.ID, action: bpy.types.Action | None) -> None:
    """Make ``action`` the active action of ``id_block``, with a proper slot on 4.4+."""
    ad = anim_data(id_block)
    slot = ensure_slot(action, id_block) if action is not None else None
    ad.action = action
    if slot is not None and ad.action_slot != slot:
        ad.action_slot = slot


def new_action(id_block: bpy.types.ID, name: str) -> bpy.types.Action:
    """A new, empty action for ``id_block`` (not assigned). Blender may suffix the name if taken."""
    action = bpy.data.actions.new(name)
    if LAYERED:
        ensure_slot(action, id_block)
    else:  # 4.2/4.3: the action is restricted to one ID type
        action.id_root = id_type_of(id_block)
    return action


def ensure_action(id_block: bpy.types.ID, name: str) -> bpy.types.Action:
    """The action named ``name`` assigned to ``id_block``: reused if already assigned, else created."""
    ad = id_block.animation_data
    if ad is not None and ad.action is not None and ad.action.name == name:
        assign_action(id_block, ad.action)  # makes sure a slot is set on 4.4+
        return ad.action
    action = new_action(id_block, name)
    assign_action(id_block, action)
    return action


def _channelbag(action: bpy.types.Action, id_block: bpy.types.ID, create: bool):
    slot = ensure_slot(action, id_block)
    if not action.layers:
        if not create:
            return None
        action.layers.new("Layer")
    layer = action.layers[0]
    if not layer.strips:
        if not create:
            return None
        layer.strips.new(type="KEYFRAME")
    strip = layer.strips[0]
    if create:
        return strip.channelbag(slot, ensure=True)
    return strip.channelbag(slot)


def fcurve_collection(action: bpy.types.Action, id_block: bpy.types.ID, create: bool = True):
    """The F-curve collection of ``action`` for ``id_block`` (None when it has none and create=False)."""
    if not LAYERED:
        return action.fcurves
    bag = _channelbag(action, id_block, create)
    return None if bag is None else bag.fcurves


def _ensure_group(action: bpy.types.Action, id_block: bpy.types.ID, name: str):
    groups = action.groups if not LAYERED else _channelbag(action, id_block, True).groups
    group = groups.get(name)
    return group if group is not None else groups.new(name)


def find_fcurve(action: bpy.types.Action, id_block: bpy.types.ID, data_path: str, index: int = 0):
    fcurves = fcurve_collection(action, id_block, create=False)
    return None if fcurves is None else fcurves.find(data_path, index=index)


def ensure_fcurve(
    action: bpy.types.Action, id_block: bpy.types.ID, data_path: str, index: int = 0, group_name: str = ""
) -> bpy.types.FCurve:
    """Find or create the F-curve (data_path, index) for ``id_block`` in ``action``, in ``group_name``."""
    fcurves = fcurve_collection(action, id_block, create=True)
    fcurve = fcurves.find(data_path, index=index)
    if fcurve is None:
        fcurve = fcurves.new(data_path, index=index)
    if group_name and (fcurve.group is None or fcurve.group.name != group_name):
        fcurve.group = _ensure_group(action, id_block, group_name)
    return fcurve


def all_fcurves(action: bpy.types.Action) -> list:
    """Every F-curve of ``action`` across slots (4.4+) or the legacy list (4.2/4.3)."""
    if not LAYERED:
        return list(action.fcurves)
    out = []
    for layer in action.layers:
        for strip in layer.strips:
            for bag in strip.channelbags:
                out.extend(bag.fcurves)
    return out


def push_to_nla(id_block: bpy.types.ID, action: bpy.types.Action, mute: bool) -> bpy.types.NlaStrip:
    """Move ``action`` (with its slot) onto a new NLA track of ``id_block`` so it stays reachable."""
    ad = anim_data(id_block)
    slot = ad.action_slot if LAYERED and ad.action == action else None
    start = action.frame_range[0]
    track = ad.nla_tracks.new()
    track.name = action.name
    strip = track.strips.new(action.name, int(math.floor(start)), action)
    if LAYERED and slot is not None and strip.action_slot != slot:
        strip.action_slot = slot
    track.mute = mute
    if ad.action == action:
        ad.action = None
    return strip


def read_keys(fcurve: bpy.types.FCurve) -> dict[str, np.ndarray]:
    """All per-key properties of ``fcurve`` as arrays (what write_keys needs to put them back)."""
    kp = fcurve.keyframe_points
    n = len(kp)
    out: dict[str, np.ndarray] = {}
    for name in _FLOAT2:
        a = np.empty(2 * n, dtype=np.float32)
        kp.foreach_get(name, a)
        out[name] = a.reshape(n, 2)
    for name in _ENUMS:
        a = np.empty(n, dtype=np.int32)
        kp.foreach_get(name, a)
        out[name] = a
    for name in _FLOATS:
        a = np.empty(n, dtype=np.float32)
        kp.foreach_get(name, a)
        out[name] = a
    for name in _BOOLS:
        a = np.empty(n, dtype=bool)
        kp.foreach_get(name, a)
        out[name] = a
    return out


def _clear_keys(fcurve: bpy.types.FCurve) -> None:
    kp = fcurve.keyframe_points
    if hasattr(kp, "clear"):
        kp.clear()
    else:  # older API: remove one by one without recalculating handles each time
        for i in range(len(kp) - 1, -1, -1):
            kp.remove(kp[i], fast=True)


def write_keys(
    fcurve: bpy.types.FCurve,
    frames: np.ndarray,
    values: np.ndarray,
    interpolation: str = "LINEAR",
    handle_type: str = "AUTO_CLAMPED",
    auto_smoothing: str | None = "NONE",
) -> int:
    """Write keys (frames[i], values[i]) in bulk; existing keys within [min(frames), max(frames)] are replaced.

    Keys of ``fcurve`` outside that range are kept with all their properties. Returns the key count
    written. ``auto_smoothing`` 'NONE' gives local auto-clamped handles (the ones key_reduction emulates;
    Blender's default 'CONT_ACCEL' couples every handle of the curve); None leaves the curve's setting. Never calls keyframe_insert (one RNA call per key is what makes that ~500x slower).
    """
    frames = np.asarray(frames, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if frames.shape != values.shape:
        raise FCurveError(f"{frames.size} frames but {values.size} values for {fcurve.data_path!r}")
    if not (np.all(np.isfinite(frames)) and np.all(np.isfinite(values))):
        raise FCurveError(f"non-finite frames or values for {fcurve.data_path!r}[{fcurve.array_index}]")
    if frames.size > 1 and np.any(np.diff(frames) <= 0):
        raise FCurveError("frames must be strictly increasing")
    n_new = frames.size
    new = {
        "co": np.stack([frames, values], axis=1).astype(np.float32),
        "interpolation": np.full(n_new, _enum_value("interpolation", interpolation), np.int32),
        "handle_left_type": np.full(n_new, _enum_value("handle_left_type", handle_type), np.int32),
        "handle_right_type": np.full(n_new, _enum_value("handle_right_type", handle_type), np.int32),
    }
    kept = None
    if len(fcurve.keyframe_points):
        old = read_keys(fcurve)
        if n_new:
            x = old["co"][:, 0].astype(np.float64)
            keep = (x < frames[0] - 1e-3) | (x > frames[-1] + 1e-3)
            kept = {k: v[keep] for k, v in old.items()}
        else:
            kept = old
        _clear_keys(fcurve)
    if kept is not None and len(kept["co"]):
        n = len(kept["co"]) + n_new
        order = np.argsort(np.concatenate([kept["co"][:, 0], new["co"][:, 0]]), kind="stable")
        merged = {}
        for name, arr in kept.items():
            if name in new:
                fresh = new[name]
            elif name in ("handle_left", "handle_right"):
                fresh = new["co"]  # placeholder; update() recomputes auto handles
            else:  # defaults of a fresh key
                fresh = np.zeros((n_new,) + arr.shape[1:], dtype=arr.dtype)
            merged[name] = np.concatenate([arr, fresh])[order]
    else:
        n = n_new
        merged = dict(new)
        merged["handle_left"] = merged["handle_right"] = new["co"]
        merged["select_control_point"] = np.zeros(n, dtype=bool)
    if auto_smoothing is not None and fcurve.auto_smoothing != auto_smoothing:
        fcurve.auto_smoothing = auto_smoothing
    kp = fcurve.keyframe_points
    kp.add(n)
    for name, arr in merged.items():
        kp.foreach_set(name, np.ascontiguousarray(arr).reshape(-1))
    fcurve.update()  # sorts and recalculates automatic handles
    return n_new


def evaluate(fcurve: bpy.types.FCurve, frames: np.ndarray) -> np.ndarray:
    """Blender's own evaluation of ``fcurve`` at ``frames`` (for verification)."""
    ev = fcurve.evaluate
    return np.fromiter((ev(float(f)) for f in np.asarray(frames).reshape(-1)), dtype=np.float64)
