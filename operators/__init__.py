"""What the user invokes (Blender side: bpy, numpy and the stdlib only)."""

import bpy

from . import add_head, arkit_io, generate, landmarks, personalize, track_video
from . import batch as batch  # scripting API: cadence.operators.batch.run_batch, …
from . import preview as preview
from .refiner import batch as refiner_batch  # noqa: F401 - scripting API: run_photoreal, …
from .refiner import refine_video, render, train_refiner
from .worker import ops as worker_ops
from .worker import session as worker_session
from .worker import setup as setup_worker

classes: tuple = (
    add_head.CADENCE_OT_add_head,
    generate.CADENCE_OT_generate,
    worker_ops.CADENCE_OT_check_worker,
    landmarks.CADENCE_OT_build_landmarks,
    landmarks.CADENCE_OT_load_landmarks,
    setup_worker.CADENCE_OT_setup_worker,
    track_video.CADENCE_OT_track_video,
    personalize.CADENCE_OT_personalize,
    render.CADENCE_OT_render_frames,
    train_refiner.CADENCE_OT_train_refiner,
    refine_video.CADENCE_OT_refine_video,
    *arkit_io.classes,
)

_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()
    bpy.types.VIEW3D_MT_add.append(add_head.draw_add_menu)


def unregister() -> None:
    worker_session.shutdown_client()  # no worker outlives the add-on
    bpy.types.VIEW3D_MT_add.remove(add_head.draw_add_menu)
    _unregister()
