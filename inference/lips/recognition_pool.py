"""Phone recognition of cut segments on all cores: a warm process pool shared by every take of a worker.

PocketSphinx does not release the GIL, so threads cannot run two decoders at once; processes can. The
pool is created on first use (``spawn`` context: the worker has threads, so it must never fork) and
kept for the life of the worker process, so a job pays no start-up cost. Each segment is decoded
with freshly reset acoustic normalisation (see ``phonemes.recognize``), so a segment's phones depend
only on its audio and the output is the same whichever process decodes it, for any pool size.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from . import closures, phonemes

ENV_PROCESSES = "CADENCE_RECOGNITION_PROCESSES"
MAX_DEFAULT_PROCESSES = 4

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


class RecognitionPoolError(phonemes.RecognitionError):
    """A recognition process died (killed, out of memory, crashed); the next take starts a new pool."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def configured_processes() -> int:
    """Processes to recognise with: $CADENCE_RECOGNITION_PROCESSES, else min(cores, 4); 1 = in-process."""
    raw = os.environ.get(ENV_PROCESSES, "").strip()
    if not raw or raw.lower() == "auto":
        return max(1, min(available_cores(), MAX_DEFAULT_PROCESSES))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_PROCESSES} must be a whole number >= 1 (1 = no extra processes) or 'auto', got {raw!r}")
    return n


def _exit_with_parent(parent: int, period_s: float = 0.5) -> None:
    """Pool initializer: end this process when the worker that made it is gone. Why: a worker that is killed
    (out of memory, a user's kill) cannot shut its pool down, and orphaned pool processes would keep running and
    hold the worker's stderr pipe open, which Blender's side reads until it ends."""
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(1)

    threading.Thread(target=watch, name="cadence-parent-watch", daemon=True).start()


def _warm() -> int:
    """Run once per new process so that the first real segment does not pay for the decoder's construction."""
    phonemes._decoder("phones")
    return os.getpid()


def recognize_segment(audio: np.ndarray, offset: float) -> list[phonemes.PhoneSeg]:
    """What a pool process runs: recognition plus acoustic closures on one cut segment."""
    return closures.recognize_with_closures(audio, offset)


def get_pool(processes: int) -> ProcessPoolExecutor:
    """The worker's pool with ``processes`` processes (created, or re-created for another size, on demand)."""
    global _pool, _pool_size
    with _lock:
        if _pool is not None and (_pool_size != processes or getattr(_pool, "_broken", False)):
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        if _pool is None:
            ctx = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(max_workers=processes, mp_context=ctx, initializer=_exit_with_parent,
                                        initargs=(os.getpid(),))
            _pool_size = processes
            for _ in range(processes):  # start every process now, while the caller decodes its first audio
                _pool.submit(_warm)
        return _pool


def submit(audio: np.ndarray, offset: float, processes: int) -> Future:
    """Queue one segment; a pool found broken is replaced once before giving up."""
    for attempt in (0, 1):
        pool = get_pool(processes)
        try:
            return pool.submit(recognize_segment, np.ascontiguousarray(audio, dtype=np.float32), float(offset))
        except BrokenProcessPool as exc:
            discard(pool)
            if attempt:
                raise RecognitionPoolError(_BROKEN_MESSAGE) from exc
        except RuntimeError as exc:  # "cannot schedule new futures after shutdown" (interpreter exit)
            raise RecognitionPoolError(f"the recognition processes are shutting down: {exc}") from exc
    raise AssertionError("unreachable")


_BROKEN_MESSAGE = ("a speech recognition process stopped unexpectedly (killed or out of memory); "
                   "the take was not animated, please run it again")


def result(future: Future) -> list[phonemes.PhoneSeg]:
    """The phones of a submitted segment; a dead pool becomes RecognitionPoolError and is discarded."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        discard()
        raise RecognitionPoolError(_BROKEN_MESSAGE) from exc


def discard(pool: ProcessPoolExecutor | None = None) -> None:
    """Forget the pool (``pool``, or whichever is current) so the next take starts a fresh one."""
    global _pool
    with _lock:
        if _pool is None or (pool is not None and _pool is not pool):
            return
        dead, _pool = _pool, None
    dead.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the pool's processes (at interpreter exit; tests use it too)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def pool_pids() -> list[int]:
    """Process ids of the current pool (empty when there is none); for tests and diagnostics."""
    with _lock:
        procs = getattr(_pool, "_processes", None) or {}
        return sorted(procs)


atexit.register(shutdown)
