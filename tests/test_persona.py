"""Persona files (safe loading), pose-style statistics, Fréchet distance and generation (tiny sizes)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.persona import persona as ps
from inference.persona import pose_style
from inference.protocol import Channels

torch.set_num_threads(1)
SR, FPS = 16000, 25.0
TINY = dict(conv_channels=(4, 8), fc_dim=16, lstm_hidden=16, lstm_layers=1)
NAMES = ("browInnerUp", "jawOpen", "mouthSmile_L", "eyeSquint_L")


def styled(n: int, fps: float, style: str, seed: int) -> np.ndarray:
    """(n, 6) poses: 'nod' = slow large pitch nods, 'shake' = fast small yaw shakes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    p = np.zeros((n, 6))
    ph = rng.uniform(0, 2 * np.pi)
    if style == "nod":
        p[:, 0] = 0.15 * np.sin(2 * np.pi * 0.4 * t + ph)
        p[:, 4] = 0.01 * np.sin(2 * np.pi * 0.4 * t + ph)
    else:
        p[:, 1] = 0.03 * np.sin(2 * np.pi * 2.0 * t + ph)
        p[:, 3] = 0.002 * np.sin(2 * np.pi * 2.0 * t + ph)
    return p + rng.normal(0, 1e-3, p.shape) * [1, 1, 1, 0.05, 0.05, 0.05]


def tracked_clip(seconds: float = 12.0, seed: int = 0):
    """A 'tracked' clip: tone audio whose pitch drives a nodding head, plus brow/jaw/smile/squint."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    seg = int(0.4 * SR)
    f = np.repeat(rng.choice([220.0, 440.0, 880.0], size=n // seg + 1), seg)[:n]
    y = (0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.003 * rng.standard_normal(n)).astype(np.float32)
    T = int(seconds * FPS)
    level = np.log2(f[(np.arange(T) / FPS * SR).astype(int)] / 220.0) / 2
    pose = styled(T, FPS, "nod", seed)
    pose[:, 0] += 0.05 * level
    ch = Channels(fps=FPS, n_frames=T, expr_names=NAMES)
    ch.set("expression", np.stack([level, 0.5 * level, 0.2 + 0 * level, 0.3 * level], 1))
    ch.set("jaw", np.stack([0.1 * level, 0 * level, 0 * level], 1))
    ch.set("head_rotation", pose[:, :3])
    ch.set("head_translation", pose[:, 3:])
    return ch, y


@pytest.fixture(scope="module")
def persona():
    ch, y = tracked_clip()
    return ps.personalize(ch, y, head_hash="abc123", identity_shape=np.arange(5.0), epochs=4, seq_len=16,
                          net_overrides=TINY, device="cpu", meta={"source": "synthetic"}), y


# ------------------------------------------------------------------------------ persona files
def test_persona_round_trip_loads_with_weights_only(persona, tmp_path):
    p, y = persona
    path = tmp_path / "me.persona.pt"
    ps.save_persona(p, path)
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "cadence-persona" and raw["head_hash"] == "abc123"
    q = ps.load_persona(path, head="abc123")
    assert q.expr_names == list(NAMES) and q.fps == FPS and q.meta["source"] == "synthetic"
    assert q.cadence_version == p.cadence_version != "" and q.created == p.created
    assert np.array_equal(q.identity_shape, np.arange(5.0))
    assert np.allclose(q.train_poses["head_rotation"], p.train_poses["head_rotation"])
    assert q.pose_stats == p.pose_stats and q.upper_face == [True, False, False, True]
    a = ps.generate_pose(p, y[: 3 * SR], 30)
    b = ps.generate_pose(q, y[: 3 * SR], 30)
    assert np.array_equal(a["head_rotation"], b["head_rotation"])


def test_persona_for_another_head_is_refused(persona, tmp_path):
    p, _ = persona
    path = tmp_path / "p.pt"
    ps.save_persona(p, path)

    class Head:
        def content_hash(self):
            return "ffff"

    with pytest.raises(ps.PersonaHeadMismatch, match="another head model"):
        ps.load_persona(path, head=Head())
    with pytest.raises(ps.PersonaHeadMismatch):
        ps.load_persona(path).check_head("0000")


class Payload:
    """Unpickling this calls Path.touch(marker): proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the raw pickle
def test_hostile_persona_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil.pt"
    for protocol in (2, 4):  # protocol 2 reaches the GLOBAL opcode, 4 stops at framing
        raw.write_bytes(pickle.dumps({"format": "cadence-persona", "x": Payload(marker)}, protocol=protocol))
        with pytest.raises(ps.PersonaError, match="refused to load evil.pt.*could run code"):
            ps.load_persona(raw)
    zipped = tmp_path / "evil2.pt"
    torch.save({"format": "cadence-persona", "x": Payload(marker)}, zipped)
    with pytest.raises(ps.PersonaError, match="refused"):
        ps.load_persona(zipped)
    with pytest.raises(ps.PersonaError, match="refused"):
        ps.load_general_model(zipped)
    assert not marker.exists()


def test_broken_or_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(ps.PersonaError, match="not found"):
        ps.load_persona(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a persona at all")
    with pytest.raises(ps.PersonaError, match="not a (plain-data|readable) Cadence persona"):
        ps.load_persona(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ps.PersonaError, match="not a Cadence persona"):
        ps.load_persona(other)
    torch.save({"format": "cadence-persona", "version": 1, "fps": 25.0}, other)
    with pytest.raises(ps.PersonaError, match="incomplete or damaged"):
        ps.load_persona(other)


def test_general_model_for_another_head_is_refused(persona, tmp_path):
    p, y = persona
    ps.save_general_model(tmp_path / "g.pt", p.net_state, p.net_config, p.feature_config, fps=25, seq_len=16,
                          expr_names=["a", "b", "c", "d"])
    ch, y = tracked_clip(seconds=4)
    with pytest.raises(ps.PersonaError, match="another head"):
        ps.personalize(ch, y, "abc123", general=tmp_path / "g.pt", epochs=1, seq_len=16)


def test_personalize_fine_tunes_from_a_general_model(persona, tmp_path):
    p, _ = persona
    ps.save_general_model(tmp_path / "g.pt", p.net_state, p.net_config, p.feature_config, fps=25, seq_len=16,
                          expr_names=list(NAMES))
    ch, y = tracked_clip(seconds=5, seed=3)
    q = ps.personalize(ch, y, "abc123", general=tmp_path / "g.pt", epochs=2, seq_len=16, device="cpu")
    assert q.trained_lips and q.history["lr"] == 1e-4 and q.meta["n_frames"] == 125


# ------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("fps", [24, 29.97, 60])
def test_generate_network_mode_any_fps(persona, fps):
    p, y = persona
    audio = y[: int(2.5 * SR)]
    out = ps.generate_pose(p, audio, fps, mode="network")
    n = int(np.ceil(2.5 * fps - 1e-9))
    assert out["head_rotation"].shape == (n, 3) and out["head_translation"].shape == (n, 3)
    assert out["expression"].shape == (n, 4) and out["jaw"].shape == (n, 3)
    assert np.all(out["expression"][:, [1, 2]] == 0)  # lips stay with the lip engine
    assert np.array_equal(out["expression"][:, 0], out["expression_full"][:, 0])
    # Smoothing acts on the prediction (the sampled residual motion is left out here: it is smooth by itself).
    q = dataclasses.replace(p, meta={**p.meta, "residual_std": []})
    smooth, raw = (ps.generate_pose(q, audio, fps, mode="network", smooth=s) for s in (0.1, 0))
    jitter = lambda r: np.abs(np.diff(r, n=2, axis=0)).mean()  # noqa: E731
    assert jitter(smooth["head_rotation"]) < jitter(raw["head_rotation"])


def test_generate_retrieve_mode_replays_training_poses_without_jumps(persona):
    p, y = persona
    out = ps.generate_pose(p, y[: 6 * SR], FPS, mode="retrieve", seed=1)
    bank = np.concatenate([p.train_poses["head_rotation"], p.train_poses["head_translation"]], 1)
    got = np.concatenate([out["head_rotation"], out["head_translation"]], 1)
    d = np.abs(got[:, None, :] - bank[None]).max(2).min(1)
    assert d.max() < 1e-9  # every frame is one of the persona's own recorded poses
    scale = pose_style.axis_scale(bank)
    natural = np.linalg.norm(np.diff(bank / scale, axis=0), axis=1).max()
    steps = np.linalg.norm(np.diff(got / scale, axis=0), axis=1)
    assert steps.max() <= natural + 1e-9
    assert len(np.unique(out["retrieved_frames"])) > 20  # it moves, not a frozen pose
    with pytest.raises(ps.PersonaError, match="mode"):
        ps.generate_pose(p, y[:SR], FPS, mode="dance")


def test_retrieve_path_follows_the_query():
    bank = styled(300, FPS, "nod", 0)
    query = bank[40:140] + np.random.default_rng(1).normal(0, 0.1, (100, 6)) * bank.std(0)
    path = pose_style.retrieve_path(query, bank)
    assert np.array_equal(path, np.arange(40, 140))  # the one real segment that fits is replayed as is
    # A query that wanders off the bank still gets a continuous replay of real poses.
    path = pose_style.retrieve_path(styled(200, FPS, "shake", 1), bank)
    scale = pose_style.axis_scale(bank)
    steps = np.linalg.norm(np.diff(bank[path] / scale, axis=0), axis=1)
    assert steps.max() <= np.linalg.norm(np.diff(bank / scale, axis=0), axis=1).max() + 1e-9


def _objective(query, bank, path, gap, loop, hold=2.0, jc=4.0, seed=0):
    """retrieve_path's objective for ``path``, asserting every transition is an allowed one."""
    scale = pose_style.axis_scale(bank)
    q, b = query / scale, bank / scale
    thr = np.percentile(np.linalg.norm(np.diff(b, axis=0), axis=1), 90)
    tb = np.random.default_rng(seed).uniform(0, 1e-6, len(b))
    cost = (((b[path] - q) ** 2).mean(1) + tb[path]).sum()
    for a, z in zip(path[:-1], path[1:]):
        if z in (a, a + 1):
            cost += hold * (z == a)
            continue
        d = np.linalg.norm(b[a] - b[z])
        assert d <= thr and abs(z - a) > gap and (z > a or a - z > loop), (a, z, d, thr)
        cost += jc + 0.1 * (d / thr) ** 2
    return cost


def _optimum(query, bank, gap, loop, hold=2.0, jc=4.0, seed=0):
    """Brute-force Viterbi over every (frame, frame) transition: the true minimum of the objective."""
    scale = pose_style.axis_scale(bank)
    q, b = query / scale, bank / scale
    n = len(b)
    thr = np.percentile(np.linalg.norm(np.diff(b, axis=0), axis=1), 90)
    m = ((q[:, None] - b[None]) ** 2).mean(2) + np.random.default_rng(seed).uniform(0, 1e-6, n)
    d = np.linalg.norm(b[:, None] - b[None], axis=2)
    off = np.arange(n)[None] - np.arange(n)[:, None]
    tr = np.where((d <= thr) & (np.abs(off) > gap) & ((off > 0) | (-off > loop)), jc + 0.1 * (d / thr) ** 2, np.inf)
    tr[off == 0], tr[off == 1] = hold, 0.0
    c = m[0]
    for t in range(1, len(q)):
        c = (c[:, None] + tr).min(0) + m[t]
    return c.min()


@pytest.mark.parametrize("k", range(4))
def test_retrieve_path_is_optimal_for_queries_in_the_banks_style(k):
    """Jumps only leave from the best path so far (what makes retrieval fast): in the bank's own style that
    is still the exact optimum; for a query unlike anything recorded it stays within a couple of percent."""
    bank = styled(120, FPS, "nod", k)
    rng = np.random.default_rng(k)
    for style, tol in (("nod", 1e-9), ("shake", 0.02)):
        q = pose_style.gaussian_smooth(styled(80, FPS, style, 10 + k), 2) * rng.uniform(0.5, 1.3)
        path = pose_style.retrieve_path(q, bank, min_jump_gap=6, min_loop=20)
        assert _objective(q, bank, path, 6, 20) <= _optimum(q, bank, 6, 20) * (1 + tol)


def test_retrieve_path_same_result_in_blocks_and_with_lazy_jump_rows(monkeypatch):
    bank = styled(200, FPS, "nod", 2)
    query = pose_style.gaussian_smooth(styled(300, FPS, "nod", 7), 2)
    want = pose_style.retrieve_path(query, bank, seed=3)
    assert np.array_equal(pose_style.retrieve_path(query, bank, seed=3), want)  # deterministic (cached costs)
    monkeypatch.setattr(pose_style, "_ROWS_MAX", 201 * 7)  # long inputs: blocks of 7 rows, recomputed
    assert np.array_equal(pose_style.retrieve_path(query, bank, seed=3), want)
    monkeypatch.setattr(pose_style, "_DENSE_MAX", 50)  # very long banks: jump costs row by row
    pose_style._jump_cache.clear()
    assert np.array_equal(pose_style.retrieve_path(query, bank, seed=3), want)
    assert not np.array_equal(pose_style.retrieve_path(query, bank, seed=4)[:0], want)  # other seeds run too
    assert len(pose_style.retrieve_path(query[:1], bank)) == 1 and len(pose_style.retrieve_path(query[:0], bank)) == 0


def test_retrieve_path_does_not_replay_a_short_loop_on_a_flat_query():
    bank = styled(300, FPS, "nod", 0)
    flat = np.repeat(bank[100:101], 250, axis=0)  # an untrained network: nearly constant prediction
    path = pose_style.retrieve_path(flat, bank, min_jump_gap=12, min_loop=50)
    _objective(flat, bank, path, 12, 50)  # only allowed transitions
    back = np.diff(path)[np.diff(path) < 0]
    assert len(back) and np.all(back < -50)  # it does go back, but never into a stretch shorter than 50
    assert len(np.unique(path)) >= 25
    short = pose_style.retrieve_path(flat, bank, min_jump_gap=12, min_loop=12)
    assert np.diff(short).min() > -50  # without the limit the cheapest answer is a fast cycle
    with pytest.raises(pose_style.PoseStyleError, match="NaN"):
        pose_style.retrieve_path(np.full((5, 6), np.nan), bank)


# ------------------------------------------------------------------------------ style statistics
def test_style_stats_and_frechet_separate_two_styles():
    nod_a, nod_b = styled(600, FPS, "nod", 1), styled(600, FPS, "nod", 2)
    shake = styled(600, FPS, "shake", 3)
    sa, ss = pose_style.style_stats(nod_a, FPS), pose_style.style_stats(shake, FPS)
    assert sa["amplitude"][0] > 20 * ss["amplitude"][0] and ss["amplitude"][1] > 20 * sa["amplitude"][1]
    assert sa["dominant"][0] == pytest.approx(0.4, abs=0.15) and ss["dominant"][1] == pytest.approx(2.0, abs=0.15)
    assert ss["centroid"][1] > 2 * sa["centroid"][0]
    same = pose_style.pose_frechet(nod_b, nod_a, FPS)
    diff = pose_style.pose_frechet(shake, nod_a, FPS)
    assert diff > 1000 * max(same, 1e-3)  # two takes of one style differ only by sampling noise
    assert pose_style.stats_distance(sa, pose_style.style_stats(nod_b, FPS)) < 0.3
    assert pose_style.stats_distance(sa, ss) > 1.0
    # The same style at another fps has the same (per-second) statistics.
    s60 = pose_style.style_stats(styled(1440, 60.0, "nod", 1), 60.0)
    assert s60["velocity"][0] == pytest.approx(sa["velocity"][0], rel=0.1)


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 2))
    assert pose_style.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert pose_style.frechet_distance(x, x + [3.0, 4.0]) == pytest.approx(25.0, rel=1e-3)
    assert pose_style.frechet_distance(x[:, :1], 2 * x[:, :1]) == pytest.approx(1.0, rel=0.03)  # (1 - 2)²
    with pytest.raises(pose_style.PoseStyleError):
        pose_style.frechet_distance(x, x[:, :1])


def test_nearest_window_distance_flags_copies():
    train = styled(300, FPS, "nod", 0)
    copy = train[50:200]
    other = styled(150, FPS, "nod", 9) * 0.7
    assert pose_style.nearest_window_distance(copy, train, FPS).max() < 1e-6
    assert np.median(pose_style.nearest_window_distance(other, train, FPS)) > 0.2
    with pytest.raises(pose_style.PoseStyleError):
        pose_style.style_stats(np.full((10, 6), np.nan), FPS)


def test_fine_tuned_persona_matches_the_target_style_on_held_out_audio():
    """DESIGN §6: on unseen audio the persona's motion has the target's statistics, without copying."""

    def clip(seed: int, seconds: float):
        ch, y = tracked_clip(seconds, seed)
        level = ch.get("expression")[:, 0]
        rot = np.zeros((ch.n_frames, 3))
        rot[:, 0] = pose_style.gaussian_smooth(0.2 * level, 2.0)  # the head follows the voice's pitch
        ch.set("head_rotation", rot)
        ch.set("head_translation", rot * 0.05)
        return ch, y

    ch, y = clip(0, 12.0)
    trained = ps.personalize(ch, y, "h", epochs=40, seq_len=16, net_overrides=TINY, device="cpu")
    untrained = ps.personalize(ch, y, "h", epochs=1, seq_len=16, net_overrides=TINY, device="cpu", seed=1)
    held_ch, held_y = clip(5, 8.0)
    truth = np.concatenate([held_ch.get("head_rotation"), held_ch.get("head_translation")], 1)
    target_stats = pose_style.style_stats(truth, FPS)

    def gen(p):
        out = ps.generate_pose(p, held_y, FPS, mode="network", n_frames=held_ch.n_frames)
        return np.concatenate([out["head_rotation"], out["head_translation"]], 1)

    good, bad = gen(trained), gen(untrained)
    # The spread is the person's (what the network misses is sampled back), the timing is learnt.
    assert pose_style.stats_distance(pose_style.style_stats(good, FPS), target_stats, keys=("amplitude",)) < 0.3
    corr = lambda g: np.corrcoef(g[:, 0], truth[:, 0])[0, 1]  # noqa: E731
    assert corr(good) > corr(bad) + 0.2
    assert pose_style.pose_frechet(good, truth, FPS) < pose_style.pose_frechet(bad, truth, FPS)
    train_poses = np.concatenate([trained.train_poses["head_rotation"], trained.train_poses["head_translation"]], 1)
    assert np.median(pose_style.nearest_window_distance(good, train_poses, FPS)) > 0.05  # not a replay
