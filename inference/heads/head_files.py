"""Reading users' head files: FLAME `.pkl` (2020 / 2023 / 2023 Open), `.npz` heads, landmark embeddings.

FLAME's `.pkl` files are Python-2 pickles of chumpy objects and scipy sparse matrices. They are read
here without chumpy or scipy (the Blender side has neither) through an *allow-list* unpickler:
every global a pickle names goes through `_SafeUnpickler.find_class`, which hands out inert stand-ins
for chumpy / scipy classes, a few guarded numpy constructors and a handful of harmless builtins, and
refuses everything else (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) before anything
runs. Pure numpy + stdlib: never import scipy here, not even lazily on the load path.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import importlib
import io
import os
import pickle
import pickletools
import re
import zipfile

import numpy as np

from .head_model import MAX_COMPONENTS, MAX_VERTICES, HeadModel, HeadModelError, from_flame_arrays

MAX_FILE_BYTES = 2 * 1024**3  # FLAME 2023 is ~200 MB; anything past 2 GB is not a head model
_MAX_ARRAY_BYTES = MAX_FILE_BYTES  # no single array may claim more memory than a file can hold
_MAX_DENSE = 64 * MAX_VERTICES  # a sparse matrix rebuilt dense (J_regressor: 5 x V)
_FLAME_REQUIRED = ("v_template", "shapedirs", "f", "weights", "J_regressor")
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


class UnsafeFileError(HeadModelError):
    """A file that asks to run code (or to allocate absurd memory) while being read: refused unread."""


# ------------------------------------------------------------------ inert stand-ins
class _Stub:
    """Records what a pickle tries to build instead of building it (chumpy objects, sparse matrices)."""

    __slots__ = ("args", "state")
    qualname = "?"

    def __init__(self, *args, **kwargs) -> None:  # REDUCE calls the class; keep the arguments only
        self.args = args
        self.state = None

    def __setstate__(self, state) -> None:  # BUILD: keep the state, never update attributes from it
        self.state = state

    def state_dict(self) -> dict:
        s = getattr(self, "state", None)  # unset slot when built by NEWOBJ without BUILD
        if isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], dict | type(None)):
            s = s[0] or s[1]  # (dict state, slot state)
        return s if isinstance(s, dict) else {}


_ChumpyStub = type("_ChumpyStub", (_Stub,), {"__slots__": ()})
_SparseStub = type("_SparseStub", (_Stub,), {"__slots__": ()})


_STUB_CLASSES: dict[tuple[str, str], type] = {}


def _stub_class(base: type, module: str, name: str) -> type:
    if (module, name) not in _STUB_CLASSES:  # one class per name, so messages can say which it was
        _STUB_CLASSES[module, name] = type(name, (base,), {"__slots__": (), "qualname": f"{module}.{name}"})
    return _STUB_CLASSES[module, name]


class _NdarrayRef:
    """Stands for ``numpy.ndarray`` inside a pickle: a token for `_reconstruct`, never instantiated."""

    def __new__(cls, *args, **kwargs):
        raise UnsafeFileError("the pickle tries to build a raw numpy.ndarray, which a FLAME model never does")


# -------------------------------------------------------------- guarded callables
_multiarray = importlib.import_module(f"numpy.{'_core' if int(np.__version__.split('.')[0]) >= 2 else 'core'}.multiarray")


def _check_alloc(shape, dtype) -> tuple[tuple[int, ...], np.dtype]:
    dt = np.dtype(dtype)
    shp = tuple(int(s) for s in (shape if isinstance(shape, tuple | list) else (shape,)))
    if any(s < 0 for s in shp) or int(np.prod([float(s) for s in shp])) * max(dt.itemsize, 1) > _MAX_ARRAY_BYTES:
        raise UnsafeFileError(f"the pickle asks for an array of shape {shp} ({dt}), far beyond any head model")
    return shp, dt


def _reconstruct(subtype, shape, dtype):
    if subtype is not _NdarrayRef:
        raise UnsafeFileError("the pickle rebuilds an array of an unexpected type")
    shp, dt = _check_alloc(shape, dtype)
    return _multiarray._reconstruct(np.ndarray, shp, dt)


def _frombuffer(buf, dtype, shape, order="C"):  # numpy's pickle-protocol-5 array layout
    shp, dt = _check_alloc(shape, dtype)
    return np.frombuffer(bytes(buf), dtype=dt).reshape(shp, order=order).copy()


def _scalar(dtype, data=None):
    return _multiarray.scalar(np.dtype(dtype), data) if data is not None else _multiarray.scalar(np.dtype(dtype))


def _codecs_encode(text, encoding="utf-8", errors="strict"):  # how Python 3 writes bytes at protocol < 3
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1", "utf-8", "utf8"):
        raise UnsafeFileError(f"the pickle asks for the {encoding!r} codec, which a FLAME model never uses")
    return str(text).encode(encoding, errors)


def _reconstructor(cls, base, state):  # copyreg._reconstructor, for stand-ins only
    if not (isinstance(cls, type) and issubclass(cls, _Stub)) or base is not object:
        raise UnsafeFileError("the pickle reconstructs an object of a type a FLAME model never contains")
    return object.__new__(cls)


# The whole allow-list. Python 2 names (__builtin__, copy_reg) are matched as written: this find_class
# replaces the one that would translate them.
_ALLOWED: dict[tuple[str, str], object] = {
    **{(m, n): getattr(builtins, n) for m in ("__builtin__", "builtins")
       for n in ("object", "set", "frozenset", "slice", "complex")},
    **{(m, "_reconstructor"): _reconstructor for m in ("copy_reg", "copyreg")},
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "ndarray"): _NdarrayRef,
    ("numpy", "dtype"): np.dtype,
}
_GUARDED_NUMPY = {"_reconstruct": _reconstruct, "scalar": _scalar, "_frombuffer": _frombuffer}
_NUMPY_CORE = re.compile(r"^numpy\.(_core|core)(\.multiarray|\.numeric|\._multiarray_umath)?$")
_SPARSE = re.compile(r"^scipy\.sparse(\.(_?csc|_?csr|_?coo|_?compressed|base|_base|_matrix|_arrays))?$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, fh, filename: str) -> None:
        super().__init__(fh, encoding="latin1")
        self._filename = filename

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if _NUMPY_CORE.match(module) and name in _GUARDED_NUMPY:
            return _GUARDED_NUMPY[name]
        if (module == "chumpy" or module.startswith("chumpy.")) and _IDENT.match(name):
            return _stub_class(_ChumpyStub, module, name)
        if _SPARSE.match(module) and re.match(r"^(csc|csr|coo)_(matrix|array)$", name):
            return _stub_class(_SparseStub, module, name)
        raise UnsafeFileError(f"refused to load {self._filename!r}: it references {module}.{name}, which a FLAME "
                              "model never contains; the file may be malicious and nothing in it was run")


def safe_unpickle(path: str | os.PathLike) -> object:
    """Unpickle a user's file through the allow-list; the result may hold chumpy / sparse stand-ins."""
    path = os.fspath(path)
    data = _read_bytes(path)
    if data[:1] not in (b"\x80", b"(", b"}", b"]"):
        raise HeadModelError(f"{_base(path)!r} is not a pickle file (it starts with {data[:12]!r})")
    return _unpickle_bytes(data, path)


def _unpickle_bytes(data: bytes, path: str) -> object:
    try:
        # EXT opcodes resolve through copyreg's process-wide cache, which can bypass find_class.
        if any(op.name.startswith("EXT") for op, _, _ in pickletools.genops(data)):
            raise UnsafeFileError(f"refused to load {_base(path)!r}: it uses pickle extension codes, "
                                  "which a FLAME model never does")
        return _SafeUnpickler(io.BytesIO(data), _base(path)).load()
    except HeadModelError:
        raise
    except MemoryError as exc:
        raise UnsafeFileError(f"refused to load {_base(path)!r}: it asks for more memory than a head needs") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        raise HeadModelError(f"could not read {_base(path)!r}: the file is damaged, truncated or not a FLAME "
                             f"pickle ({type(exc).__name__}: {exc})") from exc


# ------------------------------------------------------------------ conversions
def _dense_from_sparse(stub: _SparseStub, key: str) -> np.ndarray:
    st = stub.state_dict()
    fmt = stub.qualname.rsplit(".", 1)[-1][:3]
    shape = st.get("_shape", st.get("shape"))
    try:
        rows, cols = (int(s) for s in shape)
        data = np.asarray(st["data"], dtype=np.float64).reshape(-1)
        if rows < 0 or cols < 0 or rows * cols > _MAX_DENSE:
            raise HeadModelError(f"{key!r} is a {rows}x{cols} sparse matrix, far beyond any head model")
        if fmt == "coo":
            r = np.asarray(st["row"], dtype=np.int64).reshape(-1)
            c = np.asarray(st["col"], dtype=np.int64).reshape(-1)
        else:
            indices = np.asarray(st["indices"], dtype=np.int64).reshape(-1)
            indptr = np.asarray(st["indptr"], dtype=np.int64).reshape(-1)
            n_major = cols if fmt == "csc" else rows
            if indptr.shape != (n_major + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
                    or indptr[-1] != len(indices):
                raise HeadModelError(f"{key!r} is a damaged sparse matrix (bad indptr)")
            major = np.repeat(np.arange(n_major), np.diff(indptr))
            r, c = (indices, major) if fmt == "csc" else (major, indices)
        if not (len(r) == len(c) == len(data)) or (len(r) and (r.min() < 0 or r.max() >= rows or c.min() < 0
                                                               or c.max() >= cols)):
            raise HeadModelError(f"{key!r} is a damaged sparse matrix (indices out of range)")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, HeadModelError):
            raise
        raise HeadModelError(f"{key!r} is a damaged sparse matrix ({exc})") from exc
    dense = np.zeros((rows, cols))
    np.add.at(dense, (r, c), data)  # duplicates sum, as in scipy
    return dense


def _to_array(obj, key: str, depth: int = 0) -> np.ndarray:
    """A plain numeric ndarray from whatever FLAME stored under ``key``."""
    if isinstance(obj, _ChumpyStub):
        st = obj.state_dict()
        if "x" not in st or depth > 4:
            raise HeadModelError(f"{key!r} is a chumpy expression ({obj.qualname}) rather than stored values; "
                                 "re-export the model with plain arrays")
        return _to_array(st["x"], key, depth + 1)
    if isinstance(obj, _SparseStub):
        return _dense_from_sparse(obj, key)
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError) as exc:
        raise HeadModelError(f"{key!r} is not an array ({type(obj).__name__})") from exc
    if arr.dtype.kind not in "biuf":
        raise HeadModelError(f"{key!r} must hold numbers, it holds {arr.dtype} ({type(obj).__name__})")
    return arr


def _as_vc(arr: np.ndarray, n_vertices: int, key: str) -> np.ndarray:
    """(V, 3, K) from FLAME's layout or the flattened ones some conversions use ((3V, K) or (K, 3V))."""
    if arr.ndim == 3 and arr.shape[:2] == (n_vertices, 3):
        return arr
    if arr.ndim == 2 and arr.shape[0] == 3 * n_vertices:
        return arr.reshape(n_vertices, 3, arr.shape[1])
    if arr.ndim == 2 and arr.shape[1] == 3 * n_vertices:
        return arr.T.reshape(n_vertices, 3, arr.shape[0])
    raise HeadModelError(f"{key} has shape {arr.shape}; expected ({n_vertices}, 3, K)")


def flame_dict_to_model(raw: dict, name: str, source: str, n_shape: int = 300) -> HeadModel:
    """A HeadModel from a FLAME-keyed mapping (unpickled `.pkl` or FLAME-layout `.npz`)."""
    label = _base(source) or name  # messages name the user's file
    missing = [k for k in _FLAME_REQUIRED if k not in raw]
    if missing:
        raise HeadModelError(f"{label!r} is not a FLAME model: missing {', '.join(missing)}")
    d = {k: _to_array(raw[k], k) for k in (*_FLAME_REQUIRED, "posedirs", "kintree_table") if k in raw}
    v = d["v_template"]
    if v.ndim != 2 or v.shape[1] != 3 or not 3 <= v.shape[0] <= MAX_VERTICES:
        raise HeadModelError(f"{label!r}: v_template must be (V, 3) with V <= {MAX_VERTICES}, got {v.shape}")
    n_v = v.shape[0]
    d["shapedirs"] = _as_vc(d["shapedirs"], n_v, "shapedirs")
    if d["shapedirs"].shape[2] > 2 * MAX_COMPONENTS:
        raise HeadModelError(f"{label!r}: {d['shapedirs'].shape[2]} blendshape components is beyond any head model")
    if "posedirs" in d:
        d["posedirs"] = _as_vc(d["posedirs"], n_v, "posedirs")
    f = d["f"]
    if f.dtype.kind == "f":
        if not np.all(np.isfinite(f)) or np.any(f != np.round(f)):
            raise HeadModelError(f"{label!r}: faces (f) must be integer vertex indices")
        d["f"] = f.astype(np.int64)
    try:
        return from_flame_arrays(d, name=name, source=source, n_shape=n_shape)
    except (IndexError, TypeError, ValueError) as exc:  # HeadModelError is a ValueError
        raise HeadModelError(f"{label!r} is not a usable FLAME model: {exc}") from exc


# ----------------------------------------------------------------- public loaders
def load_flame_pkl(path: str | os.PathLike, n_shape: int = 300) -> HeadModel:
    """Load a FLAME `.pkl` without chumpy or scipy; refuses files that would run code."""
    path = os.fspath(path)
    raw = safe_unpickle(path)
    if not isinstance(raw, dict):
        raise HeadModelError(f"{_base(path)!r} is a pickle but not a FLAME model (it holds a {type(raw).__name__})")
    return flame_dict_to_model(raw, name=os.path.splitext(_base(path))[0], source=path, n_shape=n_shape)


def load_head(path: str | os.PathLike) -> HeadModel:
    """Any supported head file: FLAME `.pkl`, Cadence head `.npz` or FLAME-layout `.npz`."""
    path = os.fspath(path)
    head = _read_bytes(path, limit=16)
    ext = os.path.splitext(path)[1].lower()
    if head.startswith(_ZIP_MAGIC) or (ext == ".npz" and not head.startswith(b"\x80")):
        return _load_npz(path)
    if ext in (".pkl", ".pickle") or head.startswith(b"\x80"):
        return load_flame_pkl(path)
    if head.startswith(_NPY_MAGIC):
        raise HeadModelError(f"{_base(path)!r} is a single .npy array, not a head model (landmark embedding?)")
    raise HeadModelError(f"{_base(path)!r} is not a head model: Cadence reads FLAME .pkl and head .npz files")


def _load_npz(path: str) -> HeadModel:
    if not _read_bytes(path, limit=4).startswith(_ZIP_MAGIC):
        raise HeadModelError(f"{_base(path)!r} is not an .npz archive (damaged, or another kind of file renamed)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "header" not in z.files and "v_template" in z.files:  # FLAME layout: our converter knows variants
                return flame_dict_to_model({k: z[k] for k in z.files}, name=os.path.splitext(_base(path))[0], source=path)
        return HeadModel.load(path)
    except HeadModelError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        raise HeadModelError(f"could not read head model {_base(path)!r}: damaged or not an .npz ({exc})") from exc


def load_landmark_embedding(path: str | os.PathLike, model: HeadModel) -> HeadModel:
    """A copy of ``model`` with the landmark embedding from a FLAME-ecosystem file.

    Reads ``lmk_face_idx`` + ``lmk_b_coords`` (flame_static_embedding.pkl: 51 iBUG points; the
    MediaPipe embedding .npz, whose ``landmark_indices`` name the MediaPipe points) or DECA's
    ``full_lmk_faces_idx`` / ``static_lmk_faces_idx`` dictionaries (.npy), through the safe unpickler.
    """
    path = os.fspath(path)
    head = _read_bytes(path, limit=16)
    if head.startswith(_ZIP_MAGIC):
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - damaged archive or pickled members
            raise HeadModelError(f"could not read landmark file {_base(path)!r}: {exc}") from exc
    elif head.startswith(_NPY_MAGIC):
        d = _load_npy_dict(path)
    else:
        d = safe_unpickle(path)
    if not isinstance(d, dict):
        raise HeadModelError(f"{_base(path)!r} is not a landmark embedding (expected a dictionary of arrays)")
    for fk, bk in (("lmk_face_idx", "lmk_b_coords"), ("full_lmk_faces_idx", "full_lmk_bary_coords"),
                   ("static_lmk_faces_idx", "static_lmk_bary_coords")):
        if fk in d and bk in d:
            faces, bary = _to_array(d[fk], fk), _to_array(d[bk], bk).astype(np.float64)
            break
    else:
        raise HeadModelError(f"{_base(path)!r} has no lmk_face_idx / lmk_b_coords: not a landmark embedding")
    faces, bary = (faces[0], bary[0]) if faces.ndim == 2 and faces.shape[0] == 1 and bary.ndim == 3 else (faces, bary)
    if faces.ndim != 1:
        raise HeadModelError(f"{_base(path)!r} is a pose-dependent (dynamic) embedding, which Cadence does not use")
    if faces.dtype.kind == "f" and np.any(faces != np.round(faces)):
        raise HeadModelError(f"{_base(path)!r}: landmark face indices must be integers")
    if bary.shape != (len(faces), 3):
        raise HeadModelError(f"{_base(path)!r}: {len(faces)} landmark faces but barycentrics of shape {bary.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(model.faces)):
        raise HeadModelError(f"{_base(path)!r} indexes faces the head {model.name!r} does not have (wrong model?)")
    n = len(faces)
    if "landmark_indices" in d:
        ids, scheme = _to_array(d["landmark_indices"], "landmark_indices").reshape(-1), "mediapipe478"
    elif n in (51, 68):  # FLAME's static embedding is iBUG-68 without the 17 contour points
        ids, scheme = np.arange(68 - n, 68), "ibug68"
    else:
        ids, scheme = np.arange(n), "custom"
    try:
        return dataclasses.replace(model, lmk_faces=faces.astype(np.int64), lmk_bary=bary, lmk_ids=ids,
                                   lmk_scheme=scheme, meta={**model.meta, "landmarks_from": path})
    except HeadModelError as exc:
        raise HeadModelError(f"{_base(path)!r} is not a usable landmark embedding: {exc}") from exc


def _load_npy_dict(path: str) -> object:
    """A .npy: plain arrays through numpy; a pickled object (DECA's dict) through the safe unpickler."""
    from numpy.lib import format as npy_format

    data = _read_bytes(path)
    fh = io.BytesIO(data)
    try:
        version = npy_format.read_magic(fh)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
    except Exception as exc:  # noqa: BLE001
        raise HeadModelError(f"{_base(path)!r} is a damaged .npy file ({exc})") from exc
    if dtype.hasobject:
        obj = _unpickle_bytes(data[fh.tell():], path)
        if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.size == 1:
            obj = obj.reshape(()).item()
        return obj
    raise HeadModelError(f"{_base(path)!r} holds one {shape} array, not a landmark embedding dictionary")


def _read_bytes(path: str, limit: int | None = None) -> bytes:
    if not os.path.exists(path):
        raise HeadModelError(f"head file {path!r} does not exist")
    if not os.path.isfile(path):
        raise HeadModelError(f"{path!r} is not a file")
    size = os.path.getsize(path)
    if size == 0:
        raise HeadModelError(f"{_base(path)!r} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise UnsafeFileError(f"refused to load {_base(path)!r}: {size / 1024**3:.1f} GB is far beyond any head model")
    try:
        with open(path, "rb") as fh:
            return fh.read(limit) if limit else fh.read()
    except OSError as exc:
        raise HeadModelError(f"could not read {path!r}: {exc}") from exc


def _base(path: str) -> str:
    return os.path.basename(path)
