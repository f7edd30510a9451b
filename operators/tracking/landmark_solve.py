"""Solving a landmark embedding from detections in several rendered views (operators/landmarks.py).

Per landmark: the surface point whose projections best match the detections in all views; inner-lip
and eye-contour points are kept on the right surface (lip / lid skin); each landmark's scatter across the
views is stored in the model's meta for the tracker to weigh it by.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from mathutils import Vector
from mathutils.bvhtree import BVHTree

from ...inference.heads.head_model import HeadModel
from ...inference.tracking.landmark_rig import EXPR_DRIFT_KEY
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
    how = "render" if len(checked) == 1 else f"render ({len(checked)} views, detector-calibrated)"
    return dataclasses.replace(model, lmk_faces=face_idx, lmk_bary=bary, lmk_ids=keep.astype(np.int64),
                               lmk_scheme=SCHEME, meta={**{k: v for k, v in model.meta.items() if k not in _CALIBRATION_KEYS}, "landmarks_from": how, **extra})


# Replaced by each new embedding ("lmk_drift", "lmk_drift_rms_rel": a pose-only drift model older embeddings carry,
# which the fit no longer reads).
_CALIBRATION_KEYS = ("lmk_rms_rel", "lmk_drift", "lmk_drift_rms_rel", EXPR_DRIFT_KEY)
