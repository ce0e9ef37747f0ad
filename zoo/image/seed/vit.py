"""The EVA-CLIP ViT-g/14 image encoder of SEED, in the LAVIS `eva_vit_g.pth` layout.

    pixels [B, 3, S, S] (CLIP-normalised) -> patch_embed (Conv p x p, stride p) -> [cls; patches] + pos_embed
        -> depth pre-norm blocks (EVA attention: q and v biases, zero key bias) -> [B, 1 + (S/p)^2, width]

No final norm: SEED applies its own `ln_vision` to all tokens. The release builds depth 39 of the 40-block
EVA-CLIP-g, so the second-last layer's features come out (BLIP-2, https://arxiv.org/abs/2301.12597).

Built on `zoo.nn.Block`, whose parameter names (`norm1`, `attn.qkv`, `attn.q_bias`, `attn.v_bias`, `attn.proj`,
`norm2`, `mlp.fc1`, `mlp.fc2`) are those of the official file; timm's `Eva` would add a final norm and head that
the release does not have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn import Block

__all__ = ["EVAViT", "resample_pos_embed"]

# `create_eva_vit_g` hard-codes mlp_ratio 4.3637 (hidden int(1408 * 4.3637) = 6144)
EVA_MLP_RATIO = 4.3637


def resample_pos_embed(table: torch.Tensor, grid: int) -> torch.Tensor:
    """`[1, 1 + g^2, C]` (cls entry first, grid row-major) -> `[1, 1 + grid^2, C]`, the grid part resized bicubically
    (official `interpolate_pos_embed`, used when a checkpoint was trained at another resolution)."""
    old = round((table.shape[1] - 1) ** 0.5)
    if old * old != table.shape[1] - 1:
        raise ValueError(f"pos_embed of shape {tuple(table.shape)} is not a cls entry plus a square grid")
    if old == grid:
        return table
    cls, patches = table[:, :1], table[:, 1:]
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(table.dtype)
    return torch.cat([cls, patches], dim=1)


class PatchEmbed(nn.Module):
    """Conv2d(3, width, p, stride p) -> `[B, (S/p)^2, width]`, row-major patches (`patch_embed.proj`)."""

    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EVAViT(nn.Module):
    """EVA ViT without a final norm; returns every token (cls first).

    Args:
        image_size: input side S (224 for the release; the position table fixes it).
        patch_size: patch side p (14).
        width, depth, num_heads: transformer size (1408, 39, 16 for ViT-g as SEED builds it).
        mlp_ratio: MLP hidden ratio (EVA's 4.3637).
        drop_path: maximum stochastic-depth rate, increased linearly over the blocks (0 in SEED).
    """

    def __init__(self, image_size: int = 224, patch_size: int = 14, width: int = 1408, depth: int = 39,
                 num_heads: int = 16, mlp_ratio: float = EVA_MLP_RATIO, drop_path: float = 0.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        self.grid = image_size // patch_size
        self.width = width
        self.patch_embed = PatchEmbed(patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, width))
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        # EVA attention: fused qkv without bias plus learnt q and v biases (zero key bias), LayerNorm eps 1e-6
        self.blocks = nn.ModuleList(
            Block(width, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias="qv", norm_eps=1e-6, drop_path=r)
            for r in rates
        )
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised pixels `[B, 3, S, S]` -> tokens `[B, 1 + grid^2, width]`."""
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x
