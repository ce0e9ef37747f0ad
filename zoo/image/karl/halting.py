"""Halting bookkeeping: which latent tokens are active, and the compact `Tokens` layout of the active ones.

A token halts when its halting probability is above 0.75 (strict, the official `prepare_decoder_latents` default;
the yaml's `dynamic_halting_threshold` is not used by the official code). Halted tokens are scattered, not a
suffix, so `Tokens` keeps the active ids first, in their original order, and `meta["positions"]` their original
token positions (which the decoder's latent position table needs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["HALT_THRESHOLD", "budgets", "compact_active"]

HALT_THRESHOLD = 0.75


def budgets(num_tokens: int | Sequence[int] | torch.Tensor | None, batch: int, default: int, limit: int) -> list[int]:
    """`num_tokens` (None, one int, or one per image) -> a budget per image in [1, limit]."""
    if num_tokens is None:
        values = [default] * batch
    elif isinstance(num_tokens, bool):
        raise TypeError("num_tokens must be an int or one int per image, got a bool")
    elif isinstance(num_tokens, int):
        values = [num_tokens] * batch
    else:
        tensor = torch.as_tensor(num_tokens)
        if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
            raise TypeError(f"num_tokens must be whole numbers, got {tensor.tolist()}")
        values = [int(v) for v in tensor.flatten().tolist()]
        if len(values) != batch:
            raise ValueError(f"num_tokens needs one value per image ({batch}), got {len(values)}")
    bad = [v for v in values if not 1 <= v <= limit]
    if bad:
        raise ValueError(f"num_tokens must lie in [1, {limit}] (the latent token table), got {bad}")
    return values


def compact_active(ids: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids `[B, T]` and bool `active` `[B, T]` -> (ids with the active ones first in original order and 0 after,
    their original positions (0 after), lengths `[B]`)."""
    order = torch.sort((~active).to(torch.uint8), dim=1, stable=True).indices
    lengths = active.sum(1)
    valid = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
    compact = ids.gather(1, order).masked_fill(~valid, 0)
    return compact, order.masked_fill(~valid, 0), lengths
