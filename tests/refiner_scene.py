"""A tiny stand-in for a tracked clip, for the refiner's worker-side tests (no Blender).

"Renders": a grey shaded disc (the head) moving over a transparent film, with a manifest. "The video": the
same disc seen as a person would be, a warm colour with a darker mouth band that opens and closes, over a
textured background that is the same in every frame. The refiner must learn the one from the other.
"""

from __future__ import annotations

import json
import os

import numpy as np

W, H, FPS = 96, 72, 25.0


def head_path(n: int) -> np.ndarray:
    """(n, 3): the disc's centre x, y and the mouth's opening 0..1 per frame."""
    t = np.arange(n) / FPS
    return np.stack([W / 2 + 10 * np.sin(2 * np.pi * 0.4 * t), H / 2 + 4 * np.sin(2 * np.pi * 0.7 * t + 1),
                     0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t)], 1)


def _disc(cx: float, cy: float, r: float = 18.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    dx, dy = (xx - cx) / r, (yy - cy) / r
    inside = np.clip((1.0 - np.sqrt(dx ** 2 + dy ** 2)) * r, 0, 1)
    return inside, dx, dy


def render_frame(cx: float, cy: float) -> np.ndarray:
    inside, dx, dy = _disc(cx, cy)
    shade = np.clip(0.75 - 0.3 * dx - 0.2 * dy, 0, 1)
    return np.dstack([shade, shade, shade, inside])


def real_frame(cx: float, cy: float, mouth: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    bg = np.dstack([0.2 + 0.3 * xx / W, 0.35 + 0.1 * np.sin(yy / 5), 0.5 - 0.2 * yy / H])
    inside, dx, dy = _disc(cx, cy)
    skin = np.dstack([0.85 - 0.2 * dy, 0.6 - 0.15 * dy, 0.5 - 0.1 * dy])
    band = (np.abs(dy - 0.45) < 0.05 + 0.15 * mouth) & (np.abs(dx) < 0.4)
    skin[band] = (0.3, 0.1, 0.1)
    return bg * (1 - inside[..., None]) + skin * inside[..., None]


FOCAL, RADIUS_PX = 100.0, 18.0


def hemisphere(cx: float, cy: float, rings: int = 12, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space vertices and triangles of the half ball the disc is (depth 1 m, facing the camera)."""
    r = RADIUS_PX / FOCAL
    centre = np.array([(cx - W / 2) / FOCAL, -(cy - H / 2) / FOCAL, -1.0])
    verts = [centre + [0, 0, r]]
    for i in range(1, rings + 1):
        polar = np.pi / 2 * i / rings
        for j in range(segments):
            az = 2 * np.pi * j / segments
            verts.append(centre + r * np.array([np.sin(polar) * np.cos(az), np.sin(polar) * np.sin(az),
                                                np.cos(polar)]))
    faces = [[0, 1 + j, 1 + (j + 1) % segments] for j in range(segments)]
    for i in range(rings - 1):
        a, b = 1 + i * segments, 1 + (i + 1) * segments
        for j in range(segments):
            k = (j + 1) % segments
            faces += [[a + j, b + j, b + k], [a + j, b + k, a + k]]
    return np.asarray(verts, np.float32), np.asarray(faces, np.int32)


def write_renders(folder: str, n: int, head_hash: str = "h" * 16, geometry: bool = True) -> str:
    import cv2

    os.makedirs(folder, exist_ok=True)
    path = head_path(n)
    files, poses = [], []
    for i, (cx, cy, _m) in enumerate(path):
        img = render_frame(cx, cy)
        name = f"render_{i + 1:05d}.png"
        bgra = (img[..., [2, 1, 0, 3]] * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(os.path.join(folder, name), bgra)
        files.append(name)
        pose = np.eye(4)
        pose[:3, 3] = ((cx - W / 2) / 100.0, -(cy - H / 2) / 100.0, -1.0)  # in front of the camera
        poses.append(pose.ravel().tolist())
    if geometry:
        np.save(os.path.join(folder, "vertices.npy"), np.stack([hemisphere(cx, cy)[0] for cx, cy, _m in path]))
        np.save(os.path.join(folder, "faces.npy"), hemisphere(0, 0)[1])
    manifest = {"kind": "cadence-renders", "version": 1, "width": W, "height": H, "fps": FPS, "focal_px": FOCAL,
                "frames": list(range(1, n + 1)), "files": files, "head_pose": poses, "take": "test",
                "head_hash": head_hash}
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    return folder


def write_video(path: str, n: int) -> str:
    from inference.refiner.video_out import write_mp4

    frames = (real_frame(cx, cy, m) for cx, cy, m in head_path(n))
    return write_mp4(frames, (W, H), FPS, path, n_frames=n, crf=10)
