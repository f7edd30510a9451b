"""The worker's job registry, the context a job runs with, and the built-in jobs.

A job is ``handler(params: dict, ctx: JobContext) -> dict``, registered with ``@register_job("kind")``
in its own module, listed in ``JOB_MODULES``. Modules are imported lazily, on the first job of one
of their kinds, so that the worker starts fast and a broken module only breaks its own kinds.
Handlers raise ``JobError`` for problems the user can fix (its message is shown as is).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable

from .. import protocol

Handler = Callable[[dict, "JobContext"], dict]

# Job module -> the kinds it registers (so an import failure is reported for exactly those kinds).
# Add your module here; it is imported on the first job of one of its kinds.
JOB_MODULES: dict[str, tuple[str, ...]] = {
    "inference.worker.generate": ("generate",),
    "inference.worker.track": ("track", "check_video"),
    "inference.jobs_train": ("train",),
    "inference.worker.personalize": ("personalize",),
    "inference.worker.refiner": ("train_refiner", "refine_video"),
    "inference.worker.landmarks": ("detect_landmarks",),
}

_REGISTRY: dict[str, Handler] = {}
_FAILED: dict[str, str] = {}  # module -> "ExcType: message" of a real import error inside it
_TRIED: set[str] = set()


class JobError(Exception):
    """A job failed for a reason the user can act on; the message is shown to them as is."""


class JobCancelled(Exception):
    """The job was cancelled (raised by JobContext.check_cancelled / progress)."""


class UnknownJobError(JobError):
    """No job of that kind exists."""

    code = "unknown_kind"


class JobUnavailable(JobError):
    """The module that provides this kind of job failed to import."""

    code = "unavailable"


def register_job(name: str) -> Callable[[Handler], Handler]:
    """Decorator: register ``handler(params, ctx) -> dict`` as the job ``name``."""

    def decorate(fn: Handler) -> Handler:
        old = _REGISTRY.get(name)
        if old is not None and getattr(old, "__qualname__", None) != fn.__qualname__:
            raise ValueError(f"job kind {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        _REGISTRY[name] = fn
        return fn

    return decorate


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


def _import_job_module(module: str) -> None:
    if module in _TRIED:
        return
    _TRIED.add(module)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:  # not written yet: nothing to report beyond the log
            print(f"[cadence-worker] job module {module} is not present", file=sys.stderr)
            return
        _FAILED[module] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - any error inside the module makes its kinds unavailable
        _FAILED[module] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)


def load_builtin_jobs() -> dict[str, str]:
    """Import every known job module; returns {module: error} for modules that exist but fail to import."""
    for module in JOB_MODULES:
        _import_job_module(module)
    return dict(_FAILED)


def get_handler(kind: str) -> Handler:
    """The handler for ``kind``, importing its module if needed; raises UnknownJobError / JobUnavailable."""
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    owners = [m for m, kinds in JOB_MODULES.items() if kind in kinds]
    for module in owners or list(JOB_MODULES):
        _import_job_module(module)
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    broken = {m: e for m, e in _FAILED.items() if not owners or m in owners}
    if broken:
        detail = "; ".join(f"{m}: {e}" for m, e in broken.items())
        raise JobUnavailable(
            f"The worker cannot run {kind!r} jobs because a module failed to load ({detail}). "
            "Check the worker's Python environment (Preferences > Cadence > Check worker)."
        )
    raise UnknownJobError(f"Unknown job kind {kind!r} (this worker knows: {', '.join(registered_kinds())})")


class JobContext:
    """What a running job may do: report progress, notice cancellation, write output files, log."""

    # At most this many progress messages per second (jobs may call progress() every frame).
    _MIN_INTERVAL = 0.02

    def __init__(self, job_id: str, kind: str, send: Callable[[dict], None], jobs_dir: str) -> None:
        self.job_id = job_id
        self.kind = kind
        self._send = send
        self._jobs_dir = jobs_dir
        self._cancel = threading.Event()
        self._out_dir: str | None = None
        self._last_progress = 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1]; also a cancellation point (raises JobCancelled)."""
        self.check_cancelled()
        now = time.monotonic()
        if now - self._last_progress >= self._MIN_INTERVAL or fraction >= 1.0:
            self._last_progress = now
            self._send(protocol.progress(self.job_id, fraction, message))

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled(f"{self.kind} was cancelled")

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def out_dir(self) -> str:
        """A folder of this job's own for .npz outputs (kept while the worker runs a few more jobs)."""
        if self._out_dir is None:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.job_id)[:64] or "job"
            self._out_dir = os.path.join(self._jobs_dir, safe)
            os.makedirs(self._out_dir, exist_ok=True)
        return self._out_dir

    def out_path(self, name: str) -> str:
        return os.path.join(self.out_dir, name)

    def log(self, msg: str, level: str = "info") -> None:
        self._send(protocol.log(msg, self.job_id, level))


# ----------------------------------------------------------------------------------- built-ins


def _version_of(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@register_job("ping")
def ping(params: dict, ctx: JobContext) -> dict:
    """Versions of the worker's stack. ``deep=True`` imports torch to report CUDA (takes seconds)."""
    import numpy

    info = {
        "cadence": protocol.CADENCE_VERSION,
        "protocol": protocol.PROTOCOL_VERSION,
        "python": platform.python_version(),
        "executable": sys.executable,
        "numpy": numpy.__version__,
        "torch": _version_of("torch"),
        "librosa": _version_of("librosa"),
        "jobs": registered_kinds(),
    }
    if params.get("deep"):
        load_builtin_jobs()
        info["jobs"] = registered_kinds()
        info["unavailable"] = dict(_FAILED)
        try:
            import torch

            info["torch"] = torch.__version__
            info["cuda"] = bool(torch.cuda.is_available())
            info["device"] = torch.cuda.get_device_name(0) if info["cuda"] else "cpu"
        except Exception as exc:  # noqa: BLE001 - reported, not fatal: the lip engine needs no torch
            info["torch"] = None
            info["torch_error"] = f"{type(exc).__name__}: {exc}"
    return info


@register_job("sleep")
def sleep(params: dict, ctx: JobContext) -> dict:
    """For tests: wait ``seconds``, reporting progress every 0.05 s; cancellable unless ``stubborn``."""
    seconds = float(params.get("seconds", 1.0))
    if not seconds >= 0:
        raise JobError(f"seconds must be >= 0, got {params.get('seconds')!r}")
    if params.get("stubborn"):  # like a long native call that never checks for cancellation
        ctx.progress(0.0, "sleeping without checking for cancellation")
        time.sleep(seconds)
        return {"slept": seconds, "steps": 0}
    start = time.monotonic()
    step = 0
    while (elapsed := time.monotonic() - start) < seconds:
        ctx.progress(elapsed / seconds if seconds else 1.0, f"step {step}")
        step += 1
        time.sleep(min(0.05, max(seconds - elapsed, 0.0)))
    ctx.progress(1.0, "done")
    return {"slept": time.monotonic() - start, "steps": step}


@register_job("fail")
def fail(params: dict, ctx: JobContext) -> dict:
    """For tests: raise (a JobError when ``user=True``, else an unexpected exception)."""
    message = str(params.get("message", "failing on purpose"))
    if params.get("user"):
        raise JobError(message)
    raise RuntimeError(message)


@register_job("echo")
def echo(params: dict, ctx: JobContext) -> dict:
    """For tests: chatter on stdout (Python and C level), log, and return params plus an .npz if asked."""
    print("echo: a library printing to stdout")
    os.write(1, b"echo: a C library writing to fd 1\n")
    ctx.log("echo ran")
    data = {"params": params}
    if "array" in params:
        import numpy

        data["file"] = protocol.save_arrays(ctx.out_path("echo.npz"), array=numpy.asarray(params["array"]))
    return data
