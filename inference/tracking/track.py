"""Track a video of a person onto a head: landmarks per frame (MediaPipe), then a batched fit (inference.tracking.fit).

``track_video`` returns Channels at the requested fps (head_rotation, head_translation, jaw, expression,
eyes when the irises are fitted), the fitted identity, the camera (the track contract's: fixed in the
model's space at ``position``, looking -Z), the extracted audio and a report (timings, warnings,
frames without a face).
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..heads.head_model import HeadModel
from ..protocol import Channels
from . import landmarker_model, lip_contact, pose_calibration, score_fusion
from . import video as vid
from .face_landmarks import BLENDSHAPE_NAMES, N_LANDMARKS, LandmarkTracker
from .fit import FitError, FitOptions, fit_landmarks, steady_depth

DETECT_WORKERS = 2  # landmark detectors in threads: 2 cores -> ~2x the frames per second of one
DEPTH_SIGMA_S = 0.10  # the head's distance from the camera is low-passed over this (fit.steady_depth)
SENSOR_WIDTH_MM = 36.0  # Blender's default camera sensor (horizontal fit), as operators/tracking/camera_match.py uses


class TrackError(ValueError):
    """Tracking cannot proceed (bad video, no face anywhere, a head without a landmark embedding)."""


class TrackCancelled(Exception):
    """``cancelled()`` returned True."""


@dataclass
class TrackResult:
    channels: Channels
    identity: np.ndarray  # (S,) fitted shape coefficients
    camera: dict  # {"focal_px", "width", "height", "position"}
    audio_file: str | None
    n_frames: int
    frames_without_face: list[int]
    warnings: list[str]
    video_fps: float
    landmarks: np.ndarray  # (T, 478, 3) pixels of the original video, NaN where no face
    report: dict = field(default_factory=dict)
    blendshapes: np.ndarray | None = None  # (T, 52) MediaPipe's scores (face_landmarks.BLENDSHAPE_NAMES), NaN: none


def fits_eyes(head: HeadModel) -> bool:
    """Whether the fit can solve this head's gaze: eye joints and both iris centres embedded."""
    return all(n in head.joint_names for n in ("eye_L", "eye_R")) and bool(np.isin([468, 473], head.lmk_ids).all())


def detect_video_landmarks(info: vid.VideoInfo, fps: float, max_frames: int | None = None,
                           task_model: str | None = None, progress: Callable | None = None,
                           cancelled: Callable | None = None, workers: int = DETECT_WORKERS,
                           scores_model: str | None = None) -> tuple[np.ndarray, int, np.ndarray | None]:
    """(T, 478, 3) landmarks in ORIGINAL video pixels (NaN where no face), the number of frames with several
    faces, and with ``scores_model`` the (T, 52) blendshape scores (``BLENDSHAPE_NAMES``; NaN where none).

    Each frame is detected on its own (MediaPipe's static mode), as the head's calibration renders are: its
    tracking mode crops from the previous frame's mesh and sits ~3 mm (mean) off the static detections on
    the same frames, a bias the calibration would not know. The fit's temporal smoothing handles the jitter.
    ``workers`` detectors run in threads (one MediaPipe graph keeps about one core busy): decoded frames go
    to whichever is free, each follows its own previous face.
    """
    n = info.n_output_frames(fps) if max_frames is None else min(info.n_output_frames(fps), int(max_frames))
    out = np.full((n, N_LANDMARKS, 3), np.nan)
    faces = np.zeros(n, dtype=np.int64)
    scores = np.full((n, len(BLENDSHAPE_NAMES)), np.nan, dtype=np.float32) if scores_model else None
    jobs: queue.Queue = queue.Queue(maxsize=4 * max(1, workers))
    errors: list[BaseException] = []

    def work(tracker: LandmarkTracker) -> None:
        try:
            while (item := jobs.get()) is not None:
                if errors:
                    continue  # drain: the feeder stops soon
                k, frame = item
                pts = tracker.process(frame)
                faces[k] = tracker.last_n_faces
                if pts is not None:
                    out[k] = pts / info.scale  # back to the original video's pixels
                if scores is not None and tracker.last_scores is not None:
                    scores[k] = tracker.last_scores
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            while jobs.get() is not None:  # keep the feeder from blocking on a full queue
                pass
        finally:
            tracker.close()

    def make() -> LandmarkTracker:
        return LandmarkTracker(static=True, task_model=task_model, follow=True, scores_model=scores_model)

    trackers = [make()]
    threads: list[threading.Thread] = []
    count = 0
    try:
        trackers += [make() for _ in range(max(1, workers) - 1)]
        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in trackers]
        for t in threads:
            t.start()
        for k, _t, frame in vid.iter_frames(info, fps, max_frames):
            if errors:
                break
            if cancelled is not None and cancelled():
                raise TrackCancelled()
            jobs.put((k, frame))
            count = k + 1
            if progress is not None and k % 10 == 0:
                progress(k / max(n, 1))
    finally:
        for _ in threads:
            jobs.put(None)
        for t in threads:
            t.join()
        for tr in trackers[len(threads):]:  # created but never started
            tr.close()
    if errors:
        raise errors[0]
    return out[:count], int((faces[:count] > 1).sum()), None if scores is None else scores[:count]


NO_FACE_HINT = "the face must be visible, frontal-ish and reasonably lit"


def check_video(video_path: str | os.PathLike, samples: int = 8, task_model: str | None = None) -> dict:
    """A quick look before anything slow (a head's calibration, the full track): the video decodes, is long
    enough, and shows a face in at least one of ``samples`` frames spread over it. Raises vid.VideoError /
    TrackError with user-facing text; returns {"frames", "fps", "width", "height", "faces": frames with one}."""
    info = vid.probe(video_path)
    faces = 0
    with LandmarkTracker(static=True, task_model=task_model) as tracker:
        for _k, _t, rgb in vid.iter_frames(info, samples / info.duration, max_frames=samples):
            faces += tracker.process(rgb) is not None
    if not faces:
        raise TrackError(f"no face was found in {os.path.basename(info.path)} ({samples} frames spread over it "
                         f"were examined): {NO_FACE_HINT}")
    return {"frames": info.n_frames, "fps": info.fps, "width": info.width, "height": info.height, "faces": faces}


def track_video(video_path: str | os.PathLike, head: HeadModel, fps: float, max_frames: int | None = None,
                progress: Callable[[float, str], None] | None = None, cancelled: Callable[[], bool] | None = None,
                task_model: str | None = None, audio_dir: str | os.PathLike | None = None,
                fit_eyes: bool = True, options: FitOptions | None = None,
                focal_px: float | None = None, lens_mm: float | None = None, blendshapes: bool = True,
                scores_model: str | None = None) -> TrackResult:
    """Track ``video_path`` at ``fps`` onto ``head``. Raises vid.VideoError / TrackError with user-facing text.

    The camera's focal length, when known (otherwise it is estimated from the video): ``focal_px`` in pixels
    of the video, or ``lens_mm`` in millimetres for a 36 mm wide sensor (Blender's camera convention; a phone's
    "26 mm" is its 35 mm-equivalent focal length).
    ``blendshapes``: also score each frame with MediaPipe's blendshape model (``scores_model``, else the one
    set-up installed: landmarker_model.find_model);
    without the model the track says so in its warnings and has no scores.
    """
    def say(frac: float, msg: str) -> None:
        if progress is not None:
            progress(float(min(max(frac, 0.0), 1.0)), msg)

    if not (np.isfinite(fps) and fps > 0):
        raise TrackError(f"fps must be a positive number, got {fps!r}")
    if head.lmk_faces is None or head.lmk_scheme != "mediapipe478":
        raise TrackError(
            "this head has no landmark embedding: build one (Cadence > Build Landmarks) or load an embedding file"
        )
    if max_frames is not None and int(max_frames) < 1:
        raise TrackError(f"max_frames must be at least 1, got {max_frames!r}")
    warnings: list[str] = []
    info = vid.probe(video_path)
    if lens_mm and focal_px is None:
        if not (np.isfinite(lens_mm) and lens_mm > 0):
            raise TrackError(f"the lens must be a positive number of millimetres, got {lens_mm!r}")
        focal_px = float(lens_mm) * info.width / SENSOR_WIDTH_MM
    if info.scale < 1.0:
        warnings.append(f"the video is {info.width}x{info.height}: frames were downscaled to "
                        f"{round(info.width * info.scale)}x{round(info.height * info.scale)} for landmark detection")
    say(0.0, "reading the audio track")
    audio_dir = os.fspath(audio_dir) if audio_dir else tempfile.mkdtemp(prefix="cadence_track_")
    stem = os.path.splitext(os.path.basename(info.path))[0] or "video"
    audio_file, warn = vid.extract_audio(info.path, os.path.join(audio_dir, f"{stem}_audio16k.wav"))
    if warn:
        warnings.append(warn)

    scores_model = landmarker_model.find_model(scores_model) if blendshapes else None
    if blendshapes and scores_model is None:
        warnings.append(landmarker_model.MISSING_HINT)
    t0 = time.perf_counter()
    lmk, many, scores = detect_video_landmarks(
        info, fps, max_frames, task_model, lambda f: say(0.05 + 0.6 * f, "finding the face in each frame"), cancelled,
        scores_model=scores_model)
    t_lmk = time.perf_counter() - t0
    T = len(lmk)
    if T < 2:
        raise TrackError(f"{os.path.basename(info.path)} yielded {T} frame(s) at {fps:g} fps; nothing to track")
    valid = np.isfinite(lmk[:, 0, 0])
    missing = [int(i) for i in np.flatnonzero(~valid)]
    if not valid.any():
        raise TrackError(f"no face was found in {os.path.basename(info.path)} ({T} frames examined): {NO_FACE_HINT}")
    if valid.sum() < max(3, 0.2 * T):
        raise TrackError(f"a face was found in only {int(valid.sum())} of {T} frames: too few to track")
    if missing:
        warnings.append(f"no face in {len(missing)} of {T} frames; those frames were interpolated")
    if many:
        warnings.append(f"several faces were visible in {many} frames; the largest, most central one was tracked")

    if cancelled is not None and cancelled():
        raise TrackCancelled()
    t1 = time.perf_counter()
    use_eyes = fit_eyes and fits_eyes(head)
    try:
        fit = fit_landmarks(head, lmk, valid, info.width, info.height, options, fit_eyes=use_eyes,
                            progress=lambda f: say(0.65 + 0.35 * f, "fitting the head to the landmarks"),
                            focal_px=focal_px)
    except FitError as exc:
        raise TrackError(str(exc)) from exc
    steady_depth(head, fit, DEPTH_SIGMA_S * fps)
    t_fit = time.perf_counter() - t1
    expression, fused = fit.expression, []
    if scores is not None:  # the blendshape scores where this head's calibration found they add to the fit
        calib = head.meta.get(pose_calibration.CORRECTION_KEY)
        lips = np.abs(lip_contact.opening_per_unit(head)) > lip_contact.OWNS_OPENING_MM  # the fit owns these
        got = score_fusion.fuse(calib.get("score_fusion") if isinstance(calib, dict) else None, fit.expression,
                                scores, fit.report.get("bounded_expression", False), keep=lips)
        if got is None:
            warnings.append("this head's calibration has no blendshape-score fusion (built without the blendshape "
                            "model, or by an older Cadence): expressions come from the landmarks alone")
        else:
            expression, fused = got
    fit.report["score_fused"] = [head.expr_names[k] for k in fused]

    ch = Channels(fps=fps, n_frames=T, expr_names=head.expr_names,
                  meta={"source": "track", "video": info.path, "rms_px": fit.rms_px})
    ch.set("head_rotation", fit.head_rotation)
    ch.set("head_translation", fit.head_translation)
    ch.set("jaw", fit.jaw)
    ch.set("expression", expression)
    if "eyes" in fit.report:
        ch.set("eyes", fit.report.pop("eyes"))
    say(1.0, "tracking done")
    camera = {"focal_px": fit.focal_px, "width": info.width, "height": info.height,
              "position": [float(x) for x in fit.position]}
    report = dict(fit.report, landmark_seconds=t_lmk, fit_seconds=t_fit, rms_px=fit.rms_px,
                  landmark_fps=T / max(t_lmk, 1e-9), fit_fps=T / max(t_fit, 1e-9))
    return TrackResult(ch, fit.shape, camera, audio_file, T, missing, warnings, info.fps, lmk, report, scores)
