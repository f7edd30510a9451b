"""Run Cadence from this checkout inside the bpy module (demo, benchmarks, tests, batch from source).

The checkout is linked into a local extension repository in a scratch Blender user folder and
enabled as ``bl_ext.cadence_dev.cadence``, exactly as an installed extension would be.
`BLENDER_USER_RESOURCES` must be set before bpy is imported, so call `prepare()` first.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
REPO_MODULE = "cadence_dev"
EXT_PACKAGE = f"bl_ext.{REPO_MODULE}.cadence"


def prepare(scratch: Path | None = None) -> Path:
    """Point Blender's user resources at a scratch folder (before bpy is imported)."""
    if "bpy" in sys.modules and "BLENDER_USER_RESOURCES" not in os.environ:
        raise RuntimeError("prepare() must run before bpy is imported")
    scratch = Path(scratch or tempfile.mkdtemp(prefix="cadence-"))
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(scratch / "blender-user"))
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".venv" / "numba-cache"))
    return scratch


def enable_cadence(scratch: Path) -> ModuleType:
    """Enable this checkout as a real extension and return its package module."""
    import addon_utils
    import bpy

    repo_dir = scratch / "extensions" / REPO_MODULE
    repo_dir.mkdir(parents=True, exist_ok=True)
    link = repo_dir / "cadence"
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    repos = bpy.context.preferences.extensions.repos
    if REPO_MODULE not in {r.module for r in repos}:
        # The repository's module name is derived from its display name.
        bpy.ops.preferences.extension_repo_add(
            name=REPO_MODULE, type="LOCAL", use_custom_directory=True, custom_directory=str(repo_dir)
        )
        if REPO_MODULE not in {r.module for r in repos}:
            raise RuntimeError(f"could not register the extension repository {REPO_MODULE!r}")
    if addon_utils.enable(EXT_PACKAGE, default_set=True, handle_error=None) is None:
        raise RuntimeError(f"could not enable {EXT_PACKAGE}")
    return importlib.import_module(EXT_PACKAGE)


def disable_cadence() -> None:
    """Unregister before exit: a script that leaves classes registered can hang at exit on 4.5."""
    import addon_utils

    if addon_utils.check(EXT_PACKAGE)[1]:
        addon_utils.disable(EXT_PACKAGE, default_set=True)
