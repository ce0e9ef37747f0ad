"""Input checks at the door: each says what was expected, what came, and what to do."""

from __future__ import annotations

import torch

_RANGE_TOLERANCE = 1e-3


def _require_tensor(x: object, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (for uint8 images use x.float() / 255)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}{hint}")
    if x.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{what} contains {bad} NaN/Inf values; clean the input before encoding")
    return x


def check_image(x: object, size: tuple[int, int] | None, *, what: str = "image batch") -> torch.Tensor:
    """Validate a float RGB batch `[B, 3, H, W]` in [0, 1] (of `size` when given) and return it."""
    x = _require_tensor(x, what)
    if x.dim() != 4:
        hint = " (a single image: x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{what} must be [B, 3, H, W], got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != 3:
        hint = " (channels-last? use x.permute(0, 3, 1, 2))" if x.shape[-1] == 3 else ""
        raise ValueError(f"{what} must have 3 RGB channels in dim 1, got shape {tuple(x.shape)}{hint}")
    lo, hi = x.min().item(), x.max().item()
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        if lo >= -1 - _RANGE_TOLERANCE and hi <= 1 + _RANGE_TOLERANCE:
            hint = "; it looks like [-1, 1]: pass (x + 1) / 2"
        elif hi > 1.5:
            hint = "; it looks like [0, 255]: pass x / 255"
        else:
            hint = ""
        raise ValueError(f"{what} values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]{hint}")
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(
            f"{what} must be {size[0]}x{size[1]} pixels for this tokenizer, got {x.shape[-2]}x{x.shape[-1]}; "
            f"resize or center-crop first (zoo.io.read_image(path, size={size[0]}) does it)"
        )
    return x


def check_audio(x: object, *, what: str = "audio batch") -> torch.Tensor:
    """Validate float audio `[B, T]` or `[B, 1, T]` in [-1, 1]; return `[B, T]`."""
    x = _require_tensor(x, what)
    if x.dim() == 3:
        if x.shape[1] != 1:
            raise ValueError(
                f"{what} must be mono [B, 1, T], got {x.shape[1]} channels (shape {tuple(x.shape)}); "
                "mix down with x.mean(1, keepdim=True)"
            )
        x = x[:, 0]
    if x.dim() != 2:
        hint = " (a single clip: x.unsqueeze(0))" if x.dim() == 1 else ""
        raise ValueError(f"{what} must be [B, T] or [B, 1, T], got shape {tuple(x.shape)}{hint}")
    peak = x.abs().max().item()
    if peak > 1 + _RANGE_TOLERANCE:
        hint = "; it looks like int16 scale: divide by 32768" if peak > 2 else ""
        raise ValueError(f"{what} must lie in [-1, 1], got peak {peak:.4g}{hint}")
    return x


def check_sample_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    return sample_rate
