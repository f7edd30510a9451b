"""The worker's log file (the cache folder's ``logs/worker.log``), which Check Worker and error reports point to."""

from __future__ import annotations

import os
import threading


class RotatingLog:
    """Appends lines to a log file, keeping one previous file once it grows past ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int = 2_000_000) -> None:
        self.path, self.max_bytes = path, max_bytes
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(self, line: str) -> None:
        with self._lock:
            try:
                if os.path.exists(self.path) and os.path.getsize(self.path) > self.max_bytes:
                    os.replace(self.path, self.path + ".1")
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line.rstrip("\n") + "\n")
            except OSError:  # a full disk or read-only cache must not break the job itself
                pass
