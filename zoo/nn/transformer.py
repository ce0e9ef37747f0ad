"""Pre-norm (or post-norm) transformer blocks and a plain stack of them.

`Block`: `x += ls1(attn(norm1(x)))`, `x += ls2(mlp(norm2(x)))`.
`CrossAttentionBlock`: self-attention, cross-attention to a context, MLP (DETR / Q-Former decoder layer).
Every option is a plain keyword so that family constructors can forward their JSON config unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.nn.attention import Attention, RopeArg
from zoo.nn.mlp import make_mlp
from zoo.nn.norms import make_norm


class DropPath(nn.Module):
    """Stochastic depth per sample (https://arxiv.org/abs/1603.09382): zero a residual branch with probability
    `p` during training and rescale the kept ones by `1 / (1 - p)`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learnt residual scale `x * gamma`, `gamma` initialised to `init` (CaiT,
    https://arxiv.org/abs/2103.17239)."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _layerscale(dim: int, init: float | None) -> nn.Module:
    return nn.Identity() if init is None else LayerScale(dim, init)


def _attention_kwargs(
    num_heads: int,
    head_dim: int | None,
    qkv_bias: bool | str,
    fused_qkv: bool,
    proj_bias: bool,
    qk_norm: str | None,
    qk_norm_affine: bool,
    qk_norm_eps: float,
    attn_scale: float | None,
    attn_drop: float,
    proj_drop: float,
) -> dict[str, Any]:
    return {
        "num_heads": num_heads,
        "head_dim": head_dim,
        "qkv_bias": qkv_bias,
        "fused_qkv": fused_qkv,
        "proj_bias": proj_bias,
        "qk_norm": qk_norm,
        "qk_norm_affine": qk_norm_affine,
        "qk_norm_eps": qk_norm_eps,
        "scale": attn_scale,
        "attn_drop": attn_drop,
        "proj_drop": proj_drop,
    }


class Block(nn.Module):
    """Transformer block with self-attention and a feed-forward.

    Pre-norm (default): `x = x + dp(ls1(attn(norm1(x)))); x = x + dp(ls2(mlp(norm2(x))))`.
    Post-norm (`norm_first=False`, BERT): `x = norm1(x + attn(x)); x = norm2(x + mlp(x))`.

    Args:
        dim: token width.
        num_heads, head_dim, qkv_bias, fused_qkv, proj_bias, qk_norm, qk_norm_affine, qk_norm_eps: see `Attention`.
        attn_scale: softmax scale (default `head_dim ** -0.5`).
        mlp: `"mlp"`, `"swiglu"` or `"glu"` (see `zoo.nn.mlp.make_mlp`).
        mlp_ratio: hidden width ratio.
        act: MLP activation (default gelu for `"mlp"`, silu for gated).
        mlp_bias: biases in the MLP.
        norm: `"layernorm"`, `"fp32_layernorm"`, `"rmsnorm"` or `"none"`.
        norm_eps, norm_affine, norm_bias: norm options (`norm_affine=False` gives a parameter-free norm).
        layerscale: LayerScale init value, or None for no LayerScale.
        drop_path: stochastic-depth probability.
        attn_drop, proj_drop, mlp_drop: dropout rates.
        norm_first: pre-norm (True) or post-norm (False).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        head_dim: int | None = None,
        mlp_ratio: float = 4.0,
        mlp: str = "mlp",
        act: str | None = None,
        mlp_bias: bool = True,
        qkv_bias: bool | str = False,
        fused_qkv: bool = True,
        proj_bias: bool = True,
        qk_norm: str | None = None,
        qk_norm_affine: bool = True,
        qk_norm_eps: float = 1e-6,
        attn_scale: float | None = None,
        norm: str = "layernorm",
        norm_eps: float = 1e-6,
        norm_affine: bool = True,
        norm_bias: bool = True,
        layerscale: float | None = None,
        drop_path: float = 0.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mlp_drop: float = 0.0,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = make_norm(norm, dim, eps=norm_eps, affine=norm_affine, bias=norm_bias)
        self.attn = Attention(
            dim,
            **_attention_kwargs(
                num_heads, head_dim, qkv_bias, fused_qkv, proj_bias, qk_norm, qk_norm_affine, qk_norm_eps,
                attn_scale, attn_drop, proj_drop,
            ),
        )
        self.ls1 = _layerscale(dim, layerscale)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = make_norm(norm, dim, eps=norm_eps, affine=norm_affine, bias=norm_bias)
        self.mlp = make_mlp(mlp, dim, mlp_ratio=mlp_ratio, act=act, bias=mlp_bias, drop=mlp_drop)
        self.ls2 = _layerscale(dim, layerscale)
        self.drop_path2 = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: RopeArg | None = None,
        pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`x` `[B, N, dim]`. `pos` (broadcastable to x) is added to the attention's query and key input only, not
        to the value (DETR style); masks as in `Attention`."""
        mask_kw = {"attn_mask": attn_mask, "key_padding_mask": key_padding_mask, "is_causal": is_causal, "rope": rope}
        if self.norm_first:
            h = self.norm1(x)
            a = self.attn(h, value=h, **mask_kw) if pos is None else self.attn(h + pos, value=h, **mask_kw)
            x = x + self.drop_path1(self.ls1(a))
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        a = self.attn(x, value=x, **mask_kw) if pos is None else self.attn(x + pos, value=x, **mask_kw)
        x = self.norm1(x + self.drop_path1(self.ls1(a)))
        return self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))


def _block_options(block_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`Block`'s options after `dim`/`num_heads`/`head_dim`, with `block_kwargs` over `Block`'s defaults, so that the
    other blocks take the same options without a second copy of their names and defaults."""
    params = inspect.signature(Block).parameters
    options = {name: p.default for name, p in params.items() if name not in ("dim", "num_heads", "head_dim")}
    unknown = sorted(set(block_kwargs) - set(options))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; the block options are {sorted(options)}")
    return {**options, **block_kwargs}


class CrossAttentionBlock(nn.Module):
    """Decoder layer: optional self-attention, cross-attention to a context, feed-forward.

    Pre-norm: `x += attn(norm1(x))`, `x += cross_attn(norm2(x), context)`, `x += mlp(norm3(x))`
    (DETR `normalize_before=True`); post-norm with `norm_first=False` (BERT / Q-Former layer).
    With `self_attn=False` the block has no `norm1`/`attn`.

    Args:
        dim: token width.
        context_dim: width of the context; default `dim`.
        self_attn: include the self-attention sub-block.
        context_norm: also normalise the context (`norm_context`) before the cross-attention.
        num_heads, head_dim: as in `Block`.
        **block_kwargs: every other `Block` option, with the same names and defaults. Both attentions share the
            head/bias/qk-norm options; the cross-attention uses separate `q`, `k`, `v` projections when
            `context_dim != dim`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        context_dim: int | None = None,
        head_dim: int | None = None,
        self_attn: bool = True,
        context_norm: bool = False,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        o = _block_options(block_kwargs)
        context_dim = dim if context_dim is None else context_dim
        self.norm_first = o["norm_first"]
        attn_kw = _attention_kwargs(
            num_heads, head_dim, o["qkv_bias"], o["fused_qkv"], o["proj_bias"], o["qk_norm"], o["qk_norm_affine"],
            o["qk_norm_eps"], o["attn_scale"], o["attn_drop"], o["proj_drop"],
        )

        def norm_layer(width: int) -> nn.Module:
            return make_norm(o["norm"], width, eps=o["norm_eps"], affine=o["norm_affine"], bias=o["norm_bias"])

        if self_attn:
            self.norm1 = norm_layer(dim)
            self.attn = Attention(dim, **attn_kw)
            self.ls1 = _layerscale(dim, o["layerscale"])
        else:
            self.norm1 = self.attn = self.ls1 = None
        self.norm2 = norm_layer(dim)
        self.norm_context = norm_layer(context_dim) if context_norm else nn.Identity()
        cross_kw = dict(attn_kw, fused_qkv=o["fused_qkv"] and context_dim == dim)
        self.cross_attn = Attention(dim, kv_dim=context_dim, **cross_kw)
        self.ls2 = _layerscale(dim, o["layerscale"])
        self.norm3 = norm_layer(dim)
        self.mlp = make_mlp(
            o["mlp"], dim, mlp_ratio=o["mlp_ratio"], act=o["act"], bias=o["mlp_bias"], drop=o["mlp_drop"]
        )
        self.ls3 = _layerscale(dim, o["layerscale"])
        self.drop_path = DropPath(o["drop_path"])

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        context_mask: torch.Tensor | None = None,
        context_padding_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        context_pos: torch.Tensor | None = None,
        rope: RopeArg | None = None,
    ) -> torch.Tensor:
        """`x` `[B, N, dim]` queries, `context` `[B, M, context_dim]`.

        `attn_mask`/`key_padding_mask`/`is_causal`/`rope` apply to the self-attention; `context_mask` `[N, M]`
        (bool, True = may attend) and `context_padding_mask` `[B, M]` (True = padding) to the cross-attention.
        `pos` is added to the queries (and self-attention keys), `context_pos` to the cross-attention keys only.
        """
        self_kw = {"attn_mask": attn_mask, "key_padding_mask": key_padding_mask, "is_causal": is_causal, "rope": rope}
        cross_kw = {"attn_mask": context_mask, "key_padding_mask": context_padding_mask}
        mem = self.norm_context(context)
        mem_k = mem if context_pos is None else mem + context_pos
        if self.norm_first:
            if self.attn is not None:
                h = self.norm1(x)
                qk = h if pos is None else h + pos
                x = x + self.drop_path(self.ls1(self.attn(qk, value=h, **self_kw)))
            h = self.norm2(x)
            q = h if pos is None else h + pos
            x = x + self.drop_path(self.ls2(self.cross_attn(q, mem_k, mem, **cross_kw)))
            return x + self.drop_path(self.ls3(self.mlp(self.norm3(x))))
        if self.attn is not None:
            qk = x if pos is None else x + pos
            x = self.norm1(x + self.drop_path(self.ls1(self.attn(qk, value=x, **self_kw))))
        q = x if pos is None else x + pos
        x = self.norm2(x + self.drop_path(self.ls2(self.cross_attn(q, mem_k, mem, **cross_kw))))
        return self.norm3(x + self.drop_path(self.ls3(self.mlp(x))))


class Transformer(nn.Module):
    """A stack of `depth` `Block`s (`blocks.{i}`), with an optional final norm (`norm`).

    Args:
        dim: token width.
        depth: number of blocks.
        drop_path: maximum stochastic-depth rate, increased linearly from 0 over the blocks.
        final_norm: add a final norm of the same kind as the blocks' norms.
        **block_kwargs: forwarded to every `Block`.
    """

    def __init__(
        self, dim: int, depth: int, drop_path: float = 0.0, final_norm: bool = False, **block_kwargs: Any
    ) -> None:
        super().__init__()
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, drop_path=r, **block_kwargs) for r in rates)
        if final_norm:
            self.norm = make_norm(
                block_kwargs.get("norm", "layernorm"),
                dim,
                eps=block_kwargs.get("norm_eps", 1e-6),
                affine=block_kwargs.get("norm_affine", True),
                bias=block_kwargs.get("norm_bias", True),
            )
        else:
            self.norm = nn.Identity()

    def forward(
        self, x: torch.Tensor, *, return_layers: Sequence[int] | None = None, **block_kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks on `x` `[B, N, dim]`; masks/`rope`/`pos` go to every block.

        With `return_layers` (1-based block indices, e.g. `[3]` for the output of the third block) it also returns
        those intermediate outputs (before the final norm), for feature losses such as REPA or GigaTok's semantic
        regularisation.
        """
        wanted = set(return_layers or ())
        bad = [i for i in wanted if not 1 <= i <= len(self.blocks)]
        if bad:
            raise ValueError(f"return_layers must lie in [1, {len(self.blocks)}], got {sorted(bad)}")
        feats = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, **block_kwargs)
            if i in wanted:
                feats.append(x)
        x = self.norm(x)
        return (x, feats) if return_layers is not None else x
