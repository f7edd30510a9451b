"""Audio decoding: formats, channels, sample rates, chunking and clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from inference.audio import decode as audio
from inference.audio.decode import AudioError


def _tone(sr: float, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([x, 0.5 * x], axis=1)[:, :channels] if channels > 1 else x


def _peak_hz(x: np.ndarray, sr: int = 16_000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * sr / x.size)


@pytest.mark.parametrize("ext,fmt,sr,channels", [
    ("wav", "WAV", 44_100, 2), ("flac", "FLAC", 22_050, 1), ("ogg", "OGG", 48_000, 2),
    ("mp3", "MP3", 32_000, 1), ("wav", "WAV", 11_025, 1), ("wav", "WAV", 7_350, 2), ("wav", "WAV", 16_000, 1),
])
def test_formats_rates_and_channels(tmp_path, ext, fmt, sr, channels):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(sr, 2.0, channels=channels), sr, format=fmt)
    x = audio.load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - 32_000) <= 1200  # mp3/ogg encoders pad a little
    assert abs(_peak_hz(x[4000:28000]) - 440.0) < 3.0  # pitch survives the resampling
    assert 0.1 < np.abs(x).max() < 0.5  # stereo is mixed (mean), not summed


def test_chunks_join_seamlessly(tmp_path):
    path = tmp_path / "chirp.wav"
    sr = 22_050
    t = np.arange(int(sr * 5.0)) / sr
    sf.write(path, 0.4 * np.sin(2 * np.pi * (200 * t + 300 * t * t)), sr)
    whole = np.concatenate(list(audio.iter_chunks(path, chunk_seconds=60)))
    small = np.concatenate(list(audio.iter_chunks(path, chunk_seconds=0.37)))
    assert whole.size == small.size == int(np.ceil(t.size * 16_000 / sr))
    assert np.max(np.abs(whole - small)) < 1e-4


def _ffmpeg_or_skip() -> str:
    exe = audio.find_ffmpeg()
    if exe is None:
        pytest.skip("no ffmpeg available")
    return exe


def test_other_containers_need_ffmpeg(tmp_path, monkeypatch):
    exe = _ffmpeg_or_skip()
    wav = tmp_path / "src.wav"
    sf.write(wav, _tone(44_100, 1.5, channels=2), 44_100)
    m4a = tmp_path / "speech.m4a"
    subprocess.run([exe, "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    x = audio.load_audio(m4a)
    assert abs(x.size - 24_000) < 2000 and abs(_peak_hz(x[2000:20000]) - 440.0) < 3.0
    monkeypatch.setenv("CADENCE_FFMPEG", "")
    with pytest.raises(AudioError, match="needs ffmpeg.*not found.*Install"):
        audio.load_audio(m4a)
    monkeypatch.setenv("CADENCE_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(AudioError, match="CADENCE_FFMPEG"):
        audio.load_audio(m4a)


def test_video_without_audio_stream(tmp_path):
    exe = _ffmpeg_or_skip()
    mp4 = tmp_path / "silent_video.mp4"
    subprocess.run([exe, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=0.5",
                    "-pix_fmt", "yuv420p", str(mp4)], check=True)
    with pytest.raises(AudioError, match="no audio stream"):
        audio.load_audio(mp4)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        audio.load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        audio.load_audio(empty)
    text = tmp_path / "notes.wav"
    text.write_text("these are my notes, not a recording\n" * 20)
    with pytest.raises(AudioError, match="not an audio file"):
        audio.load_audio(text)
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0), 16_000)
    with pytest.raises(AudioError, match="0 length"):
        audio.load_audio(zero)
    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(16_000), 16_000)
    with pytest.raises(AudioError, match="silent"):
        audio.load_audio(silent)
    assert audio.load_audio(silent, allow_silent=True).size == 16_000
    with pytest.raises(AudioError, match="folder"):
        audio.load_audio(tmp_path)


def test_truncated_mp3(tmp_path):
    full = tmp_path / "full.mp3"
    sf.write(full, _tone(44_100, 3.0), 44_100, format="MP3")
    data = full.read_bytes()
    cut = tmp_path / "header_only.mp3"
    cut.write_bytes(data[:64])
    with pytest.raises(AudioError):
        audio.load_audio(cut)
    half = tmp_path / "half.mp3"
    half.write_bytes(data[: len(data) // 2])
    try:  # what is there decodes; a decoder that refuses must say so clearly
        x = audio.load_audio(half)
        assert 0.5 * 16_000 < x.size < 2.5 * 16_000
    except AudioError as exc:
        assert "corrupt" in str(exc) or "truncated" in str(exc)


def test_one_hour_streams_in_bounded_memory(tmp_path):
    """An hour of 8 kHz audio decodes chunk by chunk with a flat memory peak (tracemalloc)."""
    path = tmp_path / "hour.wav"
    sr = 8_000
    block = _tone(sr, 60.0, freq=220.0).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(block)
    assert audio.probe(path).duration == pytest.approx(3600.0)
    tracemalloc.start()
    total, peak_chunk = 0, 0
    for chunk in audio.iter_chunks(path):
        total += chunk.size
        peak_chunk = max(peak_chunk, chunk.size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == 3600 * 16_000
    assert peak_chunk <= 30 * 16_000
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB for 1 h of audio"  # the whole hour would be 230 MiB
    assert os.path.getsize(path) > 50 * 2**20
