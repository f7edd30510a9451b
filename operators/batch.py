"""Headless batch generation: many audio files -> takes in one .blend or one .blend per file.

Each file is processed on its own: a failure is reported and the batch goes on. Used by
``cadence_batch.py`` (``blender -b scene.blend --python cadence_batch.py -- …``, or ``./cadence batch``).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import generate
from .rig import build as rig_mod

AUDIO_SUFFIXES = {ext.lstrip(".") for ext in generate.AUDIO_EXTENSIONS.split(";")}


@dataclass
class BatchResult:
    succeeded: list[tuple[str, str]] = field(default_factory=list)  # (audio, output)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (audio, message)

    def summary(self) -> str:
        lines = [f"Cadence batch: {len(self.succeeded)} succeeded, {len(self.failed)} failed"]
        lines += [f"  ok     {Path(a).name} -> {o}" for a, o in self.succeeded]
        lines += [f"  FAILED {Path(a).name}: {m}" for a, m in self.failed]
        return "\n".join(lines)


def collect_audio(inputs: list[str]) -> list[str]:
    """Files and folders -> a sorted list of audio files (folders: their audio files, not recursive)."""
    found: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(os.path.abspath(f) for f in p.iterdir() if f.suffix.lower().lstrip(".") in AUDIO_SUFFIXES)
        else:
            found.append(os.path.abspath(p))  # a missing file is reported as that file's failure
    return found


def _ensure_rig(context: bpy.types.Context, head_file: str) -> bpy.types.Object:
    rig = rig_mod.find_rig(context.active_object)
    if rig is None:
        rig = next((o for o in context.scene.objects if rig_mod.find_rig(o) is o), None)
    if rig is None:
        result = bpy.ops.cadence.add_head(filepath=head_file)
        if result != {"FINISHED"}:
            raise RuntimeError(f"could not add the head ({head_file or 'default head'})")
        rig = context.active_object
    for obj in context.view_layer.objects:
        obj.select_set(False)
    rig.select_set(True)
    context.view_layer.objects.active = rig
    return rig


def run_batch(audio_files: list[str], out_dir: str, per_file_blend: bool = True, head_file: str = "",
              base_blend: str = "", frame_start: int = 1, seed: int = 0, transcripts: bool = True,
              preview: bool = False, preview_size: int = 256, stream=None, persona: str = "",
              persona_mode: str = "match") -> BatchResult:
    """Generate a take per audio file. ``per_file_blend``: a .blend per file, else one .blend of takes.
    ``persona``: a persona file (cadence.personalize) for head motion and upper face in that person's style."""
    stream = stream or sys.stdout
    out = output_folder(out_dir)
    names = output_names(audio_files)
    if not per_file_blend and base_blend and _same_file(out / "cadence_batch.blend", base_blend):
        raise ValueError(f"the batch would overwrite its base scene {base_blend}: choose another --out folder")
    result = BatchResult()
    n = len(audio_files)
    if not per_file_blend:
        _open_base(base_blend)
    for i, (audio, name) in enumerate(zip(audio_files, names), 1):
        t0 = time.perf_counter()
        print(f"[{i}/{n}] {Path(audio).name} ...", file=stream, flush=True)
        try:
            target = out / (f"{name}.blend" if per_file_blend else "cadence_batch.blend")
            if per_file_blend and base_blend and _same_file(target, base_blend):
                raise ValueError(f"{target} is the base scene; Cadence does not write over it (choose another --out)")
            if per_file_blend:
                _open_base(base_blend)
            context = bpy.context
            _ensure_rig(context, head_file)
            transcript = _transcript_for(audio) if transcripts else None
            job = generate.GenerateJob(context, {
                "audio": audio, "transcript": transcript, "seed": seed, "lip_strength": 1.0,
                "motion_amplitude": 1.0, "motion_speed": 1.0, "persona": persona, "persona_mode": persona_mode,
            }, {
                "groups": set(generate.GROUP_SETS), "frame_start": frame_start, "mode": "NEW",
                "set_frame_range": True, "add_sound": True, "take_name": name,
                "reduce_tolerance": None,
            })
            job.run_sync()
            report = job.apply()
            if per_file_blend:
                bpy.ops.wm.save_as_mainfile(filepath=str(target), check_existing=False)
            if preview:
                from . import preview as preview_mod

                preview_mod.render_preview(context.scene, str(out / f"{name}.mp4"),
                                           size=preview_size, audio=audio)
            result.succeeded.append((audio, str(target)))
            print(f"[{i}/{n}] ok: frames {report['frames'][0]}–{report['frames'][1]} "
                  f"({time.perf_counter() - t0:.1f} s)", file=stream, flush=True)
            for w in report.get("warnings", []):
                print(f"[{i}/{n}] warning: {w}", file=stream, flush=True)
        except (generate.GenerateError, RuntimeError, OSError, ValueError) as exc:
            result.failed.append((audio, str(exc)))
            print(f"[{i}/{n}] FAILED: {exc}", file=stream, flush=True)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            result.failed.append((audio, f"unexpected error: {exc}"))
            traceback.print_exc(file=stream)
    if not per_file_blend and result.succeeded:
        bpy.ops.wm.save_as_mainfile(filepath=str(out / "cadence_batch.blend"), check_existing=False)
    print(result.summary(), file=stream, flush=True)
    return result


def output_folder(out_dir: str) -> Path:
    """The batch's output folder, made if needed; ValueError (a clear message) when it cannot be one."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot make the output folder {out}: {exc.strerror or exc}") from exc
    return out


def output_names(audio_files: list[str]) -> list[str]:
    """One output name per audio file: its stem, made unique within the batch (``line``, ``line-2``, ...) so no
    file's result overwrites another's (line.wav and line.flac, or two folders' line.wav)."""
    names: list[str] = []
    taken: set[str] = set()
    for audio in audio_files:
        stem = Path(audio).stem
        name, k = stem, 1
        while name.lower() in taken:  # case-insensitive file systems too
            k += 1
            name = f"{stem}-{k}"
        taken.add(name.lower())
        names.append(name)
    return names


def _same_file(a: Path, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _open_base(base_blend: str) -> None:
    if base_blend:
        bpy.ops.wm.open_mainfile(filepath=base_blend)
    else:
        bpy.ops.wm.read_homefile(use_empty=True)


def _transcript_for(audio: str) -> str | None:
    """A transcript next to the audio (NAME.transcript.txt) is used for forced alignment when present."""
    txt = os.path.splitext(audio)[0] + ".transcript.txt"
    if os.path.isfile(txt):
        text = Path(txt).read_text(encoding="utf-8", errors="replace").strip()
        return text or None
    return None


# ------------------------------------------------------------------------------ tracking / personas
def run_track(video: str, out_dir: str, head_file: str = "", base_blend: str = "", frame_start: int = 1,
              show_background: bool = True, lens_mm: float = 0.0, stream=None) -> str:
    """Track ``video`` onto the scene's rig (or a new head): take, identity, camera, sound; saves and returns
    ``OUT/<video>_track.blend``. Raises track_video.TrackVideoError / WorkerError with the reason."""
    from . import track_video

    stream = stream or sys.stdout
    out = output_folder(out_dir)
    t0 = time.perf_counter()
    _open_base(base_blend)
    context = bpy.context
    _ensure_rig(context, head_file)
    print(f"tracking {Path(video).name} ...", file=stream, flush=True)
    job = track_video.TrackJob(context, video, {"frame_start": frame_start, "mode": "NEW",
                                                "show_background": show_background, "lens_mm": lens_mm})
    job.run_sync()
    report = job.apply()
    target = out / f"{Path(video).stem}_track.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(target), check_existing=False)
    missing = len(report.get("frames_without_face", []))
    print(f"ok: take {report['take']!r} frames {report['frames'][0]}–{report['frames'][1]}, camera "
          f"{report['camera']!r}{f', {missing} frames without a face' if missing else ''} "
          f"({time.perf_counter() - t0:.1f} s) -> {target}", file=stream, flush=True)
    for w in report.get("warnings", []):
        print(f"warning: {w}", file=stream, flush=True)
    return str(target)


def run_personalize(video: str | list[str], persona_out: str, head_file: str = "", base_blend: str = "", epochs: int = 100,
                    n_frames: int = 300, general: str = "", lens_mm: float = 0.0, stream=None) -> str:
    """Learn a persona from ``video`` (one or a list of clips of the person, tracked in the worker) and write it
    to ``persona_out``; returns its path."""
    from . import personalize

    stream = stream or sys.stdout
    t0 = time.perf_counter()
    _open_base(base_blend)
    context = bpy.context
    _ensure_rig(context, head_file)
    videos = [video] if isinstance(video, str) else list(video)
    print(f"personalizing from {', '.join(Path(v).name for v in videos)} ({epochs} epochs, {n_frames or 'all'} frames) ...",
          file=stream, flush=True)
    job = personalize.PersonalizeJob(context, videos, {"persona_out": os.path.abspath(persona_out), "epochs": epochs,
                                                      "n_frames": n_frames, "general": general,
                                                      "lens_mm": lens_mm})
    job.run_sync()
    report = job.apply()
    loss = report.get("held_out_loss")
    print(f"ok: persona {report['persona']} ({report.get('epochs')} epochs, held-out loss "
          f"{'n/a' if loss is None else f'{loss:.4f}'}, {time.perf_counter() - t0:.1f} s)", file=stream, flush=True)
    return report["persona"]
