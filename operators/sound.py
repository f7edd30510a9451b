"""The take's audio as a sound strip in the sequencer, so playback is in sync with the keys."""

from __future__ import annotations

import os

import bpy


def _strips(editor):
    # Blender 5.0 renamed SequenceEditor.sequences to .strips.
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def add_sound_strip(scene: bpy.types.Scene, filepath: str, frame_start: int, channel: int = 1):
    """Add (or reuse) a sound strip for ``filepath`` starting at ``frame_start``; returns it."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = _strips(editor)
    path = bpy.path.abspath(filepath)
    for strip in strips:
        if strip.type == "SOUND" and strip.sound and bpy.path.abspath(strip.sound.filepath) == path \
                and strip.frame_start == frame_start:
            return strip
    used = {s.channel for s in strips if s.frame_final_start <= frame_start < s.frame_final_end}
    while channel in used:
        channel += 1
    name = f"Cadence {os.path.basename(path)}"
    strip = strips.new_sound(name=name, filepath=path, channel=channel, frame_start=frame_start)
    scene.audio_volume = max(scene.audio_volume, 0.0)
    return strip
