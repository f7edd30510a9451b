"""Benchmark: the refiner's training iterations/s and refine fps at 128² and 256² (and peak memory).

    .venv/bin/python bench/bench_refiner.py [--sizes 128 256] [--iters 10] [--frames 48] [--device cpu|cuda]

Random crops (the figures are about speed): training runs ``--iters`` iterations of batch 4 after one
warm-up; refine runs the generator + memory read over ``--frames`` crops. On CUDA the same (bfloat16
autocast when training), with the GPU's peak memory. The goal on a GPU is >= 60 fps refine at 256².
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.refiner import refine, train  # noqa: E402
from inference.refiner.networks import RefinerConfig  # noqa: E402


def crops(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rc = rng.random((n, size, size, 8)).astype(np.float16)  # render RGBA, textured render RGBA
    rc[..., 3] = rc[..., 7] = rc[..., 3] > 0.3
    return rc, rng.random((n, size, size, 3)).astype(np.float16)


def bench(size: int, iters: int, frames: int, device: str) -> dict:
    cfg = RefinerConfig(size=size).check()
    nets = train.Nets.new(cfg)
    rc, real = crops(max(frames, 20), size)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train.train(nets, rc, real, max_iters=1, device=device, eval_every_s=1e9)  # warm-up
    t0 = time.perf_counter()
    train.train(nets, rc, real, max_iters=0, device=device, eval_every_s=1e9)  # its validation passes alone
    t_val = time.perf_counter() - t0
    t0 = time.perf_counter()
    hist = train.train(nets, rc, real, max_iters=iters, device=device, eval_every_s=1e9)
    t_train = time.perf_counter() - t0 - t_val
    refine.refine_crops(nets, rc[:8], 25.0, device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    refine.refine_crops(nets, rc[:frames], 25.0, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t_refine = time.perf_counter() - t0
    out = {"size": size, "it_per_s": hist["iterations"] / t_train, "refine_fps": frames / t_refine,
           "params_g": sum(p.numel() for p in nets.generator.parameters()) / 1e6}
    if device.startswith("cuda"):
        out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch 4 (validation passes excluded)")
    rows = [bench(s, args.iters, args.frames, args.device) for s in args.sizes]
    for r in rows:
        extra = f", GPU peak {r['gpu_peak_mib']:.0f} MiB" if "gpu_peak_mib" in r else ""
        print(f"{r['size']:>4}²  generator {r['params_g']:.2f} M params: training {r['it_per_s']:.2f} it/s, "
              f"refine {r['refine_fps']:.1f} fps{extra}")
    if len(rows) > 1:
        print(f"ratio {rows[0]['size']}² / {rows[-1]['size']}²: training {rows[0]['it_per_s'] / rows[-1]['it_per_s']:.2f}×, "
              f"refine {rows[0]['refine_fps'] / rows[-1]['refine_fps']:.2f}×")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
