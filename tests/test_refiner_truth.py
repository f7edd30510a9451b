"""The known-truth target of ``./cadence eval refiner-truth`` (tools/refiner_truth.py), tiny: Cycles renders of
the dressed head become an mp4 with a frame per key, the hair follows the head bone without being a child of
the rig (so Cadence's own renders leave it out), and the head's own materials are back afterwards."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.blender


def test_truth_scene_renders_the_take_and_restores_the_head(cadence, clean_scene, tmp_path):
    import bpy
    import cv2

    from inference.refiner.frames import ClipReader
    from tools import refiner_truth as rt

    ops = cadence.operators
    assert bpy.ops.cadence.add_head() == {"FINISHED"}
    rig = bpy.context.active_object
    mesh = ops.rig.build.rig_mesh(rig)
    bone = ops.refiner.render.head_bone(rig)
    scene = clean_scene
    own = [m.name for m in mesh.data.materials]
    ops.tracking.camera_match.match_camera(scene, rig, rt.camera())
    rt.dress_scene(scene, rig, mesh, bone, samples=1)
    scene.render.resolution_percentage = 25
    hair = bpy.data.objects["Truth Hair"]
    assert hair not in rig.children_recursive
    pb = rig.pose.bones[bone]
    pb.rotation_mode = "XYZ"
    for frame, yaw in ((1, 0.0), (2, 0.5)):
        pb.rotation_euler = (0.0, yaw, 0.0)
        pb.keyframe_insert("rotation_euler", frame=frame)
    scene.frame_set(1)
    rest = np.array(hair.matrix_world)
    scene.frame_set(2)
    assert np.abs(np.array(hair.matrix_world) - rest).max() > 0.01, "the hair does not follow the head"

    video = tmp_path / "truth.mp4"
    n = rt.render_truth(scene, mesh, ops.rig.materials.PALETTE, 1, 2, str(video), log=lambda m: None)
    assert n == 2
    assert [m.name for m in mesh.data.materials] == own
    cap = cv2.VideoCapture(str(video))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    assert (count, w, h) == (2, rt.WIDTH // 4, rt.HEIGHT // 4)
    with ClipReader(str(video), 25.0, (w, h)) as clip:
        a, b = clip.frame(0), clip.frame(1)
    assert a.std() > 0.03, "the truth frame is blank"
    assert np.abs(a - b).mean() > 0.005, "the head's turn does not show in the truth frames"
