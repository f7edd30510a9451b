"""`cadence.render_frames`: Eevee renders of a take through the tracked camera, for the refiner.

The head renders alone on a transparent film (alpha = the head's mask) at the tracked video's size, lens
and sensor, one RGBA PNG per frame, with ``manifest.json`` (see ``inference/refiner/frames.py``) recording
each frame's head pose in camera space (for matching backgrounds). The render happens in a temporary scene
that links the rig, its meshes, a camera rebuilt from the tracking run and its own world and light: the
user's scene, its camera, render settings and current frame are never changed, and everything made here is
removed afterwards, also on cancel or error. A given take (e.g. the tracked one, for training) plays alone
while rendering (``keys.takes.solo_take``), then the actions are put back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Generator

import bpy
import numpy as np
from mathutils import Matrix

from ..keys.takes import TakeError, solo_take
from ..rig import build as rig_mod
from ..tracking import camera_match
from ..worker.job import JobFailed, ModalJobOperator, WorkerJob

RENDER_SAMPLES = 8
MANIFEST = "manifest.json"
VERTICES, FACES = "vertices.npy", "faces.npy"  # the head's camera-space vertices per frame, its triangles
WORLD_GREY = 0.35
SUN_STRENGTH = 2.5


class RenderError(JobFailed):
    """A problem the user can act on; the message is shown as is."""


def eevee_engine() -> str:
    items = {e.identifier for e in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in items else "BLENDER_EEVEE"


def tracked_clip(rig: bpy.types.Object) -> dict:
    """The rig's last tracking run (video, camera, take, frames); RenderError when there is none."""
    last = rig["cadence"].get("last_track")
    if last is None:
        raise RenderError("Track a video of the person first (Track Video): the refiner renders through the "
                          "tracked camera and learns from that video")
    last = last.to_dict() if hasattr(last, "to_dict") else dict(last)
    try:
        last["camera"] = camera_match.check_camera(last.get("camera") or {})
    except camera_match.CameraMatchError as exc:
        raise RenderError(f"The last tracking run has no usable camera ({exc}); track the video again") from exc
    return last


def take_range(take: str) -> tuple[int, int]:
    """First and last keyed frame of a take."""
    from ..keys.takes import take_actions

    actions = take_actions(take)
    if not actions:
        raise RenderError(f"The take {take!r} is no longer in this file; track the video again")
    lo = min(a.frame_range[0] for a in actions.values())
    hi = max(a.frame_range[1] for a in actions.values())
    return int(round(lo)), int(round(hi))


def head_bone(rig: bpy.types.Object) -> str:
    """The bone that carries the head (FLAME's neck joint, else the root)."""
    names = rig_mod.rig_model_info(rig)["joint_names"]
    return names[1] if len(names) > 1 else names[0]


@contextlib.contextmanager
def render_scene(context: bpy.types.Context, rig: bpy.types.Object, camera: dict, samples: int):
    """A temporary scene with the rig, its meshes, the tracked camera, a grey world and a frontal sun."""
    src = context.scene
    made: list = []
    scene = bpy.data.scenes.new("Cadence Refiner Render")
    had_render_result = {im.name for im in bpy.data.images if im.type == "RENDER_RESULT"}
    try:
        for obj in [rig, *[c for c in rig.children_recursive if c.type == "MESH"]]:
            scene.collection.objects.link(obj)
        cam_data = bpy.data.cameras.new("Cadence Refiner Camera")
        made.append((bpy.data.cameras, cam_data))
        cam_data.sensor_fit, cam_data.sensor_width = "HORIZONTAL", camera_match.SENSOR_WIDTH_MM
        cam_data.lens = camera_match.lens_mm(camera["focal_px"], camera["width"])
        cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
        cam = bpy.data.objects.new("Cadence Refiner Camera", cam_data)
        made.append((bpy.data.objects, cam))
        scene.collection.objects.link(cam)
        cam.matrix_world = camera_match.camera_matrix(rig, camera["position"])
        scene.camera = cam
        sun_data = bpy.data.lights.new("Cadence Refiner Light", "SUN")
        made.append((bpy.data.lights, sun_data))
        sun_data.energy = SUN_STRENGTH
        sun_data.use_shadow = False  # at a few samples Eevee's shadows are noisy; the refiner adds the shading
        sun = bpy.data.objects.new("Cadence Refiner Light", sun_data)
        made.append((bpy.data.objects, sun))
        scene.collection.objects.link(sun)
        sun.matrix_world = cam.matrix_world.to_3x3().to_4x4() @ Matrix.Rotation(math.radians(25), 4, "X") \
            @ Matrix.Rotation(math.radians(-15), 4, "Y")
        world = bpy.data.worlds.new("Cadence Refiner World")
        made.append((bpy.data.worlds, world))
        world.use_nodes = True
        bg = world.node_tree.nodes.get("Background")
        if bg is not None:
            bg.inputs[0].default_value = (WORLD_GREY, WORLD_GREY, WORLD_GREY, 1.0)
        scene.world = world
        r = scene.render
        r.engine = eevee_engine()
        scene.eevee.taa_render_samples = max(1, int(samples))
        r.resolution_x, r.resolution_y, r.resolution_percentage = camera["width"], camera["height"], 100
        r.pixel_aspect_x = r.pixel_aspect_y = 1.0
        r.fps, r.fps_base = src.render.fps, src.render.fps_base
        r.film_transparent = True
        r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGBA"
        r.image_settings.color_depth = "8"
        scene.view_settings.view_transform = "Standard"
        yield scene, cam
    finally:
        bpy.data.scenes.remove(scene)
        for collection, block in reversed(made):
            collection.remove(block)
        for im in list(bpy.data.images):
            if im.type == "RENDER_RESULT" and im.name not in had_render_result:
                bpy.data.images.remove(im)


def render_steps(context: bpy.types.Context, rig: bpy.types.Object, out_dir: str, first: int, last: int,
                 take: str | None = None, samples: int = RENDER_SAMPLES) -> Generator:
    """Steps (WorkerJob.prepare) rendering frames ``first``..``last``; result {"renders_dir": out_dir, ...}.
    ``take``: the take that plays while rendering (default: what the scene plays)."""
    clip = tracked_clip(rig)
    if last < first:
        raise RenderError(f"Nothing to render: frames {first}–{last}")
    mesh = rig_mod.rig_mesh(rig)
    key = mesh.data.shape_keys
    os.makedirs(out_dir, exist_ok=True)
    bone = head_bone(rig)
    files, poses, frames, verts = [], [], list(range(first, last + 1)), []
    solo = solo_take(rig, key, take) if take else contextlib.nullcontext()
    t0 = time.monotonic()
    try:
        with render_scene(context, rig, clip["camera"], samples) as (scene, cam), solo:
            depsgraph = scene.view_layers[0].depsgraph
            for i, frame in enumerate(frames):
                scene.frame_set(frame)
                name = f"render_{i + 1:05d}.png"
                scene.render.filepath = os.path.join(out_dir, name)
                # As the context's scene: rendering another scene (render(scene=...)) in background mode
                # renders its first evaluated frame over and over, whatever frame_set says.
                with context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
                    bpy.ops.render.render(write_still=True)
                rig_eval = rig.evaluated_get(depsgraph)
                cam_eval = cam.evaluated_get(depsgraph)
                pose = cam_eval.matrix_world.inverted() @ rig_eval.matrix_world @ rig_eval.pose.bones[bone].matrix
                files.append(name)
                poses.append([v for row in pose for v in row])
                verts.append(_camera_space_vertices(mesh, depsgraph, cam_eval))
                left = (time.monotonic() - t0) / (i + 1) * (len(frames) - i - 1)
                yield (i + 1) / len(frames), f"rendering frame {frame} ({i + 1}/{len(frames)}, ~{left:.0f} s left)"
    except TakeError as exc:
        raise RenderError(str(exc)) from exc
    np.save(os.path.join(out_dir, VERTICES), np.stack(verts))
    np.save(os.path.join(out_dir, FACES), _triangles(mesh))
    manifest = {"kind": "cadence-renders", "version": 1, "width": clip["camera"]["width"],
                "focal_px": clip["camera"]["focal_px"], "vertices": VERTICES, "faces": FACES,
                "height": clip["camera"]["height"], "fps": context.scene.render.fps / context.scene.render.fps_base,
                "frames": frames, "files": files, "head_pose": poses, "take": take or "",
                "head_hash": str(rig["cadence"].get("model_hash", "")), "samples": int(samples)}
    with open(os.path.join(out_dir, MANIFEST), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    return {"renders_dir": out_dir, "n_frames": len(frames)}


def _camera_space_vertices(mesh: bpy.types.Object, depsgraph, cam_eval) -> np.ndarray:
    """(V, 3) float32: the evaluated head mesh (bones, shape keys) in the camera's space (for the texture)."""
    obj = mesh.evaluated_get(depsgraph)
    data = obj.to_mesh()
    try:
        co = np.empty(len(data.vertices) * 3, dtype=np.float32)
        data.vertices.foreach_get("co", co)
    finally:
        obj.to_mesh_clear()
    m = np.array(cam_eval.matrix_world.inverted() @ obj.matrix_world)
    return (co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


def _triangles(mesh: bpy.types.Object) -> np.ndarray:
    data = mesh.data
    data.calc_loop_triangles()
    tri = np.empty(len(data.loop_triangles) * 3, dtype=np.int32)
    data.loop_triangles.foreach_get("vertices", tri)
    return tri.reshape(-1, 3)


def cache_folder(kind: str, stem: str) -> str:
    from ..prefs import cache_dir

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60] or kind
    return os.path.join(cache_dir(), kind, f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}")


class RenderJob(WorkerJob):
    """Renders only (no worker): the preparation is the whole job."""

    kind = "render_frames"
    error_type = RenderError

    def __init__(self, context: bpy.types.Context, directory: str, first: int | None = None, last: int | None = None,
                 samples: int = RENDER_SAMPLES):
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise RenderError("Select a Cadence head (its armature or mesh) first")
        scene = context.scene
        first = scene.frame_start if first is None else first
        last = scene.frame_end if last is None else last
        out = bpy.path.abspath(directory) if directory else cache_folder("renders", rig.name)
        self.params, self.scene_name, self.job_id = {}, scene.name, None
        self.prepare = render_steps(context, rig, out, first, last, samples=samples)
        self.fraction, self.message, self.result, self.error = 0.0, "Starting", None, None

    def submit(self) -> None:
        self.job_id = "render"
        self.result = dict(self.params)

    def poll(self) -> bool:
        return True

    def cancel(self) -> None:
        if self.prepare is not None:
            self.prepare.close()
            self.prepare = None

    def apply(self) -> dict:
        return self.checked_result()


class CADENCE_OT_render_frames(ModalJobOperator, bpy.types.Operator):
    """Render the scene's frames of the selected head through the tracked camera (head alone, with its mask)"""

    bl_idname = "cadence.render_frames"
    bl_label = "Render Frames for Refiner"
    bl_options = {"REGISTER"}

    directory: bpy.props.StringProperty(name="Folder", subtype="DIR_PATH",
                                        description="Where the frames go (empty: Cadence's cache)")
    frame_start: bpy.props.IntProperty(name="Start", default=0, description="0 with End 0: the scene's range")
    frame_end: bpy.props.IntProperty(name="End", default=0)
    samples: bpy.props.IntProperty(name="Samples", default=RENDER_SAMPLES, min=1, max=256)

    errors = (RenderError,)
    verb = "Rendering"

    @classmethod
    def poll(cls, context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def make_job(self, context) -> WorkerJob:
        whole = self.frame_start == 0 and self.frame_end == 0
        return RenderJob(context, self.directory, None if whole else self.frame_start,
                         None if whole else self.frame_end, self.samples)

    def done_message(self, report: dict) -> str:
        return f"Rendered {report['n_frames']} frames to {report['renders_dir']}"
