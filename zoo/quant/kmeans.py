"""k-means codebook initialisation (the EnCodec / WavTokenizer `kmeans`, chunked so it fits in memory)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.quant.base import row_chunks
from zoo.quant.distance import squared_distances

__all__ = ["kmeans", "nearest_code", "sample_vectors"]


def sample_vectors(samples: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """`num` rows of `samples` `[N, D]`: without replacement when N >= num, else with replacement."""
    n = samples.shape[0]
    if n == 0:
        raise ValueError("cannot sample code vectors from an empty batch")
    if n >= num:
        index = torch.randperm(n, device=samples.device, generator=generator)[:num]
    else:
        index = torch.randint(0, n, (num,), device=samples.device, generator=generator)
    return samples[index]


def nearest_code(x: Tensor, codes: Tensor, form: str = "taming") -> Tensor:
    """Index of the nearest row of `codes` `[C, D]` for each row of `x` `[N, D]` (first index on ties), chunked."""
    codes_sq = codes.pow(2).sum(-1)
    ids = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for rows in row_chunks(x.shape[0], codes.shape[0]):
        ids[rows] = squared_distances(x[rows], codes, form, codes_sq).argmin(-1)
    return ids


@torch.no_grad()
def kmeans(
    samples: Tensor,
    num_clusters: int,
    num_iters: int = 10,
    spherical: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on `samples` `[N, D]` (fp32), started from random samples.

    Returns `(means [num_clusters, D], counts [num_clusters])`, the counts of the last assignment. Empty clusters
    keep their previous mean. `spherical` re-normalises the means each step (for l2-normalised codebooks).
    """
    samples = samples.float()
    means = sample_vectors(samples, num_clusters, generator).clone()
    counts = torch.zeros(num_clusters, device=samples.device)  # replaced by the first assignment
    for _ in range(num_iters):
        buckets = nearest_code(samples, means)
        counts = torch.bincount(buckets, minlength=num_clusters).float()
        sums = torch.zeros_like(means).index_add_(0, buckets, samples)
        new_means = sums / counts.clamp_min(1.0)[:, None]
        if spherical:
            new_means = F.normalize(new_means, dim=-1)
        means = torch.where((counts == 0)[:, None], means, new_means)
    if num_iters == 0:
        counts = torch.bincount(nearest_code(samples, means), minlength=num_clusters).float()
    return means, counts
