"""Worker job "generate": audio + head file -> a Channels take (.npz) made by the lip engine."""

from __future__ import annotations

import os
import time

from .animate import Cancelled, animate_audio
from .audio import AudioError
from .head_model import HeadModel, HeadModelError
from .jobs import JobCancelled, JobContext, JobError, register_job
from .visemes import VisemeError


@register_job("generate")
def generate(params: dict, ctx: JobContext) -> dict:
    for key in ("audio", "head_file"):
        if not params.get(key):
            raise JobError(f"generate needs {key!r}")
    t0 = time.perf_counter()
    try:
        head = HeadModel.load(params["head_file"])
    except HeadModelError as exc:
        raise JobError(str(exc)) from exc
    load_s = time.perf_counter() - t0
    try:
        ch = animate_audio(
            params["audio"], head, params.get("fps", 24.0), transcript=params.get("transcript") or None,
            seed=int(params.get("seed", 0)), lip_strength=params.get("lip_strength", 1.0),
            motion_amplitude=params.get("motion_amplitude", 1.0), motion_speed=params.get("motion_speed", 1.0),
            progress=ctx.progress, cancelled=lambda: ctx.cancelled,
        )
    except Cancelled as exc:
        raise JobCancelled(str(exc)) from exc
    except (AudioError, VisemeError, ValueError) as exc:
        raise JobError(str(exc)) from exc
    path = os.path.join(ctx.out_dir, "channels.npz")
    ch.save(path)
    timings = dict(ch.meta.get("timings", {}), load_head=round(load_s, 4))
    return {"channels_file": path, "n_frames": ch.n_frames, "phones": int(ch.meta["phones"]),
            "engine": ch.meta["engine"], "timings": timings, "notes": ch.meta.get("notes", [])}
