"""The one worker this Blender session shares: which Python runs it (the preference, else Cadence's own
environments), starting it on first use, restarting it when it died or the preference changed, and
stopping it (unregister, Blender's exit, Set up Worker)."""

from __future__ import annotations

import atexit
import os
import sys
import threading

from .client import EXT_DIR, SETUP_HINT, WorkerClient, WorkerError

_client: WorkerClient | None = None
_client_lock = threading.Lock()
_atexit_registered = False


def _venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if sys.platform == "win32" else os.path.join(venv, "bin", "python")


def default_pythons() -> list[str]:
    """Where the worker's Python is looked for when the preference is empty, in order."""
    from ..prefs import ADDON_ID

    candidates = [_venv_python(os.path.join(EXT_DIR, ".venv"))]  # development / CI checkout
    try:
        import bpy

        candidates.append(_venv_python(bpy.utils.extension_path_user(ADDON_ID, path="worker-venv")))
    except (ValueError, AttributeError, ImportError):  # not installed as an extension
        pass
    return candidates


def resolve_python(context=None) -> str:
    """The worker Python from the preferences (empty: the first existing default); raises WorkerError."""
    from ..paths import user_path
    from ..prefs import get_preferences

    prefs = get_preferences(context)
    configured = user_path(prefs.worker_python) if prefs else ""
    if configured:
        if not os.path.isfile(configured):
            raise WorkerError(f"The Worker Python set in Cadence's preferences does not exist: {configured}. "
                              f"To fix it, {SETUP_HINT}.", code="missing")
        return configured
    for candidate in default_pythons():
        if os.path.isfile(candidate):
            return candidate
    raise WorkerError(f"Cadence's worker is not set up (no Python at {' or '.join(default_pythons())}). "
                      f"To fix it, {SETUP_HINT}.", code="missing")


def get_client(context=None) -> WorkerClient:
    """The shared worker client, started on first use and restarted if it died or the preference changed."""
    global _client, _atexit_registered
    from ..prefs import cache_dir

    python = resolve_python(context)
    with _client_lock:
        if _client is None:
            _client = WorkerClient()
        if not _atexit_registered:
            atexit.register(shutdown_client)
            _atexit_registered = True
        if not (_client.is_alive() and _client.python == python):
            _client.start(python, cache_dir(context))
        return _client


def current_client() -> WorkerClient | None:
    """The shared client if one was created (never starts a worker)."""
    return _client


def shutdown_client() -> None:
    """Stop the shared worker (unregister, Blender exit)."""
    global _client
    with _client_lock:
        client, _client = _client, None
    if client is not None:
        client.stop(timeout=2.0)
