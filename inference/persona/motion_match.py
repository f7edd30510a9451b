"""Audio-driven motion matching: a person's head motion for new audio, replayed from their own footage.

Why this is the default persona mode: a few hundred frames of one person are far too few for a
network to learn audio -> pose without regressing to the mean (measured: it keeps 15-70 % of the
person's spread). Replaying their own tracked motion keeps their amplitude and dynamics by
construction; what is learnt is *which* stretch to replay when, from the voice.

The voice of every frame is described by the prosody that head motion follows (``prosody.voice_curves``:
loudness, speech, pitch, accents) with its context (0.25 s before and after), z-scored with the
footage's own statistics. A dynamic programme (``pose_style.best_path``) picks, per output frame, a
footage frame whose voice matches the new audio's, preferring to keep playing a stretch (jumps cost
and are only allowed between poses that are close). ``seed`` adds a smooth random preference over
the footage, per stretch of the output, so every seed gives a different, equally plausible take.
Jumps are blended away (the offset at the jump decays over ``blend_s``), the footage's tracker jitter
is removed before replay, and ``intensity`` scales the motion about the person's mean pose.
"""

from __future__ import annotations

import numpy as np

from ..audio import prosody
from . import pose_style

PITCH_STEP = 4  # pitch every 40 ms: it is low-passed for head motion anyway, and YIN is most of the cost
CONTEXT_S = (-0.25, 0.0, 0.25)  # the voice before, at and after a frame: heads lead and follow stress
CURVES = ("loudness", "speech", "pitch", "accent")
JITTER_SIGMA_S = 0.03  # tracker jitter lives above ~5 Hz; a talker's head motion below ~3 Hz
BLEND_S = 0.2
SEED_BLOCK_S = 1.5  # the seed's preference changes this often along the output
SEED_STRENGTH = 0.6  # its size against a typical match cost


class MotionMatchError(ValueError):
    """Footage or audio that motion matching cannot use (message meant for the user)."""


def voice_features(audio_16k: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames, len(CURVES) * len(CONTEXT_S)) voice descriptors at the video frames' times."""
    p = prosody.of_audio(audio_16k, pitch_step=PITCH_STEP)
    n100 = max(p.n, int(np.ceil(n_frames / fps * prosody.FEAT_RATE)) + 2)
    curves = prosody.voice_curves(p, n100)
    grid = np.arange(n100) / prosody.FEAT_RATE
    times = np.arange(int(n_frames)) / float(fps)
    cols = [np.interp(times + dt, grid, curves[c]) for dt in CONTEXT_S for c in CURVES]
    return np.stack(cols, axis=1) if cols else np.zeros((int(n_frames), 0))


def _match_costs(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Mean squared difference (T, N) of z-scored voice descriptors (z-scored with the bank's statistics)."""
    mu, sd = bank.mean(0), bank.std(0)
    sd = np.where(sd > 1e-6, sd, 1.0)
    q, b = (query - mu) / sd, (bank - mu) / sd
    d = q.shape[1]
    return np.maximum((q * q).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * q @ b.T, 0.0) / max(d, 1)


def _seed_field(t_total: int, n: int, fps: float, seed: int, scale: float) -> np.ndarray:
    """(T, N) smooth random preference over footage frames, redrawn every SEED_BLOCK_S of output."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
    block = max(1, int(round(SEED_BLOCK_S * fps)))
    n_blocks = t_total // block + 2
    raw = rng.standard_normal((n_blocks, n))
    raw = pose_style.gaussian_smooth(raw.T, 0.5 * fps).T  # nearby footage frames share a preference
    raw /= max(float(raw.std()), 1e-9)
    # Cross-fade between blocks so the preference does not switch abruptly.
    pos = np.arange(t_total) / block
    k = np.floor(pos).astype(int)
    w = (pos - k)[:, None]
    return scale * ((1 - w) * raw[k] + w * raw[k + 1])


def blend_jumps(values: np.ndarray, path: np.ndarray, fps: float, blend_s: float = BLEND_S) -> np.ndarray:
    """``values[path]`` with every jump of the path blended: at a jump the output carries on from
    where it was (position + velocity) and the offset to the new stretch decays over ``blend_s``."""
    v = np.asarray(values, float)
    out = v[path].copy()
    if len(path) < 2:
        return out
    decay = float(np.exp(-1.0 / max(blend_s * fps / 3.0, 1e-6)))  # ~5 % of the offset left after blend_s
    offset = np.zeros(v.shape[1])
    for t in range(1, len(path)):
        prev, cur = int(path[t - 1]), int(path[t])
        offset *= decay
        if cur != prev + 1 and cur != prev:
            vel = v[prev] - v[prev - 1] if prev > 0 else 0.0
            offset = out[t - 1] + vel - v[cur]
        out[t] = v[cur] + offset
    return out


JUMP_COST = 4.0  # in match-cost units (a typical frame's voice mismatch is ~1)
JUMP_PERCENTILE = 30.0  # jumps allowed up to this percentile of the footage's pose-to-pose distances


def match_path(bank_voice: np.ndarray, bank_pose: np.ndarray, query_voice: np.ndarray, fps: float,
               seed: int = 0, clip_starts: list[int] | None = None) -> np.ndarray:
    """Indices into the footage (N frames) for each of the T output frames."""
    bv, bp, qv = (np.asarray(a, float) for a in (bank_voice, bank_pose, query_voice))
    if bv.ndim != 2 or bp.ndim != 2 or len(bv) != len(bp) or len(bp) < 2:
        raise MotionMatchError("the footage needs a voice descriptor and a pose for every frame (at least 2)")
    if qv.ndim != 2 or qv.shape[1] != bv.shape[1]:
        raise MotionMatchError("the new audio's voice descriptors do not match the footage's")
    if not (np.all(np.isfinite(bv)) and np.all(np.isfinite(bp)) and np.all(np.isfinite(qv))):
        raise MotionMatchError("the footage or the audio's descriptors contain NaN or infinite values")
    match = _match_costs(qv, bv)
    match += _seed_field(len(qv), len(bv), fps, seed, SEED_STRENGTH * float(np.median(match)))
    match -= match.min()
    b = bp / pose_style.axis_scale(bp)
    # Jumps are blended (``blend_jumps``), so they may go far; their cost grows with their size.
    sub = b[:: max(1, len(b) // 400)]
    d = np.sqrt(np.maximum((sub * sub).sum(1)[:, None] + (sub * sub).sum(1)[None, :] - 2 * sub @ sub.T, 0.0))
    thr = float(np.percentile(d[np.triu_indices(len(sub), 1)], JUMP_PERCENTILE)) if len(sub) > 1 else 1.0
    return pose_style.best_path(match, b, jump_threshold=thr, jump_cost=JUMP_COST, hold_cost=JUMP_COST,
                                min_jump_gap=int(round(0.5 * fps)), clip_starts=clip_starts, free_clip_ends=True)


def generate(bank_voice: np.ndarray, bank_pose: np.ndarray, query_voice: np.ndarray, fps: float, seed: int = 0,
             intensity: float = 1.0, clip_starts: list[int] | None = None,
             bank_extra: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Head pose (T, D) for the query voice, replayed from the footage; ``bank_extra`` (N, E) (e.g. the
    upper-face expression) follows the same path. Returns pose, extra (or None), path."""
    bp = center_clips(np.asarray(bank_pose, float), clip_starts)
    path = match_path(bank_voice, bp, query_voice, fps, seed, clip_starts)
    clean = _smooth_clips(bp, JITTER_SIGMA_S * fps, clip_starts)
    pose = blend_jumps(clean, path, fps)
    center = bp.mean(0)
    pose = center + float(intensity) * (pose - center)
    extra = None
    if bank_extra is not None:
        be = np.asarray(bank_extra, float)
        extra = blend_jumps(_smooth_clips(be, JITTER_SIGMA_S * fps, clip_starts), path, fps)
        mid = be.mean(0)
        extra = mid + float(intensity) * (extra - mid)
    return {"pose": pose, "extra": extra, "path": path}


def _clip_edges(n: int, clip_starts: list[int] | None) -> list[int]:
    return sorted({0, n, *[int(c) for c in (clip_starts or []) if 0 < int(c) < n]})


def center_clips(pose: np.ndarray, clip_starts: list[int] | None) -> np.ndarray:
    """Each clip's poses moved to the footage's overall mean: clips filmed apart differ in where the
    camera stood (measured on the fixtures: mean yaw 7 degrees apart), which is not motion to replay."""
    if not clip_starts:
        return pose
    edges = _clip_edges(len(pose), clip_starts)
    mean = pose.mean(0)
    return np.concatenate([pose[a:b] - pose[a:b].mean(0) + mean for a, b in zip(edges[:-1], edges[1:])])


def _smooth_clips(x: np.ndarray, sigma: float, clip_starts: list[int] | None) -> np.ndarray:
    """Zero-phase smoothing of each clip of the footage on its own (never across a clip boundary)."""
    edges = _clip_edges(len(x), clip_starts)
    return np.concatenate([pose_style.gaussian_smooth(x[a:b], sigma) for a, b in zip(edges[:-1], edges[1:])])
