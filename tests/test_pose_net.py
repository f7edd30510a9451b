"""Stage-1 audio features, network, loss and training (tiny sizes: every training run takes seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.audio import features as af
from inference.persona import pose_net, train_general, train_pose
from inference.protocol import Channels

torch.set_num_threads(1)
SR = 16000
TINY = dict(conv_channels=(4, 8), fc_dim=16, lstm_hidden=16, lstm_layers=1)


def tone_clip(seconds: float, fps: float, seed: int, offset: float = 0.0):
    """Tones whose pitch jumps every 0.4 s; head rotation (and one expression) follow the pitch."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    seg = int(0.4 * SR)
    pitches = rng.choice([220.0, 440.0, 880.0, 1760.0], size=n // seg + 1)
    f = np.repeat(pitches, seg)[:n]
    phase = 2 * np.pi * np.cumsum(f) / SR
    y = (0.3 * np.sin(phase) + 0.003 * rng.standard_normal(n)).astype(np.float32)
    t = np.arange(af.n_video_frames(n, fps)) / fps
    level = np.log2(f[np.minimum((t * SR).astype(int), n - 1)] / 220.0) / 3.0  # 0..1
    target = np.zeros((len(t), 2 + 9))
    target[:, 0] = level  # expression 0
    target[:, 5] = 0.3 * level - 0.1 + offset  # head rotation x (radians)
    target[:, 9] = 0.02 * level  # head translation y (metres)
    return y, target


# ------------------------------------------------------------------------------ features
@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 60])
def test_window_count_and_shape_for_any_fps(fps):
    y = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    w = af.frame_windows(y, fps)
    assert w.shape == (math.ceil(2 * fps - 1e-9), 28, 12)
    assert w.dtype == np.float32 and np.all(np.isfinite(w))
    # Explicit frame count (e.g. a channel take longer than the audio) pads instead of failing.
    assert af.frame_windows(y, fps, n_frames=len(w) + 5).shape[0] == len(w) + 5


def _click_audio():
    rng = np.random.default_rng(1)
    y = 0.001 * rng.standard_normal(2 * SR)
    i0 = SR  # a 5 ms tone burst starting at 1.0 s
    k = np.arange(80)
    y[i0:i0 + 80] += 0.5 * np.sin(2 * np.pi * 2000 * k / SR) * np.hanning(80)
    return y.astype(np.float32)


@pytest.mark.parametrize("fps", [25, 30, 29.97, 60])
def test_click_lands_at_the_right_window_offset(fps):
    w = af.frame_windows(_click_audio(), fps)
    frame = int(round(1.0 * fps))  # the frame at (about) 1.0 s
    dev = np.linalg.norm(w[frame] - np.median(w[frame], axis=0), axis=1)
    assert int(np.argmax(dev)) == 12  # offset 0 ms is index 12 of the -120..+160 ms window
    # 40 ms (one 25 fps frame) earlier, the click is 4 MFCC frames later in the window.
    if fps == 25:
        dev = np.linalg.norm(w[frame - 1] - np.median(w[frame - 1], axis=0), axis=1)
        assert int(np.argmax(dev)) == 16


def test_mfcc_matches_librosa():
    import librosa

    y = _click_audio()[: SR // 2] + np.sin(np.arange(SR // 2) * 0.1).astype(np.float32) * 0.1
    cfg = af.FeatureConfig()
    ours = af.mfcc(y, cfg)
    ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=13, n_fft=512, win_length=400, hop_length=160, n_mels=40,
                               fmax=8000).T[:, 1:]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_feature_config_round_trip_and_bad_input():
    cfg = af.FeatureConfig(pad="zero")
    assert af.FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(af.AudioFeatureError, match="unknown"):
        af.FeatureConfig.from_dict({"bogus": 1})
    y = np.zeros(SR, np.float32)
    with pytest.raises(af.AudioFeatureError, match="44100 Hz"):
        af.frame_windows(y, 25, sample_rate=44100)
    with pytest.raises(af.AudioFeatureError, match="mono"):
        af.frame_windows(np.zeros((SR, 2), np.float32), 25)
    with pytest.raises(af.AudioFeatureError, match="empty"):
        af.frame_windows(np.zeros(0, np.float32), 25)
    with pytest.raises(af.AudioFeatureError, match="NaN"):
        af.frame_windows(np.full(SR, np.nan, np.float32), 25)
    assert np.all(np.isfinite(af.frame_windows(y, 25)))  # digital silence is fine


# ------------------------------------------------------------------------------ network and loss
def test_loss_terms_exact():
    target = torch.zeros(1, 3, 4)
    pred = torch.zeros(1, 3, 4)
    pred[..., :2] = 1.0
    pred[0, :, 2:] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
    t = pose_net.pose_loss(pred, target, n_face=2)
    assert float(t["expression"]) == pytest.approx(1.0)
    assert float(t["pose"]) == pytest.approx(20 / 6)
    assert float(t["d_pose"]) == pytest.approx(5.0)  # mean of |(1,1)|² = 2 and |(2,2)|² = 8
    assert float(t["d_expression"]) == pytest.approx(0.0)
    assert float(t["total"]) == pytest.approx(1.0 + 0.2 * 20 / 6 + 0.01 * 5.0)
    pred[0, :, 0] = torch.tensor([0.0, 2.0, 0.0])
    t = pose_net.pose_loss(pred, target, n_face=2)
    assert float(t["d_expression"]) == pytest.approx(4.0)


def test_network_shapes_and_optimizer():
    cfg = pose_net.NetConfig(n_expr=5, **TINY)
    net = pose_net.build(cfg)
    out = net(torch.randn(2, 7, 28, 12))
    assert out.shape == (2, 7, 5 + 9)
    assert pose_net.make_optimizer(net, 1e-3).param_groups[0]["betas"] == (0.5, 0.999)
    full = pose_net.AudioPoseNet(pose_net.NetConfig(n_expr=50))
    assert full.lstm.num_layers == 3 and full.lstm.hidden_size == 256
    with pytest.raises(pose_net.PoseNetError, match="does not fit"):
        pose_net.build(pose_net.NetConfig(n_expr=6, **TINY), net.state_dict())


def test_predict_chunks_agree_with_a_single_pass():
    torch.manual_seed(0)
    net = pose_net.build(pose_net.NetConfig(n_expr=2, **TINY))
    x = np.random.default_rng(0).standard_normal((20, 28, 12)).astype(np.float32)
    whole = pose_net.predict(net, x, seq_len=64)
    with torch.no_grad():
        direct = net.denormalise(net(torch.from_numpy(x)[None]))[0].numpy()
    assert np.allclose(whole, direct, atol=1e-5)
    long = pose_net.predict(net, np.concatenate([x] * 10), seq_len=16)
    assert long.shape == (200, 11) and np.all(np.isfinite(long))


# ------------------------------------------------------------------------------ training
def _clip_data(seconds, seed, offset=0.0, fps=25):
    y, target = tone_clip(seconds, fps, seed, offset)
    return af.frame_windows(y, fps), target


def test_training_learns_a_known_audio_to_pose_mapping():
    feats, target = _clip_data(24, seed=3)
    cfg = pose_net.NetConfig(n_expr=2, **TINY)
    calls = []
    state, hist = train_pose.train(feats, target, cfg, epochs=25, seq_len=16, batch_size=16, seed=0,
                                   progress=lambda f, m: calls.append(f), device="cpu")
    assert calls and calls[-1] == pytest.approx(hist["epochs_run"] / 25)
    assert hist["lr"] == 1e-3
    assert hist["best_val_loss"] < 0.35 * hist["val_loss"][0]
    # Held-out frames (the last 20 %): the rotation follows the pitch.
    net = pose_net.build(cfg, state)
    n_val = int(round(len(target) * 0.2))
    pred = pose_net.predict(net, feats[-n_val:], seq_len=16)
    truth = target[-n_val:, 5]
    r2 = 1 - ((pred[:, 5] - truth) ** 2).mean() / truth.var()
    assert r2 > 0.6, r2


def test_training_is_deterministic_and_cancellable():
    feats, target = _clip_data(6, seed=4)
    cfg = pose_net.NetConfig(n_expr=2, **TINY)
    s1, h1 = train_pose.train(feats, target, cfg, epochs=2, seq_len=16, seed=7, device="cpu")
    s2, h2 = train_pose.train(feats, target, cfg, epochs=2, seq_len=16, seed=7, device="cpu")
    assert h1["val_loss"] == h2["val_loss"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    with pytest.raises(train_pose.TrainingCancelled):
        train_pose.train(feats, target, cfg, epochs=5, seq_len=16, cancelled=lambda: True, device="cpu")
    with pytest.raises(train_pose.TrainingError, match="line up"):
        train_pose.train(feats[:-3], target, cfg, epochs=1, device="cpu")
    with pytest.raises(train_pose.TrainingError, match="columns"):
        train_pose.train(feats, target[:, :-1], cfg, epochs=1, device="cpu")


def test_fine_tuning_starts_from_the_general_model():
    cfg = pose_net.NetConfig(n_expr=2, **TINY)
    general_clips = [_clip_data(10, seed=s) for s in (10, 11)]
    g_state, _ = train_pose.train([c[0] for c in general_clips], [c[1] for c in general_clips], cfg,
                                  epochs=25, seq_len=16, seed=0, device="cpu")
    feats, target = _clip_data(12, seed=12, offset=0.05)  # a "person" with a slightly different mean pose
    _, scratch = train_pose.train(feats, target, cfg, epochs=3, seq_len=16, seed=0, device="cpu")
    tuned_state, tuned = train_pose.train(feats, target, cfg, init_state=g_state, epochs=15, seq_len=16, seed=0,
                                          device="cpu")
    assert tuned["lr"] == 1e-4
    assert tuned["val_loss"][0] < 0.5 * scratch["val_loss"][0]  # it really started from the general model
    assert tuned["best_val_loss"] <= tuned["val_loss"][0]
    # Fine-tuning keeps the general model's normalisation (its outputs keep their meaning).
    assert torch.equal(tuned_state["target_mean"], g_state["target_mean"])


def test_general_cli_trains_from_a_folder_of_tracked_clips(tmp_path, capsys):
    import soundfile

    from inference.persona import persona

    for i in range(2):
        y, target = tone_clip(4, 25, seed=20 + i)
        ch = Channels(fps=25, n_frames=len(target), expr_names=("browInnerUp", "jawOpen"))
        ch.set("expression", target[:, :2])
        ch.set("jaw", target[:, 2:5])
        ch.set("head_rotation", target[:, 5:8])
        ch.set("head_translation", target[:, 8:11])
        sub = tmp_path / f"speaker{i}"
        sub.mkdir()
        ch.save(sub / "take.npz")
        soundfile.write(sub / "take.wav", np.repeat(y, 3)[::2], 24000)  # not 16 kHz: gets resampled
    out = tmp_path / "general.pt"
    rc = train_general.main(["--general", str(tmp_path), "--out", str(out), "--epochs", "2", "--seq-len", "16",
                          "--hidden", "16", "--layers", "1", "--fc", "16", "--conv", "4,8"])
    assert rc == 0, capsys.readouterr()
    g = persona.load_general_model(out)
    assert g["expr_names"] == ["browInnerUp", "jawOpen"] and g["meta"]["n_clips"] == 2
    assert train_general.main(["--general", str(tmp_path / "speaker0" / "nothing"), "--out", str(out)]) == 1
    assert "no tracked clips" in capsys.readouterr().err
