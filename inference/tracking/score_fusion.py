"""Expressions from MediaPipe's blendshape scores, fused with the landmark fit: learned per head.

How the two sources combine (the track's contract):
- the landmark fit (fit.py) decides the head pose, the jaw, the lip contact (lip_contact.py) and a value for
  every expression component;
- then, for each expression component where this head's calibration showed that the 52 scores add what the
  landmarks miss, the component becomes a linear fusion of the fit's value and the scores, learned by ridge
  regression on the calibration renders (random poses and expressions of THIS head, with known truth:
  operators/tracking/landmark_calibration.py). The map is per head, so it serves any head (a FLAME file's
  components have no ARKit names).

A component is fused only where the fusion's cross-validated correlation with the truth beats the fit
alone by MARGIN: on the default head the blinks and some mouth shapes (smiles, frowns) qualify, the brows
do not (the blendshape model reads the default head's resting brows as raised).
Stored in the head model's meta[pose_calibration.CORRECTION_KEY]["score_fusion"].
"""

from __future__ import annotations

import numpy as np

from .face_landmarks import BLENDSHAPE_NAMES
from .pose_calibration import ridge  # the constant is not penalised

BASIS = "fit_and_52_scores_v1"
RIDGE = 0.1  # on 0..1 scores: chosen on held-out calibration renders (0.01-1 gave the same choices)
MARGIN = 0.02  # cross-validated correlation the fusion must add over the fit alone (the fit is one of its inputs)
MIN_R = 0.3  # ... and reach at least
FOLDS = 5  # cross-validation folds for those correlations (2 folds flipped the blinks' choice between runs)


def features(fit_value: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(T, 2 + 52): 1, the fit's value of one component (T,), the scores (T, 52)."""
    return np.concatenate([np.ones((len(scores), 1)), np.asarray(fit_value, np.float64)[:, None],
                           np.asarray(scores, np.float64)], 1)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def learn(fit_expr: np.ndarray, scores: np.ndarray, true_expr: np.ndarray, lam: float = RIDGE) -> dict:
    """The fusion from calibration renders: the fit's expressions (N, E), the scores (N, 52) and the truth (N, E).
    -> {"basis", "coef": (E, 54), "used": (E,) bool, "r_fit": (E,) the fit's correlation, "r_fused": (E,) the
    fusion's, cross-validated, "n"}."""
    fit_expr, scores, true_expr = (np.asarray(a, dtype=np.float64) for a in (fit_expr, scores, true_expr))
    n, E = true_expr.shape
    if scores.shape != (n, len(BLENDSHAPE_NAMES)) or fit_expr.shape != (n, E):
        raise ValueError(f"score fusion: shapes {fit_expr.shape}, {scores.shape}, {true_expr.shape} do not agree")
    if n < 4 * (len(BLENDSHAPE_NAMES) + 2):
        raise ValueError(f"{n} calibration renders are too few to learn the score fusion")
    fold = np.arange(n) % FOLDS
    coef = np.zeros((E, len(BLENDSHAPE_NAMES) + 2))
    r_fit, r_fused = np.zeros(E), np.zeros(E)
    for k in range(E):
        F, y = features(fit_expr[:, k], scores), true_expr[:, k]
        pred = np.zeros(n)
        for f in range(FOLDS):
            test = fold == f
            pred[test] = F[test] @ ridge(F[~test], y[~test], lam)
        r_fit[k], r_fused[k] = _corr(fit_expr[:, k], y), _corr(pred, y)
        coef[k] = ridge(F, y, lam)
    used = (r_fused >= r_fit + MARGIN) & (r_fused >= MIN_R)
    return {"basis": BASIS, "coef": np.round(coef, 8).tolist(), "used": used.tolist(), "ridge": float(lam),
            "r_fit": np.round(r_fit, 4).tolist(), "r_fused": np.round(r_fused, 4).tolist(), "n": int(n)}


def usable(d: object, n_expr: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(coef (E, 54), used (E,)) from a stored fusion, or None when it is missing or malformed."""
    if not isinstance(d, dict) or d.get("basis") != BASIS:
        return None
    coef = np.asarray(d.get("coef", []), dtype=np.float64)
    used = np.asarray(d.get("used", []), dtype=bool)
    if coef.shape != (n_expr, len(BLENDSHAPE_NAMES) + 2) or used.shape != (n_expr,) or not np.all(np.isfinite(coef)):
        return None
    return coef, used


def fuse(d: object, fit_expr: np.ndarray, scores: np.ndarray, bounded: bool, keep: np.ndarray | None = None
         ) -> tuple[np.ndarray, list[int]] | None:
    """The fit's expressions (T, E) with the fused components replaced in frames that have scores (T, 52);
    and the fused components' indices. ``keep`` (E,) bool: components that keep the fit's values. None
    without a usable fusion."""
    fit_expr = np.asarray(fit_expr, dtype=np.float64)
    got = usable(d, fit_expr.shape[1])
    if got is None:
        return None
    coef, used = got
    if keep is not None:
        used = used & ~np.asarray(keep, dtype=bool)
    out = fit_expr.copy()
    scores = np.asarray(scores, dtype=np.float64)
    have = np.isfinite(scores).all(1)
    for k in np.flatnonzero(used):
        v = features(fit_expr[have, k], scores[have]) @ coef[k]
        out[have, k] = np.clip(v, 0.0, 1.0) if bounded else v
    return out, [int(k) for k in np.flatnonzero(used)]
