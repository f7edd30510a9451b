"""File paths the user gives (UI fields, scripts, batch arguments) as absolute paths."""

from __future__ import annotations

import os

import bpy


def user_path(filepath: str) -> str:
    """``filepath`` with Blender's ``//`` (the .blend's folder) expanded, then made absolute against the current
    folder; "" stays "". Why: the worker runs in the extension's folder, so a relative path must never reach it."""
    if not filepath:
        return ""
    return os.path.abspath(bpy.path.abspath(filepath))
