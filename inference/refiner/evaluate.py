"""How close the refiner's frames come to the real person: PSNR and SSIM in the face box and the mouth.

Compared on held-out frames of a tracked clip, against the real frames (crops in the head box, as the
refiner sees them): (a) the raw Eevee render composited on the real frame by its alpha, (b) the textured
render when there is one, (c) the refined crop pasted the way Refine Video pastes it (feathered head mask).
The mouth region comes from MediaPipe's lip landmarks on the real frames (found by tracking), so it does
not depend on where our head put its mouth.
"""

from __future__ import annotations

import numpy as np

from . import crops

# MediaPipe's outer lip ring.
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
MOUTH_PAD = 0.35
ROWS = ("raw render", "textured render", "refined")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two (H, W, 3) images in 0..1 (Gaussian window, sigma 1.5; Wang et al. 2004's constants)."""
    import cv2

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def mouth_boxes(landmarks: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(T, 4) x0, y0, x1, y1 of the mouth in crop pixels, from (T, 478, 2+) landmarks in frame pixels
    (frames without landmarks take the clip's median box)."""
    out = np.full((len(boxes), 4), np.nan)
    for t, (lm, box) in enumerate(zip(landmarks, boxes)):
        pts = np.asarray(lm)[list(LIPS), :2]
        if not np.all(np.isfinite(pts)):
            continue
        m = crops.crop_matrix(box, size)
        p = pts @ m[:, :2].T + m[:, 2]
        lo, hi = p.min(0), p.max(0)
        pad = MOUTH_PAD * (hi - lo)
        out[t] = [*(lo - pad), *(hi + pad)]
    if np.isnan(out).all():
        raise ValueError("no lip landmarks on any frame")
    med = np.nanmedian(out, axis=0)
    out[np.isnan(out).any(1)] = med
    return np.clip(np.round(out), 0, size).astype(int)


def composites(render_crops: np.ndarray, real_crops: np.ndarray, refined: np.ndarray) -> dict[str, np.ndarray]:
    """The images compared with the real crops: raw and textured render on the real frame (by their alpha),
    refined pasted on it the way Refine Video pastes it. ``render_crops``: (T, S, S, 8) (``frames.py``)."""
    rgba = render_crops.astype(np.float32)
    real = real_crops.astype(np.float32)
    raw = rgba[..., :3] + (1 - rgba[..., 3:4]) * real  # premultiplied render over the real frame
    out = {"raw render": raw}
    if rgba[..., 7].any():
        out["textured render"] = rgba[..., 4:7] + (1 - rgba[..., 7:8]) * real
    pasted = np.stack([crops.feathered(a)[..., None] for a in rgba[..., 3]])
    out["refined"] = refined * pasted + real * (1 - pasted)
    return out


def scores(real_crops: np.ndarray, images: dict[str, np.ndarray], mouths: np.ndarray) -> dict[str, dict]:
    """{row: {"face_psnr", "face_ssim", "mouth_psnr", "mouth_ssim"}} averaged over the frames."""
    real = real_crops.astype(np.float32)
    out = {}
    for name, img in images.items():
        f_p, f_s, m_p, m_s = [], [], [], []
        for t in range(len(real)):
            f_p.append(psnr(img[t], real[t]))
            f_s.append(ssim(img[t], real[t]))
            x0, y0, x1, y1 = mouths[t]
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                m_p.append(psnr(img[t, y0:y1, x0:x1], real[t, y0:y1, x0:x1]))
                m_s.append(ssim(img[t, y0:y1, x0:x1], real[t, y0:y1, x0:x1]))
        out[name] = {"face_psnr": float(np.mean(f_p)), "face_ssim": float(np.mean(f_s)),
                     "mouth_psnr": float(np.mean(m_p)) if m_p else float("nan"),
                     "mouth_ssim": float(np.mean(m_s)) if m_s else float("nan")}
    return out


def format_table(results: dict[str, dict[str, dict]], notes: list[str] | None = None) -> str:
    """``results``: {clip: {row: scores}} -> a text table."""
    lines = [f"{'clip':<28} {'frames':<18} {'face PSNR':>10} {'face SSIM':>10} {'mouth PSNR':>11} {'mouth SSIM':>11}"]
    for clip, rows in results.items():
        for name in ROWS:
            s = rows.get(name)
            if s is None:
                lines.append(f"{clip:<28} {name:<18} {'n/a':>10} {'n/a':>10} {'n/a':>11} {'n/a':>11}")
                continue
            lines.append(f"{clip:<28} {name:<18} {s['face_psnr']:>10.2f} {s['face_ssim']:>10.3f} "
                         f"{s['mouth_psnr']:>11.2f} {s['mouth_ssim']:>11.3f}")
    return "\n".join(lines + list(notes or []))


def side_by_side(real: np.ndarray, images: dict[str, np.ndarray], path: str, n: int = 6) -> str:
    """A PNG: one column per frame (n spread over the held-out frames), rows real / each image."""
    import cv2

    idx = np.linspace(0, len(real) - 1, min(n, len(real))).round().astype(int)
    rows = [np.concatenate([real[i] for i in idx], 1)]
    rows += [np.concatenate([img[i] for i in idx], 1) for img in images.values()]
    sheet = (np.clip(np.concatenate(rows, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
    labels = ["real", *images]
    s = real.shape[1]
    for r, label in enumerate(labels):
        cv2.putText(sheet, label, (4, r * s + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(path, sheet[..., ::-1])
    return path
