"""The blendshape scores' fusion with the landmark fit (inference/tracking/score_fusion.py)."""

from __future__ import annotations

import numpy as np
import pytest


def _calibration(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 1, (n, 3)) * (rng.random((n, 3)) < 0.4)
    fit = truth.copy()
    fit[:, 1] = 0.3 * truth[:, 1] + rng.normal(0, 0.15, n)  # the landmarks barely see component 1
    fit[:, 2] = truth[:, 2] + rng.normal(0, 0.3, n)  # component 2: noisy, and no score sees it
    scores = rng.uniform(0, 0.1, (n, 52))
    scores[:, 7] = 0.6 * truth[:, 1] + rng.normal(0, 0.03, n)  # one score reads component 1 (at 0.6 of it)
    return fit, scores, truth


def test_fusion_is_used_where_the_scores_add_and_restores_the_magnitude():
    from inference.tracking import score_fusion

    fit, scores, truth = _calibration()
    d = score_fusion.learn(fit, scores, truth)
    assert d["used"] == [False, True, False], d["used"]
    assert d["r_fused"][1] > 0.9 > d["r_fit"][1]
    new_fit, new_scores, new_truth = _calibration(seed=1)
    new_scores[:5] = np.nan  # frames without scores keep the fit's values
    out, fused = score_fusion.fuse(d, new_fit, new_scores, bounded=True)
    assert fused == [1]
    np.testing.assert_array_equal(out[:, [0, 2]], new_fit[:, [0, 2]])
    np.testing.assert_array_equal(out[:5], new_fit[:5])
    assert np.corrcoef(out[5:, 1], new_truth[5:, 1])[0, 1] > 0.9
    assert abs(np.polyfit(new_truth[5:, 1], out[5:, 1], 1)[0] - 1) < 0.15  # the scale of the truth, not 0.6 of it
    assert out[5:, 1].min() >= 0 and out[5:, 1].max() <= 1


def test_fusion_refuses_bad_input_and_malformed_calibrations():
    from inference.tracking import score_fusion

    fit, scores, truth = _calibration()
    with pytest.raises(ValueError):
        score_fusion.learn(fit[:50], scores[:50], truth[:50])  # too few renders
    with pytest.raises(ValueError):
        score_fusion.learn(fit, scores[:, :10], truth)
    d = score_fusion.learn(fit, scores, truth)
    assert score_fusion.fuse({**d, "coef": [[1.0]]}, fit, scores, True) is None
    assert score_fusion.fuse({**d, "basis": "other"}, fit, scores, True) is None
    assert score_fusion.fuse(None, fit, scores, True) is None
    bad = np.asarray(d["coef"])
    bad[1, 3] = np.nan
    assert score_fusion.fuse({**d, "coef": bad.tolist()}, fit, scores, True) is None


def test_expressions_that_open_the_lips_keep_the_fit_values():
    """The lips' opening belongs to the landmarks and the contact term: a fused mouthClose would undo it."""
    import os

    from inference.heads.default_head import load_or_build
    from inference.tracking import lip_contact, score_fusion

    head = load_or_build(os.environ.get("CADENCE_TEST_CACHE", "/tmp/cadence_test_cache"))
    mm = lip_contact.opening_per_unit(head)
    owns = np.abs(mm) > lip_contact.OWNS_OPENING_MM
    names = list(head.expr_names)
    assert owns[names.index("mouthClose")] and mm[names.index("mouthClose")] < 0
    assert not owns[names.index("eyeBlink_L")] and not owns[names.index("mouthSmile_L")]
    E = head.n_expr
    d = {"basis": score_fusion.BASIS, "coef": np.ones((E, 54)).tolist(), "used": [True] * E}
    fit = np.full((3, E), 0.1)
    out, fused = score_fusion.fuse(d, fit, np.zeros((3, 52)), True, keep=owns)
    assert names.index("mouthClose") not in fused and names.index("eyeBlink_L") in fused
    np.testing.assert_array_equal(out[:, owns], fit[:, owns])
