"""The refiner's worker side (stage 2) on a tiny stand-in clip (tests/refiner_scene.py), CPU, no Blender:
crops, memory, background matching, training, the refiner file, refine -> mp4, the jobs' errors and cancel."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import refiner_scene as rs
import torch

from inference.refiner import background, crops, frames, pairs, refine, train
from inference.refiner.memory import Memory
from inference.refiner.networks import RefinerConfig
from inference.worker.jobs import JobCancelled, JobContext, JobError
from inference.worker.refiner import refine_video_job, train_refiner_job

N = 40
TINY = {"base": 8, "depth": 3, "key_dim": 16, "disc_base": 8, "memory_size": 16, "thumb": 4}


class Ctx(JobContext):
    def __init__(self, tmp) -> None:
        self.events: list[dict] = []
        super().__init__("test", "test", self.events.append, str(tmp))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("refiner-clip")
    rs.write_renders(str(d / "renders"), N)
    rs.write_video(str(d / "clip.mp4"), N)
    return d


@pytest.fixture(scope="module")
def trained(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("refiner") / "r.refiner.pt"
    res = train_refiner_job({"renders_dir": str(clip / "renders"), "video": str(clip / "clip.mp4"),
                             "refiner_out": str(out), "size": 32, "net_overrides": TINY, "max_iters": 120,
                             "max_minutes": 10}, Ctx(tmp_path_factory.mktemp("ctx")))
    return out, res


def _ffprobe_counts(path: str) -> tuple[int, bool]:
    import cv2

    cap = cv2.VideoCapture(path)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    from inference.tracking.video import has_audio

    return n, bool(has_audio(path))


# ------------------------------------------------------------------------------------------- crops
def test_boxes_follow_the_silhouette_and_paste_inverts_cut():
    alpha = np.zeros((60, 80))
    alpha[10:40, 30:50] = 1.0
    box = crops.silhouette_box(alpha)
    side = crops.MARGIN * 20  # the head's width, not its height (a neck may run out of the frame)
    assert np.allclose(box, [40.0, 10 + (0.5 - crops.TOP) * side, side])
    assert crops.silhouette_box(np.zeros((5, 5))) is None
    steady = crops.steady_boxes([box, None, box + [4, 0, 0]], 25.0)
    assert steady.shape == (3, 3) and 40 <= steady[1, 0] <= 44
    with pytest.raises(crops.CropError):
        crops.steady_boxes([None, None], 25.0)
    yy, xx = np.mgrid[0:60, 0:80]
    frame = np.dstack([0.5 + 0.4 * np.sin(xx / 5), 0.5 + 0.4 * np.cos(yy / 4), xx / 80]).astype(np.float32)
    c = crops.cut(frame, box, 31)  # side 31: 1:1
    back = crops.paste(np.zeros_like(frame), c, np.ones((31, 31)), box)
    inner = (slice(12, 30), slice(33, 47))
    assert np.abs(back[inner] - frame[inner]).mean() < 0.05  # same pixels where the box is, 1:1 scale
    assert back[55, 5].sum() == 0  # outside the box: the frame below


# ------------------------------------------------------------------------------------------ memory
def test_memory_reads_what_it_stored_and_the_triplet_loss_separates_values():
    g = torch.Generator().manual_seed(0)
    mem = Memory(8, 4, 3, threshold=0.1, generator=g)
    keys = torch.nn.functional.normalize(torch.randn(4, 4, generator=g), dim=1)
    values = torch.eye(4, 3)
    mem.update(keys, values)
    assert mem.filled() == 4
    assert torch.allclose(mem.read(keys), values)
    # a query whose true value is value 0 but which sits nearest key 1: the loss is positive, and falls when
    # the query moves toward key 0
    q = torch.nn.functional.normalize(keys[1] + 0.1 * keys[0], dim=0)[None].requires_grad_(True)
    loss = mem.triplet_loss(q, values[:1])
    assert float(loss.detach()) > 0
    loss.backward()
    moved = torch.nn.functional.normalize(q.detach() - 0.5 * q.grad, dim=1)
    assert float(mem.triplet_loss(moved, values[:1])) < float(loss.detach())
    # a near value refreshes its slot's key instead of taking a new slot
    mem.update(keys[:1], values[:1] + 0.01)
    assert mem.filled() == 4
    state = Memory.from_state(mem.state())
    assert torch.allclose(state.read(keys), mem.read(keys))


# ------------------------------------------------------------------------------------- backgrounds
def _poses(yaw_deg: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    m = np.tile(np.eye(4), (len(yaw_deg), 1, 1))
    m[:, :3, :3] = Rotation.from_euler("y", np.asarray(yaw_deg)[:, None], degrees=True).as_matrix()
    m[:, 2, 3] = -1.0
    return m


def test_background_matching_follows_the_pose_and_plays_on():
    clip = _poses(np.linspace(-20, 20, 100))  # the clip turns slowly left to right
    take = _poses(np.concatenate([np.linspace(-10, 0, 30), np.full(20, 15.0)]))
    path = background.match(take, clip, 25.0)
    want = np.interp(np.concatenate([np.linspace(-10, 0, 30), np.full(20, 15.0)]), np.linspace(-20, 20, 100),
                     np.arange(100))
    assert np.abs(path[5:25] - want[5:25]).max() <= 8
    assert np.abs(path[-10:] - want[-10:]).max() <= 12
    steps = np.diff(path)
    assert (np.abs(steps) <= background.WINDOW + 1).mean() > 0.95  # it plays, it rarely jumps


# ------------------------------------------------------------------------------------ train, refine
def test_training_lowers_the_loss_and_raises_held_out_psnr(trained):
    out, res = trained
    assert os.path.isfile(out) and res["textured"] and not res["warnings"]
    assert np.mean(res["loss_l1_last"]) < 0.6 * np.mean(res["loss_l1_first"])
    assert res["val_psnr"] > res["val_psnr_start"] + 3.0
    assert res["n_val"] == round(train.VAL_FRACTION * N) and res["n_train"] == N - res["n_val"]


def test_refiner_file_round_trip_and_refusals(trained, tmp_path):
    out, _ = trained
    nets, state = train.load(str(out), "h" * 16)
    assert state["clip"]["n_frames"] == N and nets.cfg.size == 32
    with pytest.raises(train.RefinerError, match="another head"):
        train.load(str(out), "x" * 16)
    bad = tmp_path / "bad.refiner.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(train.RefinerError, match="not a Cadence refiner"):
        train.load(str(bad))

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"format": train.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(train.RefinerError):
        train.load(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "pwned").exists()
    torch.save({"format": train.FORMAT, "version": train.VERSION, "config": {"size": 10 ** 6}}, tmp_path / "big.pt")
    with pytest.raises(train.RefinerError, match="damaged"):
        train.load(str(tmp_path / "big.pt"))


def test_refine_writes_the_takes_frames_with_its_audio(trained, clip, tmp_path):
    import soundfile as sf

    out, _ = trained
    wav = tmp_path / "voice.wav"
    sr = 16000
    sf.write(wav, 0.1 * np.sin(2 * np.pi * 220 * np.arange(3 * sr) / sr), sr)
    take = rs.write_renders(str(tmp_path / "take"), 30)
    res = refine_video_job({"refiner_file": str(out), "renders_dir": take, "video_out": str(tmp_path / "t.mp4"),
                            "audio": str(wav), "audio_offset_s": 0.5}, Ctx(tmp_path))
    n, audio = _ffprobe_counts(res["video_file"])
    assert n == 30 and audio
    assert len(res["background_frames"]) == 30 and max(res["background_frames"]) < N
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_refined_frames_are_closer_to_the_person_than_the_raw_render(trained, clip):
    out, _ = trained
    nets, _ = train.load(str(out))
    data = pairs.training_pairs(str(clip / "renders"), str(clip / "clip.mp4"), 0, 32)
    pairs.add_textured(data.renders, data.boxes, data.render_crops, nets.texture)
    _tr, val = train.split(N)
    refined = refine.refine_crops(nets, data.render_crops[val], 25.0)
    real = data.real_crops[val].astype(np.float32)
    raw = data.render_crops[val, ..., :3].astype(np.float32)
    assert np.abs(refined - real).mean() < 0.5 * np.abs(raw - real).mean()


# --------------------------------------------------------------------------------- errors, cancel
def test_jobs_report_bad_input_clearly(clip, trained, tmp_path):
    ctx = Ctx(tmp_path)
    with pytest.raises(JobError, match="needs 'renders_dir'"):
        train_refiner_job({"video": "x", "refiner_out": "y"}, ctx)
    with pytest.raises(JobError, match="holds no Cadence renders"):
        train_refiner_job({"renders_dir": str(tmp_path), "video": str(clip / "clip.mp4"),
                           "refiner_out": str(tmp_path / "r.pt")}, ctx)
    short = rs.write_renders(str(tmp_path / "short"), 6)
    with pytest.raises(JobError, match="at least"):
        train_refiner_job({"renders_dir": short, "video": str(clip / "clip.mp4"), "refiner_out": str(tmp_path / "r"),
                           "size": 32, "net_overrides": TINY}, ctx)
    long_take = rs.write_renders(str(tmp_path / "long"), N + 20)
    with pytest.raises(JobError, match="ends before frame"):
        train_refiner_job({"renders_dir": long_take, "video": str(clip / "clip.mp4"),
                           "refiner_out": str(tmp_path / "r"), "size": 32, "net_overrides": TINY}, ctx)
    other = rs.write_renders(str(tmp_path / "other"), 10, head_hash="o" * 16)
    with pytest.raises(JobError, match="another head"):
        refine_video_job({"refiner_file": str(trained[0]), "renders_dir": other,
                          "video_out": str(tmp_path / "o.mp4")}, ctx)
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "r").exists()


def test_cancel_mid_training_and_mid_refine_leaves_nothing(clip, trained, tmp_path):
    ctx = Ctx(tmp_path)
    timer = threading.Timer(1.0, ctx.cancel)
    timer.start()
    with pytest.raises(JobCancelled):
        train_refiner_job({"renders_dir": str(clip / "renders"), "video": str(clip / "clip.mp4"),
                           "refiner_out": str(tmp_path / "r.pt"), "size": 32, "net_overrides": TINY,
                           "max_minutes": 5}, ctx)
    timer.cancel()
    assert not (tmp_path / "r.pt").exists()
    earlier = tmp_path / "t.mp4"
    earlier.write_bytes(b"an earlier take")
    ctx2 = Ctx(tmp_path)
    calls = {"n": 0}

    def cancel_soon():  # cancels during writing, after a few frames went to ffmpeg
        calls["n"] += 1
        return calls["n"] > 4

    with pytest.raises(refine.RefineCancelled):
        refine.refine_take(str(trained[0]), str(clip / "renders"), str(earlier), cancelled=cancel_soon)
    assert earlier.read_bytes() == b"an earlier take"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    del ctx2


def test_renders_manifest_is_checked(tmp_path):
    (tmp_path / "manifest.json").write_text('{"kind": "cadence-renders", "files": ["../x.png"], "frames": [1], '
                                            '"head_pose": [[1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1]], "width": 4, '
                                            '"height": 4, "fps": 25}')
    with pytest.raises(frames.FramesError, match="no usable frames"):
        frames.load_renders(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(frames.FramesError, match="unreadable"):
        frames.load_renders(str(tmp_path))


def test_config_is_checked():
    with pytest.raises(ValueError):
        RefinerConfig(size=40, depth=4).check()
    assert RefinerConfig(size=64, depth=4).check().in_channels == 13  # 3 renders, the textured render, the mask
    assert RefinerConfig(size=64, depth=4, textured=0).check().in_channels == 10


def test_the_persons_texture_makes_the_render_look_like_them(clip):
    from inference.refiner import texture

    renders = frames.load_renders(str(clip / "renders"))
    projector = texture.Projector(renders.geometry()[1])
    tr, val = train.split(N)
    data = pairs.training_pairs(str(clip / "renders"), str(clip / "clip.mp4"), 0, 32, projector=projector,
                                project_frames=tr)
    colours, seen = projector.result()
    assert colours.shape == (len(renders.geometry()[1]), 3) and (seen > 0).mean() > 0.6
    assert np.isfinite(colours).all() and colours.min() >= 0
    pairs.add_textured(data.renders, data.boxes, data.render_crops, colours)
    rc, real = data.render_crops[val].astype(np.float32), data.real_crops[val].astype(np.float32)
    raw = rc[..., :3] + (1 - rc[..., 3:4]) * real
    textured = rc[..., 4:7] + (1 - rc[..., 7:8]) * real
    assert np.abs(textured - real).mean() < 0.5 * np.abs(raw - real).mean()  # on frames it never saw


def test_renders_without_geometry_train_without_texture(tmp_path):
    rs.write_renders(str(tmp_path / "renders"), 20, geometry=False)
    rs.write_video(str(tmp_path / "clip.mp4"), 20)
    res = train_refiner_job({"renders_dir": str(tmp_path / "renders"), "video": str(tmp_path / "clip.mp4"),
                             "refiner_out": str(tmp_path / "r.pt"), "size": 32, "net_overrides": TINY,
                             "max_iters": 3}, Ctx(tmp_path))
    assert res["textured"] is False and "texture" in res["warnings"][0]
    nets, _ = train.load(str(tmp_path / "r.pt"))
    assert nets.cfg.textured == 0 and nets.texture is None


def test_general_refiner_from_a_folder_of_clips_and_fine_tuning_from_it(tmp_path):
    from inference.refiner import general

    for name in ("one", "two"):
        rs.write_renders(str(tmp_path / "clips" / name / "renders"), 20)
        rs.write_video(str(tmp_path / "clips" / name / "video.mp4"), 20)
    (tmp_path / "clips" / "not-a-clip").mkdir()
    found = general.find_clips(tmp_path / "clips")
    assert [r.parent.name for r, _v in found] == ["one", "two"]
    out = str(tmp_path / "general.refiner.pt")
    assert general.main([str(tmp_path / "clips"), "--out", out, "--minutes", "0.05", "--size", "32"]) == 0
    res = train_refiner_job({"renders_dir": str(tmp_path / "clips" / "one" / "renders"),
                             "video": str(tmp_path / "clips" / "one" / "video.mp4"), "init_refiner": out,
                             "refiner_out": str(tmp_path / "tuned.pt"), "max_iters": 3}, Ctx(tmp_path))
    tuned, _ = train.load(str(tmp_path / "tuned.pt"))
    assert res["textured"] and tuned.cfg.size == 32 and float(np.ptp(tuned.texture)) > 0.1  # the person's own
    assert general.main([str(tmp_path / "clips" / "not-a-clip"), "--out", out]) == 1
