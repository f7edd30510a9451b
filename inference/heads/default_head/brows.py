"""Eyebrows: a thin closed slab per brow, laid on the skin where the brow landmarks are.

A face without brows is hard to read, for people and for landmark detectors alike: on a bald brow
ridge MediaPipe places its brow points from the eyes and barely follows a raised brow. Each slab
vertex is attached to a point of a skin triangle (barycentric), and its rig data (skinning weights,
expression and identity fields) are interpolated from that triangle, so the brows ride the skin.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as A

# The brow's centre line, from the inner end (f = 0) to the tail (f = 1), and its upper / lower edges.
BROW_UP, BROW_DOWN = 0.0044, 0.0044
ALONG, ACROSS = 18, 4  # slab quads along and across a brow
LIFT, SINK = 0.0006, 0.0003  # slab top above the skin, slab bottom below it (m)


def brow_line(f: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(|x|, y) of the brow's centre line at fraction f from the inner end to the tail (front view).

    Set from MediaPipe's canonical face and the real speaker of the fixture clips (scaled to this head's
    64 mm eye spacing): the inner end ~13 mm above the eye centre, the arch ~19 mm, the tail ~11 mm.
    """
    f = np.asarray(f, dtype=np.float64)
    x = 0.013 + f * 0.043
    y = A.EYE_L[1] + 0.0128 + 0.0063 * np.sin(np.pi * np.clip(f, 0, 1) ** 0.8) - 0.0019 * f
    return x, y


def brow_edges(f: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(above, below) the centre line at fraction f: a full head (~9 mm) tapering to a ~4 mm tail."""
    f = np.asarray(f, dtype=np.float64)
    top = BROW_UP * (1.0 - 0.45 * np.clip((f - 0.45) / 0.55, 0, 1) ** 1.2)
    bottom = BROW_DOWN * (1.0 - 0.45 * np.clip((f - 0.3) / 0.7, 0, 1))
    return top, bottom


def ray_front(verts: np.ndarray, faces: np.ndarray, x: float, y: float) -> tuple[int, np.ndarray]:
    """Front-most hit of the ray (x, y, +inf) -> -Z: (face index, barycentric)."""
    tri = verts[faces]
    lo, hi = tri[:, :, :2].min(1), tri[:, :, :2].max(1)
    cand = np.flatnonzero((lo[:, 0] <= x) & (hi[:, 0] >= x) & (lo[:, 1] <= y) & (hi[:, 1] >= y))
    best, best_z, best_b = -1, -np.inf, None
    for f in cand:
        a, b, c = tri[f, :, :2]
        m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
        if abs(np.linalg.det(m)) < 1e-14:
            continue
        u, v = np.linalg.solve(m, np.array([x - a[0], y - a[1]]))
        if u < -1e-9 or v < -1e-9 or u + v > 1 + 1e-9:
            continue
        bary = np.array([1 - u - v, u, v])
        z = bary @ tri[f, :, 2]
        if z > best_z:
            best, best_z, best_b = f, z, bary
    if best < 0:
        raise RuntimeError(f"default head: ray at ({x:.4f}, {y:.4f}) missed the face")
    return int(best), best_b


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for i in range(3):
        np.add.at(n, f[:, i], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _outline(sign: float) -> np.ndarray:
    """(ALONG+1, ACROSS+1, 2) front-view grid of one brow: full at the head, tapering to the tail."""
    f = np.linspace(-0.02, 1.04, ALONG + 1)
    x, y = brow_line(f)
    top, bottom = brow_edges(f)
    head = 0.3 + 0.7 * np.clip((f + 0.02) / 0.06, 0, 1) ** 0.5  # a rounded inner end
    t = np.linspace(0.0, 1.0, ACROSS + 1)
    ys = (y - bottom * head)[:, None] + ((top + bottom) * head)[:, None] * t[None, :]
    xs = np.broadcast_to((sign * x)[:, None], ys.shape)
    return np.stack([xs, ys], axis=-1)


def _grid_faces(idx: np.ndarray, flip: bool) -> list[tuple[int, int, int]]:
    out = []
    for i in range(idx.shape[0] - 1):
        for j in range(idx.shape[1] - 1):
            a, b, c, d = idx[i, j], idx[i + 1, j], idx[i + 1, j + 1], idx[i, j + 1]
            out += [(a, c, b), (a, d, c)] if flip else [(a, b, c), (a, c, d)]
    return out


def brow_slab(skin: np.ndarray, skin_faces: np.ndarray, sign: float, first_id: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One brow (sign +1: the subject's left, +X): (verts, faces, attached skin triangle per vertex (n, 3)
    vertex ids, barycentric weights (n, 3)). Vertices: the top grid, then the bottom grid."""
    grid = _outline(sign)
    normals = vertex_normals(skin, skin_faces)
    shape = grid.shape[:2]
    tris = np.zeros((*shape, 3), dtype=np.int64)
    bary = np.zeros((*shape, 3))
    for i, j in np.ndindex(*shape):
        f, b = ray_front(skin, skin_faces, float(grid[i, j, 0]), float(grid[i, j, 1]))
        tris[i, j], bary[i, j] = skin_faces[f], b
    on_skin = np.einsum("ijk,ijkd->ijd", bary, skin[tris])
    n = np.einsum("ijk,ijkd->ijd", bary, normals[tris])
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    verts = np.concatenate([(on_skin + LIFT * n).reshape(-1, 3), (on_skin - SINK * n).reshape(-1, 3)])
    count = shape[0] * shape[1]
    top = first_id + np.arange(count).reshape(shape)
    bottom = top + count
    # Left brow: i runs to +X and j to +Y, so (i, j) -> (i+1, j) -> (i+1, j+1) faces the viewer (+Z).
    flip = sign < 0
    faces = _grid_faces(top, flip) + _grid_faces(bottom, not flip)
    # Walls: walk the boundary in the top grid's winding order and stitch top to bottom.
    ring = ([top[i, 0] for i in range(shape[0])] + [top[-1, j] for j in range(1, shape[1])]
            + [top[i, -1] for i in range(shape[0] - 2, -1, -1)] + [top[0, j] for j in range(shape[1] - 2, 0, -1)])
    if flip:
        ring = ring[::-1]
    for k in range(len(ring)):
        a, b = ring[k], ring[(k + 1) % len(ring)]
        faces += [(b, a, a + count), (b, a + count, b + count)]
    attach_tris = np.concatenate([tris.reshape(-1, 3)] * 2)
    attach_bary = np.concatenate([bary.reshape(-1, 3)] * 2)
    return verts, np.asarray(faces, dtype=np.int64), attach_tris, attach_bary


def attach(values: np.ndarray, ids: np.ndarray, tris: np.ndarray, bary: np.ndarray) -> None:
    """In place: the rows ``ids`` of a per-vertex array become the barycentric mix of their skin triangle's."""
    values[ids] = np.einsum("nk,nk...->n...", bary, values[tris])
