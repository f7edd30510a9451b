"""Builds the Cadence default head (a HeadModel) and caches it as ``default_head_v{N}.npz``."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from ..head_model import HeadModel, HeadModelError
from . import anatomy as A
from .brows import attach
from .expressions import MOUTH_CLOSE_JAW, expression_basis
from .geometry import build_geometry
from .grid import vermilion_mask
from .landmarks import embed_landmarks
from .regions import lip_coordinates, mouth_mask
from .shapes import identity_basis
from .skinning import joint_regressor, skinning_weights

DEFAULT_HEAD_VERSION = 5
NAME = "Cadence default head"


def build_default_head() -> HeadModel:
    """Generate the default head from code alone (deterministic, a second or two)."""
    g = build_geometry()
    V = g.verts.shape[0]
    J = joint_regressor(g)
    W = skinning_weights(g)
    joints = J @ g.verts
    expr_names, exprdirs = expression_basis(g, W, joints)
    shape_names, shapedirs = identity_basis(g)
    for values in (W, exprdirs, shapedirs):  # the brows ride the skin under them
        attach(values, *g.brow_attach)
    lf, lb, lids, eye_sets = embed_landmarks(g)
    ms = g.grid.slits["mouth"]
    corner_r, corner_l = g.grid.vid(ms.row, ms.corner_lo), g.grid.vid(ms.row, ms.corner_hi)
    s, up = lip_coordinates(g)
    mid = ms.cols[len(ms.cols) // 2]
    column = np.flatnonzero(np.isclose(g.grid.v_theta[: g.n_skin], g.grid.theta[mid]))
    lips = mouth_mask(g.verts[: g.n_skin]) > 0.05
    # The most protruding point of each lip on the midline column.
    upper_outer = int(column[np.argmax(np.where((s[column] > 0) & (s[column] < 0.012), g.verts[column, 2], -1))])
    lower_outer = int(column[np.argmax(np.where((s[column] < 0) & (s[column] > -0.014), g.verts[column, 2], -1))])
    meta = {
        "generator": f"cadence-default-head v{DEFAULT_HEAD_VERSION}",
        "lip_vertices": {
            "upper_inner": [int(corner_r), *ms.upper.tolist(), int(corner_l)],
            "lower_inner": [int(corner_r), *ms.lower.tolist(), int(corner_l)],
            "corner_L": int(corner_l), "corner_R": int(corner_r),
            "upper_outer_mid": upper_outer, "lower_outer_mid": lower_outer,
        },
        "eyelid_vertices": eye_sets,
        "eyeball_vertices": {k: [int(ids[0]), int(ids[-1])] for k, ids in g.eyeball_ids.items()},
        "brow_vertices": {k: [int(ids[0]), int(ids[-1])] for k, ids in g.brow_ids.items()},
        "mouth_bag_vertices": [int(g.mouth_bag_ids[0]), int(g.mouth_bag_ids[-1])],
        "teeth_vertices": {k: [int(ids[0]), int(ids[-1])] for k, ids in g.teeth_ids.items()},
        "lip_region_vertices": np.flatnonzero(lips & (np.abs(s[: g.n_skin]) < 0.011)).tolist(),
        "n_skin_vertices": int(g.n_skin),
        "material_groups": material_groups(g, vermilion_mask(g.grid.v_theta, g.skin_phi, g.line_phi)),
        "mouth_close_jaw": MOUTH_CLOSE_JAW,
        "anatomy": {"eye_radius": A.EYE_RADIUS, "stomion": A.STOMION.tolist(), "jaw_hinge": A.JAW_HINGE.tolist()},
    }
    return HeadModel(
        name=NAME, v_template=g.verts, faces=g.faces.astype(np.int32), shapedirs=shapedirs, exprdirs=exprdirs,
        posedirs=np.zeros((V, 3, 36)), j_regressor=J, weights=W, expr_names=tuple(expr_names),
        shape_names=tuple(shape_names), lmk_faces=lf, lmk_bary=lb, lmk_scheme="mediapipe478", lmk_ids=lids,
        uv=_front_uv(g.verts, g.faces), source=f"cadence-default-head v{DEFAULT_HEAD_VERSION}", meta=meta,
    )


IRIS_ANGLE = 0.52  # rad from the gaze axis: a 6 mm iris on the 12 mm eyeball
PUPIL_ANGLE = 0.26


def material_groups(g, lip_mask: np.ndarray) -> dict[str, list[int]]:
    """Face ids per material: skin, lips, mouth (bag), eyes (sclera), iris, pupil, teeth, brows (+ lash lines).

    Every face is in exactly one group; the eye cups (hidden behind the eyeballs) count as skin.
    """
    parts = g.face_parts
    f = g.faces
    groups: dict[str, list[int]] = {}
    a, b = parts["skin"]
    on_lip = lip_mask[f[a:b]].sum(axis=1) >= 2
    groups["skin"] = (a + np.flatnonzero(~on_lip)).tolist()
    groups["lips"] = (a + np.flatnonzero(on_lip)).tolist()
    for k in ("eye_cup_L", "eye_cup_R"):
        groups["skin"] += list(range(*parts[k]))
    groups["mouth"] = list(range(*parts["mouth_bag"]))
    groups["eyes"], groups["iris"], groups["pupil"] = [], [], []
    for k in ("L", "R"):
        a, b = parts[f"eyeball_{k}"]
        d = g.verts[f[a:b]].mean(axis=1) - g.eye_centers[k]
        ang = np.arccos(np.clip(d[:, 2] / np.linalg.norm(d, axis=1), -1.0, 1.0))
        groups["pupil"] += (a + np.flatnonzero(ang < PUPIL_ANGLE)).tolist()
        groups["iris"] += (a + np.flatnonzero((ang >= PUPIL_ANGLE) & (ang < IRIS_ANGLE))).tolist()
        groups["eyes"] += (a + np.flatnonzero(ang >= IRIS_ANGLE)).tolist()
    groups["teeth"] = list(range(parts["teeth_upper"][0], parts["teeth_lower"][1]))
    groups["brows"] = list(range(parts["brow_L"][0], parts["brow_R"][1]))
    # The lash line: the skin strip along each upper lid margin, in the brows' hair colour.
    a, b = parts["skin"]
    ups = np.concatenate([g.grid.slits[k].upper for k in ("eye_L", "eye_R")])
    lash = a + np.flatnonzero(np.isin(f[a:b], ups).any(1))
    groups["skin"] = np.setdiff1d(groups["skin"], lash).tolist()
    groups["brows"] += lash.tolist()
    return groups


def _front_uv(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Cheap cylindrical UVs per corner (u around the head, v up), seam at the back."""
    u = 0.5 + np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi)
    w = np.clip((v[:, 1] + 0.2) / 0.32, 0, 1)
    # numpy's SIMD arctan2 can differ by an ulp with the array's memory alignment: round for determinism.
    uv = np.round(np.stack([u, w], 1), 7)[f]
    # Fix triangles straddling the seam so they do not span the whole texture.
    span = uv[:, :, 0].max(1) - uv[:, :, 0].min(1)
    wrap = span > 0.5
    uv[wrap, :, 0] = np.where(uv[wrap, :, 0] < 0.5, uv[wrap, :, 0] + 1.0, uv[wrap, :, 0])
    return uv


def cache_path(cache_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(cache_dir), f"default_head_v{DEFAULT_HEAD_VERSION}.npz")


def load_or_build(cache_dir: str | os.PathLike) -> HeadModel:
    """The cached default head from ``cache_dir``; rebuilt (and re-cached) if missing or unreadable."""
    path = cache_path(cache_dir)
    if os.path.isfile(path):
        try:
            model = HeadModel.load(path)
            if model.meta.get("generator") == f"cadence-default-head v{DEFAULT_HEAD_VERSION}":
                return model
        except HeadModelError:
            pass  # corrupt or foreign: rebuild below
    model = build_default_head()
    try:
        os.makedirs(os.fspath(cache_dir), exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.fspath(cache_dir))
        os.close(fd)
        model.save(tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except OSError:
        pass  # a read-only cache is not fatal: the head is still returned
    return model
