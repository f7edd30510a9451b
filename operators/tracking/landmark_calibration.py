"""Calibrating MediaPipe on a head after its embedding is solved: its response to expressions, its pose bias.

Both are measured on renders of THIS head in a temporary scene (removed afterwards, also on cancel):

- expression_drift_steps: how the detector's landmarks follow each expression and the jaw (near-frontal
  views), which the tracker adds to its landmark basis;
- calibrate_pose_steps: the detector's bias on the head pose (inference/tracking/pose_calibration.py), measured on
  renders sampled the way tracked faces move: head turns (yaw within ±38 deg, pitch ±25, roll ±10), the
  jaw open on 60 % of them, up to four random expressions at once, seen through one of CALIB_LENSES_MM
  (the face framed the same, so the camera's distance follows the lens: a long lens to a phone at arm's
  length; deterministic: a fixed seed). The worker detects and tracks them and fits the correction.

Everything here is a generator of steps (``yield (fraction, message)`` after each render or worker poll;
the result is the generator's return value), so the UI can run it from a timer with progress and Esc, and
scripts run it to the end with ``run_steps``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator

import bpy
import numpy as np

from ...inference.heads.head_model import HeadModel
from ...inference.tracking.fit import is_bounded
from ...inference.tracking.fit_gn import view_angles
from ..prefs import face_landmarker
from ..worker.job import WorkerJob
from .landmark_render import HeadRenderer, LandmarkError, detect_landmarks, frame_camera

Steps = Generator[tuple[float, str], None, object]

POSE_RENDERS = 1000  # ~1.5 min once per head; 500 renders gave 2.1 deg on the rendered ground truth, 1000 1.95
SIZE = 320  # pixels; the face fills about half of the frame (MediaPipe sees a 192 px crop of it)
FILL = 0.45
SEED = 0
YAW_DEG, PITCH_DEG, ROLL_DEG = 38.0, 25.0, 10.0
JAW_OPEN_RAD, JAW_OPEN_SHARE = 0.35, 0.6
MAX_EXPRESSIONS = 4
# Lenses (35 mm equivalent) of the pose-calibration renders: from a phone held close (24 mm, the face about
# 0.25 m away) to a portrait lens (~0.85 m). With one 60 mm lens, a 24 mm render of the rendered ground truth
# was tracked 11-13 deg off (it under-read the head's turns); the correction now knows the perspective.
CALIB_LENSES_MM = (24.0, 36.0, 60.0, 90.0)
FOCAL_LENS_INDEX = 2  # the lens the focal search's bias is measured with
JAW_CALIB_RAD = 0.2  # the jaw opening rendered to measure how the detector follows it
MIN_AGREEMENT = 0.5  # cosine between the detector's and the model's landmark motion for a response to be kept


def run_steps(steps: Steps):
    """Run a generator of steps to the end; returns its result."""
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value


def scaled(steps: Steps, lo: float, hi: float) -> Steps:
    """The steps with their fractions mapped into [lo, hi]; returns their result (closes them if closed)."""
    try:
        while True:
            fraction, message = next(steps)
            yield lo + (hi - lo) * fraction, message
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def near_frontal(cam) -> bool:
    """Views within 25 deg of yaw at level pitch: where an expression's response is measured."""
    yaw, pitch = view_angles(cam.rotation.T)
    return abs(yaw) < np.radians(25) and abs(pitch) < np.radians(1)


def expression_drift_steps(model: HeadModel, shape: np.ndarray | None, views: list, context: bpy.types.Context,
                           tmp: str) -> Steps:
    """How the detector's landmarks move with each expression (at 1) and with the jaw, beyond the embedded
    points' own motion: per landmark a head-space offset (metres in the view plane) per unit expression / per
    radian of jaw opening, averaged over ``views`` ((camera, neutral detections) near frontal). The tracker adds
    it to the landmark basis, so motion the detector under-follows (MediaPipe's chin follows about half of a jaw
    opening) is not read as a head turn or a smaller jaw. Returns {"expr": (L, 3, E), "jaw": (L, 3)} as lists.

    A response is kept only where the detector's landmark motion agrees with the model's (cosine over all
    landmarks >= MIN_AGREEMENT): a smaller response (the brows) is dominated by the detector's noise and by
    whole-mesh shifts that mimic a head turn. Expressions whose render loses the face get none."""
    ids = np.asarray(model.lmk_ids)
    neutral_verts = model.forward(shape=shape)[0]
    p0 = model.landmarks(neutral_verts)

    def response(renderer: HeadRenderer, verts: np.ndarray, name: str) -> tuple[np.ndarray, float]:
        drift, dot, n_det, n_mod = np.zeros((len(ids), 3)), 0.0, 0.0, 0.0
        for v, (cam, neutral) in enumerate(views):
            renderer.set_camera(cam)
            image = renderer.render(os.path.join(tmp, f"x_{name}_{v}.png"), verts)
            det = detect_landmarks(context, image)[ids, :2] - neutral[ids, :2]
            mod = cam.project(model.landmarks(verts)) - cam.project(p0)
            dot, n_det, n_mod = dot + (det * mod).sum(), n_det + (det**2).sum(), n_mod + (mod**2).sum()
            r = det - mod
            depth = -((p0 - cam.position) @ cam.rotation)[:, 2]
            local = np.stack([r[:, 0], -r[:, 1], np.zeros(len(r))], 1) * (depth / cam.focal_px)[:, None]
            drift += local @ cam.rotation.T / len(views)
        return drift, dot / max(np.sqrt(n_det * n_mod), 1e-12)

    expr = np.zeros((len(ids), 3, model.n_expr))
    jaw = np.zeros((len(ids), 3))
    names = list(model.joint_names)
    with HeadRenderer(neutral_verts, model.faces, views[0][0], groups=model.meta.get("material_groups")) as rnd:
        for e in range(model.n_expr):
            coeffs = np.zeros(model.n_expr)
            coeffs[e] = 1.0
            try:
                drift, agree = response(rnd, model.forward(shape=shape, expression=coeffs)[0], f"e{e}")
            except LandmarkError:
                continue
            if agree >= MIN_AGREEMENT:
                expr[:, :, e] = drift
            yield (e + 1) / (model.n_expr + 1), f"Calibrating landmarks: expression {e + 1} of {model.n_expr}"
        if "jaw" in names:
            pose = np.zeros((model.n_joints, 3))
            pose[names.index("jaw"), 0] = JAW_CALIB_RAD
            try:
                drift, agree = response(rnd, model.forward(shape=shape, pose=pose)[0], "jaw")
                jaw = drift / JAW_CALIB_RAD if agree >= MIN_AGREEMENT else jaw
            except LandmarkError:
                pass
    return {"expr": np.round(expr, 7).tolist(), "jaw": np.round(jaw, 7).tolist()}


def sample_poses(model: HeadModel, n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """{"rot" (n, 3) root axis-angle, "jaw" (n, 3), "expr" (n, E), "camera" (n,) index into CALIB_LENSES_MM}:
    the calibration's random poses, in camera order (the renderer changes camera once per lens)."""
    rng = np.random.default_rng(seed)
    rot = np.radians(np.stack([rng.uniform(-PITCH_DEG, PITCH_DEG, n), rng.uniform(-YAW_DEG, YAW_DEG, n),
                               rng.uniform(-ROLL_DEG, ROLL_DEG, n)], 1))
    jaw = np.zeros((n, 3))
    if "jaw" in model.joint_names:
        jaw[:, 0] = np.where(rng.random(n) < JAW_OPEN_SHARE, rng.uniform(0.0, JAW_OPEN_RAD, n), 0.0)
    E = model.n_expr
    expr = np.zeros((n, E))
    bounded = is_bounded(model)
    for i in range(n):
        k = int(rng.integers(0, min(MAX_EXPRESSIONS, E) + 1))
        pick = rng.choice(E, k, replace=False)
        # Semantic 0..1 controls, or FLAME-style components in units of about one standard deviation.
        expr[i, pick] = rng.uniform(0.2, 1.0, k) if bounded else rng.normal(0.0, 1.0, k)
    camera = np.sort(np.arange(n) % len(CALIB_LENSES_MM))
    return {"rot": rot, "jaw": jaw, "expr": expr, "camera": camera}


class _PoseCalibrationJob(WorkerJob):
    kind = "calibrate_pose"
    error_type = LandmarkError


def calibrate_pose_steps(model: HeadModel, shape: np.ndarray | None, model_file: str, context: bpy.types.Context,
                         tmp: str, n: int | None = None) -> Steps:
    """Render ``n`` poses of ``model`` (its embedding saved at ``model_file``) and have the worker learn the
    pose correction; returns it (for meta[pose_calibration.CORRECTION_KEY]). Raises LandmarkError."""
    n = POSE_RENDERS if n is None else int(n)
    poses = sample_poses(model, n)
    neutral = model.forward(shape=shape)[0]
    p0 = model.landmarks(neutral)
    lo, hi = p0.min(0), p0.max(0)
    cams = [frame_camera(neutral, size=SIZE, centre=np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]]),
                         extent=float(max(hi[0] - lo[0], hi[1] - lo[1])), fill=FILL, lens_mm=lens)
            for lens in CALIB_LENSES_MM]
    names = list(model.joint_names)
    images = []
    current = 0
    with HeadRenderer(neutral, model.faces, cams[0], groups=model.meta.get("material_groups")) as renderer:
        for i in range(n):
            if poses["camera"][i] != current:
                current = int(poses["camera"][i])
                renderer.set_camera(cams[current])
            pose = np.zeros((model.n_joints, 3))
            pose[0] = poses["rot"][i]
            if "jaw" in names:
                pose[names.index("jaw")] = poses["jaw"][i]
            verts = model.forward(shape=shape, expression=poses["expr"][i], pose=pose)[0]
            images.append(renderer.render(os.path.join(tmp, f"pose_{i:04d}.png"), verts))
            yield 0.85 * (i + 1) / n, f"Calibrating head poses: render {i + 1} of {n}"
    truth = os.path.join(tmp, "pose_truth.npz")
    np.savez(truth, **poses)
    job = _PoseCalibrationJob(context, {
        "head_file": model_file, "images": images, "truth": truth, "width": SIZE, "height": SIZE,
        "cameras": [{"focal_px": c.focal_px, "position": [float(x) for x in c.position]} for c in cams],
        "focal_camera": FOCAL_LENS_INDEX, "scores_model": face_landmarker(context) or None})
    job.submit()
    try:
        while not job.poll():
            time.sleep(0.02)
            yield 0.85 + 0.15 * job.fraction, f"Calibrating head poses: {job.message}"
    except GeneratorExit:
        job.cancel()
        raise
    try:
        return job.checked_result()
    except LandmarkError as exc:
        raise LandmarkError(f"the pose calibration failed: {exc}") from exc
