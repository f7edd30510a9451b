"""Soft per-vertex region masks shared by skinning, expressions and the identity basis."""

from __future__ import annotations

import numpy as np

from . import anatomy as A
from .geometry import Geometry


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def bump(p: np.ndarray, center, radii) -> np.ndarray:
    """Compactly supported smooth bump: 1 at ``center``, 0 outside the ellipsoid ``radii``."""
    q = (p - np.asarray(center, dtype=np.float64)) / np.asarray(radii, dtype=np.float64)
    return (1.0 - np.clip(np.einsum("ij,ij->i", q, q), 0.0, 1.0)) ** 2


def mirror(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float64) * np.array([-1.0, 1.0, 1.0])


def lip_coordinates(g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per vertex: signed distance from the lip line (m, + above) and upper-lip-ness in [0, 1].

    On the slit and inside the mouth bag the side is exact (the doubled vertices), so fields can part
    the lips; away from the slit the side blends smoothly so the skin never tears.
    """
    V = g.verts.shape[0]
    s = np.zeros(V)
    up = np.full(V, 0.5)
    n = g.n_skin
    r = np.linalg.norm(g.verts[:n] - A.CENTER, axis=1)
    s[:n] = (g.skin_phi - g.line_phi) * r
    lateral = np.maximum(np.abs(g.grid.v_theta) - A.MOUTH_THETA, 0.0) * 0.09  # metres past the corner
    width = 1e-4 + 0.8 * lateral
    up[:n] = smoothstep(-width, width, s[:n])
    side = g.grid.v_side
    on_mouth = np.zeros(n, dtype=bool)
    ms = g.grid.slits["mouth"]
    on_mouth[ms.upper] = True
    on_mouth[ms.lower] = True
    up[:n][on_mouth] = (side[on_mouth] > 0).astype(np.float64)
    up[g.mouth_bag_ids] = np.where(g.mouth_bag_side > 0, 1.0, np.where(g.mouth_bag_side < 0, 0.0, 0.5))
    s[g.mouth_bag_ids] = 0.0
    return s, up


def mouth_mask(p: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Soft mask over the lips and the skin around them."""
    c = A.STOMION + np.array([0.0, 0.0, -0.01])
    return bump(p, c, np.array([A.MOUTH_HALF_WIDTH + 0.017, 0.026, 0.045]) * scale)


def eyeball_mask(g: Geometry) -> np.ndarray:
    m = np.zeros(g.verts.shape[0], dtype=bool)
    for ids in g.eyeball_ids.values():
        m[ids] = True
    return m
