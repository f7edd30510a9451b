"""CADENCE_OT_add_head: add a Cadence head rig, from the default head or a FLAME file."""

from __future__ import annotations

import logging
import os

import bpy

from ..inference.heads.head_model import HeadModelError
from .paths import user_path
from .rig import build as rig_mod

log = logging.getLogger(__name__)


class CADENCE_OT_add_head(bpy.types.Operator):
    """Add a rigged FLAME-format head: Cadence's default head, or one loaded from a FLAME .pkl/.npz file"""

    bl_idname = "cadence.add_head"
    bl_label = "Add Cadence Head"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(
        name="Head File",
        description="FLAME model (.pkl) or head (.npz) to load; empty adds Cadence's default head",
        subtype="FILE_PATH",
        default="",
        options={"SKIP_SAVE"},  # a plain add_head() call always means the default head
    )
    use_file: bpy.props.BoolProperty(
        name="Choose File",
        description="Open the file browser to pick a FLAME model instead of adding the default head",
        default=False,
        options={"SKIP_SAVE", "HIDDEN"},
    )
    filter_glob: bpy.props.StringProperty(default="*.pkl;*.npz", options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode to add a head")
            return False
        return context.collection is not None

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        if self.use_file and not self.filepath:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self.execute(context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        path = user_path(self.filepath)
        try:
            model = _load_model(path, context)
        except HeadModelError as exc:
            self.report({"ERROR"}, f"Could not load head: {exc}")
            return {"CANCELLED"}
        except OSError as exc:
            self.report({"ERROR"}, f"Could not read head file {path!r}: {exc.strerror or exc}")
            return {"CANCELLED"}
        except Exception as exc:  # noqa: BLE001 - a bug in a loader must not take the scene down with it
            log.exception("Cadence: loading head %r failed", path or "<default head>")
            what = f"head file {path!r}" if path else "the default head"
            self.report({"ERROR"}, f"Could not load {what}: {type(exc).__name__}: {exc}")
            return {"CANCELLED"}
        try:
            rig = rig_mod.build_rig(model, context)
        except Exception as exc:  # noqa: BLE001 - build_rig already removed what it made
            log.exception("Cadence: building the rig failed")
            self.report({"ERROR"}, f"Could not build the head rig: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Added head {rig.name!r} ({model.n_vertices} vertices, {model.n_expr} expressions)")
        return {"FINISHED"}


def _load_model(path: str, context: bpy.types.Context):
    """The HeadModel for ``path`` (a FLAME/Cadence file) or the default head when ``path`` is empty."""
    if not path:
        from ..inference.heads import default_head
        from .prefs import cache_dir

        return default_head.load_or_build(cache_dir(context))
    if not os.path.isfile(path):
        raise HeadModelError(f"file not found: {path}")
    from ..inference.heads import head_files

    model = head_files.load_head(path)
    model.source = path  # the rig records the file the user chose (a Cadence .npz may name another)
    return model


def draw_add_menu(menu: bpy.types.Menu, context: bpy.types.Context) -> None:
    """Entries for an Add menu (e.g. ``bpy.types.VIEW3D_MT_add.append(draw_add_menu)``)."""
    layout = menu.layout
    layout.operator(CADENCE_OT_add_head.bl_idname, text="Cadence Head", icon="USER").filepath = ""
    op = layout.operator(CADENCE_OT_add_head.bl_idname, text="Cadence Head from FLAME File…", icon="FILEBROWSER")
    op.use_file = True
    op.filepath = ""
