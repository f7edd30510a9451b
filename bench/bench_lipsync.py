"""Lip-engine benchmark: 60 s of real speech (the shared LibriSpeech fixtures, concatenated) through
decode, recognition, curves and head motion; prints per-stage times, real-time factor and peak memory.

Run: .venv/bin/python bench/bench_lipsync.py [--fps 30] [--head default|synthetic]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--head", choices=("synthetic", "default"), default="synthetic")
    args = ap.parse_args()
    import numpy as np
    import soundfile as sf

    from inference import animate, audio

    fixtures = sorted((ROOT.parent / "shared" / "fixtures" / "speech").glob("*.ogg"))
    if not fixtures:
        sys.exit("no speech fixtures at ../shared/fixtures/speech")
    x = np.concatenate([audio.load_audio(f) for f in fixtures])
    x = np.tile(x, int(np.ceil(60 * 16_000 / x.size)))[: 60 * 16_000]
    if args.head == "default":
        from inference.default_head import build_default_head

        head = build_default_head()
    else:
        import synthetic_head

        head = synthetic_head.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech60.flac"
        sf.write(path, x, 16_000)
        t = time.perf_counter()
        ch = animate.animate_audio(str(path), head, args.fps)
        total = time.perf_counter() - t
    dur = x.size / 16_000
    print(f"audio {dur:.1f} s, head {head.name} ({head.n_vertices} verts), fps {args.fps}, engine {ch.meta['engine']}, "
          f"{ch.meta['phones']} phones")
    for stage, s in ch.meta["timings"].items():
        print(f"  {stage:12s} {s:7.3f} s   RTF {s / dur:.4f}")
    print(f"  {'total':12s} {total:7.3f} s   RTF {total / dur:.4f}  ({dur / total:.0f}x real time)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
