"""Stage 2 end to end in Blender, tiny (64², Eevee at 1 sample, a few dozen CPU iterations):
render -> Train Refiner -> Refine Video -> mp4, with the scene unchanged and cancel leaving nothing behind.

"The person's video" is the tracked take's own Eevee render, tinted and blurred over a textured background:
a different look the refiner must learn. The tracking run is recorded on the rig as Track Video would.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.blender

N_FRAMES, SIZE, FPS = 20, 64, 25
TINY = {"base": 8, "depth": 3, "key_dim": 16, "disc_base": 8, "memory_size": 16, "thumb": 4}


def _channels(protocol, expr_names, phase: float):
    t = np.arange(N_FRAMES) / FPS
    rot = np.zeros((N_FRAMES, 3))
    rot[:, 1] = 0.15 * np.sin(2 * np.pi * 0.8 * t + phase)
    rot[:, 0] = 0.05 * np.sin(2 * np.pi * 1.1 * t + phase)
    jaw = np.zeros((N_FRAMES, 3))
    jaw[:, 0] = 0.15 * (0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t + phase))
    expr = np.zeros((N_FRAMES, len(expr_names)))
    expr[:, 0] = 0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t + phase)
    return protocol.Channels(fps=FPS, n_frames=N_FRAMES, expr_names=expr_names,
                             groups={"head_rotation": rot, "jaw": jaw, "expression": expr})


def _camera(rig, rig_mod) -> dict:
    co = np.array([v.co[:] for v in rig_mod.rig_mesh(rig).data.vertices])
    lo, hi = co.min(0), co.max(0)
    return {"focal_px": 120.0, "width": SIZE, "height": SIZE,
            "position": [float((lo[0] + hi[0]) / 2), float(lo[1] + 0.6 * (hi[1] - lo[1])), float(hi[2] + 0.55)]}


def _state(bpy, rig) -> dict:
    scene = bpy.context.scene
    key = [c for c in rig.children if c.type == "MESH"][0].data.shape_keys
    return {"scenes": sorted(s.name for s in bpy.data.scenes), "objects": sorted(o.name for o in bpy.data.objects),
            "cameras": len(bpy.data.cameras), "lights": len(bpy.data.lights), "worlds": len(bpy.data.worlds),
            "images": sorted(i.name for i in bpy.data.images), "camera": scene.camera.name if scene.camera else None,
            "engine": scene.render.engine, "res": (scene.render.resolution_x, scene.render.resolution_y),
            "frame": scene.frame_current, "film": scene.render.film_transparent,
            "head_action": rig.animation_data.action.name, "face_action": key.animation_data.action.name,
            "nla": (rig.animation_data.use_nla, key.animation_data.use_nla), "filepath": scene.render.filepath}


def _assert_renders_follow_the_take(frames) -> None:
    """Each render shows its own frame: the head's silhouette is where its recorded geometry projects."""
    from inference.refiner.texture import project_points

    verts, _faces = frames.geometry()
    for i in range(len(frames)):
        ys, xs = np.nonzero(frames.rgba(i)[..., 3] > 0.5)
        p = project_points(np.asarray(verts[i], np.float64), frames.focal_px, frames.width, frames.height)
        inside = p[(p[:, 0] >= 0) & (p[:, 0] < SIZE) & (p[:, 1] >= 0) & (p[:, 1] < SIZE)]
        assert abs(xs.min() - inside[:, 0].min()) < 2.5 and abs(xs.max() - inside[:, 0].max()) < 2.5, f"frame {i}"
    moved = np.abs(frames.rgba(0)[..., 3] - frames.rgba(len(frames) // 3)[..., 3]).mean()
    assert moved > 0.003, "the renders do not move with the take"


@pytest.fixture
def staged(cadence, clean_scene, cache_folder, tmp_path):
    """A rig with a recorded tracking run (its take, camera and "video") and a newer take with sound."""
    import bpy
    import soundfile as sf

    from inference.refiner.frames import load_renders
    from inference.refiner.video_out import write_mp4

    ops = cadence.operators
    with cache_folder(tmp_path / "cache"):
        assert bpy.ops.cadence.add_head() == {"FINISHED"}
        rig = ops.rig.build.find_rig(bpy.context.active_object)
        names = tuple(ops.rig.build.rig_model_info(rig)["expr_names"])
        scene = bpy.context.scene
        scene.render.fps, scene.render.fps_base = FPS, 1.0
        ops.keys.keyframes.write_take(rig, _channels(cadence.inference.protocol, names, 0.0), take_name="clip track")
        scene.frame_start, scene.frame_end = 1, N_FRAMES
        rig["cadence"]["last_track"] = {"video": "", "camera": _camera(rig, ops.rig.build), "take": "clip track",
                                        "frame_start": 1}
        renders = tmp_path / "clip-renders"
        assert bpy.ops.cadence.render_frames(directory=str(renders), samples=1) == {"FINISHED"}
        frames = load_renders(str(renders))
        _assert_renders_follow_the_take(frames)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
        bg = np.dstack([0.3 + 0.4 * xx, 0.4 + 0.1 * np.sin(9 * yy), 0.5 - 0.3 * yy]).astype(np.float32)

        def person(i):
            rgba = frames.rgba(i)
            skin = rgba[..., :3] * np.array([1.25, 0.95, 0.8], dtype=np.float32)
            return np.clip(bg * (1 - rgba[..., 3:]) + skin, 0, 1)

        video = write_mp4((person(i) for i in range(len(frames))), (SIZE, SIZE), FPS, str(tmp_path / "person.mp4"),
                          n_frames=len(frames), crf=12)
        rig["cadence"]["last_track"]["video"] = video
        ops.keys.keyframes.write_take(rig, _channels(cadence.inference.protocol, names, 1.7), take_name="new line",
                                      mode="NEW")
        wav = tmp_path / "line.wav"
        sf.write(wav, 0.1 * np.sin(2 * np.pi * 180 * np.arange(2 * 16000) / 16000), 16000)
        ops.keys.sound.add_sound_strip(scene, str(wav), 1)
        yield rig


def test_render_train_refine_to_mp4_leaves_the_scene_as_it_was(cadence, staged, tmp_path):
    import bpy

    from inference.tracking.video import has_audio, probe

    ops = cadence.operators
    rig = staged
    before = _state(bpy, rig)
    job = ops.refiner.train_refiner.TrainRefinerJob(bpy.context, {
        "size": SIZE, "samples": 1, "max_iters": 40, "net_overrides": TINY, "max_minutes": 5})
    job.run_sync()
    report = job.apply()
    assert np.mean(report["loss_l1_last"]) < np.mean(report["loss_l1_first"])  # it learns
    assert os.path.isfile(rig["cadence"]["refiner"]["file"])
    assert _state(bpy, rig) == before  # the tracked take played only while rendering

    out = tmp_path / "take.mp4"
    assert bpy.ops.cadence.refine_video(filepath=str(out), samples=1) == {"FINISHED"}
    info = probe(str(out), check_length=False)
    assert (info.n_frames, info.width, info.height) == (N_FRAMES, SIZE, SIZE)
    assert has_audio(str(out))
    assert _state(bpy, rig) == before


def test_cancel_while_rendering_or_training_changes_nothing(cadence, staged, tmp_path):
    import bpy

    ops = cadence.operators
    rig = staged
    before = _state(bpy, rig)
    job = ops.refiner.train_refiner.TrainRefinerJob(bpy.context, {"size": SIZE, "samples": 1, "net_overrides": TINY})
    job.start(budget_s=0.0)  # one frame rendered, with the tracked take playing alone
    assert job.prepare is not None and _state(bpy, rig)["head_action"] != before["head_action"]
    job.cancel()
    assert _state(bpy, rig) == before
    assert "refiner" not in rig["cadence"]

    # a trained refiner, then Refine Video cancelled mid-render: no video, nothing changed
    job = ops.refiner.train_refiner.TrainRefinerJob(bpy.context, {
        "size": SIZE, "samples": 1, "max_iters": 5, "net_overrides": TINY})
    job.run_sync()
    job.apply()
    out = tmp_path / "cancelled.mp4"
    job = ops.refiner.refine_video.RefineVideoJob(bpy.context, str(out), {"samples": 1})
    job.start(budget_s=0.0)
    job.cancel()
    assert not out.exists() and _state(bpy, rig) == before

    # the worker's half cancelled while training: no refiner file
    job = ops.refiner.train_refiner.TrainRefinerJob(bpy.context, {
        "size": SIZE, "samples": 1, "max_minutes": 5, "net_overrides": TINY,
        "refiner_out": str(tmp_path / "never.refiner.pt")})
    job.start()
    t0 = time.monotonic()
    while "iteration" not in job.message and time.monotonic() - t0 < 120:
        job.poll()
        time.sleep(0.05)
    job.cancel()
    t0 = time.monotonic()
    while not job.poll() and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    assert job.error is not None and not (tmp_path / "never.refiner.pt").exists()
    assert _state(bpy, rig) == before


def test_refiner_operators_explain_what_is_missing(cadence, clean_scene):
    import bpy

    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    assert bpy.ops.cadence.train_refiner() == {"CANCELLED"}
    assert "Track a video" in bpy.context.scene.cadence.last_error
    assert bpy.ops.cadence.refine_video() == {"CANCELLED"}
    assert "Train Refiner" in bpy.context.scene.cadence.last_error
