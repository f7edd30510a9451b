"""The take's audio as a sound strip in the sequencer, so playback is in sync with the keys."""

from __future__ import annotations

import os

import bpy


def _strips(editor):
    # Blender 5.0 renamed SequenceEditor.sequences to .strips.
    return editor.strips if hasattr(editor, "strips") else editor.sequences


MARK = "cadence_sound"  # custom property on the strips Cadence adds (a user's own strips are never touched)


def add_sound_strip(scene: bpy.types.Scene, filepath: str, frame_start: int, channel: int = 1):
    """Add (or reuse) a sound strip for ``filepath`` starting at ``frame_start``; returns it.

    Cadence's other sound strips that it overlaps are muted, as the takes they belong to are on the NLA: a new
    take at the same frames (a re-generate, a batch of takes in one .blend) must not play over the old audio.
    """
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = _strips(editor)
    path = bpy.path.abspath(filepath)
    strip = next((s for s in strips if s.type == "SOUND" and s.sound and bpy.path.abspath(s.sound.filepath) == path
                  and s.frame_start == frame_start), None)
    if strip is None:
        used = {s.channel for s in strips if s.frame_final_start <= frame_start < s.frame_final_end}
        while channel in used:
            channel += 1
        strip = strips.new_sound(name=f"Cadence {os.path.basename(path)}", filepath=path, channel=channel,
                                 frame_start=frame_start)
        strip[MARK] = True
    if strip.get(MARK):  # (the user's own strip of this file at this frame is used as it is)
        strip.mute = False
    for other in strips:
        if (other.name != strip.name and other.get(MARK)
                and other.frame_final_start < strip.frame_final_end and strip.frame_final_start < other.frame_final_end):
            other.mute = True
    scene.audio_volume = max(scene.audio_volume, 0.0)
    return strip


def audible_sound(scene: bpy.types.Scene, frame: int) -> tuple[str, float] | None:
    """(file, the strip's start frame) of the unmuted sound strip playing at ``frame``, else None (a take's
    audio for a video export: what the user hears when playing the scene)."""
    editor = scene.sequence_editor
    if editor is None:
        return None
    for strip in sorted(_strips(editor), key=lambda s: s.channel):
        if (strip.type == "SOUND" and not strip.mute and strip.sound is not None
                and strip.frame_final_start <= frame < strip.frame_final_end):
            path = bpy.path.abspath(strip.sound.filepath)
            if os.path.isfile(path):
                return path, float(strip.frame_start)
    return None
