"""Vocos decoder as used by WavTokenizer: ConvNeXt backbone with an attention `pos_net`, and an iSTFT head.

Vocos: https://arxiv.org/abs/2306.00814 ; WavTokenizer: https://arxiv.org/abs/2408.16532 .
Every block takes an optional frame mask `[B, 1, T]` (1 = valid) for right-padded batches: convolutions see
zeros past a row's end (what their zero padding gives a lone clip), GroupNorm statistics and attention keys
cover valid frames only, and the iSTFT overlap-adds and normalises each row over its own frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.attention import Attention
from zoo.nn.norms import EmbeddingAdaLayerNorm
from zoo.nn.onednn import linear_act
from zoo.precision import full_precision

__all__ = [
    "AttnBlock",
    "ConvNeXtBlock",
    "ISTFTHead",
    "ResnetBlock",
    "VocosBackbone",
    "group_norm",
    "istft_same",
]


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _token_norm(num_conditions: int | None, dim: int) -> nn.Module:
    return EmbeddingAdaLayerNorm(num_conditions, dim) if num_conditions else nn.LayerNorm(dim, eps=1e-6)


def _apply_norm(norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | int | None) -> torch.Tensor:
    return norm(x, cond) if isinstance(norm, EmbeddingAdaLayerNorm) else norm(x)


def group_norm(x: torch.Tensor, norm: nn.GroupNorm, mask: torch.Tensor | None = None) -> torch.Tensor:
    """`norm(x)` for `x` `[B, C, T]`, with the statistics taken over the valid frames of `mask` `[B, 1, T]`."""
    batch, channels, time = x.shape
    if mask is None:
        if time * (channels // norm.num_groups) > 1:
            return norm(x)
        mask = x.new_ones(batch, 1, time)  # F.group_norm refuses one value per group; the statistics are defined
    groups = norm.num_groups
    xg = x.reshape(batch, groups, channels // groups, time)
    m = mask.reshape(batch, 1, 1, time).to(x.dtype)
    count = m.sum(dim=3, keepdim=True) * (channels // groups)
    mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count
    var = ((xg - mean).square() * m).sum(dim=(2, 3), keepdim=True) / count
    y = ((xg - mean) * torch.rsqrt(var + norm.eps)).reshape(batch, channels, time)
    if norm.affine:
        y = y * norm.weight[:, None] + norm.bias[:, None]
    return y


class ConvNeXtBlock(nn.Module):
    """1D ConvNeXt block (https://arxiv.org/abs/2201.03545): depthwise k7 -> (Ada)LayerNorm -> MLP -> layer scale."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale_init_value: float,
                 adanorm_num_embeddings: int | None = None):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = _token_norm(adanorm_num_embeddings, dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = None
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | int | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dwconv(_masked(x, mask)).transpose(1, 2)
        h = _apply_norm(self.norm, h, cond)
        h = linear_act(self.pwconv2, linear_act(self.pwconv1, h, "gelu"))  # oneDNN at CPU fp32 inference
        if self.gamma is not None:
            h = h * self.gamma
        return x + h.transpose(1, 2)


class ResnetBlock(nn.Module):
    """`x + conv2(dropout(silu(GN(conv1(silu(GN(x)))))))`, GroupNorm(32, eps 1e-6), k3 convs (VQGAN style)."""

    def __init__(self, dim: int, num_groups: int = 32, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, dim, eps=1e-6)
        self.conv1 = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(_masked(F.silu(group_norm(x, self.norm1, mask)), mask))
        h = self.dropout(F.silu(group_norm(h, self.norm2, mask)))
        return x + self.conv2(_masked(h, mask))


class AttnBlock(nn.Module):
    """`x + attn(GN(x))`: single-head self-attention over the whole sequence, no positional encoding.

    The official block (1x1-conv q/k/v/proj_out) has no mask; here padded frames are excluded as keys.
    """

    def __init__(self, dim: int, num_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=1, qkv_bias=True, fused_qkv=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = group_norm(x, self.norm, mask).transpose(1, 2)
        padding = None if mask is None else ~mask[:, 0].bool()
        return x + self.attn(h, key_padding_mask=padding).transpose(1, 2)


class VocosBackbone(nn.Module):
    """embed conv k7 -> pos_net [Res, Res, Attn, Res, Res, GroupNorm] -> (Ada)LayerNorm -> ConvNeXt x L -> LayerNorm.

    Args:
        input_channels: latent channels in.
        dim: model width.
        intermediate_dim: ConvNeXt MLP width.
        num_layers: ConvNeXt blocks.
        layer_scale_init_value: ConvNeXt layer scale (default `1 / num_layers`).
        adanorm_num_embeddings: rows of the AdaLayerNorm tables (WavTokenizer: 4 "bandwidth" rows); None: LayerNorm.
        dropout: in the pos_net ResnetBlocks.
    """

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int,
                 layer_scale_init_value: float | None = None, adanorm_num_embeddings: int | None = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = _token_norm(adanorm_num_embeddings, dim)
        scale = layer_scale_init_value or 1 / num_layers
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, scale, adanorm_num_embeddings) for _ in range(num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(self._init_weights)
        self.pos_net = nn.ModuleList([
            ResnetBlock(dim, dropout=dropout), ResnetBlock(dim, dropout=dropout), AttnBlock(dim),
            ResnetBlock(dim, dropout=dropout), ResnetBlock(dim, dropout=dropout), nn.GroupNorm(32, dim, eps=1e-6),
        ])

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | int | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `[B, C_in, T]` -> `[B, T, dim]`; `cond` LongTensor `[B]` or an int; `mask` `[B, 1, T]` or None."""
        x = self.embed(_masked(x, mask))
        for block in self.pos_net[:-1]:
            x = block(x, mask)
        x = group_norm(x, self.pos_net[-1], mask).transpose(1, 2)
        x = _apply_norm(self.norm, x, cond)
        x = x.transpose(1, 2)
        for block in self.convnext:
            x = block(x, cond, mask)
        return self.final_layer_norm(x.transpose(1, 2))


def istft_same(spec: torch.Tensor, window: torch.Tensor, hop_length: int,
               frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse STFT with Vocos' "same" padding: `T` frames -> `T * hop` samples.

    irfft each frame, window, overlap-add, trim `(n_fft - hop) // 2` at both ends, divide by the equally trimmed
    window-square envelope. `torch.istft(center=False)` cannot do this: its NOLA check fails at the untrimmed edges.
    With `frame_mask` `[B, T]`, each row uses only its valid frames (samples past them come out 0).
    """
    n_fft = window.shape[0]
    frames = spec.shape[-1]
    pad = (n_fft - hop_length) // 2
    out_size = (frames - 1) * hop_length + n_fft
    chunks = torch.fft.irfft(spec, n_fft, dim=1, norm="backward") * window[None, :, None]
    if frame_mask is not None:
        chunks = chunks * frame_mask[:, None, :].to(chunks.dtype)
    fold = {"output_size": (1, out_size), "kernel_size": (1, n_fft), "stride": (1, hop_length)}
    y = F.fold(chunks, **fold)[:, 0, 0, pad:-pad]
    square = window.square()[None, :, None]
    if frame_mask is None:
        envelope = F.fold(square.expand(1, n_fft, frames), **fold)[:, 0, 0, pad:-pad]
        return y / envelope
    envelope = F.fold(square * frame_mask[:, None, :].to(square.dtype), **fold)[:, 0, 0, pad:-pad]
    samples = torch.arange(y.shape[-1], device=y.device)[None, :]
    valid = samples < frame_mask.sum(dim=1, keepdim=True) * hop_length
    return torch.where(valid, y / torch.where(valid, envelope, torch.ones_like(envelope)), torch.zeros_like(y))


class ISTFTHead(nn.Module):
    """Linear -> (log-magnitude, phase) -> complex STFT -> `istft_same`. Magnitudes are clipped at 100.

    Args:
        dim: backbone width.
        n_fft: FFT size (= window length; WavTokenizer uses `4 * hop_length`).
        hop_length: samples per frame.
    """

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.out = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `[B, T, dim]` -> audio `[B, T * hop_length]`."""
        mag, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        with full_precision(x.device):  # exp, phase and iSTFT in fp32 (complex bf16 does not exist)
            mag, phase = torch.exp(mag.float()).clip(max=1e2), phase.float()
            spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
            return istft_same(spec, self.window, self.hop_length, frame_mask)
