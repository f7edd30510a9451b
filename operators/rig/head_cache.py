"""Where a rig's head model lives: Cadence's cache folder, heads/<content hash>.npz, which the worker loads.

The rig records that file's path. When it is gone (the cache was cleared or moved, the .blend was opened on
another machine), the same model is found again by its content hash, or rebuilt from its source.
"""

from __future__ import annotations

import logging
import os

import bpy

from ...inference.heads.head_model import HeadModel, HeadModelError

log = logging.getLogger(__name__)


def heads_folder(context: bpy.types.Context | None = None) -> str:
    from ..prefs import cache_dir

    folder = os.path.join(cache_dir(context), "heads")
    os.makedirs(folder, exist_ok=True)
    return folder


def cache_model(model: HeadModel, context: bpy.types.Context | None, content_hash: str = "") -> str:
    """Cache the model as heads/<hash>.npz (once) so the worker can reload the exact head; "" if it cannot."""
    try:
        path = os.path.join(heads_folder(context), f"{content_hash or model.content_hash()}.npz")
        if not os.path.isfile(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            model.save(tmp)
            os.replace(tmp, path)  # atomic: a half-written head is never picked up
        return path
    except OSError as exc:
        log.warning("Cadence: could not cache head model: %s", exc)
        return ""


def find_model_file(meta, context: bpy.types.Context | None = None) -> str:
    """The head model file of a rig (its ``rig["cadence"]``): the one recorded if it is there; else the same
    model (by content hash) in this cache folder; else rebuilt from its source (Cadence's default head, or the
    user's FLAME file where it still is) and cached. "" when none of these has it."""
    recorded = str(meta.get("model_file", "") or "")
    if recorded and os.path.isfile(recorded):
        return recorded
    want = str(meta.get("model_hash", "") or "")
    if not want:
        return ""
    try:
        folder = heads_folder(context)
    except OSError:
        return ""
    for name in (os.path.basename(recorded), f"{want}.npz"):  # (a calibrated one is <hash>_mp478v<N>.npz)
        if name.startswith(want) and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    source = str(meta.get("model_source", "") or "")
    try:
        if source.startswith("cadence-default-head"):
            from ...inference.heads import default_head
            from ..prefs import cache_dir

            model = default_head.load_or_build(cache_dir(context))
        elif source and os.path.isfile(source):
            from ...inference.heads import head_files

            model = head_files.load_head(source)
        else:
            return ""
    except (HeadModelError, OSError, ValueError) as exc:
        log.warning("Cadence: could not rebuild the head model from %r: %s", source, exc)
        return ""
    if model.content_hash() != want:  # another version of the head, or the file changed since
        return ""
    return cache_model(model, context, want)


def missing_message(meta) -> str:
    """What to tell the user when find_model_file found nothing."""
    source = str(meta.get("model_source", "") or "")
    where = f"{meta.get('model_file') or 'not recorded'}"
    if source and not source.startswith("cadence-default-head"):
        return (f"This rig's head model is missing from Cadence's cache ({where}) and its FLAME file {source} is "
                "not there (or has changed): put the file back, or add the head again with Cadence.")
    return (f"This rig's head model is missing from Cadence's cache ({where}) and this Cadence makes a different "
            "default head: add the head again with Cadence.")
