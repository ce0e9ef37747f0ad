"""What `Tokens.ids` and `codebooks` mean for TEASER, whose tokens are continuous.

TEASER has no quantiser: an image gives four continuous `token_dim` vectors (coarse to fine) plus FLAME parameters.
`zoo.Tokens` needs integer ids, so a TEASER `Tokens` carries:

* `ids` `[B, 4]` = `[0, 1, 2, 3]` in every row: the *slot* of each token (its scale, 0 the coarsest), not a code.
  They say where each vector sits and nothing about its value;
* the values in `meta["tokens"]` `[B, 4, token_dim]` (and the FLAME parameters in the other meta entries).

`codebooks` is one `Codebook` over `ScaleSlots`: size 4 (the slots), dim `token_dim`. It has no code table, so
`embeddings()`, `lookup()` and `neighbors()` raise `ContinuousTokensError`; `tok.embed(tokens)` returns the
continuous vectors themselves (`meta["tokens"]`), which is what a model consuming TEASER tokens should take.
Discrete face tokens (real ids, a real codebook) are the job of the `teaser-fsq` variant (FSQ per token).
"""

from __future__ import annotations

import torch

__all__ = ["NUM_SLOTS", "ContinuousTokensError", "ScaleSlots"]

NUM_SLOTS = 4


class ContinuousTokensError(TypeError):
    """Asked for a code table that a continuous tokenizer does not have."""


class ScaleSlots:
    """The `Codebook` view of TEASER's four continuous token slots (see the module docstring)."""

    codebook_size = NUM_SLOTS

    def __init__(self, token_dim: int) -> None:
        self.dim = token_dim

    def _refuse(self, what: str) -> ContinuousTokensError:
        return ContinuousTokensError(
            f"TEASER's tokens are continuous {self.dim}-d vectors with no code table, so the codebook has no "
            f"{what}; the ids only name the 4 scale slots. Take the vectors from tok.embed(tokens) (= "
            "tokens.meta['tokens']); a discrete variant (FSQ per token) has real codes"
        )

    def embeddings(self) -> torch.Tensor:
        raise self._refuse("embeddings")

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        raise self._refuse("lookup")

    def neighbors(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        raise self._refuse("neighbours")
