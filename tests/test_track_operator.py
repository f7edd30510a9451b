"""`cadence.track_video` / `cadence.personalize` / `cadence.generate(persona=…)` in Blender with the real worker.

A short clip is rendered here: the default head with a known animation (Workbench, 224 px, 80 frames
at 25 fps, the staged preview camera: 85 mm lens, which looks along the rig's model -Z as the track
contract's camera does), muxed with a voiced audio track by ffmpeg. Tracking accuracy itself is
tested in tests/test_tracking.py; here the operator flow and its scene changes are.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_generate import voiced_bursts  # noqa: E402

FPS, N, SIZE, SR = 25, 80, 224, 16_000
RENDER_LENS = 85.0  # operators.preview.stage's camera


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _known_take(protocol, expr_names, n: int):
    t = np.arange(n) / FPS
    rot = np.zeros((n, 3))
    rot[:, 1] = np.radians(15) * np.sin(2 * np.pi * t / 2.5)
    rot[:, 0] = np.radians(8) * np.sin(2 * np.pi * t / 1.9 + 0.5)
    jaw = np.zeros((n, 3))
    jaw[:, 0] = 0.12 * (1 - np.cos(2 * np.pi * t / 1.3))
    return protocol.Channels(fps=FPS, n_frames=n, expr_names=expr_names, groups={
        "head_rotation": rot, "head_translation": np.zeros((n, 3)), "jaw": jaw,
        "expression": np.zeros((n, len(expr_names)))})


@pytest.fixture(scope="module")
def clip(cadence, tmp_path_factory):
    """The rendered clip (mp4 with audio) and the render camera in the rig's model space."""
    import bpy

    out = tmp_path_factory.mktemp("clip")
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    rig = bpy.context.active_object
    ch = _known_take(cadence.inference.protocol, tuple(rig["cadence"]["expr_names"]), N)
    cadence.operators.keys.keyframes.write_take(rig, ch, frame_start=1, take_name="Known")
    cam = cadence.operators.preview.stage(scene, rig, engine="WORKBENCH", size=SIZE)
    bpy.context.view_layer.update()
    cam_in_model = np.array(rig.matrix_world.inverted() @ cam.matrix_world)
    for i in range(N):
        scene.frame_set(1 + i)
        scene.render.filepath = str(out / f"f_{i:04d}.png")
        bpy.ops.render.render(write_still=True)
    wav = out / "voice.wav"
    sf.write(wav, voiced_bursts(N / FPS + 0.2, seed=3), SR)
    ff = _ffmpeg()
    common = [ff, "-hide_banner", "-loglevel", "error", "-y", "-framerate", str(FPS), "-i", str(out / "f_%04d.png")]
    video = out / "talk.mp4"
    subprocess.run(common + ["-i", str(wav), "-c:a", "aac", "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                             str(video)], check=True, capture_output=True)
    silent = out / "silent.mp4"
    subprocess.run(common + ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(silent)], check=True, capture_output=True)
    noface = out / "noface.mp4"
    subprocess.run([ff, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=gray:s={SIZE}x{SIZE}:d=1.5:r={FPS}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(noface)], check=True, capture_output=True)
    bpy.ops.wm.read_homefile(use_empty=True)
    return {"video": str(video), "silent": str(silent), "noface": str(noface), "wav": str(wav),
            "cam_position": cam_in_model[:3, 3], "dir": out}


@pytest.fixture
def rig(clean_scene):
    import bpy

    clean_scene.render.fps, clean_scene.render.fps_base = FPS, 1.0
    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    return bpy.context.active_object


def _strips(scene):
    ed = scene.sequence_editor
    return list((ed.strips if hasattr(ed, "strips") else ed.sequences) if ed else [])


def _snapshot(rig):
    import bpy

    scene = bpy.context.scene
    mesh = bpy.data.objects[rig["cadence"]["mesh"]]
    return {
        "objects": sorted(o.name for o in bpy.data.objects), "actions": sorted(a.name for a in bpy.data.actions),
        "cameras": sorted(c.name for c in bpy.data.cameras), "clips": len(bpy.data.movieclips),
        "scene_camera": scene.camera.name if scene.camera else None, "strips": len(_strips(scene)),
        "shape": [k.value for k in mesh.data.shape_keys.key_blocks], "frames": (scene.frame_start, scene.frame_end),
        "res": (scene.render.resolution_x, scene.render.resolution_y),
        "meta": sorted(rig["cadence"].keys()),
        "head": (rig["cadence"].get("model_file"), rig["cadence"].get("landmarks")),
    }


@pytest.mark.slow
def test_track_video_keys_a_take_matches_the_camera_and_applies_identity(cadence, clip, rig):
    import bpy

    scene = bpy.context.scene
    assert bpy.ops.cadence.track_video(filepath=clip["video"], frame_start=1) == {"FINISHED"}, \
        scene.cadence.last_error
    last = rig["cadence"]["last_track"].to_dict()
    assert last["video"] == clip["video"] and Path(last["channels_file"]).is_file()
    assert Path(last["audio_file"]).is_file() and last["take"] == "talk track"
    # MediaPipe's 52 scores are kept with the take, one row per tracked frame.
    scores = np.load(last["blendshapes_file"])
    assert scores.shape[1] == 52 and np.isfinite(scores).all(1).mean() > 0.9
    assert isinstance(last["score_fused"], list) and last["lip_contact_frames"] >= 0
    # The tracked take, as its own take (actions "<take> head" / "<take> face").
    actions = [a.name for a in bpy.data.actions]
    assert any(name.startswith("talk track") for name in actions), actions
    assert rig.animation_data.action.name.startswith("talk track")
    tracked = cadence.inference.protocol.Channels.load(last["channels_file"])
    assert tracked.n_frames == N and (scene.frame_start, scene.frame_end) == (1, N)
    yaw = tracked.get("head_rotation")[:, 1]
    t = np.arange(N) / FPS
    assert np.corrcoef(yaw, np.sin(2 * np.pi * t / 2.5))[0, 1] > 0.9  # the known head turn came through
    # Camera: the scene camera, lens from the tracked focal length, render size = video size.
    cam = scene.camera
    cam_info = last["camera"]
    assert cam is not None and cam.name == f"{rig.name} Track Camera" and cam.data.sensor_fit == "HORIZONTAL"
    assert cam.data.lens == pytest.approx(cam_info["focal_px"] * cam.data.sensor_width / SIZE, rel=1e-5)
    # Focal length and distance trade off from near-frontal views; their ratio (the head's size in the
    # image) is what must match the render camera's.
    depth = cam_info["position"][2] - tracked.get("head_translation")[:, 2].mean()
    true_px = RENDER_LENS / 36.0 * SIZE
    assert cam_info["focal_px"] / depth == pytest.approx(true_px / clip["cam_position"][2], rel=0.15)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (SIZE, SIZE)
    cam_in_model = np.array(rig.matrix_world.inverted() @ cam.matrix_world)
    assert np.allclose(cam_in_model[:3, :3], np.eye(3), atol=1e-6)  # looks along model -Z, +Y up
    assert np.allclose(cam_in_model[:3, 3], cam_info["position"], atol=1e-6)
    assert np.linalg.norm(cam_in_model[:2, 3] - clip["cam_position"][:2]) < 0.03
    bg = [b for b in cam.data.background_images if b.source == "MOVIE_CLIP"]
    assert cam.data.show_background_images and bg and bpy.path.abspath(bg[0].clip.filepath) == clip["video"]
    # Identity applied: shape keys and recorded shape = the fitted identity.
    identity = np.asarray(last["identity"])
    names = list(rig["cadence"]["shape_names"])
    assert identity.size == len(names) > 0
    blocks = bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys.key_blocks
    assert np.allclose([blocks[n].value for n in names], identity, atol=1e-6)
    assert np.allclose(rig["cadence"]["shape"], identity)
    # The video's sound.
    sounds = [s for s in _strips(scene) if s.type == "SOUND"]
    assert len(sounds) == 1 and bpy.path.abspath(sounds[0].sound.filepath) == clip["video"]
    assert "Tracked take frames 1–80" in scene.cadence.status


@pytest.mark.slow
def test_personalize_reuses_the_track_and_generate_uses_the_persona(cadence, clip, rig, tmp_path):
    import bpy

    scene = bpy.context.scene
    assert bpy.ops.cadence.track_video(filepath=clip["video"]) == {"FINISHED"}, scene.cadence.last_error
    out = tmp_path / "me.persona.pt"
    assert bpy.ops.cadence.personalize(filepath=clip["video"], epochs=2, n_frames=0, persona_out=str(out)) \
        == {"FINISHED"}, scene.cadence.last_error
    assert rig["cadence"]["persona"] == str(out) and out.is_file()
    assert "Persona saved" in scene.cadence.status
    before = {a.name for a in bpy.data.actions}
    assert bpy.ops.cadence.generate(filepath=clip["wav"], persona=str(out), take_name="styled") == {"FINISHED"}, \
        scene.cadence.last_error
    assert {a.name for a in bpy.data.actions} - before
    # A missing persona file: a clear error before anything runs.
    assert bpy.ops.cadence.generate(filepath=clip["wav"], persona=str(tmp_path / "gone.persona.pt")) == {"CANCELLED"}
    assert "Persona file not found" in scene.cadence.last_error


@pytest.mark.slow
def test_track_without_audio_has_no_sound_and_personalize_refuses_it(cadence, clip, rig):
    import bpy

    scene = bpy.context.scene
    assert bpy.ops.cadence.track_video(filepath=clip["silent"]) == {"FINISHED"}, scene.cadence.last_error
    assert not [s for s in _strips(scene) if s.type == "SOUND"]
    snap = _snapshot(rig)
    assert bpy.ops.cadence.personalize(filepath=clip["silent"], epochs=1) == {"CANCELLED"}
    assert "no audio" in scene.cadence.last_error or "needs its audio" in scene.cadence.last_error
    assert _snapshot(rig) == snap and "persona" not in rig["cadence"]


def test_bad_videos_give_clear_errors_and_leave_the_scene_alone(cadence, clip, rig, tmp_path):
    import bpy

    scene = bpy.context.scene
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    cases = [
        (str(tmp_path / "missing.mp4"), "not found"),
        (str(tmp_path), "folder"),
        ("", "Choose a video"),
        (str(text), "video|read|open|decode"),
        (clip["noface"], "face"),
    ]
    before = _snapshot(rig)
    for path, message in cases:
        scene.cadence.last_error = ""
        assert bpy.ops.cadence.track_video(filepath=path) == {"CANCELLED"}, path
        err = scene.cadence.last_error
        assert err and re.search(message, err, re.I), (path, err)
        assert "Traceback" not in err
        assert _snapshot(rig) == before, path
    assert "last_track" not in rig["cadence"]


def test_a_bad_video_fails_before_the_heads_calibration(cadence, rig, cache_folder, tmp_path):
    """A head tracked for the first time is calibrated (minutes of renders): a video that cannot be tracked is
    refused before that, and the rig is left as it was."""
    import time

    import bpy

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    gray = tmp_path / "gray.mp4"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=gray:s={SIZE}x{SIZE}:d=1.5:r={FPS}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(gray)], check=True, capture_output=True)
    scene = bpy.context.scene
    before = _snapshot(rig)
    with cache_folder(tmp_path / "fresh-cache"):  # no calibrated embedding of this head here
        for path, message in ((text, "video|read|open|decode"), (gray, "no face")):
            for op in (bpy.ops.cadence.track_video, bpy.ops.cadence.personalize):
                t0 = time.monotonic()
                assert op(filepath=str(path)) == {"CANCELLED"}, path
                assert re.search(message, scene.cadence.last_error, re.I), scene.cadence.last_error
                assert time.monotonic() - t0 < 30.0
                assert _snapshot(rig) == before
        assert not list((tmp_path / "fresh-cache").glob("heads/*_mp478v*"))  # no calibration was started


@pytest.mark.slow
def test_batch_track_personalize_and_generate_with_persona(cadence, clip, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cadence_batch

    out = tmp_path / "out"
    assert cadence_batch.main(["track", clip["video"], "--out", str(out), "--lens-mm", "40"]) == 0
    assert (out / "talk_track.blend").is_file()
    import bpy

    assert abs(bpy.context.scene.camera.data.lens - 40.0) < 1e-3  # the given lens, not an estimate
    persona = tmp_path / "talk.persona.pt"
    assert cadence_batch.main(["personalize", clip["video"], "--persona-out", str(persona), "--epochs", "1",
                               "--frames", "0", "--lens-mm", "40"]) == 0
    assert persona.is_file()
    assert cadence_batch.main([clip["wav"], "--out", str(out), "--persona", str(persona)]) == 0
    assert (out / "voice.blend").is_file()
    assert cadence_batch.main([clip["wav"], "--out", str(out), "--persona", str(tmp_path / "none.pt")]) == 1
    assert cadence_batch.main(["track", str(tmp_path / "missing.mp4"), "--out", str(out)]) == 1


@pytest.mark.slow
def test_a_25_fps_clip_stays_in_step_with_a_24_fps_scene(cadence, clip, rig):
    """An empty 24 fps scene takes the 25 fps video's rate; a scene with animation keeps 24 fps, and the camera
    shows a 24 fps copy of the video, so at the last frame the background is the moment the keys show."""
    import bpy
    import cv2

    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    assert bpy.ops.cadence.track_video(filepath=clip["video"]) == {"FINISHED"}, scene.cadence.last_error
    last = rig["cadence"]["last_track"].to_dict()
    assert (scene.render.fps, scene.render.fps_base) == (FPS, 1.0) and (scene.frame_start, scene.frame_end) == (1, N)
    assert "set to the video's, 25 fps (was 24)" in last["frame_rate"] and not last["clip_file"]
    bg = [b for b in scene.camera.data.background_images if b.source == "MOVIE_CLIP"]
    assert bpy.path.abspath(bg[0].clip.filepath) == clip["video"]

    # Now the scene holds a take: changing its rate would retime the user's work, so it keeps 24 fps.
    scene.render.fps = 24
    assert bpy.ops.cadence.track_video(filepath=clip["video"]) == {"FINISHED"}, scene.cadence.last_error
    last = rig["cadence"]["last_track"].to_dict()
    assert scene.render.fps == 24 and "keeps its 24 fps" in last["frame_rate"]
    n24 = int(N / FPS * 24)  # 3.2 s of video at 24 fps: frames 1..77 (the last at 76 / 24 s)
    tracked = cadence.inference.protocol.Channels.load(last["channels_file"])
    assert tracked.fps == 24 and tracked.n_frames == n24 + 1 and scene.frame_end == n24 + 1
    bg = [b for b in scene.camera.data.background_images if b.source == "MOVIE_CLIP"]
    assert bpy.path.abspath(bg[0].clip.filepath) == last["clip_file"] != clip["video"]
    copy, orig = cv2.VideoCapture(last["clip_file"]), cv2.VideoCapture(clip["video"])
    frames = []
    while (got := copy.read())[0]:
        frames.append(got[1].astype(np.float32))
    assert abs(len(frames) - (n24 + 1)) <= 1
    source = []
    while (got := orig.read())[0]:
        source.append(got[1].astype(np.float32))
    # Scene frame 77 is 76 / 24 s = source frame 79 (of 0..79); frame for frame it would show source frame 76.
    shown = frames[n24]
    assert np.abs(shown - source[79]).mean() < np.abs(shown - source[76]).mean()
