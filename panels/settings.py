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
    # Personalization: a video of the person -> tracked take + camera, and a persona for generation.
    arkit_target: bpy.props.PointerProperty(
        name="ARKit Character", type=bpy.types.Object,
        description="A mesh with ARKit-named shape keys to retarget the head's animation onto",
        poll=lambda self, obj: getattr(getattr(obj, "data", None), "shape_keys", None) is not None)
    video_path: bpy.props.StringProperty(name="Video", subtype="FILE_PATH",
                                         description="Video of the person talking (to track / personalize)")
    show_video_background: bpy.props.BoolProperty(name="Video Behind Camera", default=True,
                                                  description="Show the tracked video as the camera's background")
    persona_epochs: bpy.props.IntProperty(name="Epochs", default=100, min=1, soft_max=500,
                                          description="Training passes when learning the persona")
    use_persona: bpy.props.BoolProperty(name="Use Persona", default=False,
                                        description="Generate head motion in the style of the rig's persona")
    persona_mode: bpy.props.EnumProperty(
        name="Persona Mode",
        items=[("match", "Match", "The person's own tracked motion, stretch by stretch, chosen by the voice"),
               ("network", "Network", "The persona network's prediction, plus the motion it cannot predict, sampled"),
               ("retrieve", "Retrieve", "The person's own recorded poses along the network's motion")],
        default="match",
    )
    # Status of the running job (written by the operators, shown by the panel).
    running: bpy.props.BoolProperty(name="Running", default=False, options={"SKIP_SAVE"})
    progress: bpy.props.FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: bpy.props.StringProperty(name="Status", default="")
    last_error: bpy.props.StringProperty(name="Last error", default="")
