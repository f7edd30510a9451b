"""The general model: train the audio -> expression + pose network on a folder of tracked clips.

General model from a folder of tracked clips::

    python -m inference.persona.train_general --general DIR --out general.pt [--epochs 50] [--device cuda]

DIR holds one tracked clip per stem: ``NAME.npz`` (a Channels file, inference/protocol.py, from the
tracker) next to ``NAME.wav`` / ``.flac`` / ``.ogg`` (its audio, any rate, mixed to mono and
resampled to 16 kHz here). All clips must share the expression layout (same head). Sub-folders are
searched too.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..audio import features as audio_features
from ..protocol import Channels
from . import persona, pose_net, train_pose

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def read_audio_16k(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz from a wav/flac/ogg file."""
    import soundfile
    from scipy.signal import resample_poly

    try:
        y, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own error types
        raise train_pose.TrainingError(f"cannot read audio {path}: {exc}") from exc
    y = y.mean(axis=1)
    if sr != 16000:
        g = math.gcd(int(sr), 16000)
        y = resample_poly(y, 16000 // g, int(sr) // g).astype(np.float32)
    return y


def find_clips(folder: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for npz in sorted(Path(folder).rglob("*.npz")):
        audio = next((npz.with_suffix(s) for s in AUDIO_SUFFIXES if npz.with_suffix(s).exists()), None)
        if audio is not None:
            pairs.append((npz, audio))
    return pairs


def load_clips(folder: Path, feat_cfg: audio_features.FeatureConfig, log=print):
    feats, targs, expr_names = [], [], None
    for npz, audio in find_clips(folder):
        ch = Channels.load(npz)
        if expr_names is None:
            expr_names = ch.expr_names
        elif ch.expr_names != expr_names:
            log(f"skipping {npz.name}: different expression layout (another head?)")
            continue
        y = read_audio_16k(audio)
        feats.append(audio_features.frame_windows(y, ch.fps, feat_cfg, n_frames=ch.n_frames))
        targs.append(train_pose.targets_from_channels(ch))
        log(f"{npz.name}: {ch.n_frames} frames at {ch.fps:g} fps")
    if not feats:
        raise train_pose.TrainingError(f"no tracked clips (NAME.npz + NAME.wav/.flac/.ogg) found under {folder}")
    return feats, targs, expr_names


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference.persona.train_general", description=__doc__.split("\n\n")[0])
    ap.add_argument("--general", required=True, type=Path, help="folder of tracked clips (NAME.npz + NAME.wav)")
    ap.add_argument("--out", required=True, type=Path, help="where to write the general model (.pt)")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--hidden", type=int, default=256, help="LSTM hidden size")
    ap.add_argument("--layers", type=int, default=3, help="LSTM layers")
    ap.add_argument("--fc", type=int, default=256, help="size of the FC layer after the conv encoder")
    ap.add_argument("--conv", default="32,64,128", help="conv encoder channels, comma separated")
    args = ap.parse_args(argv)
    try:
        feat_cfg = audio_features.FeatureConfig()
        feats, targs, expr_names = load_clips(args.general, feat_cfg)
        fps = [Channels.load(p).fps for p, _ in find_clips(args.general)]
        cfg = pose_net.NetConfig.from_dict(
            {
                "n_expr": len(expr_names),
                "window_frames": feat_cfg.window_frames,
                "n_coef": feat_cfg.n_coef,
                "lstm_hidden": args.hidden,
                "lstm_layers": args.layers,
                "fc_dim": args.fc,
                "conv_channels": [int(c) for c in args.conv.split(",") if c.strip()],
            }
        )
        state, hist = train_pose.train(
            feats,
            targs,
            cfg,
            epochs=args.epochs,
            lr=args.lr,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            patience=args.patience,
            seed=args.seed,
            device=args.device,
            progress=lambda f, m: print(m, flush=True),
        )
        persona.save_general_model(
            args.out,
            state,
            cfg,
            feat_cfg,
            fps=float(np.median(fps)),
            expr_names=list(expr_names),
            seq_len=args.seq_len,
            meta={
                "n_clips": len(feats),
                "n_frames": int(sum(len(t) for t in targs)),
                "best_val_loss": float(hist["best_val_loss"]),
            },
        )
    except (train_pose.TrainingError, pose_net.PoseNetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (best held-out loss {hist['best_val_loss']:.4f} at epoch {hist['best_epoch'] + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
