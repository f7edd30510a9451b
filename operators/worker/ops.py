"""Operators about the worker process itself."""

from __future__ import annotations

import bpy

from . import client as worker_client
from . import session as worker_session

# The last check's outcome, shown in the preferences (one line: it is a status, not a report).
last_check: dict = {"ok": None, "text": ""}


def status_text() -> str:
    """One line for the preferences: is a worker running, and what did the last check say."""
    client = worker_session.current_client()
    running = f"running (pid {client.pid})" if client is not None and client.is_alive() else "not running"
    if last_check["text"]:
        return f"Worker {running}. Last check: {last_check['text']}"
    return f"Worker {running}"


class CADENCE_OT_check_worker(bpy.types.Operator):
    """Start the worker if needed and report the versions of its Python stack"""

    bl_idname = "cadence.check_worker"
    bl_label = "Check Worker"
    bl_options = {"REGISTER"}

    deep: bpy.props.BoolProperty(
        name="Check GPU",
        description="Also import torch to report whether CUDA is available (takes a few seconds)",
        default=True,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            client = worker_session.get_client(context)
            info = client.run_sync("ping", {"deep": self.deep}, timeout=120.0)
        except worker_client.WorkerError as exc:
            last_check.update(ok=False, text=str(exc).splitlines()[0])
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        parts = [f"Cadence {info.get('cadence')}", f"Python {info.get('python')}", f"numpy {info.get('numpy')}"]
        if info.get("torch"):
            device = info.get("device")
            parts.append(f"torch {info['torch']}" + (f" ({device})" if device else ""))
        else:
            parts.append("torch missing" + (f": {info['torch_error']}" if info.get("torch_error") else ""))
        if info.get("unavailable"):
            parts.append("broken job modules: " + ", ".join(info["unavailable"]))
        text = ", ".join(parts)
        last_check.update(ok=not info.get("unavailable"), text=text)
        self.report({"WARNING"} if info.get("unavailable") else {"INFO"}, f"Worker OK: {text}")
        return {"FINISHED"}
