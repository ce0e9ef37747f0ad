"""`FSQ`: finite scalar quantisation (Mentzer et al. 2023, https://arxiv.org/abs/2309.15505)."""

from __future__ import annotations

import math
from functools import reduce

import torch
from torch import Tensor

from zoo.quant.base import Quantizer, fp32, straight_through
from zoo.quant.output import QuantizerOutput
from zoo.quant.stats import code_stats

__all__ = ["FSQ"]


class FSQ(Quantizer):
    """Finite scalar quantisation: each channel is bounded and rounded to one of `levels[i]` values.

    The codebook is implicit: the grid of `prod(levels)` points; there are no parameters and no losses. The
    numerics are those of the official FlexTok / vector-quantize-pytorch FSQ, in fp32:

    1. `half_l = (L - 1)(1 + eps) / 2`, `offset = 0.5` for even L else 0, `shift = atanh(offset / half_l)`;
    2. `bounded = tanh(z + shift) * half_l - offset`;
    3. `code = round(bounded) / (L // 2)` (torch round: half to even; straight-through gradient), so codes lie in
       [-1, 1] (even L: {-1, ..., 1 - 2/L}, asymmetric);
    4. `id = sum_i digit_i * basis_i` with `digit_i = code_i * (L_i // 2) + L_i // 2` and
       `basis = cumprod([1] + levels[:-1])`: the first channel is the least-significant digit, id 0 is the
       all-minimum code.

    Args:
        levels: number of values per channel (each >= 2); `dim = len(levels)`. FlexTok: [8, 8, 8, 5, 5, 5].
        eps: the bound margin (1e-3 in the reference code).
        drop_quant_p: in training, the probability per sample (dim 0 of z) of passing the bounded values without
            rounding (FlexTok `drop_quant_p`); ids are always those of the rounded values.

    Buffers `_levels`, `_basis` are non-persistent (nothing goes into the state dict, as in FlexTok).
    """

    _levels: Tensor
    _basis: Tensor
    _neighbor_block = 2**22  # int64 keys and temporaries

    def __init__(self, levels: list[int], *, eps: float = 1e-3, drop_quant_p: float = 0.0) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"levels must be a non-empty list of ints >= 2, got {levels}")
        if not 0.0 <= drop_quant_p <= 1.0:
            raise ValueError(f"drop_quant_p must be in [0, 1], got {drop_quant_p}")
        self.levels = levels
        self.eps = eps
        self.drop_quant_p = drop_quant_p
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        if self.codebook_size >= 2**62:
            raise ValueError(f"levels {levels} give {self.codebook_size} codes, more than int64 ids can hold")
        # int32 like the reference, so `(levels - 1) * (1 + eps) / 2` rounds the same way
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)

    # ----------------------------------------------------------------- numerics

    def bound(self, z: Tensor) -> Tensor:
        """Squash fp32 `z` `[..., dim]` into `(-L/2 - margin, L/2 + margin)` per channel."""
        levels = self._levels.to(z.device)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        return (z + shift).tanh() * half_l - offset

    def codes_to_digits(self, codes: Tensor) -> Tensor:
        """Codes `[..., dim]` on the grid -> integer digits `[..., dim]` in `[0, L_i)`."""
        half_width = (self._levels // 2).to(codes.device)
        return torch.round(codes.float() * half_width + half_width).long()

    def digits_to_ids(self, digits: Tensor) -> Tensor:
        return (digits * self._basis.to(digits.device)).sum(-1)

    def ids_to_digits(self, ids: Tensor) -> Tensor:
        return (ids.long()[..., None] // self._basis.to(ids.device)) % self._levels.to(ids.device)

    def digits_to_codes(self, digits: Tensor) -> Tensor:
        half_width = (self._levels // 2).to(digits.device)
        return (digits - half_width) / half_width  # int / int -> fp32, as FlexTok `indices_to_embedding`

    def codes_to_ids(self, codes: Tensor) -> Tensor:
        """Codes `[..., dim]` -> LongTensor ids `[...]` (the inverse of `lookup`)."""
        if codes.shape[-1] != self.dim:
            raise ValueError(f"codes must have last dim {self.dim}, got shape {tuple(codes.shape)}")
        return self.digits_to_ids(self.codes_to_digits(codes))

    # -------------------------------------------------------------- interface

    def forward(self, z: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantise `z` `[..., dim]`; `mask` only restricts the usage statistics."""
        self._check_input(z)
        m = self._flat_mask(mask, z.shape)
        with fp32(z.device):
            bounded = self.bound(z.float())
            rounded = bounded.round()
            digits = (rounded + (self._levels // 2).to(z.device)).long()
            rounded = straight_through(rounded, bounded)
            if self.training and self.drop_quant_p > 0 and z.ndim > 1:
                keep = torch.rand(z.shape[0], device=z.device) < self.drop_quant_p
                keep = keep.view(-1, *([1] * (z.ndim - 1)))
                rounded = torch.where(keep, bounded, rounded)
            quantized = rounded / (self._levels // 2).to(z.device)
            ids = self.digits_to_ids(digits)
            stats = code_stats(ids, self.codebook_size, m)
        return QuantizerOutput(quantized.to(z.dtype), ids, {}, stats)

    @torch.no_grad()
    def assign(self, z: Tensor) -> Tensor:
        """Ids `[...]` of the rounded `z` `[..., dim]` (training-time `drop_quant_p` never applies here)."""
        self._check_input(z)
        with fp32(z.device):
            digits = (self.bound(z.float()).round() + (self._levels // 2).to(z.device)).long()
        return self.digits_to_ids(digits)

    def embeddings(self) -> Tensor:
        """The implicit codebook `[prod(levels), dim]` (built on demand)."""
        return self.lookup(torch.arange(self.codebook_size, device=self._levels.device))

    def lookup(self, ids: Tensor) -> Tensor:
        self._check_ids(ids)
        return self.digits_to_codes(self.ids_to_digits(ids))

    # ------------------------------------------------- neighbours (exact, integer)

    def _neighbor_context(self) -> tuple[Tensor, Tensor]:
        # squared distance in code space = sum_i (d_digit_i / h_i)^2, h_i = L_i // 2; scaled to integers by
        # lcm(h_i^2) and made unique by `* C + id`, so the order (nearest, then lower id) is exact.
        half = [level // 2 for level in self.levels]
        scale = reduce(math.lcm, [h * h for h in half])
        weights = torch.tensor([scale // (h * h) for h in half], dtype=torch.long, device=self._levels.device)
        max_key = (int(sum(w * (lv - 1) ** 2 for w, lv in zip(weights.tolist(), self.levels))) + 1) * self.codebook_size
        if max_key >= 2**63:
            raise ValueError(f"FSQ neighbours of levels {self.levels} overflow int64 distance keys")
        all_digits = self.ids_to_digits(torch.arange(self.codebook_size, device=self._levels.device))
        return all_digits, weights

    def _neighbor_distances(self, context: tuple[Tensor, Tensor], query: Tensor) -> Tensor:
        all_digits, weights = context
        query_digits = all_digits[query]
        key = torch.zeros(query.numel(), self.codebook_size, dtype=torch.long, device=query.device)
        for i in range(self.dim):
            key += weights[i] * (query_digits[:, i, None] - all_digits[None, :, i]).pow(2)
        return key * self.codebook_size + torch.arange(self.codebook_size, device=query.device)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, codebook_size={self.codebook_size}"
