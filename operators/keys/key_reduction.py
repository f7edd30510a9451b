"""Error-bounded keyframe reduction (pure numpy; no bpy, so it is testable and reusable anywhere).

A dense curve (one key per scene frame) is reduced to the fewest keys we can find such that the curve
Blender will *interpolate* through the kept keys stays within ``tolerance`` of every original sample:

- LINEAR: recursive Douglas-Peucker on the samples. Both the dense and the reduced curve are piecewise
  linear with breakpoints on sample frames, so the bound at the samples is the bound everywhere.
- BEZIER: Blender's F-curve Bezier with auto-clamped handles (the default "Auto Clamped", F-curve
  smoothing "None") is emulated here: handle placement, the end keys' flat handles, the handle-length
  correction and the cubic solve for x. Keys are added greedily where the emulated curve misses a
  sample by more than the tolerance until none does. The keyframe writer re-checks with Blender's own
  ``FCurve.evaluate`` and adds keys if the emulation ever disagrees, so the bound holds on the real curve.
"""

from __future__ import annotations

import numpy as np

INTERPOLATIONS = ("LINEAR", "BEZIER")


class ReductionError(ValueError):
    """Invalid input to the reduction (mismatched arrays, negative tolerance, unknown interpolation)."""


def _check(frames: np.ndarray, values: np.ndarray, tolerance: float, interpolation: str):
    frames = np.asarray(frames, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if frames.shape != values.shape:
        raise ReductionError(f"{frames.size} frames but {values.size} values")
    if frames.size > 1 and np.any(np.diff(frames) <= 0):
        raise ReductionError("frames must be strictly increasing")
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ReductionError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if interpolation not in INTERPOLATIONS:
        raise ReductionError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    return frames, values


def reduce_keys(
    frames: np.ndarray, values: np.ndarray, tolerance: float, interpolation: str = "LINEAR"
) -> np.ndarray:
    """Indices of the samples to keep as keys (sorted; first and last always kept).

    Guarantees max |curve(frames[i]) - values[i]| <= tolerance for the given interpolation.
    """
    frames, values = _check(frames, values, tolerance, interpolation)
    n = frames.size
    if n <= 2:
        return np.arange(n)
    if interpolation == "BEZIER":
        # Seed with a coarse linear simplification, refine until the Bezier curve holds the bound;
        # several coarseness levels are tried and the sparsest result wins (cheap: numpy only).
        keep = min(
            (_refine_bezier(frames, values, _douglas_peucker(frames, values, tolerance * m), tolerance)
             for m in (1.0, 4.0, 16.0)),
            key=np.count_nonzero,
        )
    else:
        keep = _douglas_peucker(frames, values, tolerance)
    return np.flatnonzero(keep)


def max_error(frames: np.ndarray, values: np.ndarray, kept: np.ndarray, interpolation: str = "LINEAR") -> float:
    """Largest |reduced curve - samples| over all sample frames."""
    frames, values = _check(frames, values, 0.0, interpolation)
    if frames.size == 0:
        return 0.0
    return float(np.max(np.abs(evaluate(frames[kept], values[kept], frames, interpolation) - values)))


def evaluate(key_x: np.ndarray, key_y: np.ndarray, x: np.ndarray, interpolation: str = "LINEAR") -> np.ndarray:
    """The F-curve through keys (key_x, key_y) at ``x``, as Blender evaluates it (constant extrapolation)."""
    key_x = np.asarray(key_x, dtype=np.float64)
    key_y = np.asarray(key_y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if key_x.size == 1:
        return np.full(x.shape, key_y[0])
    if interpolation == "LINEAR":
        return np.interp(x, key_x, key_y)
    left, right = auto_clamped_handles(key_x, key_y)
    xc = np.clip(x, key_x[0], key_x[-1])
    seg = np.clip(np.searchsorted(key_x, xc, side="right") - 1, 0, key_x.size - 2)
    p0 = np.stack([key_x[seg], key_y[seg]], -1)
    p3 = np.stack([key_x[seg + 1], key_y[seg + 1]], -1)
    p1, p2 = right[seg].copy(), left[seg + 1].copy()
    # Blender's correct_bezpart: handles longer (in x) than the segment are scaled down.
    h1, h2 = p0 - p1, p3 - p2
    len1, len2 = np.abs(h1[:, 0]), np.abs(h2[:, 0])
    span = p3[:, 0] - p0[:, 0]
    over = (len1 + len2) > span
    fac = np.where(over, span / np.maximum(len1 + len2, 1e-300), 1.0)[:, None]
    p1, p2 = p0 - fac * h1, p3 - fac * h2
    # Solve x(t) = xc on [0, 1] by bisection (x(t) is monotonic after the correction).
    lo, hi = np.zeros_like(xc), np.ones_like(xc)
    for _ in range(48):
        t = 0.5 * (lo + hi)
        below = _bez(p0[:, 0], p1[:, 0], p2[:, 0], p3[:, 0], t) < xc
        lo, hi = np.where(below, t, lo), np.where(below, hi, t)
    t = 0.5 * (lo + hi)
    return _bez(p0[:, 1], p1[:, 1], p2[:, 1], p3[:, 1], t)


def auto_clamped_handles(kx: np.ndarray, ky: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right handles (K, 2) Blender computes for auto-clamped keys (F-curve smoothing 'None')."""
    k = kx.size
    p = np.stack([kx, ky], -1)
    prev = np.empty_like(p)
    nxt = np.empty_like(p)
    prev[1:], nxt[:-1] = p[:-1], p[1:]
    prev[0], nxt[-1] = 2 * p[0] - p[1], 2 * p[-1] - p[-2]  # mirrored neighbours at the ends
    da, db = p - prev, nxt - p
    len_a, len_b = da[:, 0].copy(), db[:, 0].copy()
    len_a[len_a == 0] = 1.0
    len_b[len_b == 0] = 1.0
    tvec = db / len_b[:, None] + da / len_a[:, None]
    length = tvec[:, 0] * 2.5614
    len_a, len_b = np.minimum(len_a, 5 * len_b), np.minimum(len_b, 5 * len_a)
    left = p - tvec * (len_a / length)[:, None]
    right = p + tvec * (len_b / length)[:, None]
    # Clamping: extremes get flat handles; otherwise a handle may not overshoot its neighbour's value.
    y = ky
    yd1, yd2 = prev[:, 1] - y, nxt[:, 1] - y
    inner = np.arange(k)
    inner = (inner > 0) & (inner < k - 1)
    extreme = inner & (((yd1 <= 0) & (yd2 <= 0)) | ((yd1 >= 0) & (yd2 >= 0)))
    left[extreme, 1] = y[extreme]
    right[extreme, 1] = y[extreme]
    mono = inner & ~extreme
    lv = mono & np.where(yd1 <= 0, prev[:, 1] > left[:, 1], prev[:, 1] < left[:, 1])
    rv = mono & np.where(yd2 <= 0, nxt[:, 1] > right[:, 1], nxt[:, 1] < right[:, 1])
    left[lv, 1] = prev[lv, 1]
    right[rv, 1] = nxt[rv, 1]
    h1x = left[:, 0] - p[:, 0]
    h2x = p[:, 0] - right[:, 0]
    fix_r = lv  # left violated: align the right handle with the left one
    fix_l = rv & ~lv
    right[fix_r, 1] = y[fix_r] + (y[fix_r] - left[fix_r, 1]) / h1x[fix_r] * h2x[fix_r]
    left[fix_l, 1] = y[fix_l] + (y[fix_l] - right[fix_l, 1]) / h2x[fix_l] * h1x[fix_l]
    # End keys with constant extrapolation get flat handles ("auto ease in/out").
    for i in (0, k - 1):
        left[i, 1] = right[i, 1] = y[i]
    return left, right


def _bez(a, b, c, d, t):
    u = 1.0 - t
    return u * u * u * a + 3 * u * u * t * b + 3 * u * t * t * c + t * t * t * d


def _douglas_peucker(x: np.ndarray, y: np.ndarray, tol: float) -> np.ndarray:
    keep = np.zeros(x.size, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, x.size - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        xs, ys = x[a + 1 : b], y[a + 1 : b]
        line = y[a] + (y[b] - y[a]) * (xs - x[a]) / (x[b] - x[a])
        err = np.abs(ys - line)
        i = int(np.argmax(err))
        if err[i] > tol:
            m = a + 1 + i
            keep[m] = True
            stack.append((a, m))
            stack.append((m, b))
    return keep


def _refine_bezier(x: np.ndarray, y: np.ndarray, keep: np.ndarray, tol: float) -> np.ndarray:
    keep = keep.copy()
    while True:
        idx = np.flatnonzero(keep)
        err = np.abs(evaluate(x[idx], y[idx], x, "BEZIER") - y)
        bad = (err > tol) & ~keep  # a kept sample is the key itself: only rounding can miss it
        if not bad.any():
            return keep
        # Add the worst sample of every segment that misses the bound (handles change locally only).
        seg = np.clip(np.searchsorted(idx, np.arange(x.size), side="right") - 1, 0, idx.size - 2)
        masked = np.where(bad, err, -1.0)
        order = np.lexsort((-masked, seg))
        first = np.ones(order.size, dtype=bool)
        first[1:] = seg[order][1:] != seg[order][:-1]
        worst = order[first]
        worst = worst[masked[worst] > tol]
        keep[worst] = True
