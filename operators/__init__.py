"""What the user invokes (Blender side: bpy, numpy and the stdlib only)."""

import bpy

from . import worker_client, worker_ops

classes: tuple = (worker_ops.CADENCE_OT_check_worker,)

_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()


def unregister() -> None:
    worker_client.shutdown_client()  # no worker outlives the add-on
    _unregister()
