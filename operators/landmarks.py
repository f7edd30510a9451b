"""Landmark embedding (MediaPipe 478 points) for any FLAME-format head, built from a render or loaded.

Tracking needs the points where THE DETECTOR puts each landmark on this head, which is not where a
by-construction embedding (the default head's) puts them: MediaPipe's nose bridge, for one, sits
~1 cm lower on the default head, a bias a fit reads as the head pitched down. So every head (the
default one too) gets a detector-calibrated embedding once: Cadence renders the neutral head
(current identity, expression 0, rest pose) from a grid of views (yaw 0, ±20, ±35 x pitch 0, ±15) in a
temporary scene, has the worker detect MediaPipe landmarks on each render and solves, per landmark,
for the surface point whose projections best match the detections in all views (model space;
triangle index + barycentric coordinates; the geometry is in landmark_render.py). Then it measures how
the detector follows each expression (expression_drift) and, from renders in random known poses, its bias
on the head pose (landmark_calibration.py), which the tracker takes off. The user's scene is never touched: everything rendered lives
in a scene of its own that is removed, with all its data, afterwards. The result is a sibling of the
rig's cached model, heads/<hash>_mp478v<N>.npz, recorded in rig["cadence"]["model_file"]; the model hash
is unchanged (it ignores landmarks).
"""

from __future__ import annotations

import os
import tempfile

import bpy
import numpy as np
from mathutils.bvhtree import BVHTree

from ..inference.fit_gn import EXPR_DRIFT_KEY, view_angles
from ..inference.head_model import HeadModel, HeadModelError
from ..inference.pose_calibration import CORRECTION_KEY
from . import rig as rig_mod
from . import worker_client
from .landmark_calibration import calibrate_pose
from .landmark_render import (  # noqa: F401 - re-exported: the module's public geometry
    N_MEDIAPIPE,
    RENDER_SIZE,
    SCHEME,
    LandmarkError,
    ViewCamera,
    barycentric,
    cast_view,
    face_framing,
    frame_camera,
    render_view,
)
from .landmark_solve import embed  # noqa: F401 - re-exported

# (yaw, pitch) of the detailed views in degrees: the poses a tracked face typically takes.
# A yaw x pitch grid: the embedding is solved over all of them, and the detector's drift off it is fitted as a
# smooth function of (yaw, pitch) over the grid (landmark_solve.fit_drift) for the tracker to undo.
DEFAULT_VIEWS = tuple((y, p) for p in (0.0, -15.0, 15.0) for y in (0.0, -20.0, 20.0, -35.0, 35.0))
FRONTAL_VIEWS = ((0.0, 0.0),)
CALIBRATED = "calibrated"  # marks a multi-view embedding in the model's meta["landmarks"]
FACE_FILL = 0.6  # the face's larger extent over the frame in the detailed pass


# ---------------------------------------------------------------------------- rig plumbing


def has_embedding(model: HeadModel) -> bool:
    return model.lmk_faces is not None and model.lmk_scheme == SCHEME and len(model.lmk_faces) > 0


def _rig_model(rig: bpy.types.Object) -> tuple[HeadModel, dict]:
    info = rig_mod.rig_model_info(rig)
    path = info.get("model_file", "")
    if not path or not os.path.isfile(path):
        raise LandmarkError("This rig's head model file is missing from Cadence's cache "
                            f"({path or 'not recorded'}); add the head again with Cadence.")
    try:
        return HeadModel.load(path), info
    except HeadModelError as exc:
        raise LandmarkError(f"Could not read this rig's head model: {exc}") from exc


# Bumped whenever the calibration changes, so embeddings cached by an older Cadence are rebuilt.
# 3: 15-view grid + per-landmark detector drift model; 4: rendered with the rig's materials; 5: + pose calibration
CALIBRATION_VERSION = 5


def embedding_path(model: HeadModel, context: bpy.types.Context, model_hash: str = "") -> str:
    """Where the landmark-embedded model is cached: heads/<hash>_mp478v<N>.npz."""
    from ..panels.preferences import cache_dir

    folder = os.path.join(cache_dir(context), "heads")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{model_hash or model.content_hash()}_mp478v{CALIBRATION_VERSION}.npz")


def _store(rig: bpy.types.Object, model: HeadModel, context: bpy.types.Context, how: str) -> str:
    """Save the embedded model next to the cached one and point the rig at it."""
    meta = rig["cadence"]
    model_hash = str(meta.get("model_hash", "")) or model.content_hash()
    if model.content_hash() != model_hash:
        raise LandmarkError("This rig's cached head model does not match the rig (hash changed); add the head again.")
    model.meta = {**model.meta, "landmarks": how}
    path = embedding_path(model, context, model_hash)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        model.save(tmp)
        os.replace(tmp, path)  # atomic: the tracker never reads a half-written head
    except OSError as exc:
        raise LandmarkError(f"Could not write the landmark embedding to {path}: {exc}") from exc
    meta["model_file"] = path
    meta["landmarks"] = how
    return path


def detect_landmarks(context: bpy.types.Context, image: str, timeout: float = 180.0) -> np.ndarray:
    """MediaPipe landmarks (478, 3) in pixels of ``image``, detected by the worker; raises LandmarkError."""
    try:
        data = worker_client.get_client(context).run_sync("detect_landmarks", {"image": image}, timeout=timeout)
    except worker_client.WorkerError as exc:
        raise LandmarkError(str(exc)) from exc
    lmk = np.asarray(data.get("landmarks", []), dtype=np.float64)
    if lmk.shape[:1] != (N_MEDIAPIPE,):
        raise LandmarkError(f"the landmark detector returned {lmk.shape} points, not 478")
    return lmk


def build_from_render(rig: bpy.types.Object, context: bpy.types.Context, views=DEFAULT_VIEWS,
                      size: int = RENDER_SIZE, pose_renders: int | None = None) -> str:
    """Render the rig's neutral head, detect, embed, store; returns the new model file.

    ``views``: (yaw, pitch) pairs in degrees (a bare number is a yaw). Pass 1 renders the whole head to
    find the face; pass 2 renders the face filling most of the frame (MediaPipe's landmark model sees a
    192 px crop: a small face loses detail) from each view. The frontal view is required; a turned view
    in which no face is found is skipped. ``pose_renders``: renders for the pose calibration
    (landmark_calibration.py; default its POSE_RENDERS, 0 skips it).
    """
    model, info = _rig_model(rig)
    shape = np.asarray(info.get("shape", []), dtype=np.float64)
    verts = model.shaped(shape=shape if shape.size else None)
    bvh = BVHTree.FromPolygons(verts.tolist(), model.faces.tolist(), all_triangles=True)
    views = [(float(v), 0.0) if np.isscalar(v) else (float(v[0]), float(v[1])) for v in views]
    found = []
    with tempfile.TemporaryDirectory(prefix="cadence-lmk-") as tmp:
        cam = frame_camera(verts, size=size)
        lmk = detect_landmarks(context, render_view(verts, model.faces, cam, os.path.join(tmp, "head.png")))
        centre, extent = face_framing(bvh, cam, lmk)
        for yaw, pitch in views:
            cam = frame_camera(verts, size=size, yaw_deg=yaw, pitch_deg=pitch, centre=centre, extent=extent,
                               fill=FACE_FILL)
            image = render_view(verts, model.faces, cam, os.path.join(tmp, f"face_{yaw:+.0f}_{pitch:+.0f}.png"),
                                groups=model.meta.get("material_groups"))
            try:
                found.append((cam, detect_landmarks(context, image)))
            except LandmarkError:
                if yaw == 0.0 and pitch == 0.0:  # the frontal view is required; other views refine it
                    raise
        embedded = embed(model, verts, found, bvh)
        near = [(cam, lmk) for cam, lmk in found if _near_frontal(cam)]
        if len(found) > 1 and near:
            embedded.meta[EXPR_DRIFT_KEY] = expression_drift(embedded, shape if shape.size else None, near, context,
                                                             tmp)
            if pose_renders is None or pose_renders > 0:
                draft = os.path.join(tmp, "embedded.npz")
                embedded.save(draft)
                embedded.meta[CORRECTION_KEY] = calibrate_pose(embedded, shape if shape.size else None, draft,
                                                               context, tmp, pose_renders)
    how = f"built from render ({len(found)} views, {CALIBRATED})" if len(found) > 1 else "built from render"
    return _store(rig, embedded, context, how)


JAW_CALIB_RAD = 0.2  # the jaw opening rendered to measure how the detector follows it
MIN_AGREEMENT = 0.5  # cosine between the detector's and the model's landmark motion for a response to be kept


def _near_frontal(cam) -> bool:
    """Views within 25 deg of yaw at level pitch: where an expression's response is measured."""
    yaw, pitch = view_angles(cam.rotation.T)
    return abs(yaw) < np.radians(25) and abs(pitch) < np.radians(1)


def expression_drift(model: HeadModel, shape: np.ndarray | None, views: list, context: bpy.types.Context,
                     tmp: str) -> dict:
    """How the detector's landmarks move with each expression (at 1) and with the jaw, beyond the embedded
    points' own motion: per landmark a head-space offset (metres in the view plane) per unit expression / per
    radian of jaw opening, averaged over ``views`` ((camera, neutral detections) near frontal). The tracker adds
    it to the landmark basis, so motion the detector under-follows (MediaPipe's chin follows about half of a jaw
    opening) is not read as a head turn or a smaller jaw.

    A response is kept only where the detector's landmark motion agrees with the model's (cosine over all
    landmarks >= MIN_AGREEMENT): a smaller response (the brows) is dominated by the detector's noise and by
    whole-mesh shifts that mimic a head turn. Expressions whose render loses the face get none."""
    ids = np.asarray(model.lmk_ids)
    p0 = model.landmarks(model.forward(shape=shape)[0])
    groups = model.meta.get("material_groups")

    def response(verts: np.ndarray, name: str) -> tuple[np.ndarray, float]:
        drift, dot, n_det, n_mod = np.zeros((len(ids), 3)), 0.0, 0.0, 0.0
        for v, (cam, neutral) in enumerate(views):
            image = render_view(verts, model.faces, cam, os.path.join(tmp, f"x_{name}_{v}.png"), groups=groups)
            det = detect_landmarks(context, image)[ids, :2] - neutral[ids, :2]
            mod = cam.project(model.landmarks(verts)) - cam.project(p0)
            dot, n_det, n_mod = dot + (det * mod).sum(), n_det + (det**2).sum(), n_mod + (mod**2).sum()
            r = det - mod
            depth = -((p0 - cam.position) @ cam.rotation)[:, 2]
            local = np.stack([r[:, 0], -r[:, 1], np.zeros(len(r))], 1) * (depth / cam.focal_px)[:, None]
            drift += local @ cam.rotation.T / len(views)
        return drift, dot / max(np.sqrt(n_det * n_mod), 1e-12)

    expr = np.zeros((len(ids), 3, model.n_expr))
    for e in range(model.n_expr):
        coeffs = np.zeros(model.n_expr)
        coeffs[e] = 1.0
        try:
            drift, agree = response(model.forward(shape=shape, expression=coeffs)[0], f"e{e}")
        except LandmarkError:
            continue
        if agree >= MIN_AGREEMENT:
            expr[:, :, e] = drift
    jaw = np.zeros((len(ids), 3))
    names = list(model.joint_names)
    if "jaw" in names:
        pose = np.zeros((model.n_joints, 3))
        pose[names.index("jaw"), 0] = JAW_CALIB_RAD
        try:
            drift, agree = response(model.forward(shape=shape, pose=pose)[0], "jaw")
            jaw = drift / JAW_CALIB_RAD if agree >= MIN_AGREEMENT else jaw
        except LandmarkError:
            pass
    return {"expr": np.round(expr, 7).tolist(), "jaw": np.round(jaw, 7).tolist()}


def load_from_file(rig: bpy.types.Object, context: bpy.types.Context, filepath: str) -> str:
    """Load a MediaPipe embedding file (lmk_face_idx, lmk_b_coords, landmark_indices) for the rig's head."""
    from ..inference import head_files

    model, _info = _rig_model(rig)
    path = bpy.path.abspath(filepath)
    try:
        embedded = head_files.load_landmark_embedding(path, model)
    except HeadModelError as exc:
        raise LandmarkError(f"Could not load landmarks: {exc}") from exc
    if embedded.lmk_scheme != SCHEME:
        raise LandmarkError(
            f"{os.path.basename(path)!r} embeds {embedded.lmk_scheme} landmarks; Cadence's tracker needs the "
            "MediaPipe embedding (lmk_face_idx, lmk_b_coords and landmark_indices, e.g. "
            "mediapipe_landmark_embedding.npz), or use Build Landmarks.")
    ids = embedded.lmk_ids
    if len(ids) == 0 or ids.min() < 0 or ids.max() >= N_MEDIAPIPE or len(np.unique(ids)) != len(ids):
        raise LandmarkError(f"{os.path.basename(path)!r}: landmark_indices must be distinct MediaPipe ids 0..477")
    if not np.allclose(embedded.lmk_bary.sum(1), 1.0, atol=1e-3) or embedded.lmk_bary.min() < -1e-3:
        raise LandmarkError(f"{os.path.basename(path)!r}: barycentric coordinates must be >= 0 and sum to 1")
    return _store(rig, embedded, context, f"loaded from {path}")


def is_tracking_ready(model: HeadModel) -> bool:
    """An embedding the tracker can trust: detector-calibrated from renders, or a file the user loaded."""
    how = str(model.meta.get("landmarks", ""))
    return has_embedding(model) and (CALIBRATED in how or how.startswith("loaded"))


def ensure_landmark_embedding(rig: bpy.types.Object, context: bpy.types.Context) -> str:
    """Path of a HeadModel .npz for ``rig`` with a detector-calibrated mediapipe478 embedding.

    A loaded embedding file is used as is. Otherwise the calibrated embedding is cached per head hash
    (heads/<hash>_mp478v<N>.npz) and built once (seconds: fifteen renders + detections) when missing,
    also for the default head, whose by-construction embedding is biased against the detector.
    """
    if rig_mod.find_rig(rig) is not rig:
        raise LandmarkError(f"{getattr(rig, 'name', rig)!r} is not a Cadence rig")
    model, _info = _rig_model(rig)
    meta = rig["cadence"]
    if is_tracking_ready(model):
        meta["landmarks"] = str(model.meta.get("landmarks"))
        return str(meta["model_file"])
    sibling = embedding_path(model, context, str(meta.get("model_hash", "")))
    if os.path.isfile(sibling):  # built before for this model (e.g. for another rig of the same head)
        try:
            cached = HeadModel.load(sibling)
        except HeadModelError:
            cached = None
        if cached is not None and is_tracking_ready(cached) and cached.content_hash() == model.content_hash():
            meta["model_file"] = sibling
            meta["landmarks"] = str(cached.meta.get("landmarks"))
            return sibling
    return build_from_render(rig, context)


# ------------------------------------------------------------------------------ operators


def _fail(op: bpy.types.Operator, context: bpy.types.Context, message: str, level: str) -> set[str]:
    settings = getattr(context.scene, "cadence", None)
    if settings is not None:
        settings.last_error = message
    op.report({level}, message)
    return {"CANCELLED"}


class CADENCE_OT_build_landmarks(bpy.types.Operator):
    """Find where MediaPipe's face landmarks sit on this head: render it, detect landmarks, ray-cast them"""

    bl_idname = "cadence.build_landmarks"
    bl_label = "Build Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    turned_views: bpy.props.BoolProperty(
        name="Turned Views", default=True,
        description="Calibrate from fifteen views (yaw 0, ±20, ±35 x pitch 0, ±15) so the points and the detector's "
        "drift are known "
        "across head poses, as tracking needs; off: one frontal view (faster, for a quick look)",
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        return self._run(context, "WARNING" if bpy.app.background else "ERROR")

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Scripts: an ERROR report would raise in the caller; the message is in scene.cadence.last_error.
        return self._run(context, "WARNING")

    def _run(self, context: bpy.types.Context, level: str) -> set[str]:
        rig = rig_mod.find_rig(context.active_object)
        views = DEFAULT_VIEWS if self.turned_views else FRONTAL_VIEWS
        try:
            path = build_from_render(rig, context, views=views)
        except (LandmarkError, rig_mod.RigError) as exc:
            return _fail(self, context, str(exc), level)
        n = len(HeadModel.load(path).lmk_ids)
        self.report({"INFO"}, f"Built {n} MediaPipe landmarks on {rig.name!r}")
        return {"FINISHED"}


class CADENCE_OT_load_landmarks(bpy.types.Operator):
    """Load a landmark embedding file for this head (MediaPipe: lmk_face_idx, lmk_b_coords, landmark_indices)"""

    bl_idname = "cadence.load_landmarks"
    bl_label = "Load Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(name="Embedding File", subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: bpy.props.StringProperty(default="*.npy;*.npz;*.pkl", options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        if not self.filepath:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self.execute(context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        rig = rig_mod.find_rig(context.active_object)
        if not self.filepath:
            return _fail(self, context, "Choose a landmark embedding file (.npz, .npy or .pkl)", "WARNING")
        try:
            path = load_from_file(rig, context, self.filepath)
        except (LandmarkError, rig_mod.RigError) as exc:
            return _fail(self, context, str(exc), "WARNING")
        n = len(HeadModel.load(path).lmk_ids)
        self.report({"INFO"}, f"Loaded {n} MediaPipe landmarks for {rig.name!r}")
        return {"FINISHED"}


classes = (CADENCE_OT_build_landmarks, CADENCE_OT_load_landmarks)
