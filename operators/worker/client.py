"""Blender's side of the worker protocol: start, talk to, restart and stop the worker process.

The worker (``python -m inference.worker``) runs in the Python chosen in the preferences. Two
background threads read its stdout (protocol replies, routed per job) and stderr (its log, written
to ``<cache>/logs/worker.log``; the last lines are kept for error reports). Nothing here touches the
scene: callers apply a job's result only once it has arrived, so a worker that dies mid-job leaves
the scene as it was.
"""

from __future__ import annotations

import collections
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

from ...inference import protocol
from .log import RotatingLog

EXT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the extension root
LOG_TAIL_LINES = 50
CANCEL_GRACE_S = 5.0  # a cancelled job that has not stopped by then gets its worker killed
MAX_EVENTS = 2000  # beyond this, unpolled progress/log events are dropped (results and errors never)
# A worker silent this long while a job runs is hung (stopped, deadlocked): it is killed and the job fails.
# Its reader thread answers a heartbeat within ~1 s even under load; the longest GIL-holding step (a recognition
# segment) takes seconds.
HEARTBEAT_S = 5.0
STALL_S = 60.0
HUNG_MESSAGE = ("The Cadence worker stopped responding for {s:.0f} s while running {kind!r} and was stopped; "
                "nothing was changed. Try again; details are in {log}.")
SETUP_HINT = "press Set up Worker in Cadence's preferences (Get Extensions > Cadence), or set Worker Python there"


class WorkerError(RuntimeError):
    """The worker could not run a job; ``str(exc)`` is for the user, ``traceback`` for the log."""

    def __init__(self, message: str, code: str = "failed", traceback: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.traceback = traceback
        self.log_tail = log_tail


class WorkerVersionError(WorkerError):
    """The worker belongs to another Cadence version."""


class WorkerCancelled(WorkerError):
    """The job was cancelled."""


class WorkerClient:
    """One worker process. ``submit``/``poll`` for modal operators, ``run_sync`` for execute()/background."""

    def __init__(self) -> None:
        self.python: str | None = None
        self.cache_dir: str | None = None
        self.info: dict = {}  # the worker's hello
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events: list[dict] = []
        self._pending: dict[str, tuple[str, subprocess.Popen]] = {}  # job id -> (kind, process) until answered
        self._dead = True
        self._stopping = False
        self._stray: list[str] = []  # non-protocol stdout lines (a program that is not the worker)
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._log: RotatingLog | None = None
        self._last_heard = self._last_ping = 0.0  # time.monotonic() of the last message / heartbeat request

    # ------------------------------------------------------------------------ lifecycle

    def start(self, python: str, cache_dir: str | None = None, timeout: float = 60.0) -> dict:
        """Start the worker with ``python`` and check its version; returns its hello message."""
        self.stop()
        self.python = python
        self.cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "cadence-cache")
        self._log = RotatingLog(os.path.join(self.cache_dir, "logs", "worker.log"))
        env = dict(os.environ)
        for var in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):  # Blender's own Python settings
            env.pop(var, None)
        env["PYTHONPATH"] = EXT_DIR  # so `inference` is importable whatever the cwd
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        # OpenBLAS's spinning threads starve torch's on small machines (persona inference measured
        # 0.1 s vs up to 1.8 s per take); the worker's matrices are small, one BLAS thread is enough.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("NUMBA_CACHE_DIR", os.path.join(self.cache_dir, "numba"))  # librosa: compile once
        jobs_root = os.path.join(self.cache_dir, "worker-jobs")
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self._log.write(f"--- starting worker: {python} ({time.strftime('%Y-%m-%d %H:%M:%S')})")
        try:
            # Its own process group (POSIX): stopping the worker also stops whatever it started.
            proc = subprocess.Popen(
                [python, "-m", "inference.worker", "--jobs-dir", jobs_root],
                cwd=EXT_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                creationflags=flags, start_new_session=os.name == "posix",
            )
        except OSError as exc:
            raise WorkerError(f"Cannot run the Cadence worker Python {python!r}: {exc.strerror or exc}. "
                              f"To fix it, {SETUP_HINT}.", code="missing") from exc
        with self._lock:
            # Events of earlier jobs stay: a modal operator may still be waiting for its error event.
            self._proc, self._dead, self._stopping = proc, False, False
            self._stray.clear()
            self.info = {}
        self._tail.clear()
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(proc,), name="cadence-worker-out", daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc,), name="cadence-worker-err", daemon=True),
        ]
        for t in self._threads:
            t.start()
        with self._changed:
            self._changed.wait_for(lambda: self.info or self._dead or self._stray, timeout)
            info, dead, stray = self.info, self._dead, list(self._stray)
        if not info:
            self.stop(timeout=1.0)
            if stray:
                why = f"did not answer as a Cadence worker (it printed {stray[0][:120]!r})"
            elif dead:
                why = f"exited during start-up (exit code {proc.returncode})"
            else:
                why = f"did not answer within {timeout:.0f} s"
            raise WorkerError(f"The Cadence worker at {python} {why}. To fix it, {SETUP_HINT}.\n{self.log_tail()}",
                              code="missing", log_tail=self.log_tail())
        if info.get("cadence") != protocol.CADENCE_VERSION or info.get("protocol") != protocol.PROTOCOL_VERSION:
            self.stop(timeout=1.0)
            raise WorkerVersionError(
                f"The Cadence worker at {python} is version {info.get('cadence')} (protocol {info.get('protocol')}), "
                f"this extension is {protocol.CADENCE_VERSION} (protocol {protocol.PROTOCOL_VERSION}): "
                "Cadence's files were updated while Blender was running (the worker runs them from disk): "
                "restart Blender.",
                code="version",
            )
        return info

    def is_alive(self) -> bool:
        return self._proc is not None and not self._dead and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> str | None:
        return self._log.path if self._log else None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        return "\n".join(list(self._tail)[-n:])

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the worker to shut down, wait ``timeout`` s, then kill it. Safe to call repeatedly."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.poll() is None:
            self._write(protocol.shutdown())
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        _kill_group(proc)  # what the worker started and could not stop (it was killed): those hold its pipes
        for t in self._threads:
            t.join(2.0)
        out_reader, err_reader = (self._threads + [None, None])[:2]
        for stream, reader in ((proc.stdin, None), (proc.stdout, out_reader), (proc.stderr, err_reader)):
            if reader is not None and reader.is_alive():  # still blocked in it: close() would wait for it
                continue
            try:
                stream.close()
            except OSError:
                pass
        jobs_dir = self.info.get("jobs_dir")
        if jobs_dir and os.path.isdir(jobs_dir):  # a killed worker cannot clean up after itself
            import shutil

            shutil.rmtree(jobs_dir, ignore_errors=True)
        with self._lock:
            self._dead = True
            self._proc = None

    def kill(self) -> None:
        """Kill the worker at once (a job that ignores cancellation); its pending jobs get error events."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop(timeout=1.0)

    def _restart(self) -> None:
        if not self.python:
            raise WorkerError(f"The Cadence worker has not been started. To fix it, {SETUP_HINT}.", code="missing")
        self.start(self.python, self.cache_dir)

    # ------------------------------------------------------------------------ jobs

    def submit(self, kind: str, params: dict | None = None) -> str:
        """Queue a job; returns its id. Restarts the worker first if it died."""
        if not self.is_alive():
            self._restart()
        self._last_heard = time.monotonic()  # silence while idle is not a hang
        job_id = uuid.uuid4().hex[:12]
        try:
            line = protocol.encode(protocol.job(job_id, kind, params))
        except (TypeError, ValueError) as exc:
            raise WorkerError(f"Cannot send the {kind!r} job to the worker: {exc}", code="bad_request") from exc
        with self._lock:
            proc = self._proc
            if self._dead or proc is None:  # died between the check and now
                self._events.append(self._death_event(job_id, kind, proc))
                return job_id
            self._pending[job_id] = (kind, proc)
        self._write_line(line)
        return job_id

    def poll(self, job_id: str | None = None) -> list[dict]:
        """Take the events received so far (all, or one job's), oldest first. Never blocks."""
        with self._lock:
            if job_id is None:
                taken, self._events = self._events, []
            else:
                taken = [e for e in self._events if e.get("id") == job_id]
                self._events = [e for e in self._events if e.get("id") != job_id]
        return taken

    def silent_for(self) -> float:
        """Seconds since the worker last said anything; asks it for a heartbeat every HEARTBEAT_S (its reader
        thread answers even while a job runs, so only a hung or stopped process stays silent)."""
        now = time.monotonic()
        if now - self._last_ping >= HEARTBEAT_S:
            self._last_ping = now
            self._write(protocol.heartbeat())
        return now - self._last_heard

    def hung(self) -> bool:
        """True (and the worker is killed) when it has been silent for longer than STALL_S."""
        if not self.is_alive() or self.silent_for() <= STALL_S:
            return False
        self._log_line(f"--- the worker did not answer for {STALL_S:.0f} s: killing it")
        self.kill()
        return True

    def cancel(self, job_id: str) -> None:
        """Ask the worker to cancel a job; its error event (code "cancelled") follows."""
        self._write(protocol.cancel(job_id))

    def run_sync(self, kind: str, params: dict | None = None, on_progress: Callable[[float, str], None] | None = None,
                 cancel_check: Callable[[], bool] | None = None, timeout: float | None = None) -> dict:
        """Run a job to completion and return its result data; raises WorkerError (or a subclass)."""
        job_id = self.submit(kind, params)
        try:
            return self._wait(job_id, kind, on_progress, cancel_check, timeout)
        except BaseException:  # a callback raised, Ctrl-C...: do not leave the job running unattended
            if self.is_alive():
                self.cancel(job_id)
            raise

    def _wait(self, job_id: str, kind: str, on_progress, cancel_check, timeout: float | None) -> dict:
        start = time.monotonic()
        cancelled_at = None
        while True:
            with self._changed:
                self._changed.wait_for(lambda: any(e.get("id") == job_id for e in self._events), 0.05)
            for event in self.poll(job_id):
                if event["type"] == "progress" and on_progress is not None:
                    on_progress(event["fraction"], event["message"])
                elif event["type"] == "result":
                    return event["data"]
                elif event["type"] == "error":
                    raise self.error_from(event)
            now = time.monotonic()
            if cancelled_at is None and cancel_check is not None and cancel_check():
                self.cancel(job_id)
                cancelled_at = now
            if cancelled_at is not None and now - cancelled_at > CANCEL_GRACE_S:
                self.kill()
                raise WorkerCancelled(f"{kind} was cancelled (the worker did not stop in time and was restarted)",
                                      code="cancelled")
            if self.hung():
                raise WorkerError(HUNG_MESSAGE.format(kind=kind, s=STALL_S, log=self.log_path), code="timeout",
                                  log_tail=self.log_tail())
            if timeout is not None and now - start > timeout:
                self.kill()
                raise WorkerError(f"The {kind!r} job took longer than {timeout:g} s and was stopped.", code="timeout",
                                  log_tail=self.log_tail())

    def error_from(self, event: dict) -> WorkerError:
        """The exception for an error event (for modal operators that poll)."""
        cls = WorkerCancelled if event.get("code") == "cancelled" else WorkerError
        return cls(event["message"], code=event.get("code", "failed"), traceback=event.get("traceback", ""),
                   log_tail=self.log_tail())

    # ------------------------------------------------------------------------ plumbing

    def _write(self, msg: dict) -> None:
        self._write_line(protocol.encode(msg))

    def _write_line(self, line: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with self._write_lock:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (OSError, ValueError):  # it died: the stdout reader reports it to the pending jobs
                pass

    def _death_event(self, job_id: str, kind: str, proc: subprocess.Popen | None) -> dict:
        if self._stopping:
            return protocol.error(job_id, f"{kind} was stopped because the Cadence worker was shut down",
                                  code="cancelled")
        rc = proc.poll() if proc is not None else None
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        return protocol.error(
            job_id,
            f"The Cadence worker stopped unexpectedly ({how}) while running {kind!r}. Nothing was changed; "
            f"the next job restarts it. Details are in {self.log_path}.",
            self.log_tail(), code="worker_died",
        )

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            try:
                msg = protocol.decode(raw)
            except protocol.ProtocolError:
                text = raw.decode("utf-8", "replace").rstrip()
                self._log_line(f"[not protocol] {text}")
                with self._changed:
                    self._stray.append(text)
                    self._changed.notify_all()
                continue
            kind = msg["type"]
            self._last_heard = time.monotonic()
            if kind == "alive":
                continue
            if kind == "log":
                self._log_line(f"[job {msg['id']}] {msg['level']}: {msg['message']}")
            elif kind == "error":
                self._log_line(f"[job {msg['id']}] error ({msg['code']}): {msg['message']}\n{msg['traceback']}")
            with self._changed:
                if kind == "hello":
                    self.info = msg
                else:
                    self._events.append(msg)
                    if len(self._events) > MAX_EVENTS:
                        self._events = self._trimmed(self._events)
                    if kind in ("result", "error"):
                        self._pending.pop(msg["id"], None)
                self._changed.notify_all()
        try:
            proc.wait(10.0)  # stdout closes just before exit; the exit code names a crash or a kill
        except subprocess.TimeoutExpired:
            pass
        with self._changed:
            if self._proc is proc or self._proc is None:  # not a late reader of a replaced process
                self._dead = True
            for job_id, (kind, owner) in list(self._pending.items()):
                if owner is proc:
                    self._events.append(self._death_event(job_id, kind, proc))
                    del self._pending[job_id]
            self._changed.notify_all()

    @staticmethod
    def _trimmed(events: list[dict]) -> list[dict]:
        keep_from = len(events) - MAX_EVENTS // 2  # keep the newest half of the chatter, all endings
        return [e for i, e in enumerate(events) if i >= keep_from or e["type"] in ("result", "error")]

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stderr.readline, b""):
            self._log_line(raw.decode("utf-8", "replace"))

    def _log_line(self, text: str) -> None:
        for line in text.rstrip().splitlines() or [""]:
            self._tail.append(line)
        if self._log is not None:
            self._log.write(text)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill what is left of the worker's process group (POSIX; the worker leads it). Nothing else is in it."""
    if os.name != "posix":
        return
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is already empty
        pass
