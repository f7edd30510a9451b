"""Tracking speed: landmarks (MediaPipe, each frame on its own) and the batched fit, separately and in total.

    .venv/bin/python bench/bench_tracking.py [VIDEO.mp4] [--fps 25] [--threads 2]

VIDEO: any clip with a face; without one, a 640x480 clip of Cadence's default head turning, talking
and blinking is rendered first (Blender, Workbench, --frames frames). The fit uses the head the track
operator uses: the default head's calibrated 478-point landmark embedding (built with Blender once, ~2.5 min,
then cached in --cache). Prints frames/s of each stage, with and without MediaPipe's blendshape scores
(goal: >= 60 fps total at 640x480 on 2 cores, with the scores) and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", default="", help="clip to track (default: render one)")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300, help="length of the rendered clip (a ~300-frame target video)")
    ap.add_argument("--cache", default="/tmp/cadence_bench_cache", help="default head cache folder")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from inference.heads.head_model import HeadModel
    from inference.tracking import video as vid
    from inference.tracking.fit import fit_landmarks
    from inference.tracking.landmarker_model import find_model
    from inference.tracking.track import detect_video_landmarks

    cache = Path(args.cache)
    clip = cache / f"bench_clip_{args.frames}.mp4"
    model_file = cache / "bench_head.txt"
    if not (clip.is_file() and model_file.is_file() and Path(model_file.read_text()).is_file()):
        render_clip(clip, model_file, args.frames)
    args.video = args.video or str(clip)
    torch.set_num_threads(args.threads)
    head = HeadModel.load(model_file.read_text())
    info = vid.probe(args.video)
    t0 = time.perf_counter()
    lmk, _, _ = detect_video_landmarks(info, args.fps, workers=args.threads)
    t_lmk = time.perf_counter() - t0
    scores_model, t_scored = find_model(), None
    if scores_model:  # what Track runs: landmarks + MediaPipe's blendshape scores, side by side with landmarks alone
        t0 = time.perf_counter()
        detect_video_landmarks(info, args.fps, workers=args.threads, scores_model=scores_model)
        t_scored = time.perf_counter() - t0
    valid = np.isfinite(lmk[:, 0, 0])
    t1 = time.perf_counter()
    fit = fit_landmarks(head, lmk, valid, info.width, info.height, fit_eyes=True)
    t_fit = time.perf_counter() - t1
    n = len(lmk)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"video {info.width}x{info.height}, {n} frames at {args.fps:g} fps, {args.threads} threads, "
          f"{len(head.lmk_ids)} landmarks in the fit")
    print(f"landmarks: {n / t_lmk:7.1f} fps ({t_lmk:.2f} s)")
    print(f"fit:       {n / t_fit:7.1f} fps ({t_fit:.2f} s, rms {fit.rms_px:.2f} px)")
    print(f"total:     {n / (t_lmk + t_fit):7.1f} fps (landmarks + fit)")
    if t_scored is not None:
        print(f"landmarks + blendshape scores: {n / t_scored:7.1f} fps ({t_scored / t_lmk:.2f}x the landmarks' time)")
        print(f"total with scores: {n / (t_scored + t_fit):7.1f} fps (what Track runs)")
    else:
        print("blendshape scores: not measured (face_landmarker.task is not installed)")
    print(f"peak memory {peak_mb:.0f} MB")
    return 0


def render_clip(dest: Path, model_file: Path, n: int) -> str:
    """A 640x480 clip of the default head (head turns, jaw, smile, blink) rendered with Workbench; writes the
    path of the head's calibrated landmark embedding (what tracking the clip in Blender would use) to
    ``model_file``."""
    import subprocess

    import imageio_ffmpeg
    import numpy as np

    from tools import blender_session

    scratch = blender_session.prepare()
    import bpy

    cadence = blender_session.enable_cadence(scratch)
    try:
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        scene.render.fps = 25
        assert bpy.ops.cadence.add_head() == {"FINISHED"}
        rig = bpy.context.active_object
        names = tuple(rig["cadence"]["expr_names"])
        t = np.arange(n) / 25.0
        ch = cadence.inference.protocol.Channels(fps=25, n_frames=n, expr_names=names)
        expr = np.zeros((n, len(names)))
        expr[:, names.index("mouthSmile_L")] = expr[:, names.index("mouthSmile_R")] = 0.5 + 0.5 * np.sin(t)
        expr[:, names.index("eyeBlink_L")] = expr[:, names.index("eyeBlink_R")] = (np.sin(3 * t) > 0.95)
        ch.set("expression", expr)
        ch.set("jaw", np.stack([0.15 + 0.15 * np.sin(5 * t), 0 * t, 0 * t], 1))
        ch.set("head_rotation", np.stack([0.2 * np.sin(0.9 * t), 0.45 * np.sin(0.6 * t), 0 * t], 1))
        cadence.operators.keys.keyframes.write_take(rig, ch, frame_start=1)
        cadence.operators.preview.stage(scene, rig, engine="WORKBENCH", size=480)
        scene.render.resolution_x, scene.render.resolution_y = 640, 480
        scene.frame_start, scene.frame_end = 1, n
        frames = dest.parent / f"bench_frames_{n}"
        frames.mkdir(parents=True, exist_ok=True)
        scene.render.filepath = str(frames / "f_")
        bpy.ops.render.render(animation=True)
        prefs = cadence.operators.prefs.get_preferences()
        prefs.cache_dir = str(dest.parent)
        model_file.write_text(cadence.operators.landmarks.ensure_landmark_embedding(rig, bpy.context))
    finally:
        blender_session.disable_cadence()
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-framerate", "25", "-i",
                    str(frames / "f_%04d.png"), "-pix_fmt", "yuv420p", str(dest)], check=True)
    return str(dest)


if __name__ == "__main__":
    raise SystemExit(main())
