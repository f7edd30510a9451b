"""Cadence headless batch: audio files (or folders of them) -> animated .blend files.

With Blender (Cadence installed as an extension):
    blender -b [base.blend] --python <cadence extension folder>/cadence_batch.py -- AUDIO... --out DIR [options]
From a source checkout (bpy module):
    ./cadence batch AUDIO... --out DIR [options]

Without a base .blend (or one with no Cadence head) the default head is added (or --head FILE).
Exit status: 0 when every file succeeded, 1 when any failed (each failure is reported, the rest go on).

Personalization (same launchers):
    ... track VIDEO --out DIR                  track a video: <video>_track.blend with the take, camera, sound
    ... personalize VIDEO... --persona-out FILE   learn a persona (head-motion style) from videos of the person
    ... AUDIO... --out DIR --persona FILE      generate with head motion in the persona's style

Photoreal video (stage 2, same launchers):
    ... train-refiner TRACKED.blend --refiner-out FILE   train the refiner on the .blend's tracked video
    ... refine TAKE.blend --video-out FILE [--refiner FILE]   the .blend's take -> photoreal mp4 with its sound
    ... photoreal VIDEO AUDIO --out DIR        all in one: track, persona, refiner, take, mp4
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

STAGE2 = ("train-refiner", "refine", "photoreal")


def _scene_options(ap: argparse.ArgumentParser) -> None:
    """Where each job starts from: shared by every batch command."""
    ap.add_argument("--head", default="", help="FLAME .pkl/.npz head to use when the scene has no Cadence head")
    ap.add_argument("--base", default="", help="base .blend to start from (default: the opened file)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cadence_batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("audio", nargs="+", help="audio files and/or folders of audio files")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--single-blend", action="store_true",
                    help="one .blend with a take (action) per file instead of one .blend per file")
    _scene_options(ap)
    ap.add_argument("--frame-start", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview", action="store_true", help="also render a low-resolution mp4 with sound per file")
    ap.add_argument("--preview-size", type=_preview_size, default=256, help="pixels (square), 16 to 4096")
    ap.add_argument("--persona", default="", help="persona file (from `personalize`) for the head motion style")
    ap.add_argument("--persona-mode", choices=("match", "network", "retrieve"), default="match")
    return ap


def _preview_size(text: str) -> int:
    size = int(text)
    if not 16 <= size <= 4096:
        raise argparse.ArgumentTypeError(f"{size} is not between 16 and 4096")
    return size


def _track_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cadence_batch track", description="Track a video onto the Cadence head")
    ap.add_argument("video")
    ap.add_argument("--out", required=True, help="output folder (gets <video>_track.blend)")
    _scene_options(ap)
    ap.add_argument("--frame-start", type=int, default=1)
    ap.add_argument("--no-background", action="store_true", help="do not show the video behind the camera")
    _lens_option(ap)
    return ap


def _lens_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--lens-mm", type=float, default=0.0,
                    help="the video camera's focal length (35 mm equivalent) when known; default: estimated")


def _personalize_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cadence_batch personalize",
                                 description="Learn a persona from one or more videos of the same person")
    ap.add_argument("video", nargs="+")
    ap.add_argument("--persona-out", required=True, help="persona file to write (e.g. me.persona.pt)")
    _scene_options(ap)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--frames", type=int, default=300, help="frames to learn from (0: all)")
    ap.add_argument("--general", default="", help="general model to fine-tune (optional)")
    _lens_option(ap)
    return ap


def _refiner_options(ap: argparse.ArgumentParser, train: bool = True) -> None:
    if train:
        ap.add_argument("--minutes", type=float, default=10.0, help="refiner training time budget")
        ap.add_argument("--size", type=int, choices=(64, 128, 256), default=128, help="crop size (256 on a GPU)")
    ap.add_argument("--samples", type=int, default=8, help="Eevee samples per rendered frame")


def _stage2_parser(command: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"cadence_batch {command}")
    if command == "train-refiner":
        ap.description = "Train the photoreal refiner on a tracked .blend's video (saves the .blend)"
        ap.add_argument("blend", help="a .blend with a tracked head (from `track`)")
        ap.add_argument("--refiner-out", required=True, help="refiner file to write (e.g. me.refiner.pt)")
        _refiner_options(ap)
    elif command == "refine":
        ap.description = "Refine the take a .blend plays into a photoreal mp4"
        ap.add_argument("blend", help="a .blend with a tracked head, a take and a trained refiner")
        ap.add_argument("--video-out", required=True, help="the mp4 to write")
        ap.add_argument("--refiner", default="", help="refiner file (default: the one the .blend records)")
        _refiner_options(ap, train=False)
    else:
        ap.description = "A clip of the person and new audio -> a photoreal mp4 of them saying it"
        ap.add_argument("video")
        ap.add_argument("audio")
        ap.add_argument("--out", required=True, help="output folder (persona, refiner, .blend, mp4)")
        ap.add_argument("--head", default="", help="FLAME .pkl/.npz head (default: Cadence's own head)")
        _refiner_options(ap)
        _lens_option(ap)
    return ap


def _run_stage2(command: str, argv: list[str], cadence) -> int:
    args = _stage2_parser(command).parse_args(argv)
    batch = cadence.operators.refiner.batch
    try:
        if command == "train-refiner":
            batch.run_train_refiner(args.blend, args.refiner_out, args.minutes, args.size, args.samples)
        elif command == "refine":
            batch.run_refine(args.blend, args.video_out, args.refiner, args.samples)
        else:
            batch.run_photoreal(args.video, args.audio, args.out, args.minutes, args.size, args.samples,
                                head_file=args.head, lens_mm=args.lens_mm)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"Cadence {command}: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_command(command: str, argv: list[str], cadence, bpy) -> int:
    if command in STAGE2:
        return _run_stage2(command, argv, cadence)
    args = (_track_parser() if command == "track" else _personalize_parser()).parse_args(argv)
    batch = cadence.operators.batch
    base = args.base or (bpy.data.filepath if bpy.data.filepath else "")
    try:
        if command == "track":
            batch.run_track(args.video, args.out, head_file=args.head, base_blend=base,
                            frame_start=args.frame_start, show_background=not args.no_background,
                            lens_mm=args.lens_mm)
        else:
            batch.run_personalize(args.video, args.persona_out, head_file=args.head, base_blend=base,
                                  epochs=args.epochs, n_frames=args.frames, general=args.general,
                                  lens_mm=args.lens_mm)
    except (RuntimeError, OSError, ValueError) as exc:  # TrackVideoError, WorkerError...: the reason, no traceback
        print(f"Cadence {command}: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


def _cadence_package():
    """The enabled Cadence extension (inside Blender), or this checkout enabled as one (bpy module)."""
    import addon_utils

    for mod in addon_utils.modules():
        name = mod.__name__
        if name.endswith(".cadence") and name.startswith("bl_ext.") and addon_utils.check(name)[1]:
            return importlib.import_module(name), None
    root = Path(__file__).resolve().parent
    tools = root / "tools" / "blender_session.py"
    if not tools.is_file():
        raise SystemExit("Cadence is not enabled in this Blender: install and enable the Cadence extension first.")
    sys.path.insert(0, str(root))
    from tools import blender_session

    return blender_session.enable_cadence(blender_session.prepare()), blender_session


def main(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in ("track", "personalize", *STAGE2) else ""
    args = None if command else _parser().parse_args(argv)
    if args is not None and args.persona and not Path(args.persona).is_file():
        print(f"Cadence batch: persona file not found: {args.persona}", file=sys.stderr)
        return 1
    if "bpy" not in sys.modules:  # plain Python with the bpy module: set up the scratch profile first
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from tools import blender_session

        blender_session.prepare()
    import bpy

    cadence, session = _cadence_package()
    try:
        if command:
            return _run_command(command, argv[1:], cadence, bpy)
        batch = cadence.operators.batch
        files = batch.collect_audio(args.audio)
        if not files:
            print("Cadence batch: no audio files found in " + ", ".join(args.audio), file=sys.stderr)
            return 1
        base = args.base or (bpy.data.filepath if bpy.data.filepath else "")
        try:
            result = batch.run_batch(files, args.out, per_file_blend=not args.single_blend, head_file=args.head,
                                     base_blend=base, frame_start=args.frame_start, seed=args.seed,
                                     preview=args.preview, preview_size=args.preview_size,
                                     persona=str(Path(args.persona).resolve()) if args.persona else "",
                                     persona_mode=args.persona_mode)
        except ValueError as exc:  # the batch as a whole cannot run (its output folder, its base scene)
            print(f"Cadence batch: {exc}", file=sys.stderr)
            return 1
        return 1 if result.failed else 0
    finally:
        cadence.operators.worker.session.shutdown_client()
        if session is not None:
            session.disable_cadence()


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(argv))
