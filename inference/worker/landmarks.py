"""Worker job "detect_landmarks": MediaPipe's 478 face landmarks on one image (a render of a head).

The Blender side renders the neutral head and ray-casts the landmarks onto it (operators/landmarks.py);
it cannot import MediaPipe or OpenCV itself, so detection runs here.
"""

from __future__ import annotations

import os

import numpy as np

from .jobs import JobContext, JobError, register_job


@register_job("detect_landmarks")
def detect_landmarks_job(params: dict, ctx: JobContext) -> dict:
    """params {"image": png path} -> {"landmarks": (478, 3) list (x, y pixels, top-left origin; z), "width", "height"}."""
    path = params.get("image")
    if not path:
        raise JobError("detect_landmarks needs 'image' (the path of a rendered image)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise JobError(f"the image to find landmarks on does not exist: {path}")
    import cv2  # noqa: PLC0415 - heavy, worker only

    from ..tracking import face_landmarks  # noqa: PLC0415 - imports MediaPipe

    ctx.progress(0.1, "reading the render")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise JobError(f"could not read the image {os.path.basename(path)!r} (not a PNG/JPEG image?)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ctx.progress(0.3, "detecting face landmarks")
    try:
        lmk = face_landmarks.detect_landmarks(rgb, static=True)
    except face_landmarks.LandmarkError as exc:
        raise JobError(str(exc)) from exc
    if lmk is None:
        raise JobError(
            "no face found in the render of this head: MediaPipe could not see a face in the frontal view "
            f"({os.path.basename(path)}). Check that the head faces +Z (FLAME axes) and has a face, "
            "or load a landmark embedding file instead (Cadence > Load Landmarks)."
        )
    lmk = np.asarray(lmk, dtype=np.float64)
    ctx.progress(1.0, "done")
    return {"landmarks": lmk.tolist(), "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}


FOCAL_TRIALS = 3  # focal searches on random subsets of the calibration renders
FOCAL_TRIAL_FRAMES = 100


@register_job("calibrate_pose")
def calibrate_pose_job(params: dict, ctx: JobContext) -> dict:
    """Learn a head's pose correction (inference/tracking/pose_calibration.py) from renders with known poses.

    params {"head_file": model .npz with its embedding, "images": [png paths], "truth": .npz path with
    "rot" (N, 3), "jaw" (N, 3), "expr" (N, E) of each render, "focal_px", "width", "height", "position" (the
    camera's, model space, looking along -Z)}
    -> the correction dict (pose_calibration.learn) + {"detected": renders with a face, "focal_ratio": true /
    searched focal length (pose_calibration.focal_ratio), "focal_estimates_px": the searches, "score_fusion":
    the blendshape scores' fusion with the fit (score_fusion.learn; absent without the blendshape model)}.
    """
    import cv2  # noqa: PLC0415 - heavy, worker only

    from ..heads.head_model import HeadModel, HeadModelError  # noqa: PLC0415
    from ..tracking import face_landmarks, landmarker_model, pose_calibration, score_fusion  # noqa: PLC0415
    from ..tracking.fit import FitError, FitOptions, fit_landmarks  # noqa: PLC0415
    from ..tracking.track import fits_eyes  # noqa: PLC0415

    images = [os.fspath(p) for p in params.get("images") or []]
    if not images or not params.get("head_file") or not params.get("truth") or "position" not in params:
        raise JobError("calibrate_pose needs 'head_file', 'images', 'truth' and 'position'")
    try:
        head = HeadModel.load(params["head_file"])
        with np.load(os.fspath(params["truth"])) as t:
            truth = {k: np.asarray(t[k], dtype=np.float64) for k in ("rot", "jaw", "expr")}
    except (OSError, KeyError, ValueError, HeadModelError) as exc:
        raise JobError(f"could not read the calibration inputs: {exc}") from exc
    if any(len(v) != len(images) for v in truth.values()):
        raise JobError("calibrate_pose: 'truth' must have one row per image")
    det = np.full((len(images), face_landmarks.N_LANDMARKS, 3), np.nan)
    scores_model = landmarker_model.find_model(params.get("scores_model"))
    scores = np.full((len(images), len(face_landmarks.BLENDSHAPE_NAMES)), np.nan)
    # Each render is an unrelated image: static mode.
    with face_landmarks.LandmarkTracker(static=True, scores_model=scores_model) as tracker:
        for i, path in enumerate(images):
            ctx.check_cancelled()
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            pts = None if bgr is None else tracker.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if pts is not None:
                det[i] = pts
                if tracker.last_scores is not None:
                    scores[i] = tracker.last_scores
            if i % 25 == 0:
                ctx.progress(0.6 * i / len(images), "finding landmarks on the calibration renders")
    ok = np.isfinite(det[:, 0, 0])
    ctx.progress(0.6, "tracking the calibration renders")
    try:
        fit = fit_landmarks(head, det[ok], np.ones(int(ok.sum()), dtype=bool), int(params["width"]),
                            int(params["height"]), FitOptions(smooth=0.0, pose_correction=False),
                            fit_eyes=fits_eyes(head), focal_px=float(params["focal_px"]))
        out = pose_calibration.learn(fit.head_rotation, fit.jaw, fit.expression, truth["rot"][ok])
        # The depth's bias too (the renders' head sits at the origin, unmoved).
        fitted = pose_calibration.face_depth(head, fit.head_rotation, fit.head_translation, fit.position[2])
        true = pose_calibration.face_depth(head, truth["rot"][ok], np.zeros((int(ok.sum()), 3)),
                                           float(params["position"][2]))
        out.update(pose_calibration.learn_depth(fit.head_rotation, fit.jaw, fit.expression, fitted / true - 1))
        scored = np.isfinite(scores[ok]).all(1)
        if scores_model is not None and scored.sum() >= 0.8 * ok.sum():
            out["score_fusion"] = score_fusion.learn(fit.expression[scored], scores[ok][scored],
                                                     truth["expr"][ok][scored])
        # The focal search's bias: search the lens on a few random subsets of the renders (one camera).
        rng = np.random.default_rng(0)
        found = []
        for k in range(FOCAL_TRIALS):
            ctx.check_cancelled()
            ctx.progress(0.8 + 0.2 * k / FOCAL_TRIALS, "measuring the focal length search")
            idx = rng.choice(int(ok.sum()), min(FOCAL_TRIAL_FRAMES, int(ok.sum())), replace=False)
            trial = fit_landmarks(head, det[ok][idx], np.ones(len(idx), dtype=bool), int(params["width"]),
                                  int(params["height"]), FitOptions(smooth=0.0, pose_correction=False,
                                                                    focal_correction=False),
                                  fit_eyes=fits_eyes(head))
            found.append(trial.focal_px)
        out["focal_ratio"] = pose_calibration.focal_ratio(found, float(params["focal_px"]))
        out["focal_estimates_px"] = [round(float(f), 2) for f in found]
    except (FitError, ValueError) as exc:
        raise JobError(f"the pose calibration failed: {exc}") from exc
    ctx.progress(1.0, "done")
    return {**out, "detected": int(ok.sum())}
