"""MediaPipe's blendshape model: fetched by set-up and checked, refused when it is not the file, and its 52 scores
come out of tracking on a real person's video (blinks seen as blinks)."""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np
import pytest

from inference.tracking import landmarker_model as lm


def _fake_wheel(path, data: bytes) -> str:
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(lm.MEMBER, data)
    return str(path)


def test_set_up_installed_the_checked_model():
    """The dev set-up (tools/bootstrap.sh, as CI runs it) put the model in the venv, and it is the file."""
    path = lm.find_model()
    assert path == lm.installed_path(), lm.MISSING_HINT
    with open(path, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == lm.SHA256
    assert zipfile.is_zipfile(path) and "face_blendshapes.tflite" in zipfile.ZipFile(path).namelist()


def test_a_wrong_file_is_refused_and_nothing_is_written(tmp_path):
    dest = tmp_path / "models" / lm.FILE_NAME
    wheel = _fake_wheel(tmp_path / "evil.whl", b"\0" * lm.SIZE)  # right size, wrong bytes
    with pytest.raises(lm.ModelFetchError, match="sha256"):
        lm.install(str(dest), wheel=wheel)
    with pytest.raises(lm.ModelFetchError, match="bytes"):
        lm.install(str(dest), wheel=_fake_wheel(tmp_path / "short.whl", b"PK"))
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(lm.ModelFetchError, match="not the expected wheel"):
        lm.install(str(dest), wheel=str(tmp_path / "junk.whl"))
    assert not dest.exists() and not os.path.exists(str(dest) + ".part")


def test_install_from_the_wheel_is_checked_and_idempotent(tmp_path):
    with open(lm.installed_path(), "rb") as fh:
        data = fh.read()
    dest = tmp_path / lm.FILE_NAME
    assert lm.install(str(dest), wheel=_fake_wheel(tmp_path / "w.whl", data)) == str(dest)
    assert dest.read_bytes() == data
    # Already there and checked: kept (no download, even with no wheel and no pip).
    assert lm.install(str(dest), python="/nonexistent/python") == str(dest)


def test_find_model_order(tmp_path, monkeypatch):
    mine = tmp_path / "mine.task"
    mine.write_bytes(b"x")
    monkeypatch.setenv(lm.ENV_VAR, str(mine))
    assert lm.find_model() == str(mine)
    assert lm.find_model("/user/choice.task") == "/user/choice.task"  # the user's choice wins, even missing
    monkeypatch.setenv(lm.ENV_VAR, str(tmp_path / "gone.task"))
    monkeypatch.setattr(lm, "installed_path", lambda prefix=None: str(tmp_path / "none.task"))
    assert lm.find_model() is None


@pytest.mark.slow
def test_tracking_a_real_clip_scores_its_blinks(tmp_path, real_clip):
    """The first 2.4 s of a real speaker (25 fps): his blinks at about 0.75 s and 2.0 s score as blinks."""
    from inference.heads.default_head import load_or_build
    from inference.tracking.face_landmarks import BLENDSHAPE_NAMES
    from inference.tracking.track import track_video

    head = load_or_build(tmp_path)
    res = track_video(real_clip("a"), head, fps=25, max_frames=60, audio_dir=tmp_path)
    scores = res.blendshapes
    assert scores is not None and scores.shape == (60, len(BLENDSHAPE_NAMES)) and np.isfinite(scores).all()
    blink = scores[:, [BLENDSHAPE_NAMES.index("eyeBlinkLeft"), BLENDSHAPE_NAMES.index("eyeBlinkRight")]].mean(1)
    assert np.median(blink) < 0.25
    peaks = np.flatnonzero(blink > 0.35)
    assert peaks.size and (peaks < 25).any() and (peaks > 45).any(), blink.round(2)
    assert not any("face_landmarker.task" in w for w in res.warnings)


def test_tracking_without_the_model_says_what_is_missing(tmp_path, real_clip, monkeypatch):
    from inference.heads.default_head import load_or_build
    from inference.tracking.track import track_video

    monkeypatch.setattr(lm, "find_model", lambda user_path=None: None)
    res = track_video(real_clip("b"), load_or_build(tmp_path), fps=25, max_frames=8, audio_dir=tmp_path)
    assert res.blendshapes is None and lm.MISSING_HINT in res.warnings
    assert np.isfinite(res.channels.get("jaw")).all()  # landmarks alone still track
