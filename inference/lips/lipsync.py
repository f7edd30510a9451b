"""Lip channels from phones (or from energy alone) on a given head: expression + jaw at the frame times.

Loudness scales articulation (quiet speech moves the mouth less, silence closes it); ``strength``
scales everything but the bilabial closures, which always close.
"""

from __future__ import annotations

import numpy as np

from ..audio.prosody import FEAT_RATE, Prosody, loudness, lowpass
from . import coarticulation
from .phonemes import PhoneSeg
from .visemes import VisemeSet

MIN_PHONES_PER_SPEECH_S = 2.0  # fewer than this (real speech has ~10/s) means recognition failed
# Loudness dips shorter than this (stop closures, weak /h/) are bridged before scaling articulation:
# the tongue closes there, not the lips, so the mouth must not fall back to rest (closed) in them.
BRIDGE_S = 0.13


def bridge_dips(x: np.ndarray, width: int) -> np.ndarray:
    """Morphological closing (running max, then running min) over ``width`` samples: fills dips
    narrower than ``width`` and keeps the onsets and offsets of longer stretches where they are."""
    if width < 2 or x.size == 0:
        return x
    h = width // 2
    win = np.lib.stride_tricks.sliding_window_view
    up = win(np.pad(x, h, mode="edge"), 2 * h + 1).max(axis=1)
    return win(np.pad(up, h, mode="edge"), 2 * h + 1).min(axis=1)


def gain_at(p: Prosody, times: np.ndarray, cutoff: float = 8.0) -> np.ndarray:
    """Articulation gain per frame from loudness: ~0 in silence, ~1 at typical speech level."""
    if p.n == 0:
        return np.zeros(times.size)
    g = np.clip(lowpass(bridge_dips(loudness(p), int(BRIDGE_S * FEAT_RATE)), cutoff), 0.0, 1.25) ** 0.6
    centres = (np.arange(p.n) + 0.5) / FEAT_RATE  # 10 ms frame k is centred at (k + 0.5) * 10 ms
    return np.interp(times, centres, g, left=0.0, right=0.0)


def recognition_usable(phones: list[PhoneSeg], p: Prosody) -> bool:
    """Did recognition find phones in proportion to the speech that is there?"""
    speech_s = float(np.sum(p.speech)) / FEAT_RATE
    n = sum(1 for ph in phones if ph.phone != "SIL")
    return n >= max(2, MIN_PHONES_PER_SPEECH_S * speech_s)


def phone_lips(phones: list[PhoneSeg], p: Prosody, visemes: VisemeSet, times: np.ndarray, fps: float,
               strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(expression (N, E), jaw (N, 3)) from phone segments (coarticulated, loudness-scaled)."""
    return coarticulation.blend(phones, visemes, times, fps, gain=gain_at(p, times), strength=strength)


def energy_lips(p: Prosody, visemes: VisemeSet, times: np.ndarray, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Language-independent fallback: the mouth opens with the syllabic energy envelope.

    Openness follows loudness low-passed at 6 Hz (the syllable rate); brighter/louder stretches lean
    towards the open "AA" pose, the rest towards the neutral "AH" — rest (closed) in silence.
    """
    o = gain_at(p, times, cutoff=6.0) * float(strength)
    rest, ah, aa = (visemes.index(n) for n in ("rest", "AH", "AA"))
    mix = np.clip(o - 0.6, 0.0, 0.6) / 0.6  # only the loudest syllables reach AA
    w_ah, w_aa = o * (1.0 - mix), o * mix
    expr = visemes.expression[rest] + w_ah[:, None] * (visemes.expression[ah] - visemes.expression[rest]) \
        + w_aa[:, None] * (visemes.expression[aa] - visemes.expression[rest])
    jaw = visemes.jaw[rest] + w_ah[:, None] * (visemes.jaw[ah] - visemes.jaw[rest]) \
        + w_aa[:, None] * (visemes.jaw[aa] - visemes.jaw[rest])
    return expr, jaw


def jaw_opening(jaw: np.ndarray, visemes: VisemeSet) -> np.ndarray:
    """Signed jaw-opening angle per frame (radians along the axis that opens this head's mouth)."""
    return np.asarray(jaw) @ visemes.jaw_axis
