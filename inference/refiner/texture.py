"""The person's texture: the clip's frames projected onto the head, and the head drawn with it.

The texture is a colour per mesh triangle (robust to any head: Cadence's own has no UV layout fit for
painting, a FLAME file's UVs are not needed). For each projection frame, the head's triangles are drawn
far to near (back faces culled) into a triangle-id image at ``PROJECT_SCALE`` of the frame; every pixel
votes its colour to the triangle it shows, weighted by how squarely the triangle faces the camera
(cos² of the angle) — so grazing views and hidden triangles do not smear. Two passes: the second drops the
frames whose colour for a triangle is far from the first pass's mean (a hand, a blink, a specular flash).
Triangles no frame saw take their neighbours' colour (grown over shared vertices), then the median.

Camera: the manifest's pinhole (``focal_px``, principal point at the centre), looking along its -Z.
"""

from __future__ import annotations

import numpy as np

from . import crops

PROJECT_SCALE = 0.5
OUTLIER = 0.12  # colour distance (0..1 RGB) beyond which a frame's sample is dropped in the second pass
FILL_STEPS = 24


def project_points(verts_cam: np.ndarray, focal: float, w: int, h: int) -> np.ndarray:
    z = np.maximum(-verts_cam[:, 2], 1e-6)
    return np.stack([w / 2 + focal * verts_cam[:, 0] / z, h / 2 - focal * verts_cam[:, 1] / z], 1)


def _front_faces(verts_cam: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces facing the camera, far to near, and the cosine of their facing angle."""
    a, b, c = verts_cam[faces[:, 0]], verts_cam[faces[:, 1]], verts_cam[faces[:, 2]]
    n = np.cross(b - a, c - a)
    centre = (a + b + c) / 3
    nn = np.linalg.norm(n, axis=1) * np.linalg.norm(centre, axis=1) + 1e-12
    cos = -(n * centre).sum(1) / nn  # > 0: the face looks toward the camera at the origin
    front = np.flatnonzero(cos > 0.05)
    order = front[np.argsort(centre[front, 2])]  # most negative z (farthest) first
    return order, cos


def draw(points: np.ndarray, faces: np.ndarray, order: np.ndarray, image: np.ndarray, values) -> np.ndarray:
    """Fill ``faces[order]`` (pixel ``points``) into ``image``, far to near, each with ``values[i]``."""
    import cv2

    tri = np.round(points[faces[order]] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    for k, f in enumerate(order):
        v = values[f]
        cv2.fillConvexPoly(image, tri[k], v.tolist() if hasattr(v, "tolist") else v, lineType=cv2.LINE_8, shift=4)
    return image


def _frame_samples(verts_cam, faces, frame, focal, scale):
    import cv2

    h, w = frame.shape[:2]
    sw, sh = max(1, int(w * scale)), max(1, int(h * scale))
    small = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA)
    pts = project_points(verts_cam, focal * sw / w, sw, sh)
    order, cos = _front_faces(verts_cam, faces)
    ids = draw(pts, faces, order, np.full((sh, sw), -1, np.int32), np.arange(len(faces)))
    on = ids >= 0
    f = ids[on]
    count = np.bincount(f, minlength=len(faces)).astype(np.float64)
    colour = np.stack([np.bincount(f, small[..., c][on], minlength=len(faces)) for c in range(3)], 1)
    seen = count > 0
    colour[seen] /= count[seen, None]
    weight = np.where(seen, count * np.clip(cos, 0, 1) ** 2, 0.0)
    return colour, weight


class Projector:
    """Accumulates the clip's frames (``add``) into per-triangle colours (``result``). Samples are kept per
    frame (F × 4 floats) for the outlier pass, never the frames themselves."""

    def __init__(self, faces: np.ndarray, scale: float = PROJECT_SCALE):
        self.faces, self.scale = np.asarray(faces, dtype=np.int64), float(scale)
        self.cols: list[np.ndarray] = []
        self.wts: list[np.ndarray] = []

    def add(self, verts_cam: np.ndarray, frame: np.ndarray, focal: float) -> None:
        colour, weight = _frame_samples(np.asarray(verts_cam, np.float64), self.faces, frame, focal, self.scale)
        self.cols.append(colour.astype(np.float16))
        self.wts.append(weight.astype(np.float32))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(F, 3) colours 0..1 and (F,) how much each triangle was seen."""
        if not self.cols:
            raise ValueError("no frames to project the texture from")
        cols = np.stack(self.cols).astype(np.float32)  # (N, F, 3)
        wts = np.stack(self.wts)  # (N, F)
        mean = (cols * wts[..., None]).sum(0) / np.maximum(wts.sum(0), 1e-9)[:, None]
        keep = np.linalg.norm(cols - mean[None], axis=2) < OUTLIER * np.sqrt(3)
        w2 = np.where(keep, wts, 0.0)
        total = w2.sum(0)
        second = (cols * w2[..., None]).sum(0) / np.maximum(total, 1e-9)[:, None]
        colours = np.where((total > 0)[:, None], second, mean)
        seen = wts.sum(0)
        return fill_unseen(colours, seen > 0, self.faces), seen


def fill_unseen(colours: np.ndarray, seen: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unseen triangles take the mean colour of the seen triangles around their vertices, grown outward."""
    out = colours.astype(np.float64).copy()
    known = seen.copy()
    if not known.any():
        return np.full_like(out, 0.5)
    n_v = int(faces.max()) + 1
    for _ in range(FILL_STEPS):
        if known.all():
            break
        acc = np.zeros((n_v, 3))
        cnt = np.zeros(n_v)
        for k in range(3):
            np.add.at(acc, faces[known, k], out[known])
            np.add.at(cnt, faces[known, k], 1.0)
        grow = ~known & (cnt[faces].sum(1) > 0)
        if not grow.any():
            break
        out[grow] = acc[faces[grow]].sum(1) / cnt[faces[grow]].sum(1)[:, None]
        known = known | grow
    out[~known] = np.median(out[seen], axis=0)
    return out.astype(np.float32)


def textured_crop(verts_cam: np.ndarray, faces: np.ndarray, colours: np.ndarray, focal: float, w: int, h: int,
                  box: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 4) the head drawn with its texture in the crop ``box`` (RGB premultiplied, alpha)."""
    pts = project_points(verts_cam, focal, w, h)
    m = crops.crop_matrix(box, size)
    pts = pts @ m[:, :2].T + m[:, 2]
    order, _cos = _front_faces(verts_cam, faces)
    rgba = np.concatenate([colours, np.ones((len(colours), 1), np.float32)], 1)
    return draw(pts, faces, order, np.zeros((size, size, 4), np.float32), rgba)
