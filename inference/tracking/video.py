"""Video input for tracking: probe, iterate frames resampled to the analysis rate, extract the audio track.

Frames are decoded with OpenCV one at a time (a video is never held in memory). Resampling to the
analysis rate picks, for each output time k / fps, the source frame whose timestamp (index / source fps)
is nearest. The audio track goes through ffmpeg (``inference.audio.decode.find_ffmpeg``) to a 16 kHz mono wav.

Rules (stated to the user in the errors): a video must hold at least ``MIN_SECONDS`` of footage and at
least ``MIN_FRAMES`` frames; frames larger than ``MAX_SIDE`` pixels are downscaled for landmark detection.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..files import check_input_file

MIN_SECONDS = 1.0
MIN_FRAMES = 25
MAX_SIDE = 1280  # landmark detection gains nothing above this; bigger frames are downscaled
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


class VideoError(ValueError):
    """A video that cannot be used for tracking, with a message meant for the user."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float  # source frame rate
    n_frames: int  # decodable source frames (counted when the container's count is unreliable)
    duration: float  # seconds = n_frames / fps

    @property
    def scale(self) -> float:
        """Factor applied to frames for landmark detection (1.0 unless the video is huge)."""
        return min(1.0, MAX_SIDE / max(self.width, self.height))

    def n_output_frames(self, fps: float) -> int:
        """How many frames at ``fps`` the video spans (times k / fps < duration)."""
        return max(0, int(np.ceil(self.duration * fps - 1e-6)))


def _name(path: str) -> str:
    return os.path.basename(path) or path


def _check_file(path: str | os.PathLike) -> str:
    path = check_input_file(path, "video", VideoError)
    with open(path, "rb") as fh:
        head = fh.read(1024)
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    if head and printable / len(head) > 0.95:
        raise VideoError(f"{_name(path)} is not a video file (it contains text)")
    return path


def _open(path: str):
    import cv2  # noqa: PLC0415 - worker-only heavy import

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError(
            f"{_name(path)} could not be read as a video: the file is damaged or truncated, or not a "
            f"video format OpenCV can decode ({', '.join(VIDEO_EXTS)} with common codecs are supported)"
        )
    return cap


def probe(path: str | os.PathLike, check_length: bool = True) -> VideoInfo:
    """Size, rate and frame count of a video; raises VideoError for anything unusable.

    The frame count comes from the container and is verified by decoding when it looks wrong
    (0, negative, or a first frame that does not decode).
    """
    import cv2  # noqa: PLC0415

    path = _check_file(path)
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(
                f"{_name(path)} contains no decodable frames (the file may be truncated or hold only audio)"
            )
        h, w = frame.shape[:2]
        if not (np.isfinite(fps) and 1.0 <= fps <= 1000.0):
            raise VideoError(f"{_name(path)} reports an invalid frame rate ({fps}); re-encode it (e.g. with ffmpeg)")
        if count <= 0 or count > 10_000_000:
            count = 1
            while cap.grab():
                count += 1
    finally:
        cap.release()
    info = VideoInfo(path, int(w), int(h), fps, int(count), count / fps)
    if check_length and (info.duration < MIN_SECONDS or info.n_frames < MIN_FRAMES):
        raise VideoError(
            f"{_name(path)} is too short to track: {info.n_frames} frames ({info.duration:.2f} s); "
            f"tracking needs at least {MIN_SECONDS:g} s and {MIN_FRAMES} frames of video"
        )
    return info


def iter_frames(
    info: VideoInfo, fps: float, max_frames: int | None = None, downscale: bool = True
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (output index, time in s, RGB uint8 frame) at ``fps`` by nearest-frame sampling.

    Frames are downscaled by ``info.scale`` when ``downscale`` (huge videos). Decoding stops early
    when the container promised more frames than it holds (a truncated tail): the frames read are kept.
    """
    import cv2  # noqa: PLC0415

    if not (np.isfinite(fps) and fps > 0):
        raise VideoError(f"the analysis frame rate must be a positive number, got {fps!r}")
    n_out = info.n_output_frames(fps)
    if max_frames is not None:
        n_out = min(n_out, int(max_frames))
    scale = info.scale if downscale else 1.0
    cap = _open(info.path)
    try:
        src_index = -1
        frame = None
        for k in range(n_out):
            t = k / fps
            want = min(int(round(t * info.fps)), info.n_frames - 1)  # nearest source frame
            while src_index < want:
                ok, nxt = cap.read()
                if not ok or nxt is None:
                    if frame is None:
                        raise VideoError(f"{_name(info.path)} could not be decoded (damaged file?)")
                    return  # truncated tail: stop with what was read
                frame, src_index = nxt, src_index + 1
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if scale < 1.0:
                rgb = cv2.resize(rgb, (round(info.width * scale), round(info.height * scale)),
                                 interpolation=cv2.INTER_AREA)
            yield k, t, rgb
    finally:
        cap.release()


def has_audio(path: str | os.PathLike) -> bool | None:
    """Whether the file holds an audio stream (None when ffmpeg is not available to tell)."""
    from ..audio.decode import find_ffmpeg  # noqa: PLC0415

    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return None
    proc = subprocess.run([ffmpeg, "-hide_banner", "-i", os.fspath(path)], capture_output=True, text=True,
                          errors="replace", timeout=60)
    return any("Stream #" in ln and "Audio:" in ln for ln in proc.stderr.splitlines())


def extract_audio(path: str | os.PathLike, out_wav: str | os.PathLike) -> tuple[str | None, str | None]:
    """Write the video's audio track as a 16 kHz mono wav; returns (wav path or None, warning or None)."""
    from ..audio.decode import AudioError, find_ffmpeg  # noqa: PLC0415

    path = os.fspath(path)
    try:
        ffmpeg = find_ffmpeg()
    except AudioError as exc:
        return None, str(exc)
    if ffmpeg is None:
        return None, ("ffmpeg was not found, so the video's sound was not extracted "
                      "(pip install imageio-ffmpeg in the worker environment)")
    present = has_audio(path)
    if not present:
        return None, f"{_name(path)} has no audio track: tracked motion only (no sound to train or lip-sync with)"
    out_wav = os.fspath(out_wav)
    proc = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", path, "-vn", "-ac", "1", "-ar", "16000",
         "-acodec", "pcm_s16le", "-f", "wav", out_wav],
        capture_output=True, text=True, errors="replace", timeout=600,
    )
    if proc.returncode != 0 or not os.path.isfile(out_wav) or os.path.getsize(out_wav) <= 44:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return None, f"the audio track of {_name(path)} could not be extracted ({tail[0]})"
    return out_wav, None


def retime(path: str | os.PathLike, fps: float, out_path: str | os.PathLike) -> tuple[str | None, str | None]:
    """A copy of the video's picture at ``fps`` (output frame n shows the source frame nearest n / fps, as
    ``iter_frames`` picks them), for a scene whose rate is not the video's: Blender plays a movie clip frame for
    frame whatever the scene's rate, so the original would drift from keys written at the scene's rate.
    Returns (the copy's path or None, a warning or None)."""
    from ..audio.decode import find_ffmpeg  # noqa: PLC0415

    path, out_path = os.fspath(path), os.fspath(out_path)
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return None, (f"the video could not be copied at {fps:g} fps for the camera background: ffmpeg was not "
                      "found (pip install imageio-ffmpeg in the worker environment)")
    proc = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", path, "-an", "-vf", f"fps={fps:.6f}",
         "-c:v", "mpeg4", "-q:v", "3", out_path],
        capture_output=True, text=True, errors="replace", timeout=1800, stdin=subprocess.DEVNULL, check=False,
    )
    if proc.returncode != 0 or not os.path.isfile(out_path) or os.path.getsize(out_path) == 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return None, f"the video could not be copied at {fps:g} fps for the camera background ({tail[0]})"
    return out_path, None
