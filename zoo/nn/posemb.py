"""Positional and timestep embeddings: sin-cos tables, timestep features and rotary embeddings.

Conventions differ between code bases only in a few knobs, so each function exposes them as arguments:
the base period, whether `sin` or `cos` comes first, and which grid axis fills the first half of a 2D table.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_ORDERS = ("sin_cos", "cos_sin")


def _check_order(order: str) -> None:
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")


def sincos_1d(
    positions: torch.Tensor | int, dim: int, max_period: float = 10000.0, order: str = "sin_cos"
) -> torch.Tensor:
    """Sin-cos table `[N, dim]` for 1D positions (Transformer / MAE formula).

    `omega_k = 1 / max_period ** (k / (dim / 2))` for `k < dim / 2`; the table is `cat[sin(p * omega), cos(p * omega)]`
    (or cos first with `order="cos_sin"`). `positions` is an int N (positions 0..N-1) or a float tensor `[N]`.
    """
    _check_order(order)
    if dim % 2:
        raise ValueError(f"sincos_1d needs an even dim, got {dim}")
    pos = torch.arange(positions, dtype=torch.float64) if isinstance(positions, int) else positions.double().flatten()
    half = dim // 2
    omega = 1.0 / max_period ** (torch.arange(half, dtype=torch.float64) / half)
    args = pos[:, None] * omega[None]
    parts = (args.sin(), args.cos()) if order == "sin_cos" else (args.cos(), args.sin())
    return torch.cat(parts, dim=1).float()


def sincos_2d(
    height: int, width: int, dim: int, max_period: float = 10000.0, first_axis: str = "col", order: str = "sin_cos"
) -> torch.Tensor:
    """Sin-cos table `[height * width, dim]` for a row-major grid.

    Each half of the channels is a 1D table (`sincos_1d` with dim/2) of one axis. `first_axis="col"` puts the column
    (x) table first, as MAE/timm's `get_2d_sincos_pos_embed`; `first_axis="row"` puts the row (y) table first, which
    is what FlexTok's `build_2d_sincos_posemb` gives on square grids.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    if first_axis not in ("row", "col"):
        raise ValueError(f"first_axis must be 'row' or 'col', got {first_axis!r}")
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    emb_rows = sincos_1d(rows, dim // 2, max_period, order)
    emb_cols = sincos_1d(cols, dim // 2, max_period, order)
    parts = (emb_rows, emb_cols) if first_axis == "row" else (emb_cols, emb_rows)
    return torch.cat(parts, dim=1)


def timestep_embedding(
    t: torch.Tensor,
    dim: int,
    max_period: float = 10000.0,
    time_scale: float = 1.0,
    order: str = "cos_sin",
    downscale_freq_shift: float = 0.0,
    freq_scale: float = 1.0,
) -> torch.Tensor:
    """Sinusoidal features `[B, dim]` of (possibly fractional) timesteps `t` `[B]`.

    `freqs_k = exp(-ln(max_period) * k / (dim/2 - downscale_freq_shift))`, `args = time_scale * t * freqs`, and the
    output is `cat[cos(args), sin(args)]` (DiT, FlexTok) or `cat[sin, cos]` with `order="sin_cos"` (diffusers default).
    FlexTok uses `max_period=256, time_scale=1000` for t in [0, 1]. An odd `dim` gets one zero column.
    `freq_scale` multiplies `freqs` before they meet `t` (FlexTok's exact float order: `t * (1000 * freqs)`).
    """
    _check_order(order)
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / (half - downscale_freq_shift))
    if freq_scale != 1.0:
        freqs = freq_scale * freqs
    args = time_scale * t.float().flatten()[:, None] * freqs[None]
    parts = (args.cos(), args.sin()) if order == "cos_sin" else (args.sin(), args.cos())
    emb = torch.cat(parts, dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timestep features followed by `mlp = Sequential(Linear(freq_dim, dim), SiLU, Linear(dim, dim))` (DiT layout).

    Args:
        dim: output size.
        freq_dim: size of the sinusoidal features.
        max_period, time_scale, order, freq_scale: see `timestep_embedding`.
    """

    def __init__(
        self,
        dim: int,
        freq_dim: int = 256,
        max_period: float = 10000.0,
        time_scale: float = 1.0,
        order: str = "cos_sin",
        freq_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check_order(order)
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.time_scale = time_scale
        self.order = order
        self.freq_scale = freq_scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(
            t, self.freq_dim, self.max_period, self.time_scale, self.order, freq_scale=self.freq_scale
        )
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def rotary_1d(
    positions: torch.Tensor | int, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary (RoPE, https://arxiv.org/abs/2104.09864) cos/sin tables `[N, head_dim]` for `apply_rotary`.

    Uses the "rotate half" pairing: channel k and k + head_dim/2 rotate together with frequency
    `theta ** (-k / (head_dim/2))`.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    pos = torch.arange(positions, dtype=torch.float64) if isinstance(positions, int) else positions.double().flatten()
    half = head_dim // 2
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float64) / half)
    angles = pos[:, None] * inv_freq[None]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def rotary_2d(height: int, width: int, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """2D rotary tables `[height * width, head_dim]` (row-major): the first half of head_dim rotates with the row
    index, the second half with the column index (axial RoPE)."""
    if head_dim % 4:
        raise ValueError(f"2D rotary embeddings need head_dim divisible by 4, got {head_dim}")
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    cos_r, sin_r = rotary_1d(rows, head_dim // 2, theta)
    cos_c, sin_c = rotary_1d(cols, head_dim // 2, theta)
    return torch.cat([cos_r, cos_c], dim=-1), torch.cat([sin_r, sin_c], dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` `[B, H, N, D]` by the tables from `rotary_1d` / `rotary_2d`.

    The tables are `[N, D']` or `[B, N, D']` with `D' <= D`; only the first `D'` channels of each head rotate
    (partial rotary), the rest pass through.
    """
    d = cos.shape[-1]
    if d > x.shape[-1]:
        raise ValueError(f"rotary table width {d} exceeds head_dim {x.shape[-1]}")
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rot, rest = x[..., :d], x[..., d:]
    rot = rot * cos + _rotate_half(rot) * sin
    return torch.cat([rot, rest], dim=-1) if rest.shape[-1] else rot

