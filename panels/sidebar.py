"""The 3D view's "Cadence" sidebar tab: add a head, generate from audio, progress and errors."""

import bpy

from ..operators.rig import build as rig_mod


class CADENCE_PT_main(bpy.types.Panel):
    bl_idname = "CADENCE_PT_main"
    bl_label = "Cadence"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Cadence"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.cadence
        col = layout.column(align=True)
        col.operator("cadence.add_head", text="Add Default Head", icon="USER").filepath = ""
        col.operator("cadence.add_head", text="Add Head from FLAME File…", icon="FILEBROWSER").use_file = True

        rig = rig_mod.find_rig(context.active_object)
        box = layout.box()
        if rig is None:
            box.label(text="Select a Cadence head to animate it", icon="INFO")
        else:
            box.label(text=f"Head: {rig.name}", icon="ARMATURE_DATA")
        box.prop(settings, "audio_path")
        box.prop(settings, "transcript")
        row = box.row(align=True)
        row.prop(settings, "lip_strength")
        row.prop(settings, "motion_amplitude")
        row = box.row(align=True)
        row.prop(settings, "motion_speed")
        row.prop(settings, "seed")
        box.prop(settings, "use_current_frame")
        box.prop(settings, "replace")
        sub = box.row()
        sub.enabled = rig is not None and not settings.running and bool(settings.audio_path)
        op = sub.operator("cadence.generate", icon="PLAY_SOUND")
        op.filepath = settings.audio_path
        op.transcript = settings.transcript
        op.seed = settings.seed
        op.lip_strength = settings.lip_strength
        op.motion_amplitude = settings.motion_amplitude
        op.motion_speed = settings.motion_speed
        op.frame_start = context.scene.frame_current if settings.use_current_frame else context.scene.frame_start
        op.mode = "REPLACE" if settings.replace else "NEW"
        persona = _rig_persona(rig)
        if settings.use_persona and persona:
            op.persona = persona
            op.persona_mode = settings.persona_mode

        _draw_personalize(layout, context, settings, rig, persona)
        _draw_refiner(layout, settings, rig)
        _draw_arkit(layout, settings, rig)

        if settings.running:
            layout.progress(factor=settings.progress, type="BAR", text=settings.status or "Working…")
            layout.label(text="Esc cancels", icon="CANCEL")
        elif settings.status:
            layout.label(text=settings.status, icon="CHECKMARK")
        if settings.last_error:
            err = layout.box()
            err.alert = True
            for i, line in enumerate(_wrap(settings.last_error, 48)):
                err.label(text=line, icon="ERROR" if i == 0 else "BLANK1")


def _rig_persona(rig) -> str:
    if rig is None:
        return ""
    return str(rig["cadence"].get("persona", "") or "")


def _draw_personalize(layout, context: bpy.types.Context, settings, rig, persona: str) -> None:
    """The "Personalize" box: track a video of the person, learn their persona, use it when generating."""
    box = layout.box()
    box.label(text="Personalize", icon="OUTLINER_OB_CAMERA")
    box.prop(settings, "video_path")
    box.prop(settings, "show_video_background")
    ready = rig is not None and not settings.running and bool(settings.video_path)
    row = box.row(align=True)
    row.enabled = ready
    op = row.operator("cadence.track_video", icon="TRACKING")
    op.filepath = settings.video_path
    op.show_background = settings.show_video_background
    op.frame_start = context.scene.frame_start
    op = row.operator("cadence.personalize", icon="USER")
    op.filepath = settings.video_path
    op.epochs = settings.persona_epochs
    box.prop(settings, "persona_epochs")
    row = box.row(align=True)
    row.enabled = bool(persona)
    row.prop(settings, "use_persona")
    row.prop(settings, "persona_mode", text="")
    if persona:
        box.label(text=f"Persona: {bpy.path.basename(persona)}", icon="CHECKMARK")
    elif rig is not None:
        box.label(text="No persona yet for this head", icon="INFO")


def _draw_refiner(layout, settings, rig) -> None:
    """The "Photoreal" box (stage 2): train the refiner on the tracked video, refine the playing take to mp4."""
    box = layout.box()
    box.label(text="Photoreal Video", icon="RENDER_ANIMATION")
    tracked = rig is not None and rig["cadence"].get("last_track") is not None
    refiner = str((rig["cadence"].get("refiner") or {}).get("file", "")) if rig is not None else ""
    row = box.row(align=True)
    row.enabled = tracked and not settings.running
    row.operator("cadence.train_refiner", icon="SHADERFX")
    sub = row.row(align=True)
    sub.enabled = bool(refiner)
    sub.operator("cadence.refine_video", icon="FILE_MOVIE")
    if refiner:
        box.label(text=f"Refiner: {bpy.path.basename(refiner)}", icon="CHECKMARK")
    elif rig is not None:
        box.label(text="Track a video, then Train Refiner" if not tracked else "No refiner yet for this head",
                  icon="INFO")


def _draw_arkit(layout, settings, rig) -> None:
    """The "ARKit" box: retarget onto an ARKit-named character, Live Link Face CSV out and in."""
    box = layout.box()
    box.label(text="ARKit-52", icon="SHAPEKEY_DATA")
    box.enabled = rig is not None and not settings.running
    row = box.row(align=True)
    row.prop(settings, "arkit_target", text="")
    sub = row.row(align=True)
    sub.enabled = settings.arkit_target is not None
    op = sub.operator("cadence.retarget_arkit", text="Retarget", icon="MOD_DATA_TRANSFER")
    op.target = settings.arkit_target.name if settings.arkit_target else ""
    row = box.row(align=True)
    row.operator("cadence.export_arkit_csv", text="Export CSV", icon="EXPORT")
    row.operator("cadence.import_arkit_csv", text="Import CSV", icon="IMPORT")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return lines + ([line] if line else [])
