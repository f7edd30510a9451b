"""Lip contact (inference/tracking/lip_contact.py): seen in the video, held on the head by the fit."""

from __future__ import annotations

import os

import numpy as np


def _default_head():
    from inference.heads.default_head import load_or_build

    return load_or_build(os.environ.get("CADENCE_TEST_CACHE", "/tmp/cadence_test_cache"))


def test_seen_reads_touching_and_open_lips():
    from inference.tracking import lip_contact

    T = 4
    lmk = np.zeros((T, 478, 3))
    lmk[:, 33, 0], lmk[:, 263, 0] = 100.0, 200.0  # eye distance 100 px
    for a, b in lip_contact.PAIRS:
        lmk[:, a, 1] = 300.0
        lmk[:, b, 1] = 300.0 + np.array([0.2, 0.9, 5.0, 0.0])
    lmk[3] = np.nan  # no face
    got = lip_contact.seen(lmk)
    assert got[0] == 1.0 and 0.0 < got[1] < 1.0 and got[2] == 0.0 and got[3] == 0.0, got


def test_contact_derivatives_match_finite_differences():
    from inference.tracking import lip_contact

    head = _default_head()
    rig = lip_contact.ContactRig(head, lip_contact.pair_rows(head))
    rng = np.random.default_rng(0)
    T = 3
    expr = rng.uniform(0, 0.5, (T, head.n_expr))
    jaw = np.zeros((T, 3))
    jaw[:, 0] = [0.05, 0.1, 0.2]
    shape = np.zeros(head.n_shape)
    value, d_jaw, d_expr = rig.excess(shape, expr, jaw)
    h = 1e-6
    for k in rng.choice(head.n_expr, 6, replace=False):
        e2 = expr.copy()
        e2[:, k] += h
        np.testing.assert_allclose((rig.excess(shape, e2, jaw)[0] - value) / h, d_expr[:, :, k], atol=1e-5)
    j2 = jaw.copy()
    j2[:, 0] += h
    np.testing.assert_allclose((rig.excess(shape, expr, j2)[0] - value) / h, d_jaw[:, :, 0], rtol=1e-3, atol=1e-5)
    # Opening the jaw opens the lips; the rest pose has no excess.
    assert np.all(d_jaw[:, :, 0] > 0)
    rest = rig.excess(shape, np.zeros((1, head.n_expr)), np.zeros((1, 3)))[0]
    np.testing.assert_allclose(rest, 0.0, atol=1e-12)


def test_fit_closes_the_lips_where_contact_is_seen():
    """Landmarks of the head with its jaw open 0.08 rad, but the detected inner lips drawn together: the fit
    without contact keeps the lips apart, with contact it closes them (and leaves an open frame open)."""
    from inference.tracking import lip_contact
    from inference.tracking.fit import FitOptions, fit_landmarks

    head = _default_head()
    ids = list(head.lmk_ids)
    T, size, focal = 6, 512, 700.0
    pose = np.zeros((T, head.n_joints, 3))
    pose[:, list(head.joint_names).index("jaw"), 0] = 0.08
    pose[:, 0, 1] = np.linspace(-0.2, 0.2, T)
    lmk = np.full((T, 478, 3), np.nan)
    cam_z = 0.6
    for t in range(T):
        X = head.landmarks(head.forward(pose=pose[t])[0])
        z = cam_z - X[:, 2]
        lmk[t, ids, 0] = size / 2 + focal * X[:, 0] / z
        lmk[t, ids, 1] = size / 2 - focal * X[:, 1] / z
        lmk[t, ids, 2] = 0.0
    closed = np.arange(T) != T - 1
    for a, b in lip_contact.PAIRS:  # the detector reads these frames' lips as touching
        mid = (lmk[closed, a, :2] + lmk[closed, b, :2]) / 2
        lmk[closed, a, :2] = lmk[closed, b, :2] = mid
    valid = np.ones(T, dtype=bool)
    gaps = {}
    for on in (False, True):
        fit = fit_landmarks(head, lmk, valid, size, size, FitOptions(lip_contact=on), focal_px=focal)
        gaps[on] = lip_contact.gap_mm(head, fit.shape, fit.expression, fit.jaw)
        assert fit.report["lip_contact_fitted"] is on and fit.report["lip_contact_frames"] == closed.sum()
    assert np.all(gaps[True][closed] <= lip_contact.TOUCH_MM), gaps
    assert np.median(gaps[False][closed]) > lip_contact.TOUCH_MM, gaps
    assert gaps[True][~closed][0] > 3.0, gaps  # the open frame stays open
