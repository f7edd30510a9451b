"""Benchmark: Cadence's bulk keyframe writer vs per-key keyframe_insert, side by side in one run.

    .venv/bin/python bench/bench_keyframes.py [--channels 100] [--frames 3000] [--insert-channels N]

Both methods animate the same shape-key values on one mesh (100 channels x 3,000 frames by default).
keyframe_insert runs in full by default (about 20 s here); --insert-channels N times it on N channels
at the full frame count and scales by the channel count: channels are independent curves, so that scaling is
linear, whereas per-curve cost grows faster than linearly with the key count (each insert reallocates
the curve's key array), so the frame count is never scaled down. Pass --insert-channels equal to
--channels (the default) to time it in full. Both results are read back and checked against the data. Also times the complete
write_take() of a take (100 expression channels + all bone channels) on a rig.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402


def _mesh_with_keys(bpy, name: str, n_keys: int):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    ob.shape_key_add(name="Basis")
    for k in range(n_keys):
        block = ob.shape_key_add(name=f"k{k:03d}")
        block.slider_min, block.slider_max = -10, 10
    return ob, mesh.shape_keys


def _values(np, n_channels: int, n_frames: int):
    t = np.arange(n_frames)[:, None] / 25.0
    k = np.arange(n_channels)[None, :]
    return 0.5 * np.sin(2 * np.pi * (0.2 + 0.01 * k) * t + k)  # (frames, channels)


def bench_writer(bpy, np, fc, n_channels, n_frames) -> tuple[float, object]:
    _, key = _mesh_with_keys(bpy, "writer", n_channels)
    vals = _values(np, n_channels, n_frames)
    frames = np.arange(1, n_frames + 1, dtype=np.float64)
    t0 = time.perf_counter()
    action = fc.ensure_action(key, "bench writer")
    for k in range(n_channels):
        curve = fc.ensure_fcurve(action, key, f'key_blocks["k{k:03d}"].value', 0, "Face")
        fc.write_keys(curve, frames, vals[:, k], "LINEAR")
    return time.perf_counter() - t0, key


def bench_insert(bpy, np, n_channels, n_frames) -> tuple[float, object]:
    _, key = _mesh_with_keys(bpy, "insert", n_channels)
    vals = _values(np, n_channels, n_frames)
    blocks = [key.key_blocks[f"k{k:03d}"] for k in range(n_channels)]
    t0 = time.perf_counter()
    for k, block in enumerate(blocks):
        col = vals[:, k].tolist()
        for f in range(n_frames):
            block.value = col[f]
            block.keyframe_insert("value", frame=f + 1)
    return time.perf_counter() - t0, key


def check(bpy, np, key, n_channels, n_frames) -> float:
    """Largest |value read back after frame_set - data| over a few frames and all channels."""
    vals = _values(np, n_channels, n_frames)
    blocks = [key.key_blocks[f"k{k:03d}"] for k in range(n_channels)]
    worst = 0.0
    for f in sorted({1, n_frames // 2, n_frames}):
        bpy.context.scene.frame_set(f)
        got = np.array([b.value for b in blocks])
        worst = max(worst, float(np.abs(got - vals[f - 1]).max()))
    return worst


def bench_take(bpy, np, cadence, n_expr, n_frames) -> tuple[float, dict]:
    hm = cadence.inference.heads.head_model
    rig_mod = importlib.import_module(f"{cadence.__name__}.operators.rig.build")
    kf = importlib.import_module(f"{cadence.__name__}.operators.keys.keyframes")
    Channels = cadence.inference.protocol.Channels
    rng = np.random.default_rng(0)
    n_lat, n_lon = 6, 8
    la, lo = np.meshgrid(np.linspace(0.3, math.pi - 0.3, n_lat), np.linspace(0, 2 * math.pi, n_lon, endpoint=False),
                         indexing="ij")
    v = np.stack([np.sin(la) * np.sin(lo), np.cos(la), np.sin(la) * np.cos(lo)], -1).reshape(-1, 3) * 0.1
    faces = [(i * n_lon + j, i * n_lon + (j + 1) % n_lon, (i + 1) * n_lon + j) for i in range(n_lat - 1) for j in range(n_lon)]
    V = len(v)
    w = rng.random((V, 5)) + 0.1
    jr = rng.random((5, V))
    model = hm.HeadModel(name="bench", v_template=v, faces=np.array(faces), shapedirs=np.zeros((V, 3, 1)),
                         exprdirs=rng.normal(0, 0.01, (V, 3, n_expr)), posedirs=np.zeros((V, 3, 36)),
                         j_regressor=jr / jr.sum(1, keepdims=True), weights=w / w.sum(1, keepdims=True))
    rig = rig_mod.build_rig(model, bpy.context, model_file="")
    t = np.arange(n_frames)[:, None] / 25.0
    groups = {"expression": 0.5 * np.sin(t * (1 + np.arange(n_expr)))}
    for g, d in (("jaw", 3), ("neck", 3), ("head_rotation", 3), ("head_translation", 3), ("eyes", 6), ("eyelids", 2)):
        groups[g] = 0.1 * np.sin(t * (1 + np.arange(d))).reshape((n_frames, 2, 3) if g == "eyes" else (n_frames, d))
    ch = Channels(fps=25, n_frames=n_frames, expr_names=model.expr_names, groups=groups)
    t0 = time.perf_counter()
    res = kf.write_take(rig, ch)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--insert-channels", type=int, default=0, help="channels timed with keyframe_insert (0: all)")
    args = ap.parse_args()
    scratch = blender_session.prepare()
    import bpy
    import numpy as np

    cadence = blender_session.enable_cadence(scratch)
    try:
        fc = importlib.import_module(f"{cadence.__name__}.operators.keys.fcurves")
        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = 25, 1.0
        C, F, Ci = args.channels, args.frames, min(args.insert_channels or args.channels, args.channels)
        print(f"Blender {bpy.app.version_string}; {C} channels x {F} frames = {C * F:,} keys")
        t_writer, key_w = bench_writer(bpy, np, fc, C, F)
        err_w = check(bpy, np, key_w, C, F)
        print(f"  writer (keyframe_points.add + foreach_set): {t_writer:8.3f} s   (read-back error {err_w:.1e})")
        t_ins, key_i = bench_insert(bpy, np, Ci, F)
        err_i = check(bpy, np, key_i, Ci, F)
        t_ins_full = t_ins * C / Ci
        scaled = "" if Ci == C else f"  [timed {Ci} x {F} = {Ci * F:,} keys: {t_ins:.2f} s, scaled x{C / Ci:g}]"
        print(f"  keyframe_insert per key:                    {t_ins_full:8.3f} s{scaled}   (read-back error {err_i:.1e})")
        print(f"  speed-up: {t_ins_full / t_writer:,.0f}x  (goal >= 100x)")
        t_take, res = bench_take(bpy, np, cadence, C, F)
        n_keys = sum(res["keys"].values())
        print(f"  write_take() on a rig, {C} expressions + 5 bones ({sum(res['channels'].values())} curves, "
              f"{n_keys:,} keys): {t_take:.3f} s")
    finally:
        blender_session.disable_cadence()


if __name__ == "__main__":
    main()
