"""Upper and lower rows of teeth inside the mouth bag: closed shells swept along the dental arches.

Each row is a tube whose cross-section is a tooth profile (labial face, incisal / occlusal edge,
lingual face, a root end hidden in the gum) swept along an elliptic arch. Embrasures (the small
notches between neighbouring teeth) are cut into the edge and the labial face, so the row reads
as separate incisors, canines and premolars at preview resolution with a few hundred vertices.
The upper row rides the head (neck joint), the lower row the jaw.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as A

# Mesio-distal widths (m) from the midline backwards: central, lateral incisor, canine, two premolars.
UPPER_WIDTHS = (0.0086, 0.0066, 0.0076, 0.0069, 0.0066)
LOWER_WIDTHS = (0.0054, 0.0059, 0.0068, 0.0070, 0.0070)
SAMPLES_PER_TOOTH = 4
OVERJET = 0.0026  # the lower incisors sit this far behind the upper ones
UPPER_FRONT_Z = A.STOMION[2] - 0.0062  # labial face of the upper central incisors, behind the lips


def _arch(z0: float, half_width: float, depth: float, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points and outward normals (x, z) at arc lengths ``s`` (signed, 0 = midline) along an elliptic arch."""
    t = np.linspace(0.0, np.pi / 2, 400)
    xz = np.stack([half_width * np.sin(t), z0 - depth * (1.0 - np.cos(t))], 1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xz, axis=0), axis=1))])
    tt = np.interp(np.abs(s), arc, t)
    sign = np.sign(s) + (s == 0)
    pts = np.stack([sign * half_width * np.sin(tt), z0 - depth * (1.0 - np.cos(tt))], 1)
    # Outward (towards the lips and cheeks) normal of the ellipse, mirrored on the right side.
    nrm = np.stack([sign * depth * np.sin(tt), half_width * np.cos(tt)], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return pts, nrm


def _profile(kind: np.ndarray, notch: np.ndarray, cusp: np.ndarray) -> np.ndarray:
    """Cross-section rings (N, 6, 2) in (outward, into-the-gum) coordinates for each arch sample."""
    edge = 0.0010 + 0.0048 * kind  # incisal edge (incisors) widening to an occlusal table (premolars)
    thick = 0.0064 + 0.0016 * kind
    lift = 0.0014 * notch - 0.0009 * cusp  # embrasures rise, the canine cusp points
    inset = 0.0006 * notch
    ring = np.stack([
        np.stack([-inset, 0.0002 + lift], 1),
        np.stack([0.0004 - inset, 0.0042 + 0.5 * lift], 1),
        np.stack([0.0001 - 0.5 * inset, 0.0095 + 0 * lift], 1),
        np.stack([-thick + 0 * lift, 0.0095 + 0 * lift], 1),
        np.stack([-0.55 * thick - 0.4 * edge, 0.0040 + 0.5 * lift], 1),
        np.stack([-edge + 0.5 * inset, lift], 1),
    ], 1)
    return ring


def tooth_row(upper: bool, first_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) and outward-wound faces of one closed row of teeth."""
    widths = np.array(UPPER_WIDTHS if upper else LOWER_WIDTHS)
    edges = np.concatenate([[0.0], np.cumsum(widths)])
    half = []
    kinds, notch, cusp = [], [], []
    for i, w in enumerate(widths):
        for k in range(SAMPLES_PER_TOOTH + (1 if i == len(widths) - 1 else 0)):
            p = k / SAMPLES_PER_TOOTH
            half.append(edges[i] + p * w)
            kinds.append(np.clip((i - 1.5) / 2.0, 0.0, 1.0))
            notch.append(np.exp(-((min(p, 1.0 - p) / 0.16) ** 2)))
            cusp.append(np.sin(np.pi * p) ** 2 if i == 2 else 0.0)
    half = np.array(half)
    # Mirror to a full arch (midline sample shared): subject's right (-X) to left (+X).
    s = np.concatenate([-half[:0:-1], half])
    mirror = lambda a: np.concatenate([np.asarray(a)[:0:-1], np.asarray(a)])  # noqa: E731
    kind, nt, cu = mirror(kinds), mirror(notch), mirror(cusp)
    nt[len(half) - 1] = 1.0  # the midline is the embrasure between the central incisors
    if upper:
        xz, nrm = _arch(UPPER_FRONT_Z, 0.0245, 0.0270, s)
        y_edge, up = A.STOMION[1] - 0.0025, 1.0
    else:
        xz, nrm = _arch(UPPER_FRONT_Z - OVERJET, 0.0225, 0.0255, s)
        y_edge, up = A.STOMION[1] - 0.0020, -1.0
    ring = _profile(kind, nt, cu)  # (N, 6, 2)
    pts = np.zeros(ring.shape[:2] + (3,))
    pts[..., 0] = xz[:, None, 0] + ring[..., 0] * nrm[:, None, 0]
    pts[..., 2] = xz[:, None, 1] + ring[..., 0] * nrm[:, None, 1]
    pts[..., 1] = y_edge + up * ring[..., 1]
    n_s, n_r = ring.shape[:2]
    verts = pts.reshape(-1, 3)
    ends = [verts[:n_r].mean(0), verts[-n_r:].mean(0)]
    verts = np.concatenate([verts, ends])
    vid = lambda i, j: first_id + i * n_r + j % n_r  # noqa: E731
    faces = []
    for i in range(n_s - 1):
        for j in range(n_r):
            faces += [(vid(i, j), vid(i + 1, j), vid(i + 1, j + 1)), (vid(i, j), vid(i + 1, j + 1), vid(i, j + 1))]
    c0, c1 = first_id + n_s * n_r, first_id + n_s * n_r + 1
    for j in range(n_r):
        faces += [(c0, vid(0, j), vid(0, j + 1)), (c1, vid(n_s - 1, j + 1), vid(n_s - 1, j))]
    faces = np.array(faces, dtype=np.int64)
    # Wind outwards whatever the profile's orientation (upper and lower rows are mirrored in y).
    t = verts[faces - first_id]
    if np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() < 0:
        faces = faces[:, ::-1]
    return verts, faces
