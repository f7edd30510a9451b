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

from ..inference.heads.head_model import HeadModel, HeadModelError
from ..inference.tracking.landmark_rig import EXPR_DRIFT_KEY
from ..inference.tracking.pose_calibration import CORRECTION_KEY
from .paths import user_path
from .rig import build as rig_mod
from .rig import head_cache
from .tracking.landmark_calibration import (
    Steps,
    calibrate_pose_steps,
    expression_drift_steps,
    near_frontal,
    run_steps,
    scaled,
)
from .tracking.landmark_render import (  # noqa: F401 - re-exported: the module's public geometry
    N_MEDIAPIPE,
    RENDER_SIZE,
    SCHEME,
    LandmarkError,
    ViewCamera,
    barycentric,
    cast_view,
    detect_landmarks,
    face_framing,
    frame_camera,
    render_view,
)
from .tracking.landmark_solve import embed  # noqa: F401 - re-exported
from .worker.job import ModalJobOperator, WorkerJob

# (yaw, pitch) of the detailed views in degrees: the poses a tracked face typically takes.
# A yaw x pitch grid: the embedding is solved over all of them, and each landmark's scatter across them is kept
# for the tracker to weigh the landmark by.
DEFAULT_VIEWS = tuple((y, p) for p in (0.0, -15.0, 15.0) for y in (0.0, -20.0, 20.0, -35.0, 35.0))
FRONTAL_VIEWS = ((0.0, 0.0),)
CALIBRATED = "calibrated"  # marks a multi-view embedding in the model's meta["landmarks"]
FACE_FILL = 0.6  # the face's larger extent over the frame in the detailed pass


# ---------------------------------------------------------------------------- rig plumbing


def has_embedding(model: HeadModel) -> bool:
    return model.lmk_faces is not None and model.lmk_scheme == SCHEME and len(model.lmk_faces) > 0


def _rig_model(rig: bpy.types.Object) -> tuple[HeadModel, dict]:
    """The rig's head model (info["model_file"]: its file, found again if the cache moved)."""
    info = rig_mod.rig_model_info(rig)
    path = head_cache.find_model_file(info)
    if not path:
        raise LandmarkError(head_cache.missing_message(info))
    info["model_file"] = path
    try:
        return HeadModel.load(path), info
    except HeadModelError as exc:
        raise LandmarkError(f"Could not read this rig's head model: {exc}") from exc


# Bumped whenever the calibration changes, so embeddings cached by an older Cadence are rebuilt.
# 3: 15-view grid + per-landmark detector drift model; 4: rendered with the rig's materials; 5: + pose calibration;
# 6: + focal ratio and depth correction; 7: + blendshape-score fusion, fitted with lip contact; 8: pose renders
# through four lenses, proximity in the correction
CALIBRATION_VERSION = 8


def embedding_path(model: HeadModel, context: bpy.types.Context, model_hash: str = "") -> str:
    """Where the landmark-embedded model is cached: heads/<hash>_mp478v<N>.npz."""
    return os.path.join(head_cache.heads_folder(context),
                        f"{model_hash or model.content_hash()}_mp478v{CALIBRATION_VERSION}.npz")


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


def build_steps(rig: bpy.types.Object, context: bpy.types.Context, views=DEFAULT_VIEWS, size: int = RENDER_SIZE,
                pose_renders: int | None = None) -> Steps:
    """Render the rig's neutral head, detect, embed, calibrate, store: steps (landmark_calibration.py) whose
    result is the new model file.

    ``views``: (yaw, pitch) pairs in degrees (a bare number is a yaw). Pass 1 renders the whole head to
    find the face; pass 2 renders the face filling most of the frame (MediaPipe's landmark model sees a
    192 px crop: a small face loses detail) from each view. The frontal view is required; a turned view
    in which no face is found is skipped. ``pose_renders``: renders for the pose calibration
    (landmark_calibration.POSE_RENDERS by default, 0 skips it).
    """
    rig_name = rig.name
    model, info = _rig_model(rig)
    shape = np.asarray(info.get("shape", []), dtype=np.float64)
    shape = shape if shape.size else None
    verts = model.shaped(shape=shape)
    bvh = BVHTree.FromPolygons(verts.tolist(), model.faces.tolist(), all_triangles=True)
    views = [(float(v), 0.0) if np.isscalar(v) else (float(v[0]), float(v[1])) for v in views]
    found = []
    with tempfile.TemporaryDirectory(prefix="cadence-lmk-") as tmp:
        cam = frame_camera(verts, size=size)
        lmk = detect_landmarks(context, render_view(verts, model.faces, cam, os.path.join(tmp, "head.png")))
        centre, extent = face_framing(bvh, cam, lmk)
        for k, (yaw, pitch) in enumerate(views):
            cam = frame_camera(verts, size=size, yaw_deg=yaw, pitch_deg=pitch, centre=centre, extent=extent,
                               fill=FACE_FILL)
            image = render_view(verts, model.faces, cam, os.path.join(tmp, f"face_{yaw:+.0f}_{pitch:+.0f}.png"),
                                groups=model.meta.get("material_groups"))
            try:
                found.append((cam, detect_landmarks(context, image)))
            except LandmarkError:
                if yaw == 0.0 and pitch == 0.0:  # the frontal view is required; other views refine it
                    raise
            yield 0.04 * (k + 1) / len(views), f"Finding the landmarks: view {k + 1} of {len(views)}"
        embedded = embed(model, verts, found, bvh)
        near = [(cam, lmk) for cam, lmk in found if near_frontal(cam)]
        if len(found) > 1 and near:
            embedded.meta[EXPR_DRIFT_KEY] = yield from scaled(
                expression_drift_steps(embedded, shape, near, context, tmp), 0.04, 0.2)
            if pose_renders is None or pose_renders > 0:
                draft = os.path.join(tmp, "embedded.npz")
                embedded.save(draft)
                embedded.meta[CORRECTION_KEY] = yield from scaled(
                    calibrate_pose_steps(embedded, shape, draft, context, tmp, pose_renders), 0.2, 1.0)
    rig = bpy.data.objects.get(rig_name)
    if rig is None or rig_mod.find_rig(rig) is not rig:
        raise LandmarkError(f"The head {rig_name!r} was deleted or renamed while its landmarks were being built.")
    how = f"built from render ({len(found)} views, {CALIBRATED})" if len(found) > 1 else "built from render"
    return _store(rig, embedded, context, how)


def build_from_render(rig: bpy.types.Object, context: bpy.types.Context, views=DEFAULT_VIEWS,
                      size: int = RENDER_SIZE, pose_renders: int | None = None) -> str:
    """build_steps run to the end (blocking); returns the new model file."""
    return run_steps(build_steps(rig, context, views, size, pose_renders))


def load_from_file(rig: bpy.types.Object, context: bpy.types.Context, filepath: str) -> str:
    """Load a MediaPipe embedding file (lmk_face_idx, lmk_b_coords, landmark_indices) for the rig's head."""
    from ..inference.heads import head_files

    model, _info = _rig_model(rig)
    path = user_path(filepath)
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


def embedding_steps(rig: bpy.types.Object, context: bpy.types.Context) -> Steps:
    """Steps whose result is the path of a HeadModel .npz for ``rig`` with a detector-calibrated mediapipe478
    embedding (no steps when it exists).

    A loaded embedding file is used as is. Otherwise the calibrated embedding is cached per head hash
    (heads/<hash>_mp478v<N>.npz) and built once when missing (about two minutes: fifteen views, the
    expressions' responses, the pose calibration's renders), also for the default head, whose
    by-construction embedding is biased against the detector.
    """
    if rig_mod.find_rig(rig) is not rig:
        raise LandmarkError(f"{getattr(rig, 'name', rig)!r} is not a Cadence rig")
    model, info = _rig_model(rig)
    meta = rig["cadence"]
    if is_tracking_ready(model):
        meta["landmarks"] = str(model.meta.get("landmarks"))
        return info["model_file"]
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
    return (yield from build_steps(rig, context))


def ensure_landmark_embedding(rig: bpy.types.Object, context: bpy.types.Context) -> str:
    """embedding_steps run to the end (blocking, minutes the first time for a head)."""
    return run_steps(embedding_steps(rig, context))


# ------------------------------------------------------------------------------ operators


def _fail(op: bpy.types.Operator, context: bpy.types.Context, message: str, level: str) -> set[str]:
    settings = getattr(context.scene, "cadence", None)
    if settings is not None:
        settings.last_error = message
    op.report({level}, message)
    return {"CANCELLED"}


class _BuildJob(WorkerJob):
    """Build Landmarks as a job of Blender-side steps only (nothing is sent to the worker as a job of its own)."""

    kind = "build_landmarks"
    error_type = LandmarkError

    def __init__(self, context: bpy.types.Context, rig: bpy.types.Object, views):
        def steps() -> Steps:
            return {"path": (yield from build_steps(rig, context, views=views))}

        super().__init__(context, {}, prepare=steps())
        self.rig_name = rig.name

    def submit(self) -> None:
        self.job_id = ""  # prepared = done

    def poll(self) -> bool:
        return True

    def apply(self) -> dict:
        return {"path": self.params["path"], "n": len(HeadModel.load(self.params["path"]).lmk_ids)}


class CADENCE_OT_build_landmarks(ModalJobOperator, bpy.types.Operator):
    """Find where MediaPipe's face landmarks sit on this head and calibrate the detector on it (renders)"""

    bl_idname = "cadence.build_landmarks"
    bl_label = "Build Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    turned_views: bpy.props.BoolProperty(
        name="Turned Views", default=True,
        description="Calibrate from fifteen views (yaw 0, ±20, ±35 x pitch 0, ±15), the expressions' responses "
        "and renders in random poses, as tracking needs (about two minutes); off: one frontal view (faster, "
        "for a quick look)",
    )

    errors = (LandmarkError, rig_mod.RigError)
    verb = "Building landmarks"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def make_job(self, context: bpy.types.Context) -> WorkerJob:
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise LandmarkError("Select a Cadence head (its armature or mesh) first: Add > Cadence Head")
        return _BuildJob(context, rig, DEFAULT_VIEWS if self.turned_views else FRONTAL_VIEWS)

    def done_message(self, report: dict) -> str:
        return f"Built {report['n']} MediaPipe landmarks"


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
