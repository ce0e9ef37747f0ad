"""Normalisation layers shared by the tokenizer families.

`make_norm(kind, dim, ...)` builds a token norm from a plain string so that family constructors can expose the choice
as a JSON-able keyword (`"layernorm"`, `"fp32_layernorm"`, `"rmsnorm"`, `"none"`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_KINDS = ("layernorm", "fp32_layernorm", "rmsnorm", "none")


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype.

    Stable under bf16/fp16 autocast. With `elementwise_affine=False` it has no parameters (FlexTok's transformer
    norms); with `bias=False` only a weight.
    """

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim, `x / sqrt(mean(x^2) + eps) * weight`, computed in float32.

    Args:
        dim: size of the normalised (last) dimension.
        eps: added to the mean square.
        affine: learn a per-channel `weight` (initialised to 1).
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, affine={self.weight is not None}"


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4D tensor laid out channels-last (and not also channels-first, as `[B, C, 1, 1]` or `[B, 1, H, W]` are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def use_channels_last_group_norm(x: torch.Tensor) -> bool:
    """Whether a GroupNorm of `x` should go through `group_norm_channels_last`: channels-last input outside autograd
    (the statistics kernel it uses has no gradient; with autograd on, PyTorch's own kernel runs as before)."""
    return is_channels_last(x) and not torch.is_grad_enabled()


def _channel_moments_channels_last(x: torch.Tensor, pixels_per_chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and (biased) variance `[B, C]` in float64 of a channels-last `[B, C, H, W]`.

    The batch-norm statistics kernel is vectorised over C in this layout but sums serially in fp32, which over a
    256 x 256 map is ~100x less accurate than the channels-first kernels. Blocks of ~1024 pixels (contiguous slices
    of rows) keep it at their accuracy; the blocks are pooled exactly in float64.
    """
    b, c, h, w = x.shape
    rows = max(1, pixels_per_chunk // max(w, 1))
    means, variances, counts = [], [], []
    for i in range(b):
        for top in range(0, h, rows):
            block = x[i : i + 1, :, top : top + rows]
            mean, var = torch.batch_norm_update_stats(block, None, None, 0.0)
            means.append(mean)
            variances.append(var)
            counts.append(block.shape[2] * w)
    chunks = len(counts) // b
    mean = torch.stack(means).double().view(b, chunks, c)
    var = torch.stack(variances).double().view(b, chunks, c)
    weight = torch.tensor(counts, dtype=torch.float64, device=x.device).view(b, chunks, 1) / (h * w)
    total_mean = (mean * weight).sum(1)
    total_var = ((var + (mean - total_mean[:, None]).pow(2)) * weight).sum(1)
    return total_mean, total_var


def group_norm_channels_last(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """`F.group_norm` for a channels-last `[B, C, H, W]` tensor, as accurate as the channels-first kernel.

    PyTorch's CPU channels-last GroupNorm takes `E[x^2] - E[x]^2` in one pass, which loses ~1e3x precision on maps
    with large means. Here the per-channel moments come from `_channel_moments_channels_last`, are pooled per group
    exactly (`var_g = mean(var_c) + var(mean_c)`), and the result is one fused `x * a + b` pass, the form the
    channels-first kernel also uses. `weight`/`bias` are `[C]` or per sample `[B, C]`. Returns channels-last.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError("group_norm_channels_last has no gradient (its statistics kernel has none): call it under "
                           "torch.no_grad() / inference_mode, or use F.group_norm when training")
    b, c = x.shape[:2]
    mean_c, var_c = _channel_moments_channels_last(x)
    mean_c, var_c = mean_c.view(b, num_groups, -1), var_c.view(b, num_groups, -1)
    mean_g = mean_c.mean(-1, keepdim=True)
    var_g = var_c.mean(-1, keepdim=True) + (mean_c - mean_g).pow(2).mean(-1, keepdim=True)
    rstd = (var_g + eps).rsqrt().expand(-1, -1, c // num_groups).reshape(b, c)
    shift = -mean_g.expand(-1, -1, c // num_groups).reshape(b, c) * rstd
    scale = rstd
    if weight is not None:
        scale, shift = scale * weight.double(), shift * weight.double()
    if bias is not None:
        shift = shift + bias.double()
    view = (b, c) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.to(x.dtype).view(view), x, scale.to(x.dtype).view(view))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dim of a channels-first tensor `[B, C, *spatial]` (ConvNeXt-style)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.movedim(1, -1)
        y = F.layer_norm(y, self.normalized_shape, self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm whose per-channel scale and bias are predicted from the statistics of a style map.

    `out = gamma(std(style)) * GN(x) + beta(mean(style))`, where the statistics are taken per channel over the
    spatial dims of `style` and the GroupNorm has no affine parameters. Used by GigaTok's CNN decoder
    (`std = sqrt(var + eps)` with the unbiased variance, as the official code computes it).

    Args:
        channels: channels of `x`.
        style_channels: channels of the style map.
        num_groups: GroupNorm groups.
        eps: GroupNorm eps, also added to the style variance.
        unbiased: use the unbiased (n - 1) variance of the style map.
    """

    def __init__(
        self, channels: int, style_channels: int, num_groups: int = 32, eps: float = 1e-6, unbiased: bool = True
    ) -> None:
        super().__init__()
        if channels % num_groups:
            raise ValueError(f"channels ({channels}) must be divisible by num_groups ({num_groups})")
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps, affine=False)
        self.gamma = nn.Linear(style_channels, channels)
        self.beta = nn.Linear(style_channels, channels)
        self.eps = eps
        self.unbiased = unbiased

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        flat = style.flatten(2)
        std = torch.sqrt(flat.var(-1, unbiased=self.unbiased) + self.eps)
        mean = flat.mean(-1)
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        if use_channels_last_group_norm(x):
            return group_norm_channels_last(x, self.norm.num_groups, self.gamma(std), self.beta(mean), self.eps)
        return self.gamma(std).view(shape) * self.norm(x) + self.beta(mean).view(shape)


class EmbeddingAdaLayerNorm(nn.Module):
    """Non-affine LayerNorm whose scale and shift are looked up from a small table by a condition id.

    `out = LN(x) * scale[id] + shift[id]` (WavTokenizer/Vocos `AdaLayerNorm`, conditioned on the bandwidth id).
    `scale` starts at ones and `shift` at zeros. Input is channels-last `[B, ..., dim]`; `cond_id` is `[B]` or a
    python int used for every sample.
    """

    def __init__(self, num_embeddings: int, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, cond_id: torch.Tensor | int) -> torch.Tensor:
        if not isinstance(cond_id, torch.Tensor):
            cond_id = torch.full((x.shape[0],), int(cond_id), dtype=torch.long, device=x.device)
        n = self.scale.num_embeddings
        if cond_id.numel() and (int(cond_id.min()) < 0 or int(cond_id.max()) >= n):
            lo, hi = int(cond_id.min()), int(cond_id.max())
            raise ValueError(f"cond_id must lie in [0, {n}), got values in [{lo}, {hi}]")
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.dim,)
        scale = self.scale(cond_id).view(shape)
        shift = self.shift(cond_id).view(shape)
        return F.layer_norm(x, (self.dim,), eps=self.eps) * scale + shift


def make_norm(kind: str, dim: int, eps: float = 1e-6, affine: bool = True, bias: bool = True) -> nn.Module:
    """Build a token norm over the last dim from its name.

    Args:
        kind: `"layernorm"` (nn.LayerNorm), `"fp32_layernorm"` (Fp32LayerNorm), `"rmsnorm"` or `"none"` (Identity).
        dim: normalised size.
        eps: numerical epsilon.
        affine: learn a per-channel weight (and bias when `bias`).
        bias: learn a bias (LayerNorm kinds only, and only when `affine`).
    """
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine, bias=bias)
    if kind == "fp32_layernorm":
        return Fp32LayerNorm(dim, eps=eps, elementwise_affine=affine, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, affine=affine)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm kind {kind!r}; expected one of {NORM_KINDS}")
