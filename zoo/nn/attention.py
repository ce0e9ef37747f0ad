"""Multi-head attention on `F.scaled_dot_product_attention`, with the options the tokenizer families need.

Mask conventions (the two PyTorch ones, kept so that they read the same as in torch):

* `attn_mask`: bool `[N, M]`, `[B, N, M]` or `[B, H, N, M]`, **True = may attend** (SDPA convention); a float mask
  of the same shapes is added to the logits instead.
* `key_padding_mask`: bool `[B, M]`, **True = padded key, ignored** (`nn.MultiheadAttention` convention).
  `lengths_to_padding_mask(lengths, M)` builds it from valid lengths.
* `is_causal`: query i sees keys j <= i (top-left aligned when N != M).

All given masks are combined with AND. A query row that may attend to no key at all (for example a padded query in
a packed sequence) returns zeros instead of NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.norms import make_norm
from zoo.nn.posemb import apply_rotary

RopeArg = tuple[torch.Tensor, torch.Tensor] | Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_QK_NORMS = {
    None: "none", "none": "none", "layernorm": "layernorm", "fp32_layernorm": "fp32_layernorm", "rmsnorm": "rmsnorm"
}


def lengths_to_padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Bool `[B, max_len]`, True at positions >= lengths[b] (padding), for `key_padding_mask`."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be a 1D tensor [B], got shape {tuple(lengths.shape)}")
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None] >= lengths[:, None]


def causal_mask(n: int, m: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Bool `[n, m]`, True where key j <= query i (top-left aligned)."""
    m = n if m is None else m
    return torch.ones(n, m, dtype=torch.bool, device=device).tril()


def _as_4d(mask: torch.Tensor, n: int, m: int) -> torch.Tensor:
    if mask.shape[-2:] != (n, m):
        raise ValueError(f"attn_mask must end in [N, M] = [{n}, {m}], got shape {tuple(mask.shape)}")
    if mask.dim() == 2:
        return mask[None, None]
    if mask.dim() == 3:
        return mask[:, None]
    if mask.dim() == 4:
        return mask
    raise ValueError(f"attn_mask must be [N, M], [B, N, M] or [B, H, N, M], got shape {tuple(mask.shape)}")


def build_attention_mask(
    n: int,
    m: int,
    attn_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    device: torch.device | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Combine the mask arguments into `(allowed, bias)`: a bool 4D mask (True = may attend) and a float 4D bias.

    Either may be None. Exposed so that blocks which do not go through `Attention` share one convention.
    """
    allowed = None
    bias = None
    if attn_mask is not None:
        mask = _as_4d(attn_mask, n, m)
        if mask.dtype == torch.bool:
            allowed = mask
        elif mask.is_floating_point():
            bias = mask
        else:
            raise TypeError(f"attn_mask must be bool (True = may attend) or float (additive), got {mask.dtype}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be bool (True = padding), got {key_padding_mask.dtype}")
        if key_padding_mask.dim() != 2 or key_padding_mask.shape[1] != m:
            raise ValueError(f"key_padding_mask must be [B, M={m}], got shape {tuple(key_padding_mask.shape)}")
        keep = ~key_padding_mask[:, None, None, :]
        allowed = keep if allowed is None else allowed & keep
    if is_causal:
        tri = causal_mask(n, m, device=device)[None, None]
        allowed = tri if allowed is None else allowed & tri
    return allowed, bias


class Attention(nn.Module):
    """Multi-head self- or cross-attention.

    Parameters are `qkv` (fused, rows `[q; k; v]`) or `q`, `k`, `v` (separate), optional `q_bias`/`v_bias`
    (`qkv_bias="qv"`), `q_norm`/`k_norm` (qk-norm over head_dim) and the output `proj`.

    Args:
        dim: query (and output) width.
        num_heads: number of heads.
        head_dim: per-head width; defaults to `dim // num_heads`.
        kv_dim: width of the key/value input for cross-attention; defaults to `dim`.
        out_dim: output width of `proj`; defaults to `dim`.
        qkv_bias: True / False, or `"qv"` for a learnt q and v bias with a zero key bias (EVA / BEiT layout).
        fused_qkv: one `qkv` Linear instead of `q`, `k`, `v` (needs `kv_dim == dim`).
        proj_bias: bias on the output projection.
        qk_norm: None, `"layernorm"`, `"fp32_layernorm"` or `"rmsnorm"`, applied per head to q and k after the head
            split.
        qk_norm_affine: learnable qk-norm weights (and LayerNorm bias).
        qk_norm_eps: qk-norm epsilon.
        scale: softmax scale; defaults to `head_dim ** -0.5` (FlexTok's muP uses `8 / head_dim`).
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        head_dim: int | None = None,
        kv_dim: int | None = None,
        out_dim: int | None = None,
        qkv_bias: bool | str = False,
        fused_qkv: bool = True,
        proj_bias: bool = True,
        qk_norm: str | None = None,
        qk_norm_affine: bool = True,
        qk_norm_eps: float = 1e-6,
        scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}), or pass head_dim")
            head_dim = dim // num_heads
        kv_dim = dim if kv_dim is None else kv_dim
        if fused_qkv and kv_dim != dim:
            raise ValueError(f"fused_qkv needs kv_dim == dim, got kv_dim={kv_dim}, dim={dim}; use fused_qkv=False")
        if qkv_bias not in (True, False, "qv"):
            raise ValueError(f"qkv_bias must be True, False or 'qv', got {qkv_bias!r}")
        if qk_norm not in _QK_NORMS:
            raise ValueError(f"qk_norm must be one of {tuple(_QK_NORMS)}, got {qk_norm!r}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5 if scale is None else float(scale)
        self.fused_qkv = fused_qkv
        self.attn_drop = attn_drop
        inner = num_heads * head_dim
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias is True)
        else:
            self.q = nn.Linear(dim, inner, bias=bool(qkv_bias))
            self.k = nn.Linear(kv_dim, inner, bias=qkv_bias is True)
            self.v = nn.Linear(kv_dim, inner, bias=bool(qkv_bias))
        if fused_qkv and qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(inner))
            self.v_bias = nn.Parameter(torch.zeros(inner))
        else:
            self.q_bias = self.v_bias = None
        norm_kind = _QK_NORMS[qk_norm]
        self.q_norm = make_norm(norm_kind, head_dim, eps=qk_norm_eps, affine=qk_norm_affine)
        self.k_norm = make_norm(norm_kind, head_dim, eps=qk_norm_eps, affine=qk_norm_affine)
        self.proj = nn.Linear(inner, dim if out_dim is None else out_dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def _project(
        self, x: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.fused_qkv:
            return self.q(x), self.k(k_in), self.v(v_in)
        weight = self.qkv.weight
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        else:
            bias = self.qkv.bias
        if k_in is x and v_in is x:
            return F.linear(x, weight, bias).chunk(3, dim=-1)
        ws = weight.chunk(3, dim=0)
        bs = bias.chunk(3) if bias is not None else (None, None, None)
        return F.linear(x, ws[0], bs[0]), F.linear(k_in, ws[1], bs[1]), F.linear(v_in, ws[2], bs[2])

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: RopeArg | None = None,
        rope_k: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend from `x` `[B, N, dim]` to `context` `[B, M, kv_dim]` (default: `x`).

        Args:
            x: queries.
            context: keys (and values, unless `value` is given). Default `x` (self-attention).
            value: values when they differ from the keys' input (e.g. DETR-style `k = mem + pos`, `v = mem`).
            attn_mask, key_padding_mask, is_causal: see the module docstring.
            rope: rotary tables `(cos, sin)` for q and k (from `zoo.nn.posemb.rotary_1d/2d`), or a callable
                `(q, k) -> (q, k)` on `[B, H, N, head_dim]` tensors, applied after qk-norm.
            rope_k: separate rotary tables for the keys (cross-attention); default `rope`.
        """
        if x.dim() != 3:
            raise ValueError(f"Attention expects x as [B, N, dim], got shape {tuple(x.shape)}")
        k_in = x if context is None else context
        v_in = k_in if value is None else value
        q, k, v = (self._heads(t) for t in self._project(x, k_in, v_in))
        q, k = self.q_norm(q), self.k_norm(k)
        if callable(rope):
            q, k = rope(q, k)
        elif rope is not None:
            q = apply_rotary(q, *rope)
            k = apply_rotary(k, *(rope if rope_k is None else rope_k))
        n, m = q.shape[2], k.shape[2]
        dropout_p = self.attn_drop if self.training else 0.0
        if attn_mask is None and key_padding_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=self.scale)
        else:
            allowed, bias = build_attention_mask(n, m, attn_mask, key_padding_mask, is_causal, device=x.device)
            empty = None
            if allowed is not None:
                # rows with no allowed key would give NaN; let them attend anywhere, then zero them (no host sync)
                empty = ~allowed.any(-1, keepdim=True)
                allowed = allowed | empty
            if bias is not None:
                bias = bias.to(q.dtype)
                mask = bias if allowed is None else torch.where(allowed, bias, float("-inf"))
            else:
                mask = allowed
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
            if empty is not None:
                out = out.masked_fill(empty, 0.0)
        out = out.transpose(1, 2).reshape(x.shape[0], n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))
