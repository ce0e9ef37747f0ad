"""Inference precision: one word for every family (`zoo.load(name, precision="bf16")`, `--precision` on the CLI).

- `"fp32"` (default): everything in the weights' dtype, the reference numbers.
- `"bf16"` / `"fp16"`: `encode` and `decode` run under `torch.autocast` of that dtype on the model's device, so the
  heavy layers (linear, conv, attention matmuls) compute in reduced precision while the weights stay fp32. The parts
  whose numbers decide ids or signals stay in fp32 where a family marks them with `full_precision()`: quantiser
  distances, rounding and id assignment (`zoo.quant`), WavTokenizer's iSTFT head, TEASER's face model and
  rasteriser. Flow samplers keep their state in fp32 without a mark: the noise they start from is fp32, and
  `x - dt * v` with a reduced-precision `v` stays fp32. Outputs come back in fp32 (decoded signals, continuous values
  in `Tokens`).

fp16 is meant for GPUs (on CPU it is slow and overflows more easily); bf16 works on both. The fidelity of each
family in each mode (ids agreement with fp32, change of the reconstruction metric) is measured by
`benchmarks/precision.py` and held by `tests/test_precision.py`; the numbers are in docs/performance.md.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["PRECISIONS", "autocast_dtype", "check_precision", "cpu_has_native", "full_precision", "precision_context",
           "to_fp32", "warn_if_emulated"]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(value: object) -> str:
    """The precision word, or a ValueError naming the choices."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {value!r}")
    return value


def autocast_dtype(precision: str) -> torch.dtype | None:
    return PRECISIONS[check_precision(precision)]


def precision_context(precision: str, device: torch.device) -> Any:
    """`torch.autocast` of the precision's dtype on `device` (a null context for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_has_native(precision: str) -> bool:
    """Whether this CPU computes `precision` natively (oneDNN: AVX512-BF16 / AMX / AVX512-FP16); fp32 always."""
    if check_precision(precision) == "fp32":
        return True
    try:
        if precision == "bf16":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def warn_if_emulated(precision: str, device: torch.device) -> None:
    """Warn when reduced precision on this CPU is emulated: it gives the same numbers, but is several times *slower*
    than fp32 (measured in docs/performance.md), so it only makes sense to check fidelity."""
    if device.type == "cpu" and not cpu_has_native(precision):
        import warnings

        warnings.warn(f"this CPU has no native {precision} (torch CPU capability "
                      f"{torch.backends.cpu.get_cpu_capability()}): {precision} runs emulated, several times slower "
                      "than fp32; use precision='fp32' here, or a GPU / a CPU with AVX512-BF16 or AMX", stacklevel=3)


def full_precision(device: torch.device | str) -> Any:
    """Switch autocast off on `device` for a numerically sensitive block; the block must cast its inputs with
    `.float()` (tensors from the autocast region may be bf16 / fp16)."""
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type=device_type, enabled=False)


def to_fp32(value: Any) -> Any:
    """Reduced-precision floating tensors (also inside tuples, lists and dicts) back to fp32; others unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):
        return {k: to_fp32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_fp32(v) for v in value)
    return value
