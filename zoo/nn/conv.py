"""Convolutional blocks for VQGAN-style encoders/decoders (taming / LlamaGen layout) and 1D audio backbones.

Every block takes `dims` (1 for `[B, C, T]`, 2 for `[B, C, H, W]`). Parameter names follow taming-transformers
(`norm1`, `conv1`, `norm2`, `conv2`, `nin_shortcut`; `norm`, `q`, `k`, `v`, `proj_out`), which LlamaGen, GigaTok,
TokenFlow and WavTokenizer share, so converters map keys one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.mlp import make_activation
from zoo.nn.norms import EmbeddingAdaLayerNorm, is_channels_last


def _conv(dims: int) -> type[nn.Module]:
    if dims == 1:
        return nn.Conv1d
    if dims == 2:
        return nn.Conv2d
    raise ValueError(f"dims must be 1 or 2, got {dims}")


def _group_norm(channels: int, num_groups: int, eps: float) -> nn.GroupNorm:
    if channels % num_groups:
        raise ValueError(f"GroupNorm needs channels ({channels}) divisible by num_groups ({num_groups})")
    return nn.GroupNorm(num_groups, channels, eps=eps)


class ResnetBlock(nn.Module):
    """`shortcut(x) + conv2(drop(act(norm2(conv1(act(norm1(x))) [+ temb_proj(act(temb))]))))`.

    The shortcut is the identity when `in_channels == out_channels`, else a 1x1 conv `nin_shortcut` (or a 3x3
    `conv_shortcut` with `conv_shortcut=True`).

    Args:
        in_channels: input channels.
        out_channels: output channels; default `in_channels`.
        dims: 1 or 2 spatial dims.
        num_groups: GroupNorm groups (32 in every VQGAN).
        eps: GroupNorm eps (1e-6 in taming-style code).
        dropout: dropout before `conv2`.
        temb_channels: width of an optional time embedding added after `conv1` (0 = none).
        conv_shortcut: use a 3x3 conv for the channel-changing shortcut.
        act: activation name (`"silu"` is taming's swish).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        dims: int = 2,
        num_groups: int = 32,
        eps: float = 1e-6,
        dropout: float = 0.0,
        temb_channels: int = 0,
        conv_shortcut: bool = False,
        act: str = "silu",
    ) -> None:
        super().__init__()
        conv = _conv(dims)
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = _group_norm(in_channels, num_groups, eps)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels) if temb_channels > 0 else None
        self.norm2 = _group_norm(out_channels, num_groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        self.act = make_activation(act)
        if in_channels == out_channels:
            self.shortcut_name = None
        elif conv_shortcut:
            self.shortcut_name = "conv_shortcut"
            self.conv_shortcut = conv(in_channels, out_channels, 3, padding=1)
        else:
            self.shortcut_name = "nin_shortcut"
            self.nin_shortcut = conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        if temb is not None:
            if self.temb_proj is None:
                raise ValueError("this ResnetBlock was built with temb_channels=0 and takes no temb")
            h = h + self.temb_proj(self.act(temb)).view(*h.shape[:2], *([1] * (h.dim() - 2)))
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        shortcut = x if self.shortcut_name is None else getattr(self, self.shortcut_name)(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map: `x + proj_out(attn(norm(x)))`.

    q, k and v are 1x1 convs; the softmax scale is `C ** -0.5`; no mask, no positional encoding (taming
    `AttnBlock`, WavTokenizer's `pos_net` attention).
    """

    def __init__(self, channels: int, dims: int = 2, num_groups: int = 32, eps: float = 1e-6) -> None:
        super().__init__()
        conv = _conv(dims)
        self.norm = _group_norm(channels, num_groups, eps)
        self.q = conv(channels, channels, 1)
        self.k = conv(channels, channels, 1)
        self.v = conv(channels, channels, 1)
        self.proj_out = conv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = (t.flatten(2).transpose(1, 2)[:, None] for t in (self.q(h), self.k(h), self.v(h)))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(x.shape)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the resolution: zero-pad right/bottom by 1, then a 3x3 stride-2 conv with no padding (taming), or
    2x average pooling with `with_conv=False`."""

    def __init__(self, channels: int, out_channels: int | None = None, dims: int = 2, with_conv: bool = True) -> None:
        super().__init__()
        self.dims = dims
        if with_conv:
            self.conv = _conv(dims)(channels, channels if out_channels is None else out_channels, 3, stride=2)
        else:
            if out_channels not in (None, channels):
                raise ValueError("Downsample(with_conv=False) cannot change the channel count")
            _conv(dims)  # validates dims
            self.conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool1d(x, 2, 2) if self.dims == 1 else F.avg_pool2d(x, 2, 2)
        return self.conv(F.pad(x, (0, 1) * self.dims))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv (unless `with_conv=False`)."""

    def __init__(self, channels: int, out_channels: int | None = None, dims: int = 2, with_conv: bool = True) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.conv = _conv(dims)(channels, out_channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


def depth_to_space(x: torch.Tensor, block_size: int = 2, order: str = "dcr") -> torch.Tensor:
    """Rearrange `[B, C * r^2, H, W]` to `[B, C, H*r, W*r]`.

    `order="dcr"` (depth-column-row, TensorFlow's default and GigaTok's): `out[c, r*h+i, r*w+j] = in[(r*i+j)*C + c]`.
    `order="crd"` (`F.pixel_shuffle`): `out[c, r*h+i, r*w+j] = in[c*r*r + r*i + j]`.
    """
    b, ch, h, w = x.shape
    r = block_size
    if ch % (r * r):
        raise ValueError(f"depth_to_space needs channels ({ch}) divisible by block_size^2 ({r * r})")
    c = ch // (r * r)
    if order == "crd":
        return F.pixel_shuffle(x, r)
    if order != "dcr":
        raise ValueError(f"order must be 'dcr' or 'crd', got {order!r}")
    if is_channels_last(x):
        # stay channels-last: one copy in NHWC order instead of an NCHW result and a conversion back
        y = x.permute(0, 2, 3, 1).view(b, h, w, r, r, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(b, h * r, w * r, c).permute(0, 3, 1, 2)
    x = x.view(b, r, r, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c, h * r, w * r)


def space_to_depth(x: torch.Tensor, block_size: int = 2, order: str = "dcr") -> torch.Tensor:
    """Inverse of `depth_to_space`: `[B, C, H*r, W*r]` -> `[B, C * r^2, H, W]`."""
    b, c, hr, wr = x.shape
    r = block_size
    if hr % r or wr % r:
        raise ValueError(f"space_to_depth needs H and W divisible by {r}, got {hr}x{wr}")
    h, w = hr // r, wr // r
    if order == "crd":
        return F.pixel_unshuffle(x, r)
    if order != "dcr":
        raise ValueError(f"order must be 'dcr' or 'crd', got {order!r}")
    x = x.view(b, c, h, r, w, r).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, r * r * c, h, w)


class DepthToSpaceUpsample(nn.Module):
    """Upsample by `block_size`: a 3x3 conv `conv1` to `out_channels * r^2`, then `depth_to_space` (GigaTok's
    `D2SUpsampler`)."""

    def __init__(
        self, channels: int, out_channels: int | None = None, block_size: int = 2, order: str = "dcr"
    ) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.block_size = block_size
        self.order = order
        self.conv1 = nn.Conv2d(channels, out_channels * block_size * block_size, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv1(x), self.block_size, self.order)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (https://arxiv.org/abs/2201.03545) on channels-first input:
    `x + gamma * pwconv2(act(pwconv1(norm(dwconv(x)))))`, norm and pointwise layers channels-last.

    With `num_cond > 0` the norm is an `EmbeddingAdaLayerNorm` selected by a condition id (Vocos / WavTokenizer).

    Args:
        dim: channels.
        hidden_dim: pointwise hidden width; default `4 * dim`.
        kernel_size: depthwise kernel size (padding keeps the length).
        dims: 1 or 2 spatial dims.
        layerscale: init of `gamma`, or None for no layer scale.
        num_cond: number of condition ids for an adaptive norm (0 = plain LayerNorm).
        eps: norm eps.
        act: activation name.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        kernel_size: int = 7,
        dims: int = 1,
        layerscale: float | None = 1e-6,
        num_cond: int = 0,
        eps: float = 1e-6,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        hidden_dim = 4 * dim if hidden_dim is None else hidden_dim
        self.dwconv = _conv(dims)(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = EmbeddingAdaLayerNorm(num_cond, dim, eps=eps) if num_cond > 0 else nn.LayerNorm(dim, eps=eps)
        self.pwconv1 = nn.Linear(dim, hidden_dim)
        self.act = make_activation(act)
        self.pwconv2 = nn.Linear(hidden_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layerscale))) if layerscale is not None else None

    def forward(self, x: torch.Tensor, cond_id: torch.Tensor | int | None = None) -> torch.Tensor:
        h = self.dwconv(x).movedim(1, -1)
        if isinstance(self.norm, EmbeddingAdaLayerNorm):
            if cond_id is None:
                raise ValueError("this ConvNeXtBlock has an adaptive norm; pass cond_id")
            h = self.norm(h, cond_id)
        else:
            h = self.norm(h)
        h = self.pwconv2(self.act(self.pwconv1(h)))
        if self.gamma is not None:
            h = h * self.gamma
        return x + h.movedim(-1, 1)
