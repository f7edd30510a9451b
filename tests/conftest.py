"""Test harness: Blender runs as the bpy module with Cadence enabled as a real extension.

`BLENDER_USER_RESOURCES` must point at a scratch folder *before* bpy is imported, so the tests never
touch a real user's Blender configuration.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import blender_session  # noqa: E402

_scratch = blender_session.prepare()

import pytest  # noqa: E402

EXT_PACKAGE = blender_session.EXT_PACKAGE
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


# Renders of a head's pose calibration when a test builds a landmark embedding (the product renders
# landmark_calibration.POSE_RENDERS, ~1.5 min per head): enough for the regression, a fraction of the time.
# The tracking accuracy test builds with the product's number (the ``full_pose_renders`` fixture).
TEST_POSE_RENDERS = 300
_FULL_POSE_RENDERS: list[int] = []


@pytest.fixture(scope="session")
def cadence():
    """The Cadence extension package, enabled in bpy (``cadence.operators.rig.build`` etc. are reachable)."""
    module = blender_session.enable_cadence(_scratch)
    calib = module.operators.tracking.landmark_calibration
    _FULL_POSE_RENDERS.append(calib.POSE_RENDERS)
    calib.POSE_RENDERS = TEST_POSE_RENDERS
    yield module
    calib.POSE_RENDERS = _FULL_POSE_RENDERS[0]
    blender_session.disable_cadence()


@pytest.fixture(scope="session")
def full_pose_renders(cadence) -> int:
    """The product's number of pose-calibration renders (the session runs with TEST_POSE_RENDERS)."""
    return _FULL_POSE_RENDERS[0]


@pytest.fixture(scope="session")
def cache_folder(cadence):
    """``with cache_folder(path):`` points Cadence's cache folder (its preferences) at ``path`` for the block."""

    @contextlib.contextmanager
    def use(folder):
        prefs = cadence.operators.prefs.get_preferences()
        old = prefs.cache_dir
        prefs.cache_dir = str(folder)
        try:
            yield
        finally:
            prefs.cache_dir = old

    return use


@pytest.fixture(scope="session")
def calibrated_cache(cadence, cache_folder, full_pose_renders, tmp_path_factory) -> str:
    """A cache folder holding the default head's landmark embedding with the product's full calibration
    (built once per session, ~2 min). Use it with ``cache_folder`` to track with it."""
    import bpy

    folder = tmp_path_factory.mktemp("calibrated-cache")
    bpy.ops.wm.read_homefile(use_empty=True)
    try:
        with cache_folder(folder):
            assert bpy.ops.cadence.add_head() == {"FINISHED"}
            cadence.operators.landmarks.build_from_render(bpy.context.active_object, bpy.context,
                                                          pose_renders=full_pose_renders)
    finally:
        bpy.ops.wm.read_homefile(use_empty=True)
    return str(folder)


@pytest.fixture
def clean_scene(cadence):
    """An empty scene with Cadence still enabled."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    yield bpy.context.scene
    bpy.ops.wm.read_homefile(use_empty=True)


@pytest.fixture
def real_clip():
    """``real_clip("a")``: the path of a real talking-head clip in ../shared/fixtures/video/ (see its README)."""
    d = SHARED_FIXTURES / "video"

    def path(name: str) -> str:
        found = sorted(d.glob(f"*-{name}.mp4"))
        if not found:
            pytest.skip(f"shared video fixture {name!r} not found in {d}")
        return str(found[0])

    return path


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
        blender_session.disable_cadence()
