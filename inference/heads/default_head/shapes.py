"""Identity basis: a few smooth, named proportions (coefficient 1 ~ one standard deviation).

Eyeballs move rigidly with the field at their centre, so they stay spheres centred on their joints.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as A
from .geometry import Geometry
from .regions import bump, lip_coordinates, mouth_mask, smoothstep


def identity_basis(g: Geometry) -> tuple[list[str], np.ndarray]:
    p = g.verts
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    s, up = lip_coordinates(g)
    head = smoothstep(-0.16, -0.11, y)  # the neck stump keeps its base
    out: list[tuple[str, np.ndarray]] = []

    def f(dx, dy, dz) -> np.ndarray:
        return np.stack([np.broadcast_to(dx, x.shape), np.broadcast_to(dy, x.shape), np.broadcast_to(dz, x.shape)], 1)

    zero = np.zeros_like(x)
    out.append(("head_width", f(0.006 * x / 0.075 * head, zero, zero)))
    out.append(("cranium_height", f(zero, 0.007 * smoothstep(0.0, 0.11, y), 0.002 * smoothstep(0.0, 0.11, y) * (z < 0))))
    face_len = smoothstep(-0.02, -0.115, y) * smoothstep(-0.03, 0.03, z) * head
    out.append(("face_length", f(zero, -0.006 * face_len, 0.002 * face_len)))
    jaw = bump(p, [0.048, -0.075, 0.0], (0.035, 0.04, 0.05)) - bump(p, [-0.048, -0.075, 0.0], (0.035, 0.04, 0.05))
    out.append(("jaw_width", f(0.005 * jaw, zero, zero)))
    tip = bump(p, [0.0, -0.026, 0.118], (0.020, 0.024, 0.035))
    out.append(("nose_length", f(zero, -0.0015 * tip, 0.0045 * tip)))
    ala = bump(p, [0.012, -0.033, 0.098], (0.014, 0.014, 0.02)) - bump(p, [-0.012, -0.033, 0.098], (0.014, 0.014, 0.02))
    out.append(("nose_width", f(0.0030 * ala, zero, zero)))
    bridge = bump(p, [0.0, 0.008, 0.100], (0.012, 0.022, 0.03))
    out.append(("nose_bridge", f(zero, zero, 0.0030 * bridge)))
    lips = mouth_mask(p) * np.exp(-((s / 0.012) ** 2))
    out.append(("lip_fullness", f(zero, 0.14 * s * lips, 0.0022 * lips)))
    mw = mouth_mask(p, 1.2)
    out.append(("mouth_width", f(0.12 * x * mw, zero, zero)))
    eye = bump(p, A.EYE_L, (0.030, 0.030, 0.04)) - bump(p, A.EYE_R, (0.030, 0.030, 0.04))
    out.append(("eye_spacing", f(0.0025 * eye, zero, zero)))
    brow = bump(p, [0.0, 0.034, 0.084], (0.065, 0.020, 0.04))
    out.append(("brow_ridge", f(zero, zero, 0.0035 * brow)))
    chin = bump(p, [0.0, -0.100, 0.085], (0.028, 0.026, 0.04))
    out.append(("chin_projection", f(zero, -0.0015 * chin, 0.0055 * chin)))
    ck = bump(p, [0.046, -0.010, 0.050], (0.03, 0.028, 0.04)) - bump(p, [-0.046, -0.010, 0.050], (0.03, 0.028, 0.04))
    out.append(("cheekbones", f(0.0045 * ck, zero, 0.002 * np.abs(ck))))
    neck = smoothstep(-0.10, -0.14, y) * (g.verts[:, 1] > -1)
    out.append(("neck_thickness", f(0.10 * x * neck, zero, 0.10 * (z - A.NECK_CENTER_Z) * neck)))
    fh = bump(p, [0.0, 0.075, 0.080], (0.07, 0.04, 0.05))
    out.append(("forehead_slope", f(zero, zero, 0.0045 * fh)))
    names = [n for n, _ in out]
    dirs = np.stack([d for _, d in out], axis=2)
    # Rigid eyeballs: every eyeball vertex takes the displacement of its eye's centre region.
    for ids in g.eyeball_ids.values():
        dirs[ids] = dirs[ids].mean(axis=0, keepdims=True)
    # Teeth too move rigidly (each row with its own mean displacement), except that they follow the mouth width.
    mw = names.index("mouth_width")
    for ids in g.teeth_ids.values():
        keep = dirs[ids, :, mw].copy()
        dirs[ids] = dirs[ids].mean(axis=0, keepdims=True)
        dirs[ids, :, mw] = keep
    return names, dirs
