"""Face crops that follow the rendered head: boxes from the render's alpha, steadied over time, and the
affine maps between a frame and its crop (to cut a crop out and to paste a refined crop back).

A box is (cx, cy, side) in frame pixels: a square ``MARGIN`` times the silhouette's width, its top a little
above the top of the head. Sized by the width, not the height: the neck runs to the frame's edge in a
close shot, and a box around it would shrink the face to a quarter of the crop. Boxes are smoothed over ``SMOOTH_S`` seconds (the side more: a crop that breathes with every jaw
opening would make the refiner's input swim). Frames without a head (empty alpha) take their neighbours' box.
"""

from __future__ import annotations

import numpy as np

MARGIN = 1.55  # side / head width: crown to below the chin on a frontal head
TOP = 0.05  # the box starts this fraction of its side above the head's top
SMOOTH_S = 0.12
SIDE_SMOOTH_S = 0.5
ALPHA_ON = 0.5


class CropError(ValueError):
    """The renders hold no head to crop (the message is shown to the user)."""


def silhouette_box(alpha: np.ndarray) -> np.ndarray | None:
    """(cx, cy, side) of the face box of the alpha > 0.5 pixels, or None when there are none."""
    ys, xs = np.nonzero(np.asarray(alpha) > ALPHA_ON)
    if len(xs) < 4:
        return None
    x0, x1, y0 = xs.min(), xs.max() + 1, ys.min()
    side = MARGIN * (x1 - x0)
    return np.array([(x0 + x1) / 2.0, y0 + (0.5 - TOP) * side, side], dtype=np.float64)


def steady_boxes(boxes: list[np.ndarray | None], fps: float) -> np.ndarray:
    """(T, 3) boxes: gaps filled from the nearest frames with a head, then smoothed over time."""
    from scipy.ndimage import gaussian_filter1d

    have = [i for i, b in enumerate(boxes) if b is not None]
    if not have:
        raise CropError("none of the rendered frames shows the head: is the camera looking at it?")
    t = np.arange(len(boxes))
    known = np.stack([boxes[i] for i in have])
    filled = np.stack([np.interp(t, have, known[:, k]) for k in range(3)], 1)
    out = filled.copy()
    if len(boxes) > 1:
        out[:, :2] = gaussian_filter1d(filled[:, :2], max(SMOOTH_S * fps, 1e-3), axis=0, mode="nearest")
        out[:, 2] = gaussian_filter1d(filled[:, 2], max(SIDE_SMOOTH_S * fps, 1e-3), mode="nearest")
    return out


def crop_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 affine taking frame pixels to crop pixels (``size``²)."""
    cx, cy, side = (float(v) for v in box)
    s = size / side
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]], dtype=np.float64)


def cut(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The ``size``² crop of ``frame`` (H, W, C) in ``box``; outside the frame is black."""
    import cv2

    return cv2.warpAffine(frame, crop_matrix(box, size), (size, size), flags=cv2.INTER_AREA
                          if box[2] > size else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def paste(frame: np.ndarray, crop_rgb: np.ndarray, crop_weight: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``frame`` (H, W, 3 float) with ``crop_rgb`` blended in where ``crop_weight`` (size², 0..1) says."""
    import cv2

    h, w = frame.shape[:2]
    inv = cv2.invertAffineTransform(crop_matrix(box, crop_rgb.shape[0]))
    rgb = cv2.warpAffine(crop_rgb.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR)
    weight = cv2.warpAffine(crop_weight.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    return frame * (1.0 - weight) + rgb * weight


def feathered(mask: np.ndarray, grow: float = 0.03, feather: float = 0.04) -> np.ndarray:
    """A soft paste weight from a head mask (size²): grown by ``grow`` and feathered over ``feather`` of the
    crop's side, so the seam falls outside the head's edge, on the person's own background."""
    import cv2

    size = mask.shape[0]
    m = (np.asarray(mask) > ALPHA_ON).astype(np.uint8)
    r = max(1, int(round(grow * size)))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(np.float32)
    sigma = max(0.5, feather * size)
    return np.clip(cv2.GaussianBlur(m, (0, 0), sigma), 0.0, 1.0)
