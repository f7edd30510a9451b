"""Solving a landmark embedding from detections in several rendered views (operators/landmarks.py).

Per landmark: the surface point whose projections best match the detections in all views; inner-lip
and eye-contour points are kept on the right surface (lip / lid skin); then the detector's drift off
those points as the head turns is fitted for the tracker (stored in the model's meta).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from mathutils import Vector
from mathutils.bvhtree import BVHTree

from ..inference.fit_gn import DRIFT_BASIS, DRIFT_KEY, EXPR_DRIFT_KEY, drift_basis, view_angles
from ..inference.head_model import HeadModel
from .landmark_render import (
    EYE_CONTOURS,
    LOWER_INNER_LIP,
    N_MEDIAPIPE,
    SCHEME,
    UPPER_INNER_LIP,
    LandmarkError,
    ViewCamera,
    barycentric,
    cast_view,
)


def _reprojection_cost(points: np.ndarray, views: list[tuple[ViewCamera, np.ndarray]], cap_px: float) -> np.ndarray:
    """Per landmark, the summed squared pixel error of ``points`` (N, 3) over the views, each view capped at
    ``cap_px`` (a detector outlier in one view, e.g. a point on the far silhouette, cannot dominate)."""
    cost = np.zeros(len(points))
    for cam, lmk in views:
        err = ((cam.project(points) - lmk[:, :2]) ** 2).sum(1)
        cost += np.minimum(err, cap_px**2)
    return cost


def solve_points(bvh: BVHTree, views: list[tuple[ViewCamera, np.ndarray]], cap_px: float = 8.0,
                 iters: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface points (478, 3) whose projections best match the detections in ALL views, a found mask and
    each point's RMS reprojection error over the views (pixels): how rigidly the detector holds the point
    to the surface across poses, which the tracker uses to weight it.

    Starts from the best of the views' ray hits (the hit of each view, scored in every view), then takes
    Gauss-Newton steps on the summed reprojection error, each snapped back onto the surface and kept only
    when it lowers the error: the embedding reflects where the detector puts a point across poses, not
    only in one view.
    """
    hits = [cast_view(bvh, cam, lmk) for cam, lmk in views]
    best = np.zeros((N_MEDIAPIPE, 3))
    best_cost = np.full(N_MEDIAPIPE, np.inf)
    for points, ok in hits:
        cost = np.where(ok, _reprojection_cost(points, views, cap_px), np.inf)
        better = cost < best_cost
        best[better], best_cost[better] = points[better], cost[better]
    found = np.isfinite(best_cost)
    eps = 1e-5
    for _ in range(iters):
        jtj = np.zeros((N_MEDIAPIPE, 3, 3))
        jtr = np.zeros((N_MEDIAPIPE, 3))
        for cam, lmk in views:
            uv = cam.project(best)
            r = uv - lmk[:, :2]
            inlier = (r**2).sum(1) < cap_px**2
            jac = np.stack([(cam.project(best + eps * e) - uv) / eps for e in np.eye(3)], 2)  # (N, 2, 3)
            jac[~inlier] = 0.0
            jtj += np.einsum("nki,nkj->nij", jac, jac)
            jtr += np.einsum("nki,nk->ni", jac, r)
        damp = 1e-3 * np.trace(jtj, axis1=1, axis2=2)[:, None, None] * np.eye(3) + 1e-9 * np.eye(3)
        step = -np.linalg.solve(jtj + damp, jtr[..., None])[..., 0]
        trial = best.copy()
        for n in np.flatnonzero(found):
            loc, _normal, _face, _dist = bvh.find_nearest(Vector(best[n] + step[n]))
            if loc is not None:
                trial[n] = loc
        cost = _reprojection_cost(trial, views, cap_px)
        better = found & (cost < best_cost)
        if not better.any():
            break
        best[better], best_cost[better] = trial[better], cost[better]
    return best, found, np.sqrt(np.where(found, best_cost, 0.0) / len(views))


def _lip_trees(model: HeadModel, verts: np.ndarray) -> dict[int, tuple[BVHTree, np.ndarray]]:
    """Landmark id -> (BVH of the upper or lower lip side, its face indices) for the inner lip rings.

    The sides are told apart by the jaw's skinning weight; a head without a jaw joint gets none.
    """
    if "jaw" not in model.joint_names:
        return {}
    w_jaw = model.weights[:, list(model.joint_names).index("jaw")]
    lower = w_jaw[model.faces].mean(1) > 0.5
    out: dict[int, tuple[BVHTree, np.ndarray]] = {}
    for ids, mask in ((UPPER_INNER_LIP, ~lower), (LOWER_INNER_LIP, lower)):
        subset = np.flatnonzero(mask)
        if len(subset) < 4:
            return {}
        tree = BVHTree.FromPolygons(verts.tolist(), model.faces[subset].tolist(), all_triangles=True)
        out.update({i: (tree, subset) for i in ids})
    return out


def _lid_tree(model: HeadModel, verts: np.ndarray) -> dict[int, tuple[BVHTree, np.ndarray]]:
    """Landmark id -> (BVH of everything but the eyeballs, its face indices) for the eye contours.

    Eyeballs are told apart by their eye joints' skinning weight; a head without eye joints gets none.
    """
    eyes = [list(model.joint_names).index(n) for n in ("eye_L", "eye_R") if n in model.joint_names]
    if not eyes:
        return {}
    subset = np.flatnonzero(model.weights[:, eyes].sum(1)[model.faces].mean(1) < 0.5)
    if len(subset) < 4:
        return {}
    tree = BVHTree.FromPolygons(verts.tolist(), model.faces[subset].tolist(), all_triangles=True)
    return {i: (tree, subset) for i in EYE_CONTOURS}


def fit_drift(points: np.ndarray, keep: np.ndarray, views: list[tuple[ViewCamera, np.ndarray]], face_px: float,
              cap_rel: float = 0.06, ridge: float = 0.02) -> tuple[dict, np.ndarray]:
    """The detector's pose-dependent drift off the embedded ``points`` (L, 3) of landmarks ``keep``: per landmark,
    a quadratic in the view's (yaw, pitch) of the detection's offset, lifted into head space (metres in the
    view plane at the point's depth, so it holds at any focal length, distance and roll).

    Returns the meta entry (JSON lists) and each landmark's RMS residual the model leaves (x face width).
    Detections further than ``cap_rel`` x face width off (a lost point in one view) are left out; a light
    ridge on the non-constant terms keeps landmarks seen in few views near a constant.
    """
    basis, offsets, inlier = [], [], []
    for cam, lmk in views:
        r = lmk[keep, :2] - cam.project(points)  # (L, 2) pixels, image y down
        depth = -((points - cam.position) @ cam.rotation)[:, 2]
        local = np.stack([r[:, 0], -r[:, 1], np.zeros(len(r))], 1) * (depth / cam.focal_px)[:, None]
        offsets.append(local @ cam.rotation.T)  # camera -> model axes
        basis.append(drift_basis(*view_angles(cam.rotation.T)))  # head -> camera rotation
        inlier.append(((r**2).sum(1) < (cap_rel * face_px) ** 2).astype(np.float64))
    B, D, W = np.stack(basis), np.stack(offsets), np.stack(inlier)  # (V, K), (V, L, 3), (V, L)
    # Per landmark, the constant, linear or quadratic model, whichever predicts a left-out view best
    # (leave-one-out by the hat matrix): 15 views barely determine 6 terms, and an overfitted drift misleads.
    best_loo = np.full(len(keep), np.inf)
    coef = np.zeros((len(keep), 3, B.shape[1]))
    for k in (1, 3, 6):
        Bk = B[:, :k]
        reg = ridge * np.diag([1e-6] + [1.0] * (k - 1))
        Hinv = np.linalg.inv(np.einsum("vl,vk,vj->lkj", W, Bk, Bk) + reg)  # (L, k, k)
        ck = np.einsum("lkj,vl,vj,vlc->lck", Hinv, W, Bk, D)  # (L, 3, k)
        hat = W.T * np.einsum("vk,lkj,vj->lv", Bk, Hinv, Bk)  # (L, V)
        loo = ((D - np.einsum("vk,lck->vlc", Bk, ck)) / np.clip(1 - hat.T, 0.05, None)[..., None]) ** 2
        loo = (W * loo.sum(2)).sum(0) / np.maximum(W.sum(0), 1.0)
        better = loo < best_loo
        best_loo[better] = loo[better]
        coef[better] = 0.0
        coef[better, :, :k] = ck[better]
    res = D - np.einsum("vk,lck->vlc", B, coef)
    # Back to pixels of the renders for a size-free figure: metres x focal / depth ~ pixels.
    scale = np.mean([cam.focal_px / np.linalg.norm(points.mean(0) - cam.position) for cam, _ in views])
    rms = np.sqrt((W * (res**2).sum(2)).sum(0) / np.maximum(W.sum(0), 1.0)) * scale / max(face_px, 1.0)
    yaws, pitches = B[:, 1], B[:, 2]
    meta = {"basis": DRIFT_BASIS, "coef": np.round(coef, 7).tolist(),
            "yaw_range": [float(yaws.min()), float(yaws.max())], "pitch_range": [float(pitches.min()), float(pitches.max())]}
    return meta, rms


def embed(model: HeadModel, verts: np.ndarray, views: list[tuple[ViewCamera, np.ndarray]],
          bvh: BVHTree | None = None) -> HeadModel:
    """A copy of ``model`` with the landmarks detected in each view (camera, (478, 3) pixels + depth) embedded
    on ``verts``: one view casts rays; several solve, per landmark, for the surface point that best matches
    the detections of all views (``solve_points``).
    """
    faces = model.faces
    bvh = bvh or BVHTree.FromPolygons(verts.tolist(), faces.tolist(), all_triangles=True)
    checked = []
    for cam, lmk in views:
        lmk = np.asarray(lmk, dtype=np.float64)
        if lmk.shape != (N_MEDIAPIPE, 3) or not np.all(np.isfinite(lmk)):
            raise LandmarkError(f"the landmark detector returned an array of shape {lmk.shape}, not (478, 3)")
        checked.append((cam, lmk))
    extra = {}
    if len(checked) == 1:
        points, found = cast_view(bvh, *checked[0])
    else:
        points, found, rms = solve_points(bvh, checked)
        # Relative to the face's size in the renders, so the tracker can compare it with any video.
        face = float(np.median([np.ptp(lmk[:, 0]) for _cam, lmk in checked]))
        extra["lmk_rms_rel"] = [round(float(x), 5) for x in rms[found] / max(face, 1.0)]
    keep = np.flatnonzero(found)
    if len(keep) < 100:
        raise LandmarkError(f"only {len(keep)} of {N_MEDIAPIPE} landmarks landed on the head's surface; "
                            "is the head's front facing +Z (FLAME axes)?")
    points = points[keep]
    trees = {**_lip_trees(model, verts), **_lid_tree(model, verts)}
    face_idx = np.zeros(len(keep), dtype=np.int64)
    for n, (i, p) in enumerate(zip(keep, points)):  # the triangle of each point (on the surface up to round-off)
        tree, subset = trees.get(int(i), (bvh, None))
        loc, _normal, face, _dist = tree.find_nearest(Vector(p))
        points[n], face_idx[n] = loc, face if subset is None else subset[face]
    bary = barycentric(verts, faces, face_idx, points)
    if len(checked) > 1:  # the detector's drift off the final points, as the head turns
        extra[DRIFT_KEY], drift_rms = fit_drift(points, keep, checked, face)
        extra["lmk_drift_rms_rel"] = [round(float(x), 5) for x in drift_rms]
    how = "render" if len(checked) == 1 else f"render ({len(checked)} views, detector-calibrated)"
    return dataclasses.replace(model, lmk_faces=face_idx, lmk_bary=bary, lmk_ids=keep.astype(np.int64),
                               lmk_scheme=SCHEME, meta={**{k: v for k, v in model.meta.items() if k not in _CALIBRATION_KEYS}, "landmarks_from": how, **extra})


_CALIBRATION_KEYS = ("lmk_rms_rel", DRIFT_KEY, "lmk_drift_rms_rel", EXPR_DRIFT_KEY)  # replaced by each new embedding
