"""Face landmarks (MediaPipe's 478-point face mesh with irises), for single images and for video.

``detect_landmarks(image_rgb)`` returns a (478, 3) array: x, y in PIXELS of the given image (origin top-left),
z MediaPipe's relative depth (same scale as x, in pixels; smaller = nearer the camera); None when no face.
``LandmarkTracker`` does the same frame by frame in tracking mode (faster, temporally stable).

Backends: mediapipe 0.10.21's bundled Face Mesh (``mediapipe.solutions.face_mesh``, offline), or, when the
user supplies one, a ``.task`` FaceLandmarker model through ``mediapipe.tasks`` (newer MediaPipe releases
ship no bundled model). When several faces are present the largest, most central one is used, consistently
from frame to frame (the one nearest the previous pick); ``last_n_faces`` says how many were seen.
"""

from __future__ import annotations

import os
import threading
import zipfile

import numpy as np

N_LANDMARKS = 478
MAX_FACES = 2
# MediaPipe's blendshape model's outputs, in its order (ARKit's names, tongueOut missing, plus "_neutral").
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
# MediaPipe's tessellation indices of a few stable points (used by callers for rigid solves).
LEFT_IRIS, RIGHT_IRIS = 473, 468


class LandmarkError(RuntimeError):
    """Landmark detection is unavailable (MediaPipe missing, a bad .task model, a bad image)."""


def _import_mediapipe():
    try:
        import mediapipe as mp  # noqa: PLC0415 - heavy import, only when landmarks are needed
    except ImportError as exc:  # pragma: no cover - the worker's requirements install it
        raise LandmarkError(
            "MediaPipe is not installed in the worker's Python (pip install mediapipe==0.10.21)"
        ) from exc
    return mp


def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    img = np.asarray(image_rgb)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.shape[0] < 8 or img.shape[1] < 8:
        raise LandmarkError(f"expected an RGB image (H, W, 3), got an array of shape {img.shape}")
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype != np.uint8:
        if img.dtype.kind == "f" and img.size and float(np.nanmax(img)) <= 1.0 + 1e-6:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _to_pixels(points, width: int, height: int) -> np.ndarray:
    """MediaPipe's normalised landmarks -> (N, 3) pixels (z scaled like x, as MediaPipe defines it)."""
    arr = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64)
    arr[:, 0] *= width
    arr[:, 1] *= height
    arr[:, 2] *= width
    return arr


def pick_face(faces: list[np.ndarray], width: int, height: int, previous: np.ndarray | None = None) -> int:
    """Index of the face to follow: nearest the previous pick, else the largest and most central one."""
    if len(faces) == 1:
        return 0
    centres = np.array([f[:, :2].mean(axis=0) for f in faces])
    if previous is not None:
        prev_c = previous[:, :2].mean(axis=0)
        return int(np.argmin(np.linalg.norm(centres - prev_c, axis=1)))
    sizes = np.array([np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces])
    diag = float(np.hypot(width, height))
    off = np.linalg.norm(centres - np.array([width / 2, height / 2]), axis=1) / diag
    score = sizes / max(sizes.max(), 1e-9) - off  # size first, centrality breaks near-ties
    return int(np.argmax(score))


class LandmarkTracker:
    """Landmarks frame by frame. ``static=False`` (default) uses MediaPipe's tracking mode for video.

    ``follow``: with several faces, keep the one nearest the face picked in the previous frame (default:
    in tracking mode only; a video detected frame by frame in static mode passes True).

    ``task_model``: optional path of a MediaPipe ``.task`` FaceLandmarker model (used instead of the
    bundled Face Mesh). ``scores_model``: a ``.task`` bundle with the blendshape model, for the 52 scores of
    the followed face (``last_scores``, order ``BLENDSHAPE_NAMES``) while the landmarks still come from Face
    Mesh: the heads' landmark embeddings and pose calibrations were measured with Face Mesh, and the task
    model's mesh sits ~2.5 % of the eye distance off it on the same frames. Not thread-safe: one tracker per
    video.
    """

    def __init__(self, static: bool = False, task_model: str | os.PathLike | None = None,
                 max_faces: int = MAX_FACES, min_confidence: float = 0.5, follow: bool | None = None,
                 scores_model: str | os.PathLike | None = None) -> None:
        self.static = bool(static)
        self.follow = (not self.static) if follow is None else bool(follow)
        self.last_n_faces = 0
        self.max_faces_seen = 0
        self._previous: np.ndarray | None = None
        self._timestamp_ms = 0
        self._mp = _import_mediapipe()
        self.last_scores: np.ndarray | None = None
        self._task = None
        self._mesh = None
        self._scorer = None
        if scores_model:
            self._scorer = _open_task_model(self._mp, os.fspath(scores_model), True, max_faces, min_confidence,
                                            blendshapes=True)
        if task_model:
            self._task = _open_task_model(self._mp, os.fspath(task_model), self.static, max_faces, min_confidence)
        else:
            self._mesh = self._mp.solutions.face_mesh.FaceMesh(
                static_image_mode=self.static, max_num_faces=max_faces, refine_landmarks=True,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
            )

    def process(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """(478, 3) landmarks of the followed face in pixels of ``frame_rgb``, or None when there is no face."""
        img = _check_image(frame_rgb)
        h, w = img.shape[:2]
        faces = self._detect_all(img, w, h)
        self.last_n_faces = len(faces)
        self.max_faces_seen = max(self.max_faces_seen, len(faces))
        self.last_scores = None
        if not faces:
            self._previous = None
            return None
        pts = faces[pick_face(faces, w, h, self._previous if self.follow else None)]
        self._previous = pts
        if self._scorer is not None:
            self.last_scores = self._score(img, w, h, pts)
        return pts

    def _score(self, img: np.ndarray, w: int, h: int, pts: np.ndarray) -> np.ndarray | None:
        """The blendshape scores of the scorer's face nearest ``pts`` (None when it sees no face there)."""
        res = self._scorer.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=img))
        found = [(_to_pixels(f, w, h), b) for f, b in zip(res.face_landmarks or [], res.face_blendshapes or [])
                 if len(b) == len(BLENDSHAPE_NAMES)]
        if not found:
            return None
        k = pick_face([f for f, _ in found], w, h, pts)
        face, cats = found[k]
        size = float(np.ptp(pts[:, 0]))
        if np.linalg.norm(face[:, :2].mean(0) - pts[:, :2].mean(0)) > 0.25 * max(size, 1.0):
            return None  # the two detectors saw different faces
        return np.array([c.score for c in cats], dtype=np.float32)

    def _detect_all(self, img: np.ndarray, w: int, h: int) -> list[np.ndarray]:
        if self._mesh is not None:
            res = self._mesh.process(img)
            faces = res.multi_face_landmarks or []
            return [_to_pixels(f.landmark, w, h) for f in faces if len(f.landmark) >= N_LANDMARKS]
        if self._task is None:
            raise LandmarkError("this landmark tracker is closed")
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=img)
        if self.static:
            res = self._task.detect(mp_image)
        else:
            self._timestamp_ms += 33  # VIDEO mode only needs increasing timestamps
            res = self._task.detect_for_video(mp_image, self._timestamp_ms)
        return [_to_pixels(f, w, h) for f in (res.face_landmarks or []) if len(f) >= N_LANDMARKS]

    def close(self) -> None:
        for obj in (self._mesh, self._task, self._scorer):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing twice or a half-built graph must not raise
                    pass
        self._mesh = self._task = self._scorer = None

    def __enter__(self) -> LandmarkTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_task_model(mp, path: str, static: bool, max_faces: int, min_confidence: float,
                     blendshapes: bool = False):
    """A mediapipe.tasks FaceLandmarker from a user-supplied ``.task`` file, with clear errors."""
    if not os.path.isfile(path):
        raise LandmarkError(f"face landmarker model not found: {path!r}")
    if not zipfile.is_zipfile(path):  # a .task file is a zip bundle of .tflite models
        raise LandmarkError(
            f"{path!r} is not a MediaPipe face landmarker model (.task bundle); "
            "download face_landmarker.task from MediaPipe's model page"
        )
    try:
        from mediapipe.tasks.python import BaseOptions, vision  # noqa: PLC0415

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=path),
            running_mode=vision.RunningMode.IMAGE if static else vision.RunningMode.VIDEO,
            num_faces=max_faces, min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence, min_tracking_confidence=min_confidence,
            output_face_blendshapes=blendshapes,
        )
        return vision.FaceLandmarker.create_from_options(options)
    except Exception as exc:  # noqa: BLE001 - MediaPipe raises RuntimeError/ValueError with C++ text
        raise LandmarkError(f"could not load the face landmarker model {path!r}: {exc}") from exc


_STATIC_LOCK = threading.Lock()
_STATIC: LandmarkTracker | None = None


def detect_landmarks(image_rgb: np.ndarray, static: bool = True) -> np.ndarray | None:
    """(478, 3) landmarks of the main face in ``image_rgb`` (x, y pixels, top-left origin; z depth), or None.

    ``static=True`` treats each call as an unrelated image (a cached static-mode detector is reused);
    ``static=False`` uses a fresh tracking-mode detector (use LandmarkTracker for a whole video).
    """
    global _STATIC
    if not static:
        with LandmarkTracker(static=False) as tracker:
            return tracker.process(image_rgb)
    with _STATIC_LOCK:
        if _STATIC is None:
            _STATIC = LandmarkTracker(static=True)
        return _STATIC.process(image_rgb)
