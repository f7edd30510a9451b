"""The worker process alone (no bpy): protocol, jobs, progress, errors, cancellation, exit."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from inference import protocol
from inference.worker import jobs
from inference.worker import process as worker_mod

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """The worker as a subprocess; every stdout line must be a valid protocol message."""

    def __init__(self, jobs_dir: Path) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inference.worker", "--jobs-dir", str(jobs_dir)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue = queue.Queue()
        self.bad: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr: list[bytes] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                self.lines.put(protocol.decode(raw))
            except protocol.ProtocolError:
                self.bad.append(raw)
        self.lines.put(None)

    def send(self, msg: dict | bytes) -> None:
        self.proc.stdin.write(msg if isinstance(msg, bytes) else protocol.encode(msg))
        self.proc.stdin.flush()

    def next(self, timeout: float = 5.0) -> dict:
        msg = self.lines.get(timeout=timeout)
        assert msg is not None, "worker exited: " + b"".join(self.stderr).decode()[-2000:]
        return msg

    def until_end(self, job_id: str, timeout: float = 10.0) -> list[dict]:
        """All messages for ``job_id`` up to and including its result/error."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(deadline - time.monotonic(), 0.01))
            if msg.get("id") == job_id:
                got.append(msg)
                if msg["type"] in ("result", "error"):
                    return got

    def run(self, kind: str, params: dict | None = None, job_id: str = "j") -> list[dict]:
        self.send(protocol.job(job_id, kind, params))
        return self.until_end(job_id)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        assert not self.bad, f"non-protocol lines on stdout: {self.bad}"


@pytest.fixture
def worker(tmp_path):
    w = Worker(tmp_path / "jobs")
    hello = w.next(timeout=15)
    w.hello, w.cold_start = hello, time.monotonic() - w.started
    yield w
    w.close()


def test_handshake_and_versions(worker):
    hello = worker.hello
    assert hello["type"] == "hello"
    assert hello["protocol"] == protocol.PROTOCOL_VERSION and hello["cadence"] == protocol.CADENCE_VERSION
    assert hello["pid"] == worker.proc.pid and os.path.isdir(hello["jobs_dir"])
    assert worker.cold_start < 5.0, f"cold start took {worker.cold_start:.2f} s"
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert protocol.CADENCE_VERSION == manifest["version"]


def test_ping_reports_versions(worker):
    (reply,) = worker.run("ping")
    assert reply["type"] == "result"
    data = reply["data"]
    assert data["numpy"] == np.__version__ and data["python"].startswith("3.")
    assert {"ping", "sleep", "fail", "echo"} <= set(data["jobs"])


def test_progress_in_order_then_exactly_one_result(worker):
    msgs = worker.run("sleep", {"seconds": 0.3}, job_id="s")
    *progress, last = msgs
    assert last["type"] == "result" and last["data"]["steps"] >= 3
    assert len(progress) >= 3 and all(m["type"] == "progress" for m in progress)
    fractions = [m["fraction"] for m in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # Nothing more for that job arrives afterwards: the next message belongs to the next job.
    worker.send(protocol.job("p", "ping"))
    assert worker.next()["id"] == "p"


def test_errors_carry_message_and_traceback(worker):
    (err,) = worker.run("fail", {"message": "boom 42"})
    assert err["type"] == "error" and err["code"] == "failed"
    assert "boom 42" in err["message"] and "RuntimeError" in err["message"]
    assert "Traceback" in err["traceback"] and "jobs.py" in err["traceback"]
    assert len(err["traceback"].splitlines()) <= 25
    (user,) = worker.run("fail", {"message": "Pick an audio file", "user": True}, job_id="u")
    assert user["message"] == "Pick an audio file"
    assert worker.run("ping", job_id="after")[-1]["type"] == "result"


def test_cancel_running_job_is_prompt_and_next_job_works(worker):
    worker.send(protocol.job("long", "sleep", {"seconds": 30}))
    assert worker.next()["type"] == "progress"  # it is running
    t0 = time.monotonic()
    worker.send(protocol.cancel("long"))
    end = worker.until_end("long")[-1]
    assert time.monotonic() - t0 < 1.0
    assert end["type"] == "error" and end["code"] == "cancelled"
    assert worker.run("sleep", {"seconds": 0.05}, job_id="next")[-1]["type"] == "result"


def test_cancel_queued_job_answers_at_once(worker):
    worker.send(protocol.job("a", "sleep", {"seconds": 30}))
    worker.send(protocol.job("b", "sleep", {"seconds": 30}))
    worker.send(protocol.cancel("b"))
    assert worker.until_end("b", timeout=1.0) == [
        {"type": "error", "id": "b", "message": "sleep was cancelled", "traceback": "", "code": "cancelled"}
    ]
    worker.send(protocol.cancel("a"))
    assert worker.until_end("a", timeout=1.0)[-1]["code"] == "cancelled"


def test_stdout_chatter_does_not_corrupt_protocol_and_arrays_travel_as_npz(worker):
    msgs = worker.run("echo", {"array": [[1.5, 2.0], [3.0, 4.0]]})
    log, result = msgs[0], msgs[-1]
    assert log["type"] == "log" and log["message"] == "echo ran"
    assert result["type"] == "result"
    path = result["data"]["file"]
    assert path.startswith(worker.hello["jobs_dir"])
    np.testing.assert_array_equal(protocol.load_arrays(path)["array"], [[1.5, 2.0], [3.0, 4.0]])
    worker.run("ping", job_id="p2")
    assert not worker.bad
    time.sleep(0.1)
    log_text = b"".join(worker.stderr).decode()
    assert "a library printing to stdout" in log_text and "a C library writing to fd 1" in log_text


def test_unknown_kind_and_malformed_requests(worker):
    (err,) = worker.run("no_such_job")
    assert err["code"] == "unknown_kind" and "no_such_job" in err["message"]
    worker.send(b"this is not json\n")
    bad = worker.next()
    assert bad["type"] == "error" and bad["id"] is None and bad["code"] == "bad_request"
    worker.send(b'{"type": "job", "id": "x", "params": {}}\n')  # no kind
    bad = worker.next()
    assert bad["id"] == "x" and bad["code"] == "bad_request" and "kind" in bad["message"]
    worker.send(b'{"type": "result", "id": "y", "data": {}}\n')  # a reply type sent as a request
    assert worker.next()["code"] == "bad_request"
    assert worker.run("ping", job_id="still")[-1]["type"] == "result"


@pytest.mark.parametrize("how", ["eof", "eof_mid_job", "eof_stubborn_job", "shutdown"])
def test_worker_exits_when_told_or_when_stdin_closes(worker, how):
    if how.startswith("eof_"):
        worker.send(protocol.job("z", "sleep", {"seconds": 30, "stubborn": how == "eof_stubborn_job"}))
        assert worker.next()["type"] == "progress"
    if how == "shutdown":
        worker.send(protocol.shutdown())
    else:
        worker.proc.stdin.close()
    assert worker.proc.wait(timeout=2.0 + (worker_mod.EXIT_GRACE_S if "stubborn" in how else 0)) == 0
    assert not os.path.exists(worker.hello["jobs_dir"])


def test_protocol_validation():
    with pytest.raises(protocol.ProtocolError, match="fraction"):
        protocol.validate({"type": "progress", "id": "a", "fraction": "half", "message": ""})
    with pytest.raises(protocol.ProtocolError, match="unknown message type"):
        protocol.decode(b'{"type": "bogus"}')
    line = protocol.encode(protocol.result("r", {"n": np.int64(3), "v": np.float32(0.5), "a": np.arange(2)}))
    assert json.loads(line) == {"type": "result", "id": "r", "data": {"n": 3, "v": 0.5, "a": [0, 1]}}
    assert protocol.progress("a", float("nan"))["fraction"] == 0.0 and protocol.progress("a", 7)["fraction"] == 1.0
    with pytest.raises(TypeError):
        protocol.encode(protocol.result("r", {"obj": object()}))


def test_job_modules_missing_vs_broken(tmp_path, monkeypatch):
    pkg = tmp_path / "cadence_test_jobs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("import cadence_no_such_dependency  # noqa\n")
    (pkg / "good.py").write_text(
        "from inference.worker.jobs import register_job\n\n@register_job('t_good')\ndef good(params, ctx):\n    return {'ok': 1}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(jobs, "JOB_MODULES", {
        "cadence_test_jobs.missing": ("t_missing",),
        "cadence_test_jobs.broken": ("t_broken",),
        "cadence_test_jobs.good": ("t_good",),
    })
    monkeypatch.setattr(jobs, "_FAILED", {})
    monkeypatch.setattr(jobs, "_TRIED", set())
    monkeypatch.setattr(jobs, "_REGISTRY", dict(jobs._REGISTRY))
    assert jobs.get_handler("t_good")(None, None) == {"ok": 1}
    with pytest.raises(jobs.JobUnavailable, match="cadence_no_such_dependency"):
        jobs.get_handler("t_broken")
    with pytest.raises(jobs.UnknownJobError, match="t_missing"):  # module not written yet: just unknown
        jobs.get_handler("t_missing")
    assert list(jobs.load_builtin_jobs()) == ["cadence_test_jobs.broken"]
