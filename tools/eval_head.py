"""``./cadence eval head [--out DIR]``: the default head judged by MediaPipe's blendshape model.

The neutral head and each ARKit-like expression component at full strength are rendered (Workbench with
the head's own materials, as the tracker's calibration sees it) from the front and at ±20° yaw, framed on
the face, and scored by MediaPipe's face landmarker (its 52 blendshape scores, ``face_landmarker.task``).
Prints the table of ``inference/heads/expression_judge.py`` and writes DIR/head_table.txt,
DIR/head_scores.json and DIR/head_contact_sheet.png (the frontal renders, labelled).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402

VIEWS = {"front": 0.0, "yaw-20": -20.0, "yaw+20": 20.0}
SIZE = 384


def face_camera(render_mod, model, yaw_deg: float, size: int = SIZE):
    """A camera on the face (the head's landmarks with a margin), turned ``yaw_deg``."""
    lmk = model.landmarks()
    lo, hi = lmk.min(0), lmk.max(0)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[2]])
    return render_mod.frame_camera(model.v_template, size=size, yaw_deg=yaw_deg, centre=centre,
                                   extent=float(max(hi[0] - lo[0], hi[1] - lo[1])), fill=0.62)


def score_head(cadence, model, views: dict[str, float] = VIEWS, components: list[str] | None = None,
               size: int = SIZE, folder: str | None = None) -> dict:
    """{"neutral": {view: (52,)}, "components": {view: {name: (52,)}}, "images": {name: front render path}}.
    A render MediaPipe finds no face in scores NaN."""
    import tempfile

    import cv2

    from inference.heads.expression_judge import mirror_index
    from inference.tracking import landmarker_model
    from inference.tracking.face_landmarks import BLENDSHAPE_NAMES, LandmarkTracker

    task = landmarker_model.find_model()
    if task is None:
        raise RuntimeError(landmarker_model.MISSING_HINT)
    render_mod = cadence.operators.tracking.landmark_render
    names = list(model.expr_names) if components is None else components
    folder = folder or tempfile.mkdtemp(prefix="cadence-head-judge-")
    out = {"neutral": {}, "components": {}, "images": {}}
    groups = model.meta.get("material_groups")
    with LandmarkTracker(static=True, scores_model=task) as tracker:

        views_of = ((None, np.arange(len(BLENDSHAPE_NAMES))), (slice(None, None, -1), mirror_index(BLENDSHAPE_NAMES)))

        def scores(path: str) -> np.ndarray:
            img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            out = []
            # The render and its mirror image (whose scores are read with Left <-> Right swapped): the studio
            # light and the detector each lean to one side; the mean of the two cancels that lean.
            for cols, order in views_of:
                tracker.process(img if cols is None else np.ascontiguousarray(img[:, cols]))
                if tracker.last_scores is None:
                    return np.full(len(BLENDSHAPE_NAMES), np.nan)
                out.append(np.asarray(tracker.last_scores, np.float64)[order])
            return (out[0] + out[1]) / 2

        for view, yaw in views.items():
            cam = face_camera(render_mod, model, yaw, size)
            with render_mod.HeadRenderer(model.v_template, model.faces, cam, groups) as renderer:
                path = renderer.render(str(Path(folder) / f"{view}_neutral.png"))
                out["neutral"][view] = scores(path)
                if view == "front":
                    out["images"]["neutral"] = path
                per = {}
                for name in names:
                    e = np.zeros(model.n_expr)
                    e[list(model.expr_names).index(name)] = 1.0
                    verts, _ = model.forward(expression=e)
                    path = renderer.render(str(Path(folder) / f"{view}_{name}.png"), verts)
                    per[name] = scores(path)
                    if view == "front":
                        out["images"][name] = path
                out["components"][view] = per
    return out


def contact_sheet(images: dict[str, str], path: str, cols: int = 8, cell: int = 192) -> str:
    import cv2

    names = list(images)
    rows = (len(names) + cols - 1) // cols
    sheet = np.full((rows * (cell + 18), cols * cell, 3), 255, np.uint8)
    for k, name in enumerate(names):
        img = cv2.resize(cv2.imread(images[name]), (cell, cell), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        y, x = r * (cell + 18), c * cell
        sheet[y:y + cell, x:x + cell] = img
        cv2.putText(sheet, name, (x + 3, y + cell + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(path, sheet)
    return path


def eval_head(args) -> int:
    scratch = blender_session.prepare()
    import bpy  # noqa: F401  (Blender first: the extension's modules need it)

    cadence = blender_session.enable_cadence(scratch)
    try:
        from inference.heads import expression_judge as judge
        from inference.heads.default_head.build import build_default_head
        from inference.tracking.face_landmarks import BLENDSHAPE_NAMES

        out = Path(args.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        model = build_default_head()
        res = score_head(cadence, model, folder=str(out / "head_renders"))
        rows = [r for view, per in res["components"].items() for r in judge.judge(per, BLENDSHAPE_NAMES, view)]
        text = judge.format_table(res["neutral"], rows, BLENDSHAPE_NAMES)
        print(text)
        (out / "head_table.txt").write_text(text + "\n")
        as_lists = {"names": list(BLENDSHAPE_NAMES),
                    "neutral": {v: np.nan_to_num(s, nan=-1).tolist() for v, s in res["neutral"].items()},
                    "components": {v: {c: np.nan_to_num(s, nan=-1).tolist() for c, s in per.items()}
                                   for v, per in res["components"].items()}}
        (out / "head_scores.json").write_text(json.dumps(as_lists))
        contact_sheet(res["images"], str(out / "head_contact_sheet.png"))
        print(f"table, scores and contact sheet in {out}")
        return 0
    finally:
        blender_session.disable_cadence()


def add_parser(sub) -> None:
    p = sub.add_parser("head", help="the default head's neutral and expressions, as MediaPipe's blendshape model reads them")
    p.add_argument("--out", default="cadence-eval", help="folder for the table, the scores and the contact sheet")
