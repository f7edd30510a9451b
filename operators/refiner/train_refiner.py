"""`cadence.train_refiner`: learn the person's look from their tracked clip (stage 2, once per person).

Renders the *tracked* take through the tracked camera (``render.py``), then the worker trains the refiner on
(render, real frame) pairs within a time budget, reporting the held-out frames' PSNR. The refiner file goes
next to the saved .blend (else into Cadence's cache) and is recorded in rig["cadence"]["refiner"]. Nothing
else in the scene changes.
"""

from __future__ import annotations

import os

import bpy

from ..learned_files import learned_file_path
from ..rig import build as rig_mod
from ..worker.job import ModalJobOperator, WorkerJob
from . import render

REFINER_SUFFIX = ".refiner.pt"


def refiner_path(rig: bpy.types.Object, video: str) -> str:
    return learned_file_path(rig, video, REFINER_SUFFIX, "refiners", tag_beside_blend=True)


class TrainRefinerJob(WorkerJob):
    kind = "train_refiner"
    error_type = render.RenderError

    def __init__(self, context: bpy.types.Context, options: dict):
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise render.RenderError("Select a Cadence head (its armature or mesh) first")
        clip = render.tracked_clip(rig)
        video = str(clip.get("clip_file") or clip.get("video") or "")
        if not os.path.isfile(video):
            raise render.RenderError(f"The tracked video {video or '(none)'} is missing; track the video again")
        take = str(clip.get("take", ""))
        first, last = render.take_range(take)
        if options.get("max_frames"):
            last = min(last, first + int(options["max_frames"]) - 1)
        self.rig_name = rig.name
        out = render.cache_folder("refiner-renders", take)
        params = {"video": video, "frame_offset": 0, "refiner_out": options.get("refiner_out") or refiner_path(rig, video),
                  "head_hash": str(rig["cadence"].get("model_hash", "")),
                  "max_minutes": float(options.get("max_minutes", 10.0)), "size": int(options.get("size", 128))}
        for k in ("max_iters", "net_overrides", "init_refiner", "device", "batch"):
            if options.get(k):
                params[k] = options[k]
        super().__init__(context, params, prepare=render.render_steps(
            context, rig, os.path.join(out, "renders"), first, last, take=take,
            samples=int(options.get("samples", render.RENDER_SAMPLES))))

    def apply(self) -> dict:
        data = self.checked_result()
        rig = bpy.data.objects.get(self.rig_name)
        if rig is None or rig_mod.find_rig(rig) is None:
            raise render.RenderError(f"The rig was deleted while training; the refiner is in {data.get('refiner_file')}")
        rig["cadence"]["refiner"] = {"file": str(data["refiner_file"]), "val_psnr": float(data["val_psnr"]),
                                     "val_psnr_start": float(data["val_psnr_start"]),
                                     "iterations": int(data["iterations"]), "device": str(data.get("device", ""))}
        return dict(data, warnings=list(data.get("warnings", [])))


class CADENCE_OT_train_refiner(ModalJobOperator, bpy.types.Operator):
    """Train the photoreal refiner on the tracked video of the person (renders the tracked take first)"""

    bl_idname = "cadence.train_refiner"
    bl_label = "Train Refiner"
    bl_options = {"REGISTER", "UNDO"}

    max_minutes: bpy.props.FloatProperty(name="Time Budget (min)", default=10.0, min=0.1, soft_max=240.0,
                                         description="Training stops after this long (the held-out PSNR is reported)")
    size: bpy.props.EnumProperty(name="Crop Size", items=[("64", "64", "Tiny (tests)"), ("128", "128", "CPU"),
                                                          ("256", "256", "GPU")], default="128")
    samples: bpy.props.IntProperty(name="Render Samples", default=render.RENDER_SAMPLES, min=1, max=256)
    init_refiner: bpy.props.StringProperty(name="Start From", subtype="FILE_PATH",
                                           description="A general refiner, or an earlier one to continue (optional)")
    max_frames: bpy.props.IntProperty(name="Max Frames", default=0, min=0, description="0: the whole tracked take")

    errors = (render.RenderError,)
    verb = "Training the refiner"

    @classmethod
    def poll(cls, context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def make_job(self, context) -> WorkerJob:
        return TrainRefinerJob(context, {"max_minutes": self.max_minutes, "size": int(self.size),
                                         "samples": self.samples, "max_frames": self.max_frames,
                                         "init_refiner": bpy.path.abspath(self.init_refiner) if self.init_refiner
                                         else ""})

    def done_message(self, report: dict) -> str:
        return (f"Refiner trained ({report['iterations']} iterations on {report.get('device', 'cpu')}): held-out "
                f"PSNR {report['val_psnr_start']:.1f} → {report['val_psnr']:.1f} dB")
