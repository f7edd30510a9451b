"""Procedural head motion, blinks and gaze: rates, pause bias, controls, determinism, fps independence."""

from __future__ import annotations

import numpy as np
import pytest

from inference.audio import prosody
from inference.motion import head_motion as hm


def _prosody(seconds: float, speech_s: float = 3.0, pause_s: float = 1.0, seed: int = 0) -> prosody.Prosody:
    """Alternating speech and pauses with a wobbling pitch, at 100 Hz."""
    n = int(seconds * 100)
    t = np.arange(n) / 100
    speech = (t % (speech_s + pause_s)) < speech_s
    rng = np.random.default_rng(seed)
    db = np.where(speech, -20 + 6 * np.sin(2 * np.pi * 4 * t) + rng.normal(0, 1, n), -65 + rng.normal(0, 1, n))
    f0 = np.where(speech, 140 * 2 ** (np.sin(2 * np.pi * 0.5 * t) / 6), 0.0)
    return prosody.summarize(db, f0)


def test_yin_finds_pitch():
    sr = 16_000
    t = np.arange(sr) / sr
    x = 0.3 * np.sign(np.sin(2 * np.pi * 150 * t)) * 0.5 + 0.2 * np.sin(2 * np.pi * 300 * t)
    db, f0 = prosody.chunk_features(x.astype(np.float32))
    assert db.size == 100 and np.median(f0[5:-5]) == pytest.approx(150, rel=0.03)
    _, f0n = prosody.chunk_features(np.random.default_rng(0).normal(0, 0.1, sr).astype(np.float32))
    assert np.mean(f0n > 0) < 0.3  # noise is mostly unvoiced


def test_blinks_rate_duration_and_pause_bias():
    p = _prosody(600.0)
    times = np.arange(int(600 * 30)) / 30
    rng = np.random.default_rng(1)
    ev = hm.blink_events(p.speech, hm.MotionParams(seed=1), rng)
    rate = len(ev) / 10.0
    assert 12 <= rate <= 22, rate
    assert all(0.1 <= d <= 0.15 for _, d in ev)
    in_pause = sum(1 for s, _ in ev if not p.speech[min(int(s * 100), p.n - 1)])
    pause_frac = 1 - p.speech.mean()
    assert in_pause / len(ev) > 2 * pause_frac  # pauses hold 25 % of the time, well over half the blinks
    lids = hm.blink_curve(ev, times)
    assert lids.shape == (times.size, 2) and lids.max() == 1.0 and lids.min() == 0.0
    closed_runs = np.sum(np.diff((lids[:, 0] > 0.5).astype(int)) == 1)
    assert closed_runs == pytest.approx(len(ev), abs=2)


def test_motion_controls_and_determinism():
    p = _prosody(60.0)
    times = np.arange(60 * 25) / 25
    a = hm.head_motion(p, times, hm.MotionParams(seed=5))
    b = hm.head_motion(p, times, hm.MotionParams(seed=5))
    c = hm.head_motion(p, times, hm.MotionParams(seed=6))
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert not np.allclose(a["head_rotation"], c["head_rotation"])
    rot_deg = np.degrees(a["head_rotation"])
    assert 0.3 < rot_deg.std(axis=0).max() < 6.0  # a few degrees, not a wobble or a spin
    assert np.abs(a["head_translation"]).max() < 0.03
    big = hm.head_motion(p, times, hm.MotionParams(seed=5, amplitude=2.0))
    assert np.allclose(big["head_rotation"], 2 * a["head_rotation"])
    still = hm.head_motion(p, times, hm.MotionParams(seed=5, amplitude=0.0))
    assert np.abs(still["head_rotation"]).max() == 0.0
    fast = hm.head_motion(p, times, hm.MotionParams(seed=5, speed=2.0))
    vel = lambda r: np.abs(np.diff(r["head_rotation"], axis=0)).mean()  # noqa: E731
    assert vel(fast) > 1.4 * vel(a)
    eyes = a["eyes"]
    assert eyes.shape == (times.size, 2, 3) and np.degrees(np.abs(eyes).max()) < 8.0
    assert np.array_equal(eyes[:, 0], eyes[:, 1])
    jumps = np.sum(np.linalg.norm(np.diff(eyes[:, 0], axis=0), axis=1) > np.radians(0.3))
    assert 10 < jumps < 150  # saccades every second or so, each over one or two frames


def test_motion_is_the_same_at_any_fps():
    p = _prosody(20.0)
    ref = hm.head_motion(p, np.arange(20 * 60) / 60, hm.MotionParams(seed=2))
    for fps in (24.0, 25.0, 30000 / 1001):
        t = np.arange(int(20 * fps)) / fps
        m = hm.head_motion(p, t, hm.MotionParams(seed=2))
        expect = np.stack([np.interp(t, np.arange(20 * 60) / 60, ref["head_rotation"][:, k]) for k in range(3)], 1)
        assert np.abs(m["head_rotation"] - expect).max() < np.radians(0.05)


def test_pauses_and_talking():
    p = _prosody(30.0)
    assert 0.65 < p.speech.mean() < 0.85
    assert p.level > p.floor + 30
