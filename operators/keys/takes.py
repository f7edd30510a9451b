"""Playing one take alone for a while (e.g. rendering the tracked take while a newer take is active).

A take is the set of Cadence actions marked with its name (``keyframes.MARKER``), one per part (the face's
shape keys, the head's bones). ``solo_take`` makes them the active actions with the NLA off, and puts
everything back as it was on exit, also on error or cancel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import bpy

from . import fcurves as fc
from .keyframes import MARKER


class TakeError(RuntimeError):
    """The take is not in the file (the message is shown to the user)."""


def take_actions(take: str) -> dict[str, bpy.types.Action]:
    """{part: action} of the take named ``take`` ("face", "head")."""
    return {str(a.get("cadence_part", "")): a for a in bpy.data.actions if str(a.get(MARKER, "")) == take}


@contextlib.contextmanager
def solo_take(rig: bpy.types.Object, key: bpy.types.ID | None, take: str) -> Iterator[None]:
    actions = take_actions(take)
    if not actions:
        raise TakeError(f"the take {take!r} is no longer in this file")
    kept = []
    try:
        for part, id_block in (("face", key), ("head", rig)):
            if id_block is None or part not in actions:
                continue
            ad = fc.anim_data(id_block)
            kept.append((id_block, ad.action, ad.use_nla, getattr(ad, "action_slot", None)))
            ad.use_nla = False
            fc.assign_action(id_block, actions[part])
        yield
    finally:
        for id_block, action, use_nla, slot in reversed(kept):
            ad = id_block.animation_data
            ad.action = action
            if slot is not None and action is not None and ad.action_slot != slot:
                ad.action_slot = slot
            ad.use_nla = use_nla
