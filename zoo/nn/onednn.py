"""fp32 CPU inference of `nn.Linear` (+ activation) through oneDNN with prepacked weights.

PyTorch's CPU `F.linear` calls MKL's sgemm on the plain `[out, in]` weight and runs the activation as a second
pass over the output. oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`, the kernel inductor emits for frozen
CPU graphs) takes the weight reordered once into its blocked layout and applies GELU in the GEMM epilogue: measured
1.1-1.8x faster for a ConvNeXt MLP (768 -> 2304 -> 768, 1 to 1,800 rows, one thread, Zen 4), with outputs within
~2e-6 of the plain path (another summation order, still fp32).

Used only where nothing can tell the difference but the clock: CPU float32 tensors, autograd off, a PyTorch
built with oneDNN. Under bf16 autocast (`precision="bf16"`) on a CPU with native bf16 it runs the same kernel on a
bf16 copy of the weight made once, instead of autocast casting the weight at every call: 1.1-1.3x faster than
autocast's linear, output bf16 as autocast's, and closer to fp32 (GELU applied before the rounding to bf16).
Everywhere else (training, GPU, fp16, emulated bf16, other builds) `linear_act` is exactly `act(linear(x))`. The
packed weight is kept until the weight changes (data pointer, version counter, dtype), like `WeightNormConv1d`'s
fused weight, in a table beside the module (weakly keyed by it), never on it: oneDNN's packed tensors cannot be
copied or pickled, so `copy.deepcopy(model)` and `torch.save(model)` must not see them, and the table entry goes
with the module. Set `ZOO_ONEDNN_LINEAR=0` to turn the path off (read at each call, e.g. to time the plain one).
"""

from __future__ import annotations

import os
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from zoo.precision import cpu_has_native

__all__ = ["linear_act", "onednn_linear_available"]

# activation name -> (oneDNN post-op, its algorithm argument, the plain function)
_ACTS = {
    None: ("none", "", lambda x: x),
    "gelu": ("gelu", "none", F.gelu),
    "gelu_tanh": ("gelu", "tanh", lambda x: F.gelu(x, approximate="tanh")),
}


def onednn_linear_available() -> bool:
    """Whether this PyTorch build has the oneDNN linear kernels (CPU builds of the official wheels do)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


_AVAILABLE = onednn_linear_available()
_NATIVE_BF16 = _AVAILABLE and cpu_has_native("bf16")
# Linear -> {dtype: (key, packed weight, bias)}; weak keys: an entry lives as long as its module
_PACKED: weakref.WeakKeyDictionary[nn.Linear, dict] = weakref.WeakKeyDictionary()


def _compute_dtype(linear: nn.Linear, x: torch.Tensor) -> torch.dtype | None:
    """The dtype the oneDNN path computes this call in, or None for the plain layer."""
    if not (_AVAILABLE and x.device.type == "cpu" and linear.weight.dtype == torch.float32
            and not torch.is_grad_enabled() and os.environ.get("ZOO_ONEDNN_LINEAR", "1") != "0"):
        return None
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32 if x.dtype == torch.float32 else None
    if (_NATIVE_BF16 and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and x.dtype in (torch.float32, torch.bfloat16)):
        return torch.bfloat16
    return None


def _packed(linear: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight reordered for oneDNN in `dtype`, bias in `dtype`), cached until the weight or bias changes."""
    weight, bias = linear.weight, linear.bias
    if weight.is_inference() or (bias is not None and bias.is_inference()):
        # made under inference_mode: no version counter to key a cache on
        return weight.to(dtype), None if bias is None else bias.to(dtype)
    key = (dtype, weight.data_ptr(), weight._version, None if bias is None else (bias.data_ptr(), bias._version))
    cache = _PACKED.setdefault(linear, {})
    if cache.get(dtype, (None,))[0] != key:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype))
        cache[dtype] = (key, packed, None if bias is None else bias.detach().to(dtype))
    return cache[dtype][1], cache[dtype][2]


def linear_act(linear: nn.Linear, x: torch.Tensor, act: str | None = None) -> torch.Tensor:
    """`act(linear(x))` for `x` `[..., in]`; `act` is None, "gelu" (erf) or "gelu_tanh"."""
    if act not in _ACTS:
        raise ValueError(f"linear_act supports activations {sorted(a for a in _ACTS if a)} or None, got {act!r}")
    post_op, algorithm, plain = _ACTS[act]
    dtype = _compute_dtype(linear, x)
    if dtype is None:
        return plain(linear(x))
    weight, bias = _packed(linear, dtype)
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, post_op, [], algorithm)
