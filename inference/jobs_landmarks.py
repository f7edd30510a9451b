"""Worker job "detect_landmarks": MediaPipe's 478 face landmarks on one image (a render of a head).

The Blender side renders the neutral head and ray-casts the landmarks onto it (operators/landmarks.py);
it cannot import MediaPipe or OpenCV itself, so detection runs here.
"""

from __future__ import annotations

import os

import numpy as np

from .jobs import JobContext, JobError, register_job


@register_job("detect_landmarks")
def detect_landmarks_job(params: dict, ctx: JobContext) -> dict:
    """params {"image": png path} -> {"landmarks": (478, 3) list (x, y pixels, top-left origin; z), "width", "height"}."""
    path = params.get("image")
    if not path:
        raise JobError("detect_landmarks needs 'image' (the path of a rendered image)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise JobError(f"the image to find landmarks on does not exist: {path}")
    import cv2  # noqa: PLC0415 - heavy, worker only

    from . import face_landmarks  # noqa: PLC0415 - imports MediaPipe

    ctx.progress(0.1, "reading the render")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise JobError(f"could not read the image {os.path.basename(path)!r} (not a PNG/JPEG image?)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ctx.progress(0.3, "detecting face landmarks")
    try:
        lmk = face_landmarks.detect_landmarks(rgb, static=True)
    except face_landmarks.LandmarkError as exc:
        raise JobError(str(exc)) from exc
    if lmk is None:
        raise JobError(
            "no face found in the render of this head: MediaPipe could not see a face in the frontal view "
            f"({os.path.basename(path)}). Check that the head faces +Z (FLAME axes) and has a face, "
            "or load a landmark embedding file instead (Cadence > Load Landmarks)."
        )
    lmk = np.asarray(lmk, dtype=np.float64)
    ctx.progress(1.0, "done")
    return {"landmarks": lmk.tolist(), "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}
