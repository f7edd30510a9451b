"""Synthesized speech with known bilabial timings (espeak-ng), for the lip-sync tests.

Each syllable is synthesized on its own, its silences trimmed, and the pieces are joined end to
end: every piece boundary is a known time, so a syllable that starts with p/b/m has its lip
closure right at the join: a 60 ms closure gap before /p b/ (espeak's syllable-initial stops have none
once trimmed), the nasal murmur of /m/.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np

SR = 16_000
STOP_CLOSURE_S = 0.06  # intervocalic /p b/ closures last ~50-100 ms in natural speech
BILABIAL_SYLLABLES = ("bah", "mee", "pie", "bow", "moo", "pay", "boy", "my", "pa", "bee", "mo", "pooh")
OTHER_SYLLABLES = ("tea", "lee", "sigh", "kay", "no", "day", "ray", "go", "see", "la", "who", "tie")


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def syllable(text: str, speed: int = 175, pitch: int = 50) -> np.ndarray:
    """One syllable, 16 kHz float32, leading/trailing silence trimmed."""
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-p", str(pitch), "-z", "--stdout", text],
                         capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    x = resample_poly(x, SR, sr).astype(np.float32) if sr != SR else x
    env = np.abs(x) > 0.02 * np.abs(x).max()
    idx = np.flatnonzero(env)
    return x[idx[0] : idx[-1] + 1]


def utterance(sequence: list[str], lead_silence: float = 0.5, tail_silence: float = 0.5,
              speed: int = 175) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Join syllables end to end between silences. Returns (audio, [(syllable, start, consonant_end)])."""
    cache: dict[str, np.ndarray] = {}
    pieces = [np.zeros(int(lead_silence * SR), np.float32)]
    starts = []
    t = lead_silence
    for i, s in enumerate(sequence):
        if s not in cache:
            cache[s] = syllable(s, speed=speed, pitch=45 + 7 * (i % 3))
        piece = cache[s]
        t0 = t
        if s[0] in "pb":  # a stop's closure is a near-silent gap before its burst
            pieces.append(np.zeros(int(STOP_CLOSURE_S * SR), np.float32))
            t += STOP_CLOSURE_S
        # the consonant lasts until the vowel's onset: the envelope's first rise past 30 % of its peak
        env = np.convolve(np.abs(piece), np.ones(160) / 160, mode="same")
        onset = int(np.argmax(env > 0.3 * env.max())) / SR
        starts.append((s, t0, t + onset))
        pieces.append(piece)
        t += piece.size / SR
    pieces.append(np.zeros(int(tail_silence * SR), np.float32))
    audio = np.concatenate(pieces)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32), starts


def bilabial_sequence(n: int, seed: int = 0) -> list[str]:
    """Alternate other and bilabial syllables so each bilabial sits between vowels."""
    rng = np.random.default_rng(seed)
    seq = []
    for _ in range(n):
        seq.append(str(rng.choice(OTHER_SYLLABLES)))
        seq.append(str(rng.choice(BILABIAL_SYLLABLES)))
    seq.append(str(rng.choice(OTHER_SYLLABLES)))
    return seq
