"""A Blender camera matching a tracked video's camera, with the video as its background image.

The track job reports a fixed pinhole camera in the head MODEL's space (FLAME axes: +Y up, +Z out of
the face) at ``position``, looking along model -Z with +Y up, principal point at the image centre.
A Blender camera also looks along its local -Z with local +Y up, so its world matrix is the rig's
rotation with the position mapped through the rig's world matrix. The lens follows from the focal
length in pixels with a horizontal sensor fit: lens_mm = focal_px * sensor_width / image_width.
"""

from __future__ import annotations

import math
import os

import bpy
from mathutils import Matrix, Vector

SENSOR_WIDTH_MM = 36.0


class CameraMatchError(ValueError):
    """The tracked camera description is unusable (the message is shown to the user)."""


def check_camera(camera: dict) -> dict:
    """Validate the track job's camera dict; returns it with plain float/int values."""
    try:
        focal = float(camera["focal_px"])
        width, height = int(camera["width"]), int(camera["height"])
        position = [float(v) for v in camera["position"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CameraMatchError(f"the tracker returned an incomplete camera ({exc})") from exc
    if not (math.isfinite(focal) and focal > 0) or width < 1 or height < 1:
        raise CameraMatchError(f"the tracker returned an invalid camera (focal {focal} px, {width}x{height})")
    if len(position) != 3 or not all(math.isfinite(v) for v in position):
        raise CameraMatchError(f"the tracker returned an invalid camera position {camera.get('position')!r}")
    return {"focal_px": focal, "width": width, "height": height, "position": position}


def lens_mm(focal_px: float, width: int, sensor_width: float = SENSOR_WIDTH_MM) -> float:
    return float(focal_px) * float(sensor_width) / float(width)


def camera_matrix(rig: bpy.types.Object, position) -> Matrix:
    """World matrix of a camera at model-space ``position`` looking along model -Z (rig scale ignored)."""
    _loc, rot, _scale = rig.matrix_world.decompose()
    return Matrix.LocRotScale(rig.matrix_world @ Vector(position), rot, None)


def match_camera(scene: bpy.types.Scene, rig: bpy.types.Object, camera: dict, video: str | None = None,
                 show_background: bool = True, frame_start: int = 1, name: str = "") -> bpy.types.Object:
    """Create (or update) the rig's tracked camera, make it the scene camera and set the render size."""
    cam_info = check_camera(camera)
    name = name or f"{rig.name} Track Camera"
    obj = bpy.data.objects.get(name)
    if obj is None or obj.type != "CAMERA":
        data = bpy.data.cameras.new(name)
        obj = bpy.data.objects.new(name, data)
        scene.collection.objects.link(obj)
    elif obj.name not in scene.objects:
        scene.collection.objects.link(obj)
    data = obj.data
    data.type = "PERSP"
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = SENSOR_WIDTH_MM
    data.lens = lens_mm(cam_info["focal_px"], cam_info["width"])
    data.shift_x = data.shift_y = 0.0  # principal point at the image centre
    data.clip_start = 0.01
    data.clip_end = 100.0
    obj.matrix_world = camera_matrix(rig, cam_info["position"])
    scene.camera = obj
    scene.render.resolution_x, scene.render.resolution_y = cam_info["width"], cam_info["height"]
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    if video and show_background:
        set_background_video(obj, video, frame_start)
    return obj


def set_background_video(cam_obj: bpy.types.Object, video: str, frame_start: int = 1):
    """Show ``video`` behind the camera's view (a MovieClip background image); returns the image slot."""
    path = bpy.path.abspath(video)
    if not os.path.isfile(path):
        raise CameraMatchError(f"video not found: {path}")
    clip = next((c for c in bpy.data.movieclips if bpy.path.abspath(c.filepath) == path), None)
    if clip is None:
        try:
            clip = bpy.data.movieclips.load(path)
        except RuntimeError as exc:
            raise CameraMatchError(f"Blender cannot open {os.path.basename(path)} as a movie clip: {exc}") from exc
    clip.frame_start = int(frame_start)
    data = cam_obj.data
    for other in [b for b in data.background_images if b.source == "MOVIE_CLIP" and b.clip != clip]:
        data.background_images.remove(other)  # the track camera shows one video: the latest track's
    bg = next((b for b in data.background_images if b.source == "MOVIE_CLIP" and b.clip == clip), None)
    if bg is None:
        bg = data.background_images.new()
        bg.source = "MOVIE_CLIP"
        bg.clip = clip
    bg.use_camera_clip = False
    bg.alpha = 1.0
    bg.display_depth = "BACK"
    bg.frame_method = "FIT"
    data.show_background_images = True
    return bg
