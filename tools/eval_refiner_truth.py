"""``./cadence eval refiner-truth [--audio FILE] [--minutes M]``: the refiner on a rendered person with a known truth.

The default head speaks ``--audio`` (default: the fixtures' LibriSpeech SLR12 clip 198-209-0000, read by
Heather Barnett, CC-BY 4.0) with Cadence's generic
motion; Cycles renders it with another look (``tools/refiner_truth.py``) as the "real" video, and Eevee renders
the same take through the same (known) camera, as Refine Video would. The refiner trains on the first 80 %
for ``--minutes`` at ``--size`` and is judged on the last 20 % like ``eval refiner`` (the mouth box from the
head's own MediaPipe-indexed landmarks, which are exact here). The issue's bar: refined beats the raw render by
≥ 3 dB PSNR within 20 min of CPU training at 128². Writes DIR/refiner_truth_table.txt, _side_by_side.png and
_training.png; the renders are cached in --cache.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402
from tools.eval import _file_key  # noqa: E402

DEFAULT_AUDIO = ROOT.parent / "shared" / "fixtures" / "speech" / "librispeech-198-209-0000.ogg"
FPS = 25


def eval_truth(args) -> int:
    audio = Path(args.audio).resolve() if args.audio else DEFAULT_AUDIO
    if not audio.is_file():
        print(f"eval refiner-truth: no such audio file: {audio}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(args.cache).expanduser().resolve()
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = blender_session.prepare()
    import bpy

    cadence = blender_session.enable_cadence(scratch)
    try:
        return _run(args, cadence, bpy, audio, out, cache_root)
    finally:
        blender_session.disable_cadence()


def make_truth(cadence, bpy, audio: Path, folder: Path, samples: int, cycles_samples: int, log=print) -> dict:
    """Generate the take, render the truth (Cycles) and the refiner's input (Eevee) into ``folder``."""
    from tools import eval_refiner
    from tools import refiner_truth as rt

    ops = cadence.operators
    context = bpy.context
    rig = context.active_object
    scene = context.scene
    ops.tracking.frame_rate.set_scene_fps(scene, FPS)
    mesh = ops.rig.build.rig_mesh(rig)
    bone = ops.refiner.render.head_bone(rig)
    camera = rt.camera()
    ops.tracking.camera_match.match_camera(scene, rig, camera)
    rt.dress_scene(scene, rig, mesh, bone, samples=cycles_samples)  # at the rest pose: the hair follows the head
    log(f"generating the take of {audio.name} ...")
    take = "truth"
    job = ops.generate.GenerateJob(context, {"audio": str(audio), "seed": 0, "lip_strength": 1.0,
                                             "motion_amplitude": 1.0, "motion_speed": 1.0},
                                   {"groups": set(ops.generate.GROUP_SETS), "frame_start": 1, "mode": "NEW",
                                    "set_frame_range": True, "add_sound": False, "take_name": take,
                                    "reduce_tolerance": None})
    job.run_sync()
    first, last = job.apply()["frames"]
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "truth.mp4"
    rt.render_truth(scene, mesh, ops.rig.materials.PALETTE, first, last, str(video), log)
    rig["cadence"]["last_track"] = {"video": str(video), "camera": camera, "take": take, "frame_start": first}
    renders = folder / f"renders_s{samples}"
    eval_refiner.render_take(ops, context, rig, str(renders), first, last, take, samples, "the take", log)
    info = {"video": str(video), "renders": str(renders), "frames": [first, last], "camera": camera}
    (folder / "truth.json").write_text(json.dumps(info))
    return info


def exact_landmarks(head, renders_folder: str) -> np.ndarray:
    """(T, 478, 2) MediaPipe-indexed landmarks in frame pixels, from the head's embedding on the rendered geometry."""
    from inference.refiner import frames, texture

    renders = frames.load_renders(renders_folder)
    verts, _faces = renders.geometry()
    out = np.full((len(renders), 478, 2), np.nan)
    ids = np.asarray(head.lmk_ids)
    for t in range(len(renders)):
        pts = head.landmarks(np.asarray(verts[t], np.float64))
        out[t, ids] = texture.project_points(pts, renders.focal_px, renders.width, renders.height)
    return out


def _run(args, cadence, bpy, audio: Path, out: Path, cache_root: Path) -> int:
    from inference.heads.head_model import HeadModel
    from inference.refiner import train
    from tools import eval_refiner
    from tools import refiner_truth as rt

    log = print
    cadence.operators.prefs.get_preferences().cache_dir = str(cache_root)
    bpy.ops.wm.read_homefile(use_empty=True)
    if bpy.ops.cadence.add_head() != {"FINISHED"}:
        raise RuntimeError("adding the default head failed")
    rig = bpy.context.active_object
    log("preparing the head's landmark embedding (a few minutes the first time) ...")
    ops = cadence.operators
    head = HeadModel.load(ops.tracking.landmark_calibration.run_steps(ops.landmarks.embedding_steps(rig, bpy.context)))
    key = _file_key(audio, head.content_hash(), rt.VERSION, str(args.samples), str(args.cycles_samples))
    folder = cache_root / "eval-refiner" / f"truth-{key}"
    if not (folder / "truth.json").is_file():
        t0 = time.perf_counter()
        make_truth(cadence, bpy, audio, folder, args.samples, args.cycles_samples, log)
        log(f"truth and renders ready ({time.perf_counter() - t0:.0f} s)")
    info = json.loads((folder / "truth.json").read_text())
    landmarks = exact_landmarks(head, info["renders"])
    n = len(landmarks)
    cut = int(round(n * (1 - train.VAL_FRACTION)))
    notes = [f"known truth: Cycles ({args.cycles_samples} samples, other materials, hair, wall, shadows) of the "
             f"default head speaking {audio.name}, {n} frames at {FPS} fps, {rt.WIDTH}x{rt.HEIGHT}"]
    return eval_refiner.judge(args, [Path(info["video"])], [info["renders"]], landmarks, cut, head.content_hash(),
                              out, log, notes=notes, name="refiner_truth")


def add_parser(sub) -> None:
    p = sub.add_parser("refiner-truth", help="the refiner on a rendered person whose truth is known")
    p.add_argument("--audio", default="", help="speech for the take (default: a fixture clip)")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    p.add_argument("--size", type=int, default=128, help="crop size")
    p.add_argument("--samples", type=int, default=4, help="Eevee samples per render")
    p.add_argument("--cycles-samples", type=int, default=8, help="Cycles samples per truth frame (denoised)")
    p.add_argument("--out", default="cadence-eval", help="folder for the table and the pictures")
    p.add_argument("--cache", default="~/.cache/cadence-eval", help="renders and the head's calibration")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="mirror and shift the training pairs")
