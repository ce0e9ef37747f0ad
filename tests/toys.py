"""Test helpers shared by the test modules (imported as `toys`: pytest puts `tests/` on `sys.path`)."""

from __future__ import annotations

import torch
from torch import nn


class ToyTable(nn.Module):
    """A small explicit codebook (`weight` `[C, D]`, initial values given) with the quantiser interface
    `zoo.Codebook` needs, plus `nearest` for toy encoders."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.codebook_size, self.dim = weight.shape

    def embeddings(self) -> torch.Tensor:
        return self.weight

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids]

    def neighbors(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cdist(self.weight[ids], self.weight).topk(k, largest=False).indices

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """ids `[B, N]` of the codes nearest to `z` `[B, N, D]`."""
        return torch.cdist(z, self.weight[None].expand(len(z), -1, -1)).argmin(-1)
