"""Preview staging: camera, lights and a skin material around a Cadence rig, for quick renders.

Used by the demo and the batch command's optional preview. Leaves an existing camera alone unless
asked, so a user's shot is never replaced.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Vector


def eevee_engine_name() -> str:
    """'BLENDER_EEVEE_NEXT' on 4.2–4.5, 'BLENDER_EEVEE' on 5.0+."""
    items = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in items else "BLENDER_EEVEE"


def head_bounds(mesh_obj: bpy.types.Object) -> tuple[Vector, Vector]:
    """World-space bounding box (min, max) of the evaluated head mesh."""
    deps = bpy.context.evaluated_depsgraph_get()
    ev = mesh_obj.evaluated_get(deps)
    corners = np.array([ev.matrix_world @ Vector(c) for c in ev.bound_box])
    return Vector(corners.min(axis=0)), Vector(corners.max(axis=0))


def stage(scene: bpy.types.Scene, rig: bpy.types.Object, engine: str = "EEVEE", size: int = 320,
          replace_camera: bool = True) -> bpy.types.Object:
    """Frame the head from the front, light it, give it a skin material; returns the camera."""
    mesh = bpy.data.objects[rig["cadence"]["mesh"]]
    lo, hi = head_bounds(mesh)
    lo.z = lo.z + 0.2 * (hi.z - lo.z)  # frame the head, not the neck stump
    center = (lo + hi) / 2
    height = hi.z - lo.z

    cam = scene.camera
    if cam is None or replace_camera:
        cam_data = bpy.data.cameras.new("Cadence Camera")
        cam_data.lens = 85.0
        cam = bpy.data.objects.new("Cadence Camera", cam_data)
        scene.collection.objects.link(cam)
        scene.camera = cam
        # Distance so the head fills ~85 % of the frame height (sensor 36 mm, square frame).
        dist = 1.15 * height * cam_data.lens / cam_data.sensor_width
        cam.location = (center.x, center.y - dist - (hi.y - lo.y) / 2, center.z + 0.05 * height)
        cam.rotation_euler = (math.radians(90.0), 0.0, 0.0)

    for name, loc, energy, size_m in (
        ("Cadence Key", (-0.6, -0.9, 0.5), 60.0, 0.6),
        ("Cadence Fill", (0.8, -0.7, 0.1), 25.0, 0.8),
        ("Cadence Rim", (0.3, 0.9, 0.6), 40.0, 0.5),
    ):
        light_data = bpy.data.lights.new(name, type="AREA")
        light_data.energy = energy * max(height / 0.25, 0.2) ** 2
        light_data.size = size_m * height / 0.25
        light = bpy.data.objects.new(name, light_data)
        light.location = center + Vector(loc) * (height / 0.25)
        direction = center - light.location
        light.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
        scene.collection.objects.link(light)

    if not mesh.data.materials:  # a head built before materials existed, or a user's mesh
        from .rig import materials

        materials.assign(mesh.data, None)

    world = scene.world or bpy.data.worlds.new("Cadence World")
    scene.world = world
    world.color = (0.05, 0.05, 0.06)
    nodes_on = bpy.app.version >= (5, 0, 0) or world.use_nodes  # 5.0: worlds always use nodes
    if nodes_on and world.node_tree and world.node_tree.nodes.get("Background"):
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.06, 1.0)

    render = scene.render
    render.resolution_x = render.resolution_y = size
    render.resolution_percentage = 100
    render.image_settings.file_format = "PNG"
    if engine == "WORKBENCH":
        render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "MATERIAL"
    else:
        render.engine = eevee_engine_name()
        scene.eevee.taa_render_samples = 4
    return cam


def set_video_output(scene: bpy.types.Scene, filepath: str) -> None:
    """H.264 mp4 with AAC audio from the sequencer's sound strips (Blender's own FFmpeg)."""
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5.0: choose the media type before the format
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    ff = scene.render.ffmpeg
    ff.format, ff.codec, ff.audio_codec = "MPEG4", "H264", "AAC"
    ff.constant_rate_factor = "MEDIUM"
    scene.render.filepath = filepath


def render_preview(scene: bpy.types.Scene, filepath: str, size: int = 256, audio: str | None = None,
                   engine: str = "EEVEE") -> str:
    """Stage the scene's Cadence rig if needed and render the frame range to an mp4 with sound."""
    from .keys.sound import add_sound_strip
    from .rig import build as rig_mod

    rig = next((o for o in scene.objects if rig_mod.find_rig(o) is o), None)
    if rig is None:
        raise RuntimeError("no Cadence rig in the scene to preview")
    stage(scene, rig, engine=engine, size=size, replace_camera=scene.camera is None)
    if audio:
        add_sound_strip(scene, audio, scene.frame_start)
    set_video_output(scene, filepath)
    bpy.ops.render.render(animation=True)
    return filepath
