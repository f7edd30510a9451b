"""The Blender rig reproduces HeadModel.forward exactly; the cadence.add_head operator builds it.

Exactness: Blender's evaluated vertices (shape keys + driven pose correctives + Armature modifier),
in mesh-local coordinates (= model coordinates), equal the numpy forward pass within 1e-5.
"""

from __future__ import annotations

import importlib
import math
import os

import numpy as np
import pytest

TOL = 1e-5


# ------------------------------------------------------------------------------------ helpers
def random_head(cadence, seed: int = 0, n_shape: int = 4, n_expr: int = 6, posedirs: bool = True, uv: bool = True):
    """A small sphere-ish head with five joints, random bases and a J_regressor that moves with expression."""
    hm = cadence.inference.heads.head_model
    rng = np.random.default_rng(seed)
    n_lat, n_lon = 10, 16
    lat = np.linspace(0.15, math.pi - 0.15, n_lat)
    lon = np.linspace(0, 2 * math.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([np.sin(la) * np.sin(lo) * 0.08, np.cos(la) * 0.11 + 0.05, np.sin(la) * np.cos(lo) * 0.09], -1)
    v = v.reshape(-1, 3)
    faces = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [(a, b, d), (a, d, c)]
    faces = np.array(faces)
    V = len(v)
    weights = rng.random((V, 5)) ** 3
    weights[rng.random((V, 5)) < 0.3] = 0.0
    weights[:, 0] += 1e-3
    weights /= weights.sum(1, keepdims=True)
    j_reg = np.zeros((5, V))
    for j in range(5):
        idx = rng.choice(V, 12, replace=False)
        w = rng.random(12)
        j_reg[j, idx] = w / w.sum()
    uvs = rng.random((len(faces), 3, 2)) if uv else None
    return hm.HeadModel(
        name=f"random{seed}", v_template=v, faces=faces,
        shapedirs=rng.normal(0, 0.01, (V, 3, n_shape)), exprdirs=rng.normal(0, 0.01, (V, 3, n_expr)),
        posedirs=rng.normal(0, 0.01, (V, 3, 36)) if posedirs else np.zeros((V, 3, 36)),
        j_regressor=j_reg, weights=weights, uv=uvs, source="test",
    )


def evaluated_vertices(mesh_obj) -> np.ndarray:
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    ob_eval = mesh_obj.evaluated_get(depsgraph)
    me = ob_eval.to_mesh()
    try:
        co = np.empty(len(me.vertices) * 3, dtype=np.float32)
        me.vertices.foreach_get("co", co)
    finally:
        ob_eval.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64)


def random_state(model, rng, max_angle: float = 0.5):
    shape = rng.normal(0, 1.5, model.n_shape)
    expr = rng.normal(0, 1.5, model.n_expr)
    axes = rng.normal(size=(model.n_joints, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    pose = axes * rng.uniform(0, max_angle, (model.n_joints, 1))
    trans = rng.normal(0, 0.03, 3)
    return shape, expr, pose, trans


def check_exact(cadence, model, draws: int = 3, seed: int = 1, rig=None) -> float:
    """Compare Blender against numpy for several random states (building the rig unless given); worst error."""
    import bpy

    rig_mod = cadence.operators.rig.build

    pose_mod = cadence.operators.rig.pose
    rig = rig or rig_mod.build_rig(model, bpy.context, model_file="")
    mesh = rig_mod.rig_mesh(rig)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(draws):
        shape, expr, pose, trans = random_state(model, rng)
        pose_mod.apply_identity(rig, shape)
        pose_mod.set_pose(rig, expression=expr, pose=pose, translation=trans)
        bpy.context.view_layer.update()
        got = evaluated_vertices(mesh)
        want, _ = model.forward(shape, expr, pose, trans)
        err = float(np.abs(got - want).max())
        assert err < TOL, f"rig deviates from the forward pass by {err:.3g}"
        worst = max(worst, err)
    return worst


# ------------------------------------------------------------------------------ rotation maths
def test_euler_conversion_matches_mathutils(cadence):
    from mathutils import Euler, Matrix


    rotations = cadence.operators.rig.rotations
    rng = np.random.default_rng(3)
    aa = rng.normal(size=(200, 3)) * rng.uniform(0, 3.0, (200, 1))
    eul = rotations.axis_angle_to_euler_xyz(aa)
    rots = cadence.inference.heads.head_model.rodrigues(aa)
    for r, e in zip(rots, eul):
        m = np.array(Matrix(r.tolist()).to_euler("XYZ").to_matrix())
        assert np.allclose(m, r, atol=1e-6)
        assert np.allclose(rotations.euler_xyz_to_matrix(e), r, atol=1e-12)
        # Blender's own Euler XYZ of our angles is the same rotation (the convention is Blender's).
        assert np.allclose(np.array(Euler(e.tolist(), "XYZ").to_matrix()), r, atol=1e-6)
    # Gimbal lock: y = +-pi/2 still round-trips.
    for sy in (1, -1):
        r = rotations.euler_xyz_to_matrix(np.array([0.3, sy * math.pi / 2, -0.2]))
        assert np.allclose(rotations.euler_xyz_to_matrix(rotations.matrix_to_euler_xyz(r)), r, atol=1e-9)


def test_continuous_euler_has_no_jumps(cadence):
    rotations = cadence.operators.rig.rotations
    t = np.linspace(0, 4 * math.pi, 400)
    aa = np.stack([t, 0.2 * np.sin(t), np.zeros_like(t)], -1)  # more than two full turns about ~X
    eul = rotations.axis_angle_to_euler_xyz(aa, continuous=True)
    assert np.abs(np.diff(eul, axis=0)).max() < 0.2
    rots = cadence.inference.heads.head_model.rodrigues(aa)
    assert np.allclose(rotations.euler_xyz_to_matrix(eul), rots, atol=1e-9)
    assert eul[-1, 0] > 3 * math.pi  # unwrapped, not folded back into (-pi, pi]


def test_bone_locations_broadcast_over_time(cadence):
    pose_mod = cadence.operators.rig.pose
    rng = np.random.default_rng(4)
    jed = rng.normal(size=(5, 3, 6))
    expr, trans = rng.normal(size=(7, 6)), rng.normal(size=(7, 3))
    rots = cadence.inference.heads.head_model.rodrigues(rng.normal(size=(7, 5, 3)))
    locs = pose_mod.bone_locations(jed, expr, rots, trans)
    assert locs.shape == (7, 5, 3)
    for t in range(7):
        d = jed @ expr[t]
        want = d - np.einsum("jab,jb->ja", rots[t], d)
        want[0] += trans[t]
        assert np.allclose(pose_mod.bone_locations(jed, expr[t], rots[t], trans[t]), want)
        assert np.allclose(locs[t], want)


# ---------------------------------------------------------------------------------- exactness
def test_random_head_is_exact(cadence, clean_scene):
    model = random_head(cadence, seed=0)
    assert np.abs(model.joint_expr_dirs()).max() > 1e-4  # the location compensation is exercised
    check_exact(cadence, model, draws=4)


def test_random_head_without_correctives_is_exact(cadence, clean_scene):
    import bpy

    model = random_head(cadence, seed=5, posedirs=False, uv=False)
    check_exact(cadence, model, draws=2)
    rig = bpy.context.view_layer.objects.active
    keys = cadence.operators.rig.build.rig_mesh(rig).data.shape_keys.key_blocks
    assert not [k.name for k in keys if k.name.startswith("pose_")]


# ---------------------------------------------------------------------------------- structure
def test_rig_layout_follows_the_contract(cadence, clean_scene):
    import bpy

    rig_mod = cadence.operators.rig.build

    pose_mod = cadence.operators.rig.pose
    model = random_head(cadence, seed=2)
    rig = rig_mod.build_rig(model, bpy.context, name="Probe")
    assert rig.type == "ARMATURE" and bpy.context.view_layer.objects.active == rig and rig.select_get()
    assert np.allclose(rig.rotation_euler, (math.pi / 2, 0, 0)) and np.allclose(rig.location, 0)
    assert [b.name for b in rig.data.bones] == ["root", "neck", "jaw", "eye_L", "eye_R"]
    for j, bone in enumerate(rig.data.bones):
        parent = model.parents[j]
        assert (bone.parent.name if bone.parent else None) == (model.joint_names[parent] if parent >= 0 else None)
        assert not bone.use_connect
        assert np.allclose(np.array(bone.matrix_local)[:3, :3], np.eye(3), atol=1e-6)
        assert np.allclose(bone.head_local, model.rest_joints()[j], atol=1e-6)
        assert rig.pose.bones[bone.name].rotation_mode == "XYZ"

    mesh = rig_mod.rig_mesh(rig)
    assert mesh.parent == rig and mesh.parent_type == "OBJECT"
    assert np.allclose(np.array(mesh.matrix_parent_inverse), np.eye(4))
    assert np.allclose(np.array(mesh.matrix_local), np.eye(4))
    (mod,) = mesh.modifiers
    assert mod.type == "ARMATURE" and mod.object == rig and mod.use_vertex_groups
    assert not mod.use_bone_envelopes and not mod.use_deform_preserve_volume
    assert len(mesh.data.vertices) == model.n_vertices and len(mesh.data.polygons) == len(model.faces)
    uv = np.empty(len(mesh.data.loops) * 2, dtype=np.float32)
    mesh.data.uv_layers[0].data.foreach_get("uv", uv)
    assert np.allclose(uv.reshape(-1, 3, 2), model.uv, atol=1e-6)

    # Vertex groups carry exactly the skinning weights.
    got = np.zeros_like(model.weights)
    for v in mesh.data.vertices:
        for g in v.groups:
            got[v.index, g.group] = g.weight
    assert [g.name for g in mesh.vertex_groups] == list(model.joint_names)
    assert np.allclose(got, model.weights, atol=1e-6)

    keys = mesh.data.shape_keys.key_blocks
    pose_names = [f"pose_{j}_{a}{b}" for j in model.joint_names[1:] for a in range(3) for b in range(3)]
    assert [k.name for k in keys] == ["Basis", *model.shape_names, *model.expr_names, *pose_names]
    for name in (*model.shape_names, *model.expr_names):
        assert (keys[name].slider_min, keys[name].slider_max) == (-10.0, 10.0)
    delta = np.empty(model.n_vertices * 3, dtype=np.float32)
    keys[model.expr_names[1]].data.foreach_get("co", delta)
    assert np.allclose(delta.reshape(-1, 3) - model.v_template, model.exprdirs[:, :, 1], atol=1e-6)
    drivers = mesh.data.shape_keys.animation_data.drivers
    assert len(drivers) == 9 * (model.n_joints - 1)
    for fc in drivers:
        assert fc.driver.is_valid and fc.driver.is_simple_expression, fc.data_path

    meta = rig["cadence"]
    assert meta["version"] == 1 and meta["model_name"] == model.name and meta["model_source"] == "test"
    assert meta["model_hash"] == model.content_hash() and meta["mesh"] == mesh.name
    assert list(meta["expr_names"]) == list(model.expr_names)
    assert list(meta["joint_names"]) == list(model.joint_names)
    assert np.allclose(np.array(meta["joint_expr_dirs"]), model.joint_expr_dirs().ravel())
    assert list(meta["shape"]) == [0.0] * model.n_shape
    assert os.path.isfile(meta["model_file"]) and meta["model_file"].endswith(f"{model.content_hash()}.npz")
    reloaded = cadence.inference.heads.head_model.HeadModel.load(meta["model_file"])
    assert reloaded.expr_names == model.expr_names and np.allclose(reloaded.exprdirs, model.exprdirs, atol=1e-8)
    assert reloaded.content_hash() == meta["model_hash"]  # the worker can tell it has the rig's head
    info = rig_mod.rig_model_info(rig)
    assert info["joint_expr_dirs"].shape == (5, 3, model.n_expr)
    assert rig_mod.find_rig(rig) == rig and rig_mod.find_rig(mesh) == rig

    pose_mod.apply_identity(rig, [0.5, -1.0])
    assert np.allclose(rig["cadence"]["shape"], [0.5, -1.0, 0.0, 0.0])
    assert bpy.context.view_layer.objects.active == rig and rig.mode == "OBJECT"
    assert np.allclose([b.head_local for b in rig.data.bones], model.rest_joints([0.5, -1.0]), atol=1e-6)
    with pytest.raises(ValueError, match="identity coefficients"):
        pose_mod.apply_identity(rig, np.zeros(model.n_shape + 1))
    with pytest.raises(ValueError, match="slider range"):
        pose_mod.apply_identity(rig, [11.0])
    with pytest.raises(ValueError, match="finite"):
        pose_mod.set_pose(rig, expression=[np.nan])


def test_find_rig_rejects_other_objects(cadence, clean_scene):
    import bpy

    rig_mod = cadence.operators.rig.build
    me = bpy.data.meshes.new("plain")
    ob = bpy.data.objects.new("plain", me)
    assert rig_mod.find_rig(ob) is None and rig_mod.find_rig(None) is None
    with pytest.raises(rig_mod.RigError, match="not a Cadence rig"):
        rig_mod.rig_model_info(ob)


def test_correctives_follow_bones_during_playback(cadence, clean_scene):
    """Background mode, no Python auto-run: the drivers still evaluate on frame changes."""
    import bpy

    rig_mod = cadence.operators.rig.build
    prefs = bpy.context.preferences.filepaths
    auto_run = prefs.use_scripts_auto_execute
    prefs.use_scripts_auto_execute = False  # simple expressions need no Python: prove it
    try:
        _check_playback(cadence, rig_mod)
    finally:
        prefs.use_scripts_auto_execute = auto_run


def _check_playback(cadence, rig_mod):
    import bpy

    rotations = cadence.operators.rig.rotations
    model = random_head(cadence, seed=4)
    rig = rig_mod.build_rig(model, bpy.context)
    mesh = rig_mod.rig_mesh(rig)
    jaw = rig.pose.bones["jaw"]
    jaw.rotation_euler = (0.0, 0.0, 0.0)
    jaw.keyframe_insert("rotation_euler", frame=1)
    jaw.rotation_euler = (0.4, -0.2, 0.1)
    jaw.keyframe_insert("rotation_euler", frame=11)
    scene = bpy.context.scene
    keys = mesh.data.shape_keys.key_blocks
    for frame in (11, 6, 1):
        scene.frame_set(frame)
        R = rotations.euler_xyz_to_matrix(np.array(jaw.rotation_euler))
        for a in range(3):
            for b in range(3):
                assert keys[f"pose_jaw_{a}{b}"].value == pytest.approx(R[a, b] - (a == b), abs=1e-6)
        pose = np.zeros((5, 3))
        pose[2] = _matrix_to_axis_angle(R)
        want, _ = model.forward(None, None, pose, None)
        assert np.abs(evaluated_vertices(mesh) - want).max() < TOL
    assert abs(keys["pose_jaw_00"].value) < 1e-9  # frame 1: rest


def _matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    from mathutils import Matrix

    axis, angle = Matrix(R.tolist()).to_quaternion().to_axis_angle()
    return np.array(axis) * angle


# ---------------------------------------------------------------------------------- operator
def _scene_state():
    import bpy

    return (
        sorted(o.name for o in bpy.data.objects), sorted(m.name for m in bpy.data.meshes),
        sorted(a.name for a in bpy.data.armatures), bpy.context.view_layer.objects.active,
    )


def test_operator_adds_head_from_file(cadence, clean_scene, tmp_path):
    import bpy

    model = random_head(cadence, seed=7)
    path = tmp_path / "my_head.npz"
    model.save(path)
    assert bpy.ops.cadence.add_head(filepath=str(path)) == {"FINISHED"}
    rig = bpy.context.view_layer.objects.active
    rig_mod = cadence.operators.rig.build
    pose_mod = cadence.operators.rig.pose
    assert rig_mod.find_rig(rig) == rig and rig.select_get()
    meta = rig_mod.rig_model_info(rig)
    assert meta["model_source"] == str(path) and meta["expr_names"] == list(model.expr_names)
    assert len(rig_mod.rig_mesh(rig).data.vertices) == model.n_vertices
    # Saved as float32 in the .npz: compare the rig to the model as loaded from that file.
    loaded = cadence.inference.heads.head_model.HeadModel.load(path)
    rng = np.random.default_rng(0)
    shape, expr, pose, trans = random_state(loaded, rng)
    pose_mod.apply_identity(rig, shape)
    pose_mod.set_pose(rig, expression=expr, pose=pose, translation=trans)
    bpy.context.view_layer.update()
    want, _ = loaded.forward(shape, expr, pose, trans)
    assert np.abs(evaluated_vertices(rig_mod.rig_mesh(rig)) - want).max() < TOL
    assert "UNDO" in bpy.types.CADENCE_OT_add_head.bl_options


@pytest.mark.parametrize("content", [None, b"not a head at all" * 20, b"PK\x03\x04broken zip"])
def test_operator_errors_leave_scene_unchanged(cadence, clean_scene, tmp_path, content):
    import bpy

    bpy.ops.object.empty_add()
    before = _scene_state()
    path = tmp_path / ("missing.pkl" if content is None else "garbage.pkl")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RuntimeError, match="Could not load head"):
        bpy.ops.cadence.add_head(filepath=str(path))
    assert _scene_state() == before


def test_failed_build_leaves_nothing_behind(cadence, clean_scene, monkeypatch):
    import bpy

    rig_mod = cadence.operators.rig.build
    before = _scene_state()

    def boom(*_args):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(rig_mod, "_add_vertex_groups", boom)
    with pytest.raises(RuntimeError, match="simulated failure"):
        rig_mod.build_rig(random_head(cadence, seed=8), bpy.context)
    assert _scene_state() == before


def test_rig_lands_in_scene_collection_when_active_one_is_excluded(cadence, clean_scene):
    import bpy

    coll = bpy.data.collections.new("Hidden")
    bpy.context.scene.collection.children.link(coll)
    layer_coll = bpy.context.view_layer.layer_collection.children["Hidden"]
    bpy.context.view_layer.active_layer_collection = layer_coll
    layer_coll.exclude = True
    rig = cadence.operators.rig.build.build_rig(random_head(cadence, seed=9), bpy.context)
    assert rig.name in bpy.context.scene.collection.objects and rig.name in bpy.context.view_layer.objects


def test_partial_set_pose_keeps_the_rest(cadence, clean_scene):
    import bpy

    rig_mod = cadence.operators.rig.build

    pose_mod = cadence.operators.rig.pose
    model = random_head(cadence, seed=10)
    rig = rig_mod.build_rig(model, bpy.context)
    mesh = rig_mod.rig_mesh(rig)
    rng = np.random.default_rng(2)
    shape, expr, pose, trans = random_state(model, rng)
    pose_mod.apply_identity(rig, shape)
    pose_mod.set_pose(rig, expression=expr, pose=pose, translation=trans)
    expr2 = rng.normal(0, 1.5, model.n_expr)
    pose_mod.set_pose(rig, expression=expr2)  # pose and translation stay
    bpy.context.view_layer.update()
    want, _ = model.forward(shape, expr2, pose, trans)
    assert np.abs(evaluated_vertices(mesh) - want).max() < TOL
    pose2 = random_state(model, rng)[2]
    pose_mod.set_pose(rig, pose=pose2)
    bpy.context.view_layer.update()
    want, _ = model.forward(shape, expr2, pose2, trans)
    assert np.abs(evaluated_vertices(mesh) - want).max() < TOL


def test_apply_identity_restores_the_users_mode(cadence, clean_scene):
    import bpy

    rig_mod = cadence.operators.rig.build

    pose_mod = cadence.operators.rig.pose
    model = random_head(cadence, seed=11)
    rig = rig_mod.build_rig(model, bpy.context)
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.view_layer.objects.active
    bpy.ops.object.mode_set(mode="EDIT")
    pose_mod.apply_identity(rig, np.ones(model.n_shape))
    assert bpy.context.view_layer.objects.active == cube and cube.mode == "EDIT"
    assert cube.select_get() and not rig.select_get()
    bpy.ops.object.mode_set(mode="OBJECT")
    assert np.allclose([b.head_local for b in rig.data.bones], model.rest_joints(np.ones(model.n_shape)), atol=1e-6)


# ------------------------------------------------------------------------- real head sources
def test_flame_pickle_head_is_exact(cadence, clean_scene, tmp_path):
    import bpy
    from flame_fixture import write_flame_pkl

    path = tmp_path / "flame_test.pkl"
    arrays = write_flame_pkl(path, n_vertices=400, n_shape=10, n_expr=10, seed=3)
    assert bpy.ops.cadence.add_head(filepath=str(path)) == {"FINISHED"}
    rig = bpy.context.view_layer.objects.active
    rig_mod = cadence.operators.rig.build
    meta = rig_mod.rig_model_info(rig)
    assert meta["model_source"] == str(path) and len(meta["expr_names"]) == arrays["n_expr"]
    model = importlib.import_module(f"{cadence.__name__}.inference.heads.head_files").load_head(path)
    assert meta["model_hash"] == model.content_hash()
    assert np.abs(model.posedirs).max() > 0 and np.abs(model.joint_expr_dirs()).max() > 0
    keys = rig_mod.rig_mesh(rig).data.shape_keys.key_blocks
    assert len(keys) == 1 + model.n_shape + model.n_expr + 36
    check_exact(cadence, model, draws=3, rig=rig)


def test_default_head_via_operator_is_exact(cadence, clean_scene, tmp_path):
    import bpy

    path = tmp_path / "other.npz"
    random_head(cadence, seed=12).save(path)
    assert bpy.ops.cadence.add_head(filepath=str(path)) == {"FINISHED"}
    assert bpy.ops.cadence.add_head() == {"FINISHED"}  # the file of the last call is not reused
    rig = bpy.context.view_layer.objects.active
    rig_mod = cadence.operators.rig.build
    meta = rig_mod.rig_model_info(rig)
    assert meta["model_source"].startswith("cadence-default-head")
    default_head = importlib.import_module(f"{cadence.__name__}.inference.heads.default_head")
    model = default_head.load_or_build(cadence.operators.prefs.cache_dir())
    assert meta["model_hash"] == model.content_hash()
    mesh = rig_mod.rig_mesh(rig)
    assert [g.name for g in mesh.vertex_groups] == list(model.joint_names)
    assert {"eyeBlink_L", "eyeBlink_R"} <= set(mesh.data.shape_keys.key_blocks.keys())  # jawOpen is the jaw bone
    assert (model.uv is None) == (len(mesh.data.uv_layers) == 0)
    check_exact(cadence, model, draws=2, rig=rig)


def test_head_without_identity_components(cadence, clean_scene):
    model = random_head(cadence, seed=13, n_shape=0, n_expr=3)
    check_exact(cadence, model, draws=1)
