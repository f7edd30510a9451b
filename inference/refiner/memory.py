"""The refiner's memory: keys from rendered frames, values from the real frames' appearance.

The scheme of Yi et al. 2020 (after Kaiser et al.'s rare-event memory and MemoPainter):
- ``read``: the value of the key most similar to the query (top-1, cosine);
- ``triplet_loss``: the threshold triplet loss that trains the key encoder: among a query's nearest keys,
  the nearest whose value is *near* the query's true value (RMS distance under ``threshold``) must be more
  similar than the nearest whose value is not, by ``margin``;
- ``update``: when the top-1 slot's value is near the true value, its key moves toward the query (and the
  slot is refreshed); otherwise the oldest slot is overwritten with (query, value).
Keys, values and ages are tensors saved with the refiner (a ``weights_only`` dict).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

THRESHOLD = 0.08  # RMS distance of two appearance values (colour in [-1, 1]) below which they are "the same"
MARGIN = 0.1
NEIGHBOURS = 16


class Memory:
    def __init__(self, size: int, key_dim: int, value_dim: int, threshold: float = THRESHOLD,
                 margin: float = MARGIN, generator: torch.Generator | None = None):
        self.keys = F.normalize(torch.randn(size, key_dim, generator=generator), dim=1)
        self.values = torch.zeros(size, value_dim)
        self.ages = torch.full((size,), 1e9)  # empty slots are the oldest
        self.threshold, self.margin = float(threshold), float(margin)

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def filled(self) -> int:
        return int((self.ages < 1e9).sum())

    def value_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """RMS distance between every value in ``a`` (N, D) and every value in ``b`` (M, D)."""
        return torch.cdist(a, b) / (a.shape[1] ** 0.5)

    def nearest(self, query: torch.Tensor) -> torch.Tensor:
        """Index of the most similar key for each query (B, key_dim)."""
        return (query.detach() @ self.keys.T).argmax(dim=1)

    def read(self, query: torch.Tensor) -> torch.Tensor:
        """Top-1 read: the values (B, value_dim) of the keys nearest the queries."""
        return self.values[self.nearest(query)]

    def triplet_loss(self, query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The threshold triplet loss for queries (B, key_dim, with grad) and their true values (B, value_dim)."""
        if self.filled() < 2:
            return query.sum() * 0.0
        live = self.ages < 1e9
        keys, values = self.keys[live], self.values[live]
        sim = query @ keys.T  # (B, M)
        k = min(NEIGHBOURS, keys.shape[0])
        top_sim, top = sim.topk(k, dim=1)
        near = self.value_distance(value.detach(), values)[torch.arange(len(query))[:, None], top] < self.threshold
        has_pos, has_neg = near.any(dim=1), (~near).any(dim=1)
        ok = has_pos & has_neg
        if not bool(ok.any()):
            return query.sum() * 0.0
        big = torch.finfo(top_sim.dtype).max
        pos = torch.where(near, top_sim, torch.full_like(top_sim, -big)).max(dim=1).values
        neg = torch.where(~near, top_sim, torch.full_like(top_sim, -big)).max(dim=1).values
        return F.relu(neg[ok] - pos[ok] + self.margin).mean()

    @torch.no_grad()
    def update(self, query: torch.Tensor, value: torch.Tensor) -> None:
        query, value = query.detach(), value.detach()
        self.ages += 1
        for q, v in zip(query, value):
            i = int((q @ self.keys.T).argmax())
            if self.ages[i] < 1e9 and float(self.value_distance(v[None], self.values[i][None])) < self.threshold:
                self.keys[i] = F.normalize(self.keys[i] + q, dim=0)
                self.ages[i] = 0
            else:
                j = int(self.ages.argmax())
                self.keys[j], self.values[j], self.ages[j] = q, v, 0

    def state(self) -> dict:
        return {"keys": self.keys.clone(), "values": self.values.clone(), "ages": self.ages.clone(),
                "threshold": self.threshold, "margin": self.margin}

    @classmethod
    def from_state(cls, state: dict) -> Memory:
        keys, values = state["keys"], state["values"]
        mem = cls(keys.shape[0], keys.shape[1], values.shape[1], float(state["threshold"]), float(state["margin"]))
        mem.keys, mem.values, mem.ages = keys.float(), values.float(), state["ages"].float()
        return mem
