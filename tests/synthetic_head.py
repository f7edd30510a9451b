"""A small synthetic FLAME-format head with a mouth, for the lip-engine tests.

Two lip rows (inner upper/lower, outer upper/lower), corners, a chin skinned to the jaw joint and a
forehead; six generic components expr_000..005 whose effect is known by construction:
  0 opens the lips (8 mm per unit), 1 widens the mouth, 2 protrudes the lips,
  3 raises the forehead only (irrelevant to visemes), 4 opens a little *and* moves the forehead,
  5 puckers (narrows + protrudes).
"""

from __future__ import annotations

import numpy as np

from inference.heads.head_model import HeadModel


def build(with_landmarks: bool = True, lip_vertices: bool = False) -> HeadModel:
    from scipy.spatial import Delaunay

    xs = np.linspace(-0.022, 0.022, 11)
    z = lambda x: 0.10 - 8.0 * x**2  # noqa: E731 - a curved face
    rows = {"ui": 0.0004, "li": -0.0004, "uo": 0.009, "lo": -0.011}
    pts, idx = [], {}
    for name, y in rows.items():
        idx[name] = list(range(len(pts), len(pts) + xs.size))
        pts += [(x, y, z(x) + (0.004 if name in ("uo", "lo") else 0.0)) for x in xs]
    idx["corners"] = [len(pts), len(pts) + 1]
    pts += [(0.026, 0.0, z(0.026)), (-0.026, 0.0, z(0.026))]
    grid = [(x, y, z(x) - 0.01) for x in np.linspace(-0.07, 0.07, 8) for y in (-0.06, -0.035, 0.03, 0.06, 0.09)]
    idx["far"] = list(range(len(pts), len(pts) + len(grid)))
    pts += grid
    pts += [(-0.036, 0.0, z(0.036)), (0.036, 0.0, z(0.036))]  # cheeks: close the mesh at the sides
    n_face = len(pts)
    faces = Delaunay(np.array(pts)[:, :2]).simplices.astype(np.int64)
    joints = np.array([[0, 0, 0], [0, -0.05, 0], [0, -0.005, 0.01], [0.03, 0.04, 0.08], [-0.03, 0.04, 0.08]])
    v = np.vstack([np.array(pts), joints])
    V = v.shape[0]
    jreg = np.zeros((5, V))
    jreg[np.arange(5), n_face + np.arange(5)] = 1.0
    w = np.zeros((V, 5))
    lower = v[:, 1] < -0.0001
    w[:, 1] = 1.0
    w[lower, 1], w[lower, 2] = 0.0, 1.0
    w[n_face:] = np.eye(5)
    E = np.zeros((V, 3, 6))
    lips = idx["ui"] + idx["li"] + idx["uo"] + idx["lo"]
    E[idx["ui"], 1, 0], E[idx["li"], 1, 0] = 0.004, -0.004
    E[idx["uo"], 1, 0], E[idx["lo"], 1, 0] = 0.002, -0.002
    for k in lips + idx["corners"]:
        E[k, 0, 1] = 0.15 * v[k, 0]  # widen
        E[k, 0, 5] = -0.12 * v[k, 0]  # narrow ...
        E[k, 2, 5] = 0.003  # ... and protrude: pucker
        E[k, 2, 2] = 0.004  # protrude
    for k in idx["far"]:
        if v[k, 1] > 0.05:
            E[k, 1, 3] = 0.01
            E[k, 1, 4] = 0.01
    E[idx["ui"], 1, 4], E[idx["li"], 1, 4] = 0.002, -0.002
    head = HeadModel(
        name="synthetic-mouth", v_template=v, faces=faces, shapedirs=np.zeros((V, 3, 2)), exprdirs=E,
        posedirs=np.zeros((V, 3, 36)), j_regressor=jreg, weights=w, meta={"format": "flame"},
    )
    if lip_vertices:
        head.meta["lip_vertices"] = {
            "upper_inner": idx["ui"], "lower_inner": idx["li"], "corner_L": idx["corners"][0],
            "corner_R": idx["corners"][1], "upper_outer_mid": idx["uo"][5], "lower_outer_mid": idx["lo"][5],
        }
    if with_landmarks:
        # a 68-point embedding where the mouth points (48-67) sit on lip vertices, the rest on the forehead
        want = {48: idx["corners"][1], 54: idx["corners"][0], 51: idx["uo"][5], 57: idx["lo"][5],
                61: idx["ui"][3], 62: idx["ui"][5], 63: idx["ui"][7], 67: idx["li"][3], 66: idx["li"][5],
                65: idx["li"][7]}
        lf, lb = [], []
        for i in range(68):
            vid = want.get(i, idx["far"][i % len(idx["far"])])
            f = int(np.flatnonzero((faces == vid).any(axis=1))[0])
            lf.append(f)
            lb.append((faces[f] == vid).astype(float))
        head.lmk_faces, head.lmk_bary, head.lmk_ids, head.lmk_scheme = np.array(lf), np.array(lb), None, "ibug68"
        head.validate()
    return head
