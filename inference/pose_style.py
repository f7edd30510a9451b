"""Head-pose style: statistics, distances between styles, smoothing and nearest-pose retrieval.

A pose sequence here is (T, D) per frame at ``fps``; for head pose D = 6 (rotation axis-angle in
radians, then translation in metres). Everything is numpy (scipy only for the Welch spectrum).
"""

from __future__ import annotations

import numpy as np


class PoseStyleError(ValueError):
    """A pose sequence that cannot be analysed (too short, wrong shape, NaN...)."""


def _check(poses: np.ndarray, fps: float, min_frames: int = 2) -> np.ndarray:
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] < min_frames:
        raise PoseStyleError(f"need a (T, D) pose sequence with at least {min_frames} frames, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise PoseStyleError("pose sequence contains NaN or infinite values")
    if not (np.isfinite(fps) and fps > 0):
        raise PoseStyleError(f"fps must be a positive number, got {fps!r}")
    return p


def spectrum(poses: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum per axis of the mean-removed sequence: (freqs (F,), power (F, D))."""
    from scipy.signal import welch

    p = _check(poses, fps, 4)
    # ~8 s segments (head motion lives well below 1 Hz), zero-padded 4x for a finer peak position.
    nper = min(len(p), max(8, int(round(8 * fps))))
    f, pw = welch(p - p.mean(0), fs=fps, nperseg=nper, nfft=4 * nper, axis=0, detrend="constant")
    return f, pw


def style_stats(poses: np.ndarray, fps: float) -> dict:
    """Per-axis style statistics (lists of floats, JSON/persona friendly).

    amplitude: std; velocity: mean |Δ| per second; acceleration: mean |Δ²| per second²;
    centroid: spectral centroid in Hz (DC excluded); dominant: frequency of the spectral peak in Hz.
    """
    p = _check(poses, fps, 4)
    d1 = np.diff(p, axis=0) * fps
    d2 = np.diff(p, n=2, axis=0) * fps * fps
    f, pw = spectrum(p, fps)
    f, pw = f[1:], pw[1:]  # drop DC
    total = pw.sum(0)
    centroid = np.where(total > 0, (f[:, None] * pw).sum(0) / np.maximum(total, 1e-300), 0.0)
    dominant = np.where(total > 0, f[np.argmax(pw, axis=0)], 0.0)
    return {
        "fps": float(fps), "n_frames": int(len(p)),
        "mean": p.mean(0).tolist(), "amplitude": p.std(0).tolist(),
        "velocity": np.abs(d1).mean(0).tolist(), "acceleration": np.abs(d2).mean(0).tolist(),
        "velocity_std": d1.std(0).tolist(),
        "centroid": centroid.tolist(), "dominant": dominant.tolist(),
    }


def stats_distance(a: dict, b: dict, keys=("amplitude", "velocity", "centroid")) -> float:
    """Mean absolute log-ratio between two ``style_stats`` (0 = same; 0.69 = a factor of 2 off)."""
    vals = []
    for k in keys:
        x, y = np.abs(np.asarray(a[k], float)), np.abs(np.asarray(b[k], float))
        # Axes far below the dominant one (e.g. a head that never rolls) would make the ratio noise.
        floor = 1e-2 * max(x.max(initial=0.0), y.max(initial=0.0)) + 1e-12
        vals.append(np.abs(np.log((x + floor) / (y + floor))))
    return float(np.mean(np.concatenate(vals)))


def window_features(poses: np.ndarray, fps: float, window_s: float = 1.0, hop_s: float | None = None) -> np.ndarray:
    """(N, 3*D) summary features of fixed-length windows: per axis mean, std, mean |velocity| per s.

    Summaries (rather than raw frames) keep the features independent of fps and low-dimensional
    enough for a covariance from a few hundred frames.
    """
    p = _check(poses, fps, 3)
    win = max(3, int(round(window_s * fps)))
    hop = max(1, int(round((hop_s if hop_s is not None else window_s / 4) * fps)))
    if len(p) < win:
        raise PoseStyleError(f"sequence of {len(p)} frames is shorter than one {window_s:g} s window")
    starts = np.arange(0, len(p) - win + 1, hop)
    w = np.stack([p[s:s + win] for s in starts])  # (N, win, D)
    vel = np.abs(np.diff(w, axis=1)).mean(1) * fps
    return np.concatenate([w.mean(1), w.std(1), vel], axis=1)


def frechet_distance(x: np.ndarray, y: np.ndarray, eps: float = 1e-9) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows (N, F) and (M, F).

    ‖μx − μy‖² + Tr(Σx + Σy − 2 (Σx^½ Σy Σx^½)^½), matrix roots by symmetric eigen-decomposition.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise PoseStyleError("Fréchet distance needs two (N, F) feature sets with N >= 2 and equal F")
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    cx = cx + eps * np.eye(len(cx))
    cy = cy + eps * np.eye(len(cy))

    def psd_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    sx = psd_sqrt(cx)
    inner = np.linalg.eigvalsh(sx @ cy @ sx)
    tr_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(max(0.0, ((mx - my) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * tr_sqrt))


def axis_scale(reference: np.ndarray) -> np.ndarray:
    """Per-axis std of a reference sequence, floored at 1 % of the largest axis of its group of 3
    (rotation / translation), so an axis that never moves does not blow distances up."""
    p = np.asarray(reference, float)
    std = p.std(0)
    groups = [slice(i, i + 3) for i in range(0, p.shape[1], 3)] if p.shape[1] % 3 == 0 else [slice(None)]
    for g in groups:
        std[g] = np.maximum(std[g], 1e-2 * std[g].max() + 1e-12)
    return std


def pose_frechet(generated: np.ndarray, reference: np.ndarray, fps: float, fps_ref: float | None = None,
                 window_s: float = 1.0) -> float:
    """Fréchet distance of window features of both sequences, poses in units of the *reference*'s
    per-axis spread (``axis_scale``). 0 for the same motion; around ten between two takes of one
    style (sampling noise over 18 features); thousands between clearly different styles."""
    scale = axis_scale(_check(reference, fps_ref or fps, 3))
    fa = window_features(np.asarray(generated, float) / scale, fps, window_s)
    fb = window_features(np.asarray(reference, float) / scale, fps_ref or fps, window_s)
    return frechet_distance(fa, fb)


def nearest_window_distance(generated: np.ndarray, training: np.ndarray, fps: float, window_s: float = 1.0,
                            hop_s: float = 0.5) -> np.ndarray:
    """For each window of ``generated``, the RMS distance to the closest same-length window of
    ``training`` (every offset), divided by the training poses' per-axis spread (``axis_scale``).

    Near 0 means the window is a verbatim copy of training poses (what retrieval does on purpose;
    a network output should stay clearly above 0).
    """
    g, t = _check(generated, fps, 3), _check(training, fps, 3)
    win = max(3, int(round(window_s * fps)))
    if len(g) < win or len(t) < win:
        raise PoseStyleError("sequences are shorter than one window")
    scale = axis_scale(t)
    g, t = g / scale, t / scale
    tw = np.lib.stride_tricks.sliding_window_view(t, win, axis=0).reshape(len(t) - win + 1, -1)
    hop = max(1, int(round(hop_s * fps)))
    gw = np.stack([g[s:s + win].T.reshape(-1) for s in range(0, len(g) - win + 1, hop)])
    d2 = (gw ** 2).sum(1)[:, None] + (tw ** 2).sum(1)[None, :] - 2 * gw @ tw.T
    return np.sqrt(np.clip(d2.min(1), 0, None) / tw.shape[1])


# ------------------------------------------------------------------------------ smoothing / resampling
def gaussian_smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along time with reflected ends (no lag, no edge droop)."""
    x = np.asarray(x, float)
    if sigma_frames <= 0 or len(x) < 2:
        return x.copy()
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma_frames, axis=0, mode="nearest")


def resample(x: np.ndarray, fps_in: float, fps_out: float, n_out: int) -> np.ndarray:
    """Linear resampling of (T, D) from fps_in to n_out frames at fps_out (held at the ends)."""
    x = np.asarray(x, float)
    if len(x) == 0 or x.shape[1] == 0:
        return np.zeros((n_out,) + x.shape[1:])
    t_in = np.arange(len(x)) / fps_in
    t_out = np.arange(n_out) / fps_out
    return np.stack([np.interp(t_out, t_in, x[:, d]) for d in range(x.shape[1])], axis=1)


# ------------------------------------------------------------------------------ retrieval
def retrieve_path(query: np.ndarray, bank: np.ndarray, jump_threshold: float | None = None, beam: int = 64,
                  jump_cost: float = 4.0, hold_cost: float = 2.0, min_jump_gap: int = 12,
                  seed: int = 0) -> np.ndarray:
    """Indices into ``bank`` (N, D) that follow ``query`` (T, D) while replaying real motion.

    Dynamic programming over bank indices. Per frame the match cost is the mean squared difference
    to the query in units of the bank's per-axis spread (``axis_scale``); continuing to the next
    bank frame is free, holding a frame costs ``hold_cost`` (high: a flat prediction should replay
    natural motion, not freeze the head), jumping elsewhere costs ``jump_cost`` and is only allowed when the jump is no
    larger than ``jump_threshold`` (same units; default: the 90th percentile of the bank's own
    frame-to-frame steps), so the result has no visible pops; jumps to within ``min_jump_gap`` bank
    frames of the current one are not allowed (no short, visibly repeating loops).
    The search keeps ``beam`` candidate frames per step (nearest to the query plus continuations of
    the best paths), so cost is O(T·beam²) whatever the bank size. ``seed`` picks among near-ties.
    """
    q = np.asarray(query, float)
    b = np.asarray(bank, float)
    if b.ndim != 2 or q.ndim != 2 or b.shape[1] != q.shape[1] or len(b) < 2:
        raise PoseStyleError("retrieval needs a (N>=2, D) bank and a (T, D) query with the same D")
    scale = axis_scale(b)
    q, b = q / scale, b / scale
    dim = b.shape[1]
    steps = np.linalg.norm(np.diff(b, axis=0), axis=1)
    thr = float(np.percentile(steps, 90)) if jump_threshold is None else float(jump_threshold)
    n, t_total = len(b), len(q)
    if t_total == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(n, beam)
    rng = np.random.default_rng(seed)
    tiebreak = rng.uniform(0, 1e-6, n)  # deterministic per seed, breaks exact ties differently

    def nearest(t: int) -> np.ndarray:
        d = ((b - q[t]) ** 2).sum(1) / dim + tiebreak
        return np.argpartition(d, k - 1)[:k] if k < n else np.arange(n)

    cand = nearest(0)
    cost = ((b[cand] - q[0]) ** 2).sum(1) / dim + tiebreak[cand]
    cands, backs = [cand], []
    for t in range(1, t_total):
        keep = cand[np.argsort(cost)[:k]]
        nxt = np.unique(np.concatenate([nearest(t), np.minimum(keep + 1, n - 1), keep]))
        jump = np.linalg.norm(b[cand][:, None, :] - b[nxt][None, :, :], axis=2)  # (P, C)
        near = np.abs(cand[:, None] - nxt[None, :]) <= min_jump_gap
        trans = np.where((jump <= thr) & ~near, jump_cost + (jump / max(thr, 1e-9)) ** 2 * 0.1, np.inf)
        trans[cand[:, None] == nxt[None, :]] = hold_cost
        trans[(cand[:, None] + 1) == nxt[None, :]] = 0.0
        total = cost[:, None] + trans
        best_prev = np.argmin(total, axis=0)
        new_cost = total[best_prev, np.arange(len(nxt))] + ((b[nxt] - q[t]) ** 2).sum(1) / dim + tiebreak[nxt]
        cand, cost = nxt, new_cost
        cands.append(cand)
        backs.append(best_prev)
    # Backtrack.
    path = np.zeros(t_total, dtype=np.int64)
    j = int(np.argmin(cost))
    for t in range(t_total - 1, -1, -1):
        path[t] = cands[t][j]
        if t > 0:
            j = int(backs[t - 1][j])
    return path
