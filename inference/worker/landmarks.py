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
    "rot" (N, 3), "jaw" (N, 3), "expr" (N, E) and "camera" (N,) (an index into "cameras") of each render,
    "cameras": [{"focal_px", "position"} (model space, looking along -Z)], "focal_camera": the camera the
    focal search is measured with, "width", "height", "scores_model" (optional)}
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
    cameras = params.get("cameras") or []
    if not images or not params.get("head_file") or not params.get("truth") or not cameras:
        raise JobError("calibrate_pose needs 'head_file', 'images', 'truth' and 'cameras'")
    try:
        head = HeadModel.load(params["head_file"])
        with np.load(os.fspath(params["truth"])) as t:
            truth = {k: np.asarray(t[k], dtype=np.float64) for k in ("rot", "jaw", "expr")}
            group = np.asarray(t["camera"], dtype=np.int64)
        focal = [float(c["focal_px"]) for c in cameras]
        cam_z = [float(c["position"][2]) for c in cameras]
    except (OSError, KeyError, ValueError, TypeError, IndexError, HeadModelError) as exc:
        raise JobError(f"could not read the calibration inputs: {exc}") from exc
    if any(len(v) != len(images) for v in (*truth.values(), group)) or group.min() < 0 or group.max() >= len(cameras):
        raise JobError("calibrate_pose: 'truth' must have one row per image, each naming one of 'cameras'")
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
    w, h = int(params["width"]), int(params["height"])
    n, E = len(images), head.n_expr
    rot, jaw, expr, prox = np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, E)), np.zeros(n)
    fitted_depth, true_depth = np.zeros(n), np.zeros(n)
    try:
        for g in range(len(cameras)):  # one fit per camera, as a clip has one camera
            sel = np.flatnonzero(ok & (group == g))
            if len(sel) < 2:
                continue
            fit = fit_landmarks(head, det[sel], np.ones(len(sel), dtype=bool), w, h,
                                FitOptions(smooth=0.0, pose_correction=False), fit_eyes=fits_eyes(head),
                                focal_px=focal[g])
            rot[sel], jaw[sel], expr[sel] = fit.head_rotation, fit.jaw, fit.expression
            prox[sel] = pose_calibration.proximity(head, fit.head_rotation, fit.head_translation, fit.position[2])
            # The depth's bias too (the renders' head sits at the origin, unmoved).
            fitted_depth[sel] = pose_calibration.face_depth(head, fit.head_rotation, fit.head_translation,
                                                            fit.position[2])
            true_depth[sel] = pose_calibration.face_depth(head, truth["rot"][sel], np.zeros((len(sel), 3)), cam_z[g])
        used = ok & (true_depth > 0)
        out = pose_calibration.learn(rot[used], jaw[used], expr[used], prox[used], truth["rot"][used])
        out.update(pose_calibration.learn_depth(rot[used], jaw[used], expr[used], prox[used],
                                                fitted_depth[used] / true_depth[used] - 1))
        scored = used & np.isfinite(scores).all(1)
        if scores_model is not None and scored.sum() >= 0.8 * used.sum():
            out["score_fusion"] = score_fusion.learn(expr[scored], scores[scored], truth["expr"][scored])
        # The focal search's bias: search the lens on a few random subsets of one camera's renders.
        g = int(params.get("focal_camera", 0))
        pool = np.flatnonzero(used & (group == g))
        rng = np.random.default_rng(0)
        found = []
        for k in range(FOCAL_TRIALS):
            ctx.check_cancelled()
            ctx.progress(0.8 + 0.2 * k / FOCAL_TRIALS, "measuring the focal length search")
            idx = rng.choice(pool, min(FOCAL_TRIAL_FRAMES, len(pool)), replace=False)
            trial = fit_landmarks(head, det[idx], np.ones(len(idx), dtype=bool), w, h,
                                  FitOptions(smooth=0.0, pose_correction=False, focal_correction=False),
                                  fit_eyes=fits_eyes(head))
            found.append(trial.focal_px)
        out["focal_ratio"] = pose_calibration.focal_ratio(found, focal[g])
        out["focal_estimates_px"] = [round(float(f), 2) for f in found]
    except (FitError, ValueError) as exc:
        raise JobError(f"the pose calibration failed: {exc}") from exc
    ctx.progress(1.0, "done")
    return {**out, "detected": int(ok.sum())}
