"""The Cadence default head: geometry, rig data, semantic expressions, landmarks, recognisability."""

from __future__ import annotations

import ast
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from inference.heads.default_head import DEFAULT_HEAD_VERSION, build_default_head, cache_path, load_or_build
from inference.heads.head_model import HeadModel

REQUIRED = (
    "mouthFunnel mouthPucker mouthSmile_L mouthSmile_R mouthStretch_L mouthStretch_R mouthPress mouthClose "
    "mouthUpperUp mouthLowerDown mouthRollLower mouthRollUpper browInnerUp browDown_L browDown_R browOuterUp_L "
    "browOuterUp_R eyeBlink_L eyeBlink_R eyeSquint_L eyeSquint_R cheekPuff jawForward noseSneer_L noseSneer_R"
).split()


@pytest.fixture(scope="module")
def head() -> HeadModel:
    return build_default_head()


def _expr(m: HeadModel, **coeffs) -> np.ndarray:
    e = np.zeros(m.n_expr)
    for k, v in coeffs.items():
        e[m.expr_names.index(k)] = v
    return e


def _pose(jaw: float = 0.0) -> np.ndarray:
    p = np.zeros((5, 3))
    p[2, 0] = jaw
    return p


def _components(faces: np.ndarray, n: int) -> list[np.ndarray]:
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b, c in faces:
        for u, v in ((a, b), (b, c)):
            ru, rv = find(u), find(v)
            if ru != rv:
                parent[ru] = rv
    roots = np.array([find(i) for i in range(n)])
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def test_deterministic_and_fast(head):
    t = time.perf_counter()
    again = build_default_head()
    assert time.perf_counter() - t < 10.0
    assert again.content_hash() == head.content_hash()
    for k in ("v_template", "faces", "shapedirs", "exprdirs", "weights", "j_regressor", "lmk_faces", "lmk_bary", "uv"):
        assert np.array_equal(getattr(again, k), getattr(head, k)), k


def test_mesh_is_closed_oriented_and_clean(head):
    v, f = head.v_template, head.faces
    assert 5000 <= head.n_vertices <= 11000
    assert f.shape[1] == 3
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.min() > 1e-9  # no degenerate triangles
    edges = Counter(map(tuple, np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).tolist()))
    assert max(edges.values()) == 1  # no edge used twice in the same direction: consistent winding
    assert all((b, a) in edges for a, b in edges)  # every edge paired: closed
    comps = _components(f, head.n_vertices)
    assert len(comps) == 7  # skin (+ mouth bag + eye cups), two eyeballs, two rows of teeth, two brows
    for c in comps:
        fc = f[np.isin(f[:, 0], c)]
        t = v[fc]
        vol = np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6
        assert vol > 0  # outward normals
    size = v.max(0) - v.min(0)
    assert 0.13 < size[0] < 0.18 and 0.17 < size[2] < 0.26
    skin = v[: head.meta["n_skin_vertices"]]
    assert 0.20 < skin[:, 1].max() - (head.landmarks()[list(head.lmk_ids).index(152)][1]) < 0.26  # vertex-chin


def test_rig_data(head):
    assert head.joint_names == ("root", "neck", "jaw", "eye_L", "eye_R")
    assert list(head.parents) == [-1, 0, 1, 1, 1]
    assert np.allclose(head.weights.sum(1), 1.0) and head.weights.min() >= 0
    assert np.abs(head.joint_expr_dirs()).max() < 1e-9
    assert head.posedirs.shape == (head.n_vertices, 3, 36)
    J = head.rest_joints()
    assert J[0, 1] < J[1, 1] < J[2, 1] < J[3, 1]  # root below neck below jaw hinge below eyes
    for k, j in (("L", 3), ("R", 4)):
        a, b = head.meta["eyeball_vertices"][k]
        ids = np.arange(a, b + 1)
        assert np.allclose(head.weights[ids, j], 1.0)
        assert np.allclose(np.linalg.norm(head.v_template[ids] - J[j], axis=1), head.meta["anatomy"]["eye_radius"])
    assert J[3, 0] > 0 > J[4, 0]  # eye_L on the subject's left (+X)
    assert 10 <= head.n_shape <= 20 and head.n_expr >= 20


def test_required_expressions_present(head):
    missing = [n for n in REQUIRED if n not in head.expr_names]
    assert not missing and "jawOpen" not in head.expr_names
    for i, n in enumerate(head.expr_names):
        assert np.abs(head.exprdirs[:, :, i]).max() > 1e-3, n  # every component moves something


def test_teeth_are_rigid_inside_the_mouth(head):
    up0, up1 = head.meta["teeth_vertices"]["upper"]
    lo0, lo1 = head.meta["teeth_vertices"]["lower"]
    upper, lower = np.arange(up0, up1 + 1), np.arange(lo0, lo1 + 1)
    assert np.allclose(head.weights[upper, 1], 1.0) and np.allclose(head.weights[lower, 2], 1.0)
    jaw_shift = [head.expr_names.index(n) for n in ("jawForward", "jawLeft", "jawRight")]
    others = [i for i in range(head.n_expr) if i not in jaw_shift]
    assert np.abs(head.exprdirs[upper]).max() == 0 and np.abs(head.exprdirs[lower][:, :, others]).max() == 0
    assert np.ptp(head.exprdirs[lower][:, :, jaw_shift], axis=0).max() < 1e-12  # a rigid shift
    # Behind the lips at rest, upper edge above the lower one's; opening the jaw parts the rows.
    _, _, lv = _lips(head)
    v0 = head.v_template
    lip_front = min(v0[lv["upper_outer_mid"], 2], v0[lv["lower_outer_mid"], 2])
    assert v0[upper, 2].max() < lip_front - 0.004 and v0[lower, 2].max() < v0[upper, 2].max()
    v1, _ = head.forward(pose=_pose(0.3))
    assert v1[upper, 1].min() - v1[lower, 1].max() > 0.008
    assert np.abs(v1[upper] - v0[upper]).max() < 1e-9


def test_material_groups_partition_the_faces(head):
    g = head.meta["material_groups"]
    assert {"skin", "lips", "mouth", "eyes", "iris", "pupil", "teeth", "brows"} <= set(g)
    ids = np.concatenate([np.asarray(v, dtype=np.int64) for v in g.values()])
    assert len(ids) == len(head.faces) and np.array_equal(np.sort(ids), np.arange(len(head.faces)))
    J = head.rest_joints()
    iris = head.v_template[head.faces[g["iris"]]].mean(axis=1)
    assert len(g["iris"]) > 0 and (iris[:, 2] > J[3, 2] + 0.009).all()  # on the front of the eyeballs
    t0, t1 = head.meta["teeth_vertices"]["upper"][0], head.meta["teeth_vertices"]["lower"][1]
    assert np.isin(head.faces[g["teeth"]], np.arange(t0, t1 + 1)).all()


def _lips(m: HeadModel):
    lv = m.meta["lip_vertices"]
    return np.array(lv["upper_inner"][1:-1]), np.array(lv["lower_inner"][1:-1]), lv


def test_jaw_opens_mouth_and_leaves_upper_face(head):
    up, lo, _ = _lips(head)
    v0, _ = head.forward()
    v1, _ = head.forward(pose=_pose(0.3))
    gap0 = np.linalg.norm(v0[up] - v0[lo], axis=1).max()
    gap1 = np.linalg.norm(v1[up] - v1[lo], axis=1)
    assert gap0 < 1e-3 and gap1[len(gap1) // 2] > 0.01
    nose = head.landmarks(v1)[list(head.lmk_ids).index(4)] - head.landmarks(v0)[list(head.lmk_ids).index(4)]
    assert np.linalg.norm(nose) < 1e-4
    a, b = head.meta["eyeball_vertices"]["L"]
    assert np.abs(v1[a : b + 1] - v0[a : b + 1]).max() < 1e-9


def test_blink_closes_left_lid_only(head):
    v, _ = head.forward(expression=_expr(head, eyeBlink_L=1.0))
    for k, closed in (("L", True), ("R", False)):
        lid = head.meta["eyelid_vertices"][k]
        gap = np.linalg.norm(v[lid["upper"]] - v[lid["lower"]], axis=1).max()
        assert (gap < 1e-3) if closed else (gap > 5e-3), (k, gap)
    # Halfway the lid stays outside the eyeball.
    v, _ = head.forward(expression=_expr(head, eyeBlink_L=0.5))
    c = head.rest_joints()[3]
    d = np.linalg.norm(v[head.meta["eyelid_vertices"]["L"]["upper"]] - c, axis=1)
    assert d.min() > head.meta["anatomy"]["eye_radius"]


def _delta(m: HeadModel, name: str, vid: int) -> np.ndarray:
    return m.exprdirs[vid, :, m.expr_names.index(name)]


def test_components_move_what_they_name(head):
    _, _, lv = _lips(head)
    cl, cr = lv["corner_L"], lv["corner_R"]
    d = _delta(head, "mouthSmile_L", cl)
    assert d[1] > 0.004 and d[0] > 0.003 and np.linalg.norm(_delta(head, "mouthSmile_L", cr)) < 1e-6
    d = _delta(head, "mouthSmile_R", cr)
    assert d[1] > 0.004 and d[0] < -0.003
    assert _delta(head, "mouthStretch_L", cl)[0] > 0.003 and _delta(head, "mouthFrown_R", cr)[1] < -0.003
    assert _delta(head, "mouthPucker", lv["upper_outer_mid"])[2] > 0.005 and _delta(head, "mouthPucker", cl)[0] < -0.003
    assert _delta(head, "mouthUpperUp", lv["upper_outer_mid"])[1] > 0.003
    assert _delta(head, "mouthLowerDown", lv["lower_outer_mid"])[1] < -0.003
    assert _delta(head, "mouthRollLower", lv["lower_outer_mid"])[2] < -0.003
    assert _delta(head, "mouthRollUpper", lv["upper_outer_mid"])[2] < -0.003
    assert _delta(head, "jawForward", lv["lower_outer_mid"])[2] > 0.005
    lm = head.landmarks(head.v_template)
    ids = list(head.lmk_ids)

    def lmk_delta(name, mp):
        f, b = head.lmk_faces[ids.index(mp)], head.lmk_bary[ids.index(mp)]
        return b @ head.exprdirs[head.faces[f], :, head.expr_names.index(name)]

    assert lmk_delta("browInnerUp", 107)[1] > 0.003 and lmk_delta("browInnerUp", 336)[1] > 0.003
    assert lmk_delta("browDown_L", 334)[1] < -0.003 and abs(lmk_delta("browDown_L", 105)[1]) < 1e-4
    assert lmk_delta("browOuterUp_R", 70)[1] > 0.003
    assert lmk_delta("noseSneer_L", 294)[1] > 0.002 and abs(lmk_delta("noseSneer_L", 64)[1]) < 1e-4
    assert lmk_delta("eyeSquint_L", 374)[1] > 0.001 and abs(lmk_delta("eyeSquint_L", 145)[1]) < 1e-6
    puff = head.exprdirs[:, 0, head.expr_names.index("cheekPuff")]
    top = int(np.argmax(puff))
    assert puff[top] > 0.004 and head.v_template[top, 0] > 0.03 and -0.075 < head.v_template[top, 1] < -0.03
    assert lm.shape == (len(ids), 3)


def test_mouth_close_meets_lips_with_open_jaw(head):
    up, lo, _ = _lips(head)
    v, _ = head.forward(expression=_expr(head, mouthClose=1.0), pose=_pose(0.2))
    gap = np.linalg.norm(v[up] - v[lo], axis=1)
    assert gap.max() < 2e-3
    v, _ = head.forward(pose=_pose(0.2))
    assert np.linalg.norm(v[up] - v[lo], axis=1).max() > 0.01


def test_lips_never_cross(head):
    up, lo, _ = _lips(head)
    lip_names = [n for n in head.expr_names if n.startswith("mouth") and n != "mouthClose"] + ["jawForward"]
    rng = np.random.default_rng(7)
    for _ in range(60):
        e = np.zeros(head.n_expr)
        for n in rng.choice(lip_names, size=3, replace=False):
            e[head.expr_names.index(n)] = rng.uniform(0, 1)
        for jaw in (0.0, 0.15):
            v, _ = head.forward(expression=e, pose=_pose(jaw))
            assert (v[up, 1] - v[lo, 1]).min() > -5e-4


def test_landmarks_sit_on_their_features(head):
    ids = list(head.lmk_ids)
    lm = head.landmarks()
    v = head.v_template
    _, _, lv = _lips(head)
    assert head.lmk_scheme == "mediapipe478" and len(ids) >= 120
    needed = {61, 291, 0, 17, 13, 14, 33, 133, 263, 362, 159, 145, 386, 374, 468, 473, 1, 4, 152, 10, 234, 454, 105, 334}
    assert needed <= set(ids)
    assert np.allclose(lm[ids.index(291)], v[lv["corner_L"]]) and np.allclose(lm[ids.index(61)], v[lv["corner_R"]])
    J = head.rest_joints()
    r = head.meta["anatomy"]["eye_radius"]
    assert np.allclose(lm[ids.index(473)], J[3] + [0, 0, r]) and np.allclose(lm[ids.index(468)], J[4] + [0, 0, r])
    assert lm[ids.index(13), 1] - lm[ids.index(14), 1] < 1e-3  # closed mouth at rest
    assert lm[ids.index(0), 1] > lm[ids.index(13), 1] > lm[ids.index(17), 1]
    assert lm[ids.index(4), 2] > lm[ids.index(0), 2] > lm[ids.index(152), 2] - 0.03
    assert lm[ids.index(159), 1] > J[4, 1] > lm[ids.index(145), 1]
    assert lm[ids.index(454), 0] > 0.05 and lm[ids.index(234), 0] < -0.05
    assert lm[ids.index(152), 1] < lm[ids.index(17), 1] - 0.02 and lm[ids.index(10), 1] > lm[ids.index(105), 1]


def test_brows_ride_the_skin_between_the_brow_landmarks(head):
    """Each brow lies just above the skin, spans the band MediaPipe's brow points outline, and moves with it."""
    from inference.heads.default_head.brows import LIFT, SINK, ray_front
    from inference.heads.default_head.landmarks import BROW_L, BROW_R

    ids, lm, v0 = list(head.lmk_ids), head.landmarks(), head.v_template
    skin = v0[: head.meta["n_skin_vertices"]]
    for k, (upper, lower) in (("L", BROW_L), ("R", BROW_R)):
        a, b = head.meta["brow_vertices"][k]
        brow = v0[a : b + 1]
        top = brow[: len(brow) // 2]
        # Just off the skin: the top is in front of the skin under it, by less than 2 mm.
        assert LIFT < 0.002 and SINK < LIFT
        skin_faces = head.faces[np.all(head.faces < len(skin), axis=1)]
        for p in top[::7]:
            f, bary = ray_front(skin, skin_faces, float(p[0]), float(p[1]))
            assert 0.0 < p[2] - bary @ skin[skin_faces[f], 2] < 0.002
        # In the front view the brow covers its landmarks' band (between the upper and lower edge points).
        up = np.array([lm[ids.index(i)] for i in upper])
        lo = np.array([lm[ids.index(i)] for i in lower])
        assert top[:, 1].max() > up[:, 1].min() and top[:, 1].min() < lo[:, 1].max()
        sign = 1 if k == "L" else -1
        assert sign * top[:, 0].min() > 0.005 and abs(top[:, 0]).max() < 0.065
        # Raising the inner brows raises the brow with the skin's brow landmarks.
        e = _expr(head, browInnerUp=1.0)
        v1, _ = head.forward(expression=e)
        lift_brow = (v1[a : b + 1, 1] - v0[a : b + 1, 1]).max()
        lift_lmk = (head.landmarks(v1)[[ids.index(i) for i in upper]] - up)[:, 1].max()
        assert lift_brow > 0.004 and abs(lift_brow - lift_lmk) < 0.0015
        # A frown does not raise it, and the lower face leaves it alone.
        v2, _ = head.forward(expression=_expr(head, **{f"browDown_{k}": 1.0}))
        assert (v2[a : b + 1, 1] - v0[a : b + 1, 1]).min() < -0.003
        v3, _ = head.forward(expression=_expr(head, mouthSmile_L=1.0, mouthSmile_R=1.0), pose=_pose(0.3))
        assert np.abs(v3[a : b + 1] - v0[a : b + 1]).max() < 1e-4


def test_cache_roundtrip_and_rebuild(tmp_path: Path, head):
    m = load_or_build(tmp_path)
    p = Path(cache_path(tmp_path))
    assert p.name == f"default_head_v{DEFAULT_HEAD_VERSION}.npz" and p.is_file()
    assert load_or_build(tmp_path).content_hash() == HeadModel.load(p).content_hash()
    assert m.expr_names == head.expr_names
    p.write_bytes(b"not a zip")
    assert load_or_build(tmp_path).n_vertices == head.n_vertices
    HeadModel.load(p)  # rewritten


def test_package_stays_light():
    forbidden = {"bpy", "bmesh", "mathutils", "scipy", "cv2", "mediapipe", "torch", "skimage"}
    for py in (Path(__file__).parents[1] / "inference" / "heads" / "default_head").glob("*.py"):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not {n.split(".")[0] for n in names} & forbidden, py.name
        assert len(py.read_text().splitlines()) < 400, py.name


def _render_colours(m: HeadModel) -> np.ndarray:
    """Skin, lips, dark brows, irises: enough colour for a face detector to read the render as a face."""
    v = m.v_template
    col = np.tile([0.78, 0.58, 0.47], (m.n_vertices, 1))
    col[m.meta["lip_region_vertices"]] = [0.62, 0.32, 0.30]
    b0, b1 = m.meta["mouth_bag_vertices"]
    col[b0 : b1 + 1] = [0.30, 0.06, 0.06]
    J = m.rest_joints()
    for k, j in (("L", 3), ("R", 4)):
        a, b = m.meta["eyeball_vertices"][k]
        d = v[a : b + 1] - J[j]
        cz = d[:, 2] / np.linalg.norm(d, axis=1)
        col[a : b + 1] = np.where(cz[:, None] > np.cos(0.62), [0.28, 0.17, 0.10], [0.92, 0.90, 0.88])
    for a, b in m.meta["brow_vertices"].values():
        col[a : b + 1] = [0.25, 0.17, 0.12]
    return col


@pytest.mark.slow
def test_mediapipe_detects_the_rendered_head(head, tmp_path):
    bpy = pytest.importorskip("bpy")
    mp = pytest.importorskip("mediapipe")
    cv2 = pytest.importorskip("cv2")
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    bpy.ops.wm.read_homefile(use_empty=True)
    try:
        sc = bpy.context.scene
        sc.render.engine = "BLENDER_WORKBENCH"
        sc.display.shading.light = "STUDIO"
        sc.display.shading.color_type = "VERTEX"
        sc.render.resolution_x = sc.render.resolution_y = 256
        sc.world = bpy.data.worlds.new("w")
        sc.world.color = (0.35, 0.35, 0.38)
        v = head.v_template
        me = bpy.data.meshes.new("head")
        me.from_pydata(np.stack([v[:, 0], -v[:, 2], v[:, 1]], 1).tolist(), [], head.faces.tolist())
        me.shade_smooth()
        attr = me.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
        rgba = np.concatenate([_render_colours(head), np.ones((head.n_vertices, 1))], 1).astype(np.float32)
        attr.data.foreach_set("color", rgba.ravel())
        sc.collection.objects.link(bpy.data.objects.new("head", me))
        cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        cam.data.lens = 85
        cam.location = (0.0, -0.75, -0.01)
        cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
        sc.collection.objects.link(cam)
        sc.camera = cam
        sc.render.filepath = str(tmp_path / "front.png")
        bpy.ops.render.render(write_still=True)
        L = head.landmarks()
        proj = np.array([[c.x, 1.0 - c.y] for c in (world_to_camera_view(sc, cam, Vector((p[0], -p[2], p[1]))) for p in L)])
    finally:
        bpy.ops.wm.read_homefile(use_empty=True)
    img = cv2.cvtColor(cv2.imread(str(tmp_path / "front.png")), cv2.COLOR_BGR2RGB)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(img)
    assert res.multi_face_landmarks, "MediaPipe found no face in the render of the default head"
    det = np.array([[p.x, p.y] for p in res.multi_face_landmarks[0].landmark])
    width = det[454, 0] - det[234, 0]
    err = np.linalg.norm(det[head.lmk_ids] - proj, axis=1) / width
    print(f"mediapipe: mean landmark error {err.mean():.3f} of face width")
    assert err.mean() < 0.07, err.mean()
    inner = np.isin(head.lmk_ids, [61, 291, 13, 14, 33, 133, 263, 362, 468, 473, 4])  # the features that matter most
    assert err[inner].mean() < 0.06, err[inner].mean()
