"""Video input and tracking on bad videos: each problem gets a clear message (or a warning), never a crash."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from inference.tracking import video as vid  # noqa: E402
from inference.tracking.fit import FitOptions  # noqa: E402

FAST = FitOptions(iters_rigid=30, iters_full=30)


def write_video(path, frames, fps: float = 25.0, fourcc: str = "mp4v") -> str:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for f in frames:
        out.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
    out.release()
    return str(path)


def noise_frames(n: int, size=(96, 128), seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def face_image(cadence, tmp_path_factory):
    """A frontal render of the default head (Workbench, 192 px) and the head model."""
    import bpy

    from inference.heads.head_model import HeadModel

    bpy.ops.wm.read_homefile(use_empty=True)
    try:
        assert bpy.ops.cadence.add_head() == {"FINISHED"}
        rig = bpy.context.active_object
        scene = bpy.context.scene
        cadence.operators.preview.stage(scene, rig, engine="WORKBENCH", size=192)
        path = tmp_path_factory.mktemp("face") / "face.png"
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        head = HeadModel.load(rig["cadence"]["model_file"])
    finally:
        bpy.ops.wm.read_homefile(use_empty=True)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), head


def test_missing_file(tmp_path):
    with pytest.raises(vid.VideoError, match="not found"):
        vid.probe(tmp_path / "nope.mp4")


def test_text_renamed_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    with pytest.raises(vid.VideoError, match="not a video file"):
        vid.probe(p)


def test_truncated_mp4(tmp_path):
    good = write_video(tmp_path / "good.mp4", noise_frames(40))
    data = open(good, "rb").read()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: len(data) // 3])  # mp4v writes the index (moov) at the end: it is gone
    with pytest.raises(vid.VideoError, match="damaged or truncated|no decodable frames"):
        vid.probe(bad)


def test_too_short(tmp_path):
    p = write_video(tmp_path / "short.mp4", noise_frames(12))
    with pytest.raises(vid.VideoError, match=r"too short to track: 12 frames .*at least 1 s and 25 frames"):
        vid.probe(p)


def test_fps_resampling_30_to_25(tmp_path):
    frames = [np.full((48, 64, 3), i * 2, np.uint8) for i in range(90)]  # 3 s at 30 fps, brightness = index
    p = write_video(tmp_path / "v30.avi", frames, fps=30.0, fourcc="MJPG")  # near-lossless on flat frames
    info = vid.probe(p)
    assert info.fps == pytest.approx(30.0) and info.n_frames == 90 and info.duration == pytest.approx(3.0)
    got = list(vid.iter_frames(info, 25.0))
    assert len(got) == info.n_output_frames(25.0) == 75
    times = np.array([t for _, t, _ in got])
    np.testing.assert_allclose(np.diff(times), 1 / 25)
    src = np.array([f.mean() / 2 for _, _, f in got])  # which source frame each output frame came from
    np.testing.assert_allclose(src, np.round(times * 30), atol=0.6)
    assert len(list(vid.iter_frames(info, 25.0, max_frames=10))) == 10


def test_no_face_in_noise(tmp_path, face_image):
    from inference.tracking.track import TrackError, track_video

    _, head = face_image
    p = write_video(tmp_path / "noise.mp4", noise_frames(30))
    with pytest.raises(TrackError, match="no face was found"):
        track_video(p, head, fps=25, audio_dir=tmp_path, options=FAST)


def test_face_lost_for_some_frames_is_interpolated(tmp_path, face_image):
    from inference.tracking.track import track_video

    img, head = face_image
    blank = np.zeros_like(img)
    frames = [img] * 12 + [blank] * 6 + [img] * 12
    p = write_video(tmp_path / "lost.mp4", frames)
    res = track_video(p, head, fps=25, audio_dir=tmp_path, options=FAST)
    assert res.frames_without_face == list(range(12, 18))
    assert any("no face in 6 of 30 frames" in w for w in res.warnings)
    rot = res.channels.get("head_rotation")
    assert np.all(np.isfinite(rot)) and res.channels.n_frames == 30
    assert any("no audio track" in w for w in res.warnings) and res.audio_file is None


def test_detection_in_worker_threads_matches_one_detector(tmp_path, face_image, monkeypatch):
    """Frames fanned out to two detector threads come back in order, equal to one detector's; a detector
    that fails mid-video raises in the caller (no hang, no partial result)."""
    from inference.tracking import face_landmarks
    from inference.tracking.track import detect_video_landmarks

    img, _ = face_image
    small = img[::2, ::2]
    frames = [img] * 10 + [np.zeros_like(img)] * 4 + [img] * 6 + [np.ascontiguousarray(np.pad(
        small, ((0, img.shape[0] - small.shape[0]), (0, img.shape[1] - small.shape[1]), (0, 0))))] * 6
    info = vid.probe(write_video(tmp_path / "mixed.mp4", frames))
    one, many1, _ = detect_video_landmarks(info, 25, workers=1)
    two, many2, _ = detect_video_landmarks(info, 25, workers=2)
    assert one.shape == two.shape == (26, 478, 3) and many1 == many2 == 0
    assert np.array_equal(np.isnan(one), np.isnan(two)) and np.isnan(one[10:14]).all()
    assert np.allclose(np.nan_to_num(one), np.nan_to_num(two))
    # The small face in the last frames sits up-left: the order of frames survived the threads.
    assert np.isfinite(two[20:, 1, 0]).all() and two[20:, 1, 0].max() < two[:10, 1, 0].min()

    calls = {"n": 0}
    real = face_landmarks.LandmarkTracker.process

    def flaky(self, frame):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("detector died")
        return real(self, frame)

    monkeypatch.setattr(face_landmarks.LandmarkTracker, "process", flaky)
    with pytest.raises(RuntimeError, match="detector died"):
        detect_video_landmarks(info, 25, workers=2)


def test_several_faces_warn_and_track_one(tmp_path, face_image):
    from inference.tracking.track import track_video

    img, head = face_image
    two = np.concatenate([img, img[:, ::-1]], axis=1)
    p = write_video(tmp_path / "two.mp4", [two] * 30)
    res = track_video(p, head, fps=25, audio_dir=tmp_path, options=FAST)
    assert any("several faces" in w for w in res.warnings)
    assert not res.frames_without_face
    xs = res.landmarks[:, 1, 0]
    assert np.ptp(xs) < 10  # the same face followed in every frame


def test_audio_track_is_extracted(tmp_path):
    import imageio_ffmpeg

    p = tmp_path / "talk.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=25:duration=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-ac", "2", "-ar", "44100", "-shortest", "-pix_fmt", "yuv420p", str(p)], check=True)
    wav, warn = vid.extract_audio(p, tmp_path / "a.wav")
    assert warn is None and os.path.isfile(wav)
    import soundfile as sf

    data, sr = sf.read(wav)
    assert sr == 16000 and data.ndim == 1 and abs(len(data) / sr - 2.0) < 0.1
    silent = write_video(tmp_path / "silent.mp4", noise_frames(30))
    wav, warn = vid.extract_audio(silent, tmp_path / "b.wav")
    assert wav is None and "no audio track" in warn


def test_bad_task_model_is_a_clear_error(tmp_path):
    from inference.tracking.face_landmarks import LandmarkError, LandmarkTracker

    with pytest.raises(LandmarkError, match="not found"):
        LandmarkTracker(task_model=str(tmp_path / "missing.task"))
    junk = tmp_path / "junk.task"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(LandmarkError, match="not a MediaPipe face landmarker model"):
        LandmarkTracker(task_model=str(junk))
