"""Segments recognised on a process pool: same phones as in-process, bounded queue, cancellation, crashes.

Real speech: the three LibriSpeech fixtures (../shared/fixtures/speech) end to end, a 45 s take that
``PhoneStream`` cuts into two segments or more.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inference.audio import decode as audio
from inference.lips import phonemes, recognition_pool
from inference.lips.phone_stream import PhoneStream
from inference.lips.phonemes import SR

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "speech"  # as conftest's speech_fixtures
FIXTURES = ("librispeech-198-209-0000", "librispeech-3436-172162-0000", "librispeech-5703-47212-0000")


@pytest.fixture(scope="module")
def take() -> np.ndarray:
    d = SPEECH
    if not d.is_dir():
        pytest.skip(f"shared speech fixtures not found at {d}")
    return np.concatenate([audio.load_audio(d / f"{f}.ogg") for f in FIXTURES])


@pytest.fixture(scope="module", autouse=True)
def _stop_pool():
    yield
    recognition_pool.shutdown()


def _stream(x: np.ndarray, chunk_s: float, **kw) -> PhoneStream:
    s = PhoneStream(**kw)
    step = int(chunk_s * SR)
    for i in range(0, x.size, step):
        s.feed(x[i : i + step])
    return s


def test_same_phones_in_process_and_on_two_processes(take):
    assert take.size > 40 * SR
    one = _stream(take, 3.0, processes=1)
    assert not one._pooled
    ref = one.finish()
    two = _stream(take, 1.0, processes=2)  # other chunking too: cuts must not depend on it
    got = two.finish()
    assert two._pooled and len(recognition_pool.pool_pids()) == 2
    assert got == ref
    speech = [p for p in ref if p.phone != "SIL"]
    assert len(speech) > 300 and sum(p.phone in ("P", "B", "M") for p in speech) > 20
    assert all(a.start <= b.start for a, b in zip(ref, ref[1:]))
    assert ref[-1].end > take.size / SR - 1.0  # absolute times run to the end of the take


def test_short_take_stays_in_process(take):
    s = _stream(take[: 20 * SR], 3.0, processes=2)
    s.finish()
    assert not s._pooled and s.phones


def test_queue_is_bounded_and_cancel_drops_queued_segments():
    rng = np.random.default_rng(0)
    x = (0.01 * rng.standard_normal(130 * SR)).astype(np.float32)  # 5 segments of quiet noise
    flag = threading.Event()
    s = PhoneStream(processes=2, cancelled=flag.is_set)
    most = 0
    for i in range(0, x.size, 5 * SR):
        s.feed(x[i : i + 5 * SR])
        most = max(most, len(s._pending))
    assert most == 4  # at most 2 segments per process held
    sent = [seg.future for seg in s._pending if seg.future is not None]
    unsent = [seg for seg in s._pending if seg.future is None]
    assert len(sent) <= 2 and unsent  # one per process in the pool, the rest wait here
    flag.set()
    t = time.perf_counter()
    s.finish()
    assert time.perf_counter() - t < 0.5 and s.closed and not s._pending
    assert all(seg.future is None for seg in unsent)  # never sent to the pool
    s.feed(x[:SR])  # a closed stream takes nothing more
    assert s._buf_len == 0


def test_killed_pool_process_gives_clear_error_and_next_take_works(take):
    s = _stream(take, 5.0, processes=2)
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            s.finish()
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    runner = threading.Thread(target=finish)
    runner.start()
    deadline = time.monotonic() + 10.0
    while not any(seg.future is not None and seg.future.running() for seg in list(s._pending)):
        assert time.monotonic() < deadline, "no segment reached the pool"
        time.sleep(0.01)
    pids = recognition_pool.pool_pids()
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)  # like the out-of-memory killer
    runner.join(10.0)
    assert not runner.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], recognition_pool.RecognitionPoolError), errors
    assert "recognition process stopped unexpectedly" in str(errors[0])
    assert isinstance(errors[0], phonemes.RecognitionError) and s.closed
    again = _stream(take, 5.0, processes=2).finish()  # the next take gets a new pool
    assert set(recognition_pool.pool_pids()).isdisjoint(pids)
    assert sum(p.phone != "SIL" for p in again) > 300


def test_pool_processes_end_when_their_worker_is_killed(tmp_path):
    """A worker killed outright cannot stop its pool: the pool's processes notice and end themselves."""
    import subprocess
    import sys

    from test_worker_client import _gone

    pids = tmp_path / "pids.txt"
    script = ("import os, sys\n"
              f"sys.path.insert(0, {str(Path(recognition_pool.__file__).parents[2])!r})\n"
              "from inference.lips import recognition_pool as rp\n"
              "pool = rp.get_pool(2)\n"
              "[f.result(60) for f in [pool.submit(rp._warm) for _ in range(4)]]\n"
              f"open({str(pids)!r}, 'w').write(' '.join(map(str, rp.pool_pids())))\n"
              "os._exit(0)  # no clean-up, as when the worker is killed\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 10.0
    while not all(_gone(pid) for pid in children):
        assert time.monotonic() < deadline, "pool processes outlived their worker"
        time.sleep(0.1)


def test_process_count_from_environment(monkeypatch):
    monkeypatch.setenv(recognition_pool.ENV_PROCESSES, "1")
    assert PhoneStream().processes == 1
    monkeypatch.setenv(recognition_pool.ENV_PROCESSES, "3")
    assert recognition_pool.configured_processes() == 3
    monkeypatch.delenv(recognition_pool.ENV_PROCESSES)
    assert 1 <= recognition_pool.configured_processes() <= recognition_pool.MAX_DEFAULT_PROCESSES
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(recognition_pool.ENV_PROCESSES, bad)
        with pytest.raises(ValueError, match=recognition_pool.ENV_PROCESSES):
            PhoneStream()
