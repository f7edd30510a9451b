"""Worker job "personalize": tracked takes (or videos, tracked here first) + their audio -> a persona file.

Params: ``channels_file`` (a Channels .npz from the track job) with ``audio_file`` (its audio), OR
``video`` (tracked inside the job, its audio extracted), OR ``clips``: a list of either (several
clips of the same person; the persona learns from them all); ``head_file`` (HeadModel .npz; the persona is
bound to its content hash); ``persona_out`` (where to write the persona); optional ``epochs`` (100),
``general`` (a general model to fine-tune), ``n_frames`` (300: the paper's 12 s at 25 fps; 0 = all),
``fps`` (tracking rate when tracking here, default 25), ``seed``, ``net_overrides`` (smaller networks
for tests), ``device``.
Result: {"persona_file", "history" (summary), "held_out_loss", "n_frames", "timings", "tracked"}.
"""

from __future__ import annotations

import os
import time

from .jobs import JobCancelled, JobContext, JobError, register_job

# Fractions of the progress bar: tracking (when the job tracks), then training.
TRACK_SHARE = 0.35


def _int_param(params: dict, key: str, default: int, lo: int) -> int:
    value = params.get(key, default)
    try:
        v = int(default if value is None else value)
    except (TypeError, ValueError):
        raise JobError(f"personalize: {key} must be a whole number, got {value!r}") from None
    if v < lo:
        raise JobError(f"personalize: {key} must be >= {lo}, got {v}")
    return v


def _track_here(params: dict, head, ctx: JobContext, share: tuple[float, float] = (0.0, TRACK_SHARE),
                name: str = "tracked.npz") -> tuple:
    """Track ``params['video']`` at the requested fps; returns (channels, audio_file, identity)."""
    from ..tracking.face_landmarks import LandmarkError
    from ..tracking.track import TrackCancelled, TrackError, track_video
    from ..tracking.video import VideoError

    try:
        fps = float(params.get("fps") or 25.0)
    except (TypeError, ValueError):
        raise JobError(f"personalize: fps must be a number, got {params.get('fps')!r}") from None
    n = params.get("n_frames", 300)
    # Only the frames the persona learns from (plus its held-out tail) need tracking.
    max_frames = None if not n else int(n)
    try:
        res = track_video(params["video"], head, fps, max_frames=max_frames,
                          progress=lambda f, m: ctx.progress(share[0] + (share[1] - share[0]) * f, f"tracking: {m}"),
                          cancelled=lambda: ctx.cancelled, task_model=params.get("task_model") or None,
                          scores_model=params.get("scores_model") or None,
                          audio_dir=ctx.out_dir, lens_mm=float(params["lens_mm"]) if params.get("lens_mm") else None)
    except TrackCancelled as exc:
        raise JobCancelled("personalize was cancelled") from exc
    except (VideoError, TrackError, LandmarkError) as exc:
        raise JobError(str(exc)) from exc
    if not res.audio_file:
        raise JobError(f"{os.path.basename(params['video'])} has no audio track: a persona learns how the head "
                       "moves with the voice, so the video needs its sound")
    res.channels.save(ctx.out_path(name))
    return res.channels, res.audio_file, res.identity


@register_job("personalize")
def personalize_job(params: dict, ctx: JobContext) -> dict:
    import numpy as np

    from ..audio.decode import AudioError, load_audio
    from ..heads.head_model import HeadModel, HeadModelError
    from ..persona import persona as ps
    from ..persona.train_pose import TrainingCancelled, TrainingError
    from ..protocol import ChannelError, Channels

    for key in ("head_file", "persona_out"):
        if not params.get(key):
            raise JobError(f"personalize needs {key!r}")
    if not params.get("channels_file") and not params.get("video") and not params.get("clips"):
        raise JobError("personalize needs a tracked take ('channels_file'), a 'video' to track, or 'clips'")
    epochs = _int_param(params, "epochs", 100, 1)
    n_frames = _int_param(params, "n_frames", 300, 0)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        head = HeadModel.load(params["head_file"])
    except HeadModelError as exc:
        raise JobError(str(exc)) from exc

    clips = params.get("clips") or [{k: params[k] for k in ("channels_file", "audio_file", "video") if params.get(k)}]
    if not isinstance(clips, list) or not all(isinstance(c, dict) for c in clips):
        raise JobError("personalize: 'clips' must be a list of {channels_file, audio_file} or {video}")
    to_track = sum(1 for c in clips if not c.get("channels_file"))
    identity = None
    channels_list, audio_files, tracked_files = [], [], []
    for i, clip in enumerate(clips):
        if clip.get("channels_file"):
            if not clip.get("audio_file"):
                raise JobError("personalize: the tracked take needs its audio ('audio_file'); "
                               "track a video with sound, or give the audio")
            try:
                channels = Channels.load(clip["channels_file"])
            except (ChannelError, OSError) as exc:
                raise JobError(f"the tracked take cannot be read: {exc}") from exc
            audio_file = clip["audio_file"]
            tracked_files.append(clip["channels_file"])
        elif clip.get("video"):
            k = sum(1 for c in clips[:i] if not c.get("channels_file"))  # videos tracked before this one
            share = (TRACK_SHARE * k / max(to_track, 1), TRACK_SHARE * (k + 1) / max(to_track, 1))
            ctx.progress(share[0], f"tracking {os.path.basename(str(clip['video']))}")
            t1 = time.perf_counter()
            name = "tracked.npz" if len(clips) == 1 else f"tracked_{i + 1}.npz"
            channels, audio_file, ident = _track_here({**params, **clip}, head, ctx, share, name)
            timings["track"] = round(timings.get("track", 0.0) + time.perf_counter() - t1, 3)
            identity = ident if identity is None else identity
            tracked_files.append(ctx.out_path(name))
        else:
            raise JobError(f"personalize: clip {i + 1} has neither a tracked take nor a video")
        if tuple(channels.expr_names) != tuple(head.expr_names):
            raise JobError("the tracked take was made with another head than this one; track the video again "
                           "with this head")
        if identity is None and channels.meta.get("identity") is not None:
            identity = np.asarray(channels.meta["identity"], dtype=np.float64)
        channels_list.append(channels)
        audio_files.append(audio_file)
    try:
        audios = [load_audio(a) for a in audio_files]
    except AudioError as exc:
        raise JobError(str(exc)) from exc
    tracked = to_track > 0

    base = TRACK_SHARE if tracked else 0.0
    ctx.progress(base, "learning the persona")
    t1 = time.perf_counter()
    try:
        persona = ps.personalize(
            channels_list, audios, head.content_hash(), identity_shape=identity, general=params.get("general") or None,
            n_frames=n_frames or None, epochs=epochs, seed=int(params.get("seed", 0) or 0),
            net_overrides=params.get("net_overrides") or None, device=params.get("device") or None,
            progress=lambda f, m: ctx.progress(base + (0.97 - base) * f, m),
            cancelled=lambda: ctx.cancelled,
            meta={"source": ", ".join(os.path.basename(str(c.get("video") or c.get("audio_file"))) for c in clips),
                  "head_name": head.name},
        )
    except TrainingCancelled as exc:
        raise JobCancelled("personalize was cancelled") from exc
    except (ps.PersonaError, TrainingError, ValueError) as exc:
        raise JobError(f"could not learn a persona: {exc}") from exc
    timings["train"] = round(time.perf_counter() - t1, 3)

    out = os.path.abspath(str(params["persona_out"]))
    try:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        ps.save_persona(persona, out)
    except OSError as exc:
        raise JobError(f"cannot write the persona to {out}: {exc}") from exc
    timings["total"] = round(time.perf_counter() - t0, 3)
    ctx.progress(1.0, "persona saved")
    h = persona.history
    summary = {k: h[k] for k in ("epochs_run", "best_epoch", "stopped_early", "lr", "device", "seconds",
                                 "n_train_windows", "n_val_windows") if k in h}
    summary["train_loss"] = [round(float(v), 6) for v in h.get("train_loss", [])]
    summary["val_loss"] = [round(float(v), 6) for v in h.get("val_loss", [])]
    held = float(h.get("best_val_loss", float("nan")))
    return {"persona_file": out, "history": summary, "held_out_loss": held if np.isfinite(held) else None,
            "n_frames": int(persona.meta.get("n_frames", 0)), "timings": timings, "tracked": tracked,
            "channels_file": tracked_files[0], "audio_file": audio_files[0],
            "channels_files": tracked_files, "audio_files": audio_files, "n_clips": len(clips)}
