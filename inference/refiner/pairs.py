"""Training pairs from a clip: the renders of its tracked take and its real frames, cropped alike.

Render ``i`` of the manifest shows the tracked take at the clip's frame ``frame_offset + i`` (the video at
the take's frame rate, index k = time k / fps). Real crops use the render's steadied head box: the tracked
head lies on the person's face, so the same box frames both. While the video is read, the frames listed
for it feed the texture ``Projector`` (training frames only: held-out frames must not paint the input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from . import crops, frames, texture


@dataclasses.dataclass
class Pairs:
    renders: frames.Renders
    boxes: np.ndarray  # (T, 3)
    render_crops: np.ndarray  # (T, S, S, 4) float16
    real_crops: np.ndarray  # (T, S, S, 3) float16
    video: str
    frame_offset: int

    def clip_record(self) -> dict:
        """What a refiner keeps of its clip: where its frames are and the head's pose in each (for matching
        backgrounds to a new take)."""
        r = self.renders
        return {"video": self.video, "fps": r.fps, "frame_offset": int(self.frame_offset), "width": r.width,
                "height": r.height, "n_frames": len(r), "head_pose": r.head_pose.reshape(len(r), 16).tolist()}


def training_pairs(renders_folder: str, video: str, frame_offset: int, size: int,
                   progress: Callable[[float, str], None] | None = None,
                   projector: texture.Projector | None = None, project_frames: np.ndarray | None = None) -> Pairs:
    """``projector``: accumulate the person's texture from the renders' frames ``project_frames`` (indices into
    the renders; default all) when the renders carry the head's geometry."""
    say = progress or (lambda f, m: None)
    renders = frames.load_renders(renders_folder)
    say(0.0, "finding the head in the renders")
    boxes = frames.head_boxes(renders, progress=lambda f: say(0.4 * f, "finding the head in the renders"))
    rc = frames.render_crops(renders, boxes, size, progress=lambda f: say(0.4 + 0.4 * f, "cropping the renders"))
    say(0.8, "reading the video's frames")
    idx = np.arange(len(renders)) + int(frame_offset)
    real = np.zeros((len(renders), size, size, 3), dtype=np.float16)
    paint = set()
    if projector is not None and renders.has_geometry:
        verts, _faces = renders.geometry()
        paint = set(range(len(renders)) if project_frames is None else np.asarray(project_frames).tolist())

    def keep(n: int, rgb: np.ndarray) -> None:
        real[n] = crops.cut(rgb, boxes[n], size)
        if n in paint:
            projector.add(verts[n], rgb, renders.focal_px)

    frames.read_video_frames(video, renders.fps, idx, (renders.width, renders.height), keep)
    return Pairs(renders, boxes, rc, real, video, int(frame_offset))


def add_textured(renders: frames.Renders, boxes: np.ndarray, render_crops: np.ndarray, colours: np.ndarray) -> None:
    """Draw the head with the person's texture into channels 4..7 of ``render_crops`` (in place)."""
    verts, faces = renders.geometry()
    if len(colours) != len(faces):
        raise frames.FramesError("the person's texture was made for another mesh than these renders show")
    w, h, size = renders.width, renders.height, render_crops.shape[1]
    for i in range(len(renders)):
        render_crops[i, ..., 4:] = texture.textured_crop(np.asarray(verts[i], np.float64), faces, colours,
                                                         renders.focal_px, w, h, boxes[i], size)
