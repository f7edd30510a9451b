"""Audio -> a Channels take: lips (phones or energy), head motion, blinks and gaze. Worker side only.

The audio is streamed in chunks: per chunk, phones are recognised (cut at pauses) and 10 ms prosody
features are computed, so only small per-frame arrays outlive a chunk and an hour of audio fits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from ..audio import decode as audio_mod
from ..audio.prosody import chunk_features, summarize
from ..heads.head_model import HeadModel
from ..lips import lipsync, phone_stream, visemes
from ..lips.coarticulation import frame_times
from ..protocol import Channels
from . import head_motion

MAX_FPS = 1000.0


class Cancelled(Exception):
    """The caller's ``cancelled()`` returned True."""


def _check(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v <= lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {value!r}")
    return v


def n_frames_for(duration: float, fps: float) -> int:
    """Frames f = 0.. with f / fps inside the audio (at least one)."""
    return max(1, int(math.floor(duration * fps - 1e-9)) + 1)


def animate_audio(
    audio_path: str,
    head: HeadModel,
    fps: float,
    transcript: str | None = None,
    seed: int = 0,
    lip_strength: float = 1.0,
    motion_amplitude: float = 1.0,
    motion_speed: float = 1.0,
    progress: Callable[[float, str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Channels:
    """Animate ``head`` to the speech in ``audio_path`` at ``fps``; raises AudioError for unusable audio."""
    fps = _check("fps", fps, 0.0, MAX_FPS, lo_open=True)
    lip_strength = _check("lip strength", lip_strength, 0.0, 3.0)
    motion_amplitude = _check("motion amplitude", motion_amplitude, 0.0, 5.0)
    motion_speed = _check("motion speed", motion_speed, 0.0, 5.0, lo_open=True)
    timings: dict[str, float] = {"decode": 0.0, "recognition": 0.0, "features": 0.0}

    def report(fraction: float, message: str) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("animation was cancelled")
        if progress is not None:
            progress(min(max(fraction, 0.0), 1.0), message)

    report(0.0, "reading audio")
    info = audio_mod.probe(audio_path)
    t0 = time.perf_counter()
    vis = visemes.solve_visemes(head)
    timings["visemes"] = time.perf_counter() - t0

    stream = phone_stream.PhoneStream(transcript, expected_duration=info.duration, cancelled=cancelled)
    dbs, f0s = [], []
    n_samples, peak = 0, 0.0
    chunks = audio_mod.iter_chunks(info.path)
    highpass = audio_mod.HighPass()
    while True:
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        timings["decode"] += time.perf_counter() - t0
        if chunk is None:
            break
        if not np.all(np.isfinite(chunk)):
            raise audio_mod.AudioError(f"{info.path} contains invalid (NaN or infinite) samples")
        chunk = highpass(chunk)
        n_samples += chunk.size
        peak = max(peak, float(np.max(np.abs(chunk))) if chunk.size else 0.0)
        if cancelled is not None and cancelled():
            raise Cancelled("animation was cancelled")
        t0 = time.perf_counter()
        stream.feed(chunk)
        timings["recognition"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        db, f0 = chunk_features(chunk)
        dbs.append(db)
        f0s.append(f0)
        timings["features"] += time.perf_counter() - t0
        done = n_samples / audio_mod.TARGET_SR
        report(0.85 * done / max(info.duration, done, 1e-6), f"listening ({done:.0f} s)")
    if n_samples == 0:
        raise audio_mod.AudioError(f"{info.path} contains no audio samples (0 length)")
    if peak < audio_mod.SILENCE_PEAK:
        raise audio_mod.AudioError(f"{info.path} is silent: there is no sound to animate")

    report(0.86, "finding phones")
    t0 = time.perf_counter()
    phones = stream.finish() if not _silent_only(dbs) else []
    timings["recognition"] += time.perf_counter() - t0
    prosody = summarize(np.concatenate(dbs), np.concatenate(f0s))
    if not prosody.speech.any():
        stream.notes.append("no speech was found (the sound is steady, like room tone or hum): the mouth stays closed")
        phones = []
    duration = n_samples / audio_mod.TARGET_SR
    n_frames = n_frames_for(duration, fps)
    times = frame_times(n_frames, fps)

    report(0.9, "shaping the mouth")
    t0 = time.perf_counter()
    if lipsync.recognition_usable(phones, prosody):
        engine = "pocketsphinx"
        expr, jaw = lipsync.phone_lips(phones, prosody, vis, times, fps, lip_strength)
    else:
        engine = "energy-fallback"
        expr, jaw = lipsync.energy_lips(prosody, vis, times, lip_strength)
    timings["curves"] = time.perf_counter() - t0

    report(0.95, "moving the head")
    t0 = time.perf_counter()
    params = head_motion.MotionParams(amplitude=motion_amplitude, speed=motion_speed, seed=int(seed))
    motion = head_motion.head_motion(prosody, times, params)
    timings["head_motion"] = time.perf_counter() - t0

    ch = Channels(fps=fps, n_frames=n_frames, expr_names=head.expr_names, meta={
        "producer": "cadence-lip-engine", "engine": engine, "audio": info.path, "duration": duration,
        "phones": sum(1 for p in phones if p.phone != "SIL"), "transcript": bool(stream.transcript),
        "aligned": bool(stream.align), "notes": stream.notes, "seed": int(seed), "head": head.content_hash(),
        "lip_strength": lip_strength, "motion_amplitude": motion_amplitude, "motion_speed": motion_speed,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    })
    ch.set("expression", expr)
    ch.set("jaw", jaw)
    for name in ("head_rotation", "head_translation", "eyes", "eyelids"):
        ch.set(name, motion[name])
    ch.meta["phone_segments"] = len(phones)
    report(1.0, "done")
    return ch


def _silent_only(dbs: list[np.ndarray]) -> bool:
    return all(d.size == 0 or float(d.max()) < -80.0 for d in dbs)
