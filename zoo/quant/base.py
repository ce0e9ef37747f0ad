"""`Quantizer`: the base class every `zoo.quant` quantiser derives from, plus small shared helpers."""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor, nn

from zoo.precision import full_precision
from zoo.quant.output import QuantizerOutput

__all__ = ["Quantizer", "fp32", "row_chunks", "straight_through"]

# Upper bound on the elements of one [rows, codebook] block (distances, neighbour search): 2**24 fp32 = 64 MiB.
_BLOCK_ELEMENTS = 2**24


def fp32(device: torch.device) -> Any:
    """A context that switches autocast off on `device`, so distances and rounding run in fp32
    (`zoo.precision.full_precision`, the one switch every family uses)."""
    return full_precision(device)


def straight_through(value: Tensor, source: Tensor) -> Tensor:
    """Forward: exactly `value` (detached); backward: identity to `source`.

    Written as `value + (source - source)` rather than the usual `source + (value - source)` so that the forward
    result is bit-identical to the code vector (e.g. `lookup(ids)`), with the same gradient.
    """
    return value.detach() + (source - source.detach())


def row_chunks(num_rows: int, row_size: int, max_elements: int = _BLOCK_ELEMENTS) -> list[slice]:
    """Slices over `num_rows` rows such that each block holds at most `max_elements` (at least one row)."""
    step = max(1, max_elements // max(1, row_size))
    return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


class Quantizer(nn.Module, abc.ABC):
    """Base class of every quantiser: a codebook of `codebook_size` codes of width `dim`.

    Subclasses implement `forward(z, mask=None) -> QuantizerOutput` for channels-last `z` `[..., dim]`,
    `embeddings()` and `lookup(ids)`. `neighbors(ids, k)` is provided here (exact search in code space, chunked
    over the queried ids only); subclasses change the metric by overriding `_neighbor_space`, or the whole
    distance with `_neighbor_context` / `_neighbor_distances`.
    """

    codebook_size: int
    dim: int
    _neighbor_block: int = _BLOCK_ELEMENTS  # elements of one [ids, codebook] distance block in `neighbors`

    @abc.abstractmethod
    def forward(self, z: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantise channels-last `z` `[..., dim]`; `mask` `[...]` (True = valid) excludes padding from updates."""

    @abc.abstractmethod
    def assign(self, z: Tensor) -> Tensor:
        """The ids of channels-last `z` `[..., dim]` -> LongTensor `[...]`: the one way from latents to ids.

        Side-effect free: no losses, no statistics, no EMA / k-means / restart updates, in training mode too; fp32
        under autocast; no autograd graph. `forward(z).ids` equals `assign(z)` for the same codebook state."""

    @abc.abstractmethod
    def embeddings(self) -> Tensor:
        """The code vectors `[codebook_size, dim]`, as `lookup` returns them."""

    @abc.abstractmethod
    def lookup(self, ids: Tensor) -> Tensor:
        """ids `[...]` -> code vectors `[..., dim]` (differentiable w.r.t. learnable codebooks)."""

    # ------------------------------------------------------------------ checks

    def _check_input(self, z: Tensor) -> None:
        if not isinstance(z, Tensor) or not z.is_floating_point():
            got = z.dtype if isinstance(z, Tensor) else type(z).__name__
            raise TypeError(f"{type(self).__name__} expects a floating-point tensor z [..., {self.dim}], got {got}")
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects channels-last z with last dim {self.dim}, got shape {tuple(z.shape)}; "
                "move the channel axis last (e.g. z.permute(0, 2, 3, 1) for [B, C, H, W])"
            )

    def _check_ids(self, ids: Tensor, size: int | None = None) -> None:
        size = self.codebook_size if size is None else size
        if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            got = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
            raise TypeError(f"{type(self).__name__} expects integer ids (torch.long), got {got}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise ValueError(
                f"{type(self).__name__}: ids must lie in [0, {size}), got range [{int(ids.min())}, {int(ids.max())}]"
            )

    @staticmethod
    def _flat_mask(mask: Tensor | None, shape: torch.Size) -> Tensor | None:
        """`mask` with shape `shape[:-1]` -> flat bool `[N]` (None stays None)."""
        if mask is None:
            return None
        if tuple(mask.shape) != tuple(shape[:-1]):
            raise ValueError(
                f"mask must have shape {tuple(shape[:-1])} (z without its last dim), got {tuple(mask.shape)}"
            )
        return mask.reshape(-1).to(torch.bool)

    # --------------------------------------------------------------- neighbours

    def neighbors(self, ids: Tensor, k: int) -> Tensor:
        """The `k` nearest codes of each id, the id itself first: ids `[...]` -> LongTensor `[..., k]`.

        Distances are computed only for the distinct queried ids, in chunks, so codebooks of 65536 codes and more
        are fine. Order: nearest first, and among the returned codes equal distances go to the lower id. FSQ
        distances are exact integers, so its result is fully deterministic, ties at the k-th place included.
        """
        self._check_ids(ids)
        if not isinstance(k, int) or not 1 <= k <= self.codebook_size:
            raise ValueError(f"k must be an int in [1, {self.codebook_size}], got {k!r}")
        flat = ids.reshape(-1)
        unique, inverse = torch.unique(flat, return_inverse=True)
        out = torch.empty(unique.numel(), k, dtype=torch.long, device=ids.device)
        with torch.no_grad(), fp32(ids.device):
            context = self._neighbor_context()
            for rows in row_chunks(unique.numel(), self.codebook_size, self._neighbor_block):
                query = unique[rows].to(self._neighbor_device(context))
                dist = self._neighbor_distances(context, query)
                low = torch.finfo(dist.dtype).min if dist.is_floating_point() else torch.iinfo(dist.dtype).min
                dist[torch.arange(query.numel(), device=dist.device), query] = low  # the id itself comes first
                values, index = dist.topk(k, dim=-1, largest=False, sorted=True)
                # deterministic order among equal distances: lower id first
                by_id = index.argsort(dim=-1, stable=True)
                index, values = index.gather(-1, by_id), values.gather(-1, by_id)
                index = index.gather(-1, values.argsort(dim=-1, stable=True))
                out[rows] = index.to(out.device)
        return out[inverse].reshape(*ids.shape, k)

    def _neighbor_space(self) -> Tensor:
        """Vectors `[codebook_size, D']` whose squared Euclidean distance is the neighbour metric."""
        return self.embeddings()

    def _neighbor_context(self) -> Any:
        space = self._neighbor_space().detach().float()
        return space, space.pow(2).sum(-1)

    @staticmethod
    def _neighbor_device(context: Any) -> torch.device:
        return context[0].device

    def _neighbor_distances(self, context: Any, query: Tensor) -> Tensor:
        space, sq = context
        return sq[query, None] + sq[None, :] - 2 * (space[query] @ space.t())

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}"
