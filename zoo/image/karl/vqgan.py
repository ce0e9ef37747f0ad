"""KARL's base 2D tokenizer: the MaskGIT / MAGE VQGAN (taming layout, `base_tokenizers/taming` of the official repo).

    image in [0, 1] -> Encoder (f = 2^(levels-1)) -> z [B, D, g, g] -> nearest code of a raw (not normalised) codebook
    code map [B, D, g, g] -> Decoder -> image in [0, 1] scale (not squashed)

MAGE's variant of the taming CNN, reproduced as the official code runs it:
- `ResBlock`: GN -> swish -> conv3x3 (no bias) -> GN -> swish -> dropout -> conv3x3 (no bias). When the channel count
  changes, the block returns `nin_shortcut(h) + h`, a 1x1 conv (out -> out, no bias) of the *residual branch*: the
  block input is discarded (a quirk of that code base that the released weights depend on).
- the encoder downsamples with 2x2 average pooling (`resamp_with_conv=False`), its `conv_in` has no bias and its
  `conv_out` is a 1x1 conv; the decoder upsamples with nearest x2 + conv3x3; there is no attention, no
  `quant_conv` / `post_quant_conv` and no tanh.
- GroupNorm eps 1e-6 with 32 groups (`norm_groups`: fewer only for narrow tiny models).

Both CNNs see the image in [0, 1] (the official `ToTensor()` input, no normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.batching import per_item_on_cpu
from zoo.quant.vq import VectorQuantizer

__all__ = ["VQGAN", "ResBlock", "VQGANDecoder", "VQGANEncoder"]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    if channels % groups:
        raise ValueError(f"VQGAN widths must be multiples of norm_groups={groups}, got {channels} channels")
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """MAGE res-block (see the module docstring for its shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        # out -> out on the residual branch's output, as the official block (not in -> out on its input)
        self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(h) if self.nin_shortcut is not None else x) + h


class _Level(nn.Module):
    def __init__(self, blocks: list[ResBlock], upsample: int | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = nn.Conv2d(upsample, upsample, 3, padding=1) if upsample is not None else None


class VQGANEncoder(nn.Module):
    """`[B, 3, H, W]` in [0, 1] -> `[B, z_channels, H/f, W/f]`; level i has `num_res_blocks` blocks of
    `channels * ch_mult[i]`, then (except the last) a 2x2 average pool."""

    def __init__(self, channels: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.levels = nn.ModuleList()
        prev = channels
        for mult in ch_mult:
            width = channels * mult
            blocks = [ResBlock(prev if j == 0 else width, width, groups, dropout) for j in range(num_res_blocks)]
            self.levels.append(_Level(blocks))
            prev = width
        self.mid = nn.ModuleList([ResBlock(prev, prev, groups, dropout) for _ in range(2)])
        self.norm_out = _norm(prev, groups)
        self.conv_out = nn.Conv2d(prev, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.levels):
            for block in level.blocks:
                h = block(h)
            if i != len(self.levels) - 1:
                h = F.avg_pool2d(h, 2, 2)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGANDecoder(nn.Module):
    """`[B, z_channels, g, g]` -> `[B, 3, g*f, g*f]`. `levels[i]` runs at resolution level i (level 0 last, as the
    official `up[i]`): `num_res_blocks` blocks to `channels * ch_mult[i]`, then (i > 0) nearest x2 + conv3x3."""

    def __init__(self, channels: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        prev = channels * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, prev, 3, padding=1)
        self.mid = nn.ModuleList([ResBlock(prev, prev, groups, dropout) for _ in range(2)])
        levels: list[_Level | None] = [None] * len(ch_mult)
        for i in reversed(range(len(ch_mult))):
            width = channels * ch_mult[i]
            blocks = [ResBlock(prev if j == 0 else width, width, groups, dropout) for j in range(num_res_blocks)]
            levels[i] = _Level(blocks, upsample=width if i != 0 else None)
            prev = width
        self.levels = nn.ModuleList(levels)
        self.norm_out = _norm(prev, groups)
        self.conv_out = nn.Conv2d(prev, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in reversed(self.levels):
            for block in level.blocks:
                h = block(h)
            if level.upsample is not None:
                h = level.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGAN(nn.Module):
    """MAGE VQGAN: encoder, raw-codebook VQ (`zoo.quant.VectorQuantizer`, Euclidean, taming distance order) and
    decoder. `codebook_dim` must equal `z_channels` (there is no quant_conv).

    Args:
        channels, ch_mult, num_res_blocks, z_channels: the taming `ddconfig` (`ch`, `ch_mult`, ...).
        codebook_size: `n_embed`.
        norm_groups: GroupNorm groups (32 in the official code).
        dropout: res-block dropout.
        dead_code_threshold, kmeans_init: training aids of the quantiser for our own short runs (not in the
            official VQGAN, whose codebook comes from MAGE; they change no inference number).
    """

    def __init__(self, channels: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 256, codebook_size: int = 1024, norm_groups: int = 32, dropout: float = 0.0,
                 dead_code_threshold: float = 0.0, kmeans_init: bool = False) -> None:
        super().__init__()
        self.factor = 2 ** (len(ch_mult) - 1)
        self.encoder = VQGANEncoder(channels, ch_mult, num_res_blocks, z_channels, norm_groups, dropout)
        self.decoder = VQGANDecoder(channels, ch_mult, num_res_blocks, z_channels, norm_groups, dropout)
        self.quantizer = VectorQuantizer(codebook_size, z_channels, metric="euclidean",
                                         dead_code_threshold=dead_code_threshold, kmeans_init=kmeans_init)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def dim(self) -> int:
        return self.quantizer.dim

    def encode_map(self, x: torch.Tensor) -> torch.Tensor:
        """Images `[B, 3, H, W]` in [0, 1] -> the continuous pre-quantisation map `[B, D, g, g]` (CPU inference: one
        image at a time, `zoo.nn.per_item_on_cpu`)."""
        return per_item_on_cpu(self.encoder, x)

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """`[B, D, g, g]` -> nearest-code ids `[B, g*g]` (row-major), side-effect free."""
        return self.quantizer.assign(z.flatten(2).transpose(1, 2))

    def codes_to_map(self, codes: torch.Tensor, grid: int) -> torch.Tensor:
        """Row-major code vectors `[B, g*g, D]` -> `[B, D, g, g]` (a channels-last view, as the official permute)."""
        return codes.reshape(codes.shape[0], grid, grid, codes.shape[-1]).permute(0, 3, 1, 2)

    def decode_map(self, z: torch.Tensor) -> torch.Tensor:
        """`[B, D, g, g]` -> image `[B, 3, g*f, g*f]` in [0, 1] scale, unclamped."""
        return self.decoder(z)
