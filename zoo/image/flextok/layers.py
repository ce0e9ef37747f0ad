"""FlexTok building blocks: patchify, the patch positional embedding and the shared transformer options."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.nn.norms import Fp32LayerNorm
from zoo.nn.posemb import sincos_2d

PATCH_POSEMBS = ("sincos", "learnable_sum", "learnable_prod", "none")


@dataclass(frozen=True)
class TrunkOptions:
    """The transformer block options FlexTok's encoder and decoder share (one place, one set of defaults).

    Attributes:
        mlp_ratio: MLP hidden width over the model width.
        gated_mlp: SwiGLU (hidden `int(2 * int(dim * ratio) / 3)`) instead of a GELU-free 2-layer MLP.
        qkv_bias, proj_bias, mlp_bias: biases of the attention projections and MLP layers (all off in the releases).
        qk_norm: parameter-free fp32 LayerNorm on queries and keys over head_dim.
    """

    mlp_ratio: float = 4.0
    gated_mlp: bool = True
    qkv_bias: bool = False
    proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = True

    def block_kwargs(self, dim: int, head_dim: int, adaln_groups: int = 0) -> dict:
        """Options of a FlexTok block for `zoo.nn.Block` (or, with `adaln_groups`, `zoo.nn.AdaLNZeroBlock`):
        parameter-free fp32 LayerNorms (eps 1e-5), qk-norm, the chosen MLP and the muP softmax scale
        `8 / head_dim`."""
        if dim % head_dim:
            raise ValueError(f"transformer dim ({dim}) must be a multiple of head_dim ({head_dim})")
        attention = {
            "head_dim": head_dim,
            "qkv_bias": self.qkv_bias,
            "fused_qkv": True,
            "proj_bias": self.proj_bias,
            "qk_norm": "fp32_layernorm" if self.qk_norm else None,
            "qk_norm_affine": False,
            "qk_norm_eps": 1e-5,
            # muP attention scale (https://arxiv.org/abs/2203.03466); equals head_dim ** -0.5 only for head_dim 64
            "scale": 8.0 / head_dim,
        }
        common = {
            "num_heads": dim // head_dim, "mlp_ratio": self.mlp_ratio, "mlp": "swiglu" if self.gated_mlp else "mlp",
            "act": "silu", "mlp_bias": self.mlp_bias, "norm": "fp32_layernorm", "norm_eps": 1e-5, "norm_affine": False,
        }
        if adaln_groups:
            # FlexTok's chunk order differs from DiT's
            order = ("gate_msa", "gate_mlp", "shift_msa", "scale_msa", "shift_mlp", "scale_mlp")
            return dict(common, chunk_order=order, num_cond_groups=adaln_groups, attention_kwargs=attention)
        attention["attn_scale"] = attention.pop("scale")
        return dict(common, norm_bias=False, **attention)


def plain_norm(dim: int) -> Fp32LayerNorm:
    """FlexTok's parameter-free LayerNorm (fp32, eps 1e-5)."""
    return Fp32LayerNorm(dim, eps=1e-5, elementwise_affine=False, bias=False)


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`[B, C, H, W]` -> `[B, (H/p) * (W/p), p * p * C]`, patches row-major, features ordered `(ph, pw, c)`."""
    b, c, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, grid: int, channels: int) -> torch.Tensor:
    """Inverse of `patchify` for a square `grid` of patches: `[B, grid**2, p * p * C]` -> `[B, C, H, W]`."""
    b = x.shape[0]
    p = patch_size
    x = x.reshape(b, grid, grid, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, grid * p, grid * p)


class PatchPosEmbed(nn.Module):
    """Positional embedding added to a square grid of patch tokens, `[grid**2, dim]` row-major.

    `"sincos"`: FlexTok's fixed 2D table (row index in the first half of the channels, column in the second), built
    on a `size x size` grid and cropped to the top-left `grid x grid` (official `posemb_scaling="absolute"`).
    `"learnable_sum"` / `"learnable_prod"`: one learnt `[size, dim]` table per axis, combined by sum or product.
    `"none"`: nothing is added.
    """

    def __init__(self, kind: str, dim: int, grid: int, size: int | None = None) -> None:
        super().__init__()
        if kind not in PATCH_POSEMBS:
            raise ValueError(f"patch posemb must be one of {PATCH_POSEMBS}, got {kind!r}")
        size = grid if size is None else size
        if size < grid:
            raise ValueError(f"posemb_size ({size}) must be >= the patch grid ({grid})")
        self.kind, self.grid, self.size = kind, grid, size
        self.weight = None
        if kind == "sincos":
            table = sincos_2d(size, size, dim, first_axis="row").view(size, size, dim)[:grid, :grid]
            self.register_buffer("table", table.reshape(grid * grid, dim).contiguous(), persistent=False)
        elif kind.startswith("learnable"):
            self.weight = nn.Parameter(torch.randn(2, size, dim) * 0.02)

    def forward(self) -> torch.Tensor | None:
        if self.kind == "none":
            return None
        if self.kind == "sincos":
            return self.table
        rows, cols = self.weight[0, : self.grid], self.weight[1, : self.grid]
        table = rows[:, None] * cols[None] if self.kind == "learnable_prod" else rows[:, None] + cols[None]
        return table.reshape(self.grid * self.grid, -1)
