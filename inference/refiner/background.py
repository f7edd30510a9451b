"""Background matching: for each output frame, the clip frame whose head pose is nearest.

Poses are the head bone's matrices in camera space (from the render manifests) turned into features:
rotation vector in units of ``ROT_UNIT_DEG``, the head's direction from the camera (x/z, y/z) in units of
``POS_UNIT`` and log depth in units of ``DEPTH_UNIT`` (so 5°, 2 % of the view, 5 % of the distance weigh
alike). Both sequences are smoothed first (a background must not follow tracker jitter). A Viterbi pass then
chooses a clip frame per output frame: playing the clip on costs nothing, stepping within ``WINDOW`` frames
of "the next frame" costs ``STEP_COST`` per frame of difference, anything else is a jump of ``JUMP_COST``
(so the background plays smoothly and cuts only when the pose asks for it).
"""

from __future__ import annotations

import numpy as np

ROT_UNIT_DEG = 5.0
POS_UNIT = 0.02
DEPTH_UNIT = 0.05
SMOOTH_S = 0.1
WINDOW = 6
STEP_COST = 0.3
JUMP_COST = 6.0


def pose_features(head_pose: np.ndarray, fps: float) -> np.ndarray:
    """(T, 6) matching features of (T, 4, 4) camera-space head matrices."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.spatial.transform import Rotation

    m = np.asarray(head_pose, dtype=np.float64)
    rot = m[:, :3, :3] / np.linalg.norm(m[:, :3, :3], axis=1, keepdims=True)  # drop any scale
    rv = Rotation.from_matrix(rot).as_rotvec()
    rv = np.unwrap(rv, axis=0) if len(rv) > 1 else rv
    t = m[:, :3, 3]
    depth = np.maximum(-t[:, 2], 1e-6)  # the camera looks along its -Z
    feats = np.concatenate([np.degrees(rv) / ROT_UNIT_DEG, (t[:, :2] / depth[:, None]) / POS_UNIT,
                            np.log(depth)[:, None] / DEPTH_UNIT], 1)
    if len(feats) > 1:
        feats = gaussian_filter1d(feats, max(SMOOTH_S * fps, 1e-3), axis=0, mode="nearest")
    return feats


def match(take_pose: np.ndarray, clip_pose: np.ndarray, fps: float, clip_fps: float | None = None) -> np.ndarray:
    """Clip frame index (T,) for each take frame."""
    q, c = pose_features(take_pose, fps), pose_features(clip_pose, clip_fps or fps)
    T, N = len(q), len(c)
    emit = ((q[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (T, N)
    cost = emit[0].copy()
    back = np.zeros((T, N), dtype=np.int64)
    idx = np.arange(N)
    for t in range(1, T):
        best = np.full(N, np.inf)
        arg = np.zeros(N, dtype=np.int64)
        for d in range(-WINDOW, WINDOW + 1):  # from frame j - 1 - d: "the next frame" is j - d
            src = idx - 1 - d
            ok = (src >= 0) & (src < N)
            cand = np.full(N, np.inf)
            cand[ok] = cost[src[ok]] + STEP_COST * abs(d)
            better = cand < best
            best[better], arg[better] = cand[better], src[better]
        j = int(cost.argmin())
        jump = cost[j] + JUMP_COST
        better = jump < best
        best[better], arg[better] = jump, j
        cost = best + emit[t]
        back[t] = arg
    path = np.zeros(T, dtype=np.int64)
    path[-1] = int(cost.argmin())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path
