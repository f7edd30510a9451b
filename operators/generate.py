"""`cadence.generate`: a voice recording -> a take of keyframes on the selected Cadence rig.

The work runs in the worker process. `GenerateJob` holds one request from submission to the keys
being written; the modal UI path polls it from a timer, the synchronous path (background mode,
scripts, `execute()`) drives the same object in a loop, so both write identical keys.
Nothing touches the scene until the worker's result is complete and validated.
"""

from __future__ import annotations

import os
import time

import bpy

from ..inference.protocol import ChannelError, Channels
from . import keyframes, worker_client
from . import rig as rig_mod
from .sound import add_sound_strip

# What the user picks -> channel groups of the take.
GROUP_SETS = {
    "LIPS": {"expression", "jaw"},
    "HEAD": {"head_rotation", "head_translation", "neck"},
    "EYES": {"eyes"},
    "BLINKS": {"eyelids"},
}
AUDIO_EXTENSIONS = ".wav;.flac;.ogg;.mp3;.m4a;.aac;.opus;.webm;.mp4;.mov;.mkv"


class GenerateError(RuntimeError):
    """A problem the user can act on; the message is shown as is."""


class GenerateJob:
    """One generation request: submit to the worker, follow progress, then apply the take."""

    def __init__(self, context: bpy.types.Context, params: dict, options: dict):
        rig = rig_mod.find_rig(context.active_object)
        if rig is None:
            raise GenerateError("Select a Cadence head (its armature or mesh) first: Add > Cadence Head")
        audio = bpy.path.abspath(params["audio"])
        if not audio or not os.path.isfile(audio):
            raise GenerateError(f"Audio file not found: {audio or '(none given)'}")
        info = rig_mod.rig_model_info(rig)
        head_file = info.get("model_file", "")
        if not head_file or not os.path.isfile(head_file):
            raise GenerateError(
                "This rig's head model file is missing from Cadence's cache "
                f"({head_file or 'not recorded'}); add the head again with Cadence."
            )
        scene = context.scene
        self.scene_name = scene.name
        self.rig_name = rig.name
        self.options = options
        self.params = dict(params, audio=audio, head_file=head_file,
                           fps=scene.render.fps / scene.render.fps_base)
        self.client = worker_client.get_client(context)
        self.job_id: str | None = None
        self.fraction = 0.0
        self.message = "Starting"
        self.result: dict | None = None
        self.error: str | None = None

    # -- worker side -------------------------------------------------------------------------
    def submit(self) -> None:
        self.job_id = self.client.submit("generate", self.params)

    def poll(self) -> bool:
        """Process worker events; True once the job has ended (result or error)."""
        for event in self.client.poll(self.job_id):
            if event.get("id") not in (None, self.job_id):
                continue
            kind = event.get("type")
            if kind == "progress":
                self.fraction = float(event.get("fraction", self.fraction))
                self.message = event.get("message", self.message)
            elif kind == "result":
                self.result = event.get("data", {})
            elif kind == "error":
                self.error = event.get("message", "The worker reported an error")
        if self.result is None and self.error is None and not self.client.is_alive():
            self.error = "The Cadence worker stopped unexpectedly; nothing was written. Try again."
        return self.result is not None or self.error is not None

    def cancel(self) -> None:
        if self.job_id is not None:
            self.client.cancel(self.job_id)

    def run_sync(self, timeout: float | None = None) -> None:
        self.submit()
        start = time.monotonic()
        while not self.poll():
            if timeout is not None and time.monotonic() - start > timeout:
                self.cancel()
                raise GenerateError(f"Generation took longer than {timeout:.0f} s and was cancelled")
            time.sleep(0.02)

    # -- Blender side ------------------------------------------------------------------------
    def apply(self) -> dict:
        """Write the finished take into the scene (or raise GenerateError, touching nothing)."""
        if self.error is not None:
            raise GenerateError(self.error)
        scene = bpy.data.scenes.get(self.scene_name)
        rig = bpy.data.objects.get(self.rig_name)
        if scene is None or rig is None or rig_mod.find_rig(rig) is None:
            raise GenerateError("The Cadence rig was deleted while generating; nothing was written.")
        try:
            channels = Channels.load(self.result["channels_file"])
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
        take = opts.get("take_name") or os.path.splitext(os.path.basename(self.params["audio"]))[0]
        report = keyframes.write_take(rig, channels, frame_start=frame_start, take_name=take,
                                      mode=opts["mode"], groups=groups,
                                      reduce_tolerance=opts.get("reduce_tolerance"))
        fps = scene.render.fps / scene.render.fps_base
        last = frame_start + max(0, int(round(channels.duration * fps)) - 1)
        if opts.get("set_frame_range"):
            scene.frame_start, scene.frame_end = frame_start, last
        if opts.get("add_sound"):
            add_sound_strip(scene, self.params["audio"], frame_start)
        report.update(frames=(frame_start, last), engine=self.result.get("engine", ""))
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
        "motion_speed": op.motion_speed,
    }


class CADENCE_OT_generate(bpy.types.Operator):
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
    set_frame_range: bpy.props.BoolProperty(name="Set Frame Range", default=True)
    add_sound: bpy.props.BoolProperty(name="Add Sound Strip", default=True)
    reduce_tolerance: bpy.props.FloatProperty(
        name="Key Reduction", default=0.0, min=0.0, soft_max=0.05,
        description="Drop keys while the curve stays within this error (0: key every frame)",
    )

    _job: GenerateJob | None = None
    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return rig_mod.find_rig(context.active_object) is not None

    def _fail(self, context: bpy.types.Context, message: str, level: str = "ERROR") -> set[str]:
        context.scene.cadence.last_error = message
        context.scene.cadence.running = False
        self.report({level}, message)
        return {"CANCELLED"}

    def _finish(self, context: bpy.types.Context, job: GenerateJob, level: str = "ERROR") -> set[str]:
        try:
            report = job.apply()
        except (GenerateError, keyframes.KeyframeError) as exc:
            return self._fail(context, str(exc), level)
        settings = context.scene.cadence
        settings.last_error, settings.running, settings.progress = "", False, 1.0
        settings.status = f"Wrote take frames {report['frames'][0]}–{report['frames'][1]}"
        self.report({"INFO"}, settings.status)
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Scripts and background mode: an ERROR report would raise in the caller, so the synchronous
        # path reports a warning and returns {'CANCELLED'}; the message is in scene.cadence.last_error.
        try:
            job = GenerateJob(context, _params_from(self), _options_from(self))
            job.run_sync()
        except (GenerateError, worker_client.WorkerError) as exc:
            return self._fail(context, str(exc), level="WARNING")
        return self._finish(context, job, level="WARNING")

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        if bpy.app.background:  # no event loop: timers and modal events never fire
            return self.execute(context)
        try:
            self._job = GenerateJob(context, _params_from(self), _options_from(self))
            self._job.submit()
        except (GenerateError, worker_client.WorkerError) as exc:
            return self._fail(context, str(exc))
        settings = context.scene.cadence
        settings.running, settings.progress, settings.status, settings.last_error = True, 0.0, "Starting", ""
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event) -> set[str]:
        job = self._job
        if event.type == "ESC":
            job.cancel()
            self._end_modal(context)
            context.scene.cadence.status = "Cancelled"
            self.report({"WARNING"}, "Cadence generation cancelled; nothing was written")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            done = job.poll()
        except worker_client.WorkerError as exc:
            self._end_modal(context)
            return self._fail(context, str(exc))
        settings = context.scene.cadence
        settings.progress, settings.status = job.fraction, job.message
        context.window_manager.progress_update(int(100 * job.fraction))
        for area in context.screen.areas if context.screen else ():
            if area.type == "VIEW_3D":
                area.tag_redraw()
        if not done:
            return {"PASS_THROUGH"}
        self._end_modal(context)
        return self._finish(context, job)

    def _end_modal(self, context: bpy.types.Context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        context.scene.cadence.running = False


classes = (CADENCE_OT_generate,)
