"""GigaTok's convolutional encoder and decoder (LlamaGen / MAGVIT-v2 layout).

The encoder downsamples by `2 ** (len(ch_mult) - 1)` with taming res-blocks; the decoder mirrors it with one more
res-block per level, an adaptive GroupNorm at the start of every level (scale and bias predicted from the
statistics of the decoder's input map, MAGVIT-v2 https://arxiv.org/abs/2310.05737) and depth-to-space upsampling
in DCR order. Neither has attention (`use_attn: False` in every released GigaTok config).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn import AdaptiveGroupNorm, DepthToSpaceUpsample, Downsample, ResnetBlock, Upsample
from zoo.nn.norms import group_norm_channels_last, use_channels_last_group_norm

__all__ = ["CNNEncoder", "CNNDecoder"]


def _fast_path(x: torch.Tensor) -> bool:
    """CPU inference runs the CNNs channels-last: oneDNN's 3x3 convolutions are ~25% faster in NHWC than in NCHW
    (measured at 256 px, 128 channels, 2 threads), and every norm then uses the accurate channels-last GroupNorm."""
    return x.device.type == "cpu" and x.dim() == 4 and not torch.is_grad_enabled()


def _to_fast_layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if _fast_path(x) else x.contiguous()


def _norm(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    if use_channels_last_group_norm(x):
        return group_norm_channels_last(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return norm(x)


def _group_norm_out(x: torch.Tensor, norm: nn.GroupNorm, conv: nn.Conv2d) -> torch.Tensor:
    return conv(F.silu(_norm(x, norm), inplace=not torch.is_grad_enabled()))


def _res_block(block: ResnetBlock, x: torch.Tensor) -> torch.Tensor:
    """`block(x)`; without autograd, with in-place SiLU and residual add: the same numbers with half the
    allocations, which matters at 256 px where every activation is 33 MB per image."""
    if torch.is_grad_enabled() or not isinstance(block.act, nn.SiLU) or (block.training and block.dropout.p > 0):
        return block(x)
    h = block.conv1(F.silu(_norm(x, block.norm1), inplace=True))
    h = block.conv2(F.silu(_norm(h, block.norm2), inplace=True))
    return h.add_(x if block.shortcut_name is None else getattr(block, block.shortcut_name)(x))


class _EncoderStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, dropout: float, downsample: bool, groups: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, num_groups=groups, dropout=dropout)
            for i in range(num_blocks)
        )
        self.downsample = Downsample(out_ch) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = _res_block(block, x)
        return x if self.downsample is None else self.downsample(x)


class CNNEncoder(nn.Module):
    """Image `[B, 3, H, W]` in [-1, 1] -> feature map `[B, z_channels, H/f, W/f]`, `f = 2 ** (len(ch_mult) - 1)`.

    Args:
        channels: base width (`ch`; 128 in every released model).
        ch_mult: width multiplier per level (`[1, 1, 2, 2, 4]`: f16).
        num_res_blocks: res-blocks per level.
        z_channels: output channels.
        dropout: dropout inside the res-blocks.
        norm_groups: GroupNorm groups (32 in the official code; smaller only for narrow tiny models).
    """

    def __init__(
        self,
        channels: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        dropout: float = 0.0,
        norm_groups: int = 32,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in ch_mult]
        self.stages = nn.ModuleList()
        prev = channels
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            self.stages.append(_EncoderStage(prev, width, num_res_blocks, dropout, not last, norm_groups))
            prev = width
        self.mid = nn.ModuleList(ResnetBlock(prev, num_groups=norm_groups, dropout=dropout) for _ in range(2))
        self.norm_out = nn.GroupNorm(norm_groups, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(_to_fast_layout(x))  # see CNNDecoder.forward
        for stage in self.stages:
            h = stage(h)
        for block in self.mid:
            h = _res_block(block, h)
        return _group_norm_out(h, self.norm_out, self.conv_out).contiguous()


class _DecoderStage(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, num_blocks: int, dropout: float, style_channels: int,
        adaptive_norm: bool, upsample: str | None, groups: int,
    ) -> None:
        super().__init__()
        self.norm = AdaptiveGroupNorm(in_ch, style_channels, num_groups=groups) if adaptive_norm else None
        self.blocks = nn.ModuleList(
            ResnetBlock(in_ch if i == 0 else out_ch, out_ch, num_groups=groups, dropout=dropout)
            for i in range(num_blocks)
        )
        if upsample == "d2s":
            self.upsample = DepthToSpaceUpsample(out_ch, order="dcr")
        elif upsample == "nearest":
            self.upsample = Upsample(out_ch)
        else:
            self.upsample = None

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x, style)
        for block in self.blocks:
            x = _res_block(block, x)
        return x if self.upsample is None else self.upsample(x)


class CNNDecoder(nn.Module):
    """Feature map `[B, z_channels, h, w]` -> image `[B, 3, h*f, w*f]` (roughly [-1, 1], not squashed).

    Stage k runs at level `len(ch_mult) - 1 - k` (coarsest first): adaptive GroupNorm conditioned on the input map,
    `num_res_blocks + 1` res-blocks, then a 2x upsample (none after the last stage).

    Args:
        channels, ch_mult, z_channels, dropout: as in `CNNEncoder`.
        num_res_blocks: the encoder's count; each decoder level has one more.
        adaptive_norm: the per-level adaptive GroupNorm (`adaptive_gn`).
        depth_to_space: upsample with conv3x3 to 4C + depth-to-space (DCR order, `d2s_up`) instead of nearest + conv.
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self,
        channels: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        dropout: float = 0.0,
        adaptive_norm: bool = True,
        depth_to_space: bool = True,
        norm_groups: int = 32,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = [channels * m for m in ch_mult]
        prev = widths[-1]
        self.conv_in = nn.Conv2d(z_channels, prev, 3, padding=1)
        self.mid = nn.ModuleList(ResnetBlock(prev, num_groups=norm_groups, dropout=dropout) for _ in range(2))
        self.stages = nn.ModuleList()
        levels = list(reversed(range(len(widths))))
        for level in levels:
            up = None if level == 0 else ("d2s" if depth_to_space else "nearest")
            self.stages.append(
                _DecoderStage(
                    prev, widths[level], num_res_blocks + 1, dropout, z_channels, adaptive_norm, up, norm_groups
                )
            )
            prev = widths[level]
        self.norm_out = nn.GroupNorm(norm_groups, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The output conv weight (for adaptive GAN weighting)."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # Channels-last input runs every layer channels-last, where PyTorch's CPU GroupNorm is computed in one pass
        # (E[x^2] - E[x]^2), ~1e3 times less accurate (moves the output by ~1e-3): training takes channels-first
        # input, and the inference path uses `group_norm_channels_last` (see `_fast_path`).
        z = _to_fast_layout(z)
        h = self.conv_in(z)
        for block in self.mid:
            h = _res_block(block, h)
        for stage in self.stages:
            h = stage(h, z)
        return _group_norm_out(h, self.norm_out, self.conv_out).contiguous()
