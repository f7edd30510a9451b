"""The one module both processes share: the animation-channel layout (and, later, worker messages).

Pure numpy + stdlib: it is imported inside Blender's Python and inside the worker.
Channels are time samples at ``fps`` starting at t = 0; where they land on Blender's timeline
(the start frame) is the Blender side's business.
"""

from __future__ import annotations

import json
import os
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
