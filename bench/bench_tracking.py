"""Tracking speed: landmarks (MediaPipe, tracking mode) and the batched fit, separately and in total.

    .venv/bin/python bench/bench_tracking.py VIDEO.mp4 [--fps 25] [--threads 2]

VIDEO: any clip with a face (e.g. the ground-truth render of tests/test_tracking.py, re-encoded to 640x480
with ffmpeg). Prints frames/s of each stage (goal: >= 60 fps total at 640x480 on 2 cores) and peak memory.
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
    ap.add_argument("video")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/cadence_bench_cache", help="default head cache folder")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from inference import video as vid
    from inference.default_head import load_or_build
    from inference.fit import fit_landmarks
    from inference.track import detect_video_landmarks

    torch.set_num_threads(args.threads)
    head = load_or_build(args.cache)
    info = vid.probe(args.video)
    t0 = time.perf_counter()
    lmk, _ = detect_video_landmarks(info, args.fps)
    t_lmk = time.perf_counter() - t0
    valid = np.isfinite(lmk[:, 0, 0])
    t1 = time.perf_counter()
    fit = fit_landmarks(head, lmk, valid, info.width, info.height, fit_eyes=True)
    t_fit = time.perf_counter() - t1
    n = len(lmk)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"video {info.width}x{info.height}, {n} frames at {args.fps:g} fps, {args.threads} threads")
    print(f"landmarks: {n / t_lmk:7.1f} fps ({t_lmk:.2f} s)")
    print(f"fit:       {n / t_fit:7.1f} fps ({t_fit:.2f} s, rms {fit.rms_px:.2f} px)")
    print(f"total:     {n / (t_lmk + t_fit):7.1f} fps; peak memory {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
