"""Training the refiner on pairs (render of the tracked take, real frame), and the refiner file.

Pairs are the crops of ``frames.py``; the last ``VAL_FRACTION`` of the frames is held out and the
validation PSNR (refined crop vs real crop, the memory read as at inference) is reported while training.
Each step: the discriminator (LSGAN) on (render stack, real) vs (render stack, refined), then the generator
with GAN + 100·L1 + ``MASK_MEAN``·mean(mask) + ``MASK_TV``·TV(mask), and the key encoder with the
memory's threshold triplet loss; the memory is then updated with the batch's (key, value). The generator
is conditioned on the true appearance value or, half the time, on the memory's read (what it gets at
inference). CUDA runs under bfloat16 autocast; CPU in float32.

The refiner file is a ``weights_only``-loadable dict: format, version, config, the three networks, the
memory, the head's hash and what the clip is (for background matching).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from . import networks
from .memory import Memory
from .networks import N_CONTEXT, RefinerConfig

FORMAT = "cadence-refiner"
VERSION = 1
VAL_FRACTION = 0.2
L1_WEIGHT = 100.0
MASK_MEAN = 0.1
MASK_TV = 1.0
TRUE_VALUE_P = 0.5
LR = 2e-4
MIN_FRAMES = 10
AUGMENT_SHIFT = 1 / 32  # random shifts of the training pairs, in crop sides (with random mirroring)
MAX_SIZE, MAX_WIDTH = 1024, 512


class RefinerError(ValueError):
    """A refiner file or training request that cannot be used (the message is shown to the user)."""


class TrainCancelled(Exception):
    pass


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """(..., S, S, C) 0..1 -> (..., C, S, S) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x, dtype=np.float32), -1, -3))) * 2 - 1


def stack_inputs(render_crops: np.ndarray, idx: np.ndarray, clip_of: np.ndarray | None = None,
                 textured: bool = True) -> torch.Tensor:
    """(B, C, S, S): the renders at t-1, t, t+1, the textured render at t (``textured``) and the head mask at
    t, in [-1, 1], from (T, S, S, 8) crops (``frames.render_crops``). Neighbours are clamped at the ends of the
    array or, given ``clip_of`` (a clip number per frame), of each frame's own clip."""
    T = len(render_crops)
    half = N_CONTEXT // 2
    idx = np.asarray(idx)
    if clip_of is None:
        lo, hi = np.zeros_like(idx), np.full_like(idx, T - 1)
    else:
        starts = np.searchsorted(clip_of, clip_of[idx], side="left")
        lo, hi = starts, np.searchsorted(clip_of, clip_of[idx], side="right") - 1
    parts = [to_tensor(render_crops[np.clip(idx + d, lo, hi), ..., :3]) for d in range(-half, half + 1)]
    if textured:
        parts.append(to_tensor(render_crops[idx, ..., 4:7]))
    parts.append(to_tensor(render_crops[idx, ..., 3:4]))
    return torch.cat(parts, 1)


@dataclasses.dataclass
class Nets:
    cfg: RefinerConfig
    generator: networks.Generator
    keys: networks.KeyEncoder
    disc: networks.PatchDiscriminator
    memory: Memory
    texture: np.ndarray | None = None  # (F, 3) the person's colour per head triangle (texture.py)

    @classmethod
    def new(cls, cfg: RefinerConfig, seed: int = 0) -> Nets:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        return cls(cfg, networks.Generator(cfg), networks.KeyEncoder(cfg), networks.PatchDiscriminator(cfg),
                   Memory(cfg.memory_size, cfg.key_dim, cfg.value_dim, generator=gen))

    def to(self, device: str) -> Nets:
        for m in (self.generator, self.keys, self.disc):
            m.to(device)
        return self

    @torch.no_grad()
    def refine(self, stack: torch.Tensor, values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined crops and masks for a batch of stacks; ``values``: given appearance values (else the memory's
        top-1 read)."""
        if values is None:
            values = self.read(stack)
        refined, _colour, mask = self.generator(stack, values.to(stack.device))
        return refined, mask

    @torch.no_grad()
    def read(self, stack: torch.Tensor) -> torch.Tensor:
        current = stack[:, 3 * (N_CONTEXT // 2): 3 * (N_CONTEXT // 2) + 3]
        return self.memory.read(self.keys(current).float().cpu()).to(stack.device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of images in [-1, 1] (computed on 0..1)."""
    mse = float(((a - b) / 2).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def validate(nets: Nets, render_crops: np.ndarray, real_crops: np.ndarray, idx: np.ndarray, device: str,
             batch: int = 8, clip_of: np.ndarray | None = None) -> float:
    nets.generator.eval()
    nets.keys.eval()
    total, n = 0.0, 0
    for s in range(0, len(idx), batch):
        b = idx[s: s + batch]
        refined, _ = nets.refine(stack_inputs(render_crops, b, clip_of, nets.cfg.textured).to(device))
        real = to_tensor(real_crops[b]).to(device)
        total += float(((refined.float() - real) / 2).pow(2).mean()) * len(b)
        n += len(b)
    nets.generator.train()
    nets.keys.train()
    return 10 * math.log10(1.0 / max(total / max(n, 1), 1e-10))


def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if rng.random() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    r = max(1, int(round(AUGMENT_SHIFT * x.shape[-1])))
    dy, dx = (int(v) for v in rng.integers(-r, r + 1, 2))
    return torch.roll(x, (dy, dx), (2, 3)), torch.roll(y, (dy, dx), (2, 3))


def split(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out frame indices (the last VAL_FRACTION, at least one frame)."""
    if n_frames < MIN_FRAMES:
        raise RefinerError(f"the clip has {n_frames} frames: the refiner needs at least {MIN_FRAMES} to learn from")
    n_val = max(1, int(round(VAL_FRACTION * n_frames)))
    return np.arange(n_frames - n_val), np.arange(n_frames - n_val, n_frames)


def train(nets: Nets, render_crops: np.ndarray, real_crops: np.ndarray, *, max_minutes: float = 10.0,
          max_iters: int | None = None, batch: int = 4, device: str = "cpu", seed: int = 0,
          progress: Callable[[float, str], None] | None = None, cancelled: Callable[[], bool] | None = None,
          eval_every_s: float = 30.0, held_out: np.ndarray | None = None, clip_of: np.ndarray | None = None,
          augment: bool = False) -> dict:
    """Train ``nets`` in place until ``max_minutes`` or ``max_iters``; returns the history.

    ``held_out``: the validation frames (default: the last VAL_FRACTION); ``clip_of``: a non-decreasing clip
    number per frame when the crops of several clips are concatenated. ``augment``: mirror and shift each
    batch's pairs at random (a few hundred frames of one person are easy to memorise)."""
    if render_crops.shape[:3] != real_crops.shape[:3]:
        raise RefinerError("the renders and the real frames do not pair up (different counts or sizes)")
    if held_out is None:
        tr, val = split(len(render_crops))
    else:
        val = np.asarray(held_out, dtype=np.int64)
        tr = np.setdiff1d(np.arange(len(render_crops)), val)
        if len(tr) < MIN_FRAMES or not len(val):
            raise RefinerError(f"the refiner needs at least {MIN_FRAMES} training frames and one held-out frame")
    nets.to(device)
    opt_g = torch.optim.Adam(list(nets.generator.parameters()) + list(nets.keys.parameters()), LR, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(nets.disc.parameters(), LR, betas=(0.5, 0.999))
    rng = np.random.default_rng(seed)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast(
        "cpu", enabled=False)
    hist = {"loss_l1": [], "loss_g": [], "loss_d": [], "loss_key": [], "val_psnr": [], "val_iter": [],
            "iterations": 0, "seconds": 0.0, "device": device, "n_train": len(tr), "n_val": len(val)}
    t0 = last_eval = time.monotonic()
    budget = max_minutes * 60.0
    it = 0
    hist["val_psnr"].append(validate(nets, render_crops, real_crops, val, device, clip_of=clip_of))
    hist["val_iter"].append(0)
    while True:
        elapsed = time.monotonic() - t0
        if (max_iters is not None and it >= max_iters) or elapsed >= budget:
            break
        if cancelled is not None and cancelled():
            raise TrainCancelled()
        b = rng.choice(tr, size=min(batch, len(tr)), replace=len(tr) < batch)
        x = stack_inputs(render_crops, b, clip_of, nets.cfg.textured).to(device)
        y = to_tensor(real_crops[b]).to(device)
        if augment:
            x, y = _augment(x, y, rng)
        true_value = networks.appearance_value(y, nets.cfg.thumb).float()
        with amp:
            q = nets.keys(x[:, 3 * (N_CONTEXT // 2): 3 * (N_CONTEXT // 2) + 3]).float()
        read = nets.memory.read(q.detach().cpu()).to(device)
        use_true = torch.from_numpy(rng.random(len(b)) < TRUE_VALUE_P).to(device)[:, None]
        value = torch.where(use_true, true_value, read)
        with amp:
            refined, _colour, mask = nets.generator(x, value)
            d_real, d_fake = nets.disc(x, y), nets.disc(x, refined.detach())
            loss_d = 0.5 * ((d_real.float() - 1).pow(2).mean() + d_fake.float().pow(2).mean())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with amp:
            g_adv = (nets.disc(x, refined).float() - 1).pow(2).mean()
            l1 = F.l1_loss(refined.float(), y)
            mask_f = mask.float()
            loss_key = nets.memory.triplet_loss(q.cpu(), true_value.cpu()).to(device)
            loss_g = g_adv + L1_WEIGHT * l1 + MASK_MEAN * mask_f.mean() + MASK_TV * networks.mask_tv(mask_f) + loss_key
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        nets.memory.update(q.detach().cpu(), true_value.detach().cpu())
        it += 1
        for k, v in (("loss_l1", l1), ("loss_g", loss_g), ("loss_d", loss_d), ("loss_key", loss_key)):
            hist[k].append(float(v.detach()))
        now = time.monotonic()
        if now - last_eval >= eval_every_s:
            last_eval = now
            hist["val_psnr"].append(validate(nets, render_crops, real_crops, val, device, clip_of=clip_of))
            hist["val_iter"].append(it)
        if progress is not None and (it % 5 == 0 or it == 1):
            frac = it / max_iters if max_iters else 0.0
            frac = max(frac, (now - t0) / budget if budget > 0 else 0.0)
            progress(min(frac, 1.0), f"iteration {it}, L1 {float(l1.detach()):.3f}, validation PSNR "
                                     f"{hist['val_psnr'][-1]:.1f} dB")
    hist["val_psnr"].append(validate(nets, render_crops, real_crops, val, device, clip_of=clip_of))
    hist["val_iter"].append(it)
    hist["iterations"], hist["seconds"] = it, time.monotonic() - t0
    return hist


# ------------------------------------------------------------------------------------------ the file


def save(nets: Nets, path: str, head_hash: str, clip: dict, history: dict) -> str:
    state = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(nets.cfg),
             "generator": {k: v.cpu() for k, v in nets.generator.state_dict().items()},
             "key_encoder": {k: v.cpu() for k, v in nets.keys.state_dict().items()},
             "discriminator": {k: v.cpu() for k, v in nets.disc.state_dict().items()},
             "memory": nets.memory.state(), "head_hash": str(head_hash), "clip": clip,
             "texture": None if nets.texture is None else torch.from_numpy(np.asarray(nets.texture, np.float32)),
             "history": {k: v for k, v in history.items() if not isinstance(v, list) or len(v) < 100000}}
    tmp = path + ".partial"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(path: str, head_hash: str | None = None) -> tuple[Nets, dict]:
    """The refiner in ``path`` and its file dict; RefinerError for anything but a Cadence refiner (for this
    head when ``head_hash`` is given). Loaded with ``weights_only``: a file cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RefinerError(f"refiner file {path} does not exist; train a refiner first") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a refiner file"
        raise RefinerError(f"{os.path.basename(path)} is not a Cadence refiner file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RefinerError(f"{os.path.basename(path)} is not a Cadence refiner file")
    if state.get("version") != VERSION:
        raise RefinerError(f"{os.path.basename(path)} is a refiner of version {state.get('version')!r}; "
                           f"this Cadence reads version {VERSION}: train the refiner again")
    if head_hash is not None and state.get("head_hash") != head_hash:
        raise RefinerError("this refiner was trained for another head; train a refiner for this head")
    try:
        cfg_d = dict(state["config"])
        cfg = RefinerConfig(**{f.name: int(cfg_d.get(f.name, 0 if f.name == "textured" else None))
                               for f in dataclasses.fields(RefinerConfig)}).check()
        if cfg.size > MAX_SIZE or max(cfg.base, cfg.disc_base, cfg.key_dim) > MAX_WIDTH or cfg.depth > 8 \
                or cfg.memory_size > 65536 or cfg.thumb > 64:
            raise ValueError("implausible network sizes")
        nets = Nets.new(cfg)
        nets.generator.load_state_dict(state["generator"])
        nets.keys.load_state_dict(state["key_encoder"])
        nets.disc.load_state_dict(state["discriminator"])
        nets.memory = Memory.from_state(state["memory"])
        if nets.memory.keys.shape != (cfg.memory_size, cfg.key_dim) or nets.memory.values.shape[1] != cfg.value_dim:
            raise ValueError("memory does not match the config")
        tex = state.get("texture")
        if tex is not None:
            nets.texture = tex.float().numpy()
            if nets.texture.ndim != 2 or nets.texture.shape[1] != 3 or not np.isfinite(nets.texture).all():
                raise ValueError("the texture is not a colour per triangle")
        elif cfg.textured:
            raise ValueError("a textured refiner without its texture")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RefinerError(f"{os.path.basename(path)} is a damaged refiner file ({exc})") from None
    return nets, state
