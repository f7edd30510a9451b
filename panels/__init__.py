"""What the user sees: preferences, scene settings and the 3D-view sidebar."""

import bpy

from . import preferences, settings, sidebar

classes = (
    preferences.CADENCE_AddonPreferences,
    settings.CADENCE_SceneSettings,
    sidebar.CADENCE_PT_main,
)

_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()
    bpy.types.Scene.cadence = bpy.props.PointerProperty(type=settings.CADENCE_SceneSettings)


def unregister() -> None:
    del bpy.types.Scene.cadence
    _unregister()
