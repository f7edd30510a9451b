"""Acoustic lip-closure detection: finds the bilabials (p b m) that phone recognition misses.

Phone recognition without a transcript finds most /m/ but few /p b/: it often calls a stop's closure
silence. Lip closures have an acoustic signature of their own, measured here per 10 ms frame:

* a closure is a short (20-150 ms) dip of the 1.5-7 kHz band between louder speech on both sides:
  near silence for /p/, a low-frequency voice bar for /b/, a nasal murmur (strong < 500 Hz, weak
  above) for /m/;
* its place is decided at the release: a bilabial burst is weak and diffuse with a falling spectrum
  whose centroid is no higher than the following vowel's; alveolar and velar bursts sit 1-4 kHz
  above the vowel (measured on espeak-ng and LibriSpeech stops).

Nasal murmurs are found as dips too, but their place is left to the recogniser (it finds /m/ well;
/n/ murmurs look the same without a release to judge). The recogniser's hypotheses and these
measurements are combined in :func:`refine`: bilabials the recogniser found are kept; closures whose release looks labial become /p/ or /b/ (voiced closure);
the recogniser's silences inside such a closure give way. Pure numpy, deterministic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import phonemes
from .phonemes import PhoneSeg

SR = 16_000
HOP = SR // 100  # 10 ms frames, the recogniser's grid
WIN = 400  # 25 ms analysis window centred on each frame
NFFT = 512
MIN_GAP_S, MAX_GAP_S = 0.02, 0.15  # a stop closure / nasal murmur; longer dips are pauses
FLANK_S = 0.12  # speech must be within this distance on both sides of a closure
DIP_DB = 15.0  # the 1.5-7 kHz band must fall this far below both flanks
BILABIALS = ("P", "B", "M")
LABIAL_MAX_SHIFT_HZ = 800.0  # burst centroid above the vowel's: alveolar/velar (measured 1.1-4.5 kHz)
LABIAL_MAX_TILT_DB = -5.0  # a burst rising towards high frequencies is not labial
# The recogniser heard a lingual stop/affricate/fricative at the release: trust it over the burst.
LINGUAL = frozenset({"T", "D", "K", "G", "CH", "JH", "S", "Z", "SH", "ZH", "TH", "DH", "N", "NG", "L"})


class Closure(NamedTuple):
    start: float  # seconds (absolute)
    end: float  # release time (seconds)
    voiced: bool  # low-frequency energy (voice bar / murmur) during the closure
    burst: bool  # an abrupt broadband release follows
    labial: float  # labiality score: > 0 means the release looks bilabial
    phone: str  # "P" or "B" for a labial release, "" otherwise


def _bands(freqs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (freqs >= lo) & (freqs < hi)


_FREQS = np.fft.rfftfreq(NFFT, 1.0 / SR)
_LF, _HF = _bands(_FREQS, 80, 500), _bands(_FREQS, 1500, 7000)
_WINDOW = np.hanning(WIN)


def frame_spectra(audio: np.ndarray) -> np.ndarray:
    """Power spectra (n_frames, NFFT/2+1) of 25 ms windows centred on each 10 ms frame."""
    n = audio.size // HOP
    if n == 0:
        return np.zeros((0, _FREQS.size))
    pad = np.pad(audio.astype(np.float64), (WIN // 2 - HOP // 2, WIN))
    idx = np.arange(n)[:, None] * HOP + np.arange(WIN)[None, :]
    spec = np.fft.rfft(pad[idx] * _WINDOW, NFFT, axis=1)
    return spec.real**2 + spec.imag**2


def _db(x: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(x + 1e-10)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _release_sample(audio: np.ndarray, k_end: int) -> int:
    """Sample where the release starts: the first sharp rise of the 1 ms envelope near the gap's end."""
    lo, hi = max((k_end - 2) * HOP, 0), min((k_end + 3) * HOP, audio.size)
    seg = np.abs(audio[lo:hi].astype(np.float64))
    if seg.size < 32:
        return lo
    env = np.convolve(seg, np.ones(16) / 16, mode="same")
    floor, peak = np.percentile(env, 10), env.max()
    above = np.flatnonzero(env > floor + 0.2 * (peak - floor))
    return lo + int(above[0]) if above.size else k_end * HOP


def _spectrum(audio: np.ndarray, at: int, n: int) -> np.ndarray:
    """Power spectrum of ``n`` samples from ``at`` (Hann window, zero-padded past the end)."""
    seg = np.zeros(n)
    at = max(at, 0)
    piece = audio[at : at + n].astype(np.float64)
    seg[: piece.size] = piece
    spec = np.fft.rfft(seg * np.hanning(n), NFFT)
    return spec.real**2 + spec.imag**2


def _centroid(power: np.ndarray, lo: float, hi: float) -> float:
    m = _bands(_FREQS, lo, hi)
    return float((power[m] * _FREQS[m]).sum() / (power[m].sum() + 1e-12))


def place_features(audio: np.ndarray, release: int) -> tuple[float, float]:
    """(centroid shift Hz, tilt dB) of the 15 ms burst: its 0.3-7.5 kHz spectral centroid minus the
    following vowel's (50 ms later), and its 3.5-7.5 kHz level minus its 0.3-1.5 kHz level."""
    burst = _spectrum(audio, release - 16, 240)
    vowel = _spectrum(audio, release + 800, 320)
    bdb = _db(burst)
    tilt = float(np.mean(bdb[_bands(_FREQS, 3500, 7500)]) - np.mean(bdb[_bands(_FREQS, 300, 1500)]))
    return _centroid(burst, 300, 7500) - _centroid(vowel, 300, 7500), tilt


def labiality(shift_hz: float, tilt_db: float) -> float:
    """> 0 for a labial release: its energy no higher in frequency than the vowel's (alveolar and
    velar bursts sit 1-3 kHz above it) and a falling spectrum; the margin of the weaker cue."""
    return float(min((LABIAL_MAX_SHIFT_HZ - shift_hz) / 400.0, (LABIAL_MAX_TILT_DB - tilt_db) / 3.0))


def detect(audio: np.ndarray, offset: float = 0.0) -> list[Closure]:
    """Candidate closures in one utterance (mono float32 16 kHz) with their place evidence."""
    P = frame_spectra(audio)
    if P.shape[0] < 5:
        return []
    hf, lf = _db(P[:, _HF].sum(axis=1)), _db(P[:, _LF].sum(axis=1))
    tot = _db(P.sum(axis=1))
    level = float(np.percentile(tot, 90))
    speech = tot > level - 30.0
    flank = int(round(FLANK_S * 100))
    n = hf.size
    out: list[Closure] = []
    # frames whose high band is well below its louder surroundings on both sides
    win = np.lib.stride_tricks.sliding_window_view
    padded = np.pad(hf, flank, mode="constant", constant_values=-np.inf)
    left = win(padded[: n + flank], flank + 1).max(axis=1)  # max over [k - flank, k]
    right = win(padded[flank:], flank + 1).max(axis=1)  # max over [k, k + flank]
    dip = (hf < np.minimum(left, right) - DIP_DB) & (tot < level - 12.0)
    for a, b in _runs(dip):
        dur = (b - a) / 100.0
        if not (MIN_GAP_S <= dur <= MAX_GAP_S):
            continue
        if not (speech[max(0, a - flank) : a].any() and speech[b : b + flank].any()):
            continue
        voiced = bool(np.median(lf[a:b]) > level - 25.0)
        r = _release_sample(audio, b)
        k = min(r // HOP, n - 1)
        rise = hf[k : k + 3].max() - hf[a:b].mean() if k < n else 0.0
        burst = bool(rise > DIP_DB) and not voiced or bool(rise > DIP_DB + 10.0)
        lab = labiality(*place_features(audio, r)) if burst else -1.0
        phone = ("B" if voiced else "P") if burst and lab > 0.0 else ""
        out.append(Closure(offset + a / 100.0, offset + r / SR, voiced, burst, lab, phone))
    return out


def refine(phones: list[PhoneSeg], audio: np.ndarray, offset: float = 0.0) -> list[PhoneSeg]:
    """Recognised phones of one utterance plus the bilabial stops the acoustics reveal.

    A closure with a labial release becomes /p/ (silent closure) or /b/ (voice bar) over the
    closure's span, unless the recogniser heard a lingual consonant at the release; phones inside
    that span give way (partly overlapping ones are trimmed). No phones in, none out.
    """
    if not phones:
        return []
    out = list(phones)
    for c in detect(audio, offset):
        if not c.phone:
            continue
        at_release = [p.phone for p in out if p.start < c.end + 0.03 and p.end > c.end - 0.02]
        if any(ph in LINGUAL for ph in at_release) or any(ph in BILABIALS for ph in at_release):
            continue
        out = _insert(out, PhoneSeg(c.phone, c.start, c.end))
    return out


def _insert(phones: list[PhoneSeg], seg: PhoneSeg) -> list[PhoneSeg]:
    out: list[PhoneSeg] = []
    for p in phones:
        if p.end <= seg.start or p.start >= seg.end:
            out.append(p)
            continue
        if p.start < seg.start:
            out.append(PhoneSeg(p.phone, p.start, seg.start))
        if p.end > seg.end:
            out.append(PhoneSeg(p.phone, seg.end, p.end))
    out.append(seg)
    out.sort(key=lambda p: p.start)
    return out


def recognize_with_closures(audio: np.ndarray, offset: float = 0.0) -> list[PhoneSeg]:
    """Phone recognition plus the bilabial stops found acoustically (see ``refine``):
    recognition alone hears few /p b/, and lips that stay open on them look wrong."""
    return refine(phonemes.recognize(audio, offset), audio, offset)
