"""Discrete appearance tokens for TEASER (the `teaser-fsq` variants; the paper's tokens are continuous).

Each of the four appearance tokens `t_s` (`token_dim` values, s = 0 the coarsest) is quantised on its own:

    t_s --Linear--> G x d values --FSQ(levels)--> G codes (ids in [0, prod(levels))) --Linear--> t_s' (token_dim)

with d = len(levels) and G = `codes_per_token`. FSQ (https://arxiv.org/abs/2309.15505, `zoo.quant.FSQ`) bounds and
rounds each value, so there is no codebook to learn or collapse and no commitment loss; the straight-through
gradient trains the projections. A face gives `4 G` ids, scale-major (`ids[:, s * G + g]`); the generator sees
`t_s'`. Geometry (FLAME parameters, camera) stays continuous in `Tokens.meta`.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.quant import FSQ

__all__ = ["TokenQuantizer"]

NUM_SCALES = 4


class TokenQuantizer(nn.Module):
    """FSQ per appearance token (see the module docstring).

    Args:
        token_dim: width of each token.
        levels: FSQ levels per channel (e.g. [8, 5, 5, 5]: 1000 codes).
        codes_per_token: G, ids per token.
    """

    def __init__(self, token_dim: int, levels: list[int], codes_per_token: int = 1) -> None:
        super().__init__()
        if not isinstance(codes_per_token, int) or codes_per_token < 1:
            raise ValueError(f"fsq_codes_per_token must be a positive integer, got {codes_per_token!r}")
        self.quantizers = nn.ModuleList([FSQ(list(levels)) for _ in range(NUM_SCALES)])
        self.codes_per_token = codes_per_token
        self.code_dim = self.quantizers[0].dim
        width = codes_per_token * self.code_dim
        self.down = nn.ModuleList([nn.Linear(token_dim, width) for _ in range(NUM_SCALES)])
        self.up = nn.ModuleList([nn.Linear(width, token_dim) for _ in range(NUM_SCALES)])

    @property
    def codebook_size(self) -> int:
        return self.quantizers[0].codebook_size

    @property
    def num_ids(self) -> int:
        return NUM_SCALES * self.codes_per_token

    def _groups(self, tokens: torch.Tensor, scale: int) -> torch.Tensor:
        return self.down[scale](tokens[:, scale]).view(tokens.shape[0], self.codes_per_token, self.code_dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Continuous tokens `[B, 4, T]` -> (quantised tokens `[B, 4, T]` with straight-through gradients, ids
        `[B, 4 G]`, stats: mean usage and perplexity over the four scales)."""
        outs, ids, usage, perplexity = [], [], [], []
        for s, quantizer in enumerate(self.quantizers):
            q = quantizer(self._groups(tokens, s))
            outs.append(self.up[s](q.quantized.flatten(1)))
            ids.append(q.ids)
            usage.append(q.stats["usage"])
            perplexity.append(q.stats["perplexity"])
        stats = {"usage": torch.stack(usage).mean(), "perplexity": torch.stack(perplexity).mean()}
        return torch.stack(outs, 1), torch.cat(ids, 1), stats

    @torch.no_grad()
    def assign(self, tokens: torch.Tensor) -> torch.Tensor:
        """Ids `[B, 4 G]` of continuous tokens `[B, 4, T]` (`FSQ.assign`: side-effect free, fp32)."""
        return torch.cat([q.assign(self._groups(tokens, s)) for s, q in enumerate(self.quantizers)], 1)

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids `[B, 4 G]` -> FSQ code vectors `[B, 4 G, d]` (the grid values the projections read)."""
        g = self.codes_per_token
        return torch.cat([q.lookup(ids[:, s * g:(s + 1) * g]) for s, q in enumerate(self.quantizers)], 1)

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids `[B, 4 G]` -> the tokens the generator takes `[B, 4, T]`."""
        codes = self.codes(ids)
        g = self.codes_per_token
        weight = self.up[0].weight
        return torch.stack([self.up[s](codes[:, s * g:(s + 1) * g].flatten(1).to(weight.dtype))
                            for s in range(NUM_SCALES)], 1)
