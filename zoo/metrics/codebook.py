"""Codebook usage over a whole evaluation set: fraction of codes used, perplexity and entropy of the code histogram.

Per-batch usage (what quantisers report in `stats`) overstates collapse on small batches; these counts run over
the whole set and add across processes.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from zoo.api import Codebook, Tokens

__all__ = ["CodebookUsage", "usage_from_counts"]


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Histogram `[size]` -> usage (fraction of codes hit), perplexity exp(H), entropy H (bits), H / log2(size)."""
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        raise ValueError("no tokens were counted")
    p = counts / total
    nonzero = p[p > 0]
    entropy_nats = float(-(nonzero * nonzero.log()).sum())
    size = counts.numel()
    return {
        "usage": float((counts > 0).double().mean()),
        "perplexity": math.exp(entropy_nats),
        "entropy_bits": entropy_nats / math.log(2),
        "normalized_entropy": entropy_nats / math.log(size) if size > 1 else 0.0,
        "codebook_size": size,
        "num_tokens": int(total),
    }


class CodebookUsage:
    """Accumulate id histograms per codebook of a tokenizer (`tok.codebooks`), over valid positions only.

    Ids `[B, N, K]` with one codebook are pooled into it; with K codebooks, column k counts for codebook k
    (the rule of `Tokenizer.check_tokens`).
    """

    def __init__(self, codebooks: Sequence[Codebook], device: str | torch.device = "cpu") -> None:
        if not codebooks:
            raise ValueError("CodebookUsage needs at least one Codebook")
        self.names = [book.name for book in codebooks]
        self.counts = [torch.zeros(book.size, dtype=torch.float64, device=device) for book in codebooks]

    def update(self, tokens: Tokens) -> None:
        ids, valid = tokens.ids, tokens.valid_mask()
        if ids.dim() == 2:
            columns = [(0, ids[valid])]
        elif len(self.counts) == 1:
            columns = [(0, ids[valid].reshape(-1))]
        elif len(self.counts) == ids.shape[-1]:
            columns = [(k, ids[..., k][valid]) for k in range(ids.shape[-1])]
        else:
            raise ValueError(f"ids have K={ids.shape[-1]} columns but there are {len(self.counts)} codebooks")
        for k, column in columns:
            counts = self.counts[k]
            counts += torch.bincount(column.reshape(-1).to(counts.device), minlength=counts.numel()).double()

    def reduce(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "CodebookUsage":
        """Sum the histograms across processes, e.g. `fn = lambda t: accelerator.reduce(t, "sum")`."""
        self.counts = [fn(c) for c in self.counts]
        return self

    def compute(self) -> dict:
        """`usage`, `perplexity`, `entropy_bits`, `normalized_entropy` (means over codebooks when there are
        several, each listed under `codebooks`)."""
        per_book = [{"name": name, **usage_from_counts(c.cpu())} for name, c in zip(self.names, self.counts)]
        keys = ("usage", "perplexity", "entropy_bits", "normalized_entropy")
        out = {key: sum(book[key] for book in per_book) / len(per_book) for key in keys}
        if len(per_book) > 1:
            out["codebooks"] = per_book
        else:
            out["codebook_size"] = per_book[0]["codebook_size"]
            out["num_tokens"] = per_book[0]["num_tokens"]
        return out
