"""Cadence's worker process: ``python -m inference.worker [--jobs-dir DIR]`` (cwd/PYTHONPATH = extension root).

Requests arrive as JSON lines on stdin, replies leave as JSON lines on stdout (see protocol.py).
stdout is reserved for the protocol from the first instruction: file descriptor 1 is re-pointed at
stderr, so prints from Python or C libraries end up in the log instead of corrupting the stream.
stderr is the log. Jobs run one at a time on the main thread; a reader thread keeps reading stdin
so that cancel requests are seen while a job runs. When stdin closes (Blender is gone) the worker
cancels what it runs and exits.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

from .. import protocol
from . import jobs

TRACEBACK_TAIL_LINES = 25
KEEP_JOB_DIRS = 8  # output folders of the last few jobs survive so the client can read them
EXIT_GRACE_S = 3.0  # how long a job gets to notice cancellation when the worker is told to stop


def _log(msg: str) -> None:
    print(f"[cadence-worker {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def traceback_tail(exc: BaseException | None = None) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) if exc else traceback.format_exc()
    return "\n".join(text.rstrip().splitlines()[-TRACEBACK_TAIL_LINES:])


class _Writer:
    """Writes protocol lines to the private copy of the original stdout, one whole line at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.broken = False

    def send(self, msg: dict) -> None:
        data = protocol.encode(msg)
        with self._lock:
            if self.broken:
                return
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:  # the client is gone; stdin EOF will follow and end the worker
                self.broken = True


class Worker:
    def __init__(self, writer: _Writer, jobs_dir: str) -> None:
        self.send = writer.send
        self.jobs_dir = jobs_dir
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: collections.deque[dict] = collections.deque()
        self._current: jobs.JobContext | None = None
        self._stopping = False
        self._done = threading.Event()
        self._job_dirs: collections.deque[str] = collections.deque()

    # ---------------------------------------------------------------- reader thread (stdin)

    def read_requests(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            if raw.strip():
                self.handle_line(raw)
            if self._stopping:
                break
        else:
            _log("stdin closed: the client is gone")
        self.stop()
        if not self._done.wait(EXIT_GRACE_S):
            _log("the running job ignored cancellation; exiting anyway")
            self.cleanup()
            os._exit(0)

    def handle_line(self, raw: bytes) -> None:
        try:
            msg = protocol.decode(raw)
        except protocol.ProtocolError as exc:
            job_id = _id_of(raw)
            self.send(protocol.error(job_id, f"The worker could not read a request: {exc}", code="bad_request"))
            return
        kind = msg["type"]
        if kind == "job":
            with self._lock:
                if self._stopping:
                    self.send(protocol.error(msg["id"], "The worker is shutting down", code="cancelled"))
                    return
                self._pending.append(msg)
                self._wake.notify()
        elif kind == "cancel":
            self.cancel(msg["id"])
        elif kind == "shutdown":
            _log("shutdown requested")
            self.stop()
        elif kind == "heartbeat":
            self.send(protocol.alive())
        else:
            self.send(protocol.error(msg.get("id"), f"The worker does not accept {kind!r} messages", code="bad_request"))

    def cancel(self, job_id: str) -> None:
        with self._lock:
            if self._current is not None and self._current.job_id == job_id:
                self._current.cancel()
                return
            queued = [m for m in self._pending if m["id"] == job_id]
            for m in queued:
                self._pending.remove(m)
        for m in queued:  # never started: its one reply is the cancellation
            self.send(protocol.error(job_id, f"{m['kind']} was cancelled", code="cancelled"))

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self._current is not None:
                self._current.cancel()
            dropped = list(self._pending)
            self._pending.clear()
            self._wake.notify()
        for m in dropped:
            self.send(protocol.error(m["id"], "The worker is shutting down", code="cancelled"))

    # ---------------------------------------------------------------- job loop (main thread)

    def serve(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._pending and not self._stopping:
                        self._wake.wait()
                    if self._stopping:
                        break
                    msg = self._pending.popleft()
                    ctx = jobs.JobContext(msg["id"], msg["kind"], self.send, self.jobs_dir)
                    self._current = ctx
                try:
                    self.run_job(msg, ctx)
                finally:
                    with self._lock:
                        self._current = None
        finally:
            self.cleanup()
            self._done.set()

    def run_job(self, msg: dict, ctx: jobs.JobContext) -> None:
        """Run one job and send exactly one result or error for it."""
        job_id, kind = msg["id"], msg["kind"]
        start = time.monotonic()
        _log(f"job {job_id} ({kind}) started")
        try:
            handler = jobs.get_handler(kind)
            data = handler(msg["params"], ctx)
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise TypeError(f"the {kind!r} job returned {type(data).__name__}, not a dict")
            reply = protocol.result(job_id, data)
            protocol.encode(reply)  # fail here (as this job's error) if the data is not serialisable
        except jobs.JobCancelled as exc:
            reply = protocol.error(job_id, str(exc) or "Cancelled", code="cancelled")
        except jobs.JobError as exc:
            reply = protocol.error(job_id, str(exc), traceback_tail(exc), code=getattr(exc, "code", "failed"))
        except Exception as exc:  # noqa: BLE001 - any failure becomes this job's error reply
            reply = protocol.error(
                job_id, f"The {kind!r} job failed: {type(exc).__name__}: {exc}", traceback_tail(exc), code="failed"
            )
        _log(f"job {job_id} ({kind}) ended: {reply['type']} {reply.get('code', '')} in {time.monotonic() - start:.2f} s")
        self._remember_job_dir(ctx)
        self.send(reply)

    def _remember_job_dir(self, ctx: jobs.JobContext) -> None:
        if ctx._out_dir is None:
            return
        self._job_dirs.append(ctx._out_dir)
        while len(self._job_dirs) > KEEP_JOB_DIRS:
            shutil.rmtree(self._job_dirs.popleft(), ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.jobs_dir, ignore_errors=True)


def _id_of(raw: bytes) -> str | None:
    # Best effort: attribute a malformed request to its job when it has a readable string id.
    import json

    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    job_id = obj.get("id") if isinstance(obj, dict) else None
    return job_id if isinstance(job_id, str) else None


def _claim_stdout() -> int:
    """Keep a private copy of stdout for the protocol and send everything else written there to stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_fd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs-dir", help="parent folder for this worker's job outputs (default: system temp)")
    args = parser.parse_args(argv)

    writer = _Writer(_claim_stdout())
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in Blender's terminal is Blender's business
    root = args.jobs_dir or os.path.join(tempfile.gettempdir(), "cadence-worker")
    os.makedirs(root, exist_ok=True)
    jobs_dir = tempfile.mkdtemp(prefix=f"w{os.getpid()}-", dir=root)
    worker = Worker(writer, jobs_dir)
    reader = threading.Thread(target=worker.read_requests, args=(sys.stdin.buffer,), name="stdin", daemon=True)
    writer.send(protocol.hello(os.getpid(), sys.executable, jobs_dir=jobs_dir, python_version=sys.version.split()[0]))
    _log(f"ready: pid {os.getpid()}, {sys.executable}, jobs in {jobs_dir}")
    reader.start()
    worker.serve()
    _log("exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
