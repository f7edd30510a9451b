"""A general refiner from a folder of tracked clips, to fine-tune per person (``init_refiner``).

    python -m inference.refiner.general CLIPS_DIR --out general.refiner.pt [--minutes 60] [--size 128]

``CLIPS_DIR`` holds one sub-folder per clip with ``video.mp4`` (or any video file) and ``renders/`` (its
tracked take rendered by ``cadence.render_frames`` / Train Refiner's render step: the same tracker and head
for every clip). Each clip's texture is painted from its own training frames (a general refiner sees many
people; fine-tuning paints the new person's). The last 20 % of the last clip is held out for validation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import frames, pairs, texture, train
from .networks import RefinerConfig

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


def find_clips(folder: Path) -> list[tuple[Path, Path]]:
    """(renders folder, video) of each clip sub-folder, sorted by name."""
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        videos = sorted(p for p in sub.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if (sub / "renders" / frames.MANIFEST).is_file() and videos:
            out.append((sub / "renders", videos[0]))
    return out


def train_general(clips: list[tuple[Path, Path]], out: str, minutes: float, size: int, device: str = "cpu",
                  seed: int = 0, log=print) -> dict:
    if not clips:
        raise train.RefinerError("no clips: each needs a sub-folder with a video and renders/manifest.json")
    data = []
    for renders_dir, video in clips:
        renders = frames.load_renders(str(renders_dir))
        projector = texture.Projector(renders.geometry()[1]) if renders.has_geometry else None
        tr, _ = train.split(len(renders))
        d = pairs.training_pairs(str(renders_dir), str(video), 0, size, projector=projector, project_frames=tr)
        if projector is None:
            raise train.RefinerError(f"{renders_dir} carries no head geometry: render it again")
        pairs.add_textured(d.renders, d.boxes, d.render_crops, projector.result()[0])
        data.append(d)
        log(f"{video.name}: {len(d.renders)} frames")
    rc = np.concatenate([d.render_crops for d in data])
    real = np.concatenate([d.real_crops for d in data])
    clip_of = np.concatenate([np.full(len(d.renders), i) for i, d in enumerate(data)])
    _tr, val = train.split(len(data[-1].renders))
    held = val + len(rc) - len(data[-1].renders)
    nets = train.Nets.new(RefinerConfig(size=size).check(), seed=seed)
    # A neutral grey texture: a general refiner is not one person (fine-tuning paints the new person's).
    nets.texture = np.full((len(data[-1].renders.geometry()[1]), 3), 0.5, np.float32)
    hist = train.train(nets, rc, real, max_minutes=minutes, device=device, seed=seed, held_out=held,
                       clip_of=clip_of, progress=lambda f, m: log(m) if int(f * 1000) % 50 == 0 else None)
    train.save(nets, out, data[-1].renders.head_hash, data[-1].clip_record(), hist)
    log(f"general refiner {out}: {hist['iterations']} iterations, held-out PSNR {hist['val_psnr'][0]:.2f} -> "
        f"{hist['val_psnr'][-1]:.2f} dB")
    return hist


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference.refiner.general", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        train_general(find_clips(Path(args.clips_dir)), args.out, args.minutes, args.size, device, args.seed)
    except (train.RefinerError, frames.FramesError) as exc:
        print(f"general refiner: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
