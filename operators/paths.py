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

