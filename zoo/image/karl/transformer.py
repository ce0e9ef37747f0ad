"""KARL's latent-distillation transformers (official `modules/latent_distillation_modules.py`).

Encoder sequence (no attention mask): `[error token | image tokens + 2D positions | latent_tokens[:T]]`, where an
image token is `patch_embed(x)` (a 16x16 conv on the raw [0, 1] image) concatenated on channels with the VQGAN's
continuous latent at the same grid cell. Two LayerNorm heads read the T latent outputs: `halting_mlp` (the halting
logit) and `quant_proj` (the factorised latent before the l2-normalised VQ).

Decoder sequence: `[mask_token + 2D positions (G) | latent_proj(code) + latent_pos_embed[position] (L)]`, where only
the active latents are present (halted ones are dropped, which the official code does with an attention mask; the
fixture README checks the two give the same logits). The G outputs go through LayerNorm and a Tanh MLP to logits
over the base VQGAN's codes.

Blocks are pre-norm `zoo.nn.Block`s with LayerNorm eps 1e-5, q/k/v biases and an exact-erf GELU MLP of ratio 4, the
official `ResidualAttentionBlock` (its sequence-first `nn.MultiheadAttention` has the same packed q;k;v weights).
Positional tables are channel-first `(W, M, M)` and sampled to the g x g grid with nearest interpolation, as the
official `F.interpolate` call does (stride M / g).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.image.karl.binning import ERROR_BINS, error_bin
from zoo.nn import Block

__all__ = ["Head", "LatentDecoder", "LatentEncoder", "sample_grid_table"]


def _block(width: int, heads: int) -> Block:
    return Block(width, heads, qkv_bias=True, norm_eps=1e-5)


def sample_grid_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Channel-first `(W, M, M)` table -> `[1, grid*grid, W]` by nearest interpolation (row-major cells)."""
    sampled = F.interpolate(table[None], size=(grid, grid))
    return sampled.reshape(1, table.shape[0], -1).permute(0, 2, 1)


class Head(nn.Module):
    """`fc2(tanh(fc1(x)))` (the official `halting_mlp` and decoder `ffn`)."""

    def __init__(self, width: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LatentEncoder(nn.Module):
    """Image tokens + error condition -> per latent token a halting logit and a pre-quantisation vector.

    Args:
        width, depth, heads: transformer size.
        patch_size: `patch_embed` kernel and stride (= the VQGAN's downsampling factor).
        vqgan_dim: channels of the VQGAN latent concatenated to each patch embedding.
        codebook_dim: width of the factorised latent (12).
        max_grid: side M of the positional table.
        max_tokens: rows of the latent query table (512: the largest budget).
        halting_hidden: hidden width of `halting_mlp` (512).
    """

    def __init__(self, width: int, depth: int, heads: int, patch_size: int, vqgan_dim: int, codebook_dim: int,
                 max_grid: int, max_tokens: int, halting_hidden: int) -> None:
        super().__init__()
        if width <= vqgan_dim:
            raise ValueError(f"encoder_width ({width}) must exceed the VQGAN latent width ({vqgan_dim}): each image "
                             "token is a patch embedding of width - vqgan_dim concatenated with the VQGAN latent")
        scale = width**-0.5
        self.patch_embed = nn.Conv2d(3, width - vqgan_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(scale * torch.randn(width, max_grid, max_grid))
        self.latent_tokens = nn.Parameter(scale * torch.randn(max_tokens, width))
        # one learnt row per error bin, initialised as the bin value repeated (official)
        self.error_embeddings = nn.Parameter(torch.tensor(ERROR_BINS)[:, None].repeat(1, width))
        self.norm_in = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(_block(width, heads) for _ in range(depth))
        self.halt_norm = nn.LayerNorm(width)
        self.halting_mlp = Head(width, halting_hidden, 1)
        self.quant_norm = nn.LayerNorm(width)
        self.quant_proj = nn.Linear(width, codebook_dim)

    @property
    def max_tokens(self) -> int:
        return self.latent_tokens.shape[0]

    def image_tokens(self, x: torch.Tensor, vqgan_map: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` in [0, 1] and the VQGAN map `[B, D, g, g]` -> `[B, g*g, width]` (with positions)."""
        patches = self.patch_embed(x)
        if patches.shape[-2:] != vqgan_map.shape[-2:]:
            raise ValueError(f"patch grid {tuple(patches.shape[-2:])} and VQGAN grid {tuple(vqgan_map.shape[-2:])} "
                             "differ; patch_size must equal the VQGAN downsampling factor")
        tokens = torch.cat([patches.flatten(2), vqgan_map.flatten(2).to(patches.dtype)], dim=1).transpose(1, 2)
        return tokens + sample_grid_table(self.pos_embed, patches.shape[-1]).to(tokens.dtype)

    def forward(self, image_tokens: torch.Tensor, errors: torch.Tensor, num_tokens: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (halting logits `[B, T]`, pre-quantisation latents `[B, T, codebook_dim]`), T = `num_tokens`."""
        b, g = image_tokens.shape[:2]
        cond = self.error_embeddings[error_bin(errors)][:, None].to(image_tokens.dtype)
        queries = self.latent_tokens[:num_tokens][None].expand(b, -1, -1).to(image_tokens.dtype)
        h = self.norm_in(torch.cat([cond, image_tokens, queries], dim=1))
        for block in self.blocks:
            h = block(h)
        latents = h[:, 1 + g:]
        return self.halting_mlp(self.halt_norm(latents))[..., 0], self.quant_proj(self.quant_norm(latents))


class LatentDecoder(nn.Module):
    """Active latent codes (with their token positions) -> logits `[B, G, vqgan_codebook_size]` over the base codes.

    Args:
        width, depth, heads: transformer size.
        codebook_dim: width of the latent codes.
        num_codes: the base VQGAN's codebook size (logit width).
        max_grid, max_tokens: sizes of the 2D positional table and of the latent position ("timestep") table.
        encoder_width: the encoder's width, whose `width ** -0.5` scales the official initialisation.
    """

    def __init__(self, width: int, depth: int, heads: int, codebook_dim: int, num_codes: int, max_grid: int,
                 max_tokens: int, encoder_width: int) -> None:
        super().__init__()
        scale = encoder_width**-0.5
        self.latent_proj = nn.Linear(codebook_dim, width)
        self.latent_pos_embed = nn.Parameter(scale * torch.randn(max_tokens, width))
        self.mask_token = nn.Parameter(scale * torch.randn(1, 1, width))
        self.pos_embed = nn.Parameter(scale * torch.randn(width, max_grid, max_grid))
        self.norm_in = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(_block(width, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width)
        self.head = Head(width, 2 * width, num_codes)

    def forward(self, codes: torch.Tensor, positions: torch.Tensor, grid: int,
                padding: torch.Tensor | None = None) -> torch.Tensor:
        """Codes `[B, L, codebook_dim]` at token positions `[B, L]` (or `[L]`); `padding` `[B, L]` True marks latents
        no one may attend to (padding or halted). Returns logits `[B, grid*grid, num_codes]`."""
        b = codes.shape[0]
        latents = self.latent_proj(codes) + self.latent_pos_embed[positions].to(codes.dtype)
        queries = (self.mask_token + sample_grid_table(self.pos_embed, grid)).expand(b, -1, -1).to(latents.dtype)
        g = queries.shape[1]
        mask = None
        if padding is not None and bool(padding.any()):
            mask = torch.cat([padding.new_zeros(b, g), padding], dim=1)
        h = self.norm_in(torch.cat([queries, latents], dim=1))
        for block in self.blocks:
            h = block(h, key_padding_mask=mask)
        return self.head(self.norm_out(h[:, :g]))
