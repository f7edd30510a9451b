"""End to end: speech -> keyframes on the default head, through the real worker (issue 3's figures).

    .venv/bin/python bench/bench_generate.py [--seconds 60] [--hour]

Prints, measured in this one run: worker cold start (launch -> handshake), per-stage times of a
warm generation (decode, recognition, curves, head motion in the worker; transfer of the take;
keyframe writing in Blender), the end-to-end real-time factor, and the worker's peak memory
(VmHWM) for the clip and, with --hour, for one hour of audio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "speech"


def speech(seconds: float, sr: int = 16_000) -> np.ndarray:
    """Real speech (the shared LibriSpeech clips, looped) or the project's demo line when absent."""
    import soundfile as sf
    from scipy.signal import resample_poly

    sources = sorted(FIXTURES.glob("*.ogg")) or [ROOT / "assets" / "demo_line.ogg"]
    pieces, total = [], 0
    while total < seconds * sr:
        for src in sources:
            x, rate = sf.read(src, dtype="float32", always_2d=True)
            x = resample_poly(x.mean(axis=1), sr, rate).astype(np.float32)
            pieces += [x, np.zeros(int(0.4 * sr), np.float32)]
            total += len(x) + int(0.4 * sr)
    return np.concatenate(pieces)[: int(seconds * sr)]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--hour", action="store_true", help="also generate from 1 h of audio (minutes of CPU)")
    args = ap.parse_args()
    import soundfile as sf

    tmp = Path(tempfile.mkdtemp(prefix="cadence-bench-"))
    clip = tmp / "speech.wav"
    sf.write(clip, speech(args.seconds), 16_000)

    scratch = blender_session.prepare()
    import bpy

    cadence = blender_session.enable_cadence(scratch)
    wc = cadence.operators.worker.session
    try:
        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.context.scene.render.fps = 30
        assert bpy.ops.cadence.add_head() == {"FINISHED"}
        rig = bpy.context.active_object

        wc.shutdown_client()
        t0 = time.perf_counter()
        client = wc.get_client(bpy.context)
        client.run_sync("ping", {})
        cold = time.perf_counter() - t0
        # Warm-up job: the worker loads its modules once, as it would for a user's first take.
        gen = cadence.operators.generate
        opts = {"groups": set(gen.GROUP_SETS), "frame_start": 1, "mode": "NEW", "set_frame_range": True,
                "add_sound": False, "take_name": "warmup", "reduce_tolerance": None}
        params = {"audio": str(clip), "transcript": None, "seed": 0, "lip_strength": 1.0,
                  "motion_amplitude": 1.0, "motion_speed": 1.0}
        warm = gen.GenerateJob(bpy.context, params, opts)
        warm.run_sync()

        job = gen.GenerateJob(bpy.context, params, dict(opts, take_name="bench"))
        t_all = time.perf_counter()
        job.run_sync()
        t_worker = time.perf_counter() - t_all
        t1 = time.perf_counter()
        channels = cadence.inference.protocol.Channels.load(job.result["channels_file"])
        t_transfer = time.perf_counter() - t1
        t2 = time.perf_counter()
        cadence.operators.keys.keyframes.write_take(rig, channels, frame_start=1, take_name="bench2")
        t_write = time.perf_counter() - t2
        total = time.perf_counter() - t_all
        stages = job.result.get("timings", {})
        print(f"audio: {args.seconds:.0f} s of speech at 30 fps, {channels.n_frames} frames, "
              f"{len(channels.expr_names)} expression channels")
        print(f"worker cold start (launch -> handshake -> ping): {cold:.2f} s   (goal <= 5 s)")
        for name, sec in stages.items():
            print(f"  worker stage {name:<14} {sec:7.3f} s")
        print(f"  worker job round trip      {t_worker:7.3f} s (includes the stages above + protocol)")
        print(f"  transfer (load the take)   {t_transfer:7.3f} s")
        print(f"  keyframe write             {t_write:7.3f} s")
        print(f"end to end {total:.2f} s -> {args.seconds / total:.1f}x real time   (goal >= 10x)")
        print(f"worker peak memory (VmHWM) after {args.seconds:.0f} s: {peak_rss_mib(client.pid):.0f} MiB")

        if args.hour:
            long = tmp / "hour.wav"
            with sf.SoundFile(long, "w", 16_000, 1, subtype="PCM_16") as fh:
                block = speech(60.0)
                for _ in range(60):
                    fh.write(block)
            wc.shutdown_client()
            client = wc.get_client(bpy.context)
            t3 = time.perf_counter()
            hour = gen.GenerateJob(bpy.context, dict(params, audio=str(long)), dict(opts, take_name="hour"))
            hour.run_sync()
            print(f"1 h of audio: worker {time.perf_counter() - t3:.0f} s, "
                  f"peak memory (VmHWM) {peak_rss_mib(client.pid):.0f} MiB, error: {hour.error}")
        return 0
    finally:
        wc.shutdown_client()
        blender_session.disable_cadence()


if __name__ == "__main__":
    sys.exit(main())
