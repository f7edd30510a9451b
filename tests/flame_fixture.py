"""Test helpers: small FLAME-format pickles (FLAME is not redistributable) and hostile pickles.

`write_flame_pkl` writes what FLAME's own files look like to an unpickler: a protocol-2 pickle of a
dict whose arrays sit inside ``chumpy.ch.Ch`` objects (state key ``x``), with ``J_regressor`` a
scipy csc matrix and ``kintree_table`` using 2**32 - 1 as the root's parent. By default the bytes
are written the way Python 2 wrote them (``str`` data as BINSTRING, ``__builtin__``/``copy_reg``
names, ``scipy.sparse.csc``), so the loader is exercised on the real files' dialect.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import shlex
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

# ------------------------------------------------------------------------ geometry


def _ellipsoid_head(n_vertices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A closed, outward-facing triangle mesh shaped roughly like a head; returns (verts, faces, unit dirs)."""
    cols = max(8, int(round(np.sqrt(2 * n_vertices))))
    rows = max(3, (n_vertices - 2) // cols)
    theta = np.pi * np.arange(1, rows + 1) / (rows + 1)  # from the top
    phi = 2 * np.pi * np.arange(cols) / cols  # phi = 0 faces +Z (the front)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    u = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]])
    top, bottom = 0, len(u) - 1

    def idx(r: int, c: int) -> int:
        return 1 + r * cols + c % cols

    faces = [(top, idx(0, c + 1), idx(0, c)) for c in range(cols)]
    for r in range(rows - 1):
        for c in range(cols):
            a, b, cc, d = idx(r, c), idx(r, c + 1), idx(r + 1, c + 1), idx(r + 1, c)
            faces += [(a, b, cc), (a, cc, d)]
    faces += [(bottom, idx(rows - 1, c), idx(rows - 1, c + 1)) for c in range(cols)]
    f = np.array(faces, dtype=np.int64)
    # Head proportions (metres), a narrower jaw, a chin and a nose bump: "head-ish", not a sphere.
    v = u * np.array([0.075, 0.11, 0.09])
    lower = np.clip(-u[:, 1], 0, 1)
    v[:, 0] *= 1 - 0.3 * lower
    v[:, 2] += 0.012 * np.exp(-((u[:, 1] + 0.55) ** 2 + u[:, 0] ** 2) / 0.04) * (u[:, 2] > 0)
    v[:, 2] += 0.018 * np.exp(-((u[:, 1] - 0.0) ** 2 + u[:, 0] ** 2) / 0.02) * (u[:, 2] > 0)
    # Orientation check: the signed volume of an outward-facing closed mesh is positive.
    tri = v[f]
    if np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() < 0:
        f = f[:, ::-1].copy()
    return v, f, u


def _smooth_basis(u: np.ndarray) -> np.ndarray:
    """Low-frequency functions of the direction: blendshapes built from them are smooth."""
    x, y, z = u.T
    return np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, y * z, z * x,
                     np.sin(3 * x), np.sin(3 * y), np.cos(3 * z)], -1)


def _regressor(u: np.ndarray, targets: list[tuple[float, float, float]], k: int, sigma: float) -> np.ndarray:
    """Convex weights on the k vertices nearest to the target directions (sparse, rows sum to 1)."""
    t = np.array(targets, dtype=np.float64)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    d2 = ((u[:, None, :] - t[None]) ** 2).sum(-1)  # (V, T)
    w = np.zeros(len(u))
    for j in range(len(t)):  # each target contributes its own k nearest vertices (keeps symmetric sets)
        near = np.argsort(d2[:, j])[:k]
        w[near] += np.exp(-d2[near, j] / sigma**2)
    return w / w.sum()


EYE_DIRS = [(0.35, 0.15, 0.92), (-0.35, 0.15, 0.92)]  # eye_L is at +X (the head's left)


def make_flame_arrays(n_vertices: int = 400, n_shape: int = 10, n_expr: int = 10, seed: int = 0) -> dict:
    """The arrays of a small FLAME-format model (J_regressor dense here; the pickle stores it sparse)."""
    rng = np.random.default_rng(seed)
    v, f, u = _ellipsoid_head(n_vertices)
    V = len(v)
    j_reg = np.stack([
        _regressor(u, [(0, -1, 0)], k=8, sigma=0.3),  # root: the bottom of the neck
        _regressor(u, [(0.75, -0.66, 0), (-0.75, -0.66, 0), (0, -0.66, 0.75), (0, -0.66, -0.75)], k=3, sigma=0.3),
        _regressor(u, [(0.9, -0.3, 0.3), (-0.9, -0.3, 0.3)], k=4, sigma=0.3),  # jaw hinge, lower front
        _regressor(u, [EYE_DIRS[0]], k=5, sigma=0.2),
        _regressor(u, [EYE_DIRS[1]], k=5, sigma=0.2),
    ])

    def sig(a: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-a))

    score = np.stack([
        sig((-u[:, 1] - 0.8) / 0.05),  # root: lowest ring
        np.ones(V),  # neck carries the cranium
        2 * sig((-u[:, 1] - 0.15) / 0.08) * sig((u[:, 2] + 0.2) / 0.1),  # jaw: lower front
        4 * np.exp(-((u - np.array(EYE_DIRS[0]) / np.linalg.norm(EYE_DIRS[0])) ** 2).sum(1) / 0.02),
        4 * np.exp(-((u - np.array(EYE_DIRS[1]) / np.linalg.norm(EYE_DIRS[1])) ** 2).sum(1) / 0.02),
    ], 1)
    weights = score / score.sum(1, keepdims=True)
    basis = _smooth_basis(u)
    K = n_shape + n_expr
    shapedirs = np.einsum("vb,bck->vck", basis, rng.normal(size=(basis.shape[1], 3, K))) * 0.002
    mouth = sig((-u[:, 1] - 0.1) / 0.1)[:, None]  # expressions live mostly on the lower face
    shapedirs[:, :, n_shape:] *= mouth[:, :, None]
    posedirs = np.einsum("vb,bck->vck", basis, rng.normal(size=(basis.shape[1], 3, 36))) * 0.001
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "v_template": v, "f": f.astype(np.uint32), "shapedirs": shapedirs, "posedirs": posedirs,
        "J_regressor": j_reg, "weights": weights, "kintree_table": kintree, "J": j_reg @ v,
    }


# ------------------------------------------------------------------------ pickling


@contextlib.contextmanager
def stand_in_chumpy():
    """Put a minimal ``chumpy`` / ``chumpy.ch`` with a ``Ch`` class into sys.modules (restored after)."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    pkg, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:  # pickles as chumpy.ch.Ch with its __dict__ (array under 'x') as state, like chumpy
        def __init__(self, x) -> None:
            self.x = x
            self._dirty_vars = set()
            self.label = None

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch, pkg.ch = Ch, ch
    sys.modules.update({"chumpy": pkg, "chumpy.ch": ch})
    try:
        yield Ch
    finally:
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING) instead of Python 3's ``_codecs.encode`` call."""

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def pickle_flame_dict(obj: dict, protocol: int = 2, py2: bool = True) -> bytes:
    buf = io.BytesIO()
    if py2 and protocol <= 2:
        _Py2Pickler(buf, protocol=protocol).dump(obj)
        # Old scipy (FLAME's era) lived in scipy.sparse.csc; GLOBAL names are newline-terminated text.
        return buf.getvalue().replace(b"cscipy.sparse._csc\ncsc_matrix\n", b"cscipy.sparse.csc\ncsc_matrix\n")
    pickle.Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def write_flame_pkl(path, n_vertices: int = 400, n_shape: int = 10, n_expr: int = 10, seed: int = 0,
                    protocol: int = 2, py2: bool = True, posedirs_layout: str = "V3P") -> dict:
    """Write a FLAME-format `.pkl`; returns the arrays written (J_regressor dense) plus n_shape / n_expr."""
    arrays = make_flame_arrays(n_vertices, n_shape, n_expr, seed)
    pd = arrays["posedirs"]
    stored_pd = {"V3P": pd, "3VP": pd.reshape(-1, pd.shape[2]), "P3V": pd.reshape(-1, pd.shape[2]).T}[posedirs_layout]
    with stand_in_chumpy() as Ch:
        model = {
            "v_template": Ch(arrays["v_template"]), "f": arrays["f"], "shapedirs": Ch(arrays["shapedirs"]),
            "posedirs": Ch(np.ascontiguousarray(stored_pd)), "weights": Ch(arrays["weights"]),
            "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"]),
            "kintree_table": arrays["kintree_table"], "J": Ch(arrays["J"]),
            "bs_style": "lbs", "bs_type": "lrotmin",
        }
        data = pickle_flame_dict(model, protocol=protocol, py2=py2)
    Path(path).write_bytes(data)
    return {**arrays, "n_shape": n_shape, "n_expr": n_expr}


# ------------------------------------------------------------------ hostile pickles


def marker_for(path) -> Path:
    """The file a hostile pickle's payload creates if it ever runs."""
    return Path(path).with_suffix(".ran")


def _arg(obj) -> bytes:
    """Pickle opcodes that push ``obj`` (protocol 2 body without header and STOP)."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(module: str, name: str, *args) -> bytes:
    return _global(module, name) + pickle.MARK + b"".join(_arg(a) for a in args) + pickle.TUPLE + pickle.REDUCE


class _Reduce:
    """Pickles as ``func(*args)``: the classic code-execution gadget."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def write_hostile_pickles(directory) -> list[Path]:
    """Pickles that would run code when unpickled naively; each payload creates ``marker_for(path)``."""
    import os

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []

    def put(name: str, data: bytes) -> None:
        p = d / name
        p.write_bytes(data)
        out.append(p)

    def touch(name: str) -> str:
        return f"touch {shlex.quote(str(marker_for(d / name)))}"

    def py_touch(name: str) -> str:
        return f"open({str(marker_for(d / name))!r}, 'w').close()"

    P2 = pickle.PROTO + b"\x02"
    put("os_system.pkl", P2 + _call("os", "system", touch("os_system.pkl")) + pickle.STOP)
    put("posix_system.pkl", pickle.dumps(_Reduce(os.system, (touch("posix_system.pkl"),)), protocol=2))
    put("builtin_eval.pkl", pickle.dumps(_Reduce(eval, (py_touch("builtin_eval.pkl"),)), protocol=2))
    put("builtins_exec_p4.pkl", pickle.dumps(_Reduce(exec, (py_touch("builtins_exec_p4.pkl"),)), protocol=4))
    put("subprocess_popen.pkl", pickle.dumps(
        _Reduce(subprocess.Popen, (["touch", str(marker_for(d / "subprocess_popen.pkl"))],)), protocol=2,
        fix_imports=False))
    # getattr(__import__('os'), 'system')(cmd): no forbidden name appears as module "os".
    put("getattr_import.pkl", P2 + _global("builtins", "getattr") + _call("builtins", "__import__", "os")
        + _arg("system") + pickle.TUPLE2 + pickle.REDUCE + _arg(touch("getattr_import.pkl")) + pickle.TUPLE1
        + pickle.REDUCE + pickle.STOP)
    put("functools_partial.pkl", P2 + _global("functools", "partial") + _global("posix", "system")
        + _arg(touch("functools_partial.pkl")) + pickle.TUPLE2 + pickle.REDUCE + pickle.EMPTY_TUPLE
        + pickle.REDUCE + pickle.STOP)
    put("numpy_runstring.pkl", P2 + _call("numpy.testing._private.utils", "runstring",
                                          py_touch("numpy_runstring.pkl"), {}) + pickle.STOP)
    # Protocol 0, INST opcode: the class is looked up through find_class too.
    put("inst_p0.pkl", b"(S'" + touch("inst_p0.pkl").encode() + b"'\nios\nsystem\n.")
    # The payload hidden inside a chumpy object's state, after real-looking arrays.
    with stand_in_chumpy() as Ch:
        arrays = make_flame_arrays(60, 2, 2)
        evil = _Reduce(os.system, (touch("nested_chumpy.pkl"),))
        model = {"v_template": Ch(arrays["v_template"]), "f": arrays["f"],
                 "shapedirs": Ch({"x": arrays["shapedirs"], "cache": [evil]})}
        put("nested_chumpy.pkl", pickle_flame_dict(model, protocol=2, py2=True))
    return out
