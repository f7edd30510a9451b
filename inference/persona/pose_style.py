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
_DENSE_MAX = 3000  # banks up to this size keep the whole (N, N) jump-cost matrix (72 MB at the limit)
_ROWS_MAX = 1 << 22  # DP rows kept in memory at once (T·N entries, 32 MB); longer inputs recompute blocks
_jump_cache: dict = {}  # bank fingerprint -> jump costs: repeated generation from one persona builds them once


class _JumpCosts:
    """Cost of jumping from bank frame j to every frame: ``jump_cost`` + 0.1·(d/threshold)² where the
    (scaled) pose distance d is within the threshold, the frames are more than ``gap`` apart and a
    backward jump goes back more than ``loop`` frames, else inf. From the frames in ``free`` (the last
    frame of a clip, where the motion cannot go on) a jump of any size is allowed: otherwise a clip
    that ends in an unusual pose can only be held there, and the head freezes. Held as one dense
    matrix for normal banks, row by row on demand for very long ones."""

    def __init__(self, b: np.ndarray, thr: float, jump_cost: float, gap: int, loop: int, free: tuple = ()):
        self.b, self.thr, self.jump_cost = b, thr, jump_cost
        self.free = np.zeros(len(b), bool)
        self.free[[int(f) for f in free if 0 <= int(f) < len(b)]] = True
        self.gap, self.loop = max(0, int(gap)), max(0, int(loop))
        n = len(b)
        self.dense = self._rows(np.arange(n)) if n <= _DENSE_MAX else None
        self.lazy: dict[int, np.ndarray] = {}

    def _rows(self, js: np.ndarray) -> np.ndarray:
        b, n = self.b, len(self.b)
        sq = (b * b).sum(1)
        out = np.empty((len(js), n))
        idx = np.arange(n)
        for s in range(0, len(js), 512):
            j = js[s:s + 512]
            d2 = sq[j][:, None] + sq[None, :] - 2.0 * (b[j] @ b.T)
            # |a|²+|b|²-2ab carries a rounding error of ~1e-16·(|a|²+|b|²): refuse anything that could
            # be above the threshold by that much, so no accepted jump exceeds it.
            ok = d2 <= self.thr ** 2 - 1e-12 * (sq[j][:, None] + sq[None, :])
            ok |= self.free[j][:, None]
            off = idx[None, :] - j[:, None]
            ok &= (np.abs(off) > self.gap) & (off != 0) & (off != 1)  # hold / continue are not jumps
            ok &= (off > 0) | (-off > self.loop)  # replaying a stretch again: a long one
            out[s:s + len(j)] = np.where(ok, self.jump_cost + 0.1 * np.maximum(d2, 0.0) / max(self.thr, 1e-9) ** 2,
                                         np.inf)
        return out

    def row(self, j: int) -> np.ndarray:
        if self.dense is not None:
            return self.dense[j]
        r = self.lazy.get(j)
        if r is None:
            if len(self.lazy) * len(self.b) > _ROWS_MAX:  # bounded memory: start over (rows are cheap)
                self.lazy.clear()
            r = self.lazy[j] = self._rows(np.array([j]))[0]
        return r


def _jump_costs(b: np.ndarray, thr: float, jump_cost: float, gap: int, loop: int, free: tuple = ()) -> _JumpCosts:
    import hashlib

    key = (hashlib.blake2b(np.ascontiguousarray(b).tobytes(), digest_size=16).hexdigest(), b.shape, thr,
           jump_cost, gap, loop, free)
    jc = _jump_cache.get(key)
    if jc is None:
        if len(_jump_cache) >= 2:  # a couple of personas in flight at most; drop the oldest
            _jump_cache.pop(next(iter(_jump_cache)))
        jc = _jump_cache[key] = _JumpCosts(b, thr, jump_cost, gap, loop, free)
    return jc


def _forward(match: np.ndarray, jumps: _JumpCosts, hold_cost: float, first: np.ndarray, t0: int, t1: int,
             rows: np.ndarray, srcs: np.ndarray, cont: np.ndarray | None = None) -> None:
    """Fill ``rows[k]`` with the padded cost row of time t0 + k (k = 0 .. t1 - t0 - 1), starting from the
    padded row ``first`` of time t0. A padded row is [inf, C(0), ..., C(N-1)] so that ``row[:-1]`` is
    "the cost of the previous frame" for every frame: continuing is a shifted view, not a copy.
    ``cont`` (N,): extra cost of continuing into each frame (inf at the first frame of a clip: the
    previous bank frame belongs to another clip). This loop is the whole cost of retrieval: a
    handful of in-place numpy operations per time step."""
    rows[0] = first
    n = match.shape[1]
    tmp, jmp, hold = np.empty(n), np.empty(n), np.full(n, float(hold_cost))
    dense, row = jumps.dense, jumps.row
    for k in range(1, t1 - t0):
        prev = rows[k - 1]
        pc = prev[1:]
        j = int(pc.argmin())  # jumps leave from the best path so far: the cheapest take-off by construction
        srcs[t0 + k] = j
        np.add(pc, hold, out=tmp)
        if cont is None:
            np.minimum(tmp, prev[:-1], out=tmp)
        else:
            np.minimum(tmp, prev[:-1] + cont, out=tmp)
        np.add(dense[j] if dense is not None else row(j), pc[j], out=jmp)
        np.minimum(tmp, jmp, out=tmp)
        np.add(tmp, match[t0 + k], out=rows[k, 1:])


def retrieve_path(query: np.ndarray, bank: np.ndarray, jump_threshold: float | None = None,
                  jump_cost: float = 4.0, hold_cost: float = 2.0, min_jump_gap: int = 12,
                  min_loop: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices into ``bank`` (N, D) that follow ``query`` (T, D) while replaying real motion.

    Dynamic programming over all bank frames. Per frame the match cost is the mean squared difference
    to the query in units of the bank's per-axis spread (``axis_scale``); continuing to the next
    bank frame is free, holding a frame costs ``hold_cost`` (high: a flat prediction should replay
    natural motion, not freeze the head), jumping elsewhere costs ``jump_cost`` (+ up to 0.1 for its
    size) and is only allowed when the jump is no larger than ``jump_threshold`` (same units; default:
    the 90th percentile of the bank's own frame-to-frame steps), so the result has no visible pops;
    jumps to within ``min_jump_gap`` bank frames of the current one are not allowed (no short, visibly
    repeating loops), and a backward jump must go back more than ``min_loop`` frames (default 4 x
    ``min_jump_gap``): replaying a stretch again is then at least that long, so a flat query does not
    turn into a fast cycle over the few frames that match it best. Continuing and holding are solved exactly for every frame; a jump at time t
    leaves from the best path up to t - 1 (jump costs differ by at most 0.1, so the best path is
    where the cheapest jumps start). Cost O(T·N) in a few numpy operations per time step.
    ``seed`` picks among near-ties (deterministic for a given seed).
    """
    q = np.asarray(query, float)
    b = np.asarray(bank, float)
    if b.ndim != 2 or q.ndim != 2 or b.shape[1] != q.shape[1] or len(b) < 2:
        raise PoseStyleError("retrieval needs a (N>=2, D) bank and a (T, D) query with the same D")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(q))):
        raise PoseStyleError("retrieval poses contain NaN or infinite values")
    scale = axis_scale(b)
    q, b = q / scale, b / scale
    n, t_total, dim = len(b), len(q), b.shape[1]
    tiebreak = np.random.default_rng(seed).uniform(0, 1e-6, n)  # deterministic per seed, breaks exact ties
    # All match costs in one matrix product: |q|²/D + (|b|²/D + tiebreak) - 2 q·b/D.
    qa = np.concatenate([q, np.ones((t_total, 1)), (q * q).sum(1, keepdims=True)], 1)
    ba = np.concatenate([-2 * b / dim, ((b * b).sum(1) / dim + tiebreak)[:, None], np.full((n, 1), 1 / dim)], 1)
    return best_path(qa @ ba.T, b, jump_threshold, jump_cost, hold_cost, min_jump_gap, min_loop)


def best_path(match: np.ndarray, bank: np.ndarray, jump_threshold: float | None = None, jump_cost: float = 4.0,
              hold_cost: float = 2.0, min_jump_gap: int = 12, min_loop: int | None = None,
              clip_starts: list[int] | None = None, free_clip_ends: bool = False) -> np.ndarray:
    """The path through ``bank`` (N, D, already in its distance units) of least total cost, given the
    per-frame match costs ``match`` (T, N); the moves and their costs are those of ``retrieve_path``.
    ``clip_starts``: bank rows that begin a new clip (a bank of several clips) — the path never
    "continues" into them from the previous clip's last frame; it may jump there. ``free_clip_ends``:
    jumps of any size may leave a clip's last frame (for callers that blend jumps)."""
    match = np.asarray(match, float)
    b = np.asarray(bank, float)
    n, t_total = len(b), len(match)
    if match.ndim != 2 or match.shape[1] != n:
        raise PoseStyleError("match costs must be (T, N) for a bank of N frames")
    if t_total == 0:
        return np.zeros(0, dtype=np.int64)
    cont = None
    if clip_starts:
        cont = np.zeros(n)
        cont[[int(c) for c in clip_starts if 0 < int(c) < n]] = np.inf
    steps = np.linalg.norm(np.diff(b, axis=0), axis=1)
    if cont is not None:
        steps = steps[np.isfinite(cont[1:])]  # a clip boundary is not a step of the motion
    thr = float(np.percentile(steps, 90)) if jump_threshold is None else float(jump_threshold)
    loop = 4 * int(min_jump_gap) if min_loop is None else int(min_loop)
    ends = tuple(sorted({n - 1, *[int(c) - 1 for c in (clip_starts or []) if 0 < int(c) < n]})) if free_clip_ends else ()
    jumps = _jump_costs(b, thr, float(jump_cost), int(min_jump_gap), loop, ends)

    # Forward pass in blocks of ``block`` rows; only the first row of each block is kept, the rows
    # themselves are recomputed (bit for bit: same operations) when backtracking through that block.
    block = max(2, min(t_total, _ROWS_MAX // (n + 1)))
    starts = list(range(0, t_total, block))
    srcs = np.zeros(t_total, dtype=np.int64)
    rows = np.full((min(block + 1, t_total), n + 1), np.inf)  # column 0 stays inf (see _forward)
    first = np.concatenate([[np.inf], match[0]])
    checkpoints = []
    for s in starts:
        e = min(t_total, s + block + 1)  # one row of overlap: the next block's first row
        checkpoints.append(first.copy())
        _forward(match, jumps, hold_cost, first, s, e, rows, srcs, cont)
        first = rows[e - s - 1].copy()
    # Backtrack: at each step take the predecessor that achieves the forward minimum (same float
    # operations as the forward pass, so the comparison is exact). Plain Python floats: fast scalars.
    path = [int(np.argmin(first[1:]))]
    i = path[0]
    src = srcs.tolist()
    jump_at = jumps.dense.item if jumps.dense is not None else (lambda j, k: jumps.row(j).item(k))
    cont_at = cont.item if cont is not None else (lambda k: 0.0)
    for bi in range(len(starts) - 1, -1, -1):
        s = starts[bi]
        e = min(t_total, s + block + 1)
        if bi < len(starts) - 1:  # the buffer still holds the last block
            _forward(match, jumps, hold_cost, checkpoints[bi], s, e, rows, srcs, cont)
            src = srcs.tolist()
        at, width = rows.reshape(-1).item, n + 1
        for t in range(e - 1, s, -1):
            base = (t - s - 1) * width
            j = src[t]
            best, pred = at(base + i) + cont_at(i), i - 1  # continue (column 0 is inf: frame 0 has none)
            hold = at(base + i + 1) + hold_cost
            if hold < best:
                best, pred = hold, i
            if at(base + j + 1) + jump_at(j, i) < best:
                pred = j
            i = pred
            path.append(i)
    return np.array(path[::-1], dtype=np.int64)
