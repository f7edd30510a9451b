"""Quality a user can check on their own footage: ``./cadence eval persona CLIP... [--holdout F | --leave-one-out]``
``./cadence eval refiner CLIP...`` (``tools/eval_refiner.py``), ``./cadence eval refiner-truth``
(``tools/eval_refiner_truth.py``) and ``./cadence eval head`` (``tools/eval_head.py``).

persona: tracks each clip onto the default head (its landmark calibration the first time, a few
minutes; tracked clips are cached), then either leaves one clip out at a time (several clips, the
default) or holds out the last ``--holdout`` of each clip, personalizes on the rest, generates from
the held-out audio in every persona mode and with the generic motion, and prints the table of
``inference/persona/evaluate.py`` (the person's truth, their own other footage, each mode, generic).
Writes DIR/persona_table.txt and DIR/persona_curves.png (--out, default ./cadence-eval).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402


def _file_key(path: Path, *extra: str) -> str:
    h = hashlib.blake2b(digest_size=10)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()


def tracked_clips(videos: list[Path], lens_mm: float | None, log=print) -> tuple[list, str]:
    """(evaluate.Clip per video, head hash): each video tracked onto the default head at its own rate."""
    scratch = blender_session.prepare()  # before bpy is imported
    import bpy

    from inference.audio.decode import load_audio
    from inference.heads.head_model import HeadModel
    from inference.persona import evaluate as ev
    from inference.protocol import Channels
    from inference.tracking import video as vid
    from inference.tracking.track import track_video

    cadence = blender_session.enable_cadence(scratch)
    bpy.ops.wm.read_homefile(use_empty=True)
    if bpy.ops.cadence.add_head() != {"FINISHED"}:
        raise RuntimeError("adding the default head failed")
    rig = bpy.context.active_object
    t0 = time.perf_counter()
    log("preparing the head for tracking (its landmark calibration takes a few minutes the first time) ...")
    steps = cadence.operators.track_video.tracking_head_steps(rig, bpy.context, str(videos[0]))
    head_file = cadence.operators.tracking.landmark_calibration.run_steps(steps)["head_file"]
    head = HeadModel.load(head_file)
    log(f"head ready ({time.perf_counter() - t0:.0f} s)")
    cache = Path(cadence.operators.prefs.cache_dir()) / "eval"
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for v in videos:
        fps = vid.probe(v).fps
        key = _file_key(v, head.content_hash(), f"{fps:.4f}", str(lens_mm))
        ch_file, wav = cache / f"{key}.npz", cache / f"{key}_audio16k.wav"
        if not (ch_file.is_file() and wav.is_file()):
            t1 = time.perf_counter()
            res = track_video(v, head, fps, audio_dir=cache, lens_mm=lens_mm)
            if not res.audio_file:
                raise RuntimeError(f"{v.name} has no audio track: the persona evaluation needs the voice")
            Path(res.audio_file).replace(wav)
            res.channels.save(ch_file)
            log(f"tracked {v.name}: {res.n_frames} frames at {fps:g} fps ({time.perf_counter() - t1:.0f} s)")
        clips.append(ev.Clip(v.stem, Channels.load(ch_file), load_audio(wav)))
    return clips, head.content_hash()


def eval_persona(args) -> int:
    from inference.motion.head_motion import head_pose_for_audio
    from inference.persona import evaluate as ev

    videos = [Path(c).resolve() for c in args.clips]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        print(f"eval persona: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if len(videos) < 2 and not args.holdout:
        args.holdout = 0.25  # one clip: hold out its tail
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clips, head_hash = tracked_clips(videos, args.lens_mm or None)
    t0 = time.perf_counter()
    if args.holdout:
        folds = []
        for c in clips:
            train, held = ev.split_tail(c, args.holdout)
            others = [train] + [o for o in clips if o is not c]
            folds.append(ev.run_fold(others, held, head_hash, seed=args.seed, epochs=args.epochs,
                                      generic=head_pose_for_audio))
    else:
        folds = ev.leave_one_out(clips, head_hash, seed=args.seed, epochs=args.epochs, generic=head_pose_for_audio)
    text = ev.format_table(folds)
    print(text)
    (out / "persona_table.txt").write_text(text)
    png = ev.plot(folds, str(out / "persona_curves.png"))
    print(f"{len(folds)} folds in {time.perf_counter() - t0:.0f} s; table and plot: {out / 'persona_table.txt'}, {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cadence eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("persona", help="how well a persona moves like the person on held-out audio")
    p.add_argument("clips", nargs="+", help="videos of one person talking")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--holdout", type=float, default=0.0, help="hold out this fraction of each clip's end")
    split.add_argument("--leave-one-out", action="store_true", help="hold out one clip at a time (the default)")
    p.add_argument("--out", default="cadence-eval", help="folder for the table and the plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=100, help="persona network training passes")
    p.add_argument("--lens-mm", type=float, default=0.0, help="the camera's focal length when known")
    from tools import eval_head, eval_refiner, eval_refiner_truth

    eval_refiner.add_parser(sub)
    eval_refiner_truth.add_parser(sub)
    eval_head.add_parser(sub)
    args = ap.parse_args(argv)
    if args.what == "head":
        return eval_head.eval_head(args)
    if args.what == "refiner":
        return eval_refiner.eval_refiner(args)
    if args.what == "refiner-truth":
        return eval_refiner_truth.eval_truth(args)
    if args.holdout and not 0.05 <= args.holdout <= 0.5:
        ap.error("--holdout must be between 0.05 and 0.5")
    return eval_persona(args)


if __name__ == "__main__":
    sys.exit(main())
