"""The refiner's networks (plain torch): the generator, the render's key encoder and the discriminator.

- ``Generator``: a U-Net over the stacked render crops (3 consecutive RGB frames + the current head mask).
  Its decoder's normalisations are AdaIN layers whose scale and shift come from a style vector: the
  appearance value read from the memory (``memory.py``). It outputs a colour image and an attention mask;
  the refined crop is ``mask · render + (1 − mask) · colour`` (the paper's formulation: where the render is
  already right the network may keep it).
- ``KeyEncoder``: a small conv encoder of the current render crop to a unit vector, the memory's key.
- ``PatchDiscriminator``: pix2pix's 70×70 PatchGAN (C64-C128-C256-C512, 4×4 kernels), conditioned on the
  render stack; widths scale with ``base`` for small CPU models.

``RefinerConfig`` holds every size; it is saved with the weights, so a refiner file rebuilds itself.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

N_CONTEXT = 3  # consecutive render frames the generator sees (t-1, t, t+1)


@dataclasses.dataclass
class RefinerConfig:
    size: int = 128  # crop side (pixels); 256 on a GPU
    base: int = 32  # generator width at full resolution
    depth: int = 4  # U-Net levels (size / 2**depth >= 4)
    key_dim: int = 64
    thumb: int = 8  # the appearance value is the real crop's thumb × thumb colour image
    disc_base: int = 32
    memory_size: int = 128
    textured: int = 1  # the stack carries the head drawn with the person's texture (texture.py)

    @property
    def value_dim(self) -> int:
        return 3 * self.thumb * self.thumb

    @property
    def in_channels(self) -> int:
        return 3 * N_CONTEXT + 1 + 3 * int(bool(self.textured))

    @property
    def base_slice(self) -> slice:
        """The stack's channels the output starts from (mask · base + (1 − mask) · colour): the textured
        render when there is one, else the current render."""
        first = 3 * N_CONTEXT if self.textured else 3 * (N_CONTEXT // 2)
        return slice(first, first + 3)

    def check(self) -> RefinerConfig:
        if self.size < 16 or self.size % (2 ** self.depth) or self.size // (2 ** self.depth) < 2:
            raise ValueError(f"crop size {self.size} must be a multiple of {2 ** self.depth} and at least 16")
        for name in ("base", "depth", "key_dim", "thumb", "disc_base", "memory_size"):  # (textured may be 0)
            if int(getattr(self, name)) < 1:
                raise ValueError(f"refiner {name} must be >= 1")
        return self


class AdaIN(nn.Module):
    """Instance norm whose scale and shift are predicted from a style vector (initialised to the identity)."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(style).chunk(2, dim=1)
        return self.norm(x) * (1.0 + gamma[..., None, None]) + beta[..., None, None]


class _Up(nn.Module):
    def __init__(self, c_in: int, c_out: int, style_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm1 = AdaIN(c_out, style_dim)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = AdaIN(c_out, style_dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        x = F.relu(self.norm1(self.conv1(torch.cat([x, skip], 1)), style))
        return F.relu(self.norm2(self.conv2(x), style))


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2))


class Generator(nn.Module):
    def __init__(self, cfg: RefinerConfig):
        super().__init__()
        widths = [min(cfg.base * 2 ** i, cfg.base * 8) for i in range(cfg.depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.downs = nn.ModuleList(_down(widths[i], widths[i + 1]) for i in range(cfg.depth))
        self.style = nn.Sequential(nn.Linear(cfg.value_dim, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
        self.ups = nn.ModuleList(_Up(widths[i + 1] + widths[i], widths[i], 128) for i in reversed(range(cfg.depth)))
        self.colour = nn.Conv2d(widths[0], 3, 3, padding=1)
        self.mask = nn.Conv2d(widths[0], 1, 3, padding=1)
        self.base_slice = cfg.base_slice

    def forward(self, stack: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``stack`` (B, in_channels, S, S) in [-1, 1], ``value`` (B, value_dim) -> (refined, colour, mask)."""
        style = self.style(value)
        x = self.stem(stack)
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up in self.ups:
            x = up(x, skips.pop(), style)
        colour = torch.tanh(self.colour(x))
        mask = torch.sigmoid(self.mask(x))
        current = stack[:, self.base_slice]
        return mask * current + (1.0 - mask) * colour, colour, mask


class KeyEncoder(nn.Module):
    """The current render crop -> a unit key vector (what the memory is searched with)."""

    def __init__(self, cfg: RefinerConfig):
        super().__init__()
        layers, c = [], 3
        for i in range(4):
            w = min(cfg.base * 2 ** i, 128)
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(c, cfg.key_dim)

    def forward(self, render: torch.Tensor) -> torch.Tensor:
        x = self.features(render).mean(dim=(2, 3))
        return F.normalize(self.out(x), dim=1)


class PatchDiscriminator(nn.Module):
    """70×70 PatchGAN on (render stack, image) pairs; one realness score per patch."""

    def __init__(self, cfg: RefinerConfig):
        super().__init__()
        b = cfg.disc_base
        c_in = cfg.in_channels + 3
        self.net = nn.Sequential(
            nn.Conv2d(c_in, b, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(b, 2 * b, 4, 2, 1), nn.InstanceNorm2d(2 * b), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * b, 4 * b, 4, 2, 1), nn.InstanceNorm2d(4 * b), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * b, 8 * b, 4, 1, 1), nn.InstanceNorm2d(8 * b), nn.LeakyReLU(0.2),
            nn.Conv2d(8 * b, 1, 4, 1, 1),
        )

    def forward(self, stack: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([stack, image], 1))


def appearance_value(real: torch.Tensor, thumb: int) -> torch.Tensor:
    """The memory's value for real crops (B, 3, S, S) in [-1, 1]: their ``thumb``² colour thumbnail, flattened.

    A fixed descriptor, not a learned one: no pretrained identity network is available offline, and a value
    that changes while training would make the memory's stored values stale.
    """
    return F.adaptive_avg_pool2d(real, thumb).flatten(1)


def mask_tv(mask: torch.Tensor) -> torch.Tensor:
    """Total variation of the attention mask (keeps it in smooth regions)."""
    return (mask[..., 1:, :] - mask[..., :-1, :]).abs().mean() + (mask[..., :, 1:] - mask[..., :, :-1]).abs().mean()
