"""Worker job "track": a video + head file -> tracked Channels (.npz), identity, camera, extracted audio."""

from __future__ import annotations

import os

import numpy as np

from ..heads.head_model import HeadModel, HeadModelError
from ..tracking.face_landmarks import LandmarkError
from ..tracking.track import TrackCancelled, TrackError, check_video, track_video
from ..tracking.video import VideoError, retime
from .jobs import JobCancelled, JobContext, JobError, register_job


@register_job("check_video")
def check_video_job(params: dict, ctx: JobContext) -> dict:
    """A quick check of a video before a slow track: it decodes, is long enough and shows a face."""
    if not params.get("video"):
        raise JobError("check_video needs 'video'")
    try:
        return check_video(params["video"], task_model=params.get("task_model") or None)
    except (VideoError, TrackError, LandmarkError) as exc:
        raise JobError(str(exc)) from exc


@register_job("track")
def track(params: dict, ctx: JobContext) -> dict:
    for key in ("video", "head_file"):
        if not params.get(key):
            raise JobError(f"track needs {key!r}")
    try:
        fps = float(params.get("fps", 25.0))
        max_frames = params.get("max_frames")
        max_frames = None if max_frames in (None, 0, "") else int(max_frames)
    except (TypeError, ValueError) as exc:
        raise JobError(f"track: bad fps or max_frames ({exc})") from exc
    try:
        head = HeadModel.load(params["head_file"])
    except HeadModelError as exc:
        raise JobError(str(exc)) from exc
    try:
        res = track_video(params["video"], head, fps, max_frames=max_frames, progress=ctx.progress,
                          cancelled=lambda: ctx.cancelled, task_model=params.get("task_model") or None,
                          scores_model=params.get("scores_model") or None,
                          audio_dir=ctx.out_dir, focal_px=float(params["focal_px"]) if params.get("focal_px") else None,
                          lens_mm=float(params["lens_mm"]) if params.get("lens_mm") else None)
    except TrackCancelled as exc:
        raise JobCancelled("track was cancelled") from exc
    except (VideoError, TrackError, LandmarkError) as exc:
        raise JobError(str(exc)) from exc
    path = os.path.join(ctx.out_dir, "channels.npz")
    res.channels.save(path)
    clip_file = None
    if params.get("clip_fps"):  # the scene keeps its rate: the camera background needs the video at that rate
        ctx.progress(0.99, "copying the video at the scene's frame rate")
        clip_file, warn = retime(params["video"], float(params["clip_fps"]), os.path.join(ctx.out_dir, "clip.mp4"))
        if warn:
            res.warnings.append(warn)
    np.save(os.path.join(ctx.out_dir, "landmarks.npy"), res.landmarks.astype(np.float32))
    scores_file = None
    if res.blendshapes is not None:  # (T, 52) in face_landmarks.BLENDSHAPE_NAMES order, NaN where none
        scores_file = os.path.join(ctx.out_dir, "blendshapes.npy")
        np.save(scores_file, res.blendshapes.astype(np.float32))
    report = {k: v for k, v in res.report.items() if isinstance(v, (int, float, str, bool))}
    report["score_fused"] = [str(n) for n in res.report.get("score_fused", [])]
    return {"blendshapes_file": scores_file,
        "channels_file": path, "identity": [float(x) for x in res.identity], "camera": res.camera,
        "audio_file": res.audio_file, "n_frames": res.n_frames, "frames_without_face": res.frames_without_face,
        "warnings": res.warnings, "video_fps": res.video_fps, "report": report, "clip_file": clip_file,
    }
