"""Add-on preferences: which Python runs the worker, where caches live."""

import os

import bpy

from ..operators.paths import user_path

# The extension's package name ("bl_ext.<repo>.cadence" when installed as an extension).
ADDON_ID = __package__.rpartition(".")[0]


_STATUS_ICONS = {None: "INFO", True: "CHECKMARK", False: "ERROR"}


class CADENCE_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    worker_python: bpy.props.StringProperty(
        name="Worker Python",
        description="Python interpreter that runs Cadence's worker (empty: the environment Cadence set up)",
        subtype="FILE_PATH",
        default="",
    )
    cache_dir: bpy.props.StringProperty(
        name="Cache folder",
        description="Where Cadence keeps generated heads and worker files (empty: the extension's user folder)",
        subtype="DIR_PATH",
        default="",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "worker_python")
        layout.prop(self, "cache_dir")
        from ..operators import worker_ops  # late: panels register before operators

        row = layout.row()
        row.label(text=worker_ops.status_text(), icon=_STATUS_ICONS[worker_ops.last_check["ok"]])
        row.operator("cadence.check_worker", icon="FILE_REFRESH")
        row.operator("cadence.setup_worker", icon="IMPORT")


def get_preferences(context: bpy.types.Context | None = None) -> CADENCE_AddonPreferences | None:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def cache_dir(context: bpy.types.Context | None = None) -> str:
    """The cache folder: the preference if set, else the extension's user directory."""
    prefs = get_preferences(context)
    if prefs and prefs.cache_dir:
        path = user_path(prefs.cache_dir)
    else:
        try:
            path = bpy.utils.extension_path_user(ADDON_ID, path="cache", create=True)
        except (ValueError, AttributeError):  # not running as an extension (legacy add-on path)
            path = os.path.join(bpy.utils.user_resource("DATAFILES", path="cadence", create=True), "cache")
    os.makedirs(path, exist_ok=True)
    return path
