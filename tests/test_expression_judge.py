"""The rules of ``./cadence eval head``'s judge (inference/heads/expression_judge.py) on made-up scores."""

from __future__ import annotations

import numpy as np

from inference.heads import expression_judge as J
from inference.tracking.face_landmarks import BLENDSHAPE_NAMES as N


def _scores(**named) -> np.ndarray:
    s = np.zeros(len(N))
    for k, v in named.items():
        s[N.index(k)] = v
    return s


def test_names_match_sides_and_symmetric_components():
    assert [N[i] for i in J.counterparts("mouthSmile_L", N)] == ["mouthSmileLeft"]
    assert [N[i] for i in J.counterparts("browInnerUp", N)] == ["browInnerUp"]
    assert [N[i] for i in J.counterparts("mouthPress", N)] == ["mouthPressLeft", "mouthPressRight"]
    assert J.counterparts("lipsTogether", N) == []
    brows = {N[i] for i in J.family("browDown_L", N)}
    assert brows == {"browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight"}
    assert "jawOpen" in {N[i] for i in J.family("mouthFunnel", N)}


def test_a_component_passes_only_when_its_own_score_leads_its_family():
    rows = J.judge({"browInnerUp": _scores(browInnerUp=0.9, browOuterUpLeft=0.6),
                    "browOuterUp_L": _scores(browInnerUp=0.88, browOuterUpLeft=0.75),
                    "eyeBlink_L": _scores(eyeBlinkLeft=0.4),
                    "mouthPress": _scores(mouthPressLeft=0.7, mouthPressRight=0.5, mouthSmileLeft=0.55),
                    "notAnArkitName": _scores()}, N)
    by = {r.component: r for r in rows}
    assert set(by) == {"browInnerUp", "browOuterUp_L", "eyeBlink_L", "mouthPress"}
    assert by["browInnerUp"].passed
    assert not by["browOuterUp_L"].passed and by["browOuterUp_L"].best == "browInnerUp"
    assert not by["eyeBlink_L"].passed  # leads its family but below OWN_MIN
    assert by["mouthPress"].passed and abs(by["mouthPress"].own - 0.6) < 1e-9
    assert J.share_passed(rows) == 0.5
    text = J.format_table({"front": _scores(_neutral=0.9, browInnerUp=0.3)}, rows, N)
    assert "FAILS" in text and "browInnerUp 0.30" in text and "2/4 components pass" in text


def test_the_neutral_head_fails_on_any_high_arkit_score_but_not_on_neutral_itself():
    assert J.neutral_excess(_scores(_neutral=0.95, eyeBlinkLeft=0.2), N) == []
    assert [n for n, _ in J.neutral_excess(_scores(browInnerUp=0.9, eyeWideLeft=0.3), N)] == ["browInnerUp",
                                                                                               "eyeWideLeft"]
