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
from . import pose_net, pose_style, train_pose

PERSONA_FORMAT = "cadence-persona"
MODEL_FORMAT = "cadence-pose-model"
PERSONA_VERSION = 1
# Upper-face components the persona animates (blinks and gaze have their own channels; lips and jaw
# belong to the lip engine unless the network was fine-tuned from a general model).
UPPER_FACE_PREFIXES = ("brow", "eyesquint", "eyewide", "cheek", "nose")


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
    channels: Channels,
    audio_16k: np.ndarray,
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
    """Fine-tune (or, without a general model, train from scratch) on the first ``n_frames`` frames of a
    tracked clip and its 16 kHz audio; returns a Persona ready to save."""
    n = channels.n_frames if n_frames is None else min(int(n_frames), channels.n_frames)
    if channels.get("head_rotation") is None or channels.get("head_translation") is None:
        raise PersonaError("the tracked clip has no head pose (head_rotation / head_translation)")
    if n < 2 * seq_len:
        raise PersonaError(f"the clip is too short to learn a persona from ({n} frames; need at least {2 * seq_len})")
    feat_cfg = audio_features.FeatureConfig()
    init_state, expr_names = None, list(channels.expr_names)
    cfg = pose_net.NetConfig(n_expr=len(expr_names), window_frames=feat_cfg.window_frames, n_coef=feat_cfg.n_coef,
                             **(net_overrides or {}))
    if general is not None:
        g = general if isinstance(general, dict) else load_general_model(general)
        if list(g["expr_names"]) != expr_names:
            raise PersonaError("the general model was trained for another head's expressions; "
                               "train one for this head or make the persona without it")
        feat_cfg = audio_features.FeatureConfig.from_dict(g["feature_config"])
        cfg, init_state = pose_net.NetConfig.from_dict(g["net_config"]), g["net_state"]
    feats = audio_features.frame_windows(audio_16k, channels.fps, feat_cfg, n_frames=channels.n_frames)[:n]
    targets = train_pose.targets_from_channels(channels)[:n]
    state, hist = train_pose.train(feats, targets, cfg, init_state=init_state, epochs=epochs, seq_len=seq_len,
                                   patience=patience, seed=seed, progress=progress, cancelled=cancelled, device=device)
    poses = {g: channels.get(g)[:n] for g in ("head_rotation", "head_translation", "expression", "jaw")
             if channels.get(g) is not None}
    pose6 = np.concatenate([poses["head_rotation"], poses["head_translation"]], axis=1)
    return Persona(
        net_config=cfg.to_dict(), net_state=state, feature_config=feat_cfg.to_dict(), fps=channels.fps,
        seq_len=seq_len, expr_names=expr_names, head_hash=str(head_hash), train_poses=poses,
        pose_stats=pose_style.style_stats(pose6, channels.fps),
        identity_shape=np.zeros(0) if identity_shape is None else np.asarray(identity_shape, np.float64),
        upper_face=upper_face_mask(expr_names), trained_lips=general is not None, history=hist,
        meta={"n_frames": n, **(meta or {})},
    )


# ------------------------------------------------------------------------------ generation
def generate_pose(
    persona: Persona,
    audio_16k: np.ndarray,
    fps: float,
    mode: str = "network",
    seed: int = 0,
    smooth: float = 0.1,
    n_frames: int | None = None,
) -> dict:
    """Head pose and upper-face expression for ``audio_16k`` at ``fps`` in the persona's style.

    mode "network": the network's prediction, smoothed with a zero-phase Gaussian of ``smooth``
    seconds (pose; half that for expression; 0 = raw). mode "retrieve": the persona's own recorded
    poses, chosen by continuity-constrained nearest-pose retrieval along the (smoothed) prediction.
    The network runs at the persona's fps; results are resampled to ``fps``. ``seed`` only breaks
    ties in retrieval (the network is deterministic).
    Returns head_rotation (T,3), head_translation (T,3), expression (T,E) with only the upper-face
    components non-zero, expression_mask (E,) bool, expression_full (T,E), jaw (T,3).
    """
    if mode not in ("network", "retrieve"):
        raise PersonaError(f"unknown generation mode {mode!r} (use 'network' or 'retrieve')")
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise PersonaError(f"fps must be a positive number, got {fps!r}")
    feat_cfg = audio_features.FeatureConfig.from_dict(persona.feature_config)
    n_samples = len(np.asarray(audio_16k).reshape(-1))
    n_out = audio_features.n_video_frames(n_samples, fps, feat_cfg.sample_rate) if n_frames is None else int(n_frames)
    pfps = persona.fps
    n_in = max(audio_features.n_video_frames(n_samples, pfps, feat_cfg.sample_rate), int(math.ceil(n_out * pfps / fps)) + 1)
    feats = audio_features.frame_windows(audio_16k, pfps, feat_cfg, n_frames=n_in)
    model = persona.network()
    pred = pose_net.predict(model, feats, seq_len=persona.seq_len)
    sl = model.cfg.slices()
    sig = max(0.0, float(smooth or 0.0)) * pfps
    pose = pose_style.gaussian_smooth(np.concatenate([pred[:, sl["head_rotation"]], pred[:, sl["head_translation"]]], 1), sig)
    expr = pose_style.gaussian_smooth(pred[:, sl["expression"]], sig / 2)
    jaw = pose_style.gaussian_smooth(pred[:, sl["jaw"]], sig / 2)
    extra = {}
    if mode == "retrieve":
        tp = persona.train_poses
        bank = np.concatenate([tp["head_rotation"], tp["head_translation"]], axis=1)
        idx = pose_style.retrieve_path(pose, bank, min_jump_gap=int(round(0.5 * pfps)), seed=seed)
        pose = bank[idx]
        if tp.get("expression") is not None and tp["expression"].shape[1] == expr.shape[1]:
            expr = tp["expression"][idx]
        extra["retrieved_frames"] = idx
    pose, expr, jaw = (pose_style.resample(a, pfps, fps, n_out) for a in (pose, expr, jaw))
    mask = np.asarray(persona.upper_face or upper_face_mask(persona.expr_names), dtype=bool)
    return {
        "head_rotation": pose[:, :3], "head_translation": pose[:, 3:6], "expression": expr * mask,
        "expression_mask": mask, "expression_full": expr, "jaw": jaw, **extra,
    }
