"""`cadence.setup_worker`: create the worker's Python environment for an installed extension.

A venv in the extension's user folder (``worker-venv``), made with the Python running Blender, then
``pip install -r inference/requirements.txt``. Runs as a child process with progress and Esc to
cancel in the UI, synchronously in background mode. An existing environment is only replaced once
the new one installed completely, so a failed or cancelled set-up never breaks a working worker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import deque

import bpy

from . import client as worker_client
from . import session as worker_session

REQUIREMENTS = os.path.join(worker_client.EXT_DIR, "inference", "requirements.txt")


class SetupError(RuntimeError):
    """A set-up failure, with the tail of pip's output for the log."""


def worker_venv_dir() -> str:
    from ..prefs import ADDON_ID

    return bpy.utils.extension_path_user(ADDON_ID, path="worker-venv", create=False)


def _requirement_count(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip() and not line.lstrip().startswith(("#", "-")))


class WorkerSetup:
    """Runs venv creation + pip in a thread; `poll()` reports (fraction, message, finished)."""

    def __init__(self, target: str, requirements: str = REQUIREMENTS, base_python: str | None = None):
        self.target = target
        self.staging = target + ".new"
        self.requirements = requirements
        self.base_python = base_python or sys.executable
        self.fraction = 0.0
        self.message = "Starting"
        self.error: str | None = None
        self.warning: str | None = None  # set-up finished, but without the blendshape model
        self.done = False
        self.tail: deque[str] = deque(maxlen=40)
        self._proc: subprocess.Popen | None = None
        self._cancelled = False
        self._expected = max(1, _requirement_count(requirements))
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()

    def poll(self) -> bool:
        return self.done

    def wait(self) -> None:
        self._thread.join()

    def _step(self, cmd: list[str], share: tuple[float, float], label: str) -> None:
        start, end = share
        self.message = label
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      stdin=subprocess.DEVNULL)
        seen = 0
        for line in self._proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            self.tail.append(line)
            if line.startswith(("Collecting ", "Requirement already satisfied")):
                seen += 1
                # Dependencies are collected too: the estimate grows with what pip finds.
                self.fraction = start + (end - start) * min(0.9, seen / (seen + self._expected))
                self.message = line[:80]
            elif line.startswith("Installing collected packages"):
                self.fraction = start + 0.9 * (end - start)
                self.message = "Installing packages (this can take a few minutes)"
        code = self._proc.wait()
        if self._cancelled:
            raise SetupError("Worker set-up was cancelled; the previous worker environment is unchanged.")
        if code != 0:
            raise SetupError(f"{label} failed (exit code {code}): " + (self.tail[-1] if self.tail else ""))
        self.fraction = end

    def _install_model(self, py: str) -> None:
        """MediaPipe's blendshape model into the new environment (inference/tracking/landmarker_model.py).
        Not fatal: tracking works on landmarks alone without it, and says so; the warning says why."""
        self.message = "Fetching MediaPipe's face landmarker model"
        try:
            proc = subprocess.run([py, "-m", "inference.tracking.landmarker_model", "--install"],
                                  cwd=worker_client.EXT_DIR, capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL, check=False)
            failed = proc.returncode != 0
            detail = (proc.stderr or proc.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            failed, detail = True, str(exc)
        if failed:
            self.warning = detail.splitlines()[0] if detail else "the face landmarker model could not be fetched"
            self.tail.append(detail)
        self.fraction = 1.0

    def _run(self) -> None:
        try:
            shutil.rmtree(self.staging, ignore_errors=True)
            self._step([self.base_python, "-m", "venv", self.staging], (0.0, 0.1), "Creating the environment")
            py = worker_session._venv_python(self.staging)
            self._step([py, "-m", "pip", "install", "--disable-pip-version-check", "-r", self.requirements],
                       (0.1, 0.95), "Installing the worker's packages")
            self._install_model(py)
            worker_session.shutdown_client()  # the next job starts the new environment's worker
            if os.path.isdir(self.target):
                shutil.rmtree(self.target)
            os.replace(self.staging, self.target)
            self.fraction, self.message = 1.0, "Worker environment ready"
        except (SetupError, OSError) as exc:
            self.error = str(exc)
            shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self.done = True


class CADENCE_OT_setup_worker(bpy.types.Operator):
    """Create Cadence's worker environment (a Python venv with torch, PocketSphinx, MediaPipe, …)"""

    bl_idname = "cadence.setup_worker"
    bl_label = "Set up Worker"

    requirements: bpy.props.StringProperty(name="Requirements", default="", options={"HIDDEN", "SKIP_SAVE"},
                                           description="Requirements file (empty: Cadence's worker requirements)")

    _setup: WorkerSetup | None = None
    _timer = None

    def _make(self) -> WorkerSetup:
        return WorkerSetup(worker_venv_dir(), self.requirements or REQUIREMENTS)

    def _report_end(self, setup: WorkerSetup) -> set[str]:
        if setup.error:
            self.report({"ERROR" if not bpy.app.background else "WARNING"},
                        f"{setup.error} (details in the console)")
            print("\n".join(setup.tail), file=sys.stderr)
            return {"CANCELLED"}
        if setup.warning:
            self.report({"WARNING"}, f"Cadence worker environment ready in {setup.target}, but {setup.warning}")
            return {"FINISHED"}
        self.report({"INFO"}, f"Cadence worker environment ready in {setup.target}")
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        setup = self._make()
        setup.start()
        setup.wait()
        return self._report_end(setup)

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        self._setup = self._make()
        self._setup.start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event) -> set[str]:
        setup = self._setup
        if event.type == "ESC":
            setup.cancel()
        if event.type != "TIMER" and not setup.done:
            return {"PASS_THROUGH"}
        context.window_manager.progress_update(int(100 * setup.fraction))
        context.workspace.status_text_set(f"Cadence: {setup.message} ({100 * setup.fraction:.0f} %) — Esc cancels")
        if not setup.done:
            return {"PASS_THROUGH"}
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        context.workspace.status_text_set(None)
        return self._report_end(setup)


classes = (CADENCE_OT_setup_worker,)
