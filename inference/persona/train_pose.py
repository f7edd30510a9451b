"""Training and fine-tuning of the audio -> expression + pose network.

``train`` takes per-frame MFCC windows (``audio_features.frame_windows``) and per-frame targets laid
out as [expression | jaw | head rotation | head translation] (``targets_from_channels``). One clip
or a list of clips; the *last* ``val_fraction`` of every clip is held out (contiguous, never seen in
training) and drives early stopping. Targets are z-scored with statistics stored in the model.
The general-model CLI that trains from a folder of tracked clips is ``train_general``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..protocol import Channels
from . import pose_net

POSE_GROUPS = ("jaw", "head_rotation", "head_translation")


class TrainingError(ValueError):
    """Training data or settings that cannot work (message meant for the user)."""


class TrainingCancelled(RuntimeError):
    """The user cancelled training."""


def targets_from_channels(ch: Channels, n_expr: int | None = None) -> np.ndarray:
    """(T, E + 9) targets [expression | jaw | head_rotation | head_translation]; missing groups are zeros."""
    n_expr = len(ch.expr_names) if n_expr is None else n_expr
    parts = []
    expr = ch.get("expression")
    if expr is not None and expr.shape[1] != n_expr:
        raise TrainingError(f"clip has {expr.shape[1]} expression components, expected {n_expr}")
    parts.append(expr if expr is not None else np.zeros((ch.n_frames, n_expr)))
    for g in POSE_GROUPS:
        arr = ch.get(g)
        parts.append(arr if arr is not None else np.zeros((ch.n_frames, 3)))
    return np.concatenate(parts, axis=1).astype(np.float64)


STD_FLOOR = 0.1  # of the largest spread in the same group


def normalisation_std(rows: np.ndarray, cfg: pose_net.NetConfig) -> np.ndarray:
    """Per-column spread for z-scoring the targets, floored at STD_FLOOR of the largest one in its group
    (expression + jaw, rotation, translation): a component that barely moves (a fixture clip's
    mouthRollLower: std 1e-6) must not turn its tracker noise into the loss's largest term."""
    std = np.asarray(rows, float).std(0)
    sl = cfg.slices()
    groups = [slice(0, cfg.n_face), sl["head_rotation"], sl["head_translation"]]
    for g in groups:
        if std[g].size:
            std[g] = np.maximum(std[g], STD_FLOOR * std[g].max() + 1e-9)
    return std


def _as_clips(features, targets) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if isinstance(features, np.ndarray):
        features, targets = [features], [targets]
    feats = [np.asarray(f, dtype=np.float32) for f in features]
    targs = [np.asarray(t, dtype=np.float64) for t in targets]
    if len(feats) != len(targs) or not feats:
        raise TrainingError("need the same, non-zero number of feature and target clips")
    for i, (f, t) in enumerate(zip(feats, targs)):
        if f.ndim != 3 or t.ndim != 2 or f.shape[0] != t.shape[0]:
            raise TrainingError(f"clip {i}: features {f.shape} and targets {t.shape} do not line up frame by frame")
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(t))):
            raise TrainingError(f"clip {i}: features or targets contain NaN or infinite values")
    return feats, targs


def _windows(n: int, seq_len: int, stride: int, offset: int = 0) -> list[tuple[int, int]]:
    if n <= seq_len:
        return [(0, n)] if n >= 2 else []
    starts = list(range(min(offset, n - seq_len), n - seq_len + 1, stride))
    if starts[-1] != n - seq_len:
        starts.append(n - seq_len)
    return [(s, s + seq_len) for s in starts]


def train(
    features,
    targets,
    config: pose_net.NetConfig | dict,
    init_state: dict | None = None,
    epochs: int = 100,
    lr: float | None = None,
    val_fraction: float = 0.2,
    seq_len: int = 32,
    batch_size: int = 16,
    patience: int = 20,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    device: str | None = None,
) -> tuple[dict, dict]:
    """Train (``init_state=None``, lr 1e-3) or fine-tune all layers (lr 1e-4) the stage-1 network.

    ``features``: (T, W, C) windows or a list of them; ``targets``: (T, D) or a list. Returns the best
    (lowest held-out loss) state dict and a history dict. Deterministic for a given seed on CPU.
    """
    feats, targs = _as_clips(features, targets)
    cfg = config if isinstance(config, pose_net.NetConfig) else pose_net.NetConfig.from_dict(config)
    if feats[0].shape[1:] != (cfg.window_frames, cfg.n_coef):
        raise TrainingError(f"feature windows are {feats[0].shape[1:]}, the network expects "
                            f"{(cfg.window_frames, cfg.n_coef)}")
    if any(t.shape[1] != cfg.n_out for t in targs):
        raise TrainingError(f"targets have {targs[0].shape[1]} columns, the network predicts {cfg.n_out}")
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingError("val_fraction must be in [0, 1)")
    if epochs < 1 or seq_len < 2:
        raise TrainingError("need at least one epoch and sequences of at least 2 frames")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lr = (1e-4 if init_state is not None else 1e-3) if lr is None else float(lr)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = pose_net.build(cfg, init_state).to(device)
    splits = [len(t) - int(round(len(t) * val_fraction)) for t in targs]
    if init_state is None:
        # Scratch: normalise with the training frames' statistics. Fine-tuning keeps the general
        # model's normalisation so its outputs keep their meaning.
        train_rows = np.concatenate([t[:s] for t, s in zip(targs, splits)])
        if len(train_rows) < 2:
            raise TrainingError("not enough training frames")
        model.set_normalisation(train_rows.mean(0), normalisation_std(train_rows, cfg))
    mean, std = model.target_mean.cpu().double().numpy(), model.target_std.cpu().double().numpy()

    x_all = [torch.as_tensor(f) for f in feats]
    y_all = [torch.as_tensor(((t - mean) / std).astype(np.float32)) for t in targs]

    def train_windows(offset: int) -> list:
        # One epoch = one pass: back-to-back windows from a random phase, so every epoch cuts the
        # sequences differently (cheap augmentation) without seeing frames several times.
        return [(c, a, b) for c, s in enumerate(splits) for a, b in _windows(s, seq_len, seq_len, offset)]

    train_idx = train_windows(0)
    val_idx = [(c, s + a, s + b) for c, (s, t) in enumerate(zip(splits, targs))
               for a, b in _windows(len(t) - s, seq_len, max(1, seq_len // 2))]
    if not train_idx:
        raise TrainingError(f"clips are too short to train on (need more than {seq_len} frames)")

    opt = pose_net.make_optimizer(model, lr)
    history: dict = {"train_loss": [], "val_loss": [], "best_epoch": -1, "stopped_early": False,
                     "lr": lr, "device": device, "seed": seed, "seq_len": seq_len,
                     "n_train_windows": len(train_idx), "n_val_windows": len(val_idx)}
    best_state, best_val, since_best = None, math.inf, 0
    t0 = time.perf_counter()

    def batches(idx: list, shuffle: bool):
        order = rng.permutation(len(idx)) if shuffle else np.arange(len(idx))
        # Windows of one batch must share a length: group by length (short clips give shorter ones).
        by_len: dict[int, list] = {}
        for i in order:
            c, a, b = idx[i]
            by_len.setdefault(b - a, []).append((c, a, b))
        for group in by_len.values():
            for k in range(0, len(group), batch_size):
                chunk = group[k:k + batch_size]
                yield (torch.stack([x_all[c][a:b] for c, a, b in chunk]).to(device),
                       torch.stack([y_all[c][a:b] for c, a, b in chunk]).to(device))

    for epoch in range(epochs):
        if cancelled is not None and cancelled():
            raise TrainingCancelled("training was cancelled")
        model.train()
        tot, n = 0.0, 0
        for xb, yb in batches(train_windows(int(rng.integers(seq_len))), shuffle=True):
            loss = pose_net.pose_loss(model(xb), yb, cfg.n_face)["total"]
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            tot, n = tot + loss.item() * len(xb), n + len(xb)
        history["train_loss"].append(tot / n)
        val = evaluate(model, val_idx, x_all, y_all, cfg, device) if val_idx else tot / n
        history["val_loss"].append(val)
        if val < best_val - 1e-9:
            best_val, since_best, history["best_epoch"] = val, 0, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            since_best += 1
        if progress is not None:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}: train {tot / n:.4f}, held-out {val:.4f}")
        if val_idx and since_best >= patience:
            history["stopped_early"] = True
            break
    history["epochs_run"] = len(history["train_loss"])
    if val_idx:  # what always answering the training mean would score on the same held-out frames
        history["mean_predictor_loss"] = evaluate(None, val_idx, x_all, y_all, cfg, device)
    history["best_val_loss"] = best_val
    history["seconds"] = time.perf_counter() - t0
    return best_state, history


@torch.no_grad()
def evaluate(model, idx, x_all, y_all, cfg, device) -> float:
    """Mean loss over held-out windows (normalised units); ``model=None``: of predicting the mean."""
    if model is not None:
        model.eval()
    tot, n = 0.0, 0
    for c, a, b in idx:
        xb, yb = x_all[c][a:b][None].to(device), y_all[c][a:b][None].to(device)
        pred = model(xb) if model is not None else torch.zeros_like(yb)
        tot += float(pose_net.pose_loss(pred, yb, cfg.n_face)["total"])
        n += 1
    return tot / max(n, 1)
