"""Error-bounded key reduction: the bound holds for the interpolation written, keys drop a lot on smooth curves.

The numpy tests load the module by path (no bpy needed); one test checks the Bezier emulation against
Blender's own F-curve evaluation.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kr():
    spec = importlib.util.spec_from_file_location("cadence_key_reduction", ROOT / "operators" / "keys" / "key_reduction.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def smooth_curve(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(1, n + 1, dtype=np.float64)
    y = sum(a * np.sin(2 * np.pi * f * x / 25 + p) for a, f, p in
            zip(rng.uniform(0.1, 0.5, 3), rng.uniform(0.03, 0.2, 3), rng.uniform(0, 6, 3)))
    return x, y


def dense_sampled(kr, x, y, kept, interp, k=8):
    """Evaluate the reduced curve also between frames (subframes) against the dense curve of the same kind."""
    xs = np.linspace(x[0], x[-1], (len(x) - 1) * k + 1)
    return kr.evaluate(x[kept], y[kept], xs, interp), kr.evaluate(x, y, xs, interp)


@pytest.mark.parametrize("interp", ["LINEAR", "BEZIER"])
@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-4])
def test_bound_holds_and_keys_drop_on_smooth_curves(kr, interp, tol):
    x, y = smooth_curve()
    kept = kr.reduce_keys(x, y, tol, interp)
    err = np.abs(kr.evaluate(x[kept], y[kept], x, interp) - y).max()
    assert err <= tol
    assert kr.max_error(x, y, kept, interp) == pytest.approx(err)
    assert kept[0] == 0 and kept[-1] == len(x) - 1 and np.all(np.diff(kept) > 0)
    limit = {1e-2: 0.08, 1e-3: 0.25, 1e-4: 0.8}[tol]
    assert len(kept) < limit * len(x), (interp, tol, len(kept))


def test_linear_bound_holds_between_frames_too(kr):
    x, y = smooth_curve(seed=1)
    kept = kr.reduce_keys(x, y, 1e-3, "LINEAR")
    reduced, dense = dense_sampled(kr, x, y, kept, "LINEAR")
    assert np.abs(reduced - dense).max() <= 1e-3 + 1e-12


def test_bound_holds_on_noisy_and_stepped_curves(kr):
    rng = np.random.default_rng(2)
    x = np.arange(500, dtype=np.float64)
    for y in (rng.normal(size=500), np.repeat(rng.normal(size=10), 50), np.where(x % 97 < 3, 1.0, 0.0)):
        for interp in ("LINEAR", "BEZIER"):
            kept = kr.reduce_keys(x, y, 0.05, interp)
            assert kr.max_error(x, y, kept, interp) <= 0.05


def test_trivial_curves(kr):
    x = np.arange(10.0)
    assert list(kr.reduce_keys(x, np.full(10, 0.3), 1e-6)) == [0, 9]
    assert list(kr.reduce_keys(x, 2 * x + 1, 0.0)) == [0, 9]  # a line needs only its ends
    assert list(kr.reduce_keys(x[:1], x[:1], 0.1)) == [0]
    assert len(kr.reduce_keys(x, np.sin(x), 0.0, "BEZIER")) <= 10


def test_bezier_needs_fewer_keys_than_linear(kr):
    x, y = smooth_curve(seed=3)
    assert len(kr.reduce_keys(x, y, 1e-3, "BEZIER")) < len(kr.reduce_keys(x, y, 1e-3, "LINEAR"))


def test_bad_input(kr):
    x = np.arange(5.0)
    with pytest.raises(kr.ReductionError):
        kr.reduce_keys(x, x[:4], 0.1)
    with pytest.raises(kr.ReductionError):
        kr.reduce_keys(x, x, -1.0)
    with pytest.raises(kr.ReductionError):
        kr.reduce_keys(x[::-1], x, 0.1)
    with pytest.raises(kr.ReductionError):
        kr.reduce_keys(x, x, 0.1, "CONSTANT")


def test_bezier_emulation_matches_blender(cadence, clean_scene, kr):
    """The emulated auto-clamped Bezier equals Blender's FCurve.evaluate, on and between frames."""
    import bpy

    fc = importlib.import_module(f"{cadence.__name__}.operators.keys.fcurves")
    ob = bpy.data.objects.new("probe", None)
    bpy.context.scene.collection.objects.link(ob)
    action = fc.ensure_action(ob, "probe")
    x, y = smooth_curve(n=600, seed=4)
    y = y + np.where(x > 300, 0.4, 0.0)  # a step: clamped handles and uneven key spacing
    kept = kr.reduce_keys(x, y, 2e-3, "BEZIER")
    curve = fc.ensure_fcurve(action, ob, "location", 0, "probe")
    fc.write_keys(curve, x[kept], y[kept], "BEZIER")
    xs = np.linspace(x[0] - 3, x[-1] + 3, 2400)
    ky = y[kept].astype(np.float32).astype(np.float64)  # what Blender stores
    emulated = kr.evaluate(x[kept], ky, xs, "BEZIER")
    assert np.abs(fc.evaluate(curve, xs) - emulated).max() < 2e-5
    assert np.abs(fc.evaluate(curve, x) - y).max() <= 2e-3 + 1e-6
