"""The FLAME-format head model: one type for every head, `.npz` I/O and the reference forward pass.

Pure numpy (no scipy): the Blender side builds rigs from it and the worker fits and animates it.
The numpy forward pass is the ground truth the Blender rig must reproduce.

Axes and units follow FLAME: metres, +Y up, +Z out of the face (towards the viewer), +X to the
head's left. Pose is per joint, axis-angle, local to the parent joint (rest frame = model axes).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

FORMAT_VERSION = 1

# FLAME's five joints, in FLAME's order.
JOINT_NAMES: tuple[str, ...] = ("root", "neck", "jaw", "eye_L", "eye_R")
FLAME_PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)

# Guards against hostile or broken files (a FLAME head has 5,023 vertices, 400 components).
MAX_VERTICES = 200_000
MAX_COMPONENTS = 2_000


class HeadModelError(ValueError):
    """A head model (or file) that is malformed, inconsistent or not a head model at all."""


@dataclass
class HeadModel:
    """A FLAME-format head. Arrays are float64 unless stated; see the module docstring for axes."""

    name: str
    v_template: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3) int32 triangles
    shapedirs: np.ndarray  # (V, 3, S) identity basis
    exprdirs: np.ndarray  # (V, 3, E) expression basis
    posedirs: np.ndarray  # (V, 3, 9 * (J - 1)) pose-corrective basis, FLAME order
    j_regressor: np.ndarray  # (J, V) dense
    weights: np.ndarray  # (V, J) skinning weights, rows sum to 1
    parents: np.ndarray = field(default_factory=lambda: FLAME_PARENTS.copy())  # (J,) int, -1 = root
    expr_names: tuple[str, ...] = ()  # (E,) unique component names
    shape_names: tuple[str, ...] = ()  # (S,)
    # Optional landmark embedding: triangle index + barycentric coordinates per landmark.
    lmk_faces: np.ndarray | None = None  # (L,) int
    lmk_bary: np.ndarray | None = None  # (L, 3)
    lmk_scheme: str = ""  # what the landmarks index, e.g. "mediapipe478"
    lmk_ids: np.ndarray | None = None  # (L,) int: the scheme's index of each landmark
    uv: np.ndarray | None = None  # (F, 3, 2) per-corner UVs
    source: str = ""  # where the head came from (file path, "cadence-default-head v1")
    meta: dict = field(default_factory=dict)  # JSON-serialisable extras

    def __post_init__(self) -> None:
        if not self.expr_names:
            self.expr_names = tuple(f"expr_{i:03d}" for i in range(np.shape(self.exprdirs)[-1]))
        if not self.shape_names:
            self.shape_names = tuple(f"shape_{i:03d}" for i in range(np.shape(self.shapedirs)[-1]))
        self.expr_names = tuple(str(n) for n in self.expr_names)
        self.shape_names = tuple(str(n) for n in self.shape_names)
        self.validate()

    # ----------------------------------------------------------------- sizes
    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def n_expr(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def joint_names(self) -> tuple[str, ...]:
        return JOINT_NAMES[: self.n_joints]

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        """Coerce dtypes and check every array against the others; raise HeadModelError if off."""
        try:
            self.v_template = _float(self.v_template, "v_template", ndim=2)
            V = self.v_template.shape[0]
            if self.v_template.shape[1] != 3 or not 3 <= V <= MAX_VERTICES:
                raise HeadModelError(f"v_template must be (V, 3) with 3 <= V <= {MAX_VERTICES}")
            self.faces = np.asarray(self.faces)
            if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.dtype.kind not in "iu":
                raise HeadModelError("faces must be an (F, 3) integer array of triangles")
            if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
                raise HeadModelError("faces index vertices that do not exist")
            self.faces = self.faces.astype(np.int32)
            self.parents = np.asarray(self.parents).astype(np.int64)
            J = self.parents.shape[0]
            if self.parents.ndim != 1 or not 1 <= J <= len(JOINT_NAMES):
                raise HeadModelError(f"a head has 1..{len(JOINT_NAMES)} joints, got {J}")
            if self.parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(self.parents[1:], 1)):
                raise HeadModelError("parents must start with -1 and point to earlier joints")
            for attr in ("shapedirs", "exprdirs", "posedirs"):
                arr = _float(getattr(self, attr), attr, ndim=3)
                if arr.shape[:2] != (V, 3) or arr.shape[2] > MAX_COMPONENTS:
                    raise HeadModelError(f"{attr} must be (V, 3, K) with V = {V}, got {arr.shape}")
                setattr(self, attr, arr)
            if self.posedirs.shape[2] not in (0, 9 * (J - 1)):
                raise HeadModelError(f"posedirs must have 0 or {9 * (J - 1)} components")
            self.j_regressor = _float(self.j_regressor, "j_regressor", ndim=2)
            if self.j_regressor.shape != (J, V):
                raise HeadModelError(f"j_regressor must be ({J}, {V}), got {self.j_regressor.shape}")
            self.weights = _float(self.weights, "weights", ndim=2)
            if self.weights.shape != (V, J):
                raise HeadModelError(f"weights must be ({V}, {J}), got {self.weights.shape}")
            if len(self.expr_names) != self.n_expr or len(set(self.expr_names)) != self.n_expr:
                raise HeadModelError("expr_names must name every expression component once")
            if len(self.shape_names) != self.n_shape or len(set(self.shape_names)) != self.n_shape:
                raise HeadModelError("shape_names must name every shape component once")
            if self.lmk_faces is not None:
                self.lmk_faces = np.asarray(self.lmk_faces).astype(np.int64)
                self.lmk_bary = _float(self.lmk_bary, "lmk_bary", ndim=2)
                L = self.lmk_faces.shape[0]
                if self.lmk_bary.shape != (L, 3) or (L and (self.lmk_faces.min() < 0 or self.lmk_faces.max() >= len(self.faces))):
                    raise HeadModelError("landmark embedding must be (L,) face indices + (L, 3) barycentrics")
                self.lmk_ids = np.arange(L) if self.lmk_ids is None else np.asarray(self.lmk_ids).astype(np.int64)
                if self.lmk_ids.shape != (L,):
                    raise HeadModelError("lmk_ids must have one entry per landmark")
            if self.uv is not None:
                self.uv = _float(self.uv, "uv", ndim=3)
                if self.uv.shape != (len(self.faces), 3, 2):
                    raise HeadModelError("uv must be (F, 3, 2) per-corner coordinates")
        except (TypeError, ValueError, IndexError) as exc:  # IndexError: a 0-d array where 1-d is due
            if isinstance(exc, HeadModelError):
                raise
            raise HeadModelError(f"malformed head model: {exc}") from exc

    # --------------------------------------------------------- forward pass
    def shaped(self, shape: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """Template + identity and expression blendshapes, (V, 3)."""
        v = self.v_template.copy()
        if shape is not None and self.n_shape:
            v += self.shapedirs @ _coeffs(shape, self.n_shape, "shape")
        if expression is not None and self.n_expr:
            v += self.exprdirs @ _coeffs(expression, self.n_expr, "expression")
        return v

    def rest_joints(self, shape: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """Joint locations regressed from the shaped (unposed) mesh, (J, 3)."""
        return self.j_regressor @ self.shaped(shape, expression)

    def joint_expr_dirs(self) -> np.ndarray:
        """How joints move per expression coefficient, (J, 3, E) (the rig compensates with bone locations)."""
        return np.einsum("jv,vce->jce", self.j_regressor, self.exprdirs)

    def forward(
        self,
        shape: np.ndarray | None = None,
        expression: np.ndarray | None = None,
        pose: np.ndarray | None = None,
        translation: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posed vertices (V, 3) and posed joints (J, 3). ``pose`` is (J, 3) axis-angle, local."""
        J = self.n_joints
        v_shaped = self.shaped(shape, expression)
        joints = self.j_regressor @ v_shaped
        pose = np.zeros((J, 3)) if pose is None else np.asarray(pose, dtype=np.float64).reshape(J, 3)
        rots = rodrigues(pose)
        v_posed = v_shaped
        if self.posedirs.shape[2]:
            pose_feature = (rots[1:] - np.eye(3)).reshape(-1)
            v_posed = v_shaped + self.posedirs @ pose_feature
        # Global rigid transforms of each joint (parents come first by construction).
        world_r = np.empty((J, 3, 3))
        world_t = np.empty((J, 3))
        for j in range(J):
            p = self.parents[j]
            if p < 0:
                world_r[j], world_t[j] = rots[j], joints[j]
            else:
                world_r[j] = world_r[p] @ rots[j]
                world_t[j] = world_r[p] @ (joints[j] - joints[p]) + world_t[p]
        # Skinning transforms: remove the rest location of each joint.
        skin_t = world_t - np.einsum("jab,jb->ja", world_r, joints)
        blend_r = np.einsum("vj,jab->vab", self.weights, world_r)
        blend_t = self.weights @ skin_t
        verts = np.einsum("vab,vb->va", blend_r, v_posed) + blend_t
        posed_joints = world_t.copy()
        if translation is not None:
            t = np.asarray(translation, dtype=np.float64).reshape(3)
            verts += t
            posed_joints += t
        return verts, posed_joints

    def landmarks(self, verts: np.ndarray | None = None) -> np.ndarray:
        """Landmark positions (L, 3) on ``verts`` (default: the template)."""
        if self.lmk_faces is None:
            raise HeadModelError(f"head {self.name!r} has no landmark embedding")
        verts = self.v_template if verts is None else verts
        tri = verts[self.faces[self.lmk_faces]]  # (L, 3, 3)
        return np.einsum("lk,lkc->lc", self.lmk_bary, tri)

    # ------------------------------------------------------------ identity
    def content_hash(self) -> str:
        """Stable hash of the geometry and bases (what a persona or rig was made for)."""
        h = hashlib.sha256()
        # The bases are hashed at the float32 precision `save` stores them with, so the hash survives save/load.
        for arr in (self.v_template, self.faces, self.shapedirs.astype(np.float32), self.exprdirs.astype(np.float32),
                    self.posedirs.astype(np.float32), self.j_regressor, self.weights, self.parents):
            a = np.ascontiguousarray(arr)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        h.update("\n".join(self.expr_names).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> None:
        """Write a `.npz` (no pickled objects; loads with allow_pickle=False)."""
        arrays = {
            "v_template": self.v_template, "faces": self.faces, "shapedirs": self.shapedirs.astype(np.float32),
            "exprdirs": self.exprdirs.astype(np.float32), "posedirs": self.posedirs.astype(np.float32),
            "j_regressor": self.j_regressor, "weights": self.weights, "parents": self.parents,
        }
        for opt in ("lmk_faces", "lmk_bary", "lmk_ids", "uv"):
            if getattr(self, opt) is not None:
                arrays[opt] = getattr(self, opt)
        header = {
            "format": "cadence-head", "version": FORMAT_VERSION, "name": self.name,
            "expr_names": list(self.expr_names), "shape_names": list(self.shape_names),
            "lmk_scheme": self.lmk_scheme, "source": self.source, "meta": self.meta,
        }
        with open(path, "wb") as fh:
            np.savez_compressed(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HeadModel:
        """Read a Cadence head `.npz`, or a FLAME-layout `.npz` (keys as in the FLAME `.pkl`)."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                files = set(z.files)
                if "header" in files:
                    header = json.loads(bytes(z["header"]).decode())
                    if header.get("format") != "cadence-head":
                        raise HeadModelError(f"{path!r} is not a Cadence head file")
                    if header.get("version") != FORMAT_VERSION:
                        raise HeadModelError(
                            f"{path!r} is head format version {header.get('version')}, "
                            f"this Cadence reads version {FORMAT_VERSION}"
                        )
                    opt = {k: z[k] for k in ("lmk_faces", "lmk_bary", "lmk_ids", "uv") if k in files}
                    return cls(
                        name=header["name"], v_template=z["v_template"], faces=z["faces"],
                        shapedirs=z["shapedirs"], exprdirs=z["exprdirs"], posedirs=z["posedirs"],
                        j_regressor=z["j_regressor"], weights=z["weights"], parents=z["parents"],
                        expr_names=tuple(header["expr_names"]), shape_names=tuple(header["shape_names"]),
                        lmk_scheme=header.get("lmk_scheme", ""), source=header.get("source", path),
                        meta=header.get("meta", {}), **opt,
                    )
                if {"v_template", "shapedirs", "f", "weights", "J_regressor"} <= files:
                    return from_flame_arrays({k: z[k] for k in z.files}, name=os.path.basename(path), source=path)
        except HeadModelError:
            raise
        except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise HeadModelError(f"could not read head model {path!r}: {exc}") from exc
        raise HeadModelError(f"{path!r} is neither a Cadence head nor a FLAME-layout .npz")


def from_flame_arrays(d: dict, name: str, source: str, n_shape: int = 300) -> HeadModel:
    """Build a HeadModel from FLAME's keys (`v_template`, `shapedirs` (V,3,S+E), `posedirs`, ...).

    FLAME stores identity and expression in one `shapedirs`: the first 300 components are shape,
    the rest expression (100 in FLAME 2020/2023). Smaller test models follow the same split when
    they have more than ``n_shape`` components, else they split in half.
    """
    sd = np.asarray(d["shapedirs"], dtype=np.float64)
    if sd.ndim != 3:
        raise HeadModelError("FLAME shapedirs must be (V, 3, K)")
    k = sd.shape[2]
    split = n_shape if k > n_shape else k // 2
    kintree = np.asarray(d.get("kintree_table", np.array([FLAME_PARENTS, np.arange(5)])))
    parents = kintree[0].astype(np.int64)
    parents[0] = -1  # FLAME stores the root's parent as 2**32 - 1
    posedirs = np.asarray(d.get("posedirs", np.zeros((sd.shape[0], 3, 9 * (len(parents) - 1)))))
    return HeadModel(
        name=name, v_template=d["v_template"], faces=np.asarray(d["f"]).astype(np.int64),
        shapedirs=sd[:, :, :split], exprdirs=sd[:, :, split:], posedirs=posedirs,
        j_regressor=np.asarray(d["J_regressor"]), weights=d["weights"], parents=parents,
        source=source, meta={"format": "flame"},
    )


def rodrigues(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    safe = np.where(theta < 1e-12, 1.0, theta)
    k = aa / safe
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(aa.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + s * K + (1 - c) * (K @ K)


def _float(arr, name: str, ndim: int) -> np.ndarray:
    if arr is None:
        raise HeadModelError(f"{name} is missing")
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != ndim:
        raise HeadModelError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise HeadModelError(f"{name} contains NaN or infinite values")
    return a


def _coeffs(c: np.ndarray, n: int, what: str) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if c.shape[0] > n:
        raise HeadModelError(f"{c.shape[0]} {what} coefficients given, the head has {n}")
    if c.shape[0] < n:
        c = np.concatenate([c, np.zeros(n - c.shape[0])])
    return c
