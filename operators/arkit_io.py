"""ARKit-52 in and out (operators/keys/arkit.py does the work): ``cadence.retarget_arkit`` keys the active Cadence
rig's animation onto another character's ARKit-named shape keys; ``cadence.export_arkit_csv`` writes it as a
Live Link Face style CSV; ``cadence.import_arkit_csv`` makes such a CSV (e.g. an iPhone recording) a take on the
active Cadence head. Synchronous: they are fast (a minute of 60 fps animation in a few seconds)."""

from __future__ import annotations

import os

import bpy

from ..inference.protocol import ChannelError, Channels
from .keys import arkit, keyframes
from .paths import user_file, user_path
from .rig import build as rig_mod


def _rig(context: bpy.types.Context) -> bpy.types.Object:
    rig = rig_mod.find_rig(context.active_object)
    if rig is None:
        raise arkit.ArkitError("Select a Cadence head (its armature or mesh) first")
    return rig


class _Frames:
    frame_start: bpy.props.IntProperty(name="Start", default=0, description="0: the scene's start frame")
    frame_end: bpy.props.IntProperty(name="End", default=0, description="0: the scene's end frame")

    def frames(self, scene: bpy.types.Scene) -> tuple[int, int]:
        first, last = self.frame_start or scene.frame_start, self.frame_end or scene.frame_end
        if last < first:
            raise arkit.ArkitError(f"the frame range {first}..{last} is empty")
        return first, last


class CADENCE_OT_retarget_arkit(_Frames, bpy.types.Operator):
    """Key the Cadence head's animation onto a character with ARKit-named shape keys (Faceit, Ready Player Me,
    VRoid/VRM perfect sync)"""

    bl_idname = "cadence.retarget_arkit"
    bl_label = "Retarget to ARKit Character"
    bl_options = {"REGISTER", "UNDO"}

    target: bpy.props.StringProperty(name="Target", description="The mesh object with ARKit-named shape keys")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            rig = _rig(context)
            target = bpy.data.objects.get(self.target)
            if target is None:
                raise arkit.ArkitError(f"no object named {self.target!r} to retarget onto")
            first, last = self.frames(context.scene)
            take = arkit.sample_take(rig, context.scene, first, last)
            matched = arkit.retarget(take["curves"], target, first, f"{target.name} ARKit")
        except arkit.ArkitError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Retargeted frames {first}–{last} onto {len(matched)} of {target.name}'s shape "
                              f"keys ({len(arkit.ARKIT_NAMES) - len(matched)} ARKit names unmatched)")
        context.scene.cadence.status = f"ARKit: {', '.join(matched)}"
        return {"FINISHED"}


class CADENCE_OT_export_arkit_csv(_Frames, bpy.types.Operator):
    """Write the Cadence head's animation as a Live Link Face style CSV (52 ARKit curves, head and eye rotations)"""

    bl_idname = "cadence.export_arkit_csv"
    bl_label = "Export ARKit CSV"

    filepath: bpy.props.StringProperty(name="CSV", subtype="FILE_PATH")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            rig = _rig(context)
            if not self.filepath:
                raise arkit.ArkitError("Choose a .csv file to write")
            path = user_path(self.filepath)
            first, last = self.frames(context.scene)
            take = arkit.sample_take(rig, context.scene, first, last)
            part = path + ".part"  # never a half-written file under the real name
            arkit.write_csv(part, take["curves"], take["pose"], keyframes.scene_fps(context.scene))
            os.replace(part, path)
        except (arkit.ArkitError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote frames {first}–{last} to {path}")
        return {"FINISHED"}

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class CADENCE_OT_import_arkit_csv(bpy.types.Operator):
    """Make a Live Link Face style CSV (an iPhone recording) a take on the Cadence head"""

    bl_idname = "cadence.import_arkit_csv"
    bl_label = "Import ARKit CSV"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(name="CSV", subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.csv", options={"HIDDEN"})
    frame_start: bpy.props.IntProperty(name="Start Frame", default=1)
    fps: bpy.props.FloatProperty(name="Recording fps", default=0.0, min=0.0,
                                 description="0: from the CSV's timecodes, else the scene's rate")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            rig = _rig(context)
            path = user_file(self.filepath, "CSV", arkit.ArkitError)
            cols, rate = arkit.read_csv(path)
            info = rig_mod.rig_model_info(rig)
            groups = arkit.channels_columns(cols, list(info["expr_names"]))
            fps = self.fps or rate or keyframes.scene_fps(context.scene)
            n = len(groups["expression"])
            channels = Channels(fps=fps, n_frames=n, expr_names=tuple(info["expr_names"]), groups=groups,
                                meta={"source": "arkit_csv", "file": path})
            take = os.path.splitext(os.path.basename(path))[0] + " ARKit"
            report = keyframes.write_take(rig, channels, frame_start=self.frame_start, take_name=take)
        except (arkit.ArkitError, ChannelError, keyframes.KeyframeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {n} rows at {fps:g} fps as the take {take!r}")
        context.scene.cadence.status = f"ARKit take {take}: {report.get('frames', '')}"
        return {"FINISHED"}

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


classes = (CADENCE_OT_retarget_arkit, CADENCE_OT_export_arkit_csv, CADENCE_OT_import_arkit_csv)
