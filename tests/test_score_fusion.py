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
