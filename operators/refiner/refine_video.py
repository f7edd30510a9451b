"""`cadence.refine_video`: the take the scene plays -> a photoreal mp4 of the person, with the take's sound.

Renders the scene's frames of the head through the tracked camera (``render.py``), then the worker refines
each frame with the rig's refiner (rig["cadence"]["refiner"], from Train Refiner), pastes it onto the clip
frame whose head pose is nearest and writes an H.264 mp4 with the audio the scene plays at those frames.
The scene is not changed; a cancelled or failed run leaves no file under the output name.
"""

from __future__ import annotations

import os

import bpy

from ..keys import keyframes
from ..keys.sound import audible_sound
from ..paths import user_path
from ..rig import build as rig_mod
from ..worker.job import ModalJobOperator, WorkerJob
from . import render


def default_output(rig: bpy.types.Object) -> str:
    if bpy.data.filepath:
        stem = os.path.splitext(bpy.path.abspath(bpy.data.filepath))[0]
        return f"{stem}_{rig.name}.mp4".replace(" ", "_")
    return os.path.join(render.cache_folder("videos", rig.name), "take.mp4")


class RefineVideoJob(WorkerJob):
    kind = "refine_video"
    error_type = render.RenderError

    def __init__(self, context: bpy.types.Context, filepath: str, options: dict):
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise render.RenderError("Select a Cadence head (its armature or mesh) first")
        stored = rig["cadence"].get("refiner")
        refiner = str(stored.get("file", "")) if stored is not None else ""
        if not refiner or not os.path.isfile(refiner):
            raise render.RenderError("This head has no refiner yet: run Train Refiner on the tracked video first"
                                     if not refiner else f"The refiner file {refiner} is missing; train it again")
        render.tracked_clip(rig)
        scene = context.scene
        first = int(options.get("frame_start") or scene.frame_start)
        last = int(options.get("frame_end") or scene.frame_end)
        if last < first:
            raise render.RenderError(f"Nothing to refine: frames {first}–{last}")
        out = user_path(filepath) if filepath else default_output(rig)
        if os.path.isdir(out):
            raise render.RenderError(f"{out} is a folder: give the video's file name (…/take.mp4)")
        if not out.lower().endswith(".mp4"):
            out += ".mp4"
        fps = keyframes.scene_fps(scene)
        params = {"refiner_file": refiner, "video_out": out, "head_hash": str(rig["cadence"].get("model_hash", ""))}
        sound = audible_sound(scene, first) if options.get("audio", True) else None
        if sound is not None:
            params["audio"], params["audio_offset_s"] = sound[0], (first - sound[1]) / fps
        if options.get("device"):
            params["device"] = options["device"]
        super().__init__(context, params, prepare=render.render_steps(
            context, rig, os.path.join(render.cache_folder("take-renders", rig.name), "renders"), first, last,
            samples=int(options.get("samples", render.RENDER_SAMPLES))))

    def apply(self) -> dict:
        data = self.checked_result()
        if not os.path.isfile(str(data.get("video_file", ""))):
            raise render.RenderError("The worker reported a video that is not there; try again")
        warnings = [] if "audio" in self.params else ["no sound plays at the take's first frame: the video is silent"]
        return dict(data, warnings=warnings)


class CADENCE_OT_refine_video(ModalJobOperator, bpy.types.Operator):
    """Write a photoreal video of the person from the take the scene plays (needs Train Refiner first)"""

    bl_idname = "cadence.refine_video"
    bl_label = "Refine Video"
    bl_options = {"REGISTER"}

    filepath: bpy.props.StringProperty(name="Video", subtype="FILE_PATH",
                                       description="The mp4 to write (empty: next to the .blend, else the cache)")
    frame_start: bpy.props.IntProperty(name="Start", default=0, description="0: the scene's start")
    frame_end: bpy.props.IntProperty(name="End", default=0, description="0: the scene's end")
    samples: bpy.props.IntProperty(name="Render Samples", default=render.RENDER_SAMPLES, min=1, max=256)
    audio: bpy.props.BoolProperty(name="With Sound", default=True,
                                  description="Mux the sound the scene plays at these frames")

    errors = (render.RenderError,)
    verb = "Refining the video"

    @classmethod
    def poll(cls, context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def make_job(self, context) -> WorkerJob:
        return RefineVideoJob(context, self.filepath, {"frame_start": self.frame_start, "frame_end": self.frame_end,
                                                       "samples": self.samples, "audio": self.audio})

    def done_message(self, report: dict) -> str:
        return f"Wrote {report['n_frames']} frames to {report['video_file']}"
