"""Add-on preferences: which Python runs the worker, where caches live (read through ``operators.prefs``)."""

import bpy

from ..operators.prefs import ADDON_ID

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

    face_landmarker: bpy.props.StringProperty(
        name="Face landmarker",
        description="Your own MediaPipe face_landmarker.task with its blendshape model, for blink, brow, gaze and "
                    "lip scores while tracking (empty: the one Set up Worker installed)",
        subtype="FILE_PATH",
        default="",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "worker_python")
        layout.prop(self, "cache_dir")
        layout.prop(self, "face_landmarker")
        from ..operators.worker import ops as worker_ops  # late: panels register before operators

        row = layout.row()
        row.label(text=worker_ops.status_text(), icon=_STATUS_ICONS[worker_ops.last_check["ok"]])
        row.operator("cadence.check_worker", icon="FILE_REFRESH")
        row.operator("cadence.setup_worker", icon="IMPORT")
