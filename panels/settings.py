"""Per-scene Cadence settings (one PropertyGroup, at ``scene.cadence``): the panel's inputs and job status."""

import bpy


class CADENCE_SceneSettings(bpy.types.PropertyGroup):
    audio_path: bpy.props.StringProperty(name="Audio", subtype="FILE_PATH", description="Voice recording to animate")
    transcript: bpy.props.StringProperty(name="Transcript", description="What is said (optional; improves lip sync)")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Random seed for head motion and blinks")
    lip_strength: bpy.props.FloatProperty(name="Lip Strength", default=1.0, min=0.0, soft_max=2.0)
    motion_amplitude: bpy.props.FloatProperty(name="Head Motion", default=1.0, min=0.0, soft_max=3.0)
    motion_speed: bpy.props.FloatProperty(name="Motion Speed", default=1.0, min=0.1, soft_max=3.0)
    use_current_frame: bpy.props.BoolProperty(
        name="Start at Current Frame", default=False, description="Otherwise the take starts at the scene's start"
    )
    replace: bpy.props.BoolProperty(name="Replace Take", default=False,
                                    description="Replace Cadence keys instead of adding a new take")
    # Status of the running job (written by the operators, shown by the panel).
    running: bpy.props.BoolProperty(name="Running", default=False, options={"SKIP_SAVE"})
    progress: bpy.props.FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: bpy.props.StringProperty(name="Status", default="")
    last_error: bpy.props.StringProperty(name="Last error", default="")
