"""The first track of a head: how long its MediaPipe calibration takes, phase by phase (goal: <= 60 s).

Builds the default head's calibrated landmark embedding in a scratch cache (what Track does the first time
it sees a head) and prints the seconds spent in each phase of operators/landmarks.build_steps, read from
its progress messages: the embedding's views, the expressions' responses, the pose renders, the worker's
pose-calibration job (detection, scores, fits, focal search).

    .venv/bin/python bench/bench_calibration.py [pose renders, default: the product's]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402

_scratch = blender_session.prepare()

PHASES = (("Finding the landmarks", "embedding views"), ("Calibrating landmarks", "expression responses"),
          ("Calibrating head poses: render", "pose renders"), ("Calibrating head poses", "pose job (worker)"))


def phase_of(message: str) -> str:
    return next((name for prefix, name in PHASES if message.startswith(prefix)), "other")


def main() -> None:
    import bpy

    cadence = blender_session.enable_cadence(_scratch)
    try:
        calib = cadence.operators.tracking.landmark_calibration
        n = int(sys.argv[1]) if len(sys.argv) > 1 else calib.POSE_RENDERS
        prefs = cadence.operators.prefs.get_preferences()
        with tempfile.TemporaryDirectory(prefix="cadence-bench-calib-") as cache:
            prefs.cache_dir = cache
            bpy.ops.wm.read_homefile(use_empty=True)
            assert bpy.ops.cadence.add_head() == {"FINISHED"}
            rig = bpy.context.active_object
            spent: dict[str, float] = {}
            steps = cadence.operators.landmarks.build_steps(rig, bpy.context, pose_renders=n)
            t0 = last = time.perf_counter()
            current = "embedding views"
            try:
                while True:
                    _fraction, message = next(steps)
                    now = time.perf_counter()
                    spent[current] = spent.get(current, 0.0) + now - last
                    current, last = phase_of(message), now
            except StopIteration:
                now = time.perf_counter()
                spent[current] = spent.get(current, 0.0) + now - last
            total = now - t0
        print(f"first-track calibration of the default head ({n} pose renders through "
              f"{len(calib.CALIB_LENSES_MM)} lenses), 2-core machine:")
        for name, seconds in spent.items():
            print(f"  {name:22s} {seconds:6.1f} s  ({seconds / total:4.0%})")
        print(f"  {'total':22s} {total:6.1f} s  (goal <= 60 s: {total / 60.0:.1f}x the goal)")
    finally:
        bpy.ops.wm.read_homefile(use_empty=True)
        blender_session.disable_cadence()


if __name__ == "__main__":
    main()
