"""Writing the refined take as an H.264 mp4 with the take's audio, through ffmpeg.

Frames are piped to ffmpeg as raw RGB (never all in memory). The file is written under a temporary name
beside the target and renamed into place only when ffmpeg succeeded: a cancelled or failed run leaves
nothing under the output name (and an earlier file of that name untouched).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable

import numpy as np

from ..audio.decode import find_ffmpeg


class VideoOutError(RuntimeError):
    """The mp4 could not be written (the message is shown to the user)."""


class WriteCancelled(Exception):
    pass


def write_mp4(frames: Iterable[np.ndarray], size: tuple[int, int], fps: float, out_path: str,
              audio: str | None = None, audio_offset_s: float = 0.0, n_frames: int | None = None,
              cancelled: Callable[[], bool] | None = None, crf: int = 18) -> str:
    """Encode ``frames`` (RGB float 0..1 or uint8, (h, w, 3) with ``size`` = (w, h)) to ``out_path``."""
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        raise VideoOutError("ffmpeg was not found: run Set up Worker (it installs imageio-ffmpeg) or set CADENCE_FFMPEG")
    w, h = int(size[0]), int(size[1])
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(out_path)}.partial.mp4")
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", f"{fps:.6f}", "-i", "-"]
    if audio:
        cmd += ["-ss", f"{max(0.0, audio_offset_s):.6f}"]
        if n_frames:
            cmd += ["-t", f"{n_frames / fps:.6f}"]
        cmd += ["-i", audio, "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "160k"]
        if audio_offset_s < 0:  # the take starts before its sound: delay the audio
            cmd[cmd.index("-c:a"):cmd.index("-c:a")] = ["-af", f"adelay={int(-audio_offset_s * 1000)}:all=1"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-movflags", "+faststart", tmp]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    ok = False
    try:
        for frame in frames:
            if cancelled is not None and cancelled():
                raise WriteCancelled()
            f = np.asarray(frame)
            if f.shape[:2] != (h, w):
                raise VideoOutError(f"a frame of size {f.shape[1]}x{f.shape[0]} in a {w}x{h} video")
            if f.dtype != np.uint8:
                f = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            try:
                proc.stdin.write(np.ascontiguousarray(f[..., :3]).tobytes())
            except BrokenPipeError:
                break
        proc.stdin.close()
        err = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise VideoOutError(f"ffmpeg could not write {os.path.basename(out_path)}: {err.strip()[-400:]}")
        os.replace(tmp, out_path)
        ok = True
    finally:
        if not ok:
            proc.kill()
            proc.wait()
            if os.path.exists(tmp):
                os.remove(tmp)
    return out_path
