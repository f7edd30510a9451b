"""What the user invokes (Blender side: bpy, numpy and the stdlib only)."""

import bpy

classes: tuple = ()

_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()


def unregister() -> None:
    _unregister()
