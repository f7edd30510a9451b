"""`cadence.generate` end to end (Blender side + real worker): takes, UI path = headless path, bad input.

The audio is a synthetic voiced signal (harmonic bursts with pauses) so these tests need no
fixtures; lip-sync quality on real speech is tested in test_lipsync.py.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import soundfile as sf

SR = 16_000


def voiced_bursts(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.zeros_like(t)
    start = 0.3
    while start < seconds - 0.4:
        dur = rng.uniform(0.15, 0.35)
        env += np.exp(-0.5 * ((t - start - dur / 2) / (dur / 3)) ** 2)
        start += dur + rng.uniform(0.05, 0.25)
    return (0.3 * voice * env).astype(np.float32)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "line.wav"
    sf.write(path, voiced_bursts(), SR)
    return str(path)


@pytest.fixture
def rig(clean_scene):
    import bpy

    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    return bpy.context.active_object


def _job(gen, wav: str, seed: int = 0, take_name: str = ""):
    """A GenerateJob as the operator makes it (the modal path drives this object from a timer)."""
    import bpy

    return gen.GenerateJob(bpy.context, {"audio": wav, "transcript": None, "seed": seed, "lip_strength": 1.0,
                                         "motion_amplitude": 1.0, "motion_speed": 1.0},
                           {"groups": set(gen.GROUP_SETS), "frame_start": 1, "mode": "NEW", "set_frame_range": True,
                            "add_sound": True, "take_name": take_name, "reduce_tolerance": None})


def _snapshot(rig):
    """Everything a take can touch: actions, NLA tracks, keys, shape-key values, frame range, strips."""
    import bpy

    mesh = bpy.data.objects[rig["cadence"]["mesh"]]
    key = mesh.data.shape_keys
    scene = bpy.context.scene
    editor = scene.sequence_editor
    strips = (editor.strips if hasattr(editor, "strips") else editor.sequences) if editor else []
    return {
        "actions": sorted(a.name for a in bpy.data.actions),
        "rig_action": rig.animation_data.action.name if rig.animation_data and rig.animation_data.action else None,
        "key_action": key.animation_data.action.name if key.animation_data and key.animation_data.action else None,
        "frames": (scene.frame_start, scene.frame_end),
        "strips": len(strips),
        "values": [kb.value for kb in key.key_blocks],
    }


def _curves(action):
    out = {}
    for fc in _iter_fcurves(action):
        co = np.empty(2 * len(fc.keyframe_points))
        fc.keyframe_points.foreach_get("co", co)
        out[(fc.data_path, fc.array_index)] = co
    return out


def _iter_fcurves(action):
    if hasattr(action, "layers") and action.layers:
        for layer in action.layers:
            for strip in layer.strips:
                for bag in strip.channelbags:
                    yield from bag.fcurves
    elif hasattr(action, "fcurves"):
        yield from action.fcurves


def test_generate_headless_writes_a_take(rig, wav):
    import bpy

    scene = bpy.context.scene
    assert bpy.ops.cadence.generate(filepath=wav, frame_start=11, seed=1) == {"FINISHED"}
    mesh = bpy.data.objects[rig["cadence"]["mesh"]]
    key = mesh.data.shape_keys
    assert rig.animation_data.action is not None and key.animation_data.action is not None
    fps = scene.render.fps / scene.render.fps_base
    assert scene.frame_start == 11
    assert abs(scene.frame_end - (11 + 2.0 * fps - 1)) <= 1
    editor = scene.sequence_editor
    strips = list(editor.strips if hasattr(editor, "strips") else editor.sequences)
    assert len(strips) == 1 and strips[0].frame_start == 11
    # The jaw moves during the bursts and the head moves at all.
    jaw = []
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        jaw.append(rig.pose.bones["jaw"].rotation_euler[0])
    assert np.ptp(jaw) > 0.02
    assert scene.cadence.last_error == ""


def test_ui_path_and_headless_path_write_the_same_keys(cadence, rig, wav):
    """The modal path polls a GenerateJob from a timer; drive it the same way and compare with execute()."""
    import bpy

    gen = cadence.operators.generate

    assert bpy.ops.cadence.generate(filepath=wav, seed=7, take_name="sync") == {"FINISHED"}
    sync_face = _curves(bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys.animation_data.action)
    sync_head = _curves(rig.animation_data.action)

    job = _job(gen, wav, seed=7, take_name="modal")
    job.submit()
    deadline = time.monotonic() + 120
    while not job.poll():  # what the timer does, one tick at a time
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.apply()
    modal_face = _curves(bpy.data.objects[rig["cadence"]["mesh"]].data.shape_keys.animation_data.action)
    modal_head = _curves(rig.animation_data.action)
    assert sync_face.keys() == modal_face.keys() and sync_head.keys() == modal_head.keys()
    for k in sync_face:
        np.testing.assert_allclose(sync_face[k], modal_face[k], atol=1e-6)
    for k in sync_head:
        np.testing.assert_allclose(sync_head[k], modal_head[k], atol=1e-6)


@pytest.mark.parametrize("case", ["missing", "text_as_wav", "empty", "zero_length", "silence", "truncated_mp3"])
def test_bad_audio_leaves_scene_unchanged(rig, tmp_path, case):
    import bpy

    path = tmp_path / "bad.wav"
    if case == "text_as_wav":
        path.write_text("this is not audio\n" * 50)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "zero_length":
        sf.write(path, np.zeros(0, dtype=np.float32), SR)
    elif case == "silence":
        sf.write(path, np.zeros(2 * SR, dtype=np.float32), SR)
    elif case == "truncated_mp3":
        full = tmp_path / "full.mp3"
        sf.write(full, voiced_bursts(), SR, format="MP3")
        path = tmp_path / "bad.mp3"
        path.write_bytes(full.read_bytes()[:64])
    before = _snapshot(rig)
    assert bpy.ops.cadence.generate(filepath=str(path)) == {"CANCELLED"}
    assert _snapshot(rig) == before
    msg = bpy.context.scene.cadence.last_error
    assert msg and "Traceback" not in msg, msg
    if case == "silence":
        assert "silent" in msg


def test_paths_that_are_not_audio_files_say_what_they_are(rig, tmp_path):
    """A folder, a broken link and a link loop each get their own message (not "not found"); the scene stays."""
    import bpy

    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (tmp_path / "loop_a.wav").symlink_to(tmp_path / "loop_b.wav")
    (tmp_path / "loop_b.wav").symlink_to(tmp_path / "loop_a.wav")
    before = _snapshot(rig)
    for name, message in (("", "No audio file was given"), (".", "is a folder, not an audio file"),
                          ("dangling.wav", "broken link"), ("loop_a.wav", "cannot be opened"),
                          ("missing.wav", "Audio file not found")):
        path = str(tmp_path / name) if name else ""
        assert bpy.ops.cadence.generate(filepath=path) == {"CANCELLED"}, name
        assert message in bpy.context.scene.cadence.last_error, (name, bpy.context.scene.cadence.last_error)
        assert _snapshot(rig) == before


def test_a_moved_cache_finds_or_rebuilds_the_head(cadence, rig, wav, cache_folder, tmp_path):
    """A .blend opened where its recorded head file is not (another machine, a cleared cache): the default head
    is rebuilt into this cache, a FLAME head is reloaded from its file; without either, a message says what to do."""
    import bpy
    from flame_fixture import write_flame_pkl

    head_cache = cadence.operators.rig.head_cache
    rig["cadence"]["model_file"] = str(tmp_path / "other-machine" / "heads" / "gone.npz")
    with cache_folder(tmp_path / "new-cache"):
        assert bpy.ops.cadence.generate(filepath=wav) == {"FINISHED"}, bpy.context.scene.cadence.last_error
        assert (tmp_path / "new-cache" / "heads" / f"{rig['cadence']['model_hash']}.npz").is_file()
    pkl = tmp_path / "my_flame.pkl"
    write_flame_pkl(pkl)
    assert bpy.ops.cadence.add_head(filepath=str(pkl)) == {"FINISHED"}
    meta = cadence.operators.rig.build.rig_model_info(bpy.context.active_object)
    meta["model_file"] = str(tmp_path / "gone.npz")
    with cache_folder(tmp_path / "flame-cache"):
        found = head_cache.find_model_file(meta)
        assert found and cadence.inference.heads.head_model.HeadModel.load(found).content_hash() == meta["model_hash"]
    pkl.unlink()
    with cache_folder(tmp_path / "empty-cache"):
        assert head_cache.find_model_file(meta) == ""
        assert "put the file back" in head_cache.missing_message(meta)


def test_the_users_keys_still_play_outside_the_take(rig, wav):
    """The user's own keys go to the NLA under a new take; outside the take's frames they play, not the take's
    held first or last value."""
    import bpy

    jaw = rig.pose.bones["jaw"]
    jaw.rotation_mode = "XYZ"
    for frame, value in ((300, 0.0), (400, 0.3)):
        jaw.rotation_euler[0] = value
        jaw.keyframe_insert("rotation_euler", index=0, frame=frame)
    scene = bpy.context.scene
    assert bpy.ops.cadence.generate(filepath=wav, frame_start=1) == {"FINISHED"}, scene.cadence.last_error
    scene.frame_set(400)
    assert abs(jaw.rotation_euler[0] - 0.3) < 1e-6
    take = [f for f in range(1, 49) if scene.frame_set(f) is None and abs(jaw.rotation_euler[0]) > 0.02]
    assert take, "the take's jaw moves inside its frames"


def test_container_without_ffmpeg_names_what_to_install(cadence, rig, wav, tmp_path, monkeypatch):
    """An m4a needs ffmpeg; a worker that has none says so (and the scene stays as it was)."""
    import subprocess

    import bpy
    import imageio_ffmpeg

    m4a = tmp_path / "line.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", wav, str(m4a)], check=True)
    monkeypatch.setenv("CADENCE_FFMPEG", "")
    cadence.operators.worker.session.shutdown_client()  # the next job starts a worker without ffmpeg
    try:
        before = _snapshot(rig)
        assert bpy.ops.cadence.generate(filepath=str(m4a)) == {"CANCELLED"}
        assert _snapshot(rig) == before
        assert "ffmpeg" in bpy.context.scene.cadence.last_error
    finally:
        monkeypatch.delenv("CADENCE_FFMPEG")
        cadence.operators.worker.session.shutdown_client()


def test_a_transcript_that_cannot_be_used_is_reported(cadence, rig, wav):
    """The worker falls back to recognition when no transcript word is in the dictionary; the user is told."""
    import bpy

    gen = cadence.operators.generate
    job = gen.GenerateJob(bpy.context, {"audio": wav, "transcript": "Xqzvt blorfh zzyxq", "seed": 0,
                                        "lip_strength": 1.0, "motion_amplitude": 1.0, "motion_speed": 1.0},
                          {"groups": set(gen.GROUP_SETS), "frame_start": 1, "mode": "NEW", "set_frame_range": True,
                           "add_sound": False, "take_name": "", "reduce_tolerance": None})
    job.run_sync()
    report = job.apply()
    assert any("recognised" in w for w in report["warnings"]), report["warnings"]


def test_start_frames_outside_the_timeline(cadence, rig, wav):
    """A take that would not fit Blender's timeline is refused with the scene untouched (before or after the
    worker's work); a negative start writes the take and leaves the scene range (which cannot go below 0)."""
    import bpy

    scene = bpy.context.scene
    before = _snapshot(rig)
    last = cadence.operators.keys.keyframes.MAX_FRAME
    for start in (2**31 - 1, last - 10, -2**31):
        assert bpy.ops.cadence.generate(filepath=wav, frame_start=start) == {"CANCELLED"}, start
        assert "timeline" in scene.cadence.last_error and _snapshot(rig) == before, start
    scene.frame_start, scene.frame_end = 5, 50
    assert bpy.ops.cadence.generate(filepath=wav, frame_start=-100) == {"FINISHED"}, scene.cadence.last_error
    assert (scene.frame_start, scene.frame_end) == (5, 50)
    keyed = [k.co[0] for fc in _iter_fcurves(rig.animation_data.action) for k in fc.keyframe_points]
    assert min(keyed) == -100 and max(keyed) < 0


def test_rig_deleted_during_job(cadence, rig, wav):
    import bpy
    gen = cadence.operators.generate

    job = _job(gen, wav)
    job.submit()
    mesh = bpy.data.objects[rig["cadence"]["mesh"]]
    bpy.data.objects.remove(mesh)
    bpy.data.objects.remove(rig)
    n_actions = len(bpy.data.actions)
    while not job.poll():
        time.sleep(0.05)
    with pytest.raises(gen.GenerateError, match="deleted"):
        job.apply()
    assert len(bpy.data.actions) == n_actions


def test_worker_killed_mid_job_then_next_job_works(cadence, rig, wav):
    import bpy
    gen = cadence.operators.generate

    job = _job(gen, wav)
    before = _snapshot(rig)
    job.submit()
    job.client.kill()
    deadline = time.monotonic() + 30
    while not job.poll():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(gen.GenerateError):
        job.apply()
    assert _snapshot(rig) == before
    assert bpy.ops.cadence.generate(filepath=wav) == {"FINISHED"}


def test_cancel_writes_nothing(cadence, rig, wav):
    gen = cadence.operators.generate

    job = _job(gen, wav)
    before = _snapshot(rig)
    job.submit()
    job.cancel()
    deadline = time.monotonic() + 30
    while not job.poll():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job.error is not None or job.result is not None  # a finished-before-cancel job is allowed
    if job.error is not None:
        assert _snapshot(rig) == before


def test_relative_paths_and_the_audible_take(cadence, rig, wav, tmp_path, monkeypatch):
    """A relative audio path means the file in the current folder (the worker runs in another one); a new take
    at the same frames mutes the earlier take's sound strip, as its keys are muted on the NLA, and never a
    strip of the user's own."""
    import bpy

    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "other.wav", voiced_bursts(seed=1), SR)
    sf.write(tmp_path / "music.wav", voiced_bursts(3.0, seed=2), SR)
    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    music = strips.new_sound(name="music", filepath=str(tmp_path / "music.wav"), channel=5, frame_start=1)

    def audible() -> dict:
        ours = [s for s in strips if s.get("cadence_sound")]
        assert all(os.path.isabs(bpy.path.abspath(s.sound.filepath)) for s in ours)
        return {os.path.basename(s.sound.filepath): not s.mute for s in ours}

    assert bpy.ops.cadence.generate(filepath="line.wav", frame_start=1) == {"FINISHED"}, scene.cadence.last_error
    assert audible() == {"line.wav": True}
    assert bpy.ops.cadence.generate(filepath="other.wav", frame_start=1) == {"FINISHED"}, scene.cadence.last_error
    assert audible() == {"line.wav": False, "other.wav": True}
    # The first line again: its strip is reused and is the audible one.
    assert bpy.ops.cadence.generate(filepath="line.wav", frame_start=1) == {"FINISHED"}, scene.cadence.last_error
    assert audible() == {"line.wav": True, "other.wav": False}
    assert not music.mute and not music.get("cadence_sound")
    # The batch's inputs: relative files and folders become absolute paths.
    want = [str(tmp_path / n) for n in ("line.wav", "music.wav", "other.wav")]
    assert cadence.operators.batch.collect_audio(["."]) == want
    assert cadence.operators.batch.collect_audio(["line.wav"]) == want[:1]
    # The user's own strip of the take's audio at the take's frame is used as it is: not doubled, not marked.
    assert bpy.ops.cadence.generate(filepath="music.wav", frame_start=1) == {"FINISHED"}, scene.cadence.last_error
    assert audible() == {"line.wav": False, "other.wav": False}
    assert not music.mute and len([s for s in strips if s.sound and s.sound.filepath.endswith("music.wav")]) == 1


def test_batch_folder_with_one_broken_file(cadence, tmp_path):
    folder = tmp_path / "voices"
    folder.mkdir()
    for i in range(4):
        sf.write(folder / f"line{i}.wav", voiced_bursts(1.2, seed=i), SR)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "out"
    import io

    log = io.StringIO()
    result = cadence.operators.batch.run_batch(cadence.operators.batch.collect_audio([str(folder)]), str(out),
                                               stream=log)
    assert len(result.succeeded) == 4 and len(result.failed) == 1, log.getvalue()
    assert result.failed[0][0].endswith("broken.wav")
    assert sorted(p.name for p in out.glob("*.blend")) == [f"line{i}.blend" for i in range(4)]
    assert "4 succeeded, 1 failed" in log.getvalue()


def test_batch_never_overwrites_its_own_results_or_its_base_scene(cadence, tmp_path):
    """Same-named inputs get their own outputs (line, line-2, ...); a result that would land on the base .blend
    fails instead of replacing it; an output folder that is a file is a clear error."""
    import hashlib
    import io

    import bpy

    batch = cadence.operators.batch
    for sub, ext in (("a", "wav"), ("a", "flac"), ("b", "wav")):
        (tmp_path / sub).mkdir(exist_ok=True)
        sf.write(tmp_path / sub / f"line.{ext}", voiced_bursts(1.0, seed=len(sub + ext)), SR)
    out = tmp_path / "out"
    files = batch.collect_audio([str(tmp_path / "a"), str(tmp_path / "b")])
    assert batch.output_names(files) == ["line", "line-2", "line-3"]
    log = io.StringIO()
    result = batch.run_batch(files, str(out), stream=log)
    assert len(result.succeeded) == 3 and not result.failed, log.getvalue()
    assert sorted(p.name for p in out.glob("*.blend")) == ["line-2.blend", "line-3.blend", "line.blend"]

    # The base scene sits in the output folder and an input has its name.
    bpy.ops.wm.read_homefile(use_empty=True)
    base = out / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(base))
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    sf.write(tmp_path / "scene.wav", voiced_bursts(1.0), SR)
    result = batch.run_batch([str(tmp_path / "scene.wav")], str(out), base_blend=str(base), stream=io.StringIO())
    assert not result.succeeded and "base scene" in result.failed[0][1], result.failed
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest
    with pytest.raises(ValueError, match="overwrite its base scene"):
        batch.run_batch(files, str(tmp_path / "b"), per_file_blend=False, base_blend=str(tmp_path / "b" /
                        "cadence_batch.blend"), stream=io.StringIO())
    with pytest.raises(ValueError, match="is a file"):
        batch.run_batch(files, str(tmp_path / "a" / "line.wav"), stream=io.StringIO())
    bpy.ops.wm.read_homefile(use_empty=True)
