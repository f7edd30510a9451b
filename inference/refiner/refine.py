"""Refining a take: render crops -> refined crops -> pasted on pose-matched clip frames -> mp4.

The memory is read once per frame (top-1) and the reads are smoothed over ``READ_SMOOTH_S`` before the
generator uses them: a read that flips between two slots frame to frame would flicker the face's colour.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import background, crops, frames, pairs, train, video_out

READ_SMOOTH_S = 0.2
BATCH = 8


class RefineCancelled(Exception):
    pass


def refine_crops(nets: train.Nets, render_crops: np.ndarray, fps: float, device: str = "cpu",
                 progress: Callable[[float], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """(T, S, S, 3) float32 refined crops (0..1) of (T, S, S, 4) render crops."""
    from scipy.ndimage import gaussian_filter1d

    T = len(render_crops)
    nets.to(device)
    nets.generator.eval()
    nets.keys.eval()
    reads = []
    for s in range(0, T, BATCH):
        idx = np.arange(s, min(T, s + BATCH))
        stack = train.stack_inputs(render_crops, idx, textured=nets.cfg.textured)
        reads.append(nets.read(stack.to(device)).cpu())
    values = torch.cat(reads).numpy()
    if T > 1:
        values = gaussian_filter1d(values, max(READ_SMOOTH_S * fps, 1e-3), axis=0, mode="nearest")
    values = torch.from_numpy(values.astype(np.float32))
    out = np.zeros(render_crops.shape[:3] + (3,), dtype=np.float32)
    for s in range(0, T, BATCH):
        if cancelled is not None and cancelled():
            raise RefineCancelled()
        idx = np.arange(s, min(T, s + BATCH))
        stack = train.stack_inputs(render_crops, idx, textured=nets.cfg.textured)
        refined, _mask = nets.refine(stack.to(device), values[idx].to(device))
        out[idx] = np.moveaxis(((refined.float().cpu().numpy() + 1) / 2).clip(0, 1), 1, -1)
        if progress is not None:
            progress(min(1.0, (s + BATCH) / T))
    return out


def composite(frame: np.ndarray, refined: np.ndarray, alpha: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``frame`` with the refined crop pasted over the head (feathered, grown a little past its edge)."""
    return crops.paste(frame, refined, crops.feathered(alpha), box)


def refine_take(refiner_path: str, renders_folder: str, out_path: str, audio: str | None = None,
                audio_offset_s: float = 0.0, head_hash: str | None = None, device: str = "cpu",
                progress: Callable[[float, str], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> dict:
    """Write ``out_path`` (mp4): the take rendered in ``renders_folder``, refined, on the clip's backgrounds."""
    say = progress or (lambda f, m: None)
    nets, state = train.load(refiner_path, head_hash)
    renders = frames.load_renders(renders_folder)
    if renders.head_hash and state.get("head_hash") and renders.head_hash != state["head_hash"]:
        raise train.RefinerError("the take was rendered from another head than the refiner was trained for")
    clip = state.get("clip") or {}
    try:
        clip_pose = np.asarray(clip["head_pose"], dtype=np.float64).reshape(-1, 4, 4)
        clip_video, clip_fps = str(clip["video"]), float(clip["fps"])
        offset = int(clip.get("frame_offset", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise train.RefinerError(f"the refiner file does not say which clip it was trained on ({exc})") from None
    say(0.0, "finding the head in the renders")
    boxes = frames.head_boxes(renders)
    size = nets.cfg.size
    rc = frames.render_crops(renders, boxes, size, progress=lambda f: say(0.1 * f, "cropping the renders"))
    if nets.cfg.textured:
        if not renders.has_geometry:
            raise frames.FramesError("these renders do not carry the head's geometry the refiner's texture needs; "
                                     "render the take again with this version of Cadence")
        pairs.add_textured(renders, boxes, rc, nets.texture)
    refined = refine_crops(nets, rc, renders.fps, device, progress=lambda f: say(0.1 + 0.5 * f, "refining"),
                           cancelled=cancelled)
    matched = background.match(renders.head_pose, clip_pose, renders.fps, clip_fps)
    frame_size = (renders.width, renders.height)

    def frames_out():
        with frames.ClipReader(clip_video, clip_fps, frame_size) as reader:
            for t in range(len(renders)):
                bg = reader.frame(int(matched[t]) + offset)
                yield composite(bg, refined[t], rc[t, ..., 3].astype(np.float32), boxes[t])
                if t % 5 == 0:
                    say(0.6 + 0.4 * t / len(renders), f"writing frame {t + 1} of {len(renders)}")

    try:
        video_out.write_mp4(frames_out(), frame_size, renders.fps, out_path, audio=audio,
                            audio_offset_s=audio_offset_s, n_frames=len(renders), cancelled=cancelled)
    except video_out.WriteCancelled as exc:
        raise RefineCancelled() from exc
    return {"video_file": out_path, "n_frames": len(renders), "background_frames": matched.tolist(),
            "size": list(frame_size), "fps": renders.fps}
