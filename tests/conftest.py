"""Test harness: Blender runs as the bpy module with Cadence enabled as a real extension.

`BLENDER_USER_RESOURCES` must point at a scratch folder *before* bpy is imported, so the tests never
touch a real user's Blender configuration.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_scratch = Path(tempfile.mkdtemp(prefix="cadence-tests-"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(_scratch / "blender-user"))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".venv" / "numba-cache"))

import pytest  # noqa: E402

REPO_MODULE = "cadence_dev"  # the local extension repository the checkout is linked into
EXT_PACKAGE = f"bl_ext.{REPO_MODULE}.cadence"
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


def _enable_extension():
    import addon_utils
    import bpy

    repo_dir = _scratch / "extensions" / REPO_MODULE
    repo_dir.mkdir(parents=True, exist_ok=True)
    link = repo_dir / "cadence"
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    repos = bpy.context.preferences.extensions.repos
    if REPO_MODULE not in {r.module for r in repos}:
        # The repository's module name is derived from its display name.
        bpy.ops.preferences.extension_repo_add(
            name=REPO_MODULE, type="LOCAL", use_custom_directory=True, custom_directory=str(repo_dir),
        )
        assert REPO_MODULE in {r.module for r in repos}, [r.module for r in repos]
    mod = addon_utils.enable(EXT_PACKAGE, default_set=True, handle_error=None)
    if mod is None:
        raise RuntimeError(f"could not enable {EXT_PACKAGE}")
    return importlib.import_module(EXT_PACKAGE)


@pytest.fixture(scope="session")
def cadence():
    """The Cadence extension package, enabled in bpy (``cadence.operators.rig`` etc. are reachable)."""
    import addon_utils

    module = _enable_extension()
    yield module
    addon_utils.disable(EXT_PACKAGE, default_set=True)


@pytest.fixture
def clean_scene(cadence):
    """An empty scene with Cadence still enabled."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    yield bpy.context.scene
    bpy.ops.wm.read_homefile(use_empty=True)


@pytest.fixture
def speech_fixtures() -> Path:
    d = SHARED_FIXTURES / "speech"
    if not d.is_dir():
        pytest.skip(f"shared speech fixtures not found at {d}")
    return d


def pytest_collection_modifyitems(config, items):
    # Anything that uses the `cadence` fixture needs bpy: mark it so the bpy 5.0 pass can select it.
    for item in items:
        if "cadence" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.blender)


def pytest_sessionfinish(session, exitstatus):
    # A plain script that leaves classes registered can hang at exit on 4.5: unregister first.
    if "bpy" in sys.modules:
        try:
            import addon_utils

            addon_utils.disable(EXT_PACKAGE, default_set=True)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
