"""The add-on preferences as the Blender side reads them: the lowest layer of ``operators/`` (``panels/``
draws the preferences; operators only read them, through here, so nothing in ``operators/`` imports
``panels/``)."""

from __future__ import annotations

import os

import bpy

from .paths import user_path

# The extension's package name ("bl_ext.<repo>.cadence" when installed as an extension).
ADDON_ID = __package__.rpartition(".")[0]


def face_landmarker(context: bpy.types.Context | None = None) -> str:
    """The user's own MediaPipe ``.task`` for blendshape scores (absolute), or "" for the one set-up installed."""
    prefs = get_preferences(context)
    return user_path(prefs.face_landmarker) if prefs and prefs.face_landmarker else ""


def get_preferences(context: bpy.types.Context | None = None) -> bpy.types.AddonPreferences | None:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def cache_dir(context: bpy.types.Context | None = None) -> str:
    """The cache folder: the preference if set, else the extension's user directory."""
    prefs = get_preferences(context)
    if prefs and prefs.cache_dir:
        path = user_path(prefs.cache_dir)
    else:
        try:
            path = bpy.utils.extension_path_user(ADDON_ID, path="cache", create=True)
        except (ValueError, AttributeError):  # not running as an extension (legacy add-on path)
            path = os.path.join(bpy.utils.user_resource("DATAFILES", path="cadence", create=True), "cache")
    os.makedirs(path, exist_ok=True)
    return path
