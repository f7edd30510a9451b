"""Headless stage 2 (``cadence_batch.py train-refiner | refine | photoreal``).

- ``run_train_refiner``: a tracked .blend (from ``track``) -> a refiner file (the .blend is saved with it recorded);
- ``run_refine``: a .blend with a take and a refiner -> the take's mp4;
- ``run_photoreal``: (clip, audio) -> mp4 in one go: track the clip, learn its persona, train the refiner,
  generate the audio's take in the person's style, refine it; the .blend is kept beside the mp4.
Each raises the operators' errors (RenderError, TrackVideoError, WorkerError...) with the reason.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import bpy

from .. import batch as batch_mod
from . import refine_video, train_refiner


def _say(stream, text: str) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def _train(context, refiner_out: str, minutes: float, size: int, samples: int, stream) -> dict:
    t0 = time.perf_counter()
    _say(stream, f"training the refiner ({minutes:g} min at {size}², renders at {samples} samples) ...")
    job = train_refiner.TrainRefinerJob(context, {"refiner_out": refiner_out, "max_minutes": minutes, "size": size,
                                                  "samples": samples})
    job.run_sync()
    report = job.apply()
    _say(stream, f"ok: refiner {report['refiner_file']} ({report['iterations']} iterations on {report['device']}, "
                 f"held-out PSNR {report['val_psnr_start']:.1f} -> {report['val_psnr']:.1f} dB, "
                 f"{time.perf_counter() - t0:.0f} s)")
    return report


def _refine(context, video_out: str, samples: int, stream) -> str:
    t0 = time.perf_counter()
    _say(stream, "rendering and refining the take ...")
    job = refine_video.RefineVideoJob(context, video_out, {"samples": samples})
    job.run_sync()
    report = job.apply()
    _say(stream, f"ok: {report['n_frames']} frames -> {report['video_file']} ({time.perf_counter() - t0:.0f} s)")
    for w in report.get("warnings", []):
        _say(stream, f"warning: {w}")
    return report["video_file"]


def run_train_refiner(blend: str, refiner_out: str, minutes: float = 10.0, size: int = 128,
                      samples: int = 8, stream=None) -> str:
    batch_mod._open_base(blend)
    context = bpy.context
    batch_mod._ensure_rig(context, "")
    report = _train(context, os.path.abspath(refiner_out), minutes, size, samples, stream)
    bpy.ops.wm.save_mainfile()
    return report["refiner_file"]


def run_refine(blend: str, video_out: str, refiner: str = "", samples: int = 8, stream=None) -> str:
    batch_mod._open_base(blend)
    context = bpy.context
    rig = batch_mod._ensure_rig(context, "")
    if refiner:
        rig["cadence"]["refiner"] = {"file": os.path.abspath(refiner)}
    return _refine(context, os.path.abspath(video_out), samples, stream)


def run_photoreal(video: str, audio: str, out_dir: str, minutes: float = 10.0, size: int = 128, samples: int = 8,
                  head_file: str = "", lens_mm: float = 0.0, stream=None) -> str:
    from .. import generate, personalize, track_video

    out = batch_mod.output_folder(out_dir)
    name = Path(audio).stem
    batch_mod._open_base("")
    context = bpy.context
    batch_mod._ensure_rig(context, head_file)
    _say(stream, f"tracking {Path(video).name} ...")
    job = track_video.TrackJob(context, video, {"frame_start": 1, "mode": "NEW", "lens_mm": lens_mm})
    job.run_sync()
    job.apply()
    _say(stream, "learning the persona ...")
    job = personalize.PersonalizeJob(context, video, {"persona_out": str(out / f"{Path(video).stem}.persona.pt")})
    job.run_sync()
    persona = job.apply()["persona"]
    _train(context, str(out / f"{Path(video).stem}.refiner.pt"), minutes, size, samples, stream)
    _say(stream, f"generating the take of {Path(audio).name} in the person's style ...")
    job = generate.GenerateJob(context, {"audio": os.path.abspath(audio), "seed": 0, "lip_strength": 1.0,
                                         "motion_amplitude": 1.0, "motion_speed": 1.0, "persona": persona,
                                         "persona_mode": "match"},
                               {"groups": set(generate.GROUP_SETS), "frame_start": 1, "mode": "NEW",
                                "set_frame_range": True, "add_sound": True, "take_name": name,
                                "reduce_tolerance": None})
    job.run_sync()
    job.apply()
    bpy.ops.wm.save_as_mainfile(filepath=str(out / f"{name}.blend"), check_existing=False)
    return _refine(context, str(out / f"{name}.mp4"), samples, stream)
