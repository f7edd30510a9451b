"""Rig build time: Cadence's default head, and a FLAME-sized synthetic head (5,023 vertices, 300 + 100
components, pose correctives) for comparison. Prints seconds per build and one evaluation.

    .venv/bin/python bench/bench_rig.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402

_scratch = blender_session.prepare()


def flame_sized(hm, seed: int = 0):
    """Random FLAME-sized head: the build cost depends on sizes, not on the face."""
    rng = np.random.default_rng(seed)
    V, F = 5023, 9976
    weights = rng.random((V, 5)) ** 4
    weights /= weights.sum(1, keepdims=True)
    return hm.HeadModel(
        name="flame-sized", v_template=rng.normal(0, 0.1, (V, 3)), faces=rng.integers(0, V, (F, 3)),
        shapedirs=rng.normal(0, 1e-3, (V, 3, 300)), exprdirs=rng.normal(0, 1e-3, (V, 3, 100)),
        posedirs=rng.normal(0, 1e-3, (V, 3, 36)), j_regressor=np.full((5, V), 1.0 / V), weights=weights,
        uv=rng.random((F, 3, 2)),
    )


def timed_build(cadence, model, label: str) -> None:
    import bpy

    rig_mod = cadence.operators.rig.build

    pose_mod = cadence.operators.rig.pose
    bpy.ops.wm.read_homefile(use_empty=True)
    cached = rig_mod._model_file(model, bpy.context)  # cache write is once per head: time it apart
    t0 = time.perf_counter()
    rig = rig_mod.build_rig(model, bpy.context, model_file=cached)
    t1 = time.perf_counter()
    rng = np.random.default_rng(1)
    pose_mod.set_pose(rig, expression=rng.normal(0, 1, model.n_expr), pose=rng.normal(0, 0.2, (model.n_joints, 3)))
    t2 = time.perf_counter()
    bpy.context.view_layer.update()
    mesh = rig_mod.rig_mesh(rig).evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
    t3 = time.perf_counter()
    print(f"{label}: {model.n_vertices} vertices, {model.n_shape}+{model.n_expr} components, "
          f"{len(mesh.vertices)} evaluated")
    print(f"  build_rig            {t1 - t0:7.3f} s")
    print(f"  set_pose             {t2 - t1:7.3f} s")
    print(f"  evaluate (1 frame)   {t3 - t2:7.3f} s")


def main() -> int:
    import bpy  # noqa: F401 - after prepare()

    cadence = blender_session.enable_cadence(_scratch)
    status = 0
    try:
        from bl_ext.cadence_dev.cadence.operators.prefs import cache_dir

        try:
            from bl_ext.cadence_dev.cadence.inference.heads.default_head import load_or_build
        except ImportError as exc:
            print(f"default head: not available ({exc})")
            status = 1
        else:
            t0 = time.perf_counter()
            head = load_or_build(cache_dir())
            print(f"default head load_or_build {time.perf_counter() - t0:7.3f} s")
            timed_build(cadence, head, "default head")
        timed_build(cadence, flame_sized(cadence.inference.heads.head_model), "FLAME-sized synthetic head")
    finally:
        blender_session.disable_cadence()
    return status


if __name__ == "__main__":
    sys.exit(main())
