"""Anatomical constants of the Cadence default head (metres, FLAME axes: +Y up, +Z out of the face, +X left).

Proportions follow adult averages: head height vertex-chin ~0.23 m, width ~0.15 m, interpupillary
distance ~64 mm, eyeball radius 12 mm. Everything else in the package is derived from these numbers.
"""

from __future__ import annotations

import numpy as np

# Centre from which the skin is cast (a star-shaped surface around this point).
CENTER = np.array([0.0, -0.0250, 0.0])

# Eyes (subject's left = +X).
EYE_RADIUS = 0.0120
EYE_L = np.array([0.0320, 0.0120, 0.0610])
EYE_R = EYE_L * np.array([-1.0, 1.0, 1.0])
LID_SHELL = EYE_RADIUS + 0.0014  # the lids ride on this sphere
CUP_RADIUS = EYE_RADIUS + 0.0007  # the socket lining behind the eyeball
# Palpebral fissure, as angles about the eye centre (radians, + towards the temple).
EYE_INNER = -0.86  # inner canthus azimuth offset from the eye's own forward axis
EYE_OUTER = 0.92
LID_UPPER = 0.40  # how far the upper lid margin is raised (rad of the cast elevation, scaled)
LID_LOWER = 0.30

# Mouth.
STOMION = np.array([0.0, -0.0620, 0.0960])  # lip contact point on the midline
MOUTH_HALF_WIDTH = 0.0245  # corner x

# Jaw hinge (temporomandibular joint), in front of and below the ear canal.
JAW_HINGE = np.array([0.0, -0.0200, -0.0050])

# Neck stump.
NECK_BOTTOM = -0.195
NECK_CENTER_Z = -0.0150
NECK_RX, NECK_RZ = 0.0530, 0.0580

# Angular layout of the skin grid (radians, cast from CENTER).
N_COLUMNS = 112
COLUMN_FRONT_DENSITY = 0.62  # 0 = uniform, towards 1 = columns crowd the face


def direction(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit casting directions for azimuth ``theta`` (0 = +Z, + towards +X) and elevation ``phi``."""
    theta = np.asarray(theta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    c = np.cos(phi)
    return np.stack([c * np.sin(theta), np.sin(phi), c * np.cos(theta)], axis=-1)


def angles_of(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(theta, phi) of points as seen from CENTER."""
    d = np.asarray(p, dtype=np.float64) - CENTER
    theta = np.arctan2(d[..., 0], d[..., 2])
    phi = np.arctan2(d[..., 1], np.hypot(d[..., 0], d[..., 2]))
    return theta, phi


EYE_THETA, EYE_PHI = (float(a) for a in angles_of(EYE_L + np.array([0.0, 0.0, LID_SHELL])))
MOUTH_THETA = float(angles_of(STOMION + np.array([MOUTH_HALF_WIDTH, 0.0, -0.018]))[0])
STOMION_PHI = float(angles_of(STOMION)[1])
