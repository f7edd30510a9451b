"""Lip contact: when the lips touch in the video, they touch on the head.

A landmark fit alone leaves closed lips apart: MediaPipe's inner-lip points on a closed mouth sit a little
inside the lips, and the fit trades the last millimetres of opening against the jaw, the mouth expressions
and the detector's noise (on a real 24 s clip the head kept a 4.7 %-of-eye-distance gap in the 138 frames
where her lips were together). So contact is its own observation:

- ``seen``: how surely the lips touch in each frame, from the detected inner-lip gap relative to the eye
  distance (bimodal on real clips: 0.3-0.6 % closed, above 1.5 % open; on renders of the default head
  0.25-0.37 % closed);
- ``ContactRig``: the head's own inner-lip opening (upper minus lower lip point, vertical in the head's frame,
  beyond its rest) and its derivatives in the jaw and the expressions, which the fit (fit_gn) adds as a
  one-sided residual in frames where contact is seen. Opening past the rest is penalised; pressing is not.
- ``gap_mm``: the head's inner-lip opening, what "touching" is judged by (<= TOUCH_MM).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..heads.head_model import HeadModel
from .landmark_rig import LandmarkRig

# MediaPipe's inner-lip points facing each other (upper, lower): the middle and a point to either side.
PAIRS = ((13, 14), (82, 87), (312, 317))
EYE_CORNERS = (33, 263)  # outer eye corners: the scale the detected gap is measured in
TOUCH_BELOW, OPEN_ABOVE = 0.006, 0.012  # detected gap / eye distance: surely touching / surely open
TOUCH_MM = 1.0  # the head's lips touch when their mean opening is within this


def seen(lmk: np.ndarray) -> np.ndarray:
    """(T,) in [0, 1]: how surely the lips touch in each frame of detected landmarks (T, 478, >=2) (pixels);
    1 below TOUCH_BELOW of the eye distance, 0 above OPEN_ABOVE, 0 in frames without a face."""
    lmk = np.asarray(lmk, dtype=np.float64)
    eye = np.linalg.norm(lmk[:, EYE_CORNERS[0], :2] - lmk[:, EYE_CORNERS[1], :2], axis=1)
    gap = np.mean([np.linalg.norm(lmk[:, a, :2] - lmk[:, b, :2], axis=1) for a, b in PAIRS], axis=0)
    rel = gap / np.maximum(eye, 1e-9)
    out = np.clip((OPEN_ABOVE - rel) / (OPEN_ABOVE - TOUCH_BELOW), 0.0, 1.0)
    return np.where(np.isfinite(out), out, 0.0)


def pair_rows(head: HeadModel) -> np.ndarray | None:
    """(K, 2) rows of ``head``'s landmark list for PAIRS, or None when its embedding lacks one of them."""
    ids = list(np.asarray(head.lmk_ids)) if head.lmk_ids is not None else []
    if not all(a in ids and b in ids for a, b in PAIRS):
        return None
    return np.array([(ids.index(a), ids.index(b)) for a, b in PAIRS], dtype=np.int64)


class ContactRig:
    """The head's inner-lip opening as a function of the jaw and the expressions, in the head's own frame
    (so the head's rotation and translation do not enter), from the mesh alone (no detector response)."""

    def __init__(self, head: HeadModel, rows: np.ndarray):
        rows = np.asarray(rows, dtype=np.int64)
        sub = dataclasses.replace(head, lmk_faces=head.lmk_faces[rows.ravel()], lmk_bary=head.lmk_bary[rows.ravel()],
                                  lmk_ids=np.asarray(head.lmk_ids)[rows.ravel()], meta={})
        self.rig = LandmarkRig(sub, detector_basis=False)
        self.K = len(rows)
        names = list(head.joint_names)
        self.n_joints = head.n_joints
        self.jaw_idx = names.index("jaw") if "jaw" in names else None
        neutral = head.landmarks(head.forward()[0])
        rest = neutral[rows.ravel()].reshape(self.K, 2, 3)
        self.rest = rest[:, 0, 1] - rest[:, 1, 1]  # (K,) the rest pose's vertical opening (metres)
        self.scale = float(np.ptp(neutral[:, 0]))  # face width: residuals in its units

    def _pose(self, jaw: np.ndarray) -> np.ndarray:
        pose = np.zeros((len(jaw), self.n_joints, 3))
        if self.jaw_idx is not None:
            pose[:, self.jaw_idx] = jaw
        return pose

    def _forward(self, shape: np.ndarray, expr: np.ndarray, jaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, K) vertical opening of each pair (metres, upper minus lower lip point), and the points' blended
        rotations (T, 2K, 3, 3)."""
        X, A, _root = self.rig.forward(shape, expr, self._pose(jaw), np.zeros((len(expr), 3)))
        X = X.reshape(len(expr), self.K, 2, 3)
        return X[:, :, 0, 1] - X[:, :, 1, 1], A

    def opening(self, shape: np.ndarray, expr: np.ndarray, jaw: np.ndarray) -> np.ndarray:
        """(T, K) vertical opening of each pair (metres, upper minus lower lip point)."""
        return self._forward(shape, expr, jaw)[0]

    def excess(self, shape: np.ndarray, expr: np.ndarray, jaw: np.ndarray, derivatives: bool = True
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Opening beyond the rest (T, K) in face widths, with (``derivatives``) its derivatives in the jaw
        (T, K, 3) (None without a jaw) and in the expressions (T, K, E)."""
        T = len(expr)
        opening, A = self._forward(shape, expr, jaw)
        value = (opening - self.rest[None]) / self.scale
        if not derivatives:
            return value, None, None
        # d(y of each point) / d expr: row 1 of the point's blended rotation times its expression basis.
        de = np.einsum("tlb,lbe->tle", A[:, :, 1, :], self.rig.ed_l).reshape(T, self.K, 2, -1)
        d_expr = (de[:, :, 0] - de[:, :, 1]) / self.scale
        d_jaw = None
        if self.jaw_idx is not None:
            fast = self.rig.joint_jacobian(self.jaw_idx, (0, 1, 2))
            if fast is not None:
                d_jaw = np.stack([(f[..., 1].reshape(T, self.K, 2) @ np.array([1.0, -1.0])) for f in fast], -1)
                d_jaw = d_jaw / self.scale
        return value, d_jaw, d_expr


OWNS_OPENING_MM = 1.0  # an expression that opens / closes the lips more than this per unit belongs to the fit


def opening_per_unit(head: HeadModel) -> np.ndarray:
    """(E,) how far each expression at 1 opens (+) or closes (-) the lips at rest, in millimetres (zeros for a
    head without the lip landmarks). The track keeps the fit's values for those that move the lips: the
    landmarks and the contact term own the lips' opening (score_fusion must not undo a contact)."""
    rows = pair_rows(head)
    if rows is None:
        return np.zeros(head.n_expr)
    rig = ContactRig(head, rows)
    _v, _dj, d_expr = rig.excess(np.zeros(head.n_shape), np.zeros((1, head.n_expr)), np.zeros((1, 3)))
    return 1000.0 * rig.scale * d_expr[0].mean(0)


def gap_mm(head: HeadModel, shape: np.ndarray | None, expr: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """(T,) the head's mean inner-lip opening in millimetres (NaN for a head without the lip landmarks)."""
    rows = pair_rows(head)
    expr = np.atleast_2d(np.asarray(expr, dtype=np.float64))
    if rows is None:
        return np.full(len(expr), np.nan)
    shape = np.zeros(head.n_shape) if shape is None else np.asarray(shape, dtype=np.float64)
    return 1000.0 * ContactRig(head, rows).opening(shape, expr, np.asarray(jaw, dtype=np.float64)).mean(1)


@dataclasses.dataclass
class ContactTerm:
    """The fit's lip-contact residual (fit_gn.Problem.contact): per frame ``weight`` (T,) x the opening beyond
    rest, one-sided (only an opening is penalised)."""

    rig: ContactRig
    weight: np.ndarray

    def frames(self, idx: np.ndarray) -> ContactTerm:
        return ContactTerm(self.rig, self.weight[idx])

    def terms(self, shape: np.ndarray, expr: np.ndarray, jaw: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Weighted residuals (T, K) and their derivatives in the jaw (T, K, 3) and the expressions (T, K, E)."""
        value, d_jaw, d_expr = self.rig.excess(shape, expr, jaw)
        sw = np.sqrt(np.maximum(self.weight, 0.0))[:, None] * (value > 0)
        return value * sw, None if d_jaw is None else d_jaw * sw[..., None], d_expr * sw[..., None]

    def cost(self, shape: np.ndarray, expr: np.ndarray, jaw: np.ndarray) -> np.ndarray:
        """(T,) the weighted squared residuals (no derivatives: the fit evaluates this on every step)."""
        value = self.rig.excess(shape, expr, jaw, derivatives=False)[0]
        return np.maximum(self.weight, 0.0) * (np.maximum(value, 0.0) ** 2).sum(1)
