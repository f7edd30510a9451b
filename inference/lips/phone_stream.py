"""A whole take's phones: ``PhoneStream`` buffers 16 kHz chunks (see ``audio.iter_chunks``), cuts
utterances at pauses (the quietest 10 ms frame in a search window) and decodes each utterance on its
own, in a process pool when there are several, so memory stays flat for audio of any length and
phone times stay absolute.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait

import numpy as np

from . import closures, recognition_pool
from .phonemes import MAX_ALIGN_S, MAX_SEG_S, MIN_SEG_S, SR, PhoneSeg, RecognitionError, align, find_cut, reset_decoders


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

    def __init__(
        self,
        transcript: str | None = None,
        expected_duration: float | None = None,
        cancelled: Callable[[], bool] | None = None,
        processes: int | None = None,
    ) -> None:
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
                    self._cut(audio[int((last - self._offset) * SR) :], last, final=True)
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
            self.phones.extend(closures.recognize_with_closures(audio, offset))
            return
        self._pooled = True
        self._pending.append(_Segment(audio, offset))
        self._collect(keep=2 * self.processes)  # bounded memory: at most 2 segments per process held

    def _dispatch(self) -> None:
        """Keep every process busy with one segment, the longest waiting one first. Audio decodes ~100x
        faster than it is recognised, so dispatch waits until 2 segments per process are held (or the
        take has ended): choosing the longest of them evens out the processes' loads (a 60 s take cuts
        into 3-4 unequal segments; in arrival order one process would get twice the other's work)."""
        if not self._final and len(self._pending) < 2 * self.processes:
            return
        busy = sum(1 for s in self._pending if s.future is not None and not s.future.done())
        waiting = [s for s in self._pending if s.future is None]
        for seg in sorted(waiting, key=lambda s: -s.audio.size)[: max(self.processes - busy, 0)]:
            seg.future = recognition_pool.submit(seg.audio, seg.offset, self.processes)
            seg.audio = None  # the pool has its copy

    def _collect(self, keep: int) -> list[PhoneSeg]:
        """Move finished segments' phones, in order, to ``self.phones``; wait while more than ``keep`` are held."""
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
