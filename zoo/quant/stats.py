"""Codebook usage statistics of one batch: `usage` and `perplexity`."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["code_counts", "code_stats"]


def code_counts(ids: Tensor, codebook_size: int, mask: Tensor | None = None) -> Tensor:
    """Histogram `[codebook_size]` (fp32) of `ids`, counting only positions where `mask` is True."""
    flat = ids.reshape(-1)
    if mask is not None:
        flat = flat[mask.reshape(-1)]
    return torch.bincount(flat, minlength=codebook_size).float()


@torch.no_grad()
def code_stats(ids: Tensor, codebook_size: int, mask: Tensor | None = None) -> dict[str, Tensor]:
    """`usage` = fraction of the codebook hit; `perplexity` = exp(entropy of the code histogram), in [1, size].

    Both are fp32 scalars without gradient; an empty batch gives usage 0 and perplexity 1.
    """
    counts = code_counts(ids, codebook_size, mask)
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum()
    return {"usage": (counts > 0).float().sum() / codebook_size, "perplexity": entropy.exp()}
