"""Assembles the rest geometry: skin grid + mouth bag + eye cups + eyeballs, with region bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import anatomy as A
from .brows import brow_slab
from .cavities import boundary_loop, eye_cup, eyeball, mouth_bag, tube_faces
from .grid import SkinGrid, build_grid, skin_positions
from .teeth import tooth_row


@dataclass
class Geometry:
    grid: SkinGrid
    verts: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    n_skin: int
    mouth_loop: np.ndarray  # boundary ids (bag winding order)
    mouth_side: np.ndarray  # +1 upper / -1 lower / 0 corner per boundary vertex
    mouth_bag_ids: np.ndarray  # bag vertices (loops then cap)
    mouth_bag_side: np.ndarray  # side of the boundary vertex each bag vertex hangs from (cap: 0)
    eye_loops: dict  # "L"/"R" -> boundary ids
    cup_ids: dict  # "L"/"R" -> cup vertex ids
    eyeball_ids: dict  # "L"/"R" -> eyeball vertex ids
    eye_centers: dict
    skin_phi: np.ndarray  # warped elevation per skin vertex
    line_phi: np.ndarray  # lip-line elevation at each skin vertex's azimuth
    teeth_ids: dict  # "upper"/"lower" -> tooth-row vertex ids
    face_parts: dict  # part name -> (first face, end face) in the face array
    brow_ids: dict  # "L"/"R" -> brow slab vertex ids
    brow_attach: tuple  # (vertex ids, skin triangle (n, 3), barycentric (n, 3)): what each brow vertex rides


def cavity_positions(g: Geometry, skin: np.ndarray) -> np.ndarray:
    """Bag and cup positions that hang from the given skin positions (for rest and lid poses)."""
    out = []
    bag, _, _ = mouth_bag(skin[g.mouth_loop], g.mouth_side, 0)
    out.append(bag)
    for k in ("L", "R"):
        cup, _, _ = eye_cup(skin[g.eye_loops[k]], g.eye_centers[k], 0)
        out.append(cup)
    return np.concatenate(out)


def build_geometry() -> Geometry:
    grid = build_grid()
    skin, pw, line = skin_positions(grid, with_params=True)
    n = grid.n_vertices
    verts = [skin]
    faces = [grid.faces]
    nid = n
    m_loop, m_side = boundary_loop(grid, grid.slits["mouth"])
    bag, loops, nid2 = mouth_bag(skin[m_loop], m_side, nid)
    cap = nid2
    faces.append(tube_faces([m_loop] + loops, cap))
    bag_ids = np.arange(nid, cap + 1)
    bag_side = np.concatenate([np.tile(m_side, len(loops)), [0]])
    verts.append(bag)
    nid = cap + 1
    eye_loops, cup_ids, ball_ids = {}, {}, {}
    centers = {"L": A.EYE_L.copy(), "R": A.EYE_R.copy()}
    for k in ("L", "R"):
        loop, _ = boundary_loop(grid, grid.slits[f"eye_{k}"])
        cup, cloops, nid2 = eye_cup(skin[loop], centers[k], nid)
        faces.append(tube_faces([loop] + cloops, nid2))
        verts.append(cup)
        eye_loops[k], cup_ids[k] = loop, np.arange(nid, nid2 + 1)
        nid = nid2 + 1
    for k in ("L", "R"):
        ball, bf = eyeball(centers[k], nid)
        verts.append(ball)
        faces.append(bf)
        ball_ids[k] = np.arange(nid, nid + len(ball))
        nid += len(ball)
    teeth_ids = {}
    for k in ("upper", "lower"):
        tv, tf = tooth_row(k == "upper", nid)
        verts.append(tv)
        faces.append(tf)
        teeth_ids[k] = np.arange(nid, nid + len(tv))
        nid += len(tv)
    brow_ids, attach = {}, ([], [], [])
    for k, sign in (("L", 1.0), ("R", -1.0)):
        bv, bf, tris, bary = brow_slab(skin, grid.faces, sign, nid)
        verts.append(bv)
        faces.append(bf)
        brow_ids[k] = np.arange(nid, nid + len(bv))
        for lst, a in zip(attach, (brow_ids[k], tris, bary)):
            lst.append(a)
        nid += len(bv)
    v = np.concatenate(verts)
    assert v.shape[0] == nid
    # Face ranges per part, in the order appended above (materials are assigned from these).
    names = ["skin", "mouth_bag", "eye_cup_L", "eye_cup_R", "eyeball_L", "eyeball_R", "teeth_upper", "teeth_lower",
             "brow_L", "brow_R"]
    ends = np.cumsum([len(f) for f in faces])
    parts = {k: (int(e - len(f)), int(e)) for k, f, e in zip(names, faces, ends)}
    return Geometry(grid, v, np.concatenate(faces), n, m_loop, m_side, bag_ids, bag_side, eye_loops, cup_ids,
                    ball_ids, centers, pw, line, teeth_ids, parts, brow_ids,
                    tuple(np.concatenate(a) for a in attach))
