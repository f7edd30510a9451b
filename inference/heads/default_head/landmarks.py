"""MediaPipe Face Mesh (478-point) landmarks embedded on the default head by construction.

Index meanings follow mediapipe.solutions.face_mesh_connections (FACEMESH_LIPS, *_EYE, *_EYEBROW,
FACE_OVAL, NOSE; "left" is the subject's left = +X here). Only the integer ids are encoded; positions
come from this head's own features: lip contours on the lip line and vermilion borders, eye contours
on the lid margins, iris centres on the cornea apex, the rest by a frontal projection onto the skin.
"""

from __future__ import annotations

import numpy as np

from . import anatomy as A
from .brows import brow_edges, brow_line, ray_front, vertex_normals
from .geometry import Geometry
from .grid import LOWER_LIP_H, UPPER_LIP_H

# (mediapipe id, position along the mouth from the subject's right corner -1 to the left corner +1)
LIP_UPPER_OUTER = ((185, -0.8), (40, -0.55), (39, -0.32), (37, -0.13), (0, 0.0), (267, 0.13), (269, 0.32),
                   (270, 0.55), (409, 0.8))
LIP_LOWER_OUTER = ((146, -0.8), (91, -0.58), (181, -0.36), (84, -0.16), (17, 0.0), (314, 0.16), (405, 0.36),
                   (321, 0.58), (375, 0.8))
LIP_UPPER_INNER = ((78, -0.96), (191, -0.8), (80, -0.58), (81, -0.36), (82, -0.16), (13, 0.0), (312, 0.16),
                   (311, 0.36), (310, 0.58), (415, 0.8), (308, 0.96))
LIP_LOWER_INNER = ((95, -0.8), (88, -0.58), (178, -0.36), (87, -0.16), (14, 0.0), (317, 0.16), (402, 0.36),
                   (318, 0.58), (324, 0.8))
LIP_CORNERS = ((61, -1), (291, 1))
# Eye contours: fraction from the outer canthus (0) to the inner canthus (1).
_EYE_F = (0.10, 0.22, 0.36, 0.50, 0.63, 0.76, 0.89)
EYE_R = {"outer": 33, "inner": 133, "upper": (246, 161, 160, 159, 158, 157, 173), "lower": (7, 163, 144, 145, 153, 154, 155)}
EYE_L = {"outer": 263, "inner": 362, "upper": (466, 388, 387, 386, 385, 384, 398), "lower": (249, 390, 373, 374, 380, 381, 382)}
IRIS_CENTRE = {"R": 468, "L": 473}
# Eyebrows: outer -> inner, upper edge then lower edge.
BROW_R = ((70, 63, 105, 66, 107), (46, 53, 52, 65, 55))
BROW_L = ((300, 293, 334, 296, 336), (276, 283, 282, 295, 285))
# Face oval, starting at the forehead top and going down the subject's left (+X) side.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# Midline points (nose bridge -> subnasale, chin) and paired nose points (right id, left id, x, y).
MIDLINE = ((168, 0.024), (6, 0.013), (197, 0.002), (195, -0.008), (5, -0.016), (4, -0.023), (1, -0.028),
           (19, -0.033), (94, -0.038), (2, -0.0415), (18, -0.080), (200, -0.089), (199, -0.097), (175, -0.106))
NOSE_PAIRS = ((98, 327, 0.0150, -0.0375), (64, 294, 0.0175, -0.0330), (48, 278, 0.0150, -0.0270),
              (115, 344, 0.0125, -0.0200), (220, 440, 0.0085, -0.0100), (45, 275, 0.0060, -0.0230),
              (97, 326, 0.0070, -0.0405))


def _edge_point(faces: np.ndarray, va: int, vb: int, t: float) -> tuple[int, np.ndarray]:
    """Point (1-t) va + t vb on a skin face that holds the edge va-vb."""
    has = (faces == va).any(1) & (faces == vb).any(1)
    f = int(np.flatnonzero(has)[0])
    bary = np.zeros(3)
    bary[list(faces[f]).index(va)] = 1 - t
    bary[list(faces[f]).index(vb)] = t
    return f, bary


def _along(faces: np.ndarray, chain: np.ndarray, key: np.ndarray, target: float) -> tuple[int, np.ndarray]:
    """Embed the point of a vertex chain where the monotone ``key`` reaches ``target``."""
    order = np.argsort(key)
    chain, key = chain[order], key[order]
    target = float(np.clip(target, key[0], key[-1]))
    i = int(np.clip(np.searchsorted(key, target) - 1, 0, len(key) - 2))
    t = (target - key[i]) / max(key[i + 1] - key[i], 1e-12)
    return _edge_point(faces, int(chain[i]), int(chain[i + 1]), float(np.clip(t, 0, 1)))


def embed_landmarks(g: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(lmk_faces, lmk_bary, lmk_ids) in mediapipe478 numbering, plus named vertex sets for meta."""
    v = g.verts
    skin_faces = g.grid.faces  # the skin grid's faces come first in the mesh
    grid = g.grid
    out: list[tuple[int, int, np.ndarray]] = []
    ms = grid.slits["mouth"]
    c_r, c_l = grid.vid(ms.row, ms.corner_lo), grid.vid(ms.row, ms.corner_hi)
    upper = np.concatenate([[c_r], ms.upper, [c_l]])
    lower = np.concatenate([[c_r], ms.lower, [c_l]])
    half = v[c_l, 0]
    for mp, t in LIP_UPPER_INNER:
        out.append((mp, *_along(skin_faces, upper, v[upper, 0], t * half)))
    for mp, t in LIP_LOWER_INNER:
        out.append((mp, *_along(skin_faces, lower, v[lower, 0], t * half)))
    for mp, t in LIP_CORNERS:
        vid = c_l if t > 0 else c_r
        f = int(np.flatnonzero((skin_faces == vid).any(1))[0])
        out.append((mp, f, (skin_faces[f] == vid).astype(np.float64)))
    r = float(np.linalg.norm(A.STOMION - A.CENTER))
    for table, h, sign in ((LIP_UPPER_OUTER, UPPER_LIP_H * 0.92, 1), (LIP_LOWER_OUTER, LOWER_LIP_H * 0.92, -1)):
        for mp, t in table:
            hh = h * (1 - (0.55 if sign > 0 else 0.60) * t * t) * r
            out.append((mp, *ray_front(v, skin_faces, t * half, A.STOMION[1] + sign * hh)))
    eye_sets = {}
    for k, spec in (("L", EYE_L), ("R", EYE_R)):
        s = grid.slits[f"eye_{k}"]
        lo_c, hi_c = grid.vid(s.row, s.corner_lo), grid.vid(s.row, s.corner_hi)
        up = np.concatenate([[lo_c], s.upper, [hi_c]])
        dn = np.concatenate([[lo_c], s.lower, [hi_c]])
        x_in, x_out = (v[lo_c, 0], v[hi_c, 0]) if k == "L" else (v[hi_c, 0], v[lo_c, 0])
        for chain, ids in ((up, spec["upper"]), (dn, spec["lower"])):
            for mp, f in zip(ids, _EYE_F):
                out.append((mp, *_along(skin_faces, chain, v[chain, 0], x_out + f * (x_in - x_out))))
        for mp, vid in ((spec["outer"], hi_c if k == "L" else lo_c), (spec["inner"], lo_c if k == "L" else hi_c)):
            f = int(np.flatnonzero((skin_faces == vid).any(1))[0])
            out.append((mp, f, (skin_faces[f] == vid).astype(np.float64)))
        eye_sets[k] = {"upper": up.tolist(), "lower": dn.tolist(), "inner_corner": int(lo_c if k == "L" else hi_c),
                       "outer_corner": int(hi_c if k == "L" else lo_c)}
    # Iris centres: the eyeball's front pole (the last vertex of each eyeball).
    for k, mp in IRIS_CENTRE.items():
        vid = int(g.eyeball_ids[k][-1])
        f = int(np.flatnonzero((g.faces == vid).any(1))[0])
        out.append((mp, f, (g.faces[f] == vid).astype(np.float64)))
        eye_sets[k]["iris_centre"] = vid
    # Brows: an arched band above each eye.
    for (up_ids, lo_ids), sgn in ((BROW_L, 1.0), (BROW_R, -1.0)):
        for mp_up, mp_lo, f in zip(up_ids, lo_ids, (1.0, 0.75, 0.5, 0.25, 0.0)):
            x, y = brow_line(f)
            top, bottom = brow_edges(f)
            out.append((mp_up, *ray_front(v, skin_faces, sgn * float(x), float(y + top))))
            out.append((mp_lo, *ray_front(v, skin_faces, sgn * float(x), float(y - bottom))))
    for mp, y in MIDLINE:
        out.append((mp, *ray_front(v, skin_faces, 0.0, y)))
    for mr, ml, x, y in NOSE_PAIRS:
        out.append((mr, *ray_front(v, skin_faces, -x, y)))
        out.append((ml, *ray_front(v, skin_faces, x, y)))
    out += _face_oval(g)
    ids = np.array([o[0] for o in out], dtype=np.int64)
    if len(set(ids.tolist())) != len(ids):
        raise RuntimeError("default head: duplicate landmark ids")
    lf = np.array([o[1] for o in out], dtype=np.int64)
    lb = np.array([o[2] for o in out], dtype=np.float64)
    return lf, lb, ids, eye_sets


def _face_oval(g: Geometry) -> list[tuple[int, int, np.ndarray]]:
    """The frontal outline of the face: forehead top, temples, cheeks, jaw, chin (frontal projection)."""
    v = g.verts[: g.n_skin]
    n = vertex_normals(g.verts, g.faces)[: g.n_skin]
    centre = np.array([0.0, -0.012])
    front = (n[:, 2] > 0.28) & (v[:, 2] > 0.0) & (np.abs(v[:, 0]) < 0.070) & (v[:, 1] > A.STOMION[1] - 0.056)
    rel = v[:, :2] - centre
    ang = np.arctan2(rel[:, 0], rel[:, 1])  # 0 = up, + towards +X
    dist = np.linalg.norm(rel, axis=1)
    out = []
    top = 0.074
    for k, mp in enumerate(FACE_OVAL):
        a = 2 * np.pi * k / len(FACE_OVAL)
        a = (a + np.pi) % (2 * np.pi) - np.pi
        wedge = front & (np.abs(np.angle(np.exp(1j * (ang - a)))) < 0.06)
        cand = np.flatnonzero(wedge)
        vid = int(cand[np.argmax(dist[cand])])
        # The forehead has no silhouette from the front: cap the oval at the hairline.
        if v[vid, 1] > top:
            ok = cand[v[cand, 1] <= top]
            vid = int(ok[np.argmax(dist[ok])])
        f = int(np.flatnonzero((g.grid.faces == vid).any(1))[0])
        out.append((mp, f, (g.grid.faces[f] == vid).astype(np.float64)))
    return out
