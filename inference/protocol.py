"""The one module both processes share: the animation-channel layout (and, later, worker messages).

Pure numpy + stdlib: it is imported inside Blender's Python and inside the worker.
Channels are time samples at ``fps`` starting at t = 0; where they land on Blender's timeline
(the start frame) is the Blender side's business.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

CHANNELS_VERSION = 1

# Group name -> per-frame trailing shape ("E" = the head's expression count).
GROUP_SHAPES: dict[str, tuple] = {
    "expression": ("E",),
    "jaw": (3,),  # axis-angle, jaw joint
    "neck": (3,),  # axis-angle, neck joint
    "head_rotation": (3,),  # axis-angle, root (global) joint
    "head_translation": (3,),  # metres, model axes
    "eyes": (2, 3),  # axis-angle, [left, right] eye joints
    "eyelids": (2,),  # blink amount 0..1, [left, right]
}
GROUPS: tuple[str, ...] = tuple(GROUP_SHAPES)

# Expression components that the eyelid channel drives when a head has them.
EYELID_COMPONENTS = ("eyeBlink_L", "eyeBlink_R")


class ChannelError(ValueError):
    """A channel set or file that does not follow the layout."""


@dataclass
class Channels:
    """Per-frame animation of one take. A group left as None was not produced (keep what is there)."""

    fps: float
    n_frames: int
    expr_names: tuple[str, ...] = ()
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fps = float(self.fps)
        self.n_frames = int(self.n_frames)
        self.expr_names = tuple(self.expr_names)
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ChannelError(f"fps must be a positive number, got {self.fps!r}")
        if self.n_frames < 0:
            raise ChannelError("n_frames must be >= 0")
        for name, arr in list(self.groups.items()):
            self.groups[name] = self._check(name, arr)

    def _check(self, name: str, arr: np.ndarray) -> np.ndarray:
        if name not in GROUP_SHAPES:
            raise ChannelError(f"unknown channel group {name!r} (known: {', '.join(GROUPS)})")
        arr = np.asarray(arr, dtype=np.float64)
        trailing = tuple(len(self.expr_names) if d == "E" else d for d in GROUP_SHAPES[name])
        if arr.shape != (self.n_frames, *trailing):
            raise ChannelError(
                f"channel {name!r} has shape {arr.shape}, expected {(self.n_frames, *trailing)}"
            )
        if not np.all(np.isfinite(arr)):
            raise ChannelError(f"channel {name!r} contains NaN or infinite values")
        return arr

    def set(self, name: str, arr: np.ndarray) -> None:
        self.groups[name] = self._check(name, arr)

    def frames(self, start: int, stop: int) -> Channels:
        """Frames [start, stop) as a take of their own (same fps, names and meta)."""
        start, stop = max(0, int(start)), min(self.n_frames, int(stop))
        return Channels(self.fps, max(0, stop - start), self.expr_names,
                        {k: v[start:stop].copy() for k, v in self.groups.items()}, dict(self.meta))

    def get(self, name: str) -> np.ndarray | None:
        return self.groups.get(name)

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    def save(self, path: str | os.PathLike) -> None:
        arrays = {f"g_{k}": v for k, v in self.groups.items()}
        header = {
            "version": CHANNELS_VERSION,
            "fps": self.fps,
            "n_frames": self.n_frames,
            "expr_names": list(self.expr_names),
            "meta": self.meta,
        }
        with open(path, "wb") as fh:
            np.savez(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Channels:
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                groups = {k[2:]: z[k] for k in z.files if k.startswith("g_")}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise ChannelError(f"{os.fspath(path)!r} is not a Cadence channel file: {exc}") from exc
        if header.get("version") != CHANNELS_VERSION:
            raise ChannelError(
                f"channel file version {header.get('version')!r} is not supported "
                f"(this Cadence reads version {CHANNELS_VERSION})"
            )
        return cls(
            fps=header["fps"],
            n_frames=header["n_frames"],
            expr_names=tuple(header["expr_names"]),
            groups=groups,
            meta=header.get("meta", {}),
        )


# ---------------------------------------------------------------------------------------------
# Worker messages: one JSON object per line on the worker's stdin (requests) and stdout (replies).
# Large arrays never travel inline: a job writes them to .npz files and names the paths in `data`.
# ---------------------------------------------------------------------------------------------

PROTOCOL_VERSION = 1
# The extension's version; the worker and the add-on ship in one tree (a test checks the manifest).
CADENCE_VERSION = "0.1.0"

REQUEST_TYPES = ("job", "cancel", "shutdown", "heartbeat")
REPLY_TYPES = ("hello", "progress", "result", "error", "log", "alive")
# Error codes: why a job ended without a result (the client adds "worker_died" and "timeout").
ERROR_CODES = ("failed", "cancelled", "unknown_kind", "unavailable", "bad_request", "worker_died", "timeout")

_ID = (str,)
_OPT_ID = (str, type(None))
_NUM = (int, float)
# Required fields (name -> accepted types) per message type; extra fields are allowed.
_FIELDS: dict[str, dict[str, tuple]] = {
    "hello": {"protocol": (int,), "cadence": (str,), "pid": (int,), "python": (str,)},
    "job": {"id": _ID, "kind": (str,), "params": (dict,)},
    "cancel": {"id": _ID},
    "shutdown": {},
    "heartbeat": {},  # answered with "alive" by the worker's reader thread, even while a job runs
    "alive": {},
    "progress": {"id": _ID, "fraction": _NUM, "message": (str,)},
    "result": {"id": _ID, "data": (dict,)},
    "error": {"id": _OPT_ID, "message": (str,), "traceback": (str,), "code": (str,)},
    "log": {"id": _OPT_ID, "level": (str,), "message": (str,)},
}


class ProtocolError(ValueError):
    """A line that is not a valid Cadence worker message."""


def validate(msg: object) -> dict:
    """Return ``msg`` if it is a well-formed message, else raise ProtocolError saying what is wrong."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown message type {kind!r} (known: {', '.join(_FIELDS)})")
    for name, types in _FIELDS[kind].items():
        if name not in msg:
            raise ProtocolError(f"{kind!r} message lacks the field {name!r}")
        value = msg[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ProtocolError(f"{kind!r} field {name!r} has the wrong type ({type(value).__name__})")
    return msg


def _json_default(obj: object) -> object:
    # Results may carry numpy scalars or small arrays; anything large belongs in an .npz file.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} cannot be sent to or from the worker")


def encode(msg: dict) -> bytes:
    """One validated message as a UTF-8 JSON line (newline included)."""
    validate(msg)
    return (json.dumps(msg, default=_json_default, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def decode(line: bytes | str) -> dict:
    """Parse and validate one line; raises ProtocolError for anything else."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON ({exc.msg} at column {exc.colno}): {line[:80]!r}") from exc
    return validate(msg)


def hello(pid: int, python: str, **info: object) -> dict:
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "cadence": CADENCE_VERSION, "pid": pid,
            "python": python, **info}


def job(job_id: str, kind: str, params: dict | None = None) -> dict:
    return {"type": "job", "id": job_id, "kind": kind, "params": dict(params or {})}


def cancel(job_id: str) -> dict:
    return {"type": "cancel", "id": job_id}


def shutdown() -> dict:
    return {"type": "shutdown"}


def heartbeat() -> dict:
    return {"type": "heartbeat"}


def alive() -> dict:
    return {"type": "alive"}


def progress(job_id: str, fraction: float, message: str = "") -> dict:
    fraction = float(fraction)
    fraction = min(max(fraction, 0.0), 1.0) if np.isfinite(fraction) else 0.0
    return {"type": "progress", "id": job_id, "fraction": fraction, "message": str(message)}


def result(job_id: str, data: dict | None = None) -> dict:
    return {"type": "result", "id": job_id, "data": dict(data or {})}


def error(job_id: str | None, message: str, traceback: str = "", code: str = "failed") -> dict:
    return {"type": "error", "id": job_id, "message": str(message), "traceback": str(traceback), "code": code}


def log(message: str, job_id: str | None = None, level: str = "info") -> dict:
    return {"type": "log", "id": job_id, "level": level, "message": str(message)}


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> str:
    """Write arrays for a reply (no pickles: either side may load it) and return the path as str."""
    with open(path, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return os.fspath(path)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an .npz named in a reply into memory (the worker may delete it later)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"cannot read the worker's array file {os.fspath(path)!r}: {exc}") from exc


def name_key(name: str) -> str:
    """The tolerant form of a blendshape name (both worlds match ARKit names with it): lower case, no
    separators, L / R spelled left / right, so ``mouthSmile_L`` = ``mouthSmileLeft``."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", re.sub(r"[^A-Za-z0-9]+", " ", str(name)))
    side = {"l": "left", "r": "right"}
    return "".join(side.get(w.lower(), w.lower()) for w in words)
