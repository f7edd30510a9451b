"""Benchmark: persona fine-tune time and persona inference real-time factor (full network size).

    .venv/bin/python bench/bench_persona.py [--frames 300] [--epochs 100] [--threads N] [--device cpu|cuda]

Synthetic data (tone audio, pose driven by pitch): the figures are about speed, not quality.
Early stopping is disabled so every epoch runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.audio import features as audio_features
from inference.persona import persona, pose_net, train_pose  # noqa: E402
from inference.protocol import Channels  # noqa: E402

SR = 16000


def synthetic_clip(frames: int, fps: float, n_expr: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(np.ceil(frames / fps * SR))
    seg = int(0.4 * SR)
    f = np.repeat(rng.choice([220.0, 440.0, 880.0], size=n // seg + 1), seg)[:n]
    y = (0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.003 * rng.standard_normal(n)).astype(np.float32)
    level = np.log2(f[(np.arange(frames) / fps * SR).astype(int)] / 220.0)
    ch = Channels(fps=fps, n_frames=frames, expr_names=tuple(f"expr_{i:03d}" for i in range(n_expr)))
    ch.set("expression", np.outer(level, rng.normal(0, 0.5, n_expr)))
    ch.set("jaw", np.outer(level, [0.1, 0, 0]))
    ch.set("head_rotation", np.outer(level, [0.05, 0.02, 0]) + 0.05 * np.sin(np.arange(frames) / fps * 2.5)[:, None])
    ch.set("head_translation", np.outer(level, [0, 0.005, 0]))
    return ch, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--n-expr", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--audio-seconds", type=float, default=60.0, help="length of the inference test audio")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")

    ch, y = synthetic_clip(args.frames, args.fps, args.n_expr)
    cfg = pose_net.NetConfig(n_expr=args.n_expr)
    n_params = sum(p.numel() for p in pose_net.build(cfg).parameters())
    t0 = time.perf_counter()
    feats = audio_features.frame_windows(y, args.fps, n_frames=args.frames)
    t_feat = time.perf_counter() - t0
    g_state, _ = train_pose.train(feats, train_pose.targets_from_channels(ch), cfg, epochs=1, seq_len=32,
                                  device=args.device)  # a stand-in "general model" to fine-tune from
    general = {"net_config": cfg.to_dict(), "net_state": g_state, "expr_names": list(ch.expr_names),
               "feature_config": audio_features.FeatureConfig().to_dict()}
    t0 = time.perf_counter()
    p = persona.personalize(ch, y, head_hash="bench", general=general, n_frames=args.frames, epochs=args.epochs,
                            seq_len=32, patience=args.epochs, device=args.device)
    t_tune = time.perf_counter() - t0
    epochs_run = p.history["epochs_run"]

    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(int(args.audio_seconds * SR))).astype(np.float32)
    persona.generate_pose(p, audio[:SR], 30.0)  # warm-up
    rows = []
    for mode in persona.MODES:
        t0 = time.perf_counter()
        persona.generate_pose(p, audio, 30.0, mode=mode)
        dt = time.perf_counter() - t0
        rows.append((mode, dt, dt / args.audio_seconds))

    print(f"network: {n_params / 1e6:.2f} M parameters (E={args.n_expr}, LSTM 3x256)")
    print(f"features: {args.frames} frames in {t_feat * 1000:.1f} ms")
    print(f"fine-tune: {args.frames} frames x {epochs_run} epochs (of {args.epochs}) in {t_tune:.1f} s "
          f"({t_tune / max(epochs_run, 1):.2f} s/epoch, stopped early: {p.history['stopped_early']})")
    for mode, dt, rtf in rows:
        print(f"generate ({mode}): {args.audio_seconds:.0f} s of audio in {dt:.2f} s, real-time factor {rtf:.4f}")


if __name__ == "__main__":
    main()
