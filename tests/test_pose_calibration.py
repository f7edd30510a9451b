"""The tracker's pose calibration (inference/tracking/pose_calibration.py): learning and undoing a detector's pose bias."""

from __future__ import annotations

import os

import numpy as np
import pytest

from inference.heads.head_model import rodrigues
from inference.tracking import pose_calibration as pc


def _poses(rng: np.random.Generator, n: int, E: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rot = np.radians(np.stack([rng.uniform(-25, 25, n), rng.uniform(-38, 38, n), rng.uniform(-10, 10, n)], 1))
    jaw = np.zeros((n, 3))
    jaw[:, 0] = np.where(rng.random(n) < 0.6, rng.uniform(0, 0.35, n), 0.0)
    expr = np.where(rng.random((n, E)) < 0.1, rng.uniform(0.2, 1.0, (n, E)), 0.0)
    prox = rng.choice([0.18, 0.27, 0.45, 0.65], n)  # face width / camera distance: long lens .. phone held close
    return rot, jaw, expr, prox


def _biased_fit(rot: np.ndarray, jaw: np.ndarray, expr: np.ndarray, prox: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
    """What a biased tracker returns: it under-turns the yaw by 15 % (more with a close camera), pitches down
    with the jaw and turns with the first expression, plus 0.5 deg of noise."""
    err = np.zeros_like(rot)
    err[:, 1] = -(0.15 + 0.4 * (prox - 0.27)) * rot[:, 1]
    err[:, 0] = -0.3 * jaw[:, 0] + 0.02
    err[:, 1] += 0.04 * expr[:, 0]
    err += np.radians(0.5) * rng.normal(size=err.shape)
    return pc.log_rot(np.einsum("tab,tbc->tac", rodrigues(err), rodrigues(rot)))


def test_learns_and_undoes_a_pose_bias():
    rng = np.random.default_rng(0)
    E = 6
    rot, jaw, expr, prox = _poses(rng, 400, E)
    fitted = _biased_fit(rot, jaw, expr, prox, rng)
    out = pc.learn(fitted, jaw, expr, prox, rot)
    assert out["basis"] == pc.BASIS and out["n"] == 400
    assert np.asarray(out["coef"]).shape == (pc.N_BASE + 3 * E, 3)
    assert out["err_before_deg"] > 3.0 and out["err_after_deg"] < 1.2, out  # held-out halves

    # New poses: the stored correction takes the bias off.
    rot2, jaw2, expr2, prox2 = _poses(rng, 200, E)
    fitted2 = _biased_fit(rot2, jaw2, expr2, prox2, rng)
    coef = pc.usable({pc.CORRECTION_KEY: out}, E)
    fixed = pc.correct_with(coef, fitted2, pc.features(fitted2, jaw2, expr2, prox2))
    before = np.degrees(np.linalg.norm(pc.rotation_error(fitted2, rot2), axis=1)).mean()
    after = np.degrees(np.linalg.norm(pc.rotation_error(fixed, rot2), axis=1)).mean()
    assert after < 0.3 * before, (before, after)


def test_malformed_or_foreign_corrections_are_ignored():
    E = 4
    good = {"basis": pc.BASIS, "coef": np.zeros((pc.N_BASE + 3 * E, 3)).tolist()}
    assert pc.usable({pc.CORRECTION_KEY: good}, E) is not None
    assert pc.usable({}, E) is None
    assert pc.usable({pc.CORRECTION_KEY: {**good, "basis": "something_else"}}, E) is None
    assert pc.usable({pc.CORRECTION_KEY: good}, E + 1) is None  # another head's expression count
    assert pc.usable({pc.CORRECTION_KEY: {**good, "coef": [[float("nan")] * 3] * (pc.N_BASE + 3 * E)}}, E) is None
    assert pc.usable({pc.CORRECTION_KEY: "not a dict"}, E) is None
    with pytest.raises(ValueError, match="too few"):
        pc.learn(np.zeros((10, 3)), np.zeros((10, 3)), np.zeros((10, E)), np.zeros(10), np.zeros((10, 3)))


def _rendered_landmarks(T: int, seed: int, yaw_deg: float):
    """The default head and its landmarks (T, 478, 2) as a 640x480 camera with an 800 px focal length sees
    them (exact projections), the head turned up to +-10 deg pitch and +-``yaw_deg`` yaw."""
    from inference.heads.default_head import load_or_build
    from inference.tracking import fit_gn as gn
    from inference.tracking.landmark_rig import LandmarkRig

    head = load_or_build(os.environ.get("CADENCE_TEST_CACHE", "/tmp/cadence_test_cache"))
    rng = np.random.default_rng(seed)
    pose = np.zeros((T, head.n_joints, 3))
    pose[:, 0] = np.radians(np.stack([rng.uniform(-10, 10, T), rng.uniform(-yaw_deg, yaw_deg, T), np.zeros(T)], 1))
    X = LandmarkRig(head).forward(np.zeros(head.n_shape), np.zeros((T, head.n_expr)), pose, np.zeros((T, 3)))[0]
    obs = np.zeros((T, 478, 2))
    obs[:, np.asarray(head.lmk_ids)] = gn.Camera(800.0, np.array([0.0, 0.0, 0.6]), 320, 240).project(X)[0]
    return head, obs


def test_fit_applies_the_heads_correction():
    """fit_landmarks turns a head with a stored correction by exactly what the correction predicts."""
    from inference.tracking import fit_gn as gn
    from inference.tracking.fit import FitOptions, fit_landmarks

    head, obs = _rendered_landmarks(T := 6, seed=1, yaw_deg=20)
    opts = FitOptions(iters_final=2)
    plain = fit_landmarks(head, obs, np.ones(T, bool), 640, 480, opts, focal_px=800.0)
    assert plain.report["pose_corrected"] is False
    coef = np.zeros((pc.N_BASE + 3 * head.n_expr, 3))
    coef[1, 1] = 0.1  # the detector adds 10 % to the yaw: the correction takes it off
    head.meta = {**head.meta, pc.CORRECTION_KEY: {"basis": pc.BASIS, "coef": coef.tolist()}}
    fixed = fit_landmarks(head, obs, np.ones(T, bool), 640, 480, opts, focal_px=800.0)
    assert fixed.report["pose_corrected"] is True
    prox = pc.proximity(head, plain.head_rotation, plain.head_translation, plain.position[2])
    assert plain.report["proximity"] == pytest.approx(np.median(prox))
    want = pc.correct_with(coef, plain.head_rotation, pc.features(plain.head_rotation, plain.jaw, plain.expression,
                                                                    prox))
    np.testing.assert_allclose(fixed.head_rotation, want, atol=1e-9)
    # The face stays where it was seen: only the head's turn about the neck changes.
    arm = head.landmarks(head.forward()[0]).mean(0) - head.rest_joints()[0]

    def face(r):
        return np.einsum("tab,b->ta", rodrigues(r.head_rotation), arm) + r.head_translation - r.position

    np.testing.assert_allclose(face(fixed), face(plain), atol=1e-9)
    assert not np.allclose(fixed.head_translation, plain.head_translation)
    yaw = gn.view_angles(rodrigues(plain.head_rotation))[0]
    assert np.abs(yaw).max() > np.radians(5)
    off = opts.__class__(iters_final=2, pose_correction=False)
    assert fit_landmarks(head, obs, np.ones(T, bool), 640, 480, off, focal_px=800.0).report["pose_corrected"] is False


def test_focal_ratio_is_measured_validated_and_applied_to_a_searched_focal():
    """The calibrated focal ratio scales the searched focal length (and only a searched one)."""
    from inference.tracking.fit import FitOptions, fit_landmarks

    assert pc.focal_ratio([400.0, 380.0, 420.0], 533.0) == pytest.approx(533.0 / 400.0)
    with pytest.raises(ValueError):
        pc.focal_ratio([], 533.0)
    with pytest.raises(ValueError):
        pc.focal_ratio([400.0, 0.0], 533.0)
    good = {"basis": pc.BASIS, "focal_ratio": 1.3}
    assert pc.focal_scale({pc.CORRECTION_KEY: good}) == 1.3
    for bad in ({**good, "focal_ratio": 10.0}, {**good, "focal_ratio": "x"}, {**good, "basis": "other"},
                {"basis": pc.BASIS}):
        assert pc.focal_scale({pc.CORRECTION_KEY: bad}) is None
    assert pc.focal_scale({}) is None

    head, obs = _rendered_landmarks(T := 8, seed=2, yaw_deg=30)
    opts = FitOptions(iters_final=2)
    plain = fit_landmarks(head, obs, np.ones(T, bool), 640, 480, opts)
    assert plain.report["focal_ratio"] is None and plain.focal_px == plain.report["focal_searched_px"]
    head.meta = {**head.meta, pc.CORRECTION_KEY: {"basis": pc.BASIS, "focal_ratio": 1.25}}
    scaled = fit_landmarks(head, obs, np.ones(T, bool), 640, 480, opts)
    assert scaled.report["focal_searched_px"] == pytest.approx(plain.focal_px)
    assert scaled.focal_px == pytest.approx(1.25 * plain.focal_px) and scaled.report["focal_ratio"] == 1.25
    off = FitOptions(iters_final=2, focal_correction=False)
    assert fit_landmarks(head, obs, np.ones(T, bool), 640, 480, off).focal_px == pytest.approx(plain.focal_px)
    assert fit_landmarks(head, obs, np.ones(T, bool), 640, 480, opts, focal_px=800.0).focal_px == 800.0


def test_depth_bias_is_learned_and_the_face_slides_along_its_line_of_sight():
    """A depth bias that follows the pitch is learned from (fit, truth) pairs; the fit then moves the face
    along the camera ray by the predicted amount (its image position stays where it was seen)."""
    from inference.tracking.fit import FitOptions, fit_landmarks

    rng = np.random.default_rng(3)
    E = 5
    rot, jaw, expr, prox = _poses(rng, 400, E)
    rel = 0.08 * rot[:, 0] + 0.002 * rng.normal(size=400)  # 8 % deeper per radian of pitch, plus noise
    out = pc.learn_depth(rot, jaw, expr, prox, rel)
    assert out["depth_err_after"] < 0.3 * out["depth_err_before"] and len(out["depth_coef"]) == pc.N_BASE + 3 * E

    head, obs = _rendered_landmarks(T := 6, seed=4, yaw_deg=20)
    opts = FitOptions(iters_final=2)
    plain = fit_landmarks(head, obs, np.ones(T, bool), 640, 480, opts, focal_px=800.0)
    assert plain.report["depth_corrected"] is False
    coef = np.zeros(pc.N_BASE + 3 * head.n_expr)
    coef[0] = 0.05  # the fit reads every face 5 % too far
    head.meta = {**head.meta, pc.CORRECTION_KEY: {"basis": pc.BASIS, "depth_coef": coef.tolist()}}
    fixed = fit_landmarks(head, obs, np.ones(T, bool), 640, 480, opts, focal_px=800.0)
    assert fixed.report["depth_corrected"] is True
    np.testing.assert_allclose(fixed.head_rotation, plain.head_rotation)
    d0 = pc.face_depth(head, plain.head_rotation, plain.head_translation, plain.position[2])
    d1 = pc.face_depth(head, fixed.head_rotation, fixed.head_translation, fixed.position[2])
    np.testing.assert_allclose(d1, d0 / 1.05, rtol=1e-9)
    J0 = head.rest_joints()[0]
    arm = head.landmarks(head.forward()[0]).mean(0) - J0

    def ray(r):  # unit direction from the camera to the face centre
        v = np.einsum("tab,b->ta", rodrigues(r.head_rotation), arm) + J0 + r.head_translation - r.position
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    np.testing.assert_allclose(ray(fixed), ray(plain), atol=1e-9)
    bad = {"basis": pc.BASIS, "depth_coef": [float("nan")] * len(coef)}
    assert pc.depth_error(head.__class__(**{**head.__dict__, "meta": {pc.CORRECTION_KEY: bad}}), plain.head_rotation,
                          plain.jaw, plain.expression, np.full(T, 0.27)) is None


def test_steady_depth_low_passes_the_distance_and_keeps_the_image_position():
    """Frame-to-frame depth jitter is smoothed away, a slow lean towards the camera is kept, and each frame's
    head slides along its own line of sight (its root joint projects where it was seen)."""
    from inference.tracking.fit import FitResult, steady_depth

    head, _ = _rendered_landmarks(2, seed=5, yaw_deg=0)
    rng = np.random.default_rng(6)
    T = 200
    t = np.arange(T) / 25.0
    lean = 0.02 * np.sin(2 * np.pi * 0.1 * t)  # 2 cm, 0.1 Hz
    smooth = np.stack([0.01 * np.sin(t), 0.005 * np.cos(t), lean], 1)
    trans = smooth + [0, 0, 0.0008] * rng.normal(size=(T, 3))
    rot = np.radians(5) * rng.normal(size=(T, 3))
    fit = FitResult(shape=np.zeros(head.n_shape), expression=np.zeros((T, head.n_expr)), jaw=np.zeros((T, 3)),
                    head_rotation=rot, head_translation=trans.copy(), focal_px=900.0,
                    position=np.array([0.0, 0.03, 0.7]), rms_px=0.0)
    J0 = head.rest_joints()[0]

    def ray(tr):
        v = J0 + tr - fit.position
        return v / np.linalg.norm(v, axis=1, keepdims=True), np.linalg.norm(v, axis=1)

    steady_depth(head, fit, 0.0)
    np.testing.assert_array_equal(fit.head_translation, trans)
    steady_depth(head, fit, 0.16 * 25.0)
    (u0, d0), (u1, d1) = ray(trans), ray(fit.head_translation)
    np.testing.assert_allclose(u1, u0, atol=1e-12)
    np.testing.assert_array_equal(fit.head_rotation, rot)
    truth = ray(smooth)[1]
    rms = lambda d: np.sqrt(((d - truth)[5:-5] ** 2).mean())  # noqa: E731
    assert rms(d1) < 0.4 * rms(d0) and abs(d1.mean() - d0.mean()) < 1e-4
