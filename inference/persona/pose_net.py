"""The audio -> expression + pose network of the paper's stage 1, and its loss.

Input per video frame: a (window_frames x n_coef) MFCC window (see ``audio_features``).
Small conv encoder over the window -> FC -> multi-layer LSTM over time -> linear head.
Output per frame, in this order: expression (E) | jaw (3) | head rotation (3) | head translation (3),
in *normalised* units; the model carries the target mean/std as buffers so a state dict is all
that is needed to denormalise.

Loss (DESIGN §4.4): MSE(expression) + 0.2·MSE(pose) + 0.01·‖Δpose‖² + 1e-4·‖Δexpression‖², where
"expression" is expression + jaw (mouth articulation, the paper's expression coefficients) and
"pose" is head rotation + translation; Δ is the temporal difference of the *prediction* (the
smoothness terms penalise jitter).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn


class PoseNetError(ValueError):
    """A network configuration or checkpoint that does not fit."""


@dataclass(frozen=True)
class NetConfig:
    n_expr: int  # the head's expression components (E)
    n_jaw: int = 3
    n_rot: int = 3
    n_trans: int = 3
    window_frames: int = 28
    n_coef: int = 12
    conv_channels: tuple[int, ...] = (32, 64, 128)
    fc_dim: int = 256
    lstm_hidden: int = 256
    lstm_layers: int = 3
    dropout: float = 0.0

    @property
    def n_out(self) -> int:
        return self.n_expr + self.n_jaw + self.n_rot + self.n_trans

    @property
    def n_face(self) -> int:
        """Columns that the expression term of the loss covers (expression + jaw)."""
        return self.n_expr + self.n_jaw

    def slices(self) -> dict[str, slice]:
        e, j, r = self.n_expr, self.n_expr + self.n_jaw, self.n_expr + self.n_jaw + self.n_rot
        return {"expression": slice(0, e), "jaw": slice(e, j), "head_rotation": slice(j, r),
                "head_translation": slice(r, self.n_out)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conv_channels"] = list(self.conv_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise PoseNetError(f"unknown network settings: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "conv_channels" in d:
            d["conv_channels"] = tuple(int(c) for c in d["conv_channels"])
        cfg = cls(**d)
        if cfg.n_expr < 0 or min(cfg.n_jaw, cfg.n_rot, cfg.n_trans) < 0 or cfg.n_out < 1:
            raise PoseNetError("network output sizes must be >= 0 and not all zero")
        if cfg.lstm_layers < 1 or cfg.lstm_hidden < 1 or cfg.fc_dim < 1 or not cfg.conv_channels:
            raise PoseNetError("network needs at least one conv layer, one LSTM layer and positive sizes")
        return cfg


class AudioPoseNet(nn.Module):
    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in, h, w = 1, cfg.window_frames, cfg.n_coef
        for i, c_out in enumerate(cfg.conv_channels):
            # First layer keeps resolution, later ones halve time and coefficients.
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
            c_in = c_out
            h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
        self.encoder = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(c_in * h * w, cfg.fc_dim), nn.LeakyReLU(0.2))
        self.lstm = nn.LSTM(cfg.fc_dim, cfg.lstm_hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        self.head = nn.Linear(cfg.lstm_hidden, cfg.n_out)
        # Start at the mean predictor: training can only move away from it where the audio tells it to.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("target_mean", torch.zeros(cfg.n_out))
        self.register_buffer("target_std", torch.ones(cfg.n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, window_frames, n_coef) -> (B, T, n_out) normalised predictions."""
        b, t = x.shape[:2]
        z = self.encoder(x.reshape(b * t, 1, *x.shape[2:]))
        z = self.fc(z.reshape(b * t, -1)).reshape(b, t, -1)
        z, _ = self.lstm(z)
        return self.head(z)

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.target_std.copy_(torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def normalise(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.target_mean) / self.target_std

    def denormalise(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.target_std + self.target_mean


def pose_loss(pred: torch.Tensor, target: torch.Tensor, n_face: int, weights: tuple = (1.0, 0.2, 0.01, 1e-4)) -> dict:
    """The stage-1 loss on (B, T, D) tensors; columns [:n_face] are expression(+jaw), the rest pose.

    Returns a dict of the four terms and their weighted ``total``.
    """
    w_expr, w_pose, w_dpose, w_dexpr = weights
    zero = pred.new_zeros(())

    def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) ** 2).mean() if a.numel() else zero

    def smooth(a: torch.Tensor) -> torch.Tensor:
        # Mean over frames of the squared norm of the frame-to-frame difference.
        return ((a[:, 1:] - a[:, :-1]) ** 2).sum(-1).mean() if a.shape[1] > 1 and a.shape[-1] else zero

    terms = {
        "expression": mse(pred[..., :n_face], target[..., :n_face]),
        "pose": mse(pred[..., n_face:], target[..., n_face:]),
        "d_pose": smooth(pred[..., n_face:]),
        "d_expression": smooth(pred[..., :n_face]),
    }
    terms["total"] = (w_expr * terms["expression"] + w_pose * terms["pose"] + w_dpose * terms["d_pose"]
                      + w_dexpr * terms["d_expression"])
    return terms


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))


def build(cfg: NetConfig | dict, state: dict | None = None) -> AudioPoseNet:
    """A network from its config, optionally loaded from a state dict (strict, with a clear error)."""
    cfg = cfg if isinstance(cfg, NetConfig) else NetConfig.from_dict(cfg)
    model = AudioPoseNet(cfg)
    if state is not None:
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or extra or wrong:
            detail = "; ".join(p for p in (
                f"missing {', '.join(missing[:4])}" if missing else "",
                f"unexpected {', '.join(extra[:4])}" if extra else "",
                f"different shapes for {', '.join(wrong[:4])}" if wrong else "") if p)
            raise PoseNetError(f"the saved network does not fit this configuration ({detail})")
        model.load_state_dict(state)
    return model


@torch.no_grad()
def predict(model: AudioPoseNet, windows: np.ndarray, seq_len: int = 64, device: str = "cpu") -> np.ndarray:
    """(T, W, C) feature windows -> (T, n_out) denormalised predictions.

    Runs in half-overlapping chunks of ``seq_len`` frames (the length the LSTM was trained on, from a
    zero state) and cross-fades them, so long takes behave like training and memory stays bounded.
    """
    model.eval()
    t_total = windows.shape[0]
    out = np.zeros((t_total, model.cfg.n_out), dtype=np.float64)
    if t_total == 0:
        return out
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32), device=device)
    if t_total <= seq_len:
        return model.denormalise(model(x[None]))[0].cpu().double().numpy()
    hop = max(1, seq_len // 2)
    starts = list(range(0, t_total - seq_len + 1, hop))
    if starts[-1] != t_total - seq_len:
        starts.append(t_total - seq_len)
    ramp = np.minimum(np.arange(1, seq_len + 1), np.arange(seq_len, 0, -1)).astype(np.float64)
    weight = np.zeros(t_total)
    batch = torch.stack([x[s:s + seq_len] for s in starts])
    preds = model.denormalise(model(batch)).cpu().double().numpy()
    for s, p in zip(starts, preds):
        w = ramp.copy()
        if s == 0:
            w[:hop] = ramp.max()  # nothing precedes the first chunk: trust it fully at the start
        if s == starts[-1]:
            w[-hop:] = ramp.max()
        out[s:s + seq_len] += p * w[:, None]
        weight[s:s + seq_len] += w
    return out / weight[:, None]
