"""GigaTok's transformer stages between the CNNs and the quantiser.

1D layout (`VQVitModelPlus`): a Q-Former encoder turns the CNN grid into N latent tokens (queries initialised by
multi-level average pooling of the grid), and a Q-Former decoder turns N tokens back into the grid (queries
initialised from the first token). Both use DETR pre-norm decoder layers: self-attention on `norm1(t) + pos`,
cross-attention with queries `norm2(t) + pos` and keys `memory + memory_pos`, values `memory`, then an MLP.
2D layout (`VQVitModel2DPlus`): plain pre-norm ViT blocks on the grid tokens, positions added once at the input.

Every stage takes and returns token sequences `[B, L, C]` (batch first); grids are row-major (token = h * W + w).
LayerNorms use eps 1e-5 (torch's default, as the official code).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn import Block, CrossAttentionBlock

__all__ = ["QueryEncoder", "QueryDecoder", "GridEncoder", "GridDecoder", "SemanticHead", "multi_level_queries"]

_LN_EPS = 1e-5


def _level_blocks(level: int) -> tuple[int, int]:
    """(rows, cols) of the pooling grid of level `level`: columns split first (1x1, 1x2, 2x2, 2x4, ...)."""
    return 2 ** (level // 2), 2 ** ((level + 1) // 2)


def multi_level_queries(grid: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Coarse-to-fine average pools of `grid` `[B, C, H, W]` -> `[B, num_tokens, C]` (GigaTok query init).

    With `n = log2(num_tokens)`, group i = 0..n pools with level `max(i - 1, 0)`, so groups 0 and 1 are both the
    global average and the group sizes are 1, 1, 2, 4, ..., 2^(n-1) (summing to `num_tokens`). Each group is
    flattened row-major.
    """
    n_level = round(math.log2(num_tokens))
    h, w = grid.shape[-2:]
    groups = []
    for i in range(n_level + 1):
        rows, cols = _level_blocks(max(i - 1, 0))
        groups.append(F.avg_pool2d(grid, kernel_size=(h // rows, w // cols)).flatten(2))
    return torch.cat(groups, dim=2).transpose(1, 2)


def check_multi_level(num_tokens: int, grid_size: int) -> None:
    """Raise unless `multi_level_queries` can make `num_tokens` queries from a `grid_size`^2 grid."""
    n_level = round(math.log2(num_tokens)) if num_tokens > 0 else -1
    if num_tokens < 2 or 2**n_level != num_tokens:
        raise ValueError(f"multi_level_query_init needs num_latent_tokens to be a power of two >= 2, got {num_tokens}")
    rows, cols = _level_blocks(n_level - 1)
    if grid_size % rows or grid_size % cols:
        raise ValueError(
            f"multi_level_query_init with {num_tokens} tokens pools the {grid_size}x{grid_size} grid into "
            f"{rows}x{cols} blocks, which does not divide it; use fewer tokens or a larger grid"
        )


def _cross_block(width: int, heads: int, dropout: float) -> CrossAttentionBlock:
    return CrossAttentionBlock(
        width, heads, qkv_bias=True, norm_eps=_LN_EPS, attn_drop=dropout, proj_drop=dropout, mlp_drop=dropout
    )


def _self_block(width: int, heads: int, dropout: float) -> Block:
    return Block(width, heads, qkv_bias=True, norm_eps=_LN_EPS, attn_drop=dropout, proj_drop=dropout, mlp_drop=dropout)


def _check_grid(tokens: torch.Tensor, expected: int, what: str) -> None:
    if tokens.shape[1] != expected:
        raise ValueError(
            f"{what} has learnt absolute positions for {expected} tokens, got {tokens.shape[1]}; GigaTok only runs "
            "at the image size it was built for"
        )


class SemanticHead(nn.Module):
    """`fc3(silu(fc2(silu(fc1(x)))))`, width -> 4 width -> 4 width -> out_dim: projects decoder tokens onto the
    teacher's feature space for the semantic regularisation (REPA-style projector, official `distill_mlp`)."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, 4 * width)
        self.fc3 = nn.Linear(4 * width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.silu(self.fc2(F.silu(self.fc1(x)))))


class QueryEncoder(nn.Module):
    """CNN grid tokens `[B, G, z]` -> `num_tokens` latent tokens `[B, N, z]` (official `ViTEncoder`).

    Args:
        in_dim: token width in and out (`z_channels`).
        width, depth, num_heads: transformer size.
        grid_tokens: G, the number of grid positions (absolute position table).
        num_tokens: N latent tokens.
        multi_level_init: initialise the queries by `multi_level_queries` (else the global mean, repeated).
        dropout: dropout in attention and MLP.
    """

    def __init__(
        self, in_dim: int, width: int, depth: int, num_heads: int, grid_tokens: int, num_tokens: int,
        multi_level_init: bool = True, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.grid_size = math.isqrt(grid_tokens)
        self.num_tokens = num_tokens
        self.multi_level_init = multi_level_init
        if multi_level_init:
            check_multi_level(num_tokens, self.grid_size)
        scale = width**-0.5
        self.norm_in = nn.LayerNorm(in_dim, eps=_LN_EPS)
        self.embed = nn.Linear(in_dim, width)
        self.pos_embed = nn.Parameter(scale * torch.randn(1, grid_tokens, width))
        self.query_pos_embed = nn.Parameter(scale * torch.randn(1, num_tokens, width))
        self.query_proj = nn.Linear(width, width)
        self.blocks = nn.ModuleList(_cross_block(width, num_heads, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, eps=_LN_EPS)
        self.proj_out = nn.Linear(width, in_dim)

    def forward(self, grid_tokens: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        """`return_features`: the normalised tokens `[B, N, width]` before `proj_out` (linear-probe features)."""
        _check_grid(grid_tokens, self.pos_embed.shape[1], "the GigaTok ViT encoder")
        memory = self.embed(self.norm_in(grid_tokens))
        if self.multi_level_init:
            grid = memory.transpose(1, 2).unflatten(2, (self.grid_size, self.grid_size))
            queries = multi_level_queries(grid, self.num_tokens)
        else:
            queries = memory.mean(1, keepdim=True).expand(-1, self.num_tokens, -1)
        x = self.query_proj(queries)
        for block in self.blocks:
            x = block(x, memory, pos=self.query_pos_embed, context_pos=self.pos_embed)
        x = self.norm_out(x)
        return x if return_features else self.proj_out(x)


def _check_feature_depth(feature_depth: int | None, depth: int) -> None:
    if feature_depth is not None and not 1 <= feature_depth <= depth:
        raise ValueError(f"semantic_depth must lie in [1, {depth}] (the decoder depth), got {feature_depth}")


def _run_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, keep_after: int | None, *args, **kwargs
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `blocks` in order; also return the tokens after block `keep_after` (1-based; None: no hidden)."""
    hidden = None
    for i, block in enumerate(blocks, start=1):
        x = block(x, *args, **kwargs)
        if i == keep_after:
            hidden = x
    return x, hidden


class QueryDecoder(nn.Module):
    """Latent tokens `[B, N, z]` -> grid map `[B, z, g, g]` (official `ViTDecoder`), optionally also the hidden
    grid tokens after block `feature_depth` (the features of the semantic regularisation).

    Args:
        in_dim: token width (`z_channels`).
        width, depth, num_heads: transformer size.
        grid_tokens: g^2 output positions.
        num_tokens: N, the size of the latent position table.
        feature_depth: 1-based block whose output `forward` can return (None: no feature hook).
        semantic_dim: output width of `semantic_head` (None or 0: no head).
        dropout: dropout in attention and MLP.
    """

    def __init__(
        self, in_dim: int, width: int, depth: int, num_heads: int, grid_tokens: int, num_tokens: int,
        feature_depth: int | None = None, semantic_dim: int | None = None, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_feature_depth(feature_depth, depth)
        self.grid_size = math.isqrt(grid_tokens)
        self.feature_depth = feature_depth
        scale = width**-0.5
        self.norm_in = nn.LayerNorm(in_dim, eps=_LN_EPS)
        self.embed = nn.Linear(in_dim, width)
        self.pos_embed = nn.Parameter(scale * torch.randn(1, grid_tokens, width))
        self.latent_pos_embed = nn.Parameter(scale * torch.randn(1, num_tokens, width))
        self.blocks = nn.ModuleList(_cross_block(width, num_heads, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, eps=_LN_EPS)
        self.conv_out = nn.Conv2d(width, in_dim, 3, padding=1)
        self.semantic_head = SemanticHead(width, semantic_dim) if semantic_dim and feature_depth else None

    def forward(
        self, tokens: torch.Tensor, return_hidden: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns `(grid map [B, z, g, g], hidden tokens after block feature_depth [B, g^2, width] when
        return_hidden, else None)`, both from one pass."""
        if tokens.shape[1] > self.latent_pos_embed.shape[1]:
            raise ValueError(
                f"the GigaTok ViT decoder takes at most {self.latent_pos_embed.shape[1]} tokens, got {tokens.shape[1]}"
            )
        memory = self.embed(self.norm_in(tokens))
        context_pos = self.latent_pos_embed[:, : tokens.shape[1]]
        b, width = memory.shape[0], memory.shape[2]
        x = memory[:, :1].expand(b, self.pos_embed.shape[1], width)
        x, hidden = _run_blocks(self.blocks, x, self.feature_depth if return_hidden else None,
                                memory, pos=self.pos_embed, context_pos=context_pos)
        x = self.norm_out(x).transpose(1, 2).unflatten(2, (self.grid_size, self.grid_size))
        return self.conv_out(x), hidden


class GridEncoder(nn.Module):
    """CNN grid tokens `[B, G, z]` -> the same number of tokens `[B, G, z]` (official `ViTEncoder2D` with
    `TransformerLayer`): `proj_out(norm_out(blocks(embed(norm_in(t)) + pos)))`."""

    def __init__(
        self, in_dim: int, width: int, depth: int, num_heads: int, grid_tokens: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(in_dim, eps=_LN_EPS)
        self.embed = nn.Linear(in_dim, width)
        self.pos_embed = nn.Parameter(width**-0.5 * torch.randn(1, grid_tokens, width))
        self.blocks = nn.ModuleList(_self_block(width, num_heads, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, eps=_LN_EPS)
        self.proj_out = nn.Linear(width, in_dim)

    def forward(self, grid_tokens: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        _check_grid(grid_tokens, self.pos_embed.shape[1], "the GigaTok 2D ViT encoder")
        x = self.embed(self.norm_in(grid_tokens)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm_out(x)
        return x if return_features else self.proj_out(x)


class GridDecoder(nn.Module):
    """Grid tokens `[B, G, z]` -> grid map `[B, z, g, g]` (official `ViTDecoder2D` with `TransformerLayer`), with
    the same feature hook as `QueryDecoder`."""

    def __init__(
        self, in_dim: int, width: int, depth: int, num_heads: int, grid_tokens: int,
        feature_depth: int | None = None, semantic_dim: int | None = None, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_feature_depth(feature_depth, depth)
        self.grid_size = math.isqrt(grid_tokens)
        self.feature_depth = feature_depth
        self.norm_in = nn.LayerNorm(in_dim, eps=_LN_EPS)
        self.embed = nn.Linear(in_dim, width)
        self.pos_embed = nn.Parameter(width**-0.5 * torch.randn(1, grid_tokens, width))
        self.blocks = nn.ModuleList(_self_block(width, num_heads, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, eps=_LN_EPS)
        self.conv_out = nn.Conv2d(width, in_dim, 3, padding=1)
        self.semantic_head = SemanticHead(width, semantic_dim) if semantic_dim and feature_depth else None

    def forward(
        self, tokens: torch.Tensor, return_hidden: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        _check_grid(tokens, self.pos_embed.shape[1], "the GigaTok 2D ViT decoder")
        x = self.embed(self.norm_in(tokens)) + self.pos_embed
        x, hidden = _run_blocks(self.blocks, x, self.feature_depth if return_hidden else None)
        x = self.norm_out(x).transpose(1, 2).unflatten(2, (self.grid_size, self.grid_size))
        return self.conv_out(x), hidden
