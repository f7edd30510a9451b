"""The refiner's inputs on disk: a folder of head renders with its manifest, and the person's video.

The Blender side (``operators/refiner/render.py``) writes one RGBA PNG per frame (the head alone on a
transparent film: alpha is the head's mask) and ``manifest.json``:
``{"kind": "cadence-renders", "version": 1, "width", "height", "fps", "frames": [scene frame, ...],
"files": [name, ...], "head_pose": [[16 floats: the head bone's matrix in camera space], ...],
"take", "head_hash"}``. Frames are read one at a time: a take at 720p does not fit in memory whole.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from . import crops

MANIFEST = "manifest.json"
KIND = "cadence-renders"


class FramesError(ValueError):
    """Renders or a video that cannot be used (the message is shown to the user)."""


@dataclasses.dataclass
class Renders:
    folder: str
    width: int
    height: int
    fps: float
    frames: list[int]
    files: list[str]
    head_pose: np.ndarray  # (T, 4, 4)
    take: str
    head_hash: str
    focal_px: float = 0.0  # the render camera (principal point at the centre); 0: unknown
    vertices_file: str = ""  # (T, V, 3) camera-space vertices of the head per frame (for the texture)
    faces_file: str = ""

    @property
    def has_geometry(self) -> bool:
        return self.focal_px > 0 and os.path.isfile(self.vertices_file) and os.path.isfile(self.faces_file)

    def geometry(self) -> tuple[np.ndarray, np.ndarray]:
        """((T, V, 3) vertices, memory-mapped; (F, 3) triangles); FramesError when missing or inconsistent."""
        try:
            verts = np.load(self.vertices_file, mmap_mode="r", allow_pickle=False)
            faces = np.load(self.faces_file, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise FramesError(f"the head geometry beside the renders is unreadable ({exc}); render again") from exc
        if verts.ndim != 3 or verts.shape[0] != len(self) or verts.shape[2] != 3 or faces.ndim != 2 \
                or faces.shape[1] != 3 or faces.size == 0 or faces.min() < 0 or faces.max() >= verts.shape[1]:
            raise FramesError("the head geometry beside the renders does not match them; render again")
        return verts, faces

    def __len__(self) -> int:
        return len(self.files)

    def rgba(self, i: int) -> np.ndarray:
        """Frame ``i`` as float32 (H, W, 4) in 0..1, colour premultiplied by alpha (the head over black)."""
        import cv2

        path = os.path.join(self.folder, self.files[i])
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] != 4:
            raise FramesError(f"render {path} is missing or not an RGBA image; render the take again")
        img = img[..., [2, 1, 0, 3]].astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
        img[..., :3] *= img[..., 3:]
        return img


def load_renders(folder: str) -> Renders:
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            m = json.load(fh)
    except FileNotFoundError:
        raise FramesError(f"{folder} holds no Cadence renders ({MANIFEST} is missing)") from None
    except (OSError, ValueError) as exc:
        raise FramesError(f"{path} is unreadable: {exc}") from exc
    try:
        if m.get("kind") != KIND:
            raise ValueError("not a Cadence render manifest")
        files = [str(f) for f in m["files"]]
        pose = np.asarray(m["head_pose"], dtype=np.float64).reshape(len(files), 4, 4)
        renders = Renders(folder, int(m["width"]), int(m["height"]), float(m["fps"]), [int(f) for f in m["frames"]],
                          files, pose, str(m.get("take", "")), str(m.get("head_hash", "")),
                          float(m.get("focal_px", 0.0) or 0.0),
                          os.path.join(folder, os.path.basename(str(m.get("vertices", "vertices.npy")))),
                          os.path.join(folder, os.path.basename(str(m.get("faces", "faces.npy")))))
    except (KeyError, TypeError, ValueError) as exc:
        raise FramesError(f"{path} is not a valid render manifest ({exc}); render the take again") from exc
    if not files or len(renders.frames) != len(files) or any(os.sep in f or f.startswith(".") for f in files):
        raise FramesError(f"{path} lists no usable frames; render the take again")
    if not (renders.fps > 0 and renders.width > 0 and renders.height > 0):
        raise FramesError(f"{path} has an invalid size or frame rate")
    return renders


def head_boxes(renders: Renders, progress=None) -> np.ndarray:
    """(T, 3) steadied face boxes of the renders (one pass over the frames)."""
    boxes = []
    for i in range(len(renders)):
        boxes.append(crops.silhouette_box(renders.rgba(i)[..., 3]))
        if progress is not None:
            progress(i / len(renders))
    return crops.steady_boxes(boxes, renders.fps)


def render_crops(renders: Renders, boxes: np.ndarray, size: int, progress=None) -> np.ndarray:
    """(T, S, S, 8) float16 crops of the renders: premultiplied RGB + alpha (0..1), then room for the textured
    render's (``pairs.add_textured``)."""
    out = np.zeros((len(renders), size, size, 8), dtype=np.float16)
    for i in range(len(renders)):
        out[i, ..., :4] = crops.cut(renders.rgba(i), boxes[i], size)
        if progress is not None:
            progress(i / len(renders))
    return out


def read_video_frames(video: str, fps: float, indices: list[int] | np.ndarray, size: tuple[int, int],
                      on_frame) -> None:
    """Call ``on_frame(i, rgb float32 0..1 at size (w, h))`` for the video's frames at ``fps`` whose index is in
    ``indices`` (in order), reading the video once."""
    import cv2

    from ..tracking.video import VideoError, iter_frames, probe

    try:
        info = probe(video, check_length=False)
        wanted = {int(j): n for n, j in enumerate(indices)}
        last = max(wanted) if wanted else -1
        seen = set()
        for k, _t, rgb in iter_frames(info, fps, max_frames=last + 1, downscale=False):
            if k in wanted:
                if rgb.shape[1] != size[0] or rgb.shape[0] != size[1]:
                    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                on_frame(wanted[k], rgb.astype(np.float32) / 255.0)
                seen.add(k)
    except VideoError as exc:
        raise FramesError(str(exc)) from exc
    missing = sorted(set(wanted) - seen)
    if missing:
        raise FramesError(f"{os.path.basename(video)} ends before frame {missing[0]} of the take it was tracked "
                          f"with ({len(missing)} frames missing)")


def real_crops(video: str, fps: float, indices: np.ndarray, boxes: np.ndarray, size: int,
               frame_size: tuple[int, int]) -> np.ndarray:
    """(T, S, S, 3) float16 crops of the video's frames ``indices`` in ``boxes``."""
    out = np.zeros((len(indices), size, size, 3), dtype=np.float16)

    def keep(n: int, rgb: np.ndarray) -> None:
        out[n] = crops.cut(rgb, boxes[n], size)

    read_video_frames(video, fps, indices, frame_size, keep)
    return out


class ClipReader:
    """Random access to a video's frames at ``fps`` (index k = time k / fps), reading forward when it can and
    seeking only on a jump, at ``size`` (w, h). Use as a context manager."""

    def __init__(self, video: str, fps: float, size: tuple[int, int]):
        from ..tracking.video import VideoError, _open, probe

        try:
            self.info = probe(video, check_length=False)
            self.cap = _open(self.info.path)
        except VideoError as exc:
            raise FramesError(str(exc)) from exc
        self.fps, self.size = float(fps), (int(size[0]), int(size[1]))
        self.pos = 0  # source index of the next frame cap.read() returns
        self.last: tuple[int, np.ndarray] | None = None

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc) -> None:
        self.cap.release()

    def frame(self, k: int) -> np.ndarray:
        """The clip's frame ``k`` as float32 RGB 0..1 at ``size``."""
        import cv2

        src = min(int(round(k / self.fps * self.info.fps)), self.info.n_frames - 1)
        if self.last is not None and self.last[0] == src:
            return self.last[1]
        if not 0 <= src - self.pos <= 30:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, src)
            self.pos = src
        frame = None
        while self.pos <= src:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                raise FramesError(f"{os.path.basename(self.info.path)} could not be read at frame {src}")
            self.pos += 1
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if rgb.shape[1] != self.size[0] or rgb.shape[0] != self.size[1]:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        out = rgb.astype(np.float32) / 255.0
        self.last = (src, out)
        return out
