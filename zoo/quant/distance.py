"""Squared Euclidean distances between rows and codes, in the summation orders of the official code bases."""

from __future__ import annotations

from torch import Tensor

__all__ = ["DISTANCE_FORMS", "squared_distances"]

DISTANCE_FORMS = ("taming", "encodec")


def squared_distances(x: Tensor, codes: Tensor, form: str = "taming", codes_sq: Tensor | None = None) -> Tensor:
    """`[N, D] x [C, D] -> [N, C]` squared distances `||x||^2 + ||e||^2 - 2 x.e`.

    `form` fixes the floating-point summation order, which only matters for bit-exact ids on near-ties:
    "taming" is `(||x||^2 + ||e||^2) - 2 x.e` (taming VQGAN, LlamaGen, GigaTok, TokenFlow, SEED, KARL);
    "encodec" is `(||x||^2 - 2 x.e) + ||e||^2` (EnCodec / WavTokenizer `EuclideanCodebook`).
    `codes_sq` may pass precomputed `||e||^2` `[C]`.
    """
    if form not in DISTANCE_FORMS:
        raise ValueError(f"distance form must be one of {DISTANCE_FORMS}, got {form!r}")
    x_sq = x.pow(2).sum(-1, keepdim=True)
    e_sq = codes.pow(2).sum(-1) if codes_sq is None else codes_sq
    dot = x @ codes.t()
    if form == "taming":
        return x_sq + e_sq - 2 * dot
    return x_sq - 2 * dot + e_sq
