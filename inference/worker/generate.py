"""Worker job "generate": audio + head file -> a Channels take (.npz) made by the lip engine.

With ``persona`` (a persona file made for this head by the "personalize" job) the lips, gaze and
blinks still come from the lip engine, while head rotation/translation and the upper-face expression
components come from the persona (``persona_mode``: "match" (default) = the person's own tracked
motion chosen by the voice, "network" = the paper's network's prediction plus sampled motion,
"retrieve" = the person's recorded poses chosen along the network's motion). ``motion_amplitude``
scales the persona's motion about the person's mean pose.
"""

from __future__ import annotations

import os
import time

from ..audio.decode import AudioError
from ..heads.head_model import HeadModel, HeadModelError
from ..lips.phonemes import RecognitionError
from ..lips.visemes import VisemeError
from ..motion.animate import Cancelled, animate_audio
from .jobs import JobCancelled, JobContext, JobError, register_job


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
    persona = _load_persona(params, head) if params.get("persona") else None  # fail fast, before the lips
    try:
        ch = animate_audio(
            params["audio"], head, params.get("fps", 24.0), transcript=params.get("transcript") or None,
            seed=int(params.get("seed", 0)), lip_strength=params.get("lip_strength", 1.0),
            motion_amplitude=params.get("motion_amplitude", 1.0), motion_speed=params.get("motion_speed", 1.0),
            progress=ctx.progress, cancelled=lambda: ctx.cancelled,
        )
    except Cancelled as exc:
        raise JobCancelled(str(exc)) from exc
    except (AudioError, VisemeError, RecognitionError, ValueError) as exc:
        raise JobError(str(exc)) from exc
    if persona is not None:
        t1 = time.perf_counter()
        _apply_persona(ch, persona, params, ctx)
        ch.meta.setdefault("timings", {})["persona"] = round(time.perf_counter() - t1, 4)
    path = os.path.join(ctx.out_dir, "channels.npz")
    ch.save(path)
    timings = dict(ch.meta.get("timings", {}), load_head=round(load_s, 4))
    return {"channels_file": path, "n_frames": ch.n_frames, "phones": int(ch.meta["phones"]),
            "engine": ch.meta["engine"], "timings": timings, "notes": ch.meta.get("notes", []),
            "persona": ch.meta.get("persona", "")}


def _load_persona(params: dict, head: HeadModel):
    """The persona file of ``params`` checked against ``head`` (JobError with a user-facing message)."""
    from ..persona import persona as ps  # torch: only imported when a persona is used

    if (params.get("persona_mode") or "match") not in ps.MODES:
        raise JobError(f"persona_mode must be one of {', '.join(ps.MODES)}, got {params.get('persona_mode')!r}")
    try:
        return ps.load_persona(params["persona"], head=head)
    except ps.PersonaHeadMismatch as exc:
        raise JobError(f"{os.path.basename(params['persona'])}: {exc}") from exc
    except ps.PersonaError as exc:
        raise JobError(str(exc)) from exc


def _apply_persona(ch, persona, params: dict, ctx: JobContext) -> None:
    """Replace the take's head pose and upper-face expression with the persona's (in place)."""
    import numpy as np

    from ..audio.decode import load_audio
    from ..persona import persona as ps

    mode = params.get("persona_mode") or "match"
    ctx.progress(0.97, "moving the head in the persona's style")
    try:
        audio = load_audio(params["audio"])
        gen = ps.generate_pose(persona, audio, ch.fps, mode=mode, seed=int(params.get("seed", 0)),
                               n_frames=ch.n_frames, intensity=float(params.get("motion_amplitude", 1.0)))
    except (AudioError, ps.PersonaError, ValueError) as exc:
        raise JobError(f"the persona could not animate this audio: {exc}") from exc
    ch.set("head_rotation", gen["head_rotation"])
    ch.set("head_translation", gen["head_translation"])
    mask = np.asarray(gen["expression_mask"], dtype=bool)
    expr = ch.get("expression")
    if expr is not None and mask.any() and expr.shape[1] == mask.size:
        expr = np.array(expr, dtype=np.float64)
        expr[:, mask] = gen["expression"][:, mask]  # lips stay the lip engine's
        ch.set("expression", expr)
    ch.meta["persona"] = os.path.basename(params["persona"])
    ch.meta["persona_mode"] = mode
