"""Joints (regressed from vertices that no expression moves) and smooth skinning weights."""

from __future__ import annotations

import numpy as np

from . import anatomy as A
from .geometry import Geometry
from .regions import bump, lip_coordinates, smoothstep

ROOT, NECK, JAW, EYE_L, EYE_R = range(5)
NECK_TARGET = np.array([0.0, -0.100, -0.022])  # top of the neck, under the skull


def anchor_groups(g: Geometry) -> dict[str, np.ndarray]:
    """Vertex groups that expressions leave alone: their centroids carry the joint regressor."""
    v = g.verts
    skin = np.arange(g.n_skin)
    vs = v[:g.n_skin]
    groups = {
        "stump": skin[vs[:, 1] < A.NECK_BOTTOM + 0.004],
        "occiput": skin[(vs[:, 2] < -0.070) & (np.abs(vs[:, 1] - 0.02) < 0.03)],
        "crown": skin[vs[:, 1] > 0.095],
        "eyes": np.concatenate([g.eyeball_ids["L"], g.eyeball_ids["R"]]),
        "nape": skin[(vs[:, 2] < -0.04) & (np.abs(vs[:, 1] + 0.09) < 0.012)],
    }
    for k, ids in groups.items():
        if len(ids) < 3:
            raise RuntimeError(f"default head: joint anchor group {k!r} is empty")
    return groups


def joint_regressor(g: Geometry) -> np.ndarray:
    V = g.verts.shape[0]
    groups = anchor_groups(g)
    names = ["stump", "occiput", "crown", "eyes", "nape"]
    R = np.zeros((len(names), V))
    for i, k in enumerate(names):
        R[i, groups[k]] = 1.0 / len(groups[k])
    cent = R @ g.verts  # (G, 3); x = 0 by symmetry

    def hit(target: np.ndarray) -> np.ndarray:
        # Minimum-norm affine weights (sum 1) over the centroids that reproduce target's (y, z).
        M = np.vstack([cent[:, 1], cent[:, 2], np.ones(len(names))])
        w = np.linalg.lstsq(M, np.array([target[1], target[2], 1.0]), rcond=None)[0]
        return w @ R

    J = np.zeros((5, V))
    J[ROOT] = R[0]
    J[NECK] = hit(NECK_TARGET)
    J[JAW] = hit(A.JAW_HINGE)
    J[EYE_L, g.eyeball_ids["L"]] = 1.0 / len(g.eyeball_ids["L"])
    J[EYE_R, g.eyeball_ids["R"]] = 1.0 / len(g.eyeball_ids["R"])
    return J


def jaw_weight(g: Geometry) -> np.ndarray:
    """Jaw influence: the mandible below a line from the mouth corners to the hinge, fading into the neck."""
    p = g.verts
    y, z = p[:, 1], p[:, 2]
    # Upper border: the lip line at the front, rising to the hinge at the back.
    t = np.clip((z - A.JAW_HINGE[2]) / (0.078 - A.JAW_HINGE[2]), 0, 1)
    y_top = A.JAW_HINGE[1] - 0.010 + t * (A.STOMION[1] - A.JAW_HINGE[1] + 0.010)
    w_up = smoothstep(y_top + 0.014, y_top - 0.014, y)
    # Lower border: the mandible's lower edge, chin to gonion; fade out into the throat.
    y_low = -0.078 + t * (-0.117 + 0.078)
    w_low = smoothstep(y_low - 0.030, y_low + 0.002, y)
    w_back = smoothstep(A.JAW_HINGE[2] - 0.025, A.JAW_HINGE[2] + 0.020, z)
    w = w_up * w_low * w_back
    # The lips: exact split on the slit, blending into the generic field within ~1.5 cm.
    s, up = lip_coordinates(g)
    lat = np.abs(p[:, 0]) / A.MOUTH_HALF_WIDTH
    alpha = np.exp(-((s / 0.011) ** 2)) * smoothstep(1.45, 0.85, lat) * bump(p, A.STOMION, (0.05, 0.04, 0.06)) ** 0.25
    lip = 1.0 - up
    w = (1.0 - alpha) * w + alpha * lip
    w[g.mouth_bag_ids] = 1.0 - up[g.mouth_bag_ids]
    return np.clip(w, 0.0, 1.0)


def skinning_weights(g: Geometry) -> np.ndarray:
    V = g.verts.shape[0]
    W = np.zeros((V, 5))
    w_jaw = jaw_weight(g)
    w_root = smoothstep(-0.135, -0.175, g.verts[:, 1])
    w_root = np.minimum(w_root, 1.0 - w_jaw)
    W[:, JAW] = w_jaw
    W[:, ROOT] = w_root
    W[:, NECK] = 1.0 - w_jaw - w_root
    for k, j in (("L", EYE_L), ("R", EYE_R)):
        W[g.eyeball_ids[k]] = 0.0
        W[g.eyeball_ids[k], j] = 1.0
    # Teeth are rigid: the upper row rides the skull (with the upper face), the lower row the mandible.
    for k, j in (("upper", NECK), ("lower", JAW)):
        W[g.teeth_ids[k]] = 0.0
        W[g.teeth_ids[k], j] = 1.0
    return W
