"""Multi-scale residual quantisation on a 2D feature map (VAR, https://arxiv.org/abs/2404.02905; TokenFlow,
https://arxiv.org/abs/2412.03069), around any `zoo.quant` quantiser.

For each scale s of a schedule ending at the map's side S (coarse to fine):

    r_s   = area-resize(residual, s x s)          # adaptive average pooling (bins overlap when s does not divide S)
    q_s   = quantiser(r_s)                         # ids [B, s*s], row-major
    up_s  = bicubic-resize(q_s, S x S)            # PyTorch bicubic, A = -0.75, align_corners=False
    final = final + up_s;  residual = residual - up_s

Ids are concatenated scale by scale (`scale_offsets`); any prefix of whole scales decodes (`whole_scales`).
There is no phi / `quant_resi` convolution (TokenFlow's `using_shared_conv` is False). Distances, resizes and
sums run in fp32.

    ids = multiscale_assign(vq, h, [1, 2, 4, 8])              # side-effect free: what every encode uses
    out = multiscale_quantize(vq, h, [1, 2, 4, 8])            # training: straight-through map + averaged losses
    quant = multiscale_codes(vq.lookup, ids, [1, 2, 4], 8)    # ids of a prefix of scales -> summed [B, D, 8, 8]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.quant.base import Quantizer, fp32

__all__ = [
    "MultiScaleOutput",
    "check_scales",
    "multiscale_assign",
    "multiscale_codes",
    "multiscale_quantize",
    "scale_offsets",
    "whole_scales",
]


def check_scales(scales: Sequence[int], side: int | None = None) -> list[int]:
    """Validate a schedule: positive, strictly increasing ints, ending at `side` when given."""
    out = [int(s) for s in scales]
    if not out or any(s < 1 for s in out) or any(b <= a for a, b in pairwise(out)):
        raise ValueError(f"scales must be positive and strictly increasing, got {list(scales)}")
    if side is not None and out[-1] != side:
        raise ValueError(f"the last scale must equal the feature map side {side}, got scales {out}")
    return out


def scale_offsets(scales: Sequence[int]) -> list[int]:
    """Start of each scale's ids and the total: `[0, s0^2, s0^2 + s1^2, ..., N]`."""
    offsets = [0]
    for s in scales:
        offsets.append(offsets[-1] + int(s) * int(s))
    return offsets


def whole_scales(num_tokens: int, scales: Sequence[int]) -> list[int]:
    """The scales whose ids make up exactly `num_tokens` (a prefix of whole scales); a clear error otherwise."""
    offsets = scale_offsets(scales)
    if num_tokens in offsets[1:]:
        return list(scales[: offsets.index(num_tokens)])
    raise ValueError(
        f"{num_tokens} ids are not a prefix of whole scales of {list(scales)}; valid counts are {offsets[1:]} "
        "(cut or pad token sequences at scale boundaries, e.g. with encode(x, num_tokens=k))"
    )


def _area(x: Tensor, side: int) -> Tensor:
    return x if x.shape[-1] == side and x.shape[-2] == side else F.interpolate(x, size=(side, side), mode="area")


def _bicubic(x: Tensor, side: int) -> Tensor:
    return x if x.shape[-1] == side and x.shape[-2] == side else F.interpolate(
        x, size=(side, side), mode="bicubic", align_corners=False
    )


def _check_map(h: Tensor, quantizer: Quantizer, scales: Sequence[int]) -> list[int]:
    if h.dim() != 4 or h.shape[-1] != h.shape[-2]:
        raise ValueError(f"multi-scale quantisation needs a square map [B, D, S, S], got shape {tuple(h.shape)}")
    if h.shape[1] != quantizer.dim:
        raise ValueError(f"the map has {h.shape[1]} channels but the quantiser codes are {quantizer.dim}-d")
    return check_scales(scales)


@torch.no_grad()
def multiscale_assign(quantizer: Quantizer, h: Tensor, scales: Sequence[int]) -> Tensor:
    """Ids `[B, sum s^2]` of map `h` `[B, D, S, S]` for a schedule (a prefix of a full schedule gives the same ids
    as the full one's prefix). Uses `quantizer.assign` and `lookup`: no losses, statistics or updates."""
    scales = _check_map(h, quantizer, scales)
    side = h.shape[-1]
    with fp32(h.device):
        residual = h.float()
        ids = []
        for s in scales:
            z = _area(residual, s).permute(0, 2, 3, 1)
            idx = quantizer.assign(z)
            code = quantizer.lookup(idx).float().permute(0, 3, 1, 2)
            residual = residual - _bicubic(code, side)
            ids.append(idx.reshape(h.shape[0], s * s))
    return torch.cat(ids, dim=1)


def multiscale_codes(lookup: Callable[[Tensor], Tensor], ids: Tensor, scales: Sequence[int], side: int) -> Tensor:
    """Ids `[B, sum s^2]` of the given (prefix of) scales -> the summed code map `[B, D, side, side]` (fp32)."""
    scales = check_scales(scales)
    offsets = scale_offsets(scales)
    if ids.dim() != 2 or ids.shape[1] != offsets[-1]:
        raise ValueError(f"ids must be [B, {offsets[-1]}] for scales {scales}, got shape {tuple(ids.shape)}")
    total = None
    for s, start, end in zip(scales, offsets, offsets[1:]):
        code = lookup(ids[:, start:end]).float()
        grid = code.reshape(ids.shape[0], s, s, -1).permute(0, 3, 1, 2)
        up = _bicubic(grid, side)
        total = up if total is None else total + up
    return total


@dataclass
class MultiScaleOutput:
    """What `multiscale_quantize` returns.

    Attributes:
        quantized: `[B, D, S, S]` sum of the upsampled codes, straight-through to `h` (gradient flows to every
            scale's input).
        ids: `[B, sum s^2]` ids of the scales used.
        scales: the scales used (the schedule minus a dropped one, if any).
        losses: the quantiser's losses averaged over scales (unweighted).
        stats: the quantiser's scalar statistics averaged over scales, plus `usage_all` over all scales' ids.
    """

    quantized: Tensor
    ids: Tensor
    scales: list[int]
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)


def multiscale_quantize(
    quantizer: Quantizer,
    h: Tensor,
    scales: Sequence[int],
    drop_probability: float = 0.0,
    generator: torch.Generator | None = None,
) -> MultiScaleOutput:
    """Training pass: the residual loop through `quantizer(z)` (losses, straight-through gradients).

    The residual subtracts the detached upsampled codes (VAR / TokenFlow), so each scale's input gets the gradient
    of its own code only. With probability `drop_probability` one scale other than the first is skipped (TokenFlow
    scale dropout, p = 0.1 in training), drawn from `generator` (default: the global torch RNG).
    """
    scales = _check_map(h, quantizer, scales)
    if drop_probability > 0 and len(scales) > 1 and torch.rand((), generator=generator).item() < drop_probability:
        drop = 1 + int(torch.randint(len(scales) - 1, (), generator=generator))
        scales = scales[:drop] + scales[drop + 1:]
    side = h.shape[-1]
    with fp32(h.device):
        residual = h.float()
        final = torch.zeros_like(residual)
        ids, losses, stats = [], {}, {}
        for s in scales:
            out = quantizer(_area(residual, s).permute(0, 2, 3, 1))
            up = _bicubic(out.quantized.float().permute(0, 3, 1, 2), side)
            final = final + up
            residual = residual - up.detach()
            ids.append(out.ids.reshape(h.shape[0], s * s))
            for name, value in out.losses.items():
                losses[name] = losses.get(name, 0.0) + value / len(scales)
            for name, value in out.stats.items():
                stats[name] = stats.get(name, 0.0) + value.detach() / len(scales)
        all_ids = torch.cat(ids, dim=1)
        stats["usage_all"] = torch.bincount(all_ids.reshape(-1), minlength=quantizer.codebook_size).gt(0).float().mean()
    return MultiScaleOutput(final.to(h.dtype), all_ids, list(scales), losses, stats)
