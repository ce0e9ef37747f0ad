"""SEANet waveform encoder as used by EnCodec and WavTokenizer, with exact per-sample padding for ragged batches.

SEANet: https://arxiv.org/abs/2009.02095 ; EnCodec: https://arxiv.org/abs/2210.13438 .
The convolutions are non-causal with reflect padding, which makes every output frame near the end of a clip
depend on where that clip ends. `SEANetEncoder.forward(x, lengths)` therefore pads each sample at its own end
(one gather per layer), so a zero-padded batch gives, over each valid part, what the clips give one at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SEANetConv1d", "SEANetEncoder", "SEANetResnetBlock", "WeightNormConv1d", "reflect_pad1d"]


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation `w = g * v / ||v||` (https://arxiv.org/abs/1602.07868), norm over all
    dims but the output channel (the legacy `torch.nn.utils.weight_norm(dim=0)`; parameters `weight_g`, `weight_v`).

    Without autograd (`torch.no_grad` / `torch.inference_mode`) the fused weight is cached until `g` or `v`
    changes, so inference pays for the reparametrisation once.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        # Variance-preserving init with zero bias. With PyTorch's default conv init the variance shrinks ~3x per
        # layer, the biases dominate the bottleneck (frames differ by ~0.3% of its norm) and the VQ collapses to a
        # single code within a few steps (measured on the tiny recipe).
        weight = torch.empty(out_channels, in_channels, kernel_size)
        nn.init.kaiming_normal_(weight, nonlinearity="linear")
        self.weight_v = nn.Parameter(weight)
        self.weight_g = nn.Parameter(weight.flatten(1).norm(dim=1).view(-1, 1, 1).clone())
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def _fused(self) -> torch.Tensor:
        v, g = self.weight_v, self.weight_g
        return v * (g / v.flatten(1).norm(dim=1).view(-1, 1, 1))

    def _cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused weight `[O, I, K]`, the same as a channels-last 2D kernel `[O, I, 1, K]`), kept until g/v change."""
        v, g = self.weight_v, self.weight_g
        if v.is_inference() or g.is_inference():  # weights made under inference_mode have no version counter
            weight = self._fused()
            return weight, weight[:, :, None].contiguous(memory_format=torch.channels_last)
        key = (v.data_ptr(), v._version, g.data_ptr(), g._version, v.dtype, torch.is_inference_mode_enabled())
        if self._cache is None or self._cache[0] != key:
            weight = self._fused()
            self._cache = (key, (weight, weight[:, :, None].contiguous(memory_format=torch.channels_last)))
        return self._cache[1]

    @property
    def weight(self) -> torch.Tensor:
        return self._fused() if torch.is_grad_enabled() else self._cached()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)

    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """Inference on time-major `[B, T, C]` (already padded) -> `[B, T', O]`, as a channels-last 2D conv.

        oneDNN runs these few-channel, long convolutions 1.1-3.4x faster in NHWC than in NCW (measured, 1 thread).
        """
        weight, weight_nhwc = self._cached()
        if self.kernel_size == 1 and self.stride == 1:
            return F.linear(x, weight[:, :, 0], self.bias)
        y = F.conv2d(x.transpose(1, 2)[:, :, None], weight_nhwc, self.bias, stride=(1, self.stride),
                     dilation=(1, self.dilation))
        return y[:, :, 0].transpose(1, 2)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation}")


def reflect_pad1d(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works on inputs shorter than the pad: zero-extend first (EnCodec's `pad1d`)."""
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    x = F.pad(x, (left, right), mode="reflect")
    return x[..., : x.shape[-1] - extra]


def _reflect_pad_time_major(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """`reflect_pad1d` along the time dim of time-major `[B, T, C]`."""
    length = x.shape[1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, 0, 0, extra))
    x = F.pad(x[:, None], (0, 0, left, right), mode="reflect")[:, 0]
    return x[:, : x.shape[1] - extra]


def _ragged_reflect_pad1d(x: torch.Tensor, lengths: torch.Tensor, left: int, right: torch.Tensor,
                          total: int) -> torch.Tensor:
    """`reflect_pad1d` of each `x[b, :, :lengths[b]]` with its own right pad, as one gather.

    Returns `[B, C, total]`; positions past a sample's padded length are zeros.
    """
    batch, channels, time = x.shape
    j = torch.arange(total, device=x.device)[None, :]
    length = lengths[:, None]
    right = right[:, None]
    extended = torch.maximum(length, torch.clamp(right, min=left) + 1)  # the zero-extension of `reflect_pad1d`
    p = (j - left).abs()
    p = torch.where(p >= extended, 2 * (extended - 1) - p, p)
    valid = (p >= 0) & (p < length) & (j < left + length + right)
    index = torch.where(valid, p, time)  # `time` indexes the zero column appended below
    x = F.pad(x, (0, 1))
    return x.gather(2, index[:, None, :].expand(batch, channels, total))


class SEANetConv1d(nn.Module):
    """Weight-normed Conv1d with EnCodec's non-causal "same" reflect padding (`SConv1d`).

    The effective kernel `k` and stride `s` give `k - s` padding split right-heavy-left (`left = ceil`), plus
    extra right padding so the last window is full: `T` samples -> `ceil(T / s)` frames.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = WeightNormConv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        self.stride = stride
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        padding = self.effective_kernel - stride
        self.pad_right = padding // 2
        self.pad_left = padding - self.pad_right

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.stride - 1) // self.stride

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `[B, C, T]`; `lengths` `[B]` valid samples per row, or None when every row is full."""
        s = self.stride
        if lengths is None:
            frames = -(-x.shape[-1] // s)
            extra = frames * s - x.shape[-1]
            return self.conv(reflect_pad1d(x, self.pad_left, self.pad_right + extra))
        frames = self.output_lengths(lengths)
        right = self.pad_right + frames * s - lengths
        total = (int(frames.max()) - 1) * s + self.effective_kernel
        return self.conv(_ragged_reflect_pad1d(x, lengths, self.pad_left, right, total))


    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """Inference on one unpadded time-major batch `[B, T, C]` -> `[B, ceil(T / stride), O]`."""
        s = self.stride
        extra = -(-x.shape[1] // s) * s - x.shape[1]
        if self.pad_left or self.pad_right + extra:
            x = _reflect_pad_time_major(x, self.pad_left, self.pad_right + extra)
        return self.conv.forward_time_major(x)


class SEANetResnetBlock(nn.Module):
    """`shortcut(x) + conv_k1(elu(conv_k(elu(x))))` with a `dim // compress` bottleneck and a 1x1 conv shortcut."""

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, compress: int = 2):
        super().__init__()
        hidden = dim // compress
        self.conv1 = SEANetConv1d(dim, hidden, kernel_size, dilation=dilation)
        self.conv2 = SEANetConv1d(hidden, dim, 1)
        self.shortcut = SEANetConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.elu(x), lengths)
        return self.shortcut(x, lengths) + self.conv2(F.elu(h), lengths)

    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """Inference on time-major `[B, T, C]`: both 1x1 convs accumulate into one buffer (two fewer passes)."""
        h = F.elu_(self.conv1.forward_time_major(F.elu(x)))
        short, conv2 = self.shortcut.conv, self.conv2.conv
        out = F.linear(x, short.weight[:, :, 0], short.bias + conv2.bias)
        # in place, so outside autocast's reach: under bf16 / fp16 autocast `out` and `h` come reduced, the weight not
        out.view(-1, out.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]).to(out.dtype), conv2.weight[:, :, 0].t().to(out.dtype))
        return out


class SEANetEncoder(nn.Module):
    """SEANet encoder: conv -> [res blocks, ELU, strided conv] per stage -> LSTM (+skip) -> ELU -> conv.

    Args:
        channels: audio channels in.
        dimension: latent channels out.
        n_filters: width of the first stage; it doubles at every downsampling.
        strides: downsampling factors in encoder order (WavTokenizer 75 tok/s: `[2, 4, 5, 8]`; the official
            yaml lists them reversed as `dowmsamples`). Each strided conv has kernel `2 * stride`.
        n_residual_layers: residual blocks per stage (dilation `dilation_base ** j`).
        lstm_layers: layers of the unidirectional LSTM at the bottleneck (0: none).
    """

    def __init__(self, channels: int = 1, dimension: int = 512, n_filters: int = 32,
                 strides: tuple[int, ...] | list[int] = (2, 4, 5, 8), n_residual_layers: int = 1,
                 lstm_layers: int = 2, kernel_size: int = 7, last_kernel_size: int = 7,
                 residual_kernel_size: int = 3, dilation_base: int = 2, compress: int = 2):
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.hop_length = 1
        for s in self.strides:
            self.hop_length *= s
        self.conv_in = SEANetConv1d(channels, n_filters, kernel_size)
        self.stages = nn.ModuleList()
        width = n_filters
        for stride in self.strides:
            stage = nn.Module()
            stage.res = nn.ModuleList(
                SEANetResnetBlock(width, residual_kernel_size, dilation_base ** j, compress)
                for j in range(n_residual_layers)
            )
            stage.down = SEANetConv1d(width, width * 2, 2 * stride, stride=stride)
            self.stages.append(stage)
            width *= 2
        self.lstm = nn.LSTM(width, width, lstm_layers) if lstm_layers else None
        self.conv_out = SEANetConv1d(width, dimension, last_kernel_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per row: `ceil(T / hop)` after each stage's ceil."""
        for s in self.strides:
            lengths = (lengths + s - 1) // s
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `[B, C, T]` -> latents `[B, dimension, ceil(T / hop)]`.

        `lengths` `[B]`: valid samples per row of a right-padded batch (None: all full). Frames past a row's
        `output_lengths` hold unspecified values.
        """
        if lengths is not None and bool((lengths == x.shape[-1]).all()):
            lengths = None
        x = self.conv_in(x, lengths)
        for stage in self.stages:
            for block in stage.res:
                x = block(x, lengths)
            x = stage.down(F.elu(x), lengths)
            if lengths is not None:
                lengths = stage.down.output_lengths(lengths)
        if self.lstm is not None:
            # Unidirectional: frames past a row's end cannot reach its valid frames, so no packing is needed.
            seq = x.permute(2, 0, 1)
            x = (self.lstm(seq)[0] + seq).permute(1, 2, 0)
        return self.conv_out(F.elu(x), lengths)

    @torch.no_grad()
    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """Inference fast path: unpadded `[B, T]` audio (one channel) -> latents `[B, ceil(T / hop), dimension]`.

        The same computation as `forward` on time-major activations (channels-last convolutions, 1x1 convs as
        matmuls, in-place ELUs); outputs agree to float rounding.
        """
        x = self.conv_in.forward_time_major(x[:, :, None])
        for stage in self.stages:
            for block in stage.res:
                x = block.forward_time_major(x)
            x = stage.down.forward_time_major(F.elu_(x))
        if self.lstm is not None:
            seq = x.transpose(0, 1)
            x = (self.lstm(seq)[0] + seq).transpose(0, 1)
        return self.conv_out.forward_time_major(F.elu(x))
