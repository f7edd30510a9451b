"""Benchmark: personalization as users run it (the worker's "personalize" and "generate" jobs), full network.

    .venv/bin/python bench/bench_personalize.py [--frames 300] [--epochs 100] [--threads N] [--device cpu]

Data: the personalization test's synthetic target (tests/test_personalize.py: espeak-ng reading the
shared LibriSpeech transcripts with a known nodding style) on the default head (its expression count).
Figures: wall time of the personalize job for ``--frames`` frames (goal <= 120 s on CPU), the persona's
inference real-time factor on the held-out reading (network and retrieve modes; goal >= 200x), the
generate job's time with and without a persona, and peak memory (resident set of this process).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the worker runs (operators/worker/client.py)
import numpy as np  # noqa: E402
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="frames to learn from (the paper: 300 = 12 s)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    default_threads = torch.get_num_threads()
    import test_personalize as tp  # (pins torch to 1 thread for the tests: undone below)

    torch.set_num_threads(args.threads or default_threads)

    from inference.audio.decode import load_audio
    from inference.heads.default_head import cache_path, load_or_build
    from inference.heads.head_model import HeadModel
    from inference.persona import persona as ps
    from inference.protocol import Channels
    from inference.worker.generate import generate
    from inference.worker.personalize import personalize_job

    tmp = Path(tempfile.mkdtemp(prefix="cadence-bench-personalize-"))
    load_or_build(tmp)
    head_file = cache_path(tmp)
    head = HeadModel.load(head_file)
    texts = sorted((ROOT.parent / "shared" / "fixtures" / "speech").glob("*.txt"))
    if len(texts) < 3:
        print("needs the shared speech fixtures (../shared/fixtures/speech)", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    readings = [tp.read_aloud(p.read_text().strip(), seed=i) for i, p in enumerate(texts[:3])]
    train_audio, held_out = np.concatenate(readings[:2]), readings[2]
    n = tp.n_frames_of(train_audio)
    rot, trans = tp.target_style(train_audio, n)
    ch = Channels(fps=tp.FPS, n_frames=n, expr_names=head.expr_names)
    ch.set("expression", np.zeros((n, head.n_expr)))
    ch.set("jaw", np.zeros((n, 3)))
    ch.set("head_rotation", rot)
    ch.set("head_translation", trans)
    ch.save(tmp / "tracked.npz")
    sf.write(tmp / "train.wav", train_audio, tp.SR)
    sf.write(tmp / "held_out.wav", held_out, tp.SR)
    print(f"data: {n} tracked frames available, {len(held_out) / tp.SR:.1f} s held-out audio "
          f"(prepared in {time.perf_counter() - t0:.1f} s); head: {head.n_expr} expressions; "
          f"torch threads {torch.get_num_threads()}, device {args.device}")

    rss0 = peak_rss_mb()
    ctx = tp.Ctx(tmp)
    t0 = time.perf_counter()
    res = personalize_job({"channels_file": str(tmp / "tracked.npz"), "audio_file": str(tmp / "train.wav"),
                           "head_file": head_file, "persona_out": str(tmp / "bench.persona.pt"),
                           "epochs": args.epochs, "n_frames": args.frames, "device": args.device}, ctx)
    wall = time.perf_counter() - t0
    h = res["history"]
    per_epoch = h["seconds"] / max(1, h["epochs_run"])
    print(f"personalize job: {wall:.1f} s wall for {res['n_frames']} frames ({h['epochs_run']} epochs run of "
          f"{args.epochs}, early stop {h['stopped_early']}, {per_epoch:.2f} s/epoch -> "
          f"{per_epoch * args.epochs:.1f} s for all {args.epochs}); goal <= 120 s: "
          f"{'OK' if wall <= 120 else 'MISSED'}; held-out loss {res['held_out_loss']:.4f}")

    persona = ps.load_persona(res["persona_file"], head=head)
    audio = load_audio(tmp / "held_out.wav")
    dur = len(audio) / tp.SR
    # Both modes measured interleaved (same machine load for each), median of 5 runs each.
    modes = ps.MODES
    for mode in modes:
        ps.generate_pose(persona, audio[: tp.SR], tp.FPS, mode=mode)  # warm-up
    runs = {m: [] for m in modes}
    for _ in range(5):
        for mode in modes:
            t0 = time.perf_counter()
            ps.generate_pose(persona, audio, tp.FPS, mode=mode)
            runs[mode].append(time.perf_counter() - t0)
    for mode in modes:
        dt = float(np.median(runs[mode]))
        print(f"persona inference ({mode}): {dt * 1000:.0f} ms (median of 5, best {min(runs[mode]) * 1000:.0f} ms) "
              f"for {dur:.1f} s of audio = {dur / dt:.0f}x real time (goal >= 200x: {'OK' if dur / dt >= 200 else 'MISSED'})")

    times = {}
    for label, extra in (("generic", {}), ("persona", {"persona": res["persona_file"]})):
        generate({"audio": str(tmp / "held_out.wav"), "head_file": head_file, "fps": tp.FPS, **extra}, tp.Ctx(tmp))
        t0 = time.perf_counter()
        generate({"audio": str(tmp / "held_out.wav"), "head_file": head_file, "fps": tp.FPS, **extra}, tp.Ctx(tmp))
        times[label] = time.perf_counter() - t0
    print(f"generate job on {dur:.1f} s: generic {times['generic']:.2f} s ({dur / times['generic']:.0f}x), with persona "
          f"{times['persona']:.2f} s ({dur / times['persona']:.0f}x); persona adds "
          f"{times['persona'] - times['generic']:.2f} s")
    print(f"peak memory (RSS): {peak_rss_mb():.0f} MB (before training {rss0:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
