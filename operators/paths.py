"""File paths the user gives (UI fields, scripts, batch arguments) as absolute paths."""

from __future__ import annotations

import os

import bpy

from ..inference.files import check_input_file, sentence


def user_path(filepath: str) -> str:
    """``filepath`` with Blender's ``//`` (the .blend's folder) expanded, then made absolute against the current
    folder; "" stays "". Why: the worker runs in the extension's folder, so a relative path must never reach it."""
    if not filepath:
        return ""
    return os.path.abspath(bpy.path.abspath(filepath))


def user_file(filepath: str, kind: str, error: type[Exception]) -> str:
    """``filepath`` (see user_path) as the absolute path of a readable, non-empty file, or ``error`` with a
    sentence saying what is wrong (not found, a folder, a broken link, permission denied, empty)."""
    try:
        return check_input_file(user_path(filepath), kind, ValueError)
    except ValueError as exc:
        raise error(sentence(str(exc))) from None


def learned_file_path(rig: bpy.types.Object, video: str, suffix: str, cache_folder: str,
                      tag_beside_blend: bool) -> str:
    """Where a file learned from ``video`` for ``rig`` goes (a persona, a refiner): beside the saved .blend
    (``<blend>_<clip>[-<head>]<suffix>``), else in Cadence's cache (``<cache_folder>/<clip>-<head><suffix>``).
    The head tag (its hash's first 8 characters) keeps files of different heads apart."""
    import re

    from .prefs import cache_dir

    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(video))[0]) or cache_folder
    tag = str(rig["cadence"].get("model_hash", ""))[:8]
    if bpy.data.filepath:
        folder = os.path.dirname(bpy.path.abspath(bpy.data.filepath))
        blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0]
        return os.path.join(folder, f"{blend}_{stem}{f'-{tag}' if tag_beside_blend else ''}{suffix}")
    folder = os.path.join(cache_dir(), cache_folder)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{stem}-{tag}{suffix}")
