"""The repository is a valid Blender extension that builds, enables under bl_ext.* and unregisters."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ext_tool() -> tuple[Path, Path]:
    import bpy

    scripts = Path(bpy.utils.system_resource("SCRIPTS"))
    return (
        scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py",
        scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py",
    )


def test_manifest_validates():
    tool, tags = _ext_tool()
    out = subprocess.run(
        [sys.executable, str(tool), "validate", "--valid-tags", str(tags), str(ROOT)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_build_excludes_tests_and_caches(tmp_path):
    tool, tags = _ext_tool()
    out = subprocess.run(
        [sys.executable, str(tool), "build", "--valid-tags", str(tags), "--source-dir", str(ROOT),
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (zpath,) = tmp_path.glob("*.zip")
    names = zipfile.ZipFile(zpath).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert any(n.startswith("inference/") for n in names)
    for banned in ("tests/", "bench/", "tools/", ".venv/", ".git/", "__pycache__"):
        assert not any(banned in n for n in names), banned


def test_enabled_as_extension(cadence):
    import bpy

    assert cadence.__name__.startswith("bl_ext.")
    prefs = bpy.context.preferences.addons[cadence.__name__].preferences
    assert hasattr(prefs, "worker_python") and hasattr(prefs, "cache_dir")
    assert hasattr(bpy.context.scene, "cadence")


@pytest.mark.parametrize("module", ["inference.protocol", "inference.heads.head_model"])
def test_shared_modules_are_light(module):
    code = f"import sys, {module}; bad = {{'torch', 'librosa', 'cv2', 'scipy', 'bpy'}} & set(sys.modules); print(sorted(bad)); sys.exit(bool(bad))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
