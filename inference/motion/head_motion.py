"""Procedural, audio-driven head motion, blinks and gaze (the generic style personalization replaces).

Motion is generated on the 100 Hz grid of the audio's prosody (``audio.prosody``) — band-limited noise from the seed plus prosody-coupled terms — and then sampled at
the frame times, so the same seed gives the same motion at any fps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio.prosody import FEAT_RATE, Prosody, lowpass, of_audio, voice_curves

# Calibrated on real talkers (the three fixture clips, tracked, jitter smoothed at 30 ms): per-axis
# rotation std pitch / yaw / roll 3.4-4.3 / 1.2-4.4 / 1.7-2.9 degrees, velocity std 14-19 / 8-14 /
# 6-10 degrees/s (a real 24 s phone clip: 5.9 / 3.7 / 1.0 and 19 / 21 / 7.7). With these gains the
# generic motion on the fixtures' audio measures 3.4-4.6 / 2.2-2.6 / 1.9-2.5 degrees and 12-19 / 6-12 /
# 5-9 degrees/s (seeds 0, 1; before: 0.6-0.9 / 2.0-2.4 / 0.5-0.7 and 2.6-2.9 / 2.8-3.2 / 1.0-1.3).
ROTATION_GAIN = (3.0, 0.9, 2.4)
TRANSLATION_GAIN = (2.0, 2.5, 1.5)  # tracked x / y sway 5-11 mm (depth is the tracker's least sure axis)


def _noise(rng: np.random.Generator, n: int, cutoff: float) -> np.ndarray:
    # Drawn longer and cropped: a zero-phase filter's ends ring (measured: 6.6 sigma at the first frame).
    m = int(2.0 * FEAT_RATE / max(cutoff, 0.05))
    y = lowpass(rng.standard_normal(n + 2 * m), cutoff)[m:m + n]
    s = float(np.std(y))
    return y / s if s > 1e-12 else y


@dataclass
class MotionParams:
    amplitude: float = 1.0
    speed: float = 1.0
    seed: int = 0
    blink_rate: float = 17.0  # per minute
    blink_pause_bias: float = 4.0  # hazard ratio, pause vs speech


def head_motion(p: Prosody, times: np.ndarray, params: MotionParams) -> dict[str, np.ndarray]:
    """head_rotation (N,3), head_translation (N,3), eyes (N,2,3), eyelids (N,2) at ``times`` (s)."""
    n = max(p.n, 2)
    rng = np.random.default_rng([int(params.seed) & 0xFFFFFFFF, 0xCADE])
    amp, spd = float(params.amplitude), max(float(params.speed), 0.05)
    grid = np.arange(n) / FEAT_RATE
    v = voice_curves(p, n, spd)
    e, st, accent = v["loudness"], v["pitch"], v["accent"]
    sp = v["speech"]
    talk = 0.35 + 0.65 * lowpass(sp, 0.5 * spd)  # people move more while talking
    nz = [_noise(rng, n, c * spd) for c in (0.8, 1.0, 0.8, 0.3, 0.2, 0.3)]
    g = ROTATION_GAIN
    rot = np.stack([
        g[0] * (0.045 * lowpass(accent, 1.6 * spd) + 0.025 * lowpass(st, 1.0 * spd) + 0.022 * nz[0] * talk),
        g[1] * (0.05 * nz[1] * (0.5 + 0.5 * talk) + 0.01 * lowpass(e, 1.0 * spd)),
        g[2] * (0.018 * nz[2] * talk + 0.008 * lowpass(st, 1.0 * spd)),
    ], axis=1) * amp
    g = TRANSLATION_GAIN
    trans = np.stack([g[0] * 0.0015 * nz[3], g[1] * (0.001 * nz[4] + 0.002 * lowpass(accent, 1.0 * spd)),
                      g[2] * (0.002 * nz[5] + 0.0015 * lowpass(e, 0.4 * spd))], axis=1) * amp
    rot -= rot.mean(axis=0)  # centred on the rest pose
    trans -= trans.mean(axis=0)
    out = {
        "head_rotation": np.stack([np.interp(times, grid, rot[:, k]) for k in range(3)], axis=1),
        "head_translation": np.stack([np.interp(times, grid, trans[:, k]) for k in range(3)], axis=1),
    }
    blinks = blink_events(sp > 0.5, params, rng)
    out["eyelids"] = blink_curve(blinks, times)
    out["eyes"] = gaze(n / FEAT_RATE, sp > 0.5, times, params, rng)
    return out


def head_pose_for_audio(audio_16k: np.ndarray, fps: float, n_frames: int, seed: int = 0) -> np.ndarray:
    """(n_frames, 6) generic head rotation + translation for a whole take (analysis: the persona evaluation)."""
    m = head_motion(of_audio(audio_16k), np.arange(int(n_frames)) / float(fps), MotionParams(seed=seed))
    return np.concatenate([m["head_rotation"], m["head_translation"]], axis=1)


def blink_events(speech: np.ndarray, params: MotionParams, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(start, duration) of each blink: a hazard process biased towards pauses, with a refractory time."""
    n = speech.size
    pause = ~speech
    # a pause's first 400 ms are the likeliest moment (people blink at phrase boundaries)
    onset = np.zeros(n)
    starts = np.flatnonzero(np.diff(np.r_[0, pause.astype(np.int8)]) == 1)
    for s in starts:
        onset[s : s + 40] = 1.0
    bias = np.where(pause, params.blink_pause_bias, 1.0) * (1.0 + onset)
    refractory = 1.0
    target = params.blink_rate / 60.0
    raw = target / max(1e-3, 1.0 - target * refractory)  # compensate for time lost to refractoriness
    hazard = raw * bias / max(float(bias.mean()), 1e-6) / FEAT_RATE
    u = rng.random(n)
    events, next_ok = [], 0.0
    for k in np.flatnonzero(u < hazard):
        t = k / FEAT_RATE
        if t >= next_ok:
            dur = float(rng.uniform(0.10, 0.15))
            events.append((t, dur))
            next_ok = t + dur + refractory
    return events


def blink_curve(events: list[tuple[float, float]], times: np.ndarray) -> np.ndarray:
    """Eyelid closure (N, 2): fast close (35 % of the blink), slower reopening; the peak frame closes fully."""
    lid = np.zeros(times.size)
    if times.size == 0:
        return np.zeros((0, 2))
    dt = times[1] - times[0] if times.size > 1 else 1.0
    for start, dur in events:
        peak = start + 0.35 * dur
        lo, hi = np.searchsorted(times, start), np.searchsorted(times, start + dur)
        t = times[lo:hi]
        v = np.where(t < peak, (t - start) / (peak - start), 1.0 - (t - peak) / (start + dur - peak))
        lid[lo:hi] = np.maximum(lid[lo:hi], np.clip(v, 0, 1) ** 0.7)
        k = int(round((peak - times[0]) / dt))
        if 0 <= k < times.size:
            lid[k] = 1.0
    return np.stack([lid, lid], axis=1)


def gaze(duration: float, speech: np.ndarray, times: np.ndarray, params: MotionParams,
         rng: np.random.Generator) -> np.ndarray:
    """Small saccades (N, 2, 3): fixations of 0.4-3 s, both eyes together, 40 ms transitions."""
    spd = max(float(params.speed), 0.05)
    fix_t, fix = [0.0], [np.zeros(2)]
    t = 0.0
    while t < duration:
        t += float(rng.gamma(3.0, 0.45)) / spd + 0.2
        k = min(int(t * FEAT_RATE), speech.size - 1)
        spread = 0.6 if (speech.size and speech[max(k, 0)]) else 1.0  # talkers look at their listener more
        target = np.clip(rng.normal(0.0, [0.035 * spread, 0.05 * spread]), [-0.07, -0.1], [0.07, 0.1])
        fix_t.append(t)
        fix.append(target * min(float(params.amplitude), 2.0))
    fix_t = np.asarray(fix_t)
    fix = np.asarray(fix)
    k = np.clip(np.searchsorted(fix_t, times, side="right") - 1, 0, len(fix) - 1)
    prev = fix[np.maximum(k - 1, 0)]
    s = np.clip((times - fix_t[k]) / 0.04, 0.0, 1.0)
    s = s * s * (3 - 2 * s)
    ang = prev + s[:, None] * (fix[k] - prev)
    eyes = np.zeros((times.size, 2, 3))
    eyes[:, :, 0] = ang[:, None, 0]  # pitch (about x)
    eyes[:, :, 1] = ang[:, None, 1]  # yaw (about y)
    return eyes
