"""Worker jobs "train_refiner" and "refine_video" (stage 2: the memory-augmented GAN refiner).

train_refiner params: ``renders_dir`` (the tracked take rendered by ``cadence.render_frames``), ``video``
(the clip; render ``i`` pairs with its frame ``frame_offset + i`` at the renders' frame rate),
``refiner_out``, optional ``head_hash``, ``max_minutes`` (10), ``max_iters``, ``size`` (128), ``init_refiner``
(a refiner to continue from: a general one or an earlier run), ``net_overrides`` (smaller networks for
tests), ``batch`` (4), ``seed``, ``device`` ("cuda" when available, else "cpu").
Result: {"refiner_file", "val_psnr" (held-out PSNR at the end, dB), "val_psnr_start", "iterations",
"seconds", "device", "n_train", "n_val"}.

refine_video params: ``refiner_file``, ``renders_dir`` (the take to refine), ``video_out`` (the mp4),
optional ``audio`` + ``audio_offset_s`` (where the take starts in it), ``head_hash``, ``device``.
Result: {"video_file", "n_frames", "background_frames", "size", "fps"}.
"""

from __future__ import annotations

import dataclasses
import os

from .jobs import JobCancelled, JobContext, JobError, register_job


def _device(params: dict) -> str:
    import torch

    want = str(params.get("device") or "")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise JobError("the refiner was asked to run on CUDA, but this worker has no CUDA device")
    return want or ("cuda" if torch.cuda.is_available() else "cpu")


def _number(params: dict, key: str, default: float, lo: float, kind=float):
    value = params.get(key, default)
    try:
        v = kind(default if value is None else value)
    except (TypeError, ValueError):
        raise JobError(f"{key} must be a number, got {value!r}") from None
    if not v >= lo:
        raise JobError(f"{key} must be >= {lo}, got {v}")
    return v


@register_job("train_refiner")
def train_refiner_job(params: dict, ctx: JobContext) -> dict:
    from ..refiner import frames, pairs, texture, train
    from ..refiner.networks import RefinerConfig

    for key in ("renders_dir", "video", "refiner_out"):
        if not params.get(key):
            raise JobError(f"train_refiner needs {key!r}")
    offset = _number(params, "frame_offset", 0, 0, int)
    max_minutes = _number(params, "max_minutes", 10.0, 0.0)
    max_iters = params.get("max_iters")
    max_iters = None if max_iters in (None, 0, "") else _number(params, "max_iters", 0, 1, int)
    batch = _number(params, "batch", 4, 1, int)
    device = _device(params)
    if params.get("init_refiner"):
        try:
            nets, init_state = train.load(params["init_refiner"], params.get("head_hash") or None)
        except train.RefinerError as exc:
            raise JobError(str(exc)) from exc
    else:
        try:
            fields = {f.name for f in dataclasses.fields(RefinerConfig)}
            overrides = {k: int(v) for k, v in (params.get("net_overrides") or {}).items() if k in fields}
            cfg = RefinerConfig(**{"size": _number(params, "size", 128, 16, int), **overrides}).check()
        except ValueError as exc:
            raise JobError(f"train_refiner: {exc}") from exc
        nets = train.Nets.new(cfg, seed=int(params.get("seed", 0) or 0))
    try:
        renders = frames.load_renders(params["renders_dir"])
        warnings = []
        if nets.cfg.textured and not renders.has_geometry:
            if params.get("init_refiner"):
                raise JobError("these renders do not carry the head's geometry the refiner's texture needs; "
                               "render the tracked take again")
            nets = train.Nets.new(dataclasses.replace(nets.cfg, textured=0), seed=int(params.get("seed", 0) or 0))
            warnings.append("the renders carry no head geometry: trained without the person's texture")
        projector = texture.Projector(renders.geometry()[1]) if nets.cfg.textured else None
        tr, _val = train.split(len(renders))
        data = pairs.training_pairs(params["renders_dir"], params["video"], offset, nets.cfg.size,
                                    progress=lambda f, m: ctx.progress(0.12 * f, m), projector=projector,
                                    project_frames=tr)
        if projector is not None:
            ctx.progress(0.12, "painting the person's texture onto the head")
            nets.texture, _seen = projector.result()
            pairs.add_textured(data.renders, data.boxes, data.render_crops, nets.texture)
    except train.RefinerError as exc:
        raise JobError(str(exc)) from exc
    except frames.FramesError as exc:
        raise JobError(str(exc)) from exc
    head_hash = str(params.get("head_hash") or data.renders.head_hash)
    try:
        hist = train.train(nets, data.render_crops, data.real_crops, max_minutes=max_minutes, max_iters=max_iters,
                           batch=batch, device=device, seed=int(params.get("seed", 0) or 0),
                           progress=lambda f, m: ctx.progress(0.15 + 0.83 * f, m),
                           cancelled=lambda: ctx.cancelled)
    except train.TrainCancelled as exc:
        raise JobCancelled("train_refiner was cancelled") from exc
    except train.RefinerError as exc:
        raise JobError(str(exc)) from exc
    out = str(params["refiner_out"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    train.save(nets, out, head_hash, data.clip_record(), hist)
    return {"refiner_file": out, "val_psnr": hist["val_psnr"][-1], "val_psnr_start": hist["val_psnr"][0],
            "iterations": hist["iterations"], "seconds": round(hist["seconds"], 2), "device": device,
            "n_train": hist["n_train"], "n_val": hist["n_val"], "loss_l1_first": hist["loss_l1"][:10],
            "loss_l1_last": hist["loss_l1"][-10:], "textured": bool(nets.cfg.textured), "warnings": warnings}


@register_job("refine_video")
def refine_video_job(params: dict, ctx: JobContext) -> dict:
    from ..refiner import frames, refine, train, video_out

    for key in ("refiner_file", "renders_dir", "video_out"):
        if not params.get(key):
            raise JobError(f"refine_video needs {key!r}")
    offset = _number(params, "audio_offset_s", 0.0, -1e6)
    try:
        return refine.refine_take(params["refiner_file"], params["renders_dir"], str(params["video_out"]),
                                  audio=params.get("audio") or None, audio_offset_s=offset,
                                  head_hash=params.get("head_hash") or None, device=_device(params),
                                  progress=lambda f, m: ctx.progress(0.98 * f, m), cancelled=lambda: ctx.cancelled)
    except refine.RefineCancelled as exc:
        raise JobCancelled("refine_video was cancelled") from exc
    except (train.RefinerError, frames.FramesError, video_out.VideoOutError) as exc:
        raise JobError(str(exc)) from exc
