"""Personalization done-when: a persona learnt from a synthetic target moves the head in the target's style.

THE TARGET. One voice (espeak-ng, en-us) reads the three LibriSpeech fixture transcripts in phrases of
3-8 words separated by random pauses; the first two readings (about 50 s) are the training video's
audio, the third (about 24 s) is held out. The target's head motion is a known function of that
speech — large slow nods: the head pitches down while speaking and comes back up in pauses (a causal
0.4 s envelope of the speech/pause mask), yaw sways with the difference of a fast and a slow envelope,
a characteristic 8.6° roll tilt, and a forward bob. It is clearly unlike the generic procedural
motion (inference/motion/head_motion.py: small, noise-driven, centred). Same voice for training and held-out
audio: personalization learns one person, whose new recordings it then animates.

THE TRACKED POSES are taken directly from these known synthetic channels in the main test. The end-to-end
test at the bottom goes the whole way instead: the target's motion keyed on the default head, rendered in
Blender with the training reading as its sound, tracked, and the persona learnt from the TRACKED poses and
the video's own audio (tracking accuracy itself is tested in tests/test_tracking.py).

THE RUN goes through the real worker job handlers: "personalize" (channels_file + audio -> persona file)
then "generate" with and without ``persona`` on the held-out audio. The network is REDUCED for test
speed (conv 16/32, FC 64, a 2-layer LSTM of 64; bench/bench_personalize.py times the full size) and
learns from all frames of the two training readings (n_frames=0).

THE CRITERIA (held-out audio): Fréchet distance on 1 s windows (pose_style.pose_frechet) and the style
statistics distance (pose_style.stats_distance: amplitude, velocity, spectral centroid per axis) from
the persona's motion to the target's are both at most half the generic motion's. Not a copy: the
median nearest-window distance from the generated motion to the training poses is above
COPY_FLOOR (0.05 of the training poses' per-axis spread, RMS over a 1 s window) and fewer than 10 % of
its windows are closer than 0.01 — while retrieval mode, which replays training poses on purpose,
lands below the floor (the check can tell a copy).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from inference.audio import prosody
from inference.persona import pose_style
from inference.worker.jobs import JobContext, JobError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic_head  # noqa: E402

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores: oversubscribed threads make training many times slower

SR, FPS = 16_000, 25.0
SMALL_NET = {"conv_channels": [16, 32], "fc_dim": 64, "lstm_hidden": 64, "lstm_layers": 2}
COPY_FLOOR = 0.05
TILT = 0.15  # rad: the target's characteristic roll

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


# ------------------------------------------------------------------------------ the synthetic target
def _say(text: str) -> np.ndarray:
    from scipy.signal import resample_poly

    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-p", "45", "--stdout", text],
                         capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    x = resample_poly(x, SR, sr).astype(np.float32)
    idx = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return x[idx[0]: idx[-1] + 1]


def read_aloud(text: str, seed: int) -> np.ndarray:
    """The text in phrases of 3-8 words with 0.25-1 s pauses between them (16 kHz mono)."""
    rng = np.random.default_rng(seed)
    words, pieces, i = text.split(), [np.zeros(int(0.4 * SR), np.float32)], 0
    while i < len(words):
        k = int(rng.integers(3, 9))
        pieces += [_say(" ".join(words[i:i + k])), np.zeros(int(rng.uniform(0.25, 1.0) * SR), np.float32)]
        i += k
    y = np.concatenate(pieces) + rng.normal(0, 1e-3, sum(p.size for p in pieces)).astype(np.float32)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def _causal_smooth(x: np.ndarray, rate: float, tau: float) -> np.ndarray:
    a = np.exp(-1.0 / (tau * rate))
    y, acc = np.empty_like(x), x[0]
    for i, v in enumerate(x):
        acc = a * acc + (1 - a) * v
        y[i] = acc
    return y


def target_style(audio: np.ndarray, n_frames: int, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """The target person's head motion for ``audio``: (rotation (T,3), translation (T,3)) at ``fps``."""
    db, f0 = prosody.chunk_features(audio)
    speech = prosody.summarize(db, f0).speech.astype(float)
    t100, t = np.arange(len(db)) / 100.0, np.arange(n_frames) / fps
    s = np.interp(t, t100, _causal_smooth(speech, 100.0, 0.4))
    sl = np.interp(t, t100, _causal_smooth(speech, 100.0, 1.5))
    rot = np.stack([0.35 * s - 0.15, 0.30 * (s - sl), TILT + 0.10 * (s - sl)], axis=1)
    trans = np.stack([0.006 * (s - sl), 0.02 * s, 0.012 * sl], axis=1)
    return rot, trans


def n_frames_of(audio: np.ndarray, fps: float = FPS) -> int:
    return int(np.floor(len(audio) / SR * fps - 1e-9)) + 1


class Ctx(JobContext):
    """A job context outside the worker: progress goes to a list."""

    def __init__(self, tmp) -> None:
        self.events: list[dict] = []
        super().__init__("test", "test", self.events.append, str(tmp))


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    from inference.heads.default_head import cache_path, load_or_build

    cache = tmp_path_factory.mktemp("head-cache")
    load_or_build(cache)
    return cache_path(cache)


@pytest.fixture(scope="module")
def target(tmp_path_factory, head_file):
    """Training readings + their target channels on disk, and the held-out reading."""
    from inference.heads.head_model import HeadModel
    from inference.persona.persona import upper_face_mask
    from inference.protocol import Channels

    texts = sorted((Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "speech").glob("*.txt"))
    if len(texts) < 3:
        pytest.skip("needs the three shared speech transcripts")
    readings = [read_aloud(p.read_text().strip(), seed=i) for i, p in enumerate(texts[:3])]
    train_audio, held_out = np.concatenate(readings[:2]), readings[2]
    d = tmp_path_factory.mktemp("target")
    head = HeadModel.load(head_file)
    n = n_frames_of(train_audio)
    rot, trans = target_style(train_audio, n)
    ch = Channels(fps=FPS, n_frames=n, expr_names=head.expr_names, meta={"producer": "synthetic target"})
    upper = np.flatnonzero(upper_face_mask(head.expr_names))
    expr = np.zeros((n, len(head.expr_names)))
    expr[:, upper[:2]] = 2.0 * (rot[:, :1] + 0.15)  # brows rise with the nods
    ch.set("expression", expr)
    ch.set("jaw", np.zeros((n, 3)))
    ch.set("head_rotation", rot)
    ch.set("head_translation", trans)
    paths = {"channels": str(d / "tracked.npz"), "train_wav": str(d / "train.wav"),
             "held_out_wav": str(d / "held_out.wav"), "persona": str(d / "target.persona.pt")}
    ch.save(paths["channels"])
    sf.write(paths["train_wav"], train_audio, SR)
    sf.write(paths["held_out_wav"], held_out, SR)
    return {"paths": paths, "held_out": held_out, "train_pose": np.concatenate([rot, trans], 1), "dir": d}


@pytest.fixture(scope="module")
def trained(target, head_file):
    from inference.worker.personalize import personalize_job

    p = target["paths"]
    ctx = Ctx(target["dir"])
    t0 = time.perf_counter()
    result = personalize_job({"channels_file": p["channels"], "audio_file": p["train_wav"], "head_file": head_file,
                              "persona_out": p["persona"], "epochs": 100, "n_frames": 0, "device": "cpu",
                              "net_overrides": SMALL_NET}, ctx)
    result["wall_s"] = time.perf_counter() - t0
    result["events"] = ctx.events
    return result


def _generate(head_file: str, audio: str, tmp, **extra) -> np.ndarray:
    from inference.protocol import Channels
    from inference.worker.generate import generate

    res = generate({"audio": audio, "head_file": head_file, "fps": FPS, **extra}, Ctx(tmp))
    ch = Channels.load(res["channels_file"])
    return ch, np.concatenate([ch.get("head_rotation"), ch.get("head_translation")], axis=1)


# ------------------------------------------------------------------------------ the done-when
@pytest.mark.slow
def test_persona_is_closer_to_the_target_style_than_generic_motion(target, trained, head_file, tmp_path):
    p = target["paths"]
    assert trained["persona_file"] == p["persona"] and trained["held_out_loss"] is not None
    assert any(e.get("type") == "progress" for e in trained["events"])
    held = target["held_out"]
    ch_p, persona_pose = _generate(head_file, p["held_out_wav"], tmp_path, persona=p["persona"])
    ch_g, generic_pose = _generate(head_file, p["held_out_wav"], tmp_path)
    rot, trans = target_style(held, ch_p.n_frames)
    want = np.concatenate([rot, trans], axis=1)

    fd_p, fd_g = pose_style.pose_frechet(persona_pose, want, FPS), pose_style.pose_frechet(generic_pose, want, FPS)
    ref = pose_style.style_stats(want, FPS)
    sd_p = pose_style.stats_distance(pose_style.style_stats(persona_pose, FPS), ref)
    sd_g = pose_style.stats_distance(pose_style.style_stats(generic_pose, FPS), ref)
    print(f"\nheld-out {len(held) / SR:.1f} s; train {trained['wall_s']:.1f} s ({trained['history']['epochs_run']} "
          f"epochs); Fréchet persona {fd_p:.2f} vs generic {fd_g:.2f}; stats persona {sd_p:.3f} vs generic {sd_g:.3f}")
    assert fd_p <= 0.5 * fd_g, (fd_p, fd_g)
    assert sd_p <= 0.5 * sd_g, (sd_p, sd_g)
    # The characteristic tilt is learnt (generic motion is centred on the rest pose).
    assert abs(persona_pose[:, 2].mean() - want[:, 2].mean()) < 0.3 * TILT
    assert abs(generic_pose[:, 2].mean() - want[:, 2].mean()) > 0.8 * TILT

    # Lips and blinks stay the lip engine's: the persona only replaced head pose and upper face.
    assert np.array_equal(ch_p.get("jaw"), ch_g.get("jaw")) and np.array_equal(ch_p.get("eyelids"), ch_g.get("eyelids"))
    from inference.persona.persona import upper_face_mask

    lower = ~np.asarray(upper_face_mask(ch_p.expr_names))
    assert np.array_equal(ch_p.get("expression")[:, lower], ch_g.get("expression")[:, lower])
    assert ch_p.meta["persona"] == "target.persona.pt"

    # The default mode replays the person's own motion, stretch by stretch; the network's is not a copy.
    train_pose = target["train_pose"]
    _, network_pose = _generate(head_file, p["held_out_wav"], tmp_path, persona=p["persona"], persona_mode="network")
    assert pose_style.pose_frechet(network_pose, want, FPS) <= 0.5 * fd_g
    nwd = pose_style.nearest_window_distance(network_pose, train_pose, FPS)
    print(f"nearest-window distance to training poses: median {np.median(nwd):.3f}, "
          f"min {nwd.min():.3f} (floor {COPY_FLOOR})")
    assert np.median(nwd) > COPY_FLOOR and np.mean(nwd < 0.01) < 0.1
    _, retrieved = _generate(head_file, p["held_out_wav"], tmp_path, persona=p["persona"], persona_mode="retrieve")
    copies = pose_style.nearest_window_distance(retrieved, train_pose, FPS)
    print(f"retrieve: {np.mean(copies < 0.01):.0%} of windows verbatim, median {np.median(copies):.3f}")
    assert np.mean(copies < 0.01) > 0.3  # it replays recorded stretches (the network never does)


# ------------------------------------------------------------------------------ job errors
def test_generate_refuses_a_persona_made_for_another_head(target, trained, tmp_path):
    other = tmp_path / "other_head.npz"
    synthetic_head.build().save(other)
    with pytest.raises(JobError, match="another head"):
        _generate(str(other), target["paths"]["held_out_wav"], tmp_path, persona=target["paths"]["persona"])


def test_generate_rejects_a_bad_persona_file_or_mode(target, head_file, tmp_path):
    junk = tmp_path / "junk.persona.pt"
    junk.write_bytes(b"not a persona")
    wav = target["paths"]["held_out_wav"]
    with pytest.raises(JobError, match="not a (readable|plain-data) Cadence persona"):
        _generate(head_file, wav, tmp_path, persona=str(junk))
    with pytest.raises(JobError, match="not found"):
        _generate(head_file, wav, tmp_path, persona=str(tmp_path / "missing.persona.pt"))
    with pytest.raises(JobError, match="persona_mode"):
        _generate(head_file, wav, tmp_path, persona=target["paths"]["persona"], persona_mode="dance")


def test_personalize_job_input_errors(target, head_file, tmp_path):
    from inference.worker.personalize import personalize_job
    p = target["paths"]
    base = {"channels_file": p["channels"], "audio_file": p["train_wav"], "head_file": head_file,
            "persona_out": str(tmp_path / "x.persona.pt"), "epochs": 1, "net_overrides": SMALL_NET}
    cases = [
        ({"channels_file": None, "video": None}, "tracked take"),
        ({"audio_file": None}, "needs its audio"),
        ({"persona_out": ""}, "persona_out"),
        ({"epochs": "many"}, "whole number"),
        ({"channels_file": str(tmp_path / "none.npz")}, "cannot be read"),
        ({"audio_file": str(tmp_path / "none.wav")}, "not found|does not exist|no such"),
    ]
    other = tmp_path / "other_head.npz"
    synthetic_head.build().save(other)
    cases.append(({"head_file": str(other)}, "another head"))
    for change, message in cases:
        with pytest.raises(JobError, match=f"(?i){message}"):
            personalize_job({**base, **change}, Ctx(tmp_path))
    assert not (tmp_path / "x.persona.pt").exists()


def test_personalize_job_is_cancellable(target, head_file, tmp_path):
    from inference.worker.jobs import JobCancelled
    from inference.worker.personalize import personalize_job

    p = target["paths"]
    ctx = Ctx(tmp_path)
    ctx.cancel()
    with pytest.raises(JobCancelled):
        personalize_job({"channels_file": p["channels"], "audio_file": p["train_wav"], "head_file": head_file,
                         "persona_out": str(tmp_path / "c.persona.pt"), "net_overrides": SMALL_NET}, ctx)
    assert not (tmp_path / "c.persona.pt").exists()


def test_personalize_job_learns_from_several_clips(target, head_file, tmp_path):
    from inference.persona.persona import load_persona
    from inference.worker.personalize import personalize_job

    p = target["paths"]
    clip = {"channels_file": p["channels"], "audio_file": p["train_wav"]}
    out = str(tmp_path / "two.persona.pt")
    res = personalize_job({"clips": [clip, clip], "head_file": head_file, "persona_out": out, "epochs": 1,
                           "n_frames": 0, "net_overrides": SMALL_NET, "device": "cpu"}, Ctx(tmp_path))
    persona = load_persona(out)
    n = persona.meta["n_frames"] // 2
    assert res["n_clips"] == 2 and persona.meta["clip_starts"] == [0, n]
    assert np.array_equal(persona.train_poses["head_rotation"][:n], persona.train_poses["head_rotation"][n:])
    with pytest.raises(JobError, match="neither"):
        personalize_job({"clips": [clip, {}], "head_file": head_file, "persona_out": out, "epochs": 1}, Ctx(tmp_path))


# ------------------------------------------------------------------------------ end to end, through Blender
RENDER_SECONDS = 60.0  # of the training reading (all of its ~50 s), rendered and tracked


def _head_slice(ch, n: int, channels_type):
    """The first ``n`` frames of ``ch`` as ``channels_type`` (the extension's own Channels, to key them)."""
    groups = {g: ch.get(g)[:n] for g in ("head_rotation", "head_translation", "jaw", "expression")}
    return channels_type(fps=ch.fps, n_frames=n, expr_names=ch.expr_names, groups=groups)


@pytest.mark.slow
def test_persona_learnt_from_a_rendered_and_tracked_target(cadence, clean_scene, calibrated_cache, cache_folder,
                                                           target, head_file, tmp_path):
    """The whole path: the target rendered talking in Blender (its known motion keyed on the default head, the
    training reading as the video's sound), the video tracked, the persona learnt from the TRACKED poses and
    the video's own audio. On held-out audio it still moves in the target's style."""
    import bpy
    from test_tracking import SIZE, encode_mp4, geodesic_deg

    from inference.heads.head_model import HeadModel
    from inference.protocol import Channels
    from inference.tracking.track import track_video
    from inference.worker.personalize import personalize_job

    p = target["paths"]
    synthetic = Channels.load(p["channels"])
    n = min(synthetic.n_frames, int(RENDER_SECONDS * FPS))
    known = _head_slice(synthetic, n, cadence.inference.protocol.Channels)
    audio, _sr = sf.read(p["train_wav"], dtype="float32")
    cut = tmp_path / "reading.wav"
    sf.write(cut, audio[: int(n / FPS * SR)], SR)
    scene = clean_scene
    scene.render.fps, scene.render.fps_base = int(FPS), 1.0
    with cache_folder(calibrated_cache):
        assert bpy.ops.cadence.add_head() == {"FINISHED"}
        rig = bpy.context.active_object
        cadence.operators.keys.keyframes.write_take(rig, known, frame_start=1, take_name="Target")
        cam = cadence.operators.preview.stage(scene, rig, engine="WORKBENCH", size=SIZE)
        scene.frame_start, scene.frame_end = 1, n
        scene.render.image_settings.file_format = "PNG"
        scene.render.filepath = str(tmp_path / "frames" / "f_")
        t0 = time.perf_counter()
        bpy.ops.render.render(animation=True)
        t_render = time.perf_counter() - t0
        video = encode_mp4(str(tmp_path / "frames" / "f_%04d.png"), FPS, str(tmp_path / "target.mp4"), audio=str(cut))
        head = HeadModel.load(cadence.operators.landmarks.ensure_landmark_embedding(rig, bpy.context))
        lens = cam.data.lens * 36.0 / cam.data.sensor_width
    res = track_video(video, head, fps=FPS, audio_dir=tmp_path, lens_mm=lens)
    m = min(res.n_frames, n)  # the encoder's -shortest may drop the last frame
    assert res.audio_file is not None and m >= n - 1, (res.audio_file, res.n_frames, n)
    rot_err = geodesic_deg(res.channels.get("head_rotation")[:m], known.get("head_rotation")[:m])
    tracked_file = str(tmp_path / "tracked.npz")
    res.channels.save(tracked_file)
    persona = str(tmp_path / "tracked.persona.pt")
    personalize_job({"channels_file": tracked_file, "audio_file": res.audio_file, "head_file": head_file,
                     "persona_out": persona, "epochs": 100, "n_frames": 0, "device": "cpu",
                     "net_overrides": SMALL_NET}, Ctx(tmp_path))

    held = target["held_out"]
    ch_p, persona_pose = _generate(head_file, p["held_out_wav"], tmp_path, persona=persona)
    _ch_g, generic_pose = _generate(head_file, p["held_out_wav"], tmp_path)
    rot, trans = target_style(held, ch_p.n_frames)
    # The tracker knows translation up to the camera's place: relative to the tracked clip's mean.
    trans = trans - known.get("head_translation").mean(0)
    want = np.concatenate([rot, trans], axis=1)
    fd_p, fd_g = (pose_style.pose_frechet(x, want, FPS) for x in (persona_pose, generic_pose))
    ref = pose_style.style_stats(want, FPS)
    sd_p, sd_g = (pose_style.stats_distance(pose_style.style_stats(x, FPS), ref) for x in (persona_pose, generic_pose))
    # The rotation alone (the target's translation, 1-5 mm std, is near what a 320 px video resolves).
    ref3 = pose_style.style_stats(want[:, :3], FPS)
    sd3 = [pose_style.stats_distance(pose_style.style_stats(x[:, :3], FPS), ref3) for x in (persona_pose, generic_pose)]
    print(f"\nrendered {n} frames in {t_render:.0f} s; tracked head rotation error {rot_err.mean():.2f} deg; "
          f"Fréchet persona {fd_p:.2f} vs generic {fd_g:.2f}; stats persona {sd_p:.3f} vs generic {sd_g:.3f} "
          f"(rotation only: {sd3[0]:.3f} vs {sd3[1]:.3f})")
    assert rot_err.mean() < 3.0
    assert fd_p <= 0.5 * fd_g, (fd_p, fd_g)
    assert sd_p <= 0.5 * sd_g, (sd_p, sd_g)
    assert abs(persona_pose[:, 2].mean() - want[:, 2].mean()) < 0.3 * TILT
