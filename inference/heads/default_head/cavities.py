"""Closed cavities behind the slits (mouth bag, eye cups) and the eyeballs.

The skin, the mouth bag and the two eye cups form one closed, consistently wound surface, so the
head is never see-through when the lips or lids part; each eyeball is its own closed sphere.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as A
from .grid import SkinGrid, Slit

MOUTH_DEPTHS = (0.003, 0.009, 0.018, 0.029, 0.040, 0.048)
MOUTH_OPEN = (0.0022, 0.0065, 0.0115, 0.0150, 0.0150, 0.0110)
MOUTH_NARROW = (0.02, 0.06, 0.12, 0.18, 0.26, 0.36)
CUP_STEPS = (0.10, 0.30, 0.55, 0.80)


def boundary_loop(grid: SkinGrid, s: Slit) -> tuple[np.ndarray, np.ndarray]:
    """Vertex ids around a slit hole in bag winding order, and each one's side (+1 up, -1 low, 0 corner)."""
    lo, hi = grid.vid(s.row, s.corner_lo), grid.vid(s.row, s.corner_hi)
    ids = np.concatenate([[lo], s.lower, [hi], s.upper[::-1]]).astype(np.int64)
    side = np.concatenate([[0], -np.ones(len(s.lower)), [0], np.ones(len(s.upper))]).astype(np.int64)
    return ids, side


def tube_faces(loops: list[np.ndarray], cap: int) -> np.ndarray:
    """Triangles joining consecutive equal-length loops, closed by a fan to ``cap``."""
    faces = []
    for a, b in zip(loops[:-1], loops[1:]):
        m = len(a)
        for i in range(m):
            j = (i + 1) % m
            faces += [(a[i], a[j], b[j]), (a[i], b[j], b[i])]
    last = loops[-1]
    for i in range(len(last)):
        faces.append((last[i], last[(i + 1) % len(last)], cap))
    return np.array(faces, dtype=np.int64)


def mouth_bag(boundary: np.ndarray, side: np.ndarray, first_id: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Positions of the mouth bag's loops + cap (behind the lips) for boundary positions (M, 3)."""
    xs = boundary[:, 0]
    t = np.clip(np.abs(xs) / max(np.abs(xs).max(), 1e-6), 0, 1)
    height = np.sqrt(np.clip(1 - t**2, 0, 1))
    pts, loops = [], []
    nid = first_id
    for depth, op, nar in zip(MOUTH_DEPTHS, MOUTH_OPEN, MOUTH_NARROW):
        p = boundary.copy()
        p[:, 0] *= 1.0 - nar
        p[:, 1] += side * op * height + 0.0
        p[:, 2] -= depth + 0.004 * t**2 * 0  # depth measured from each lip point
        pts.append(p)
        loops.append(np.arange(nid, nid + len(p)))
        nid += len(p)
    cap = boundary.mean(axis=0) + np.array([0.0, 0.0, -MOUTH_DEPTHS[-1] - 0.006])
    pts.append(cap[None])
    return np.concatenate(pts), loops, nid


def eye_cup(boundary: np.ndarray, center: np.ndarray, first_id: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Socket lining behind the eyeball: loops on a sphere slerped from the lid margins to the back pole."""
    u = boundary - center
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    back = np.array([0.0, 0.0, -1.0])
    ang = np.arccos(np.clip(u @ back, -1, 1))
    pts, loops = [], []
    nid = first_id
    for t in CUP_STEPS:
        a = ang * t
        w = np.sin(ang - a)[:, None] * u + np.sin(a)[:, None] * back
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        pts.append(center + A.CUP_RADIUS * w)
        loops.append(np.arange(nid, nid + len(u)))
        nid += len(u)
    pts.append((center + A.CUP_RADIUS * back)[None])
    return np.concatenate(pts), loops, nid


def eyeball(center: np.ndarray, first_id: int, rows: int = 12, cols: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere with its poles on the gaze axis (+Z): front pole = cornea apex (iris centre)."""
    el = np.linspace(-np.pi / 2, np.pi / 2, rows + 1)[1:-1]
    az = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    E, Z = np.meshgrid(el, az, indexing="ij")
    # Gaze-aligned sphere: "elevation" measured from the back pole (-Z) to the front pole (+Z).
    ring = np.stack([np.cos(E) * np.cos(Z), np.cos(E) * np.sin(Z), np.sin(E)], -1).reshape(-1, 3)
    pts = np.concatenate([[[0, 0, -1.0]], ring, [[0, 0, 1.0]]]) * A.EYE_RADIUS + center
    back, front = first_id, first_id + 1 + ring.shape[0]
    vid = lambda r, c: first_id + 1 + r * cols + c % cols  # noqa: E731
    faces = []
    for r in range(rows - 2):
        for c in range(cols):
            a, b, d, e = vid(r, c), vid(r, c + 1), vid(r + 1, c), vid(r + 1, c + 1)
            faces += [(a, b, e), (a, e, d)]
    for c in range(cols):
        faces.append((back, vid(0, c + 1), vid(0, c)))
        faces.append((front, vid(rows - 2, c), vid(rows - 2, c + 1)))
    return pts, np.array(faces, dtype=np.int64)
