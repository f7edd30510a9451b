"""MediaPipe's blendshape model as an independent judge of a head's expressions (``./cadence eval head``).

A face model trained on real people scores renders of the head: the neutral head should score as neutral
(every ARKit score low), and each ARKit-like component at full strength should score highest on its own
name among the scores of its part of the face. Names match tolerantly (``mouthSmile_L`` = ``mouthSmileLeft``);
a symmetric component whose ARKit counterpart is sided (``mouthPress``) is scored by the mean of both sides.
Sides: our ``_L`` is the head's own left (+X, FLAME's convention), as in ARKit; MediaPipe's model names the
sides the same way on an unmirrored image (checked on these renders: a left blink scores ``eyeBlinkLeft``).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ..protocol import name_key as _key

NEUTRAL_MAX = 0.25  # every score of the neutral head at most this
OWN_MIN = 0.5  # a component's own score at least this ...
PASS_SHARE = 0.8  # ... and the highest of its family, for this share of the components

# Families of related scores: a component competes with the scores of its own part of the face.
FAMILIES = (("brow",), ("eyeBlink", "eyeSquint", "eyeWide"), ("cheek", "noseSneer"), ("mouth", "jaw"))


def mirror_index(score_names: tuple[str, ...]) -> np.ndarray:
    """Index of each score's mirror-image counterpart (browDownLeft <-> browDownRight; others themselves)."""
    index = {n: i for i, n in enumerate(score_names)}
    swap = {"Left": "Right", "Right": "Left"}
    other = [re.sub("Left|Right", lambda m: swap[m.group(0)], n) for n in score_names]
    return np.array([index.get(o, i) for i, o in enumerate(other)])


def counterparts(component: str, score_names: tuple[str, ...]) -> list[int]:
    """Indices of ``component``'s ARKit counterpart(s) among ``score_names`` (empty: it has none)."""
    keys = [_key(n) for n in score_names]
    k = _key(component)
    if k in keys:
        return [keys.index(k)]
    both = [keys.index(k + s) for s in ("left", "right") if k + s in keys]
    return both if len(both) == 2 else []


def family(component: str, score_names: tuple[str, ...]) -> list[int]:
    """Indices of the scores ``component`` competes with (its family, itself included)."""
    for prefixes in FAMILIES:
        if any(component.startswith(p) for p in prefixes):
            return [i for i, n in enumerate(score_names) if any(n.startswith(p) for p in prefixes)]
    return []


@dataclasses.dataclass
class Row:
    component: str
    view: str
    own: float  # the counterpart's score (mean of both sides for a symmetric component)
    best: str  # the family's highest score's name
    best_score: float

    @property
    def passed(self) -> bool:
        return self.own >= OWN_MIN and self.own >= self.best_score - 1e-6


def judge(component_scores: dict[str, np.ndarray], score_names: tuple[str, ...], view: str = "front") -> list[Row]:
    """A row per component with an ARKit counterpart, from its (52,) scores at full strength."""
    rows = []
    for comp, scores in component_scores.items():
        own_ids, fam = counterparts(comp, score_names), family(comp, score_names)
        if not own_ids or not fam:
            continue
        s = np.asarray(scores, np.float64)
        own = float(s[own_ids].mean())
        rivals = [i for i in fam if i not in own_ids]
        best = max(rivals, key=lambda i: s[i]) if rivals else own_ids[0]
        if rivals and s[best] <= own:
            best, best_score = own_ids[int(np.argmax(s[own_ids]))], own
        else:
            best_score = float(s[best])
        rows.append(Row(comp, view, own, score_names[best], best_score))
    return rows


def neutral_excess(scores: np.ndarray, score_names: tuple[str, ...]) -> list[tuple[str, float]]:
    """The neutral head's ARKit scores above NEUTRAL_MAX, highest first (``_neutral`` itself is not one)."""
    s = np.asarray(scores, np.float64)
    over = [(n, float(v)) for n, v in zip(score_names, s) if not n.startswith("_") and v > NEUTRAL_MAX]
    return sorted(over, key=lambda t: -t[1])


def share_passed(rows: list[Row]) -> float:
    return float(np.mean([r.passed for r in rows])) if rows else 0.0


def format_table(neutral: dict[str, np.ndarray], rows: list[Row], score_names: tuple[str, ...]) -> str:
    """The neutral head's highest scores per view, then a row per component (own score, family's best)."""
    out = [f"neutral head: highest ARKit scores (every one must be <= {NEUTRAL_MAX:.2f})"]
    for view, s in neutral.items():
        top = sorted(((n, float(v)) for n, v in zip(score_names, s) if not n.startswith("_")), key=lambda t: -t[1])[:4]
        verdict = "ok" if not neutral_excess(s, score_names) else "FAILS"
        out.append(f"  {view:<8} {verdict:<6} " + ", ".join(f"{n} {v:.2f}" for n, v in top))
    views = list(dict.fromkeys(r.view for r in rows))
    out.append("")
    out.append(f"components at full strength: own score (>= {OWN_MIN}) and the family's highest score")
    out.append(f"{'component':<18}" + "".join(f"{v:>34}" for v in views))
    by = {(r.component, r.view): r for r in rows}
    for comp in dict.fromkeys(r.component for r in rows):
        cells = []
        for v in views:
            r = by.get((comp, v))
            if r is None:
                cells.append(f"{'':>34}")
                continue
            mark = "ok" if r.passed else "--"
            rival = "" if r.best_score <= r.own else f" < {r.best} {r.best_score:.2f}"
            cells.append(f"{f'{mark} {r.own:.2f}{rival}':>34}")
        out.append(f"{comp:<18}" + "".join(cells))
    for v in views:
        vr = [r for r in rows if r.view == v]
        out.append(f"{v}: {sum(r.passed for r in vr)}/{len(vr)} components pass ({100 * share_passed(vr):.0f} %, "
                   f"goal {100 * PASS_SHARE:.0f} %)")
    return "\n".join(out)
