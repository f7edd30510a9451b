"""Learn and undo the landmark detector's bias on a head's pose: the tracker's head-pose calibration.

MediaPipe's mesh on a rendered head is not where the head's surface is: as the head turns, opens the jaw
or smiles, the detector's landmarks drift in ways a fit reads as head rotation (on renders of Cadence's
default head the fit under-turns ~15 % and pitches with the jaw: 3.6 deg mean error). Tracking a
calibration set of renders of the same head with KNOWN poses (random head turns, jaw openings and sparse
expressions, rendered by operators/tracking/landmark_calibration.py) measures that bias as a function of what the
fit returns; a ridge regression of the rotation error (axis-angle, head frame) on features of the fitted
pose, expression and the camera's proximity (face width / distance: the renders are made at several lens
lengths, as a phone at arm's length sees a face in stronger perspective than a long lens does) then undoes
it at tracking time. Stored in the head model's meta[CORRECTION_KEY]:
{"basis": BASIS, "coef": (K, 3), "n": samples, "err_before_deg", "err_after_deg" (2-fold held out),
"focal_ratio": true / estimated focal length}.

The same renders measure the focal search's bias: estimated from the detector's landmarks, the focal
length comes out short (on the default head 0.70-0.77 of the truth on the calibration renders, 0.70 on the
rendered ground-truth video), so a video tracked without a known lens has its estimate scaled by the ratio.
"""

from __future__ import annotations

import numpy as np

from ..heads.head_model import HeadModel, rodrigues
from .fit_gn import log_rot, view_angles

CORRECTION_KEY = "lmk_pose_correction"
BASIS = "fitted_pose_jaw_expr_proximity_v2"
N_BASE = 12  # features before the expressions' (see ``features``)
RIDGE = 0.1  # on the standardised-free features (angles in rad, expressions 0..1): chosen on held-out renders


def features(rot: np.ndarray, jaw: np.ndarray, expr: np.ndarray, prox: np.ndarray) -> np.ndarray:
    """(T, K) regressors from a fit's head rotation (T, 3) axis-angle, jaw (T, 3), expression (T, E) and the
    camera's proximity (T,) (``proximity``): 1, yaw, pitch and their squares/product, the jaw opening (also
    x yaw, x pitch), the proximity (also x yaw, x pitch), each expression (also x yaw, x pitch). Yaw and pitch
    are where the face points as seen by the (contract) camera."""
    y, p = view_angles(rodrigues(np.asarray(rot, dtype=np.float64)))
    j = np.clip(np.asarray(jaw, dtype=np.float64)[:, 0], 0.0, None)
    e = np.asarray(expr, dtype=np.float64)
    k = np.asarray(prox, dtype=np.float64) - PROXIMITY_REF
    base = np.stack([np.ones_like(y), y, p, y * y, y * p, p * p, j, j * y, j * p, k, k * y, k * p], 1)
    return np.concatenate([base, e, e * y[:, None], e * p[:, None]], 1)


PROXIMITY_REF = 0.27  # face width / distance of the 60 mm calibration camera: the features' zero


def proximity(head: HeadModel, rot: np.ndarray, trans: np.ndarray, camera_z: float) -> np.ndarray:
    """(T,) the face's width (neutral landmarks) over its distance from the (contract) camera."""
    width = float(np.ptp(head.landmarks(head.forward()[0])[:, 0]))
    return width / np.maximum(face_depth(head, rot, trans, camera_z), 1e-3)


def rotation_error(fitted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(T, 3) axis-angle of R_fit R_true^T: the rotation the fit added on top of the truth."""
    return log_rot(np.einsum("tab,tcb->tac", rodrigues(fitted), rodrigues(true)))


def ridge(F: np.ndarray, Y: np.ndarray, lam: float = RIDGE) -> np.ndarray:
    """Ridge regression coefficients (K, D); the constant (column 0) is not penalised."""
    pen = np.full(F.shape[1], float(lam))
    pen[0] = 0.0
    return np.linalg.solve(F.T @ F + np.diag(pen), F.T @ Y)


def learn(fit_rot: np.ndarray, fit_jaw: np.ndarray, fit_expr: np.ndarray, prox: np.ndarray, true_rot: np.ndarray,
          lam: float = RIDGE) -> dict:
    """The correction from a calibration set: the fit's outputs (and proximity) and the true head rotations (N, 3).

    Reports the mean rotation error before and after correction on held-out halves (2-fold)."""
    F = features(fit_rot, fit_jaw, fit_expr, prox)
    err = rotation_error(fit_rot, true_rot)
    n = len(F)
    if n < 2 * F.shape[1]:
        raise ValueError(f"{n} calibration samples are too few for {F.shape[1]} features")
    fold = np.arange(n) % 2 == 0
    after = np.zeros(n)
    for train in (fold, ~fold):
        coef = ridge(F[train], err[train], lam)
        fixed = correct_with(coef, fit_rot[~train], F[~train])
        after[~train] = np.degrees(np.linalg.norm(rotation_error(fixed, true_rot[~train]), axis=1))
    coef = ridge(F, err, lam)
    return {"basis": BASIS, "coef": np.round(coef, 8).tolist(), "n": int(n), "ridge": float(lam),
            "err_before_deg": float(np.degrees(np.linalg.norm(err, axis=1)).mean()),
            "err_after_deg": float(after.mean())}


def correct_with(coef: np.ndarray, rot: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Head rotations (T, 3) with the predicted error (F @ coef) taken off: R = exp(-err) R_fit."""
    err = F @ coef
    return log_rot(np.einsum("tba,tbc->tac", rodrigues(err), rodrigues(rot)))


def usable(meta: dict, n_expr: int) -> np.ndarray | None:
    """The stored coefficients (K, 3), or None when ``meta`` has no correction for this basis and head."""
    d = meta.get(CORRECTION_KEY)
    if not isinstance(d, dict) or d.get("basis") != BASIS:
        return None
    coef = np.asarray(d.get("coef", []), dtype=np.float64)
    if coef.shape != (N_BASE + 3 * n_expr, 3) or not np.all(np.isfinite(coef)):
        return None
    return coef


def face_depth(head: HeadModel, rot: np.ndarray, trans: np.ndarray, camera_z: float) -> np.ndarray:
    """(T,) distance along the camera axis from the (contract) camera at z = ``camera_z`` to the face centre
    (the neutral landmarks' centroid) of a head turned ``rot`` about its root joint and moved ``trans``."""
    J0 = head.rest_joints()[0]
    arm = head.landmarks(head.forward()[0]).mean(0) - J0
    centre = np.einsum("tab,b->ta", rodrigues(np.asarray(rot, dtype=np.float64)), arm) + J0 + trans
    return camera_z - centre[:, 2]


def learn_depth(fit_rot: np.ndarray, fit_jaw: np.ndarray, fit_expr: np.ndarray, prox: np.ndarray,
                rel_err: np.ndarray, lam: float = RIDGE) -> dict:
    """The depth correction from a calibration set: the fit's relative face-depth error (fitted / true - 1)
    regressed on the same features as the rotation's. The detector's face shrinks and grows with the pose
    (on the default head the fitted depth follows the pitch: 18 mm std on the rendered ground truth).
    -> {"depth_coef": (K,), "depth_err_before", "depth_err_after" (relative std, 2-fold held out)}."""
    F = features(fit_rot, fit_jaw, fit_expr, prox)
    e = np.asarray(rel_err, dtype=np.float64)[:, None]
    fold = np.arange(len(F)) % 2 == 0
    after = np.zeros(len(F))
    for train in (fold, ~fold):
        after[~train] = (e[~train] - F[~train] @ ridge(F[train], e[train], lam))[:, 0]
    return {"depth_coef": np.round(ridge(F, e, lam)[:, 0], 8).tolist(), "depth_err_before": float(e.std()),
            "depth_err_after": float(after.std())}


def depth_error(head: HeadModel, rot: np.ndarray, jaw: np.ndarray, expr: np.ndarray, prox: np.ndarray
                ) -> np.ndarray | None:
    """(T,) predicted relative face-depth error (fitted / true - 1) of a fit, or None without a calibration."""
    d = head.meta.get(CORRECTION_KEY)
    if not isinstance(d, dict) or d.get("basis") != BASIS:
        return None
    coef = np.asarray(d.get("depth_coef", []), dtype=np.float64)
    if coef.shape != (N_BASE + 3 * head.n_expr,) or not np.all(np.isfinite(coef)):
        return None
    return np.clip(features(rot, jaw, expr, prox) @ coef, -0.3, 0.3)  # a larger "bias" is a failed calibration


FOCAL_RATIO_RANGE = (0.5, 3.0)  # a measured ratio outside this is a failed calibration, not a bias to undo


def focal_ratio(estimated: list[float], true: float) -> float:
    """The median of true / estimated focal lengths (pixels) over calibration trials."""
    est = np.asarray(estimated, dtype=np.float64)
    if not len(est) or not np.all(np.isfinite(est) & (est > 0)) or not true > 0:
        raise ValueError("the focal calibration needs positive focal lengths")
    return float(np.median(true / est))


def focal_scale(meta: dict) -> float | None:
    """The stored focal ratio, or None when ``meta`` has none (or an implausible one)."""
    d = meta.get(CORRECTION_KEY)
    if not isinstance(d, dict) or d.get("basis") != BASIS:
        return None
    try:
        r = float(d.get("focal_ratio"))
    except (TypeError, ValueError):
        return None
    return r if FOCAL_RATIO_RANGE[0] <= r <= FOCAL_RATIO_RANGE[1] else None


def correct(head: HeadModel, rot: np.ndarray, jaw: np.ndarray, expr: np.ndarray, prox: np.ndarray
            ) -> np.ndarray | None:
    """Corrected head rotations (T, 3), or None when the head has no (usable) calibration."""
    coef = usable(head.meta, head.n_expr)
    if coef is None:
        return None
    return correct_with(coef, rot, features(rot, jaw, expr, prox))
