"""Training pairs from a clip: the renders of its tracked take and its real frames, cropped alike.

Render ``i`` of the manifest shows the tracked take at the clip's frame ``frame_offset + i`` (the video at
the take's frame rate, index k = time k / fps). Real crops use the render's steadied head box: the tracked
head lies on the person's face, so the same box frames both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from . import frames


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
                   progress: Callable[[float, str], None] | None = None) -> Pairs:
    say = progress or (lambda f, m: None)
    renders = frames.load_renders(renders_folder)
    say(0.0, "finding the head in the renders")
    boxes = frames.head_boxes(renders, progress=lambda f: say(0.4 * f, "finding the head in the renders"))
    rc = frames.render_crops(renders, boxes, size, progress=lambda f: say(0.4 + 0.4 * f, "cropping the renders"))
    say(0.8, "reading the video's frames")
    idx = np.arange(len(renders)) + int(frame_offset)
    real = frames.real_crops(video, renders.fps, idx, boxes, size, (renders.width, renders.height))
    return Pairs(renders, boxes, rc, real, video, int(frame_offset))
