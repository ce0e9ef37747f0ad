"""TokenFlow's pixel branch: the LlamaGen / taming VQGAN encoder and decoder (with attention at the deepest level).

Encoder: conv_in, per level `num_res_blocks` res-blocks (each followed by an attention block at the last level) and
a downsample (all but the last level), then mid (res, attn, res), GroupNorm, swish, conv to `z_channels`.
Decoder: conv_in, mid, levels deepest first with `num_res_blocks + 1` res-blocks (attention after each at the
deepest level) and a nearest x2 + conv upsample (all but the last), GroupNorm, swish, conv to RGB (no tanh).
The "enhanced" decoder of the released t2i tokenizer is the same decoder at width 256 with 4 (+1) res-blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn import AttnBlock, Downsample, ResnetBlock, Upsample

__all__ = ["PixelDecoder", "PixelEncoder"]


class _Stage(nn.Module):
    """`blocks` res-blocks, an attention block after each when `attention`, then an optional resample."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, attention: bool, resample: str | None,
                 groups: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, num_groups=groups, dropout=dropout)
            for i in range(num_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_ch, num_groups=groups) for _ in range(num_blocks if attention else 0))
        if resample == "down":
            self.resample = Downsample(out_ch)
        elif resample == "up":
            self.resample = Upsample(out_ch)
        else:
            self.resample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x if self.resample is None else self.resample(x)


def _mid(channels: int, groups: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList([
        ResnetBlock(channels, num_groups=groups, dropout=dropout),
        AttnBlock(channels, num_groups=groups),
        ResnetBlock(channels, num_groups=groups, dropout=dropout),
    ])


class PixelEncoder(nn.Module):
    """Image `[B, 3, H, W]` in [-1, 1] -> `[B, z_channels, H/f, W/f]`, `f = 2 ** (len(ch_mult) - 1)`.

    Args:
        channels: base width `ch` (128 in the releases).
        ch_mult: width multiplier per level ([1, 1, 2, 2, 4]: f16).
        num_res_blocks: res-blocks per level (2).
        z_channels: output channels (256).
        norm_groups: GroupNorm groups (32 in the releases; every width must be a multiple).
        dropout: dropout inside the res-blocks.
    """

    def __init__(self, channels: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 256, norm_groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        widths = [channels * m for m in ch_mult]
        prev = channels
        self.stages = nn.ModuleList()
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            self.stages.append(_Stage(prev, width, num_res_blocks, last, None if last else "down", norm_groups,
                                      dropout))
            prev = width
        self.mid = _mid(prev, norm_groups, dropout)
        self.norm_out = nn.GroupNorm(norm_groups, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.stages:
            h = stage(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class PixelDecoder(nn.Module):
    """`[B, z_channels, h, w]` -> image `[B, 3, h*f, w*f]` (about [-1, 1], not squashed).

    Args:
        channels: base width (128 plain, 256 enhanced).
        ch_mult: width multiplier per level, listed from the finest level (as the encoder's).
        num_res_blocks: the encoder-style count; each level has one more (2 plain, 4 enhanced).
        z_channels, norm_groups, dropout: as in `PixelEncoder`.
    """

    def __init__(self, channels: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 256, norm_groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [channels * m for m in ch_mult]
        prev = widths[-1]
        self.conv_in = nn.Conv2d(z_channels, prev, 3, padding=1)
        self.mid = _mid(prev, norm_groups, dropout)
        self.stages = nn.ModuleList()
        for level in reversed(range(len(widths))):
            deepest = level == len(widths) - 1
            self.stages.append(_Stage(prev, widths[level], num_res_blocks + 1, deepest,
                                      "up" if level else None, norm_groups, dropout))
            prev = widths[level]
        self.norm_out = nn.GroupNorm(norm_groups, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, 3, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The output conv weight (for adaptive GAN weighting)."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for stage in self.stages:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))
