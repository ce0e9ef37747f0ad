"""How a batch runs: one item at a time where a batched call is slower per item (CPU inference)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["per_item_on_cpu"]


def per_item_on_cpu(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`fn(x)` for a batch `x` `[B, ...]` whose items `fn` treats independently; on a CPU without autograd, `fn` runs
    on one item at a time and the outputs are concatenated.

    On a CPU the full-resolution activations of a batch leave the cache, and the elementwise layers between the
    convolutions (norms, activations) become memory-bound: KARL's VQGAN encoder at 128 px runs 0.58x as fast per
    image at batch 8 as on single images, one thread (docs/performance.md, "Batching"). With autograd on (training)
    or on another device the batch runs whole. The result equals the batched call up to float rounding, and equals
    single-item calls exactly.
    """
    if x.device.type != "cpu" or torch.is_grad_enabled() or x.shape[0] <= 1:
        return fn(x)
    return torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])
