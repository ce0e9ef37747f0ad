"""Adaptive LayerNorm (AdaLN) conditioning: modulation, the AdaLN-zero transformer block and a modulated head.

DiT (https://arxiv.org/abs/2212.09748) predicts `shift, scale, gate` per sub-block from a condition vector and
initialises that predictor at zero so each block starts as the identity. Code bases disagree on the order of the
six chunks, so it is a constructor argument:

* DiT: `("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")` (`DIT_CHUNK_ORDER`)
* FlexTok: `("gate_msa", "gate_mlp", "shift_msa", "scale_msa", "shift_mlp", "scale_mlp")`

The modulation Linear sits at `adaLN_modulation.1` (`Sequential(SiLU, Linear)`), the layout of both releases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.nn.attention import Attention, RopeArg
from zoo.nn.mlp import make_mlp
from zoo.nn.norms import make_norm
from zoo.nn.transformer import DropPath

DIT_CHUNK_ORDER = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`x * (1 + scale) + shift`."""
    return x * (1 + scale) + shift


class AdaLNModulation(nn.Sequential):
    """`Linear(SiLU(cond))` split into named chunks of width `dim`, optionally per token group.

    A `Sequential(SiLU, Linear)`, so its parameters are `1.weight` / `1.bias`; blocks store it as
    `adaLN_modulation`. The output has `num_groups * len(chunks) * dim` features, viewed as
    `[..., groups, chunks, dim]`. With several groups each token picks its group through `group_ids` (FlexTok
    conditions patch tokens and register tokens with separate modulations, `adaLN_expansion=2`).

    Args:
        cond_dim: width of the condition vector.
        dim: width of each chunk (the token width).
        chunks: chunk names in the order they appear in the Linear output.
        num_groups: number of token groups with their own modulation.
        zero_init: initialise the Linear to zero (AdaLN-zero).
        bias: bias on the Linear.
    """

    def __init__(
        self,
        cond_dim: int,
        dim: int,
        chunks: Sequence[str],
        num_groups: int = 1,
        zero_init: bool = True,
        bias: bool = True,
    ) -> None:
        if len(set(chunks)) != len(chunks):
            raise ValueError(f"chunk names must be unique, got {list(chunks)}")
        super().__init__(nn.SiLU(), nn.Linear(cond_dim, num_groups * len(chunks) * dim, bias=bias))
        self.dim = dim
        self.chunks = tuple(chunks)
        self.num_groups = num_groups
        if zero_init:
            nn.init.zeros_(self[1].weight)
            if bias:
                nn.init.zeros_(self[1].bias)

    def forward(self, cond: torch.Tensor, group_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Chunks for a condition `[B, cond_dim]` (per sample) or `[B, N, cond_dim]` (per token).

        Returns a dict name -> tensor broadcastable against tokens `[B, N, dim]`: `[B, 1, dim]` for a per-sample
        condition with one group, `[B, N, dim]` otherwise. `group_ids` (`[N]` or `[B, N]`, values in
        `[0, num_groups)`) is required when `num_groups > 1`.
        """
        m = self[1](self[0](cond))
        k = len(self.chunks)
        per_token = cond.dim() == 3
        if not per_token:
            m = m[:, None]
        m = m.view(*m.shape[:2], self.num_groups, k, self.dim)
        if self.num_groups == 1:
            m = m[:, :, 0]
        else:
            if group_ids is None:
                raise ValueError(f"group_ids ([N] or [B, N]) is required with num_groups={self.num_groups}")
            gid = group_ids if group_ids.dim() == 2 else group_ids[None].expand(m.shape[0], -1)
            lo, hi = int(gid.min()), int(gid.max())
            if lo < 0 or hi >= self.num_groups:
                raise ValueError(f"group_ids must lie in [0, {self.num_groups}), got values in [{lo}, {hi}]")
            if not per_token and group_ids.dim() == 1:
                # one group per position shared by the batch: index the small [B, G, k, dim] table directly
                m = m[:, 0].index_select(1, group_ids.to(m.device).long())
            else:
                if not per_token:
                    m = m.expand(-1, gid.shape[1], -1, -1, -1)
                index = gid[:, :, None, None, None].expand(-1, -1, 1, k, self.dim)
                m = m.gather(2, index)[:, :, 0]
        return {name: m[:, :, i] for i, name in enumerate(self.chunks)}


class AdaLNZeroBlock(nn.Module):
    """Transformer block with AdaLN-zero conditioning (DiT):

    `x += gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa))`
    `x += gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp))`

    The norms default to parameter-free LayerNorms (eps 1e-6); use `norm="fp32_layernorm", norm_eps=1e-5` for
    FlexTok. Modulation parameters live at `adaLN_modulation.1.{weight,bias}`.

    Args:
        dim: token width.
        num_heads: attention heads.
        cond_dim: width of the condition; default `dim`.
        chunk_order: the six chunk names in Linear-output order (`DIT_CHUNK_ORDER` by default).
        num_cond_groups: token groups with their own modulation (FlexTok's `adaLN_expansion`).
        norm, norm_eps, norm_affine: block norms.
        mlp, mlp_ratio, act, mlp_bias: feed-forward (see `zoo.nn.mlp.make_mlp`).
        attention_kwargs: extra `Attention` kwargs (`head_dim`, `qkv_bias`, `fused_qkv`, `proj_bias`, `qk_norm`,
            `qk_norm_affine`, `qk_norm_eps`, `scale`, `attn_drop`, `proj_drop`).
        drop_path: stochastic-depth probability.
        zero_init: zero-initialise the modulation (the "zero" of AdaLN-zero).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        cond_dim: int | None = None,
        chunk_order: Sequence[str] = DIT_CHUNK_ORDER,
        num_cond_groups: int = 1,
        norm: str = "layernorm",
        norm_eps: float = 1e-6,
        norm_affine: bool = False,
        mlp: str = "mlp",
        mlp_ratio: float = 4.0,
        act: str | None = None,
        mlp_bias: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        drop_path: float = 0.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if sorted(chunk_order) != sorted(DIT_CHUNK_ORDER):
            raise ValueError(f"chunk_order must be a permutation of {DIT_CHUNK_ORDER}, got {list(chunk_order)}")
        self.norm1 = make_norm(norm, dim, eps=norm_eps, affine=norm_affine)
        self.attn = Attention(dim, num_heads=num_heads, **(attention_kwargs or {}))
        self.norm2 = make_norm(norm, dim, eps=norm_eps, affine=norm_affine)
        self.mlp = make_mlp(mlp, dim, mlp_ratio=mlp_ratio, act=act, bias=mlp_bias)
        self.adaLN_modulation = AdaLNModulation(
            dim if cond_dim is None else cond_dim, dim, chunk_order, num_groups=num_cond_groups, zero_init=zero_init
        )
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        *,
        group_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: RopeArg | None = None,
    ) -> torch.Tensor:
        """`x` `[B, N, dim]`, `cond` `[B, cond_dim]` or `[B, N, cond_dim]`; `group_ids` as in `AdaLNModulation`."""
        c = self.adaLN_modulation(cond, group_ids)
        h = modulate(self.norm1(x), c["shift_msa"], c["scale_msa"])
        a = self.attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal, rope=rope)
        x = x + self.drop_path(c["gate_msa"] * a)
        h = modulate(self.norm2(x), c["shift_mlp"], c["scale_mlp"])
        return x + self.drop_path(c["gate_mlp"] * self.mlp(h))


class AdaLNHead(nn.Module):
    """Final layer of a DiT-style decoder: `proj(modulate(norm(x), shift, scale))`.

    Parameters: `adaLN_modulation.1.{weight,bias}` and `proj.{weight,bias}` (FlexTok's `ToPatchesLinearHead` layout).

    Args:
        dim: token width.
        out_dim: output width of `proj`.
        cond_dim: width of the condition; default `dim`.
        chunk_order: order of `"shift"` and `"scale"` in the modulation output (shift first in DiT and FlexTok).
        norm, norm_eps, norm_affine: the norm before modulation.
        zero_init: zero-initialise the modulation and `proj` (DiT).
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        cond_dim: int | None = None,
        chunk_order: Sequence[str] = ("shift", "scale"),
        norm: str = "layernorm",
        norm_eps: float = 1e-6,
        norm_affine: bool = False,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if sorted(chunk_order) != ["scale", "shift"]:
            raise ValueError(f"chunk_order must be a permutation of ('shift', 'scale'), got {list(chunk_order)}")
        self.norm = make_norm(norm, dim, eps=norm_eps, affine=norm_affine)
        self.adaLN_modulation = AdaLNModulation(
            dim if cond_dim is None else cond_dim, dim, chunk_order, zero_init=zero_init
        )
        self.proj = nn.Linear(dim, out_dim)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """`x` `[B, N, dim]`, `cond` `[B, cond_dim]` or `[B, N, cond_dim]`."""
        c = self.adaLN_modulation(cond)
        return self.proj(modulate(self.norm(x), c["shift"], c["scale"]))
