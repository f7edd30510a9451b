"""Pose calibration of a head's landmark embedding: render the head in known poses, let the worker track them.

The detector's bias on the head pose (inference/pose_calibration.py) is measured on renders of THIS head
sampled the way tracked faces move: head turns (yaw within ±38 deg, pitch ±25, roll ±10), the jaw open on
60 % of them, and up to four random expressions at once. One temporary scene renders them all (only the
mesh's vertices change between renders) and is removed afterwards; the worker detects, tracks and fits the
correction. Deterministic: a fixed seed.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from ..inference.fit import is_bounded
from ..inference.head_model import HeadModel
from . import worker_client
from .landmark_render import HeadRenderer, LandmarkError, frame_camera

POSE_RENDERS = 1000  # ~1.5 min once per head; 500 renders gave 2.1 deg on the rendered ground truth, 1000 1.95
SIZE = 320  # pixels; the face fills about half of the frame (MediaPipe sees a 192 px crop of it)
FILL = 0.45
SEED = 0
YAW_DEG, PITCH_DEG, ROLL_DEG = 38.0, 25.0, 10.0
JAW_OPEN_RAD, JAW_OPEN_SHARE = 0.35, 0.6
MAX_EXPRESSIONS = 4


def sample_poses(model: HeadModel, n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """{"rot" (n, 3) root axis-angle, "jaw" (n, 3), "expr" (n, E)}: the calibration's random poses."""
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
    return {"rot": rot, "jaw": jaw, "expr": expr}


def calibrate_pose(model: HeadModel, shape: np.ndarray | None, model_file: str, context: bpy.types.Context,
                   tmp: str, n: int | None = None, timeout: float = 900.0) -> dict:
    """Render ``n`` poses of ``model`` (its embedding saved at ``model_file``) and have the worker learn the
    pose correction; returns it (for meta[pose_calibration.CORRECTION_KEY]). Raises LandmarkError."""
    n = POSE_RENDERS if n is None else int(n)
    poses = sample_poses(model, n)
    neutral = model.forward(shape=shape)[0]
    p0 = model.landmarks(neutral)
    lo, hi = p0.min(0), p0.max(0)
    cam = frame_camera(neutral, size=SIZE, centre=np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]]),
                       extent=float(max(hi[0] - lo[0], hi[1] - lo[1])), fill=FILL)
    names = list(model.joint_names)
    images = []
    with HeadRenderer(neutral, model.faces, cam, groups=model.meta.get("material_groups")) as renderer:
        for i in range(n):
            pose = np.zeros((model.n_joints, 3))
            pose[0] = poses["rot"][i]
            if "jaw" in names:
                pose[names.index("jaw")] = poses["jaw"][i]
            verts = model.forward(shape=shape, expression=poses["expr"][i], pose=pose)[0]
            images.append(renderer.render(os.path.join(tmp, f"pose_{i:04d}.png"), verts))
    truth = os.path.join(tmp, "pose_truth.npz")
    np.savez(truth, **poses)
    params = {"head_file": model_file, "images": images, "truth": truth, "focal_px": cam.focal_px,
              "width": cam.width, "height": cam.height}
    try:
        return worker_client.get_client(context).run_sync("calibrate_pose", params, timeout=timeout)
    except worker_client.WorkerError as exc:
        raise LandmarkError(f"the pose calibration failed: {exc}") from exc
