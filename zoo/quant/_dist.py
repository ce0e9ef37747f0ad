"""Keep codebook buffers identical across data-parallel workers (no-ops when torch.distributed is not running)."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce_sum_", "broadcast_", "is_distributed"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum `tensor` over workers, in place (EMA statistics: code counts and code sums)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Copy rank `src`'s `tensor` to every worker, in place (k-means centroids, restart samples)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor
