"""Rotation maths for the rig (pure numpy): Blender Euler XYZ <-> matrices, continuous Euler curves.

Blender's Euler XYZ applies X first: R = Rz @ Ry @ Rx.
"""

from __future__ import annotations

import numpy as np

from ...inference.heads.head_model import rodrigues


def matrix_to_euler_xyz(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> Blender Euler XYZ angles (..., 3) (principal solution)."""
    rot = np.asarray(rot, dtype=np.float64)
    cy = np.hypot(rot[..., 0, 0], rot[..., 1, 0])
    y = np.arctan2(-rot[..., 2, 0], cy)
    regular = cy > 1e-9
    x = np.where(regular, np.arctan2(rot[..., 2, 1], rot[..., 2, 2]), 0.0)
    z = np.where(regular, np.arctan2(rot[..., 1, 0], rot[..., 0, 0]), 0.0)
    # Gimbal lock (|y| = pi/2): only x -/+ z is defined; put it all on x.
    sy = np.sign(-rot[..., 2, 0])
    x = np.where(regular, x, np.arctan2(sy * rot[..., 0, 1], rot[..., 1, 1]))
    return np.stack([x, y, z], axis=-1)


def euler_xyz_to_matrix(eul: np.ndarray) -> np.ndarray:
    """Blender Euler XYZ angles (..., 3) -> rotation matrices (..., 3, 3), R = Rz @ Ry @ Rx."""
    eul = np.asarray(eul, dtype=np.float64)
    sx, sy, sz = np.sin(eul[..., 0]), np.sin(eul[..., 1]), np.sin(eul[..., 2])
    cx, cy, cz = np.cos(eul[..., 0]), np.cos(eul[..., 1]), np.cos(eul[..., 2])
    rows = [
        cy * cz, sx * sy * cz - cx * sz, cx * sy * cz + sx * sz,
        cy * sz, sx * sy * sz + cx * cz, cx * sy * sz - sx * cz,
        -sy, sx * cy, cx * cy,
    ]
    return np.stack(rows, axis=-1).reshape(eul.shape[:-1] + (3, 3))


def euler_compatible(eul: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The Euler XYZ triple equivalent to ``eul`` (same rotation) closest to ``ref``, elementwise.

    Considers both solutions (x, y, z) and (x + pi, pi - y, z + pi), each unwrapped by 2 pi.
    """
    eul = np.asarray(eul, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    alt = np.stack([eul[..., 0] + np.pi, np.pi - eul[..., 1], eul[..., 2] + np.pi], axis=-1)

    def unwrap(e: np.ndarray) -> np.ndarray:
        return e - 2 * np.pi * np.round((e - ref) / (2 * np.pi))

    a, b = unwrap(eul), unwrap(alt)
    use_b = np.abs(b - ref).sum(-1) < np.abs(a - ref).sum(-1) - 1e-12
    return np.where(use_b[..., None], b, a)


def axis_angle_to_euler_xyz(aa: np.ndarray, continuous: bool = False) -> np.ndarray:
    """Axis-angle (..., 3) -> Blender Euler XYZ (..., 3), vectorised.

    With ``continuous`` the first axis is time: each sample takes the equivalent Euler triple
    nearest to the previous one, so F-curves have no 2 pi jumps or flips (for keyframe writing).
    """
    eul = matrix_to_euler_xyz(rodrigues(np.asarray(aa, dtype=np.float64)))
    if continuous and eul.ndim >= 2 and eul.shape[0] > 1:
        for t in range(1, eul.shape[0]):
            eul[t] = euler_compatible(eul[t], eul[t - 1])
    return eul


def euler_xyz_to_axis_angle(eul: np.ndarray) -> np.ndarray:
    """Blender Euler XYZ (..., 3) -> axis-angle (..., 3) (the log map; exact for rotations below 180 degrees,
    which head, jaw and eye rotations always are)."""
    rot = euler_xyz_to_matrix(eul)
    vee = np.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                    rot[..., 1, 0] - rot[..., 0, 1]], axis=-1)
    cos = np.clip((np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    sin = np.sin(angle)
    scale = np.where(sin > 1e-8, angle / np.maximum(2.0 * sin, 1e-300), 0.5 + angle**2 / 12.0)
    return vee * scale[..., None]
