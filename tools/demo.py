"""The README's demo: Cadence's default head, keyed through a short sequence, saved and rendered.

    ./cadence demo [--out DIR] [--frames N] [--size PX] [--engine EEVEE|WORKBENCH]

Writes DIR/cadence_demo.blend, DIR/preview/frame_####.png and DIR/cadence_demo.mp4 (when ffmpeg is
available), plus DIR/contact_sheet.png: neutral, mouth open, smile and blink side by side.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402


def demo_channels(protocol, expr_names: tuple[str, ...], fps: float = 24.0):
    """A 3-second performance: look around, open/close the jaw, smile, blink, pucker."""
    import numpy as np

    n = int(round(3 * fps))
    t = np.arange(n) / fps
    E = len(expr_names)

    def bump(center: float, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((t - center) / width) ** 2)

    expr = np.zeros((n, E))
    for name, center, width, amount in (
        ("mouthSmile_L", 1.6, 0.25, 0.9), ("mouthSmile_R", 1.6, 0.25, 0.9),
        ("mouthPucker", 2.5, 0.15, 0.8), ("browInnerUp", 0.7, 0.25, 0.7),
    ):
        if name in expr_names:
            expr[:, expr_names.index(name)] = amount * bump(center, width)
    jaw = np.zeros((n, 3))
    jaw[:, 0] = 0.28 * (bump(0.6, 0.18) + 0.6 * bump(2.05, 0.1))
    head_rot = np.zeros((n, 3))
    head_rot[:, 1] = 0.25 * np.sin(2 * math.pi * t / 3.0)  # turn
    head_rot[:, 0] = 0.06 * np.sin(2 * math.pi * t / 1.5)  # nod
    eyes = np.zeros((n, 2, 3))
    eyes[:, :, 1] = -0.5 * head_rot[:, 1:2]  # eyes counter the head turn a little
    lids = np.zeros((n, 2))
    lids[:, :] = bump(1.15, 0.05)[:, None]
    ch = protocol.Channels(fps=fps, n_frames=n, expr_names=expr_names, meta={"producer": "demo"})
    ch.set("expression", expr)
    ch.set("jaw", jaw)
    ch.set("head_rotation", head_rot)
    ch.set("head_translation", np.zeros((n, 3)))
    ch.set("eyes", eyes)
    ch.set("eyelids", lids)
    return ch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"), help="output folder")
    ap.add_argument("--size", type=int, default=320, help="preview resolution in pixels (square)")
    ap.add_argument("--every", type=int, default=2, help="render every Nth frame of the take")
    ap.add_argument("--engine", default="EEVEE", choices=("EEVEE", "WORKBENCH"))
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

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
        info = rig["cadence"]
        expr_names = tuple(info["expr_names"])
        channels = demo_channels(cadence.inference.protocol, expr_names)
        report = cadence.operators.keyframes.write_take(rig, channels, frame_start=1, take_name="Demo")
        scene.frame_start, scene.frame_end = 1, channels.n_frames
        print(f"demo: head with {len(expr_names)} expression controls; take written: {report}")

        cadence.operators.preview.stage(scene, rig, engine=args.engine, size=args.size)
        blend = out / "cadence_demo.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), check_existing=False)
        print(f"demo: saved {blend}")

        frames = list(range(scene.frame_start, scene.frame_end + 1, max(1, args.every)))
        preview = out / "preview"
        shutil.rmtree(preview, ignore_errors=True)
        preview.mkdir()
        for i, f in enumerate(frames):
            scene.frame_set(f)
            scene.render.filepath = str(preview / f"frame_{i:04d}.png")
            bpy.ops.render.render(write_still=True)
        print(f"demo: rendered {len(frames)} preview frames to {preview}")
        sheet = contact_sheet(scene, out / "contact_sheet.png", {
            "neutral": 1, "jaw open": 15, "blink": 28, "smile": 39, "pucker": 61,
        })
        print(f"demo: contact sheet {sheet}")
        mp4 = _encode_mp4(preview, out / "cadence_demo.mp4", fps=scene.render.fps / max(1, args.every))
        if mp4:
            print(f"demo: preview video {mp4}")
        print(f"demo: done in {time.perf_counter() - t0:.1f} s")
        return 0
    finally:
        blender_session.disable_cadence()


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


def _encode_mp4(frames_dir: Path, dest: Path, fps: float) -> Path | None:
    try:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - the mp4 is optional; the PNG frames are the preview
        ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        print("demo: no ffmpeg found, skipping the mp4 (the PNG frames are written)")
        return None
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", f"{fps:g}", "-i", str(frames_dir / "frame_%04d.png"),
           "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", str(dest)]
    subprocess.run(cmd, check=True)
    return dest


if __name__ == "__main__":
    sys.exit(main())
