"""The machinery every worker-backed operator shares (generate, track, personalize).

`WorkerJob` holds one request from submission to its result; subclasses validate the request up
front and implement `apply()`, which changes the scene only once the whole result is valid. A job may
first need work in Blender (``prepare``: a generator of steps, e.g. calibrating a head's landmarks the
first time it is tracked: minutes of renders); the modal path runs it a slice per timer tick, so the UI
stays responsive, shows its progress and Esc stops it.
`ModalJobOperator` is the operator mixin: ``execute()`` drives the job synchronously (scripts,
background mode: errors are reported as warnings and ``{'CANCELLED'}`` is returned, the message in
``scene.cadence.last_error``), ``invoke()`` polls it from a timer with progress and Esc to cancel.
"""

from __future__ import annotations

import time
from collections.abc import Generator

import bpy

from ..keys import keyframes
from ..rig import build as rig_mod
from . import client as worker_client
from . import session as worker_session


class JobFailed(RuntimeError):
    """A problem the user can act on; the message is shown as is."""


class WorkerJob:
    """One worker request: submit, follow progress events, keep the result or the error."""

    kind = ""
    error_type: type[Exception] = JobFailed

    def __init__(self, context: bpy.types.Context, params: dict, prepare: Generator | None = None):
        self.params = params
        # Steps to run in Blender before submitting: yield (fraction, message); their result (a dict) is added
        # to ``params``. Exceptions from it are the job's errors.
        self.prepare = prepare
        self.scene_name = context.scene.name
        self.client = worker_session.get_client(context)
        self.job_id: str | None = None
        self.fraction, self.message = 0.0, "Starting"
        self.result: dict | None = None
        self.error: str | None = None

    def submit(self) -> None:
        self.job_id = self.client.submit(self.kind, self.params)

    def start(self, budget_s: float | None = None) -> bool:
        """Advance the preparation for about ``budget_s`` seconds (all of it when None), then submit; True once
        submitted."""
        if self.job_id is not None:
            return True
        t0 = time.monotonic()
        while self.prepare is not None:
            try:
                self.fraction, self.message = next(self.prepare)
            except StopIteration as stop:
                self.prepare = None
                self.params.update(stop.value or {})
                self.fraction, self.message = 0.0, "Starting"
                break
            if budget_s is not None and time.monotonic() - t0 >= budget_s:
                return False
        self.submit()
        return True

    def poll(self) -> bool:
        """Process worker events; True once the job has ended (result or error)."""
        for event in self.client.poll(self.job_id):
            kind = event.get("type")
            if kind == "progress":
                self.fraction = float(event.get("fraction", self.fraction))
                self.message = event.get("message", self.message)
            elif kind == "result":
                self.result = event.get("data", {})
            elif kind == "error":
                self.error = event.get("message", "The worker reported an error")
        if self.result is None and self.error is None:
            if self.client.hung():
                self.error = worker_client.HUNG_MESSAGE.format(kind=self.kind, s=worker_client.STALL_S,
                                                               log=self.client.log_path)
            elif not self.client.is_alive():
                self.error = "The Cadence worker stopped unexpectedly; nothing was changed. Try again."
        return self.result is not None or self.error is not None

    def cancel(self) -> None:
        if self.prepare is not None:
            self.prepare.close()  # its temporary scenes and files are removed
            self.prepare = None
        if self.job_id is not None:
            self.client.cancel(self.job_id)

    def run_sync(self, timeout: float | None = None) -> None:
        self.start()
        start = time.monotonic()
        while not self.poll():
            if timeout is not None and time.monotonic() - start > timeout:
                self.cancel()
                raise self.error_type(f"{self.kind} took longer than {timeout:.0f} s and was cancelled")
            time.sleep(0.05)

    def checked_result(self) -> dict:
        if self.error is not None:
            raise self.error_type(self.error)
        return self.result or {}

    def apply(self) -> dict:
        raise NotImplementedError


class ModalJobOperator:
    """execute() = synchronous path, invoke() = modal path with progress and Esc (mixin for operators)."""

    _job: WorkerJob | None = None
    _timer = None
    errors: tuple = (JobFailed,)  # user-facing errors of the operator (shown as is)
    verb = "The job"

    def make_job(self, context: bpy.types.Context) -> WorkerJob:
        raise NotImplementedError

    def done_message(self, report: dict) -> str:
        raise NotImplementedError

    def _fail(self, context, message: str, level: str = "ERROR") -> set[str]:
        context.scene.cadence.last_error = message
        context.scene.cadence.running = False
        self.report({level}, message)
        return {"CANCELLED"}

    def _finish(self, context, job: WorkerJob, level: str = "ERROR") -> set[str]:
        try:
            report = job.apply()
        except (*self.errors, keyframes.KeyframeError, rig_mod.RigError) as exc:
            return self._fail(context, str(exc), level)
        settings = context.scene.cadence
        settings.last_error, settings.running, settings.progress = "", False, 1.0
        settings.status = self.done_message(report)
        self.report({"INFO"}, settings.status)
        for warning in report.get("warnings", [])[:3]:
            self.report({"WARNING"}, warning)
        return {"FINISHED"}

    def execute(self, context) -> set[str]:
        # An ERROR report would raise in a script's caller: warn and return {'CANCELLED'} instead;
        # the message is in scene.cadence.last_error.
        try:
            job = self.make_job(context)
            job.run_sync()
        except (*self.errors, worker_client.WorkerError) as exc:
            return self._fail(context, str(exc), level="WARNING")
        return self._finish(context, job, level="WARNING")

    def invoke(self, context, event) -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        try:
            self._job = self.make_job(context)
            self._job.start(budget_s=0.0)
        except (*self.errors, worker_client.WorkerError) as exc:
            return self._fail(context, str(exc))
        settings = context.scene.cadence
        settings.running, settings.progress, settings.status, settings.last_error = True, 0.0, "Starting", ""
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context, event) -> set[str]:
        job = self._job
        if event.type == "ESC":
            job.cancel()
            self._end_modal(context)
            context.scene.cadence.status = "Cancelled"
            self.report({"WARNING"}, f"{self.verb} cancelled; nothing was changed")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            done = job.start(budget_s=0.08) and job.poll()
        except (*self.errors, worker_client.WorkerError) as exc:
            self._end_modal(context)
            return self._fail(context, str(exc))
        settings = context.scene.cadence
        settings.progress, settings.status = job.fraction, job.message
        context.window_manager.progress_update(int(100 * job.fraction))
        for area in context.screen.areas if context.screen else ():
            if area.type == "VIEW_3D":
                area.tag_redraw()
        if not done:
            return {"PASS_THROUGH"}
        self._end_modal(context)
        return self._finish(context, job)

    def _end_modal(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        context.scene.cadence.running = False
