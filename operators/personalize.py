"""`cadence.personalize`: learn a person's head-motion style (a persona) from a video of them talking.

Reuses the rig's last tracking run (rig["cadence"]["last_track"]) when it is for the same video, else
the worker tracks the video inside the job. The persona file is written next to the .blend (or into
Cadence's cache while the .blend is unsaved) and recorded in rig["cadence"]["persona"], which
`cadence.generate` (persona=…, or the panel's Use Persona toggle) then uses.
"""

from __future__ import annotations

import os

import bpy

from .keys.keyframes import scene_fps
from .learned_files import learned_file_path
from .paths import user_path
from .prefs import face_landmarker
from .rig import build as rig_mod
from .rig import head_cache
from .track_video import (
    VIDEO_EXTENSIONS,
    TrackVideoError,
    check_video_path,
    record_embedding,
    tracking_head_steps,
)
from .worker.job import ModalJobOperator, WorkerJob

PERSONA_SUFFIX = ".persona.pt"


class PersonalizeError(TrackVideoError):
    """A problem the user can act on; the message is shown as is."""


def reusable_track(rig: bpy.types.Object, video: str) -> dict | None:
    """rig["cadence"]["last_track"] as a dict when it is for ``video`` and its files still exist."""
    last = rig["cadence"].get("last_track")
    if last is None:
        return None
    last = last.to_dict() if hasattr(last, "to_dict") else dict(last)
    if os.path.abspath(str(last.get("video", ""))) != os.path.abspath(video):
        return None
    if not (os.path.isfile(str(last.get("channels_file", ""))) and os.path.isfile(str(last.get("audio_file", "")))):
        return None
    return last


def persona_path(video: str, rig: bpy.types.Object) -> str:
    """Where a persona for ``video`` is stored: next to the saved .blend, else in Cadence's cache."""
    return learned_file_path(rig, video, PERSONA_SUFFIX, "personas", tag_beside_blend=False)


class PersonalizeJob(WorkerJob):
    kind = "personalize"
    error_type = PersonalizeError

    def __init__(self, context: bpy.types.Context, filepath: str | list[str], options: dict):
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise PersonalizeError("Select a Cadence head (its armature or mesh) first: Add > Cadence Head")
        videos = [check_video_path(f) for f in ([filepath] if isinstance(filepath, str) else list(filepath))]
        if not videos:
            raise PersonalizeError("Choose at least one video of the person talking")
        video = videos[0]
        params = {"persona_out": options.get("persona_out") or persona_path(video, rig),
                  "epochs": int(options.get("epochs", 100)), "n_frames": int(options.get("n_frames", 300))}
        if options.get("general"):
            params["general"] = user_path(options["general"])
        # Each clip: the rig's last track when it is of that video (no tracking again), else tracked in the job.
        clips, prepare = [], None
        for v in videos:
            last = reusable_track(rig, v)
            clips.append({"channels_file": last["channels_file"], "audio_file": last["audio_file"]} if last
                         else {"video": v})
        to_track = [c["video"] for c in clips if "video" in c]
        if len(to_track) < len(clips):
            info = rig_mod.rig_model_info(rig)
            head_file = head_cache.find_model_file(info, context)
            if not head_file:
                raise PersonalizeError(head_cache.missing_message(info))
            params["head_file"] = head_file
        if to_track:
            params["fps"] = scene_fps(context.scene)
            prepare = tracking_head_steps(rig, context, to_track[0])  # the head's landmark calibration, the first time
        if len(clips) == 1:
            params.update(clips[0])
        else:
            params["clips"] = clips
        if face_landmarker(context) and to_track:
            params["scores_model"] = face_landmarker(context)
        if options.get("lens_mm") and to_track:
            params["lens_mm"] = float(options["lens_mm"])
        for key in ("net_overrides", "device"):
            if options.get(key):
                params[key] = options[key]
        self.rig_name, self.video, self.reused = rig.name, video, not to_track
        super().__init__(context, params, prepare=prepare)

    def apply(self) -> dict:
        data = self.checked_result()
        rig = bpy.data.objects.get(self.rig_name)
        if rig is None or rig_mod.find_rig(rig) is None:
            raise PersonalizeError("The Cadence rig was deleted while learning the persona.")
        path = data.get("persona_file", "")
        if not path or not os.path.isfile(path):
            raise PersonalizeError(f"The worker did not write the persona file ({path or 'no path'}).")
        stored = bpy.path.relpath(path) if bpy.data.filepath else path
        rig["cadence"]["persona"] = stored
        record_embedding(rig, self.params)
        return {"persona": path, "reused_track": self.reused, "held_out_loss": data.get("held_out_loss"),
                "epochs": data.get("history", {}).get("epochs_run"), "timings": data.get("timings", {})}


class CADENCE_OT_personalize(ModalJobOperator, bpy.types.Operator):
    """Learn how this person moves their head while talking, from a video of them (a persona)"""

    bl_idname = "cadence.personalize"
    bl_label = "Personalize"
    bl_options = {"REGISTER", "UNDO"}  # it records the persona (and a first track's calibrated head) on the rig

    filepath: bpy.props.StringProperty(name="Video", subtype="FILE_PATH", description="Video of the person talking")
    # Several clips of the same person: select them together in the file browser (or script ``files`` + ``directory``).
    files: bpy.props.CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    filter_glob: bpy.props.StringProperty(default="*" + ";*".join(VIDEO_EXTENSIONS.split(";")), options={"HIDDEN"})
    epochs: bpy.props.IntProperty(name="Epochs", default=100, min=1, soft_max=500)
    n_frames: bpy.props.IntProperty(name="Frames", default=300, min=0,
                                    description="Frames of the video to learn from (0: all)")
    general: bpy.props.StringProperty(name="General Model", subtype="FILE_PATH",
                                      description="Optional general model to fine-tune (else trained from scratch)")
    persona_out: bpy.props.StringProperty(name="Persona File", subtype="FILE_PATH",
                                          description="Empty: next to the .blend (or in Cadence's cache)")
    lens_mm: bpy.props.FloatProperty(
        name="Lens (mm)", default=0.0, min=0.0, soft_max=300.0,
        description="The video camera's focal length when known (35 mm equivalent), for tracking it. "
                    "0: estimate it from the video")

    errors = (PersonalizeError, TrackVideoError)
    verb = "Personalization"

    @classmethod
    def poll(cls, context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def make_job(self, context) -> WorkerJob:
        names = [f.name for f in self.files if f.name]
        videos = [os.path.join(self.directory, n) for n in names] if self.directory and names else self.filepath
        return PersonalizeJob(context, videos, {
            "epochs": self.epochs, "n_frames": self.n_frames, "general": self.general,
            "persona_out": user_path(self.persona_out),
            "lens_mm": self.lens_mm,
        })

    def done_message(self, report: dict) -> str:
        return f"Persona saved: {os.path.basename(report['persona'])}"


classes = (CADENCE_OT_personalize,)
