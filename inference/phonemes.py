"""Phone segments from speech with PocketSphinx 5 (bundled en-us model): recognition or forced alignment.

Audio arrives as mono float32 16 kHz chunks (see ``audio.iter_chunks``). ``PhoneStream`` buffers it,
cuts utterances at pauses (the quietest 10 ms frame in a search window) and decodes each utterance
on its own, so memory stays flat for audio of any length and phone times stay absolute.
"""

from __future__ import annotations

import os
import re
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
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


def recognize_with_closures(audio: np.ndarray, offset: float = 0.0) -> list[PhoneSeg]:
    """Phone recognition plus the bilabial stops found acoustically (see ``closures.refine``):
    recognition alone hears few /p b/, and lips that stay open on them look wrong."""
    from . import closures  # closures imports PhoneSeg from here

    return closures.refine(recognize(audio, offset), audio, offset)


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


class PhoneStream:
    """Feed 16 kHz chunks in order; get phone segments with absolute times.

    With a transcript (and audio up to MAX_ALIGN_S) the whole take is force-aligned at the end;
    otherwise utterances are cut at pauses and recognised as soon as they are cut: on a pool of
    processes (``recognition_pool``; ``processes``, default $CADENCE_RECOGNITION_PROCESSES or
    min(cores, 4)) when the take has more than one segment, in this process otherwise or when
    ``processes`` is 1. The phones are the same for any number of processes.

    ``cancelled``: polled while waiting for the pool; once it returns True the stream drops its
    queued segments and stops waiting, so ``finish()`` returns incomplete phones: the caller must
    check its own flag afterwards (``animate_audio`` does). ``close()`` drops queued work too.
    """

    def __init__(self, transcript: str | None = None, expected_duration: float | None = None,
                 cancelled: Callable[[], bool] | None = None, processes: int | None = None) -> None:
        from . import recognition_pool

        self.transcript = transcript.strip() if transcript and transcript.strip() else None
        self.align = self.transcript is not None and (expected_duration or 0.0) <= MAX_ALIGN_S
        self.notes: list[str] = []
        if self.transcript is not None and not self.align:
            self.notes.append(f"audio longer than {MAX_ALIGN_S:.0f} s: transcript ignored, phones recognised")
        self.processes = recognition_pool.configured_processes() if processes is None else max(1, int(processes))
        reset_decoders()
        self._buf: list[np.ndarray] = []
        self._buf_len = 0
        self._offset = 0.0  # time of the buffer's first sample
        self.phones: list[PhoneSeg] = []
        self._cancelled = cancelled
        self._pending: deque[_Segment] = deque()  # pooled segments not yet collected, in time order
        self._pooled = False  # some segment went to the pool: so does the last one
        self._final = False  # finish() was called
        self.closed = False
        # Queued segments are dropped when the stream is abandoned (an exception in the caller).
        self._finalizer = weakref.finalize(self, _cancel_futures, self._pending)
        if not self.align and self.processes > 1 and (expected_duration or 0.0) > MAX_SEG_S:
            recognition_pool.get_pool(self.processes)  # start the processes while the first segment fills

    def feed(self, chunk: np.ndarray) -> None:
        if self.closed:
            return
        if self._pending:
            self._collect(keep=2 * self.processes)  # collect what finished and keep the processes busy
        self._buf.append(np.asarray(chunk, dtype=np.float32))
        self._buf_len += chunk.size
        if self.align:
            if self._buf_len > MAX_ALIGN_S * SR * 1.05:  # longer than announced: give up aligning
                self.align = False
                self.notes.append(f"audio longer than {MAX_ALIGN_S:.0f} s: transcript ignored, phones recognised")
            else:
                return
        if self._buf_len >= MAX_SEG_S * SR:
            rest, self._offset = self._cut(np.concatenate(self._buf), self._offset, final=False)
            self._buf, self._buf_len = [rest], rest.size

    def finish(self) -> list[PhoneSeg]:
        self._final = True  # no more segments will come: dispatch what is held
        audio = np.concatenate(self._buf) if self._buf else np.zeros(0, dtype=np.float32)
        self._buf, self._buf_len = [], 0
        if self.closed:
            return self.phones
        if self.align:
            try:
                phones, oov, incomplete = align(audio, self.transcript, self._offset)
                last = max((p.end for p in phones if p.phone != "SIL"), default=self._offset)
                if oov:
                    self.notes.append("words not in the dictionary were skipped: " + ", ".join(sorted(set(oov))[:20]))
                if incomplete and audio.size / SR + self._offset - last > 0.5:
                    # the aligner stopped early: recognise what it left out
                    self.notes.append("alignment ended before the transcript did; the rest was recognised")
                    self.phones.extend(p for p in phones if p.end <= last + 1e-6)
                    self._cut(audio[int((last - self._offset) * SR):], last, final=True)
                else:
                    self.phones.extend(phones)
                return self._collect(keep=0)
            except RecognitionError as exc:
                self.notes.append(f"{exc}; phones recognised instead")
        self._cut(audio, self._offset, final=True)
        return self._collect(keep=0)

    def close(self) -> None:
        """Drop queued segments (those already being decoded finish in the background and are ignored)."""
        self.closed = True
        self._finalizer()

    def _cut(self, audio: np.ndarray, offset: float, final: bool) -> tuple[np.ndarray, float]:
        """Queue the segments of ``audio`` cut at pauses (every one when ``final``); returns the rest."""
        while audio.size >= MAX_SEG_S * SR and not self.closed:
            # find_cut sees 25.1 s at most, so the cuts do not depend on how the audio was chunked
            cut = find_cut(audio[: int((MAX_SEG_S + 0.1) * SR)], MIN_SEG_S, MAX_SEG_S)
            self._queue(audio[:cut], offset, last=False)
            offset += cut / SR
            audio = audio[cut:]
        if final and not self.closed:
            self._queue(audio, offset, last=True)
            audio = audio[:0]
        return audio, offset

    def _queue(self, audio: np.ndarray, offset: float, last: bool) -> None:
        if self.processes <= 1 or (last and not self._pooled):  # one segment: no pool round trip
            self.phones.extend(recognize_with_closures(audio, offset))
            return
        self._pooled = True
        self._pending.append(_Segment(audio, offset))
        self._collect(keep=2 * self.processes)  # bounded memory: at most 2 segments per process held

    def _dispatch(self) -> None:
        """Keep every process busy with one segment, the longest waiting one first. Audio decodes ~100x
        faster than it is recognised, so dispatch waits until 2 segments per process are held (or the
        take has ended): choosing the longest of them evens out the processes' loads (a 60 s take cuts
        into 3-4 unequal segments; in arrival order one process would get twice the other's work)."""
        from . import recognition_pool

        if not self._final and len(self._pending) < 2 * self.processes:
            return
        busy = sum(1 for s in self._pending if s.future is not None and not s.future.done())
        waiting = [s for s in self._pending if s.future is None]
        for seg in sorted(waiting, key=lambda s: -s.audio.size)[: max(self.processes - busy, 0)]:
            seg.future = recognition_pool.submit(seg.audio, seg.offset, self.processes)
            seg.audio = None  # the pool has its copy

    def _collect(self, keep: int) -> list[PhoneSeg]:
        """Move finished segments' phones, in order, to ``self.phones``; wait while more than ``keep`` are held."""
        from . import recognition_pool

        try:
            while self._pending and not self.closed:
                if self._cancelled is not None and self._cancelled():
                    self.close()
                    break
                self._dispatch()
                head = self._pending[0].future
                if head is not None and head.done():
                    self.phones.extend(recognition_pool.result(head))
                    self._pending.popleft()
                    continue
                if len(self._pending) <= keep:
                    break
                running = [s.future for s in self._pending if s.future is not None and not s.future.done()]
                wait(running, timeout=None if self._cancelled is None else 0.05, return_when=FIRST_COMPLETED)
        except BaseException:
            self.close()
            raise
        return self.phones


class _Segment:
    """A cut segment held for the pool: its audio until submitted, then its future."""

    __slots__ = ("audio", "offset", "future")

    def __init__(self, audio: np.ndarray, offset: float) -> None:
        self.audio: np.ndarray | None = audio
        self.offset = offset
        self.future: Future | None = None


def _cancel_futures(pending: deque[_Segment]) -> None:
    for seg in pending:
        if seg.future is not None:
            seg.future.cancel()
    pending.clear()


def phones_from_chunks(chunks: Iterable[np.ndarray], transcript: str | None = None) -> list[PhoneSeg]:
    """Convenience wrapper: the phone segments of a whole take."""
    stream = PhoneStream(transcript)
    for c in chunks:
        stream.feed(c)
    return stream.finish()
