"""The paper's audio features (Yi et al. 2020, stage 1): MFCC windows, one per video frame.

16 kHz mono audio -> 13 MFCCs every 10 ms (25 ms Hann analysis window), c0 dropped (12 dims),
normalised per utterance (mean/variance per coefficient). Video frame t at ``fps`` sits at time
t / fps; it sees the MFCC frames from -120 ms to +160 ms around that time (28 frames at 10 ms),
so any frame rate works (24, 25, 29.97, 30, 60...). MFCC frame k is centred at k * hop.

The MFCC is computed with numpy/scipy (same recipe as ``librosa.feature.mfcc`` with a Slaney mel
filterbank, power spectrogram, dB with an 80 dB floor and an orthonormal DCT-II): it avoids
librosa's numba start-up (~1 s warm, ~12 s cold) in the worker and matches librosa to float
precision (tested).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.fft


class AudioFeatureError(ValueError):
    """Audio that cannot be turned into features (wrong rate, empty, not mono, NaN...)."""


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    hop_ms: float = 10.0  # MFCC hop
    win_ms: float = 25.0  # analysis window (Hann)
    n_fft: int = 512
    n_mels: int = 40
    n_mfcc: int = 13  # computed; c0 (log energy) is dropped -> 12 dims
    drop_c0: bool = True
    fmin: float = 0.0
    fmax: float = 8000.0
    top_db: float = 80.0
    window_start_ms: float = -120.0  # first MFCC frame of a video frame's window, relative to it
    window_frames: int = 28  # -120 ms ... +160 ms (exclusive) at 10 ms
    normalise: str = "utterance"  # "utterance" (per-coefficient mean/std) or "none"
    pad: str = "edge"  # "edge" (repeat the first/last MFCC frame) or "zero"

    @property
    def n_coef(self) -> int:
        return self.n_mfcc - (1 if self.drop_c0 else 0)

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000.0))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000.0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise AudioFeatureError(f"unknown audio feature settings: {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.normalise not in ("utterance", "none"):
            raise AudioFeatureError(f"normalise must be 'utterance' or 'none', got {self.normalise!r}")
        if self.pad not in ("edge", "zero"):
            raise AudioFeatureError(f"pad must be 'edge' or 'zero', got {self.pad!r}")
        if self.win_length > self.n_fft or self.hop_length < 1 or self.window_frames < 1:
            raise AudioFeatureError("inconsistent MFCC settings (window longer than n_fft, or empty hop/window)")
        if not 1 <= self.n_coef <= self.n_mels:
            raise AudioFeatureError("n_mfcc must leave at least one coefficient and not exceed n_mels")


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's auditory-toolbox scale: linear below 1 kHz, logarithmic above (librosa's default).
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    mel = f / f_sp
    log_part = f >= min_log_hz
    mel = np.where(log_part, min_log_hz / f_sp + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, mel)
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters, Slaney area normalisation."""
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    return weights


def check_audio(audio: np.ndarray, sample_rate: int, cfg: FeatureConfig) -> np.ndarray:
    if int(sample_rate) != cfg.sample_rate:
        raise AudioFeatureError(
            f"audio is {sample_rate} Hz but the features need {cfg.sample_rate} Hz: resample it first"
        )
    y = np.asarray(audio)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise AudioFeatureError(f"audio must be mono (1-D), got shape {y.shape}: mix it down first")
    if y.size == 0:
        raise AudioFeatureError("the audio is empty")
    if not np.issubdtype(y.dtype, np.number):
        raise AudioFeatureError(f"audio samples must be numbers, got {y.dtype}")
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise AudioFeatureError("the audio contains NaN or infinite samples")
    return y


def mfcc(audio: np.ndarray, cfg: FeatureConfig | None = None, sample_rate: int | None = None) -> np.ndarray:
    """(K, n_coef) MFCC frames (c0 dropped if configured), frame k centred at k * hop. Not normalised."""
    cfg = cfg or FeatureConfig()
    y = check_audio(audio, cfg.sample_rate if sample_rate is None else sample_rate, cfg)
    hop, n_fft = cfg.hop_length, cfg.n_fft
    # Centred frames with zero padding (librosa's center=True, pad_mode="constant").
    y = np.pad(y, n_fft // 2)
    n_frames = 1 + (len(y) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    # Periodic Hann of win_length, centred inside the n_fft frame.
    n = np.arange(cfg.win_length)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length)
    lpad = (n_fft - cfg.win_length) // 2
    window = np.zeros(n_fft)
    window[lpad:lpad + cfg.win_length] = win
    spec = np.abs(np.fft.rfft(y[idx] * window, axis=1)) ** 2  # (K, n_fft//2+1)
    mel = spec @ mel_filterbank(cfg).T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - cfg.top_db)
    coefs = scipy.fft.dct(db, type=2, norm="ortho", axis=1)[:, : cfg.n_mfcc]
    return coefs[:, 1:] if cfg.drop_c0 else coefs


def n_video_frames(n_samples: int, fps: float, sample_rate: int = 16000) -> int:
    """Number of frames at ``fps`` whose time t/fps lies inside the audio."""
    return int(math.ceil(n_samples / sample_rate * fps - 1e-9))


def frame_windows(
    audio: np.ndarray,
    fps: float,
    cfg: FeatureConfig | None = None,
    n_frames: int | None = None,
    sample_rate: int | None = None,
) -> np.ndarray:
    """(T, window_frames, n_coef) float32: the MFCC window of every video frame at ``fps``.

    ``n_frames`` defaults to the frames whose time lies inside the audio; more frames than the audio
    covers are allowed (their windows are padded), so features align with any channel take.
    """
    cfg = cfg or FeatureConfig()
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise AudioFeatureError(f"fps must be a positive number, got {fps!r}")
    coefs = mfcc(audio, cfg, sample_rate)
    if cfg.normalise == "utterance":
        coefs = (coefs - coefs.mean(axis=0)) / np.maximum(coefs.std(axis=0), 1e-3)
    if n_frames is None:
        n_frames = n_video_frames(len(np.asarray(audio).reshape(-1)), fps, cfg.sample_rate)
    n_frames = int(n_frames)
    if n_frames < 0:
        raise AudioFeatureError("n_frames must be >= 0")
    # Nearest MFCC frame to each video frame's time (<= 5 ms off at non-integer ratios like 29.97).
    centre = np.floor(np.arange(n_frames) / fps * 1000.0 / cfg.hop_ms + 0.5).astype(np.int64)
    first = int(round(cfg.window_start_ms / cfg.hop_ms))
    idx = centre[:, None] + first + np.arange(cfg.window_frames)[None, :]  # (T, W)
    k = coefs.shape[0]
    if cfg.pad == "edge":
        out = coefs[np.clip(idx, 0, k - 1)]
    else:
        out = np.where(((idx >= 0) & (idx < k))[..., None], coefs[np.clip(idx, 0, k - 1)], 0.0)
    return out.astype(np.float32).reshape(n_frames, cfg.window_frames, cfg.n_coef)
