"""Per-scene Cadence settings (one PropertyGroup, at ``scene.cadence``)."""

import bpy


class CADENCE_SceneSettings(bpy.types.PropertyGroup):
    last_error: bpy.props.StringProperty(name="Last error", default="")
