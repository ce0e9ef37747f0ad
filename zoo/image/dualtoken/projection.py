"""DualToken's `AttnProjection`: the attention-based projections between the backbone width and the code width.

Five of them: `prequant_{pixel,shortcut,semantic}` (1152 -> 32, bidirectional) and `postquant_{pixel,semantic}`
(32 -> 1152, causal in raster order, as in VILA-U's design the DualToken code follows):

    y = proj(norm3(x)) + attn(norm1(x));   y = y + mlp(norm2(y))

`attn` (official `AttentionBlock`) has `heads = width // code_dim` heads of `code_dim` channels. Going down it
averages the heads (`[B, heads, N, 32]` -> `[B, N, 32]`); going up it concatenates them. Its qkv projection has no
bias of its own but learnt q and v biases (BEiT style; the official zero k bias buffer is a constant here). `mlp` is
a GeGLU with its own LayerNorm (eps 1e-6) and twice the output width. The outer LayerNorms use PyTorch's eps 1e-5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AttnProjection", "GeGluMlp", "ProjectionAttention"]


class ProjectionAttention(nn.Module):
    """Multi-head attention from `in_dim` to `out_dim` channels (official `AttentionBlock`).

    The heads work at the wider of the two widths: `head_dim = max(in_dim, out_dim) // num_heads`. When reducing
    (`in_dim > out_dim`) the head outputs are averaged, then pooled to `out_dim` if `head_dim` differs from it;
    otherwise they are concatenated. `proj` is Linear(out_dim, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, num_heads: int, causal: bool = False) -> None:
        super().__init__()
        wide = max(in_dim, out_dim)
        if wide % num_heads:
            raise ValueError(f"attention width {wide} must be a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = wide // num_heads
        self.reduce = in_dim > out_dim
        self.out_dim = out_dim
        self.causal = causal
        self.qkv = nn.Linear(in_dim, 3 * wide, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(wide))
        self.v_bias = nn.Parameter(torch.zeros(wide))
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        if self.reduce:
            out = out.mean(dim=1)
            if self.head_dim != self.out_dim:
                out = F.adaptive_avg_pool1d(out, self.out_dim)
        else:
            out = out.transpose(1, 2).reshape(b, n, -1)
        return self.proj(out)


class GeGluMlp(nn.Module):
    """`w2(gelu_tanh(w0(norm(x))) * w1(norm(x)))` with its own LayerNorm (eps 1e-6)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.w0 = nn.Linear(dim, hidden_dim)
        self.w1 = nn.Linear(dim, hidden_dim)
        self.w2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.w2(F.gelu(self.w0(x), approximate="tanh") * self.w1(x))


class AttnProjection(nn.Module):
    """`[B, N, in_dim]` -> `[B, N, out_dim]`; see the module docstring.

    Args:
        in_dim, out_dim: widths; one must divide the other (1152 and 32 in the releases).
        num_heads: attention heads (official: backbone width // code width = 36).
        causal: causal attention over the N tokens (the post-quantisation projections).
        mlp_ratio: GeGLU hidden width as a multiple of `out_dim` (2).
    """

    def __init__(self, in_dim: int, out_dim: int, num_heads: int, causal: bool = False, mlp_ratio: float = 2.0
                 ) -> None:
        super().__init__()
        if in_dim % out_dim and out_dim % in_dim:
            raise ValueError(f"AttnProjection needs one of in_dim {in_dim} / out_dim {out_dim} to divide the other")
        self.norm1 = nn.LayerNorm(in_dim)
        self.attn = ProjectionAttention(in_dim, out_dim, num_heads, causal)
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm3 = nn.LayerNorm(in_dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = GeGluMlp(out_dim, int(out_dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.norm3(x)) + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
