"""The skin as a signed-distance sculpture, cast radially from ``anatomy.CENTER``.

The head is modelled like a sculptor blocks it in: cranium, face mass, jaw, chin, cheekbones, brow
ridge, nose, sockets with the lids riding on a shell around each eyeball, a neck. Smooth unions give
organic transitions. The skin is star-shaped around the casting centre, so a vertex is the outermost
zero crossing along its casting ray: a grid in (azimuth, elevation) becomes a clean quad mesh.
Lip volume is added afterwards in parameter space so the lip line lies exactly on the mouth slit.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as A


def _ellipsoid(p: np.ndarray, c, r) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid (exact on the surface)."""
    qx, qy, qz = ((p[..., i] - c[i]) / r[i] for i in range(3))
    k0 = np.sqrt(qx * qx + qy * qy + qz * qz)
    k1 = np.sqrt((qx / r[0]) ** 2 + (qy / r[1]) ** 2 + (qz / r[2]) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _sphere(p: np.ndarray, c, r: float) -> np.ndarray:
    return np.sqrt((p[..., 0] - c[0]) ** 2 + (p[..., 1] - c[1]) ** 2 + (p[..., 2] - c[2]) ** 2) - r


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smin(-a, -b, k)


def _capsule(p: np.ndarray, a, b, ra: float, rb: float, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Tapered capsule from a (radius ra) to b (radius rb), in a space squashed by ``scale``."""
    s = np.asarray(scale, dtype=np.float64)
    a, b = np.asarray(a) / s, np.asarray(b) / s
    ab = b - a
    q = [(p[..., i] / s[i] - a[i]) for i in range(3)]
    t = np.clip((q[0] * ab[0] + q[1] * ab[1] + q[2] * ab[2]) / (ab @ ab), 0.0, 1.0)
    d2 = (q[0] - t * ab[0]) ** 2 + (q[1] - t * ab[1]) ** 2 + (q[2] - t * ab[2]) ** 2
    return (np.sqrt(d2) - (ra + (rb - ra) * t)) * s.min()


def _mirror(p: np.ndarray) -> np.ndarray:
    """Fold +X onto -X so paired features are modelled once (on the left, +X)."""
    q = p.copy()
    q[..., 0] = np.abs(q[..., 0])
    return q


def skin_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (approximately metres, negative inside) of the skin at points ``p`` (..., 3)."""
    m = _mirror(p)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    # Cranium, temples (filled, not pinched) and the face mass; the face narrows towards the jaw.
    d = _ellipsoid(p, (0.0, 0.020, -0.008), (0.074, 0.094, 0.096))
    d = _smin(d, _ellipsoid(m, (0.040, 0.030, 0.030), (0.030, 0.034, 0.036)), 0.018)  # temples
    d = _smin(d, _ellipsoid(p, (0.0, -0.012, 0.020), (0.058, 0.070, 0.070)), 0.02)
    # Jaw: a wedge from the angles of the mandible to the chin, a crisp lower border.
    jaw = _capsule(m, (0.047, -0.070, -0.008), (0.014, -0.096, 0.062), 0.015, 0.016)
    d = _smin(d, jaw, 0.022)
    d = _smin(d, _ellipsoid(p, (0.0, -0.097, 0.070), (0.019, 0.018, 0.021)), 0.012)  # chin (mental protuberance)
    d = _smin(d, _ellipsoid(p, (0.0, -0.060, 0.064), (0.031, 0.027, 0.031)), 0.012)  # muzzle (teeth arch)
    # Soft tissue of the mid-face: maxilla under the nose, fat pads of the cheeks (no hollows).
    d = _smin(d, _ellipsoid(p, (0.0, -0.034, 0.070), (0.030, 0.024, 0.028)), 0.014)
    d = _smin(d, _ellipsoid(m, (0.036, -0.030, 0.052), (0.024, 0.030, 0.030)), 0.020)  # buccal mass
    d = _smin(d, _ellipsoid(m, (0.040, -0.058, 0.034), (0.019, 0.024, 0.030)), 0.022)  # lower cheek / masseter
    # Cheekbones (malar fat over the zygoma) and the brow ridge.
    d = _smin(d, _ellipsoid(m, (0.044, -0.006, 0.050), (0.024, 0.017, 0.024)), 0.018)
    d = _smin(d, _ellipsoid(m, (0.030, -0.014, 0.064), (0.016, 0.011, 0.012)), 0.012)  # under-eye fullness
    d = _smin(d, _capsule(m, (0.0, 0.033, 0.080), (0.046, 0.033, 0.061), 0.0080, 0.0055), 0.016)
    d = _smin(d, _ellipsoid(p, (0.0, 0.030, 0.080), (0.014, 0.012, 0.008)), 0.010)  # glabella
    # Eye sockets: a shallow carve, then the lid shell (a sphere around each eyeball) bulges back out.
    d = _smax(d, -_ellipsoid(m, A.EYE_L + np.array([0.0, 0.0005, 0.010]), (0.019, 0.0150, 0.015)), 0.012)
    d = _smin(d, _sphere(m, A.EYE_L, A.LID_SHELL), 0.0040)
    # Nose: bridge, tip (two lobules), alae (nostril wings), columella.
    nose = _capsule(p, (0.0, 0.024, 0.086), (0.0, -0.019, 0.1115), 0.0040, 0.0056, scale=(1.45, 1.0, 1.0))
    nose = _smin(nose, _ellipsoid(p, (0.0, -0.0245, 0.1115), (0.0078, 0.0068, 0.0070)), 0.006)
    nose = _smin(nose, _sphere(m, (0.0026, -0.0262, 0.1142), 0.0040), 0.004)  # tip-defining points
    nose = _smin(nose, _ellipsoid(m, (0.0112, -0.0340, 0.0985), (0.0046, 0.0048, 0.0085)), 0.008)
    nose = _smin(nose, _capsule(p, (0.0, -0.0320, 0.1075), (0.0, -0.0410, 0.0955), 0.0032, 0.0030), 0.004)
    d = _smin(d, nose, 0.005)
    # Alar crease and nostrils: a groove around each wing, shallow openings under the tip.
    d = _smax(d, -_capsule(m, (0.0150, -0.0300, 0.0965), (0.0152, -0.0385, 0.0960), 0.0008, 0.0008), 0.0025)
    d = _smax(d, -_ellipsoid(m, (0.0060, -0.0392, 0.1030), (0.0030, 0.0013, 0.0046)), 0.0015)
    # Ears: flattened shells behind the jaw hinge.
    ear = _ellipsoid(m, (0.0700, -0.0060, -0.0180), (0.0120, 0.0300, 0.0175))
    d = _smin(d, ear, 0.008)
    d = _smax(d, -_ellipsoid(m, (0.0840, -0.0040, -0.0150), (0.0060, 0.0200, 0.0110)), 0.004)
    # Neck: an elliptic column leaning slightly forward, cut flat at the stump; the larynx in front.
    cz = A.NECK_CENTER_Z + 0.06 * np.clip(-0.08 - y, 0.0, None)
    neck = np.hypot(x / A.NECK_RX, (z - cz) / A.NECK_RZ) - 1.0
    neck = neck * min(A.NECK_RX, A.NECK_RZ)
    neck = _smin(neck, _ellipsoid(p, (0.0, -0.145, 0.036), (0.010, 0.014, 0.010)), 0.010)
    neck = np.maximum(neck, np.maximum(A.NECK_BOTTOM - y, y - 0.0))
    return _smin(d, neck, 0.020)


def cast(dirs: np.ndarray, r_max: float = 0.25, step: float = 0.0025) -> np.ndarray:
    """Distance from CENTER to the outermost skin crossing along each unit direction (N, 3) -> (N,)."""
    dirs = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    n = dirs.shape[0]
    outside = np.full(n, r_max)
    found = np.zeros(n, dtype=bool)
    inside = np.zeros(n)
    r = r_max
    while r > 0.0 and not found.all():
        r -= step
        todo = ~found
        hit = skin_sdf(A.CENTER + r * dirs[todo]) < 0.0
        idx = np.flatnonzero(todo)
        inside[idx[hit]] = r
        found[idx[hit]] = True
        outside[idx[~hit]] = r
    if not found.all():
        raise RuntimeError("default head: a casting ray missed the skin (centre outside the head?)")
    lo, hi = inside, outside
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        neg = skin_sdf(A.CENTER + mid[:, None] * dirs) < 0.0
        lo = np.where(neg, mid, lo)
        hi = np.where(neg, hi, mid)
    return 0.5 * (lo + hi)


def skin_point(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Skin positions for grid parameters (same shape as theta) -> (..., 3)."""
    theta = np.asarray(theta, dtype=np.float64)
    d = A.direction(theta, phi).reshape(-1, 3)
    r = cast(d)
    return (A.CENTER + r[:, None] * d).reshape(theta.shape + (3,))
