"""Coarticulation: phone segments -> smooth per-frame viseme blends (dominance functions).

A Cohen-Massaro style model: every phone exerts a dominance over time that holds across its core and
decays exponentially outside it (faster for lips-critical consonants, slower for vowels and rounding,
which spread to their neighbours). The pose at time t is the dominance-weighted mean of viseme poses.
Bilabials (p b m) then get a hard constraint: the lips are closed at least on the frame nearest each
bilabial's centre and across its core, with short ramps, however fast the speech.
"""

from __future__ import annotations

import numpy as np

from .phonemes import PhoneSeg
from .visemes import CLOSED_VISEMES, PHONE_TO_VISEME, VisemeSet

# viseme -> (magnitude alpha, decay rate theta in 1/s)
DOMINANCE: dict[str, tuple[float, float]] = {
    "rest": (0.5, 18.0), "PBM": (1.0, 45.0), "FV": (0.9, 40.0), "TH": (0.5, 35.0),
    "TDN": (0.3, 30.0), "SZ": (0.45, 30.0), "SH": (0.8, 22.0), "KG": (0.25, 30.0),
    "R": (0.6, 22.0), "W": (0.9, 18.0), "AA": (0.7, 22.0), "EH": (0.6, 24.0), "IY": (0.6, 24.0),
    "AH": (0.5, 25.0), "ER": (0.6, 22.0), "OW": (0.75, 20.0), "UW": (0.85, 18.0),
}
SHORT_PAUSE_S = 0.12  # shorter silences are within-word gaps: the mouth need not close for them
REACH_S = 0.35  # a phone's influence is cut beyond this distance from its core
CLOSURE_RAMP_S = 0.04


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """Time (s) of each frame: frame f shows the instant f / fps."""
    return np.arange(n_frames, dtype=np.float64) / float(fps)


def viseme_weights(phones: list[PhoneSeg], visemes: VisemeSet, times: np.ndarray) -> np.ndarray:
    """Normalised blend weights (N, K) over the head's visemes at ``times``."""
    K = len(visemes.names)
    W = np.zeros((times.size, K))
    rest = visemes.index("rest")
    W[:, rest] = 1e-4  # far from any phone: rest
    if times.size == 0:
        return W
    dt = times[1] - times[0] if times.size > 1 else 1.0
    t0 = times[0]
    for ph, start, end in phones:
        vis = PHONE_TO_VISEME.get(ph, "rest")
        alpha, theta = DOMINANCE.get(vis, (0.5, 25.0))
        if vis == "rest" and end - start < SHORT_PAUSE_S:
            alpha *= 0.15
        lo = int(np.floor((start - REACH_S - t0) / dt))
        hi = int(np.ceil((end + REACH_S - t0) / dt)) + 1
        lo, hi = max(lo, 0), min(hi, times.size)
        if hi <= lo:
            continue
        t = times[lo:hi]
        core = 0.25 * (end - start)  # the middle half of the phone is held
        mid = 0.5 * (start + end)
        dist = np.maximum(np.abs(t - mid) - core, 0.0)
        W[lo:hi, visemes.index(vis)] += alpha * np.exp(-theta * dist)
    return W / W.sum(axis=1, keepdims=True)


def closure_weight(phones: list[PhoneSeg], times: np.ndarray, fps: float) -> np.ndarray:
    """How strongly each frame is pulled to a closed-lip pose (1 on every bilabial's core)."""
    alpha = np.zeros(times.size)
    if times.size == 0:
        return alpha
    ramp = max(CLOSURE_RAMP_S, 1.0 / fps)
    for ph, start, end in phones:
        if PHONE_TO_VISEME.get(ph) not in CLOSED_VISEMES:
            continue
        a, b = start + 0.2 * (end - start), end - 0.2 * (end - start)
        centre = min(max(int(round(0.5 * (start + end) * fps)), 0), times.size - 1)
        lo = max(int(np.floor((a - ramp) * fps)), 0)
        hi = min(int(np.ceil((b + ramp) * fps)) + 1, times.size)
        if hi > lo:
            t = times[lo:hi]
            d = np.maximum(np.maximum(a - t, t - b), 0.0)
            alpha[lo:hi] = np.maximum(alpha[lo:hi], np.clip(1.0 - d / ramp, 0.0, 1.0))
        alpha[centre] = 1.0  # the frame nearest the centre closes even when the phone is shorter than a frame
    return alpha


def blend(phones: list[PhoneSeg], visemes: VisemeSet, times: np.ndarray, fps: float,
          gain: np.ndarray | None = None, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (expression (N, E), jaw (N, 3)). ``gain`` (N,) scales articulation (loudness)."""
    W = viseme_weights(phones, visemes, times)
    expr = W @ visemes.expression
    jaw = W @ visemes.jaw
    rest = visemes.index("rest")
    scale = np.full(times.size, float(strength)) if gain is None else float(strength) * np.asarray(gain)
    expr = visemes.expression[rest] + scale[:, None] * (expr - visemes.expression[rest])
    jaw = visemes.jaw[rest] + scale[:, None] * (jaw - visemes.jaw[rest])
    alpha = closure_weight(phones, times, fps)[:, None]
    closed = visemes.index("PBM")
    expr = (1.0 - alpha) * expr + alpha * visemes.expression[closed]
    jaw = (1.0 - alpha) * jaw + alpha * visemes.jaw[closed]
    return expr, jaw
