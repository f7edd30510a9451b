"""The default head as MediaPipe's blendshape model reads it (the judge of ``./cadence eval head``).

Real renders, real scores: the resting head must read as neutral, and the components that read as
themselves today must keep doing so. The whole table (39 components x 3 views) is ``./cadence eval head``.
"""

from __future__ import annotations

import numpy as np

from inference.heads import expression_judge as J
from inference.heads.default_head import build_default_head
from inference.tracking.face_landmarks import BLENDSHAPE_NAMES as N

# Components that lead their family at >= 0.5 on the frontal render (the table in the README's head section).
READS_AS_ITSELF = ("mouthSmile_L", "mouthSmile_R", "mouthPucker", "browInnerUp", "browOuterUp_L", "browOuterUp_R")


def test_the_resting_head_reads_as_neutral_and_its_components_as_themselves(cadence, tmp_path):
    from tools.eval_head import score_head

    swap = J.mirror_index(N)
    assert N[swap[N.index("browDownLeft")]] == "browDownRight" and N[swap[N.index("jawOpen")]] == "jawOpen"
    res = score_head(cadence, build_default_head(), views={"front": 0.0}, components=list(READS_AS_ITSELF),
                     folder=str(tmp_path))
    neutral = res["neutral"]["front"]
    assert not np.isnan(neutral).any(), "MediaPipe found no face on the neutral render"
    # Before the brows were lowered and the lash line added, browInnerUp read 0.91 here (a startled face).
    assert J.neutral_excess(neutral, N) == [], J.format_table(res["neutral"], [], N)
    rows = J.judge(res["components"]["front"], N, "front")
    assert [r.component for r in rows if not r.passed] == [], J.format_table(res["neutral"], rows, N)
