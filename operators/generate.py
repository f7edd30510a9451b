"""`cadence.generate`: a voice recording -> a take of keyframes on the selected Cadence rig.

The work runs in the worker process. `GenerateJob` holds one request from submission to the keys
being written; the modal UI path polls it from a timer, the synchronous path (background mode,
scripts, `execute()`) drives the same object in a loop, so both write identical keys (the shared
machinery is in `worker.job`). Nothing touches the scene until the result is complete and valid.
"""

from __future__ import annotations

import os

import bpy

from ..inference.protocol import ChannelError, Channels
from .keys import keyframes
from .keys.sound import add_sound_strip
from .paths import user_file
from .rig import build as rig_mod
from .rig import head_cache
from .worker.job import JobFailed, ModalJobOperator, WorkerJob

# What the user picks -> channel groups of the take.
GROUP_SETS = {
    "LIPS": {"expression", "jaw"},
    "HEAD": {"head_rotation", "head_translation", "neck"},
    "EYES": {"eyes"},
    "BLINKS": {"eyelids"},
}
AUDIO_EXTENSIONS = ".wav;.flac;.ogg;.mp3;.m4a;.aac;.opus;.webm;.mp4;.mov;.mkv"


class GenerateError(JobFailed):
    """A problem the user can act on; the message is shown as is."""


class GenerateJob(WorkerJob):
    """One generation request: validated up front, then the take is applied from the result."""

    kind = "generate"
    error_type = GenerateError

    def __init__(self, context: bpy.types.Context, params: dict, options: dict):
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise GenerateError("Select a Cadence head (its armature or mesh) first: Add > Cadence Head")
        audio = user_file(params["audio"], "audio", GenerateError)
        info = rig_mod.rig_model_info(rig)
        head_file = head_cache.find_model_file(info, context)
        if not head_file:
            raise GenerateError(head_cache.missing_message(info))
        if params.get("persona"):
            persona = user_file(params["persona"], "persona", GenerateError)
            params = dict(params, persona=persona)
        try:  # fail before the work, not after it
            keyframes.check_frames(int(options["frame_start"]), int(options["frame_start"]))
        except keyframes.KeyframeError as exc:
            raise GenerateError(str(exc)) from exc
        scene = context.scene
        self.rig_name = rig.name
        self.options = options
        super().__init__(context, dict(params, audio=audio, head_file=head_file,
                                       fps=scene.render.fps / scene.render.fps_base))

    # -- Blender side ------------------------------------------------------------------------
    def apply(self) -> dict:
        """Write the finished take into the scene (or raise GenerateError, touching nothing)."""
        result = self.checked_result()
        scene = bpy.data.scenes.get(self.scene_name)
        rig = bpy.data.objects.get(self.rig_name)
        if scene is None or rig is None or rig_mod.find_rig(rig) is None:
            raise GenerateError("The Cadence rig was deleted while generating; nothing was written.")
        try:
            channels = Channels.load(result["channels_file"])
        except (KeyError, ChannelError) as exc:
            raise GenerateError(f"The worker returned an unreadable take: {exc}") from exc
        if tuple(channels.expr_names) != tuple(rig_mod.rig_model_info(rig).get("expr_names", ())):
            raise GenerateError("The take was made for a different head than this rig; nothing was written.")
        opts = self.options
        wanted = set().union(*(GROUP_SETS[g] for g in opts["groups"])) if opts["groups"] else set()
        groups = wanted & set(channels.groups)  # e.g. the neck is in HEAD but not every engine animates it
        if not groups:
            raise GenerateError("Nothing to write: choose at least one of lips, head, gaze or blinks.")
        frame_start = int(opts["frame_start"])
        fps = scene.render.fps / scene.render.fps_base
        last = frame_start + max(0, int(round(channels.duration * fps)) - 1)
        keyframes.check_frames(frame_start, last)
        take = opts.get("take_name") or os.path.splitext(os.path.basename(self.params["audio"]))[0]
        report = keyframes.write_take(rig, channels, frame_start=frame_start, take_name=take,
                                      mode=opts["mode"], groups=groups,
                                      reduce_tolerance=opts.get("reduce_tolerance"))
        if opts.get("set_frame_range"):
            note = keyframes.set_scene_range(scene, frame_start, last)
            if note:
                report["notes"].append(note)
        if opts.get("add_sound"):
            add_sound_strip(scene, self.params["audio"], frame_start)
        # What the user should know: the worker's notes (a transcript it could not use...) and the writer's.
        report.update(frames=(frame_start, last), engine=result.get("engine", ""),
                      warnings=[*result.get("notes", []), *report.get("notes", [])])
        return report


def _options_from(op) -> dict:
    return {
        "groups": set(op.groups), "frame_start": op.frame_start, "mode": op.mode,
        "set_frame_range": op.set_frame_range, "add_sound": op.add_sound, "take_name": op.take_name,
        "reduce_tolerance": op.reduce_tolerance if op.reduce_tolerance > 0 else None,
    }


def _params_from(op) -> dict:
    return {
        "audio": op.filepath, "transcript": op.transcript.strip() or None, "seed": op.seed,
        "lip_strength": op.lip_strength, "motion_amplitude": op.motion_amplitude,
        "motion_speed": op.motion_speed, "persona": op.persona, "persona_mode": op.persona_mode,
    }


class CADENCE_OT_generate(ModalJobOperator, bpy.types.Operator):
    """Animate the selected Cadence head from a voice recording"""

    bl_idname = "cadence.generate"
    bl_label = "Generate from Audio"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(name="Audio", subtype="FILE_PATH", description="Voice recording")
    filter_glob: bpy.props.StringProperty(default="*" + ";*".join(AUDIO_EXTENSIONS.split(";")), options={"HIDDEN"})
    transcript: bpy.props.StringProperty(name="Transcript", description="What is said (optional; improves lip sync)")
    frame_start: bpy.props.IntProperty(name="Start Frame", default=1)
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Random seed for head motion and blinks")
    lip_strength: bpy.props.FloatProperty(name="Lip Strength", default=1.0, min=0.0, soft_max=2.0)
    motion_amplitude: bpy.props.FloatProperty(name="Head Motion", default=1.0, min=0.0, soft_max=3.0)
    motion_speed: bpy.props.FloatProperty(name="Motion Speed", default=1.0, min=0.1, soft_max=3.0)
    groups: bpy.props.EnumProperty(
        name="Write", options={"ENUM_FLAG"},
        items=[("LIPS", "Lips & Face", "Expression and jaw"), ("HEAD", "Head", "Head rotation and translation"),
               ("EYES", "Gaze", "Eye rotations"), ("BLINKS", "Blinks", "Eyelids")],
        default={"LIPS", "HEAD", "EYES", "BLINKS"},
    )
    mode: bpy.props.EnumProperty(
        name="Take", items=[("NEW", "New Take", "Keep earlier takes on NLA tracks"),
                            ("REPLACE", "Replace", "Replace Cadence keys in the frames written")],
        default="NEW",
    )
    take_name: bpy.props.StringProperty(name="Take Name", description="Empty: the audio file's name")
    persona: bpy.props.StringProperty(
        name="Persona", subtype="FILE_PATH",
        description="Persona file (from Personalize): head motion and upper face in that person's style",
    )
    persona_mode: bpy.props.EnumProperty(
        name="Persona Mode",
        items=[("match", "Match", "The person's own tracked motion, stretch by stretch, chosen by the voice"),
               ("network", "Network", "The persona network's prediction, plus the motion it cannot predict, sampled"),
               ("retrieve", "Retrieve", "The person's own recorded poses along the network's motion")],
        default="match",
    )
    set_frame_range: bpy.props.BoolProperty(name="Set Frame Range", default=True)
    add_sound: bpy.props.BoolProperty(name="Add Sound Strip", default=True)
    reduce_tolerance: bpy.props.FloatProperty(
        name="Key Reduction", default=0.0, min=0.0, soft_max=0.05,
        description="Drop keys while the curve stays within this error (0: key every frame)",
    )

    errors = (GenerateError,)
    verb = "Generation"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def make_job(self, context: bpy.types.Context) -> GenerateJob:
        return GenerateJob(context, _params_from(self), _options_from(self))

    def done_message(self, report: dict) -> str:
        return f"Wrote take frames {report['frames'][0]}–{report['frames'][1]}"


classes = (CADENCE_OT_generate,)
