"""FLAME `.pkl` / head `.npz` / landmark-embedding loading, and refusal of files that would run code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import flame_fixture as ff
import numpy as np
import pytest

from inference.heads import head_files as hf
from inference.heads.head_model import HeadModel, HeadModelError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flame_pkl(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("flame") / "generic_model.pkl"
    return path, ff.write_flame_pkl(path)


def _assert_matches(model: HeadModel, arrays: dict) -> None:
    n_shape = arrays["n_shape"]
    np.testing.assert_array_equal(model.v_template, arrays["v_template"])
    np.testing.assert_array_equal(model.faces, arrays["f"].astype(np.int64))
    np.testing.assert_array_equal(model.shapedirs, arrays["shapedirs"][:, :, :n_shape])
    np.testing.assert_array_equal(model.exprdirs, arrays["shapedirs"][:, :, n_shape:])
    np.testing.assert_array_equal(model.posedirs, arrays["posedirs"])
    np.testing.assert_allclose(model.j_regressor, arrays["J_regressor"], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(model.weights, arrays["weights"])
    np.testing.assert_array_equal(model.parents, [-1, 0, 1, 1, 1])


# ------------------------------------------------------------------ the fixture is FLAME-like
def test_fixture_pickle_references_what_flame_files_reference(flame_pkl):
    path, arrays = flame_pkl
    data = path.read_bytes()
    assert data[:2] == b"\x80\x02"
    for ref in (b"cchumpy.ch\nCh\n", b"cscipy.sparse.csc\ncsc_matrix\n", b"cnumpy.core.multiarray\n_reconstruct\n"):
        assert ref in data
    assert b"_codecs" not in data  # Python 2 dialect: raw str data, no codecs call
    assert arrays["kintree_table"][0, 0] == 2**32 - 1
    assert np.allclose(arrays["weights"].sum(1), 1) and np.allclose(arrays["J_regressor"].sum(1), 1)
    # Joints sit where a head has them: root lowest, eyes in front and symmetric, jaw between.
    j = arrays["J_regressor"] @ arrays["v_template"]
    assert j[0, 1] < j[1, 1] < j[2, 1] < j[3, 1]
    assert j[3, 2] > 0.05 and np.allclose(j[3] * [-1, 1, 1], j[4]) and j[3, 0] > 0
    assert j[2, 2] > j[1, 2]


# ------------------------------------------------------------------------ loading FLAME
def test_flame_pkl_loads_equal_to_arrays_written(flame_pkl):
    path, arrays = flame_pkl
    model = hf.load_flame_pkl(path)
    _assert_matches(model, arrays)
    assert model.name == "generic_model" and model.source == str(path) and model.meta["format"] == "flame"
    verts, joints = model.forward(pose=np.full((5, 3), 0.1), expression=np.ones(10))
    assert np.all(np.isfinite(verts)) and verts.shape == (len(arrays["v_template"]), 3)


@pytest.mark.parametrize("protocol,py2", [(0, True), (1, True), (2, False), (4, False), (5, False)])
def test_other_pickle_protocols_and_python3_resaves(tmp_path, protocol, py2):
    path = tmp_path / "m.pkl"
    arrays = ff.write_flame_pkl(path, n_vertices=120, protocol=protocol, py2=py2)
    _assert_matches(hf.load_flame_pkl(path), arrays)


@pytest.mark.parametrize("old,new", [
    (b"cscipy.sparse.csc\ncsc_matrix\n", b"cscipy.sparse._csc\ncsc_matrix\n"),
    (b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy._core.multiarray\n_reconstruct\n"),
])
def test_module_renames_between_scipy_and_numpy_versions(flame_pkl, tmp_path, old, new):
    path, arrays = flame_pkl
    renamed = tmp_path / "renamed.pkl"
    renamed.write_bytes(path.read_bytes().replace(old, new))
    _assert_matches(hf.load_flame_pkl(renamed), arrays)


@pytest.mark.parametrize("layout", ["3VP", "P3V"])
def test_flattened_posedirs_layouts(tmp_path, layout):
    path = tmp_path / "m.pkl"
    arrays = ff.write_flame_pkl(path, n_vertices=120, posedirs_layout=layout)
    _assert_matches(hf.load_flame_pkl(path), arrays)


def test_flame_split_300_shape_components(tmp_path):
    path = tmp_path / "big.pkl"
    ff.write_flame_pkl(path, n_vertices=60, n_shape=300, n_expr=7)
    model = hf.load_flame_pkl(path)
    assert (model.n_shape, model.n_expr) == (300, 7)


# ------------------------------------------------------------------------------ security
@pytest.fixture
def hostile(tmp_path) -> list[Path]:
    return ff.write_hostile_pickles(tmp_path / "hostile")


def test_hostile_pickles_are_live(hostile):
    """Guard against a test that proves nothing: a naive unpickler does run every payload."""
    script = textwrap.dedent(f"""
        import pickle, sys, time
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import flame_fixture as ff
        from pathlib import Path
        with ff.stand_in_chumpy():
            for p in sys.argv[1:]:
                try:
                    pickle.loads(Path(p).read_bytes(), encoding="latin1")
                except Exception:
                    pass
        deadline = time.time() + 10
        while time.time() < deadline and not all(ff.marker_for(p).exists() for p in sys.argv[1:]):
            time.sleep(0.05)
    """)
    subprocess.run([sys.executable, "-c", script, *map(str, hostile)], check=True, timeout=60)
    ran = [p.name for p in hostile if ff.marker_for(p).exists()]
    assert ran == [p.name for p in hostile]


def test_hostile_pickles_are_refused_and_never_run(hostile):
    assert len(hostile) >= 8
    for path in hostile:
        for loader in (hf.load_flame_pkl, hf.load_head, hf.safe_unpickle):
            with pytest.raises(hf.UnsafeFileError) as err:
                loader(path)
            assert path.name in str(err.value) and "malicious" in str(err.value)
            assert isinstance(err.value, HeadModelError)
        assert not ff.marker_for(path).exists(), path.name


def test_refusal_names_the_reference(hostile):
    messages = {p.name: "" for p in hostile}
    for p in hostile:
        with pytest.raises(hf.UnsafeFileError) as err:
            hf.load_flame_pkl(p)
        messages[p.name] = str(err.value)
    assert "os.system" in messages["os_system.pkl"]
    assert "posix.system" in messages["posix_system.pkl"]
    assert "subprocess.Popen" in messages["subprocess_popen.pkl"]
    assert "eval" in messages["builtin_eval.pkl"]
    assert "posix.system" in messages["nested_chumpy.pkl"]


def _raw(*ops: bytes) -> bytes:
    return b"\x80\x02" + b"".join(ops) + b"."


@pytest.mark.parametrize("data", [
    # numpy.ndarray through NEWOBJ allocates whatever shape it is given.
    _raw(b"cnumpy\nndarray\n", ff._arg((10**12,)), b"\x81"),
    # _reconstruct with an absurd shape.
    _raw(b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", ff._arg((10**6, 10**6)), ff._arg("f8"),
         b"\x87R"),
    # copyreg._reconstructor on something other than a stand-in.
    _raw(b"ccopy_reg\n_reconstructor\n", b"c__builtin__\nset\n", b"c__builtin__\nobject\n", b"N\x87R"),
    # A codec other than the ones used to write byte strings.
    _raw(ff._call("_codecs", "encode", "x", "rot13")),
])
def test_absurd_allocations_and_misused_allowed_names_are_refused(tmp_path, data):
    path = tmp_path / "bomb.pkl"
    path.write_bytes(data)
    with pytest.raises(hf.UnsafeFileError):
        hf.safe_unpickle(path)


def test_extension_codes_cannot_bypass_the_allow_list(tmp_path):
    """copyreg's extension cache resolves EXT opcodes without calling find_class: such files are refused."""
    import copyreg

    code = 0x7FFFF0
    data = _raw(b"\x84" + code.to_bytes(4, "little"), b")R")  # EXT4 <code>, EMPTY_TUPLE, REDUCE
    copyreg.add_extension("os", "getpid", code)
    try:
        assert pickle.loads(data) == os.getpid()  # a plain unpickler calls it (and caches it)
        path = tmp_path / "ext.pkl"
        path.write_bytes(data)
        with pytest.raises(hf.UnsafeFileError, match="extension codes"):
            hf.safe_unpickle(path)
    finally:
        copyreg.remove_extension("os", "getpid", code)


def test_file_size_limit(flame_pkl, monkeypatch):
    monkeypatch.setattr(hf, "MAX_FILE_BYTES", 1000)
    with pytest.raises(hf.UnsafeFileError, match="beyond any head model"):
        hf.load_head(flame_pkl[0])


# ------------------------------------------------------------------------- broken files
def test_broken_files_give_clear_errors(flame_pkl, tmp_path):
    good = flame_pkl[0].read_bytes()
    cases = {
        "truncated.pkl": (good[: len(good) // 2], "damaged, truncated"),
        "empty.pkl": (b"", "empty"),
        "garbage.pkl": (b"\x80\x02" + np.random.default_rng(1).bytes(300), "damaged, truncated"),
        "notes.pkl": (b"hello, this is a text file\n", "not a pickle"),
        "list.pkl": (pickle.dumps([1, 2, 3], protocol=2), "not a FLAME model"),
        "partial.pkl": (pickle.dumps({"v_template": np.zeros((3, 3))}, protocol=2), "missing shapedirs, f"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for loader in (hf.load_flame_pkl, hf.load_head):
            with pytest.raises(HeadModelError) as err:
                loader(path)
            assert name in str(err.value) and expected in str(err.value), (name, str(err.value))
    with pytest.raises(HeadModelError, match="does not exist"):
        hf.load_head(tmp_path / "missing.pkl")
    with pytest.raises(HeadModelError, match="not a file"):
        hf.load_head(tmp_path)


def test_inconsistent_flame_arrays_are_reported(tmp_path):
    arrays = ff.make_flame_arrays(60, 2, 2)
    arrays["weights"] = arrays["weights"][:, :3]
    path = tmp_path / "bad.pkl"
    path.write_bytes(ff.pickle_flame_dict(arrays))
    with pytest.raises(HeadModelError, match="bad.pkl.*weights"):
        hf.load_flame_pkl(path)


def test_chumpy_expression_without_values_is_reported(tmp_path, monkeypatch):
    """chumpy expressions (e.g. ch_ops.add) hold operands, not values: reported, not guessed."""
    pkg, ops = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch_ops")

    class add:  # noqa: N801 - chumpy's name
        pass

    add.__module__, add.__qualname__ = "chumpy.ch_ops", "add"
    ops.add, pkg.ch_ops = add, ops
    monkeypatch.setitem(sys.modules, "chumpy", pkg)
    monkeypatch.setitem(sys.modules, "chumpy.ch_ops", ops)
    arrays = ff.make_flame_arrays(60, 2, 2)
    expr = add()
    expr.a, expr.b = arrays["shapedirs"], 1.0
    arrays["shapedirs"] = expr
    path = tmp_path / "expr.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(HeadModelError, match="shapedirs.*chumpy expression.*chumpy.ch_ops.add"):
        hf.load_flame_pkl(path)


# --------------------------------------------------------------------------- dispatch
def test_load_head_dispatch(flame_pkl, tmp_path):
    path, arrays = flame_pkl
    flame = hf.load_head(path)
    _assert_matches(flame, arrays)
    # A pickle with another extension is recognised by content.
    odd = tmp_path / "model.bin"
    odd.write_bytes(path.read_bytes())
    assert hf.load_head(odd).content_hash() == flame.content_hash()
    # Cadence head npz (also when renamed: zip content wins).
    flame.save(tmp_path / "head.npz")
    assert hf.load_head(tmp_path / "head.npz").content_hash() == flame.content_hash()
    (tmp_path / "head.data").write_bytes((tmp_path / "head.npz").read_bytes())
    assert hf.load_head(tmp_path / "head.data").content_hash() == flame.content_hash()
    # FLAME-layout npz, also with a flattened posedirs.
    flat = {k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}
    flat["posedirs"] = arrays["posedirs"].reshape(-1, 36).T
    np.savez(tmp_path / "flame_layout.npz", **flat)
    _assert_matches(hf.load_head(tmp_path / "flame_layout.npz"), arrays)


def test_load_head_broken_npz_and_unknown_files(flame_pkl, tmp_path):
    model = hf.load_head(flame_pkl[0])
    model.save(tmp_path / "head.npz")
    data = (tmp_path / "head.npz").read_bytes()
    cases = {
        "truncated.npz": data[: len(data) // 2],
        "text.npz": b"not an archive",
        "mesh.obj": b"v 0 0 0\nv 1 0 0\n",
        "array.npy": b"",
    }
    np.save(tmp_path / "array.npy", np.zeros(3))
    for name, content in cases.items():
        p = tmp_path / name
        if content:
            p.write_bytes(content)
        with pytest.raises(HeadModelError) as err:
            hf.load_head(p)
        assert name in str(err.value)


# --------------------------------------------------------------------- landmark embeddings
def _embedding(model: HeadModel, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    faces = rng.integers(0, len(model.faces), n).astype(np.uint32)
    bary = rng.dirichlet(np.ones(3), n)
    return faces, bary


def test_static_embedding_pkl(flame_pkl, tmp_path):
    model = hf.load_flame_pkl(flame_pkl[0])
    faces, bary = _embedding(model, 51)
    path = tmp_path / "flame_static_embedding.pkl"
    path.write_bytes(ff.pickle_flame_dict({"lmk_face_idx": faces, "lmk_b_coords": bary}))
    out = hf.load_landmark_embedding(path, model)
    assert model.lmk_faces is None  # the input is not modified
    assert out.lmk_scheme == "ibug68" and list(out.lmk_ids) == list(range(17, 68))
    np.testing.assert_array_equal(out.lmk_faces, faces)
    expected = np.einsum("lk,lkc->lc", bary, model.v_template[model.faces[faces]])
    np.testing.assert_allclose(out.landmarks(), expected)
    assert out.content_hash() == model.content_hash()


def test_mediapipe_embedding_npz(flame_pkl, tmp_path):
    model = hf.load_flame_pkl(flame_pkl[0])
    faces, bary = _embedding(model, 105, seed=2)
    ids = np.random.default_rng(3).choice(478, 105, replace=False)
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=faces, lmk_b_coords=bary,
             landmark_indices=ids)
    out = hf.load_landmark_embedding(tmp_path / "mediapipe_landmark_embedding.npz", model)
    assert out.lmk_scheme == "mediapipe478"
    np.testing.assert_array_equal(out.lmk_ids, ids)
    np.testing.assert_allclose(out.lmk_bary, bary)


def test_deca_style_npy_dictionary(flame_pkl, tmp_path):
    model = hf.load_flame_pkl(flame_pkl[0])
    faces, bary = _embedding(model, 68, seed=4)
    np.save(tmp_path / "landmark_embedding.npy", {"full_lmk_faces_idx": faces[None].astype(np.int64),
                                                   "full_lmk_bary_coords": bary[None]}, allow_pickle=True)
    out = hf.load_landmark_embedding(tmp_path / "landmark_embedding.npy", model)
    assert out.lmk_scheme == "ibug68" and len(out.lmk_ids) == 68
    np.testing.assert_array_equal(out.lmk_faces, faces)


def test_bad_landmark_files(flame_pkl, tmp_path):
    model = hf.load_flame_pkl(flame_pkl[0])
    faces, bary = _embedding(model, 10)
    bad = {
        "wrong_model.npz": {"lmk_face_idx": faces + len(model.faces), "lmk_b_coords": bary},
        "mismatch.npz": {"lmk_face_idx": faces, "lmk_b_coords": bary[:5]},
        "dynamic.npz": {"lmk_face_idx": np.zeros((79, 17), np.int64), "lmk_b_coords": np.zeros((79, 17, 3))},
        "other.npz": {"something": faces},
    }
    for name, arrays in bad.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(HeadModelError, match=name.replace(".", r"\.")):
            hf.load_landmark_embedding(tmp_path / name, model)
    # A pickled .npy whose payload would run code goes through the same allow-list.
    evil = ff._Reduce(os.system, (f"touch {tmp_path / 'npy.ran'}",))
    np.save(tmp_path / "evil.npy", np.array([evil], dtype=object), allow_pickle=True)
    with pytest.raises(hf.UnsafeFileError):
        hf.load_landmark_embedding(tmp_path / "evil.npy", model)
    assert not (tmp_path / "npy.ran").exists()


# ----------------------------------------------------------------------- Blender-side safety
def test_head_files_never_imports_scipy(flame_pkl):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import inference.heads.head_files as hf
        assert "scipy" not in sys.modules, "import pulled in scipy"
        m = hf.load_head({str(flame_pkl[0])!r})
        assert m.n_vertices > 0
        heavy = sorted(k for k in sys.modules if k.split(".")[0] in ("scipy", "torch", "chumpy", "bpy", "cv2"))
        assert not heavy, heavy
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
