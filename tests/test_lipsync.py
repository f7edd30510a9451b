"""Lip engine: viseme solving, coarticulation, lag against the speech envelope, silence, bilabials, fps.

Real speech: LibriSpeech (SLR12, CC-BY 4.0) utterances read by Heather Barnett (198-209-0000),
Anders Lankford (3436-172162-0000) and Garth Comira (5703-47212-0000), from ../shared/fixtures/speech.
Synthesized speech with known timings: espeak-ng syllables joined end to end (tests/espeak_speech.py).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))

import espeak_speech  # noqa: E402
import synthetic_head  # noqa: E402

from inference.audio import decode as audio
from inference.lips import lipsync, phonemes, visemes  # noqa: E402
from inference.lips.phonemes import PhoneSeg  # noqa: E402
from inference.motion import animate

FIXTURES = ("librispeech-198-209-0000", "librispeech-3436-172162-0000", "librispeech-5703-47212-0000")


@pytest.fixture(scope="module")
def head():
    return synthetic_head.build()


def _opening(head, ch) -> tuple[np.ndarray, visemes.VisemeSet]:
    """Inner-lip opening per frame relative to neutral, in neutral mouth widths (forward pass)."""
    vs = visemes.solve_visemes(head)
    f = visemes.mouth_features(head, ch.get("expression"), ch.get("jaw"))
    return (f[:, 0] - vs.neutral[0]) / vs.mouth_width, vs


# ------------------------------------------------------------------------------ viseme solver
@pytest.mark.parametrize("kw", [{}, {"with_landmarks": False, "lip_vertices": True}])
def test_solver_reaches_geometric_targets(kw):
    head = synthetic_head.build(**kw)
    vs = visemes.solve_visemes(head)
    for name, target in visemes.VISEME_TARGETS.items():
        got = vs.achieved[vs.index(name)]
        assert np.allclose(got, target[:3], atol=0.01), (name, got, target)
    aa, uw, pbm = (vs.index(n) for n in ("AA", "UW", "PBM"))
    assert vs.jaw[aa] @ vs.jaw_axis > np.radians(6)  # open vowels open the jaw
    assert vs.jaw[aa] @ vs.jaw_axis > 2 * vs.jaw[uw] @ vs.jaw_axis
    e = head.n_expr
    assert vs.expression.shape == (len(vs.names), e)
    # rounding uses the pucker / narrowing components, spreading the widening one
    assert vs.expression[uw, 5] > 0.5 and vs.expression[vs.index("IY"), 1] > 0.3
    assert vs.jaw[pbm] @ vs.jaw_axis < np.radians(2)
    # the forehead (far from the mouth) stays put: < 0.5 mm
    v0, _ = head.forward()
    far = np.array(synthetic_head_far(head))
    for k in range(len(vs.names)):
        pose = np.zeros((5, 3))
        pose[2] = vs.jaw[k]
        v, _ = head.forward(expression=vs.expression[k], pose=pose)
        assert np.abs(v[far] - v0[far]).max() < 5e-4, vs.names[k]


def synthetic_head_far(head) -> list[int]:
    return [i for i in range(head.n_vertices) if head.v_template[i, 1] > 0.05]


def test_head_without_lips_is_refused():
    head = synthetic_head.build(with_landmarks=False)
    with pytest.raises(visemes.VisemeError, match="no lip landmarks"):
        visemes.solve_visemes(head)


@pytest.mark.slow
def test_default_head_visemes():
    """The Cadence default head (semantic mouth controls) through the same solver (~30 s to build)."""
    dh = pytest.importorskip("inference.heads.default_head")
    if not hasattr(dh, "build_default_head"):
        pytest.skip("inference.heads.default_head has no build_default_head yet")
    head = dh.build_default_head()
    vs = visemes.solve_visemes(head)
    assert all(c.startswith("mouth") for c in vs.components)
    for name in ("AA", "PBM", "IY", "OW", "EH"):
        assert np.allclose(vs.achieved[vs.index(name)][:2], visemes.VISEME_TARGETS[name][:2], atol=0.03), name
    uw = vs.achieved[vs.index("UW")]
    assert uw[1] < -0.12 and uw[2] > 0.05  # rounded and protruded (as far as the head's pucker goes)
    aa = vs.index("AA")
    assert vs.jaw[aa] @ vs.jaw_axis > np.radians(5)


# ------------------------------------------------------------------------------- real speech
def _envelope(x: np.ndarray, n: int, fps: float) -> np.ndarray:
    hop = 16_000 / fps
    return np.array([np.sqrt(np.mean(x[int(max(0, (i - 0.5) * hop)) : int((i + 0.5) * hop) + 1] ** 2)) for i in range(n)])


def _xcorr_peak(a: np.ndarray, b: np.ndarray, max_lag: int = 10) -> int:
    a = (a - a.mean()) / a.std()
    b = (b - b.mean()) / b.std()
    n = a.size
    lags = list(range(-max_lag, max_lag + 1))
    cc = [np.mean(a[max(0, k) : n + min(0, k)] * b[max(0, -k) : n - max(0, k)]) for k in lags]
    return lags[int(np.argmax(cc))]


@pytest.mark.parametrize("name", FIXTURES)
def test_jaw_lags_envelope_by_at_most_one_frame(head, speech_fixtures, name):
    path = speech_fixtures / f"{name}.ogg"
    fps = 25.0
    ch = animate.animate_audio(str(path), head, fps)
    assert ch.meta["engine"] == "pocketsphinx" and ch.meta["phones"] > 50
    vs = visemes.solve_visemes(head)
    jaw = lipsync.jaw_opening(ch.get("jaw"), vs)
    env = _envelope(audio.load_audio(path), ch.n_frames, fps)
    lag = _xcorr_peak(jaw, env)
    assert abs(lag) <= 1, f"jaw lags the envelope by {lag} frames"


def test_mouth_closed_in_silence(head, speech_fixtures, tmp_path):
    x = audio.load_audio(speech_fixtures / f"{FIXTURES[0]}.ogg")
    pad = np.zeros(int(1.5 * 16_000), np.float32)
    path = tmp_path / "padded.wav"
    sf.write(path, np.concatenate([pad, x, pad, x[:32000], pad]), 16_000)
    fps = 30.0
    ch = animate.animate_audio(str(path), head, fps)
    opening, vs = _opening(head, ch)
    t = np.arange(ch.n_frames) / fps
    n = x.size / 16_000
    silent = (t < 1.3) | ((t > 1.5 + n + 0.2) & (t < 3.0 + n - 0.2)) | (t > 3.0 + n + 2.0 + 0.2)
    assert silent.sum() > 100
    assert np.all(np.abs(opening[silent]) < 0.03), np.abs(opening[silent]).max()
    assert np.all(np.abs(lipsync.jaw_opening(ch.get("jaw")[silent], vs)) < np.radians(0.5))
    assert np.percentile(opening[~silent], 90) > 0.15  # ... and open while talking


def test_steady_sound_is_not_speech_and_an_offset_changes_nothing(head, speech_fixtures, tmp_path):
    """Room tone and mains hum keep the mouth closed (and say so); a DC-only file is silent; speech with a DC
    offset animates as the same speech without it."""
    sr, fps = 16_000, 25.0
    t = np.arange(3 * sr) / sr
    steady = {"roomtone": 0.003 * np.random.default_rng(0).standard_normal(t.size),
              "hum": 0.2 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)}
    for name, x in steady.items():
        path = tmp_path / f"{name}.wav"
        sf.write(path, x.astype(np.float32), sr)
        ch = animate.animate_audio(str(path), head, fps)
        _, vs = _opening(head, ch)
        assert np.abs(lipsync.jaw_opening(ch.get("jaw"), vs)).max() < np.radians(0.5), name
        assert any("no speech" in n for n in ch.meta["notes"]), (name, ch.meta["notes"])
    sf.write(tmp_path / "dc.wav", np.full(t.size, 0.5, np.float32), sr)
    with pytest.raises(audio.AudioError, match="silent"):
        animate.animate_audio(str(tmp_path / "dc.wav"), head, fps)
    x = audio.load_audio(speech_fixtures / f"{FIXTURES[1]}.ogg")[: 4 * sr]
    sf.write(tmp_path / "clean.wav", x, sr)
    sf.write(tmp_path / "offset.wav", np.clip(x + 0.3, -1, 1), sr)
    clean = animate.animate_audio(str(tmp_path / "clean.wav"), head, fps)
    offset = animate.animate_audio(str(tmp_path / "offset.wav"), head, fps)
    a, b = (lipsync.jaw_opening(c.get("jaw"), _opening(head, c)[1]) for c in (clean, offset))
    assert np.corrcoef(a, b)[0, 1] > 0.97 and not any("no speech" in n for n in offset.meta["notes"])


# ----------------------------------------------------------------------- synthesized speech
needs_espeak = pytest.mark.skipif(not espeak_speech.have_espeak(), reason="espeak-ng is not installed")


def _utterance_with_stop_gaps(seq: list[str]) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Like ``espeak_speech.utterance`` but every stop-initial syllable (t d k g too) gets its closure
    gap: the silence alone must not read as a lip closure, only a labial release may."""
    sr, gap = espeak_speech.SR, espeak_speech.STOP_CLOSURE_S
    pieces, starts, t = [np.zeros(sr // 2, np.float32)], [], 0.5
    for i, s in enumerate(seq):
        piece = espeak_speech.syllable(s, pitch=45 + 7 * (i % 3))
        t0 = t
        if s[0] in "pbtdkg":
            pieces.append(np.zeros(int(gap * sr), np.float32))
            t += gap
        env = np.convolve(np.abs(piece), np.ones(160) / 160, mode="same")
        starts.append((s, t0, t + int(np.argmax(env > 0.3 * env.max())) / sr))
        pieces.append(piece)
        t += piece.size / sr
    x = np.concatenate(pieces + [np.zeros(sr // 2, np.float32)])
    return (0.5 * x / np.abs(x).max()).astype(np.float32), starts


def _bilabial_closure_rate(head, fps: float, transcript: bool, seed: int = 0, n: int = 12, tmp_path=None,
                           all_stop_gaps: bool = False):
    """(closure rate on bilabial onsets, open rate after other onsets, false-closure rate on other
    onsets (the first syllable, which starts from rest, excluded), channels)."""
    seq = espeak_speech.bilabial_sequence(n, seed=seed)
    x, starts = _utterance_with_stop_gaps(seq) if all_stop_gaps else espeak_speech.utterance(seq)
    path = tmp_path / f"syll_{seed}.wav"
    sf.write(path, x, espeak_speech.SR)
    ch = animate.animate_audio(str(path), head, fps, transcript=" ".join(seq) if transcript else None)
    opening, _ = _opening(head, ch)
    closed = opening < 0.02
    hits, opened, false = [], [], []
    for i, (syl, t0, t1) in enumerate(starts):
        lo, hi = int(np.floor(t0 * fps)) - 1, int(np.ceil(t1 * fps)) + 1
        if syl in espeak_speech.BILABIAL_SYLLABLES:
            hits.append(bool(closed[max(lo, 0) : hi + 1].any()))
        else:
            opened.append(bool((opening[max(lo, 0) : int((t1 + 0.12) * fps) + 2] > 0.05).any()))
            if i > 0:
                false.append(bool(closed[int(np.floor(t0 * fps)) : int(np.ceil(t1 * fps)) + 1].any()))
    return float(np.mean(hits)), float(np.mean(opened)), float(np.mean(false)), ch


@needs_espeak
@pytest.mark.parametrize("fps", [24.0, 30.0])
def test_bilabials_close_with_transcript(head, tmp_path, fps):
    rate, open_rate, _, ch = _bilabial_closure_rate(head, fps, transcript=True, tmp_path=tmp_path)
    assert ch.meta["aligned"] and ch.meta["engine"] == "pocketsphinx"
    assert rate >= 0.9, f"lips closed on {rate:.0%} of bilabials"
    assert open_rate >= 0.8, f"mouth opened on only {open_rate:.0%} of other syllables"


@needs_espeak
@pytest.mark.parametrize("seed", [1, 2])
def test_bilabials_from_recognition_alone(head, tmp_path, seed):
    """Without a transcript the recogniser finds most /m/ but few /p b/ (~35 % closed on its own);
    acoustic closure detection (inference/lips/closures.py) adds the /p b/ whose release looks labial."""
    rate, open_rate, false, ch = _bilabial_closure_rate(head, 25.0, transcript=False, seed=seed, tmp_path=tmp_path)
    assert ch.meta["engine"] == "pocketsphinx" and not ch.meta["aligned"]
    assert rate >= 0.85, f"lips closed on {rate:.0%} of bilabials"
    assert open_rate >= 0.8, f"mouth opened on only {open_rate:.0%} of other syllables"
    assert false <= 0.15, f"lips closed on {false:.0%} of syllables without a bilabial"


@needs_espeak
def test_no_lip_closure_for_lingual_stops(head, tmp_path):
    """t d k g with the same silent closure gap as p b: the gap alone must not close the lips.
    Pooled over three takes (measured over six: 94 % of bilabials closed, 14 % false closures, most
    of them on the weak /h/ of "who", as before acoustic closure detection)."""
    runs = [_bilabial_closure_rate(head, 25.0, transcript=False, seed=s, tmp_path=tmp_path, all_stop_gaps=True)
            for s in (0, 1, 2)]
    rate, open_rate, false = (float(np.mean([r[i] for r in runs])) for i in range(3))
    assert rate >= 0.85, f"lips closed on {rate:.0%} of bilabials"
    assert false <= 0.15, f"lips closed on {false:.0%} of syllables without a bilabial"
    assert open_rate >= 0.8


def test_closure_refinement_keeps_recognised_phones():
    from inference.lips import closures

    x = np.zeros(16_000, np.float32)
    assert closures.refine([], x) == []  # recognition failed: nothing is invented
    phones = [PhoneSeg("SIL", 0.0, 0.5), PhoneSeg("AA", 0.5, 1.0)]
    assert closures.refine(phones, x) == phones  # silence has no closures
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    vowel = (np.sin(2 * np.pi * 120 * t) * (1 + 0.3 * rng.standard_normal(t.size))).astype(np.float32) * 0.3
    gapped = vowel.copy()
    gapped[8000:8960] = 0.0  # a 60 ms closure ...
    gapped[8960:9120] += 0.05 * rng.standard_normal(160).astype(np.float32)  # ... and a weak low burst
    found = closures.detect(gapped)
    assert len(found) == 1 and 0.45 < found[0].start < 0.52 and abs(found[0].end - 0.56) < 0.02
    ph = closures.refine([PhoneSeg("AA", 0.0, 0.5), PhoneSeg("SIL", 0.5, 0.56), PhoneSeg("AA", 0.56, 1.0)], gapped)
    assert all(p.start < p.end for p in ph) and ph == sorted(ph, key=lambda p: p.start)
    # the recogniser heard /t/ at the release: its place decision is kept
    told = [PhoneSeg("AA", 0.0, 0.5), PhoneSeg("T", 0.5, 0.58), PhoneSeg("AA", 0.58, 1.0)]
    assert closures.refine(told, gapped) == told


@needs_espeak
def test_same_event_same_time_at_every_fps(head, tmp_path):
    seq = ["tea", "bah", "lee", "my", "so"]
    x, starts = espeak_speech.utterance(seq, lead_silence=0.73)
    path = tmp_path / "fps.wav"
    sf.write(path, x, espeak_speech.SR)
    dur = x.size / 16_000
    ref = None
    for fps in (24.0, 25.0, 30.0, 60.0, 30000 / 1001):
        ch = animate.animate_audio(str(path), head, fps, transcript=" ".join(seq))
        assert ch.n_frames == int(np.floor(dur * fps - 1e-9)) + 1 and ch.fps == fps
        jaw = lipsync.jaw_opening(ch.get("jaw"), visemes.solve_visemes(head))
        above = np.flatnonzero(jaw > 0.3 * jaw.max())
        onset, offset = above[0] / fps, above[-1] / fps  # the mouth opens for the first word, closes after the last
        if ref is None:
            ref = (onset, offset)
        assert abs(onset - ref[0]) <= 1 / 24 + 0.01 and abs(offset - ref[1]) <= 1 / 24 + 0.01, fps
    assert starts[0][1] - 0.1 < ref[0] < starts[1][2] + 0.1  # ... where the speech is
    assert starts[-1][1] < ref[1] < dur - 0.3


# --------------------------------------------------------------------- controls and robustness
def test_deterministic_and_seeded(head, speech_fixtures):
    path = str(speech_fixtures / f"{FIXTURES[2]}.ogg")
    a = animate.animate_audio(path, head, 25.0, seed=3)
    b = animate.animate_audio(path, head, 25.0, seed=3)
    c = animate.animate_audio(path, head, 25.0, seed=4)
    for g in a.groups:
        assert np.array_equal(a.get(g), b.get(g)), g
    assert not np.allclose(a.get("head_rotation"), c.get("head_rotation"))
    assert np.array_equal(a.get("expression"), c.get("expression"))  # the seed moves the head, not the lips


def test_strength_and_energy_fallback(head, speech_fixtures, monkeypatch):
    path = str(speech_fixtures / f"{FIXTURES[1]}.ogg")
    full = animate.animate_audio(path, head, 25.0)
    half = animate.animate_audio(path, head, 25.0, lip_strength=0.5)
    vs = visemes.solve_visemes(head)
    j_full, j_half = (lipsync.jaw_opening(c.get("jaw"), vs) for c in (full, half))
    assert 0.4 < np.percentile(j_half, 95) / np.percentile(j_full, 95) < 0.65
    monkeypatch.setattr(phonemes, "recognize", lambda audio, offset=0.0: [])
    fb = animate.animate_audio(path, head, 25.0)
    assert fb.meta["engine"] == "energy-fallback"
    jaw = lipsync.jaw_opening(fb.get("jaw"), vs)
    env = _envelope(audio.load_audio(path), fb.n_frames, 25.0)
    assert abs(_xcorr_peak(jaw, env)) <= 1
    assert jaw.max() > np.radians(3)


def test_cancellation_is_prompt(head, speech_fixtures, tmp_path):
    x = np.concatenate([audio.load_audio(speech_fixtures / f"{f}.ogg") for f in FIXTURES] * 3)
    path = tmp_path / "long.flac"
    sf.write(path, x, 16_000)
    flag = threading.Event()
    calls = []

    set_at = []

    def progress(frac, msg):
        calls.append(frac)
        if frac > 0.0 and not flag.is_set():
            set_at.append(time.perf_counter())
            flag.set()

    with pytest.raises(animate.Cancelled):
        animate.animate_audio(str(path), head, 25.0, progress=progress, cancelled=flag.is_set)
    assert time.perf_counter() - set_at[0] < 1.0  # stops at the next chunk, not at the end
    assert max(calls) < 0.85


def test_bad_arguments(head, speech_fixtures, tmp_path):
    path = str(speech_fixtures / f"{FIXTURES[0]}.ogg")
    for kw in ({"fps": 0}, {"fps": float("nan")}, {"fps": "fast"}, {"lip_strength": -1}, {"motion_speed": 0}):
        args = {"fps": 25.0, **kw}
        with pytest.raises(ValueError):
            animate.animate_audio(path, head, **args)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32_000), 16_000)
    with pytest.raises(audio.AudioError, match="silent"):
        animate.animate_audio(str(silent), head, 25.0)


def test_bilabial_closure_even_when_shorter_than_a_frame(head):
    vs = visemes.solve_visemes(head)
    phones = [PhoneSeg("SIL", 0, 0.2), PhoneSeg("AA", 0.2, 0.4), PhoneSeg("B", 0.4, 0.425),
              PhoneSeg("AA", 0.425, 0.6), PhoneSeg("SIL", 0.6, 1.0)]
    from inference.lips import coarticulation

    times = coarticulation.frame_times(24, 24.0)
    expr, jaw = coarticulation.blend(phones, vs, times, 24.0)
    k = int(round(0.4125 * 24))
    assert np.allclose(expr[k], vs.expression[vs.index("PBM")]) and np.allclose(jaw[k], vs.jaw[vs.index("PBM")])
    assert lipsync.jaw_opening(jaw, vs)[int(0.3 * 24)] > np.radians(5)


def test_generate_job(head, speech_fixtures, tmp_path):
    from inference.protocol import Channels
    from inference.worker import jobs

    head_file = tmp_path / "head.npz"
    head.save(head_file)
    sent = []
    ctx = jobs.JobContext("job-1", "generate", sent.append, str(tmp_path / "jobs"))
    handler = jobs.get_handler("generate")
    res = handler({"audio": str(speech_fixtures / f"{FIXTURES[0]}.ogg"), "head_file": str(head_file), "fps": 24,
                   "seed": 1}, ctx)
    ch = Channels.load(res["channels_file"])
    assert res["engine"] == "pocketsphinx" and res["n_frames"] == ch.n_frames and res["phones"] > 50
    assert {"decode", "recognition", "curves", "head_motion"} <= set(res["timings"])
    assert ch.get("jaw").shape == (ch.n_frames, 3) and sent
    with pytest.raises(jobs.JobError, match="not found"):
        handler({"audio": str(tmp_path / "nope.wav"), "head_file": str(head_file)}, ctx)
