"""Where files Cadence learns from a user's clip (personas, refiners) are kept."""

from __future__ import annotations

import os
import re

import bpy

from .prefs import cache_dir


def learned_file_path(rig: bpy.types.Object, video: str, suffix: str, cache_folder: str,
                      tag_beside_blend: bool) -> str:
    """Where a file learned from ``video`` for ``rig`` goes (a persona, a refiner): beside the saved .blend
    (``<blend>_<clip>[-<head>]<suffix>``), else in Cadence's cache (``<cache_folder>/<clip>-<head><suffix>``).
    The head tag (its hash's first 8 characters) keeps files of different heads apart."""
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(video))[0]) or cache_folder
    tag = str(rig["cadence"].get("model_hash", ""))[:8]
    if bpy.data.filepath:
        folder = os.path.dirname(bpy.path.abspath(bpy.data.filepath))
        blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0]
        return os.path.join(folder, f"{blend}_{stem}{f'-{tag}' if tag_beside_blend else ''}{suffix}")
    folder = os.path.join(cache_dir(), cache_folder)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{stem}-{tag}{suffix}")
