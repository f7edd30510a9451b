"""Prosody at 100 Hz (10 ms hops) from 16 kHz audio, chunk by chunk: energy (dBFS), pitch (a
vectorised YIN in numpy: fast, no numba) and a speech/pause mask; the lip engine and head motion
both read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SR = 16_000
HOP = SR // 100
FEAT_RATE = 100.0
F0_MIN, F0_MAX = 60.0, 400.0
_WIN = 640  # 40 ms pitch window (covers two periods at 60 Hz... nearly; fine for prosody)


@dataclass
class Prosody:
    """100 Hz features of a whole take."""

    db: np.ndarray  # energy per 10 ms, dBFS
    f0: np.ndarray  # Hz, 0 where unvoiced
    speech: np.ndarray  # bool, speech (not pause)
    level: float  # typical speech level (dBFS)
    floor: float  # noise floor (dBFS)

    @property
    def n(self) -> int:
        return int(self.db.size)


def chunk_features(chunk: np.ndarray, pitch_step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(dB, f0) per 10 ms frame of a 16 kHz chunk (frame k = samples [k*160, (k+1)*160)); ``pitch_step``: see yin."""
    n = int(np.ceil(chunk.size / HOP))
    if n == 0:
        return np.zeros(0), np.zeros(0)
    x = np.zeros(n * HOP, dtype=np.float64)
    x[: chunk.size] = chunk
    fr = x.reshape(n, HOP)
    db = 10.0 * np.log10(np.mean(fr * fr, axis=1) + 1e-12)
    return db, yin(x, n, step=pitch_step)


def yin(x: np.ndarray, n: int, threshold: float = 0.2, step: int = 1) -> np.ndarray:
    """F0 (Hz) per 10 ms frame, 0 where unvoiced: YIN's normalised difference via FFT autocorrelation.
    ``step`` > 1: estimated on every ``step``-th frame and held (analysis that only needs slow pitch)."""
    step = max(1, int(step))
    if step > 1:
        return np.repeat(_yin_frames(x, n, threshold, step), step)[:n]
    return _yin_frames(x, n, threshold, 1)


def _yin_frames(x: np.ndarray, n: int, threshold: float, step: int) -> np.ndarray:
    """YIN at frames 0, step, 2·step, ... (ceil(n / step) values)."""
    m = -(-n // step)
    pad = np.pad(x, (_WIN // 2, _WIN // 2 + HOP * step))
    idx = np.arange(m)[:, None] * (HOP * step) + np.arange(_WIN)[None, :]
    frames = pad[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames * frames, axis=1)
    spec = np.fft.rfft(frames, 2 * _WIN, axis=1)
    r = np.fft.irfft(spec * np.conj(spec), axis=1)[:, : _WIN // 2]
    d = 2.0 * (r[:, :1] - r)  # difference function (stationary approximation)
    cum = np.cumsum(d[:, 1:], axis=1)
    tau = np.arange(1, d.shape[1])
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * tau / np.maximum(cum, 1e-12)
    lo, hi = int(SR / F0_MAX), min(int(SR / F0_MIN), d.shape[1] - 1)
    seg = cmnd[:, lo:hi]
    below = seg < threshold
    first = np.where(below.any(axis=1), below.argmax(axis=1), -1)
    f0 = np.zeros(m)
    ok = (first >= 0) & (energy > 1e-6 * _WIN)
    rows = np.flatnonzero(ok)
    if rows.size:
        t = first[rows]
        # walk down to the local minimum after the first crossing
        for _ in range(8):
            nxt = np.minimum(t + 1, seg.shape[1] - 1)
            better = seg[rows, nxt] < seg[rows, t]
            t = np.where(better, nxt, t)
        f0[rows] = SR / (t + lo)
    return f0


# Speech rises and falls by syllable (and pauses): its 10 ms loudness spans well over 10 dB between the 5th and
# 95th percentiles. Steady noise spans ~2 dB (white noise over 160 samples), a hum or a DC-free tone ~0.
STEADY_DB = 6.0


def summarize(db: np.ndarray, f0: np.ndarray) -> Prosody:
    """Noise floor, speech level and the speech/pause mask of a take's 100 Hz features."""
    if db.size == 0:
        return Prosody(db, f0, np.zeros(0, bool), -20.0, -60.0)
    floor = float(np.percentile(db, 5))
    top = float(np.percentile(db, 95))
    if top - floor < STEADY_DB:  # no loudness modulation at all: room tone, hum, a tone; nobody speaks
        return Prosody(db, f0, np.zeros(db.size, bool), top + 20.0, top)
    floor = min(floor, top - 20.0)
    thresh = floor + 0.35 * (top - floor)
    speech = db > thresh
    # close gaps shorter than 150 ms (stop closures are not pauses) and drop blips shorter than 50 ms
    speech = _fill_short(speech, True, 15)
    speech = ~_fill_short(~speech, True, 5)
    level = float(np.median(db[speech])) if speech.any() else top
    return Prosody(db, f0, speech, level, floor)


def _fill_short(mask: np.ndarray, value: bool, max_len: int) -> np.ndarray:
    """Set runs of ``not value`` shorter than max_len that are bounded by ``value`` to ``value``."""
    out = mask.copy()
    d = np.diff(np.r_[0, (mask != value).astype(np.int8), 0])
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    for s, e in zip(starts, ends):
        if e - s < max_len and s > 0 and e < mask.size:
            out[s:e] = value
    return out


def loudness(p: Prosody) -> np.ndarray:
    """Normalised loudness per 10 ms: 0 at the noise floor, ~1 at typical speech level."""
    span = max(p.level - p.floor, 6.0)
    return np.clip((p.db - p.floor - 0.15 * span) / (0.85 * span), 0.0, 1.3)


def lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    if x.size < 16:
        return x.copy()
    sos = butter(2, min(cutoff, 0.45 * FEAT_RATE) / (0.5 * FEAT_RATE), output="sos")
    return sosfiltfilt(sos, x, padlen=min(x.size - 1, 3 * 6))


def of_audio(audio_16k: np.ndarray, pitch_step: int = 1) -> Prosody:
    """Prosody of a whole take in one pass (analysis code; the lip engine streams chunk by chunk).
    ``pitch_step``: pitch every that many 10 ms frames (held between), for uses that low-pass it anyway."""
    return summarize(*chunk_features(np.asarray(audio_16k, dtype=np.float64).reshape(-1), pitch_step))


def voice_curves(p: Prosody, n: int | None = None, speed: float = 1.0) -> dict[str, np.ndarray]:
    """The voice events head motion follows, at 100 Hz over ``n`` frames (zero-padded past the audio).

    loudness (0..~1), speech (0/1), pitch (semitones around the speaker's median / 8, held through
    unvoiced stretches, in [-1, 1]) and accent (rises of the smoothed loudness: stressed syllables,
    ~1 at the take's strong ones).
    """
    n = max(p.n, 2) if n is None else int(n)
    spd = max(float(speed), 0.05)
    grid = np.arange(n) / FEAT_RATE
    e, sp, f0 = np.zeros(n), np.zeros(n), np.zeros(n)
    m = min(n, p.n)
    e[:m], sp[:m], f0[:m] = loudness(p)[:m], p.speech[:m], p.f0[:m]
    voiced = f0 > 0
    st = np.zeros(n)
    if voiced.sum() > 10:
        st_v = 12.0 * np.log2(f0[voiced] / np.median(f0[voiced]))
        st = np.clip(np.interp(grid, grid[voiced], st_v), -8, 8) / 8.0
    accent = lowpass(np.maximum(np.gradient(lowpass(e, 4.0 * spd)) * FEAT_RATE, 0.0), 1.5 * spd)
    accent /= max(float(np.percentile(accent, 99)), 1e-6)
    return {"loudness": e, "speech": sp, "pitch": st, "accent": accent}
