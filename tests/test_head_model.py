"""The HeadModel type: the numpy forward pass (the ground truth the Blender rig must match), I/O, validation."""

from __future__ import annotations

import dataclasses

import flame_fixture as ff
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from inference.heads.head_model import HeadModel, HeadModelError, from_flame_arrays, rodrigues

N_SHAPE, N_EXPR = 4, 6


def make_model(n_vertices: int = 150, seed: int = 0, **overrides) -> HeadModel:
    a = ff.make_flame_arrays(n_vertices, N_SHAPE, N_EXPR, seed)
    fields = dict(
        name="test-head", v_template=a["v_template"], faces=a["f"], shapedirs=a["shapedirs"][:, :, :N_SHAPE],
        exprdirs=a["shapedirs"][:, :, N_SHAPE:], posedirs=a["posedirs"], j_regressor=a["J_regressor"],
        weights=a["weights"], expr_names=tuple(f"e{i}" for i in range(N_EXPR)),
    )
    fields.update(overrides)
    return HeadModel(**fields)


@pytest.fixture(scope="module")
def model() -> HeadModel:
    return make_model()


def random_params(seed: int, scale: float = 0.3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=N_SHAPE), rng.normal(size=N_EXPR), rng.normal(scale=scale, size=(5, 3)), rng.normal(size=3)


def reference_forward(m: HeadModel, shape, expr, pose, trans) -> tuple[np.ndarray, np.ndarray]:
    """An independent, per-vertex LBS with explicit 4x4 matrices and scipy's rotations."""
    v = m.v_template + np.einsum("vck,k->vc", m.shapedirs, shape) + np.einsum("vck,k->vc", m.exprdirs, expr)
    joints = m.j_regressor @ v
    rots = Rotation.from_rotvec(pose).as_matrix()
    feature = []
    for j in range(1, m.n_joints):
        for r in range(3):
            for c in range(3):
                feature.append(rots[j][r, c] - (1.0 if r == c else 0.0))
    v_posed = v + np.einsum("vck,k->vc", m.posedirs, np.array(feature))
    world = []
    for j in range(m.n_joints):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        p = m.parents[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0)
        world.append(local if p < 0 else world[p] @ local)
    skin = []
    for j in range(m.n_joints):
        unrest = np.eye(4)
        unrest[:3, 3] = -joints[j]
        skin.append(world[j] @ unrest)
    out = np.empty_like(v)
    for i in range(len(v)):
        mat = sum(m.weights[i, j] * skin[j] for j in range(m.n_joints))
        out[i] = (mat @ np.append(v_posed[i], 1.0))[:3] + trans
    return out, np.array([w[:3, 3] for w in world]) + trans


# --------------------------------------------------------------------------- rodrigues
def test_rodrigues_known_rotations():
    np.testing.assert_allclose(rodrigues(np.zeros(3)), np.eye(3), atol=1e-15)
    np.testing.assert_allclose(rodrigues([0, 0, np.pi / 2]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(rodrigues([np.pi / 2, 0, 0]), [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(rodrigues([0, np.pi, 0]), np.diag([-1.0, 1.0, -1.0]), atol=1e-12)
    aa = np.random.default_rng(0).normal(size=(4, 5, 3))
    r = rodrigues(aa)
    assert r.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(r, Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    tiny = rodrigues([1e-14, 0, 0])  # below the small-angle guard: still (almost exactly) identity
    np.testing.assert_allclose(tiny, np.eye(3), atol=1e-13)


# ------------------------------------------------------------------------- forward pass
def test_zero_pose_is_the_shaped_template(model):
    shape, expr, _, _ = random_params(1)
    verts, joints = model.forward(shape=shape, expression=expr)
    expected = model.v_template + np.einsum("vck,k->vc", model.shapedirs, shape) \
        + np.einsum("vck,k->vc", model.exprdirs, expr)
    np.testing.assert_allclose(verts, expected, atol=1e-12)
    np.testing.assert_allclose(joints, model.j_regressor @ expected, atol=1e-12)
    np.testing.assert_allclose(model.shaped(shape, expr), expected, atol=1e-12)
    # Fewer coefficients than components are zero-padded; more are refused.
    np.testing.assert_allclose(model.shaped(shape[:2]), model.shaped(np.r_[shape[:2], 0, 0]))
    with pytest.raises(HeadModelError, match="coefficients"):
        model.shaped(np.ones(N_SHAPE + 1))


def test_root_rotation_is_rigid_about_the_root_joint(model):
    shape, expr, _, _ = random_params(2)
    pose = np.zeros((5, 3))
    pose[0] = [0.3, -0.7, 0.2]
    verts, joints = model.forward(shape=shape, expression=expr, pose=pose)
    rest = model.shaped(shape, expr)
    rest_j = model.rest_joints(shape, expr)
    r = Rotation.from_rotvec(pose[0]).as_matrix()
    np.testing.assert_allclose(verts, (rest - rest_j[0]) @ r.T + rest_j[0], atol=1e-12)
    np.testing.assert_allclose(joints, (rest_j - rest_j[0]) @ r.T + rest_j[0], atol=1e-12)
    # Rigid: every pairwise distance is preserved.
    d = np.linalg.norm(verts[:, None] - verts[None, :20], axis=-1)
    d0 = np.linalg.norm(rest[:, None] - rest[None, :20], axis=-1)
    np.testing.assert_allclose(d, d0, atol=1e-12)


def test_translation_moves_everything(model):
    shape, expr, pose, trans = random_params(3)
    v0, j0 = model.forward(shape, expr, pose)
    v1, j1 = model.forward(shape, expr, pose, translation=trans)
    np.testing.assert_allclose(v1 - v0, np.broadcast_to(trans, v0.shape), atol=1e-12)
    np.testing.assert_allclose(j1 - j0, np.broadcast_to(trans, j0.shape), atol=1e-12)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_forward_matches_independent_per_vertex_lbs(model, seed):
    shape, expr, pose, trans = random_params(seed, scale=0.5)
    verts, joints = model.forward(shape, expr, pose, trans)
    ref_v, ref_j = reference_forward(model, shape, expr, pose, trans)
    np.testing.assert_allclose(verts, ref_v, atol=1e-12)
    np.testing.assert_allclose(joints, ref_j, atol=1e-12)
    # The correctives matter: without them the answer is measurably different.
    plain = dataclasses.replace(model, posedirs=np.zeros_like(model.posedirs))
    assert np.abs(plain.forward(shape, expr, pose, trans)[0] - verts).max() > 1e-5


def test_child_joint_rotation_moves_only_its_subtree():
    base = make_model()
    m = dataclasses.replace(base, posedirs=np.zeros_like(base.posedirs))
    pose = np.zeros((5, 3))
    pose[2] = [0.4, 0, 0]  # jaw open
    verts, joints = m.forward(pose=pose)
    rest_j = m.rest_joints()
    np.testing.assert_allclose(joints[[0, 1, 3, 4]], rest_j[[0, 1, 3, 4]], atol=1e-12)
    np.testing.assert_allclose(joints[2], rest_j[2], atol=1e-12)  # a joint rotates about itself
    moved = np.linalg.norm(verts - m.v_template, axis=1)
    jaw_w = m.weights[:, 2]
    # A vertex moves by its jaw weight times its chord on the jaw's arc (|p - jaw| < 0.25 m, 0.4 rad).
    assert np.all(moved <= jaw_w * 2 * np.sin(0.2) * 0.25 + 1e-12)
    assert moved[jaw_w > 0.5].min() > 1e-4


@pytest.mark.parametrize("joint,r,c", [(1, 0, 1), (2, 2, 0), (3, 1, 2), (4, 0, 0)])
def test_pose_correctives_use_flame_feature_order(joint, r, c):
    """Feature index 9 * (j - 1) + 3 * row + col holds (R_j - I)[row, col], as in FLAME."""
    base = make_model()
    V = base.n_vertices
    k = 9 * (joint - 1) + 3 * r + c
    direction = np.random.default_rng(k).normal(size=(V, 3))
    posedirs = np.zeros((V, 3, 36))
    posedirs[:, :, k] = direction
    weights = np.zeros((V, 5))
    weights[:, 0] = 1.0  # only the (unposed) root skins: what remains is the corrective alone
    m = dataclasses.replace(base, posedirs=posedirs, weights=weights)
    pose = np.zeros((5, 3))
    pose[joint] = [0.5, -0.4, 0.3]
    verts, _ = m.forward(pose=pose)
    rmat = Rotation.from_rotvec(pose[joint]).as_matrix()
    expected = (rmat - np.eye(3))[r, c]
    assert abs(expected) > 1e-3
    np.testing.assert_allclose(verts - m.v_template, direction * expected, atol=1e-12)
    # Rotating the root adds no corrective (FLAME's feature starts at joint 1).
    pose_root = np.zeros((5, 3))
    pose_root[0] = [0.5, -0.4, 0.3]
    rest = m.v_template
    v_root, _ = m.forward(pose=pose_root)
    j0 = m.rest_joints()[0]
    np.testing.assert_allclose(v_root, (rest - j0) @ Rotation.from_rotvec(pose_root[0]).as_matrix().T + j0,
                               atol=1e-12)


def test_joint_expr_dirs_consistency(model):
    _, expr, _, _ = random_params(7)
    jd = model.joint_expr_dirs()
    assert jd.shape == (5, 3, N_EXPR)
    np.testing.assert_allclose(model.rest_joints(expression=expr) - model.rest_joints(), jd @ expr, atol=1e-12)
    assert np.abs(jd).max() > 0


# -------------------------------------------------------------------------------- I/O
def _with_extras(m: HeadModel) -> HeadModel:
    rng = np.random.default_rng(9)
    L = 7
    return dataclasses.replace(
        m, lmk_faces=rng.integers(0, len(m.faces), L), lmk_bary=rng.dirichlet(np.ones(3), L),
        lmk_ids=np.arange(10, 10 + L), lmk_scheme="mediapipe478", uv=rng.random((len(m.faces), 3, 2)),
        shape_names=tuple(f"s{i}" for i in range(N_SHAPE)), source="unit-test", meta={"k": [1, 2]},
    )


def test_cadence_npz_round_trip(model, tmp_path):
    m = _with_extras(model)
    m.save(tmp_path / "head.npz")
    back = HeadModel.load(tmp_path / "head.npz")
    assert (back.name, back.expr_names, back.shape_names) == (m.name, m.expr_names, m.shape_names)
    assert (back.lmk_scheme, back.source, back.meta) == (m.lmk_scheme, m.source, m.meta)
    for attr in ("v_template", "faces", "j_regressor", "weights", "parents", "lmk_faces", "lmk_bary", "lmk_ids", "uv"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(m, attr), err_msg=attr)
    for attr in ("shapedirs", "exprdirs", "posedirs"):  # stored as float32
        np.testing.assert_allclose(getattr(back, attr), getattr(m, attr), rtol=1e-6, atol=1e-9, err_msg=attr)
    shape, expr, pose, trans = random_params(8)
    np.testing.assert_allclose(back.forward(shape, expr, pose, trans)[0], m.forward(shape, expr, pose, trans)[0],
                               atol=1e-7)
    np.testing.assert_allclose(back.landmarks(), m.landmarks(), atol=1e-12)
    assert back.content_hash() == m.content_hash()
    # Saving the loaded model again is byte-for-byte stable in content.
    back.save(tmp_path / "again.npz")
    assert HeadModel.load(tmp_path / "again.npz").content_hash() == m.content_hash()


def test_flame_layout_npz(tmp_path):
    a = ff.make_flame_arrays(120, 5, 5, seed=3)
    np.savez(tmp_path / "flame.npz", **a)
    m = HeadModel.load(tmp_path / "flame.npz")
    assert (m.n_shape, m.n_expr) == (5, 5) and list(m.parents) == [-1, 0, 1, 1, 1]
    np.testing.assert_array_equal(m.exprdirs, a["shapedirs"][:, :, 5:])
    same = from_flame_arrays(a, name="x", source="y")
    assert m.content_hash() == same.content_hash()


def test_content_hash_distinguishes_models(model):
    assert model.content_hash() == make_model().content_hash()
    v = model.v_template.copy()
    v[0, 0] += 1e-4
    assert dataclasses.replace(model, v_template=v).content_hash() != model.content_hash()
    assert make_model(seed=1).content_hash() != model.content_hash()
    renamed = dataclasses.replace(model, expr_names=tuple(f"x{i}" for i in range(N_EXPR)))
    assert renamed.content_hash() != model.content_hash()


def test_load_rejects_foreign_and_broken_npz(model, tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(HeadModelError, match="neither a Cadence head"):
        HeadModel.load(tmp_path / "other.npz")
    model.save(tmp_path / "head.npz")
    data = (tmp_path / "head.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(HeadModelError, match="could not read"):
        HeadModel.load(tmp_path / "cut.npz")
    with pytest.raises(HeadModelError):
        HeadModel.load(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- validation
def _bad(model: HeadModel) -> dict[str, dict]:
    V, F = model.n_vertices, len(model.faces)
    nan_v = model.v_template.copy()
    nan_v[3, 1] = np.nan
    inf_e = model.exprdirs.copy()
    inf_e[0, 0, 0] = np.inf
    faces_hi, faces_neg = model.faces.copy(), model.faces.copy()
    faces_hi[0, 0], faces_neg[0, 1] = V, -1
    return {
        "v_template 2 columns": dict(v_template=model.v_template[:, :2]),
        "shapedirs wrong V": dict(shapedirs=model.shapedirs[:-1]),
        "exprdirs 2-D": dict(exprdirs=model.exprdirs[:, :, 0]),
        "posedirs 10 comps": dict(posedirs=model.posedirs[:, :, :10]),
        "j_regressor wrong": dict(j_regressor=model.j_regressor[:, :-1]),
        "weights wrong": dict(weights=model.weights[:, :4]),
        "NaN template": dict(v_template=nan_v),
        "inf exprdirs": dict(exprdirs=inf_e),
        "faces out of range": dict(faces=faces_hi),
        "faces negative": dict(faces=faces_neg),
        "float faces": dict(faces=model.faces.astype(np.float64)),
        "quads": dict(faces=np.zeros((F, 4), np.int32)),
        "root has a parent": dict(parents=np.array([0, 0, 1, 1, 1])),
        "parent after child": dict(parents=np.array([-1, 0, 3, 1, 1])),
        "parent out of range": dict(parents=np.array([-1, 0, 1, 1, 7])),
        "scalar parents": dict(parents=np.array(-1)),
        "duplicate expr names": dict(expr_names=("a",) * N_EXPR),
        "too few expr names": dict(expr_names=("a", "b")),
        "duplicate shape names": dict(shape_names=("s",) * N_SHAPE),
        "landmark face out of range": dict(lmk_faces=np.array([F]), lmk_bary=np.ones((1, 3)) / 3),
        "landmark bary shape": dict(lmk_faces=np.array([0, 1]), lmk_bary=np.ones((1, 3)) / 3),
        "uv shape": dict(uv=np.zeros((F, 3, 3))),
        "too many vertices": dict(v_template=np.zeros((200_001, 3))),
    }


BAD_CASES = list(_bad(make_model()))


@pytest.mark.parametrize("case", BAD_CASES)
def test_validate_rejects_malformed_models(model, case):
    with pytest.raises(HeadModelError):
        dataclasses.replace(model, **_bad(model)[case])


def test_validate_accepts_and_coerces(model):
    m = dataclasses.replace(model, faces=model.faces.astype(np.uint32), v_template=model.v_template.astype(np.float32),
                            posedirs=np.zeros((model.n_vertices, 3, 0)))
    assert m.faces.dtype == np.int32 and m.v_template.dtype == np.float64
    shape, expr, pose, trans = random_params(10)
    ref = reference_forward(dataclasses.replace(m, posedirs=np.zeros_like(model.posedirs)), shape, expr, pose, trans)
    np.testing.assert_allclose(m.forward(shape, expr, pose, trans)[0], ref[0], atol=1e-12)
    assert m.joint_names == ("root", "neck", "jaw", "eye_L", "eye_R")
