"""The README's demo: Cadence's default head animated from a speech clip, saved and rendered.

    ./cadence demo [--out DIR] [--size PX] [--engine WORKBENCH|EEVEE] [--audio FILE --transcript TEXT]

Writes DIR/cadence_demo.blend (the animated scene), DIR/cadence_demo.mp4 (a preview rendered by
Blender, with the audio) and DIR/contact_sheet.png (closed mouth, widest open mouth, a blink).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402

DEMO_AUDIO = ROOT / "assets" / "demo_line.ogg"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"), help="output folder")
    ap.add_argument("--size", type=int, default=320, help="preview resolution in pixels (square)")
    ap.add_argument("--engine", default="WORKBENCH", choices=("WORKBENCH", "EEVEE"),
                    help="preview engine (Eevee looks better, Workbench is ~20x faster here)")
    ap.add_argument("--audio", default=str(DEMO_AUDIO), help="speech to animate")
    ap.add_argument("--transcript", default=None, help="what is said (default: the demo clip's transcript)")
    ap.add_argument("--no-video", action="store_true", help="skip the mp4 (the .blend and contact sheet only)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    transcript = args.transcript
    if transcript is None and Path(args.audio) == DEMO_AUDIO:
        transcript = (ROOT / "assets" / "demo_line.transcript.txt").read_text().strip()

    scratch = blender_session.prepare()
    import bpy

    t0 = time.perf_counter()
    cadence = blender_session.enable_cadence(scratch)
    try:
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        scene.render.fps, scene.render.fps_base = 24, 1.0
        if bpy.ops.cadence.add_head() != {"FINISHED"}:
            print("demo: adding the default head failed", file=sys.stderr)
            return 1
        rig = bpy.context.active_object
        print(f"demo: default head added ({time.perf_counter() - t0:.1f} s)")
        result = bpy.ops.cadence.generate(filepath=args.audio, transcript=transcript or "", frame_start=1)
        if result != {"FINISHED"}:
            print(f"demo: generation failed: {scene.cadence.last_error}", file=sys.stderr)
            return 1
        print(f"demo: {scene.cadence.status} ({time.perf_counter() - t0:.1f} s)")

        cadence.operators.preview.stage(scene, rig, engine=args.engine, size=args.size)
        blend = out / "cadence_demo.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), check_existing=False)
        print(f"demo: saved {blend}")

        shots = pick_shots(scene, rig)
        sheet = contact_sheet(scene, out / "contact_sheet.png", shots)
        print(f"demo: contact sheet {sheet} (frames {shots})")
        if not args.no_video:
            mp4 = out / "cadence_demo.mp4"
            cadence.operators.preview.set_video_output(scene, str(mp4))
            bpy.ops.render.render(animation=True)
            print(f"demo: preview video with sound {mp4}")
        print(f"demo: done in {time.perf_counter() - t0:.1f} s")
        return 0
    finally:
        cadence.operators.worker.session.shutdown_client()
        blender_session.disable_cadence()


def pick_shots(scene, rig) -> dict[str, int]:
    """Frames worth a look: mouth closed, mouth widest open, and a blink."""
    import bpy

    mesh = bpy.data.objects[rig["cadence"]["mesh"]]
    blink = mesh.data.shape_keys.key_blocks.get("eyeBlink_L")
    jaw, lids = [], []
    frames = range(scene.frame_start, scene.frame_end + 1)
    for f in frames:
        scene.frame_set(f)
        jaw.append(rig.pose.bones["jaw"].rotation_euler[0])
        lids.append(blink.value if blink else 0.0)
    shots = {"mouth closed": frames[min(range(len(jaw)), key=lambda i: abs(jaw[i]))],
             "mouth open": frames[max(range(len(jaw)), key=lambda i: abs(jaw[i]))]}
    if max(lids) > 0.5:
        shots["blink"] = frames[max(range(len(lids)), key=lids.__getitem__)]
    return shots


def contact_sheet(scene, dest: Path, shots: dict[str, int]) -> Path:
    """Render the named frames and place them side by side in one PNG."""
    import bpy
    import numpy as np

    tiles = []
    for label, frame in shots.items():
        scene.frame_set(min(max(frame, scene.frame_start), scene.frame_end))
        tmp = dest.with_name(f"_{label.replace(' ', '_')}.png")
        scene.render.filepath = str(tmp)
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(str(tmp), check_existing=False)
        w, h = img.size
        px = np.empty(w * h * 4, dtype=np.float32)
        img.pixels.foreach_get(px)
        tiles.append(px.reshape(h, w, 4))
        bpy.data.images.remove(img)
        tmp.unlink()
    sheet = np.concatenate(tiles, axis=1)
    h, w = sheet.shape[:2]
    out = bpy.data.images.new("contact_sheet", width=w, height=h, alpha=True)
    out.pixels.foreach_set(sheet.ravel())
    out.filepath_raw = str(dest)
    out.file_format = "PNG"
    out.save()
    bpy.data.images.remove(out)
    return dest


if __name__ == "__main__":
    sys.exit(main())
