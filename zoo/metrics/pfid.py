"""pFID of "Robust Latent Matters" (Qiu et al. 2025, https://arxiv.org/abs/2503.08354): token perturbation over a
tokenizer's codebooks (the perturbation itself lives in `zoo.quant.perturb`, beside the quantisers).

Each token is, with probability `alpha`, replaced by a uniform pick among the `delta` nearest entries of its
codebook (the token itself included, so the expected change rate is alpha * (delta - 1) / delta). Decoding the
perturbed tokens simulates the sampling errors of a generator; pFID is the FID of those decodes against the
originals. The paper's code perturbs only a fraction beta of each training batch (README: alpha=0.5, beta=0.1,
delta=100); `perturb_batch` does that for every VQ family through the `Codebook.neighbors` contract, which also
covers implicit codebooks (FSQ: nearest grid points).
"""

from __future__ import annotations

from typing import Sequence

import torch

from zoo.api import Codebook, Tokens
from zoo.quant import perturb as _quant

__all__ = [
    "PFID_ALPHA",
    "PFID_DELTA",
    "change_rate",
    "count_changes",
    "expected_change_rate",
    "perturb_batch",
    "perturb_ids",
    "perturb_tokens",
]

# Defaults for pFID. The paper publishes no evaluation alpha/delta (its repo only has the training README values
# alpha=0.5, delta=100), so we use those and record them with every number.
PFID_ALPHA = 0.5
PFID_DELTA = 100


def expected_change_rate(alpha: float, delta: int, codebook_size: int | None = None) -> float:
    """alpha * (k - 1) / k with k = min(delta, codebook_size): the fraction of ids that change on average."""
    k = delta if codebook_size is None else min(delta, codebook_size)
    return float(alpha) * (k - 1) / k


def perturb_ids(
    ids: torch.Tensor,
    codebook: Codebook,
    alpha: float,
    delta: int,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`zoo.quant.perturb_ids` for a tokenizer's `Codebook` (`tok.codebooks[k]`)."""
    return _quant.perturb_ids(ids, codebook.quantizer, alpha, delta, generator, mask)


def _columns(tokens: Tokens, codebooks: Sequence[Codebook]) -> list[tuple[int | None, Codebook]]:
    """Pair each id column with its codebook, with the same rule as `Tokenizer.check_tokens`."""
    ids = tokens.ids
    if not codebooks:
        raise ValueError("perturb_tokens needs at least one Codebook (tokenizer.codebooks)")
    if ids.dim() == 2:
        return [(None, codebooks[0])]
    depth = ids.shape[-1]
    if len(codebooks) not in (1, depth):
        raise ValueError(f"ids have K={depth} parallel columns but {len(codebooks)} codebooks were given")
    return [(k, codebooks[k] if len(codebooks) > 1 else codebooks[0]) for k in range(depth)]


def perturb_tokens(
    tokens: Tokens,
    codebooks: Sequence[Codebook] | Codebook,
    alpha: float = PFID_ALPHA,
    delta: int = PFID_DELTA,
    generator: torch.Generator | None = None,
) -> Tokens:
    """`perturb_ids` over every column of `tokens` (`[B, N]` or `[B, N, K]`), leaving padding untouched.

    `codebooks` is `tok.codebooks`: one codebook for all columns, or one per column K.
    """
    if isinstance(codebooks, Codebook):
        codebooks = [codebooks]
    valid = tokens.valid_mask()
    ids = tokens.ids.clone()
    for column, book in _columns(tokens, codebooks):
        if column is None:
            ids = perturb_ids(ids, book, alpha, delta, generator, mask=valid)
        else:
            ids[..., column] = perturb_ids(ids[..., column], book, alpha, delta, generator, mask=valid)
    return Tokens(ids, tokens.lengths, tokens.layout, dict(tokens.meta))


def perturb_batch(
    ids: torch.Tensor,
    codebook: Codebook,
    beta: float,
    alpha: float,
    delta: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`zoo.quant.perturb_batch` for a tokenizer's `Codebook`: perturb the first floor(beta * B) samples."""
    return _quant.perturb_batch(ids, codebook.quantizer, beta, alpha, delta, generator)


def count_changes(before: Tokens | torch.Tensor, after: Tokens | torch.Tensor) -> tuple[int, int]:
    """(number of ids that differ, number of ids compared); padding of `Tokens` is not compared."""
    a = before.ids if isinstance(before, Tokens) else before
    b = after.ids if isinstance(after, Tokens) else after
    mask = torch.ones_like(a, dtype=torch.bool)
    if isinstance(before, Tokens):
        valid = before.valid_mask()
        mask = (valid.unsqueeze(-1) if a.dim() == 3 else valid).expand_as(a)
    return int(((a != b) & mask).sum()), int(mask.sum())


def change_rate(before: Tokens | torch.Tensor, after: Tokens | torch.Tensor) -> float:
    """Fraction of (valid) ids that differ between two token batches."""
    changed, total = count_changes(before, after)
    return changed / total if total else 0.0
