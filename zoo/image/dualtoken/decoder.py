"""DualToken's pixel decoder: a post-quantisation ResNet block and the RQ-VAE / taming CNN decoder.

    [B, width, g', g'] -> post_quant_conv (GroupNorm, swish, 1x1 conv width -> decoder_in, GroupNorm, swish, 3x3
    conv; 1x1 shortcut) -> conv_in -> mid (res, attn, res) -> levels deepest first, `num_res_blocks + 1`
    res-blocks each (an attention block after each where the level's nominal resolution is in
    `attn_resolutions`), nearest x2 + conv upsampling between levels -> GroupNorm, swish, conv_out -> RGB

Submodule names follow the official `modules.py` (`mid.block_1`, `up.{level}.block.{j}`, `up.{level}.attn.{j}`,
`up.{level}.upsample.conv`, ...), so the converter maps them one to one. GroupNorm: 32 groups, eps 1e-6.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn import AttnBlock, ResnetBlock, Upsample

__all__ = ["PixelDecoder", "PostQuantResnetBlock"]


class PostQuantResnetBlock(nn.Module):
    """`shortcut(x) + conv2(drop(swish(norm2(conv1(swish(norm1(x)))))))` with a 1x1 `conv1` (official
    `PostQuantResnetBlock`, the bridge from the backbone width to the decoder's input channels)."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.norm2 = nn.GroupNorm(num_groups, out_channels, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class _Level(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, attention: bool, upsample: bool, groups: int,
                 dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch, num_groups=groups,
                                               dropout=dropout) for j in range(num_blocks))
        self.attn = nn.ModuleList(AttnBlock(out_ch, num_groups=groups) for _ in range(num_blocks if attention else 0))
        self.upsample = Upsample(out_ch) if upsample else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        return h if self.upsample is None else self.upsample(h)


class PixelDecoder(nn.Module):
    """`[B, in_channels, r, r]` -> `[B, 3, r * 2^(L-1), ...]`, about [-1, 1], not squashed.

    Args:
        channels: base width `ch` (128).
        ch_mult: width multiplier per level, finest first ([1, 1, 4, 4, 8]; L = 5 levels, x16).
        num_res_blocks: res-blocks per level minus one (2: each level runs 3).
        in_channels: input channels (`decoder_in_channels`, 1024).
        resolution: output side (384); level l's nominal resolution is `resolution / 2^l`.
        attn_resolutions: nominal resolutions with attention blocks ([24]: the deepest level at 384 px).
        num_groups: GroupNorm groups (32).
        dropout: dropout inside the res-blocks.
    """

    def __init__(self, channels: int = 128, ch_mult: Sequence[int] = (1, 1, 4, 4, 8), num_res_blocks: int = 2,
                 in_channels: int = 1024, resolution: int = 384, attn_resolutions: Sequence[int] = (24,),
                 num_groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        levels = len(ch_mult)
        widths = [channels * m for m in ch_mult]
        block_in = widths[-1]
        self.conv_in = nn.Conv2d(in_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, num_groups=num_groups, dropout=dropout)
        self.mid.attn_1 = AttnBlock(block_in, num_groups=num_groups)
        self.mid.block_2 = ResnetBlock(block_in, block_in, num_groups=num_groups, dropout=dropout)
        up: list[nn.Module] = [nn.Identity()] * levels
        for level in reversed(range(levels)):
            nominal = resolution // 2**level
            up[level] = _Level(block_in, widths[level], num_res_blocks + 1, nominal in attn_resolutions, level > 0,
                               num_groups, dropout)
            block_in = widths[level]
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(num_groups, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The output conv weight (the official adaptive GAN weight's `last_layer`)."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(len(self.up))):
            h = self.up[level](h)
        return self.conv_out(F.silu(self.norm_out(h)))
