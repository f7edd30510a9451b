"""Keeping a tracked take and its video in step when the scene's frame rate is not the video's.

Blender plays a movie clip frame for frame, whatever the scene's rate, while keys are written at the
scene's rate: a 25 fps clip in a 24 fps scene ends ~1 s away from its keys after 24 s. So a track either
gives the scene the video's rate (when the scene holds nothing else that is timed in frames) or keeps the
scene's rate and shows a copy of the video made at that rate (``inference.tracking.video.retime``).
"""

from __future__ import annotations

import bpy

RATE_TOLERANCE = 1e-3  # fps; below this two rates are the same


def same_rate(a: float, b: float) -> bool:
    return abs(a - b) < RATE_TOLERANCE


def fps_pair(fps: float) -> tuple[int, float]:
    """Blender's (fps, fps_base) for a rate: whole rates as they are, NTSC rates (29.97 = 30 / 1.001) as Blender's
    own presets write them, anything else as round(fps) / base."""
    whole = round(fps)
    if whole >= 1 and same_rate(fps, whole):
        return int(whole), 1.0
    ntsc = round(fps * 1.001)
    if ntsc >= 1 and same_rate(fps, ntsc / 1.001):
        return int(ntsc), 1.001
    whole = max(1, whole)
    return int(whole), whole / fps


def _animated(id_data) -> bool:
    """Keyed (an action or NLA strips). Drivers do not count: they follow other values, not frames (the rig's own
    corrective drivers live on its shape keys)."""
    ad = getattr(id_data, "animation_data", None)
    return ad is not None and (ad.action is not None or len(ad.nla_tracks) > 0)


def timed_content(scene: bpy.types.Scene) -> str:
    """What in the scene is timed in frames (so changing its rate would change it), '' when nothing is: animated
    objects, shape keys or materials, the scene's own animation, sequencer strips, timeline markers."""
    if _animated(scene) or _animated(scene.world):
        return "the scene's own animation"
    for obj in scene.objects:
        if _animated(obj):
            return f"the animation of {obj.name}"
        keys = getattr(getattr(obj, "data", None), "shape_keys", None)
        if keys is not None and _animated(keys):
            return f"the shape-key animation of {obj.name}"
        for slot in getattr(obj, "material_slots", ()):
            if slot.material is not None and (_animated(slot.material) or _animated(slot.material.node_tree)):
                return f"the material animation of {obj.name}"
    ed = scene.sequence_editor
    if ed is not None and len(ed.strips if hasattr(ed, "strips") else ed.sequences):
        return "the sequencer's strips"
    if len(scene.timeline_markers):
        return "the timeline markers"
    return ""


def set_scene_fps(scene: bpy.types.Scene, fps: float) -> None:
    scene.render.fps, scene.render.fps_base = fps_pair(fps)
