"""Phones -> visemes -> target poses on a given head, solved from lip geometry (nothing hand-typed per model).

Each viseme is a geometric target: change of inner-lip opening, of mouth width, lip protrusion,
and how much of the opening the jaw provides, all in units of the head's own neutral mouth width.
For every head the pose (jaw angle + expression coefficients) that best reaches those targets is
found by a small regularised, bounded least-squares problem on the head's lip points, measured
with ``HeadModel.forward``: semantic heads (mouthFunnel, mouthClose, ...) and FLAME heads with
generic ``expr_###`` components go through the same solver. Solutions are cached per model hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..heads.head_model import HeadModel

SOLVER_VERSION = 1
JAW = 2  # FLAME joint order: root, neck, jaw, eye_L, eye_R

# CMU phone -> viseme class.
PHONE_TO_VISEME: dict[str, str] = {
    "SIL": "rest",
    "P": "PBM", "B": "PBM", "M": "PBM",
    "F": "FV", "V": "FV",
    "TH": "TH", "DH": "TH",
    "T": "TDN", "D": "TDN", "N": "TDN", "L": "TDN",
    "S": "SZ", "Z": "SZ",
    "SH": "SH", "ZH": "SH", "CH": "SH", "JH": "SH",
    "K": "KG", "G": "KG", "NG": "KG", "HH": "KG",
    "R": "R", "W": "W", "Y": "IY",
    "AA": "AA", "AW": "AA", "AY": "AA",
    "AE": "EH", "EH": "EH", "EY": "EH",
    "IY": "IY", "IH": "IY",
    "AH": "AH", "ER": "ER",
    "AO": "OW", "OW": "OW", "OY": "OW",
    "UW": "UW", "UH": "UW",
}

# Geometric targets: (d_open, d_width, protrusion, jaw_open), in neutral mouth widths. jaw_open is
# the opening the jaw alone would make; the lips make up the difference (e.g. /p b m/ keep the jaw
# a little open and close with the lips, as people do).
VISEME_TARGETS: dict[str, tuple[float, float, float, float]] = {
    "rest": (0.0, 0.0, 0.0, 0.0),
    "PBM": (-0.02, 0.0, 0.0, 0.05),
    "FV": (0.03, 0.02, -0.02, 0.06),
    "TH": (0.10, 0.02, 0.0, 0.08),
    "TDN": (0.12, 0.03, 0.0, 0.09),
    "SZ": (0.06, 0.07, 0.0, 0.05),
    "SH": (0.12, -0.12, 0.08, 0.08),
    "KG": (0.16, 0.02, 0.0, 0.12),
    "R": (0.08, -0.10, 0.06, 0.06),
    "W": (0.04, -0.24, 0.10, 0.03),
    "AA": (0.42, 0.04, 0.0, 0.30),
    "EH": (0.30, 0.10, 0.0, 0.21),
    "IY": (0.12, 0.14, 0.0, 0.08),
    "AH": (0.30, 0.02, 0.0, 0.21),
    "ER": (0.16, -0.08, 0.05, 0.11),
    "OW": (0.30, -0.16, 0.08, 0.21),
    "UW": (0.10, -0.24, 0.11, 0.07),
}
VISEMES: tuple[str, ...] = tuple(VISEME_TARGETS)
CLOSED_VISEMES = ("PBM",)

# MediaPipe Face Mesh indices: (upper inner, lower inner) pairs, corners, outer mid-points.
_MP_PAIRS = [(81, 178), (82, 87), (13, 14), (312, 317), (311, 402)]
_MP_CORNERS = (61, 291)
_MP_OUTER = (0, 17)
# iBUG 68-point indices (FLAME's static embeddings use these, or the 51 without the jawline).
_IB_PAIRS = [(61, 67), (62, 66), (63, 65)]
_IB_CORNERS = (48, 54)
_IB_OUTER = (51, 57)


class VisemeError(ValueError):
    """A head the viseme solver cannot work with (no lips it can find, no mouth components)."""


@dataclass
class LipPoints:
    """Lip points as vertex-weight combinations: each is (ids (P, k), weights (P, k))."""

    upper: tuple[np.ndarray, np.ndarray]
    lower: tuple[np.ndarray, np.ndarray]
    corners: tuple[np.ndarray, np.ndarray]  # 2 points
    outer: tuple[np.ndarray, np.ndarray]  # upper and lower outer mid-points

    @staticmethod
    def _eval(pts: tuple[np.ndarray, np.ndarray], verts: np.ndarray) -> np.ndarray:
        ids, w = pts
        return np.einsum("pk,...pkc->...pc", w, verts[..., ids, :])

    def features(self, verts: np.ndarray) -> np.ndarray:
        """(opening, width, protrusion) for verts (..., V, 3): linear in the vertices."""
        up, lo = self._eval(self.upper, verts), self._eval(self.lower, verts)
        c, o = self._eval(self.corners, verts), self._eval(self.outer, verts)
        opening = np.mean(up[..., 1] - lo[..., 1], axis=-1)
        width = np.abs(c[..., 0, 0] - c[..., 1, 0])
        protrusion = np.mean(o[..., 2], axis=-1)
        return np.stack([opening, width, protrusion], axis=-1)


def _vertex_points(ids) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1, 1)
    return ids, np.ones_like(ids, dtype=np.float64)


def find_lip_points(head: HeadModel) -> LipPoints:
    """Lip points from meta["lip_vertices"], a MediaPipe landmark embedding or a 68/51-point one."""
    lv = head.meta.get("lip_vertices") if isinstance(head.meta, dict) else None
    if lv:
        v = head.v_template
        upper = np.asarray(lv["upper_inner"], dtype=np.int64)
        lower = np.asarray(lv["lower_inner"], dtype=np.int64)
        cl, cr = int(lv["corner_L"]), int(lv["corner_R"])
        # Pair each central upper-lip vertex with the lower-lip vertex nearest in x.
        xc, half = 0.5 * (v[cl, 0] + v[cr, 0]), 0.5 * abs(v[cl, 0] - v[cr, 0])
        central = upper[np.abs(v[upper, 0] - xc) < 0.6 * half]
        central = central if central.size else upper
        paired = lower[np.argmin(np.abs(v[central, 0][:, None] - v[lower, 0][None, :]), axis=1)]
        return LipPoints(_vertex_points(central), _vertex_points(paired), _vertex_points([cl, cr]),
                         _vertex_points([int(lv["upper_outer_mid"]), int(lv["lower_outer_mid"])]))
    if head.lmk_faces is None:
        raise VisemeError(
            f"head {head.name!r} has no lip landmarks: give it a landmark embedding (68/51-point or "
            "MediaPipe) or meta['lip_vertices'] so Cadence can find the mouth"
        )
    scheme = head.lmk_scheme.lower()
    ids = [int(i) for i in head.lmk_ids]
    if "mediapipe" in scheme:
        pairs, corners, outer, shift = _MP_PAIRS, _MP_CORNERS, _MP_OUTER, 0
    elif "68" in scheme or "51" in scheme or "ibug" in scheme or len(ids) in (68, 51):
        pairs, corners, outer = _IB_PAIRS, _IB_CORNERS, _IB_OUTER
        shift = 17 if ("51" in scheme or len(ids) == 51) and max(ids) < 51 else 0
    else:
        raise VisemeError(f"head {head.name!r}: landmark scheme {head.lmk_scheme!r} is not one Cadence knows")
    where = {s: k for k, s in enumerate(ids)}

    def pick(idx) -> tuple[np.ndarray, np.ndarray]:
        try:
            rows = [where[i - shift] for i in idx]
        except KeyError as exc:
            raise VisemeError(f"head {head.name!r}: its landmarks lack lip point {exc}") from exc
        return head.faces[head.lmk_faces[rows]].astype(np.int64), head.lmk_bary[rows]

    ok_pairs = [p for p in pairs if p[0] - shift in where and p[1] - shift in where] or pairs
    return LipPoints(pick([p[0] for p in ok_pairs]), pick([p[1] for p in ok_pairs]), pick(corners), pick(outer))


@dataclass
class VisemeSet:
    """Solved viseme poses for one head."""

    names: tuple[str, ...]
    expression: np.ndarray  # (K, E) coefficients per viseme
    jaw: np.ndarray  # (K, 3) axis-angle per viseme
    achieved: np.ndarray  # (K, 3) reached (d_open, d_width, protrusion) in mouth widths
    mouth_width: float  # neutral mouth width (metres)
    neutral: np.ndarray  # (3,) neutral features (metres)
    jaw_axis: np.ndarray  # (3,) unit axis along which positive angles open the mouth
    components: tuple[str, ...]  # expression components the solver used

    def index(self, name: str) -> int:
        return self.names.index(name)


def _mouth_components(head: HeadModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, lower bounds, upper bounds) of the expression components the solver may use."""
    names = head.expr_names
    semantic = [i for i, n in enumerate(names) if n.lower().startswith("mouth")]
    if semantic:  # an ARKit-style head: mouth controls only, in their [0, 1] range
        idx = np.array(semantic)
        return idx, np.zeros(idx.size), np.ones(idx.size)
    idx = np.arange(head.n_expr)  # generic components (FLAME): all of them, both signs
    return idx, -3.0 * np.ones(idx.size), 3.0 * np.ones(idx.size)


_CACHE: dict[str, VisemeSet] = {}


def solve_visemes(head: HeadModel, targets: dict[str, tuple] | None = None) -> VisemeSet:
    """Viseme poses for ``head`` (cached per head content hash)."""
    lmk = b"" if head.lmk_faces is None else head.lmk_faces.tobytes() + head.lmk_bary.tobytes()
    lips = repr(head.meta.get("lip_vertices")) if isinstance(head.meta, dict) else ""
    key = f"{head.content_hash()}:{SOLVER_VERSION}:{hash((lmk, lips, head.lmk_scheme))}:" \
          f"{hash(tuple(sorted((targets or {}).items())))}"
    if key not in _CACHE:
        _CACHE[key] = _solve(head, dict(VISEME_TARGETS, **(targets or {})))
    return _CACHE[key]


def _solve(head: HeadModel, targets: dict[str, tuple]) -> VisemeSet:
    from scipy.optimize import lsq_linear

    lips = find_lip_points(head)
    v0, _ = head.forward()
    f0 = lips.features(v0)
    w0 = float(f0[1])
    if not w0 > 1e-6:
        raise VisemeError(f"head {head.name!r}: its mouth corners coincide; the lip landmarks look wrong")
    comp, lo, hi = _mouth_components(head)
    # Expression Jacobian at rest is exact (linear blendshapes, identity pose).
    J_e = _linear_features(lips, head.exprdirs[:, :, comp], v0) / w0
    # Jaw: finite differences on the jaw's x axis (pitch); orient so positive opens the mouth.
    has_jaw = head.n_joints > JAW
    axis = np.array([1.0, 0.0, 0.0])
    J_j = np.zeros(3)
    if has_jaw:
        J_j = (_features(head, lips, None, 0.02 * axis) - f0) / (0.02 * w0)
        if J_j[0] < 0:
            axis, J_j = -axis, -J_j
        if J_j[0] <= 1e-6:
            has_jaw = False  # the jaw joint does not open this mouth: lips do everything
    # Keep the rest of the face still: displacement of vertices far from the mouth is penalised.
    centre = lips._eval(lips.outer, v0).mean(axis=0)
    far = np.flatnonzero(np.linalg.norm(v0 - centre, axis=1) > 1.5 * w0)
    far = far[:: max(1, far.size // 400)]
    still = head.exprdirs[far][:, :, comp].reshape(-1, comp.size) / w0
    n_var = comp.size + 1
    reg = 1e-3 if np.all(lo >= 0) else 3e-3
    names, expr_out, jaw_out, achieved = [], [], [], []
    for name, (d_open, d_width, prot, jaw_open) in targets.items():
        goal = np.array([d_open, d_width, prot])
        aim = goal.copy()
        # protrusion matters where a viseme asks for it; elsewhere it is only a soft "keep as is"
        fw = np.array([3.0, 2.0, 2.0 if abs(prot) > 1e-9 else 0.7])
        x = np.zeros(n_var)
        for _ in range(3):  # frozen-Jacobian Newton: re-aim at the real (posed) residual
            A = np.vstack([
                np.column_stack([J_j, J_e.T]) * fw[:, None],
                np.concatenate([[0.5 * J_j[0]], np.zeros(comp.size)])[None, :],
                np.column_stack([np.zeros(still.shape[0]), 0.3 * still]),
                np.sqrt(reg) * np.eye(n_var)[1:],
            ])
            b = np.concatenate([aim * fw, [0.5 * jaw_open],
                                np.zeros(still.shape[0] + comp.size)])
            jaw_hi = 0.6 if has_jaw else 1e-9
            x = lsq_linear(A, b, bounds=(np.r_[0.0, lo], np.r_[jaw_hi, hi]), method="bvls").x
            reached = (_features(head, lips, _expr(head, comp, x[1:]), x[0] * axis) - f0) / w0
            aim = aim + (goal - reached)
        names.append(name)
        expr_out.append(_expr(head, comp, x[1:]))
        jaw_out.append(x[0] * axis)
        achieved.append(reached)
    return VisemeSet(tuple(names), np.array(expr_out), np.array(jaw_out), np.array(achieved), w0, f0, axis,
                     tuple(head.expr_names[i] for i in comp))


def _linear_features(lips: LipPoints, dirs: np.ndarray, v0: np.ndarray) -> np.ndarray:
    """Feature change per unit of each displacement field in ``dirs`` (V, 3, C): (C, 3)."""
    fields = np.moveaxis(dirs, 2, 0)  # (C, V, 3)
    return lips.features(v0[None] + fields) - lips.features(v0)[None]


def _expr(head: HeadModel, comp: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    e = np.zeros(head.n_expr)
    e[comp] = coeffs
    return e


def _features(head: HeadModel, lips: LipPoints, expression, jaw) -> np.ndarray:
    pose = np.zeros((head.n_joints, 3))
    if jaw is not None and head.n_joints > JAW:
        pose[JAW] = jaw
    v, _ = head.forward(expression=expression, pose=pose)
    return lips.features(v)


def mouth_features(head: HeadModel, expression: np.ndarray, jaw: np.ndarray, lips: LipPoints | None = None) -> np.ndarray:
    """Per-frame (opening, width, protrusion) in metres for expression (N, E) and jaw (N, 3)."""
    lips = lips or find_lip_points(head)
    return np.array([_features(head, lips, e, j) for e, j in zip(expression, jaw)])
