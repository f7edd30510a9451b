"""Audio decoding for the lip engine: any file in, mono 16 kHz float32 out, in bounded-memory chunks.

soundfile (libsndfile) reads wav/flac/ogg/mp3/aiff directly; anything else (m4a, aac, webm, mp4, ...)
goes through ffmpeg, which also mixes down and resamples. The ffmpeg lookup is
``$CADENCE_FFMPEG`` (a path; the empty string means "no ffmpeg"), then imageio-ffmpeg's binary,
then ``ffmpeg`` on PATH. Resampling uses scipy's polyphase filter (no numba, no compile on first use).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..files import check_input_file

TARGET_SR = 16_000
CHUNK_SECONDS = 30.0
# libsndfile's own formats; everything else needs ffmpeg.
SOUNDFILE_EXTS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
SILENCE_PEAK = 1e-4  # below this peak amplitude (-80 dBFS) a file holds no usable sound


class AudioError(ValueError):
    """An audio file that cannot be used, with a message meant for the user."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    samplerate: int
    channels: int
    duration: float  # seconds; may be an estimate for ffmpeg-decoded files
    backend: str  # "soundfile" or "ffmpeg"


def find_ffmpeg() -> str | None:
    """Path of an ffmpeg executable, or None. ``CADENCE_FFMPEG=""`` disables ffmpeg on purpose."""
    env = os.environ.get("CADENCE_FFMPEG")
    if env is not None:
        if not env.strip():
            return None
        found = shutil.which(env) or (env if os.path.isfile(env) and os.access(env, os.X_OK) else None)
        if found is None:
            raise AudioError(f"CADENCE_FFMPEG points at {env!r}, which is not an executable ffmpeg")
        return found
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.path.isfile(exe):
            return exe
    except Exception:  # noqa: BLE001 - a missing or broken imageio-ffmpeg just means "look on PATH"
        pass
    return shutil.which("ffmpeg")


def _looks_like_text(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95


def _no_ffmpeg_message(path: str) -> str:
    ext = os.path.splitext(path)[1] or "this kind of"
    return (
        f"{os.path.basename(path)}: {ext} audio needs ffmpeg, which was not found. Install it "
        "(`pip install imageio-ffmpeg` in the worker environment, or your system's ffmpeg package), "
        "or convert the file to WAV, FLAC, OGG or MP3"
    )


def probe(path: str | os.PathLike) -> AudioInfo:
    """What the file holds, without decoding it; raises AudioError for anything unusable."""
    path = check_input_file(path, "audio", AudioError)
    import soundfile as sf

    try:
        info = sf.info(path)
        if info.frames <= 0 or info.samplerate <= 0:
            raise AudioError(f"{os.path.basename(path)} contains no audio samples (0 length)")
        return AudioInfo(path, int(info.samplerate), int(info.channels), info.frames / info.samplerate, "soundfile")
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile refusing it: try ffmpeg, or explain
        sf_error = exc
    if _looks_like_text(path):
        raise AudioError(f"{os.path.basename(path)} is not an audio file (it contains text)")
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        if os.path.splitext(path)[1].lower() in SOUNDFILE_EXTS:
            raise AudioError(f"{os.path.basename(path)} is corrupt or not a readable audio file ({sf_error})")
        raise AudioError(_no_ffmpeg_message(path))
    return _ffprobe(ffmpeg, path)


def _ffprobe(ffmpeg: str, path: str) -> AudioInfo:
    # ffmpeg prints the stream layout on stderr when asked to decode nothing.
    proc = subprocess.run([ffmpeg, "-hide_banner", "-i", path], capture_output=True, text=True, errors="replace")
    err = proc.stderr
    audio_lines = [ln for ln in err.splitlines() if "Stream #" in ln and "Audio:" in ln]
    if not audio_lines:
        reason = "it has no audio stream" if "Stream #" in err else "ffmpeg could not read it"
        raise AudioError(f"{os.path.basename(path)} is not usable audio: {reason}")
    line = audio_lines[0]
    sr = next((int(tok) for tok in _tokens_before(line, "Hz")), TARGET_SR)
    channels = 2 if "stereo" in line else 1
    duration = 0.0
    for ln in err.splitlines():
        if "Duration:" in ln and "N/A" not in ln.split("Duration:")[1][:12]:
            h, m, s = ln.split("Duration:")[1].split(",")[0].strip().split(":")
            duration = int(h) * 3600 + int(m) * 60 + float(s)
    return AudioInfo(path, sr, channels, duration, "ffmpeg")


def _tokens_before(line: str, unit: str) -> Iterator[int]:
    parts = line.replace(",", " ").split()
    for a, b in zip(parts, parts[1:]):
        if b == unit and a.isdigit():
            yield int(a)


class HighPass:
    """Streaming 2nd-order Butterworth high-pass (default 40 Hz), continuous across chunks.

    Why: a DC offset or rumble below the voice would otherwise count as sound (a DC-only file as a loud
    steady voice) and shifts the loudness the mouth follows. The filter starts settled on the first
    sample, so an offset does not ring at the start."""

    def __init__(self, sr: int = TARGET_SR, cutoff_hz: float = 40.0) -> None:
        from scipy.signal import butter

        self.sos = butter(2, cutoff_hz, "highpass", fs=sr, output="sos")
        self.zi: np.ndarray | None = None

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        from scipy.signal import sosfilt, sosfilt_zi

        if chunk.size == 0:
            return chunk
        if self.zi is None:
            self.zi = sosfilt_zi(self.sos) * float(chunk[0])
        out, self.zi = sosfilt(self.sos, chunk.astype(np.float64), zi=self.zi)
        return out.astype(np.float32)


def iter_chunks(path: str | os.PathLike, sr: int = TARGET_SR, chunk_seconds: float = CHUNK_SECONDS) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 chunks at ``sr`` Hz; memory stays flat for any file length.

    Raises AudioError (before the first chunk where possible) for unusable files.
    """
    info = probe(path)
    if info.backend == "ffmpeg":
        yield from _ffmpeg_chunks(info.path, sr, chunk_seconds)
    else:
        yield from _soundfile_chunks(info, sr, chunk_seconds)


def _soundfile_chunks(info: AudioInfo, sr: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    import soundfile as sf
    from scipy.signal import resample_poly

    g = math.gcd(sr, info.samplerate)
    up, down = sr // g, info.samplerate // g
    # Chunks and filter context are whole multiples of `down` input samples, so that every chunk's
    # output starts exactly on the output grid and the chunks join seamlessly.
    block = max(1, int(chunk_seconds * info.samplerate) // down) * down
    ctx = 0 if up == down else max(1, 2048 // down) * down
    prev_tail = np.zeros(0, dtype=np.float32)
    try:
        with sf.SoundFile(info.path) as f:
            pending = _mono(f.read(block + ctx, dtype="float32", always_2d=True))
            while pending.size:
                nxt = _mono(f.read(block, dtype="float32", always_2d=True))
                core_len = min(block, pending.size)
                if up == down:
                    out = pending[:core_len]
                else:
                    # left context: the tail of the previous chunk; right: the head of what follows
                    seg = np.concatenate([prev_tail, pending])
                    res = resample_poly(seg, up, down).astype(np.float32)
                    start = prev_tail.size * up // down
                    out = res[start : start + math.ceil(core_len * up / down)]
                    prev_tail = pending[max(0, core_len - ctx) : core_len]
                if out.size:
                    yield out
                pending = np.concatenate([pending[core_len:], nxt])
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile errors mid-file: truncated or corrupt
        raise AudioError(f"{os.path.basename(info.path)} is corrupt or truncated ({exc})") from exc


def _mono(block: np.ndarray) -> np.ndarray:
    if block.ndim == 2 and block.shape[1] > 1:
        return block.mean(axis=1, dtype=np.float32)
    return block.reshape(-1).astype(np.float32, copy=False)


def _ffmpeg_chunks(path: str, sr: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        raise AudioError(_no_ffmpeg_message(path))
    cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", path, "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    nbytes = int(chunk_seconds * sr) * 4
    got_any = False
    try:
        while True:
            data = proc.stdout.read(nbytes)
            if not data:
                break
            usable = len(data) - len(data) % 4
            if usable:
                got_any = True
                yield np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)
        err = proc.stderr.read().decode(errors="replace").strip()
        rc = proc.wait()
        if rc != 0 and not got_any:
            raise AudioError(f"{os.path.basename(path)} could not be decoded: {err.splitlines()[-1] if err else rc}")
        if not got_any:
            raise AudioError(f"{os.path.basename(path)} contains no audio samples (0 length)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def load_audio(path: str | os.PathLike, sr: int = TARGET_SR, allow_silent: bool = False) -> np.ndarray:
    """The whole file as one mono float32 array at ``sr`` (use iter_chunks for long files)."""
    chunks = list(iter_chunks(path, sr))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    check_content(audio, os.fspath(path), allow_silent=allow_silent)
    return audio


def check_content(audio: np.ndarray, path: str, allow_silent: bool = False) -> None:
    """Raise AudioError for decoded audio that is empty, non-finite or (unless allowed) silent."""
    name = os.path.basename(path)
    if audio.size == 0:
        raise AudioError(f"{name} contains no audio samples (0 length)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{name} contains invalid (NaN or infinite) samples")
    if not allow_silent and float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError(f"{name} is silent: there is no sound to animate")
