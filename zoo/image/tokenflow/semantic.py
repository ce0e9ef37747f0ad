"""TokenFlow's semantic branch on `zoo.nn`: the OpenAI CLIP vision transformer (encoder), the BEiT-v2 ViT (decoder,
depth 3, patch 1 on the 32-d code map) and the Linear-Tanh-Linear task heads between them and the codes / teacher.

Both ViTs resize their learnt position table to other grids the DINO way (`interpolate_pos_embed`): the official
`interpolate_pos_encoding`, which the released t2i tokenizer uses to run its 224 px CLIP at 256 px.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn import Block, Mlp

__all__ = ["ClipVisionEncoder", "SemanticDecoder", "TaskHead", "interpolate_pos_embed"]


def interpolate_pos_embed(table: torch.Tensor, grid: int) -> torch.Tensor:
    """A `[1 + n*n, D]` table (class entry first) for a `grid x grid` patch grid.

    DINO's recipe, as in the official code: bicubic with `scale_factor = (grid + 0.1) / n` (PyTorch maps
    coordinates with that factor, not with grid / n, and floors the size to `grid`), class entry kept.
    """
    n = math.isqrt(table.shape[0] - 1)
    if n * n != table.shape[0] - 1:
        raise ValueError(f"position table of {table.shape[0]} rows is not 1 + a square grid")
    if grid == n:
        return table
    patch = table[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    factor = (grid + 0.1) / n
    patch = F.interpolate(patch, scale_factor=(factor, factor), mode="bicubic")
    if patch.shape[-2:] != (grid, grid):
        raise ValueError(f"could not resize a {n}x{n} position table to {grid}x{grid}")
    return torch.cat([table[:1], patch.permute(0, 2, 3, 1).reshape(grid * grid, -1)], dim=0)


class TaskHead(Mlp):
    """`fc2(tanh(fc1(x)))`: the official `encode_task_layer` / `decode_task_layer` (hidden width = input width)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, in_features, out_features, act="tanh")


class ClipVisionEncoder(nn.Module):
    """OpenAI CLIP ViT (the `visual` tower without its projection): `[B, 3, H, W]` -> patch tokens `[B, g*g, D]`.

    conv patch embedding (no bias), class token, learnt positions, `norm_pre`, pre-LN blocks (fused qkv with bias,
    QuickGELU MLP, LayerNorm eps 1e-5), `norm` on every token, class token dropped.

    Args:
        image_size: the size the position table was learnt for (224 for ViT-B/16).
        patch_size: patch side (16).
        width, layers, heads: transformer size (768, 12, 12 for ViT-B/16).
    """

    def __init__(self, image_size: int = 224, patch_size: int = 16, width: int = 768, layers: int = 12,
                 heads: int = 12) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        scale = width**-0.5
        self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.cls_token = nn.Parameter(scale * torch.randn(width))
        self.pos_embed = nn.Parameter(scale * torch.randn(self.grid**2 + 1, width))
        self.norm_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            Block(width, heads, qkv_bias=True, act="quick_gelu", norm_eps=1e-5) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[B, 3, H, W]` (the tokenizer's [-1, 1] input) -> `[B, (H/p)*(W/p), width]`."""
        grid = x.shape[-1] // self.patch_size
        h = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.to(h.dtype).expand(h.shape[0], 1, -1)
        h = torch.cat([cls, h], dim=1) + interpolate_pos_embed(self.pos_embed, grid).to(h.dtype)
        h = self.norm_pre(h)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)[:, 1:]


class SemanticDecoder(nn.Module):
    """BEiT-v2 ViT on the semantic code map: `[B, code_dim, g, g]` -> `[B, g*g, width]` (after `norm`).

    1x1 conv patch embedding (with bias), class token, learnt positions, pre-LN blocks (BEiT attention: qkv without
    bias plus learnt q and v biases, exact GELU, LayerNorm eps 1e-6), `norm` (the official `fc_norm`) on the patch
    tokens.

    Args:
        grid: the grid the position table was learnt for (14 for CLIP-B at 224, 27 for SigLIP at 384).
        code_dim: input channels (the semantic code width, 32).
        width, depth, heads: transformer size (768 / 1152, 3, 12 in the releases).
    """

    def __init__(self, grid: int = 14, code_dim: int = 32, width: int = 768, depth: int = 3, heads: int = 12) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(code_dim, width, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(width, heads, qkv_bias="qv", act="gelu", norm_eps=1e-6)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(codes).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.to(h.dtype).expand(h.shape[0], -1, -1), h], dim=1)
        h = h + interpolate_pos_embed(self.pos_embed[0], codes.shape[-1]).to(h.dtype)
        for block in self.blocks:
            h = block(h)
        return self.norm(h[:, 1:])
