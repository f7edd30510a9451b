"""Phone segments from speech with PocketSphinx 5 (bundled en-us model): recognition or forced alignment.

The lowest layer of the lip engine: the phone segment type, the decoders, recognition and alignment
of one utterance, and where to cut long audio. ``closures`` adds acoustically found /p b m/ closures,
``recognition_pool`` spreads segments over processes and ``phone_stream`` feeds a whole take.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

SR = 16_000
FRAME_S = 0.01  # PocketSphinx's frame rate: 100 frames/s
SILENCE_PHONES = {"SIL", "+SPN+", "+NSN+", "+BREATH+", "+COUGH+", "+NOISE+", "+UM+", "+UH+", "<sil>", "<s>", "</s>"}
# Segmenting long audio: decode when the buffer reaches MAX_SEG_S, cutting at the quietest frame
# after MIN_SEG_S (a pause in speech), so no word is cut in half unless nobody pauses for 25 s.
MIN_SEG_S = 8.0
MAX_SEG_S = 25.0
# Forced alignment keeps the whole utterance in one search; beyond this it would grow without bound.
MAX_ALIGN_S = 600.0


class PhoneSeg(NamedTuple):
    phone: str  # CMU/ARPAbet phone, "SIL" for silence
    start: float  # seconds
    end: float  # seconds


class RecognitionError(RuntimeError):
    """PocketSphinx is unavailable or failed; the caller may fall back to the energy engine."""


def _model_paths() -> dict[str, str]:
    try:
        import pocketsphinx
    except ImportError as exc:  # pragma: no cover - the worker requirements include it
        raise RecognitionError("pocketsphinx is not installed in the worker environment") from exc
    mp = pocketsphinx.get_model_path()
    return {
        "hmm": os.path.join(mp, "en-us", "en-us"),
        "dict": os.path.join(mp, "en-us", "cmudict-en-us.dict"),
        "phone_lm": os.path.join(mp, "en-us", "en-us-phone.lm.bin"),
    }


_DECODERS: dict[str, object] = {}


def reset_decoders() -> None:
    """Start the next take with fresh decoders: PocketSphinx adapts its cepstral mean from utterance
    to utterance, so a decoder reused across takes would make results depend on the previous take."""
    _DECODERS.clear()


def _decoder(kind: str):
    """One decoder per kind ("phones" or "align"), reused within a take (construction takes ~60 ms)."""
    if kind not in _DECODERS:
        import pocketsphinx

        p = _model_paths()
        common = {"hmm": p["hmm"], "loglevel": "FATAL", "samprate": SR}
        if kind == "phones":
            dec = pocketsphinx.Decoder(allphone=p["phone_lm"], dict=p["dict"], lw=2.0, pip=0.3,
                                       beam=1e-20, pbeam=1e-20, backtrace=True, **common)
        else:
            # Alignment needs wide beams: with the defaults it returns nothing on real speech.
            # Without fwdflat/bestpath passes: they can drop the end of the transcript (measured).
            dec = pocketsphinx.Decoder(dict=p["dict"], lm=None, beam=1e-100, wbeam=1e-80, pbeam=1e-100,
                                       fwdflat=False, bestpath=False, **common)
        _DECODERS[kind] = dec
    return _DECODERS[kind]


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def _clean(phone: str) -> str:
    p = phone.upper()
    return "SIL" if p in SILENCE_PHONES or p.startswith("+") else re.sub(r"\d", "", p)


def recognize(audio: np.ndarray, offset: float = 0.0) -> list[PhoneSeg]:
    """Phone recognition on one utterance (mono float32, 16 kHz) with the phone language model."""
    if audio.size < SR // 10:
        return []
    dec = _decoder("phones")
    try:
        # Reset the acoustic normalisation the previous utterance adapted: each segment's phones then
        # depend on its audio alone, whichever process (see recognition_pool) decodes it.
        dec.reinit_feat()
        dec.start_utt()
        dec.process_raw(_pcm16(audio), full_utt=True)
        dec.end_utt()
        segs = [(_clean(s.word), s.start_frame, s.end_frame) for s in dec.seg()]
    except RuntimeError as exc:
        raise RecognitionError(f"phone recognition failed: {exc}") from exc
    return [PhoneSeg(p, offset + a * FRAME_S, offset + (b + 1) * FRAME_S) for p, a, b in segs]




def transcript_words(text: str) -> list[str]:
    """Words of a transcript as the dictionary spells them (lower case, punctuation dropped)."""
    return [w for w in re.findall(r"[a-z0-9']+", text.lower().replace("’", "'")) if w.strip("'")]


def align(audio: np.ndarray, transcript: str, offset: float = 0.0) -> tuple[list[PhoneSeg], list[str], bool]:
    """Forced alignment of ``transcript`` to one utterance. Returns (phones, words not in the dictionary,
    whether the alignment stopped before the transcript's end).

    Words the dictionary lacks are dropped from the alignment text; raises RecognitionError when
    alignment finds no path (then phone recognition is the better tool).
    """
    dec = _decoder("align")
    words = transcript_words(transcript)
    oov = [w for w in words if dec.lookup_word(w) is None]
    known = [w for w in words if w not in set(oov)]
    if not known:
        raise RecognitionError("none of the transcript's words are in the pronunciation dictionary")
    try:
        pcm = _pcm16(audio)
        dec.set_align_text(" ".join(known))
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        if dec.hyp() is None:
            raise RecognitionError("forced alignment found no path through the transcript")
        words = [(s.word, s.start_frame, s.end_frame) for s in dec.seg()]
        real = [w for w, _, _ in words if not w.startswith(("<", "[", "+"))]
        incomplete = len(real) < len(known)  # the search can stop before the transcript ends
    except RuntimeError as exc:
        _DECODERS.pop("align", None)
        raise RecognitionError(f"forced alignment failed: {exc}") from exc
    out: list[PhoneSeg] = []
    try:
        dec.set_alignment()  # second pass: phone-level alignment within the word path
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        for word in dec.get_alignment():
            for ph in word:
                start = offset + ph.start * FRAME_S
                out.append(PhoneSeg(_clean(ph.name), start, start + ph.duration * FRAME_S))
    except (RuntimeError, TypeError):
        _DECODERS.pop("align", None)  # a failed pass can leave the decoder mid-utterance
        # The state-level pass can fail where the word pass succeeded: spread each word's
        # dictionary phones evenly over the word's span instead.
        out = []
        for w, a, b in words:
            pron = dec.lookup_word(re.sub(r"\(\d+\)$", "", w)) if not w.startswith(("<", "[", "+")) else None
            t0, t1 = offset + a * FRAME_S, offset + (b + 1) * FRAME_S
            if not pron:
                out.append(PhoneSeg("SIL", t0, t1))
                continue
            ps = pron.split()
            step = (t1 - t0) / len(ps)
            out.extend(PhoneSeg(_clean(p), t0 + i * step, t0 + (i + 1) * step) for i, p in enumerate(ps))
    if not any(p.phone != "SIL" for p in out):
        raise RecognitionError("forced alignment returned no phones")
    return out, oov, incomplete


def frame_rms_db(audio: np.ndarray, hop: int = SR // 100) -> np.ndarray:
    """Energy in dBFS per 10 ms frame (frame k covers samples [k*hop, (k+1)*hop))."""
    n = audio.size // hop
    if n == 0:
        return np.zeros(0)
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)


def find_cut(audio: np.ndarray, lo_s: float, hi_s: float) -> int:
    """Sample index of the quietest 10 ms frame between lo_s and hi_s (a pause, if there is one)."""
    db = frame_rms_db(audio)
    lo, hi = int(lo_s * 100), min(int(hi_s * 100), db.size)
    if hi <= lo:
        return min(audio.size, int(hi_s * SR))
    # Smooth over 100 ms so a single quiet frame inside a plosive does not win over a real pause.
    win = np.convolve(db, np.ones(10) / 10.0, mode="same")
    k = lo + int(np.argmin(win[lo:hi]))
    return k * (SR // 100) + SR // 200
