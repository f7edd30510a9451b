"""Persona files: a person's fine-tuned stage-1 network plus their pose style, and generation from it.

A persona is a ``torch.save``'d dict of plain data only (tensors, numbers, strings, lists, dicts) and
is always read with ``torch.load(..., weights_only=True)``: a file holding any other object (a pickle
with a code payload) is refused before anything in it runs. The same holds for general models.

Contents: network weights + config, audio feature config, the fps and sequence length it was trained
at, the target's pose statistics (``pose_style.style_stats``), the training poses (for retrieval
mode), identity shape, the head model's content hash and expression names, Cadence version and
creation metadata.
"""

from __future__ import annotations

import datetime
import math
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import features as audio_features
from ..protocol import Channels
from . import motion_match, pose_net, pose_style, train_pose

PERSONA_FORMAT = "cadence-persona"
MODEL_FORMAT = "cadence-pose-model"
PERSONA_VERSION = 1
# Upper-face components the persona animates (blinks and gaze have their own channels; lips and jaw
# belong to the lip engine unless the network was fine-tuned from a general model).
UPPER_FACE_PREFIXES = ("brow", "eyesquint", "eyewide", "cheek", "nose")
# A persona trained from scratch learns from a few hundred frames: the paper's size (3 x 256 LSTM)
# overfits them. Leave-one-out on the fixture clips, held-out loss against the mean predictor's:
# paper's size 2.33 / 1.68 / 0.85 vs 2.34 / 1.59 / 0.96; this size 2.16 / 1.59 / 0.89. A general
# model keeps its own size.
SCRATCH_NET = {"conv_channels": (16, 32, 64), "fc_dim": 64, "lstm_hidden": 64, "lstm_layers": 2, "dropout": 0.3}


class PersonaError(ValueError):
    """A persona (or general model) file that is missing, malformed, unsafe or does not fit."""


class PersonaHeadMismatch(PersonaError):
    """The persona was made for another head model."""


def cadence_version() -> str:
    import tomllib

    try:
        with open(Path(__file__).resolve().parents[2] / "blender_manifest.toml", "rb") as fh:
            return str(tomllib.load(fh).get("version", "unknown"))
    except (OSError, tomllib.TOMLDecodeError):
        return "unknown"


def upper_face_mask(expr_names) -> list[bool]:
    return [str(n).lower().startswith(UPPER_FACE_PREFIXES) for n in expr_names]


def _plain(obj, where: str = "meta"):
    """Convert to what weights_only loading accepts (numpy -> tensors/floats); refuse anything else."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (list, tuple)):
        return [_plain(v, where) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in obj.items()}
    raise PersonaError(f"{where}: cannot store a {type(obj).__name__} in a persona (plain data only)")


def _np(x, dtype=np.float64) -> np.ndarray:
    return (x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(dtype)


@dataclass
class Persona:
    net_config: dict
    net_state: dict
    feature_config: dict
    fps: float
    seq_len: int
    expr_names: list
    head_hash: str
    train_poses: dict  # group -> (T, ...) arrays at ``fps``: head_rotation, head_translation, expression, jaw
    pose_stats: dict
    identity_shape: np.ndarray = field(default_factory=lambda: np.zeros(0))
    upper_face: list = field(default_factory=list)
    trained_lips: bool = False  # True when fine-tuned from a general model (its lips/jaw are usable)
    history: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    cadence_version: str = field(default_factory=cadence_version)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))

    def check_head(self, head_or_hash) -> None:
        """Raise PersonaHeadMismatch unless the persona was made for this head (HeadModel or hash)."""
        h = head_or_hash if isinstance(head_or_hash, str) else head_or_hash.content_hash()
        if h != self.head_hash:
            raise PersonaHeadMismatch(
                f"this persona was made for another head model (head {self.head_hash}, this head {h}); "
                "make a persona for this head or switch back to the head it was made with"
            )

    def network(self) -> pose_net.AudioPoseNet:
        return pose_net.build(self.net_config, self.net_state)

    def to_dict(self) -> dict:
        hist = {k: v for k, v in self.history.items() if isinstance(v, (int, float, str, bool, list))}
        return _plain({
            "format": PERSONA_FORMAT, "version": PERSONA_VERSION, "cadence_version": self.cadence_version,
            "created": self.created, "net_config": self.net_config, "net_state": dict(self.net_state),
            "feature_config": self.feature_config, "fps": float(self.fps), "seq_len": int(self.seq_len),
            "expr_names": [str(n) for n in self.expr_names], "head_hash": self.head_hash,
            "identity_shape": np.asarray(self.identity_shape, np.float64), "upper_face": list(self.upper_face),
            "trained_lips": bool(self.trained_lips),
            "train_poses": {k: np.asarray(v, np.float64) for k, v in self.train_poses.items()},
            "pose_stats": self.pose_stats, "history": hist, "meta": self.meta,
        }, "persona")

    @classmethod
    def from_dict(cls, d: dict) -> Persona:
        _check_format(d, PERSONA_FORMAT, "persona")
        try:
            p = cls(
                net_config=dict(d["net_config"]), net_state=dict(d["net_state"]),
                feature_config=dict(d["feature_config"]), fps=float(d["fps"]), seq_len=int(d["seq_len"]),
                expr_names=[str(n) for n in d["expr_names"]], head_hash=str(d["head_hash"]),
                train_poses={k: _np(v) for k, v in d["train_poses"].items()}, pose_stats=dict(d["pose_stats"]),
                identity_shape=_np(d.get("identity_shape", np.zeros(0))), upper_face=list(d.get("upper_face", [])),
                trained_lips=bool(d.get("trained_lips", False)), history=dict(d.get("history", {})),
                meta=dict(d.get("meta", {})), cadence_version=str(d.get("cadence_version", "unknown")),
                created=str(d.get("created", "")),
            )
            cfg = pose_net.NetConfig.from_dict(p.net_config)
            audio_features.FeatureConfig.from_dict(p.feature_config)
            if cfg.n_expr != len(p.expr_names) or len(p.upper_face) not in (0, cfg.n_expr):
                raise PersonaError("expression names do not match the network's output size")
            for g in ("head_rotation", "head_translation"):
                if p.train_poses.get(g) is None or p.train_poses[g].ndim != 2 or p.train_poses[g].shape[1] != 3:
                    raise PersonaError(f"training poses lack a (T, 3) {g!r}")
            if not (math.isfinite(p.fps) and p.fps > 0 and p.seq_len >= 2):
                raise PersonaError("bad fps or sequence length")
            p.network()  # weights fit the config
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise PersonaError(f"the persona file is incomplete or damaged: {exc}") from exc
        if not p.upper_face:
            p.upper_face = upper_face_mask(p.expr_names)
        return p


def _check_format(d, fmt: str, what: str) -> None:
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise PersonaError(f"this file is not a Cadence {what}")
    if d.get("version") != PERSONA_VERSION:
        raise PersonaError(f"{what} format version {d.get('version')!r} is not supported "
                           f"(this Cadence reads version {PERSONA_VERSION})")


def safe_load(path: str | os.PathLike, what: str = "persona") -> dict:
    """torch.load with weights_only=True, turning every failure into a user-facing PersonaError."""
    path = Path(path)
    if not path.is_file():
        raise PersonaError(f"{what} file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed| Please use|\n|$)", str(exc), re.S)
        detail = f" ({m.group(1).strip()})" if m and m.group(1).strip() else ""
        raise PersonaError(
            f"refused to load {path.name}: it is not a plain-data Cadence {what} file{detail}. Files holding "
            f"other Python objects could run code when opened, so Cadence never loads them; only use {what} "
            "files made by Cadence."
        ) from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... for damaged or foreign files
        raise PersonaError(f"{path.name} is not a readable Cadence {what} file: {exc}".split("\n")[0]) from exc


def save_persona(persona: Persona, path: str | os.PathLike) -> None:
    d = persona.to_dict()
    tmp = Path(str(path) + ".tmp")
    torch.save(d, tmp)
    os.replace(tmp, path)  # never leave a half-written persona behind


def load_persona(path: str | os.PathLike, head=None) -> Persona:
    """Load and validate a persona; with ``head`` (HeadModel or content hash) also check it fits."""
    p = Persona.from_dict(safe_load(path, "persona"))
    if head is not None:
        p.check_head(head)
    return p


def save_general_model(path, state: dict, net_config, feature_config, fps: float, expr_names: list,
                       seq_len: int, meta: dict | None = None) -> None:
    torch.save(_plain({
        "format": MODEL_FORMAT, "version": PERSONA_VERSION, "cadence_version": cadence_version(),
        "net_config": net_config.to_dict() if hasattr(net_config, "to_dict") else net_config,
        "net_state": dict(state),
        "feature_config": feature_config.to_dict() if hasattr(feature_config, "to_dict") else feature_config,
        "fps": float(fps), "seq_len": int(seq_len), "expr_names": list(expr_names), "meta": meta or {},
    }, "model"), path)


def load_general_model(path) -> dict:
    d = safe_load(path, "general model")
    _check_format(d, MODEL_FORMAT, "general model")
    try:
        pose_net.build(d["net_config"], d["net_state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PersonaError(f"the general model is incomplete or damaged: {exc}") from exc
    return d


# ------------------------------------------------------------------------------ making a persona
def personalize(
    channels: Channels | list[Channels],
    audio_16k: np.ndarray | list[np.ndarray],
    head_hash: str,
    identity_shape: np.ndarray | None = None,
    general: str | os.PathLike | dict | None = None,
    n_frames: int | None = 300,
    epochs: int = 100,
    seq_len: int = 32,
    patience: int = 20,
    net_overrides: dict | None = None,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    device: str | None = None,
    meta: dict | None = None,
) -> Persona:
    """Fine-tune (or, without a general model, train from scratch) on tracked clips of one person and
    their 16 kHz audio; returns a Persona ready to save.

    One clip or a list of clips (several short takes of the same person, tracked at one fps); the
    persona learns from the first ``n_frames`` frames of them all together (clip after clip; None or
    0 = all).
    """
    clips = list(channels) if isinstance(channels, (list, tuple)) else [channels]
    audios = list(audio_16k) if isinstance(audio_16k, (list, tuple)) else [audio_16k]
    if not clips or len(clips) != len(audios):
        raise PersonaError("personalize needs one audio track per tracked clip")
    fps = float(clips[0].fps)
    expr_names = list(clips[0].expr_names)
    for i, ch in enumerate(clips):
        if ch.get("head_rotation") is None or ch.get("head_translation") is None:
            raise PersonaError(f"tracked clip {i + 1} has no head pose (head_rotation / head_translation)")
        if abs(float(ch.fps) - fps) > 1e-3:
            raise PersonaError(f"the clips were tracked at different frame rates ({fps:g} and {float(ch.fps):g} fps); "
                               "track them at one rate")
        if list(ch.expr_names) != expr_names:
            raise PersonaError("the clips were tracked with different heads; track them all with this head")
    budget = sum(ch.n_frames for ch in clips) if not n_frames else int(n_frames)
    lengths = []
    for ch in clips:
        lengths.append(min(ch.n_frames, max(0, budget - sum(lengths))))
    used = [(ch, a, n) for ch, a, n in zip(clips, audios, lengths) if n >= 2]
    n = sum(lengths)
    if n < 2 * seq_len or not used:
        raise PersonaError(f"the clips are too short to learn a persona from ({n} frames; need at least {2 * seq_len})")
    feat_cfg = audio_features.FeatureConfig()
    init_state = None
    cfg = pose_net.NetConfig(n_expr=len(expr_names), window_frames=feat_cfg.window_frames, n_coef=feat_cfg.n_coef,
                             **{**SCRATCH_NET, **(net_overrides or {})})
    if general is not None:
        g = general if isinstance(general, dict) else load_general_model(general)
        if list(g["expr_names"]) != expr_names:
            raise PersonaError("the general model was trained for another head's expressions; "
                               "train one for this head or make the persona without it")
        feat_cfg = audio_features.FeatureConfig.from_dict(g["feature_config"])
        cfg, init_state = pose_net.NetConfig.from_dict(g["net_config"]), g["net_state"]
    feats = [audio_features.frame_windows(a, fps, feat_cfg, n_frames=ch.n_frames)[:k] for ch, a, k in used]
    targets = [train_pose.targets_from_channels(ch)[:k] for ch, _, k in used]
    if len(targets) > 1:
        # Clips differ by where the camera stood and how the tracker read the face; the voice cannot tell
        # that, but a network can tell the clips apart by their sound and learn each one's offset, which
        # is wrong on every new recording. Each clip is moved to the clips' common mean.
        mean = np.concatenate(targets).mean(0)
        targets = [t - t.mean(0) + mean for t in targets]
    state, hist = train_pose.train(feats, targets, cfg, init_state=init_state, epochs=epochs, seq_len=seq_len,
                                   patience=patience, seed=seed, progress=progress, cancelled=cancelled, device=device)
    groups = ("head_rotation", "head_translation", "expression", "jaw")
    poses = {g: np.concatenate([ch.get(g)[:k] for ch, _, k in used]) for g in groups
             if all(ch.get(g) is not None for ch, _, _ in used)}
    poses["voice"] = np.concatenate([motion_match.voice_features(a, fps, ch.n_frames)[:k] for ch, a, k in used])
    starts = np.cumsum([0] + [k for _, _, k in used])[:-1]
    pose6 = np.concatenate([poses["head_rotation"], poses["head_translation"]], axis=1)
    # What the network leaves out of the person's spread (its prediction regresses towards the mean):
    # the network mode adds it back as sampled motion.
    model, sl = pose_net.build(cfg, state), cfg.slices()
    pred = np.concatenate([pose_net.predict(model, f, seq_len=seq_len) for f in feats])
    pred6 = pose_style.gaussian_smooth(_pose6(pred, sl), 0.1 * fps)
    cut = [int(s) for s in starts]  # within-clip spread: clips differ in where the camera stood
    residual_std = np.sqrt(np.maximum(motion_match.center_clips(pose6, cut).var(0)
                                      - motion_match.center_clips(pred6, cut).var(0), 0.0))
    return Persona(
        net_config=cfg.to_dict(), net_state=state, feature_config=feat_cfg.to_dict(), fps=fps,
        seq_len=seq_len, expr_names=expr_names, head_hash=str(head_hash), train_poses=poses,
        pose_stats=pose_style.style_stats(pose6, fps),
        identity_shape=np.zeros(0) if identity_shape is None else np.asarray(identity_shape, np.float64),
        upper_face=upper_face_mask(expr_names), trained_lips=general is not None, history=hist,
        meta={"n_frames": n, "n_clips": len(used), "clip_starts": [int(s) for s in starts],
              "residual_std": residual_std.tolist(), **(meta or {})},
    )


# ------------------------------------------------------------------------------ generation
MODES = ("match", "network", "retrieve")


def generate_pose(
    persona: Persona,
    audio_16k: np.ndarray,
    fps: float,
    mode: str = "match",
    seed: int = 0,
    smooth: float = 0.1,
    n_frames: int | None = None,
    intensity: float = 1.0,
) -> dict:
    """Head pose and upper-face expression for ``audio_16k`` at ``fps`` in the persona's style.

    mode "match" (default): audio-driven motion matching over the person's own tracked footage
    (``motion_match``): their motion, stretch by stretch, chosen by the voice. mode "network": the
    paper's network's prediction, smoothed with a zero-phase Gaussian of ``smooth`` seconds (pose;
    half that for expression; 0 = raw), plus the motion it cannot predict from the voice sampled
    with the person's spectrum (``seed``). mode "retrieve": the person's recorded poses along that
    network motion (continuity-constrained nearest-pose retrieval).
    ``intensity`` scales the motion about the person's mean pose (1 = as they move).
    Results are resampled from the persona's fps to ``fps``.
    Returns head_rotation (T,3), head_translation (T,3), expression (T,E) with only the upper-face
    components non-zero, expression_mask (E,) bool, expression_full (T,E), jaw (T,3).
    """
    if mode not in MODES:
        raise PersonaError(f"unknown generation mode {mode!r} (use one of {', '.join(MODES)})")
    fps, intensity = float(fps), float(intensity)
    if not (math.isfinite(fps) and fps > 0):
        raise PersonaError(f"fps must be a positive number, got {fps!r}")
    if not (math.isfinite(intensity) and intensity >= 0):
        raise PersonaError(f"intensity must be a number >= 0, got {intensity!r}")
    feat_cfg = audio_features.FeatureConfig.from_dict(persona.feature_config)
    n_samples = len(np.asarray(audio_16k).reshape(-1))
    n_out = audio_features.n_video_frames(n_samples, fps, feat_cfg.sample_rate) if n_frames is None else int(n_frames)
    pfps = persona.fps
    n_in = max(audio_features.n_video_frames(n_samples, pfps, feat_cfg.sample_rate), int(math.ceil(n_out * pfps / fps)) + 1)
    tp = persona.train_poses
    bank = np.concatenate([tp["head_rotation"], tp["head_translation"]], axis=1)
    n_expr = len(persona.expr_names)
    bank_expr = tp.get("expression") if tp.get("expression") is not None and tp["expression"].shape[1] == n_expr else None
    clip_starts = [int(c) for c in persona.meta.get("clip_starts", [])]
    extra = {}
    if mode == "match":
        if tp.get("voice") is None:
            raise PersonaError("this persona was made by an older Cadence and has no voice descriptors for the "
                               "'match' mode: personalize again, or use the 'network' mode")
        query = motion_match.voice_features(audio_16k, pfps, n_in)
        if query.shape[1] != tp["voice"].shape[1]:
            raise PersonaError("this persona's voice descriptors are from another Cadence version: personalize again")
        res = motion_match.generate(tp["voice"], bank, query, pfps, seed=seed, intensity=intensity,
                                    clip_starts=clip_starts, bank_extra=bank_expr)
        pose = res["pose"]
        expr = res["extra"] if bank_expr is not None else np.zeros((n_in, n_expr))
        jaw = tp["jaw"][res["path"]] if tp.get("jaw") is not None else np.zeros((n_in, 3))
        extra["retrieved_frames"] = res["path"]
    else:
        feats = audio_features.frame_windows(audio_16k, pfps, feat_cfg, n_frames=n_in)
        model = persona.network()
        pred = pose_net.predict(model, feats, seq_len=persona.seq_len)
        sl = model.cfg.slices()
        sig = max(0.0, float(smooth or 0.0)) * pfps
        pose = pose_style.gaussian_smooth(_pose6(pred, sl), sig)
        residual = _residual_motion(persona, bank, len(pose), seed, clip_starts)
        expr = pose_style.gaussian_smooth(pred[:, sl["expression"]], sig / 2)
        jaw = pose_style.gaussian_smooth(pred[:, sl["jaw"]], sig / 2)
        if mode == "network":
            pose = pose + residual
        else:
            # Only the residual's slow part steers retrieval (a different take per seed); its fast part
            # would make the path jump at every frame.
            query = pose + pose_style.gaussian_smooth(residual, 0.3 * pfps)
            idx = pose_style.retrieve_path(query, bank, min_jump_gap=int(round(0.5 * pfps)), seed=seed)
            pose = bank[idx]
            if bank_expr is not None:
                expr = bank_expr[idx]
            extra["retrieved_frames"] = idx
        center = bank.mean(0)
        pose = center + intensity * (pose - center)
    pose, expr, jaw = (pose_style.resample(a, pfps, fps, n_out) for a in (pose, expr, jaw))
    mask = np.asarray(persona.upper_face or upper_face_mask(persona.expr_names), dtype=bool)
    return {
        "head_rotation": pose[:, :3], "head_translation": pose[:, 3:6], "expression": expr * mask,
        "expression_mask": mask, "expression_full": expr, "jaw": jaw, **extra,
    }


def _pose6(pred: np.ndarray, sl: dict) -> np.ndarray:
    """(T, 6) head rotation + translation of the network's (T, n_out) prediction."""
    return np.concatenate([pred[:, sl["head_rotation"]], pred[:, sl["head_translation"]]], axis=1)


def _residual_motion(persona: Persona, bank: np.ndarray, n: int, seed: int, clip_starts: list[int]) -> np.ndarray:
    """(n, 6) the motion the network leaves out, sampled: noise with the person's own spectrum per axis
    (random phases, ``seed``), scaled to the spread the network's prediction misses on the footage
    (``persona.meta["residual_std"]``; none for personas made before it was measured)."""
    res_std = np.asarray(persona.meta.get("residual_std", []), float).reshape(-1)
    if res_std.size != bank.shape[1] or not np.any(res_std > 0) or n < 2:
        return np.zeros((n, bank.shape[1]))
    edges = sorted({0, len(bank), *[c for c in clip_starts if 0 < c < len(bank)]})
    # Mirrored clips are periodic without a jump (a jump is broadband); their power spectra add up.
    refs = [np.concatenate([c - c.mean(0), (c - c.mean(0))[::-1]]) for c in (bank[a:b] for a, b in zip(edges[:-1], edges[1:]))]
    m = max(n, *(len(r) for r in refs))
    amp = np.sqrt(sum(np.abs(np.fft.rfft(r, n=m, axis=0)) ** 2 for r in refs))  # the person's spectrum, per axis
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x2E5])
    phase = np.exp(2j * np.pi * rng.random(amp.shape))
    phase[0] = 0.0  # no offset: the network gives the mean
    noise = np.fft.irfft(amp * phase, n=m, axis=0)[:n]
    sd = noise.std(0)
    return noise / np.where(sd > 1e-12, sd, 1.0) * res_std
