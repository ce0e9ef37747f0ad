"""Latent perturbation of "Robust Latent Matters" (Qiu et al. 2025, https://arxiv.org/abs/2503.08354).

Each id is, with probability `alpha`, replaced by a uniform pick among the `delta` nearest codes of its quantiser
(the id itself included, so the expected change rate is alpha * (delta - 1) / delta). Used as a training
augmentation (`perturb_batch`, RobustTok) and, through `zoo.metrics.pfid`, for pFID. Works for every quantiser
through `Quantizer.neighbors`, implicit codebooks included (FSQ: nearest grid points).
"""

from __future__ import annotations

import torch
from torch import Tensor

from zoo.quant.base import Quantizer

__all__ = ["check_rate", "perturb_batch", "perturb_ids"]


def check_rate(alpha: float, delta: int) -> None:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (per-token replacement probability) must be in [0, 1], got {alpha}")
    if isinstance(delta, bool) or not isinstance(delta, int) or delta < 1:
        raise ValueError(f"delta (number of nearest codes to pick from) must be an int >= 1, got {delta!r}")


def perturb_ids(
    ids: Tensor,
    quantizer: Quantizer,
    alpha: float,
    delta: int,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """A copy of `ids` where each id is, with probability `alpha`, a uniform pick among its
    `min(delta, codebook_size)` nearest codes (itself included).

    Args:
        ids: LongTensor of any shape holding ids of `quantizer`.
        quantizer: any `zoo.quant.Quantizer` (its `neighbors(ids, k)` is used).
        generator: makes the draw reproducible; it must live on `ids.device`.
        mask: optional bool tensor like `ids`; False positions (padding) are never changed.
    """
    check_rate(alpha, delta)
    k = min(delta, int(quantizer.codebook_size))
    if alpha == 0 or k == 1 or ids.numel() == 0:
        return ids.clone()
    neighbors = quantizer.neighbors(ids, k)
    if neighbors.shape != (*ids.shape, k):
        raise ValueError(f"{type(quantizer).__name__}.neighbors(ids, {k}) returned shape {tuple(neighbors.shape)}, "
                         f"expected {(*ids.shape, k)}")
    choice = torch.randint(k, ids.shape, generator=generator, device=ids.device)
    candidate = neighbors.gather(-1, choice.unsqueeze(-1)).squeeze(-1).to(ids.dtype)
    replace = torch.rand(ids.shape, generator=generator, device=ids.device) < alpha
    if mask is not None:
        replace &= mask.to(ids.device, torch.bool)
    return torch.where(replace, candidate, ids)


def perturb_batch(
    ids: Tensor,
    quantizer: Quantizer,
    beta: float,
    alpha: float,
    delta: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training option: perturb only the first floor(beta * B) samples of an id batch `[B, ...]` (as the paper's
    `add_perturbation`); the rest are returned unchanged. Apply it after the VQ / commitment losses so that it only
    affects the reconstruction, perceptual and GAN losses (paper README).
    """
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta (fraction of the batch to perturb) must be in [0, 1], got {beta}")
    count = int(ids.shape[0] * beta)
    out = ids.clone()
    if count:
        out[:count] = perturb_ids(ids[:count], quantizer, alpha, delta, generator)
    return out
