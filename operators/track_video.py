"""`cadence.track_video`: a video of a person -> the rig's identity, a take of the tracked motion, a matched
camera with the video behind it, and the video's sound.

Like `cadence.generate`: a job object holds one request from submission to the result being applied;
``execute()`` drives it synchronously (scripts, background mode), ``invoke()`` polls it from a timer
with progress and Esc to cancel. Nothing in the scene changes until the worker's result is complete
and validated. ``WorkerJob`` and ``ModalJobOperator`` are shared with `cadence.personalize`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Generator

import bpy
import numpy as np

from ..inference.protocol import ChannelError, Channels
from .keys import keyframes
from .keys.sound import add_sound_strip
from .paths import user_file
from .prefs import face_landmarker
from .rig import build as rig_mod
from .rig import pose as pose_mod
from .tracking import camera_match, frame_rate
from .worker import client as worker_client
from .worker import session as worker_session
from .worker.job import JobFailed, ModalJobOperator, WorkerJob

VIDEO_EXTENSIONS = ".mp4;.mov;.mkv;.avi;.webm;.m4v;.mpg;.mpeg"


class TrackVideoError(JobFailed):
    """A problem the user can act on; the message is shown as is."""


def check_video_path(filepath: str) -> str:
    if not filepath:
        raise TrackVideoError("Choose a video of the person's face to track")
    return user_file(filepath, "video", TrackVideoError)


def tracking_head_steps(rig: bpy.types.Object, context: bpy.types.Context, video: str) -> Generator:
    """Steps (WorkerJob.prepare) whose result is {"head_file": the rig's head model with a detector-calibrated
    landmark embedding, "landmarks": how it was made, "video_fps": the video's rate}: a quick check of ``video`` first (so a bad video fails
    in a second, not after a calibration), then none when the embedding exists, minutes of calibration renders
    the first time for a head. The rig is not changed here: the job's apply() records the embedding."""
    from . import landmarks

    yield 0.0, "checking the video"
    try:
        checked = worker_session.get_client(context).run_sync("check_video", {"video": video})
    except worker_client.WorkerError as exc:
        raise TrackVideoError(str(exc)) from exc
    meta = rig["cadence"]
    kept = {k: meta.get(k) for k in ("model_file", "landmarks")}
    try:
        path = yield from landmarks.embedding_steps(rig, context)
        made = str(meta.get("landmarks", ""))
    except (landmarks.LandmarkError, worker_client.WorkerError) as exc:
        raise TrackVideoError(f"This head cannot be tracked yet: {exc}") from exc
    finally:  # (also when cancelled: the generator is closed)
        for k, v in kept.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
    if not path or not os.path.isfile(path):
        raise TrackVideoError("This rig's head model file is missing from Cadence's cache; add the head again.")
    return {"head_file": path, "landmarks": made, "video_fps": float(checked.get("fps") or 0.0)}


def record_embedding(rig: bpy.types.Object, params: dict) -> None:
    """On success: the rig's head model is the calibrated one the job used (tracking_head_steps' result)."""
    if params.get("head_file") and params.get("landmarks"):
        rig["cadence"]["model_file"] = params["head_file"]
        rig["cadence"]["landmarks"] = params["landmarks"]


class TrackJob(WorkerJob):
    kind = "track"
    error_type = TrackVideoError
    rate_note = ""

    def __init__(self, context: bpy.types.Context, filepath: str, options: dict):
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise TrackVideoError("Select a Cadence head (its armature or mesh) first: Add > Cadence Head")
        video = check_video_path(filepath)
        self.rig_name, self.video, self.options = rig.name, video, options
        params = {"video": video, "fps": keyframes.scene_fps(context.scene)}
        if face_landmarker(context):
            params["scores_model"] = face_landmarker(context)
        if options.get("max_frames"):
            params["max_frames"] = int(options["max_frames"])
        if options.get("lens_mm"):
            params["lens_mm"] = float(options["lens_mm"])
        self.rate_change: float | None = None  # the video's rate, given to the empty scene
        super().__init__(context, params, prepare=self._prepare(rig, context, video))

    def _prepare(self, rig: bpy.types.Object, context: bpy.types.Context, video: str) -> Generator:
        """The head's steps, then the frame-rate decision (the video's rate is known once it was checked):
        the keys and the camera's background movie must be in step at every frame."""
        got = yield from tracking_head_steps(rig, context, video)
        video_fps, fps = got.pop("video_fps", 0.0), self.params["fps"]
        if video_fps > 0 and not frame_rate.same_rate(video_fps, fps):
            busy = frame_rate.timed_content(context.scene)
            if busy:  # keep the user's timing: the background becomes a copy of the video at the scene's rate
                got["clip_fps"] = fps
                self.rate_note = (f"the scene keeps its {fps:g} fps ({busy} is timed in frames): the {video_fps:g} "
                                  f"fps video was resampled for the keys and copied at {fps:g} fps for the camera")
            else:
                got["fps"] = self.rate_change = video_fps
                self.rate_note = f"the scene's frame rate was set to the video's, {video_fps:g} fps (was {fps:g})"
        return got

    def apply(self) -> dict:
        """Apply identity, take, camera and sound (or raise TrackVideoError, touching nothing)."""
        data = self.checked_result()
        scene, rig = bpy.data.scenes.get(self.scene_name), bpy.data.objects.get(self.rig_name)
        if scene is None or rig is None or rig_mod.find_rig(rig) is None:
            raise TrackVideoError("The Cadence rig was deleted while tracking; nothing was changed.")
        # Validate everything first: nothing is written unless all of it can be.
        try:
            channels = Channels.load(data["channels_file"])
        except (KeyError, ChannelError, OSError) as exc:
            raise TrackVideoError(f"The worker returned an unreadable tracked take: {exc}") from exc
        info = rig_mod.rig_model_info(rig)
        if tuple(channels.expr_names) != tuple(info.get("expr_names", ())):
            raise TrackVideoError("The tracked take was made for a different head than this rig; nothing was changed.")
        identity = np.asarray(data.get("identity") or [], dtype=np.float64)
        if identity.size > len(info.get("shape_names", [])) or not np.all(np.isfinite(identity)):
            raise TrackVideoError("The tracker returned an identity that does not fit this head; nothing was changed.")
        try:
            camera = camera_match.check_camera(data.get("camera") or {})
        except camera_match.CameraMatchError as exc:
            raise TrackVideoError(str(exc)) from exc
        opts = self.options
        frame_start = int(opts.get("frame_start", 1))
        last = frame_start + max(0, channels.n_frames - 1)
        keyframes.check_frames(frame_start, last)
        stem = os.path.splitext(os.path.basename(self.video))[0]
        take = f"{stem} track"
        saved = _keep_track_files(data, stem)

        if self.rate_change:
            frame_rate.set_scene_fps(scene, self.rate_change)
        report = keyframes.write_take(rig, channels, frame_start=frame_start, take_name=take,
                                      mode=opts.get("mode", "NEW"))
        if identity.size:
            pose_mod.apply_identity(rig, identity)
        cam = camera_match.match_camera(scene, rig, camera, saved["clip_file"] or self.video,
                                        show_background=opts.get("show_background", True), frame_start=frame_start)
        warnings = list(data.get("warnings", [])) + ([self.rate_note] if self.rate_note else [])
        if opts.get("set_frame_range", True):
            note = keyframes.set_scene_range(scene, frame_start, last)
            if note:
                warnings.append(note)
        strip = None
        if data.get("audio_file") and opts.get("add_sound", True):
            strip = add_sound_strip(scene, self.video, frame_start)  # the video itself: it outlives the cache
        rig["cadence"]["last_track"] = {"video": self.video, **saved, "camera": camera, "frame_start": frame_start,
                                        "identity": identity.tolist(), "take": take,
                                        "frame_rate": self.rate_note or "the video's and the scene's rates match",
                                        "score_fused": list((data.get("report") or {}).get("score_fused", [])),
                                        "lip_contact_frames": int((data.get("report") or {}).get(
                                            "lip_contact_frames", 0))}
        record_embedding(rig, self.params)
        report.update(frames=(frame_start, last), take=take, camera=cam.name, sound=strip.name if strip else "",
                      frames_without_face=list(data.get("frames_without_face", [])),
                      warnings=warnings)
        return report


def _keep_track_files(data: dict, stem: str) -> dict:
    """Copy the tracked take (and its audio) out of the worker's job folder, which is cleaned up later."""
    from .prefs import cache_dir

    folder = os.path.join(cache_dir(), "tracks", f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(folder, exist_ok=True)
    out = {"channels_file": os.path.join(folder, "tracked.npz"), "audio_file": "", "clip_file": "",
           "blendshapes_file": ""}
    try:
        shutil.copyfile(data["channels_file"], out["channels_file"])
        if data.get("audio_file") and os.path.isfile(data["audio_file"]):
            out["audio_file"] = os.path.join(folder, "audio" + os.path.splitext(data["audio_file"])[1])
            shutil.copyfile(data["audio_file"], out["audio_file"])
        if data.get("clip_file") and os.path.isfile(data["clip_file"]):  # the video at the scene's rate
            out["clip_file"] = os.path.join(folder, "clip.mp4")
            shutil.copyfile(data["clip_file"], out["clip_file"])
        if data.get("blendshapes_file") and os.path.isfile(data["blendshapes_file"]):  # (T, 52) MediaPipe's scores
            out["blendshapes_file"] = os.path.join(folder, "blendshapes.npy")
            shutil.copyfile(data["blendshapes_file"], out["blendshapes_file"])
    except OSError as exc:
        raise TrackVideoError(f"Cannot keep the tracked take in Cadence's cache ({folder}): {exc}") from exc
    return out


class CADENCE_OT_track_video(ModalJobOperator, bpy.types.Operator):
    """Track a video of a person: fit the head's identity, key the tracked motion, match the camera"""

    bl_idname = "cadence.track_video"
    bl_label = "Track Video"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(name="Video", subtype="FILE_PATH", description="Video of the person's face")
    filter_glob: bpy.props.StringProperty(default="*" + ";*".join(VIDEO_EXTENSIONS.split(";")), options={"HIDDEN"})
    frame_start: bpy.props.IntProperty(name="Start Frame", default=1)
    mode: bpy.props.EnumProperty(
        name="Take", items=[("NEW", "New Take", "Keep earlier takes on NLA tracks"),
                            ("REPLACE", "Replace", "Replace Cadence keys in the frames written")],
        default="NEW",
    )
    show_background: bpy.props.BoolProperty(name="Video Behind Camera", default=True,
                                            description="Show the video as the tracked camera's background")
    add_sound: bpy.props.BoolProperty(name="Add Sound Strip", default=True)
    set_frame_range: bpy.props.BoolProperty(name="Set Frame Range", default=True)
    max_frames: bpy.props.IntProperty(name="Max Frames", default=0, min=0, description="0: the whole video")
    lens_mm: bpy.props.FloatProperty(
        name="Lens (mm)", default=0.0, min=0.0, soft_max=300.0,
        description="The video camera's focal length when known (35 mm equivalent, e.g. 26 for a phone's main "
                    "camera): head rotations are more accurate with it. 0: estimate it from the video")

    @classmethod
    def poll(cls, context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    errors = (TrackVideoError, camera_match.CameraMatchError)
    verb = "Tracking"

    def make_job(self, context) -> WorkerJob:
        return TrackJob(context, self.filepath, {
            "frame_start": self.frame_start, "mode": self.mode, "show_background": self.show_background,
            "add_sound": self.add_sound, "set_frame_range": self.set_frame_range, "max_frames": self.max_frames,
            "lens_mm": self.lens_mm,
        })

    def done_message(self, report: dict) -> str:
        missing = len(report.get("frames_without_face", []))
        extra = f"; {missing} frames without a face were interpolated" if missing else ""
        return f"Tracked take frames {report['frames'][0]}–{report['frames'][1]}{extra}"


classes = (CADENCE_OT_track_video,)
