"""Input checks at the door: each says what was expected, what came, and what to do.

One dtype policy for every family (images and audio alike): any floating-point tensor (float16, bfloat16, float32,
float64) is accepted; its range and finiteness are checked on its own values, then it is converted to the model's
dtype and device (`Tokenizer.check_input` / `AudioTokenizer.prepare_audio`). Integer and bool tensors are refused
with a TypeError that gives the conversion, because their scale is ambiguous (uint8 images are 0..255, int16 audio
is +-32768) and guessing it would silently give a wrong result.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "check_audio",
    "check_finite_number",
    "check_image",
    "check_positive_int",
    "check_sample_rate",
]

_RANGE_TOLERANCE = 1e-3
# Sample rates zoo accepts: 1 kHz (below any speech or music use) to 768 kHz (the highest rate of audio interfaces).
# Resampling work and memory grow with new_rate / old_rate, so a rate of 1 Hz would turn a short file into hours of
# audio at the model's rate; refused before anything runs.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000


def _require_tensor(x: object, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        if x.dtype == torch.uint8:
            hint = " (8-bit images: pass x.float() / 255)"
        elif x.dtype == torch.int16:
            hint = " (16-bit PCM audio: pass x.float() / 32768)"
        elif x.dtype == torch.bool:
            hint = " (a mask? pass x.float())"
        else:
            hint = " (convert it with x.float() and scale it to the expected range)"
        raise TypeError(f"{what} must be a floating-point tensor (float16/bfloat16/float32/float64), got dtype "
                        f"{x.dtype}{hint}")
    if x.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)}); pass at least one non-empty item")
    finite = torch.isfinite(x)
    if not finite.all():
        bad = (~finite).sum().item()
        raise ValueError(f"{what} contains {bad} NaN/Inf values; clean the input before encoding")
    return x


def check_image(x: object, size: tuple[int, int] | None, *, what: str = "image batch") -> torch.Tensor:
    """Validate a float RGB batch `[B, 3, H, W]` in [0, 1] (of `size` when given) and return it (dtype unchanged)."""
    x = _require_tensor(x, what)
    if x.dim() != 4:
        hint = " (a single image: x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{what} must be [B, 3, H, W], got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != 3:
        if x.shape[-1] == 3:
            hint = " (channels-last? use x.permute(0, 3, 1, 2))"
        elif x.shape[1] == 1:
            hint = " (greyscale? use x.expand(-1, 3, -1, -1))"
        elif x.shape[1] == 4:
            hint = " (RGBA? drop or composite the alpha channel)"
        else:
            hint = ""
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
    """Validate float audio `[B, T]` or `[B, 1, T]` in [-1, 1]; return `[B, T]` (dtype unchanged)."""
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
        hint = "; it looks like int16 scale: divide by 32768" if peak > 2 else "; divide it by its peak"
        raise ValueError(f"{what} must lie in [-1, 1], got peak {peak:.4g}{hint}")
    return x


def check_sample_rate(sample_rate: object, *, what: str = "sample_rate") -> int:
    """An int rate in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz (a float with an integral value is accepted)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (Integral, Real)):
        raise TypeError(f"{what} must be an int (Hz), got {type(sample_rate).__name__} {sample_rate!r}")
    if not isinstance(sample_rate, Integral):
        if not math.isfinite(sample_rate) or sample_rate != int(sample_rate):
            raise ValueError(f"{what} must be a whole number of Hz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"{what} must lie in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {rate}; pass the rate the audio "
            "was recorded at (e.g. 16000, 24000, 44100, 48000)"
        )
    return rate


def check_finite_number(value: object, name: str, *, minimum: float | None = None) -> float:
    """A finite real number (not bool), at least `minimum` when given; e.g. a guidance scale."""
    if isinstance(value, bool) or not isinstance(value, Real) or isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return number


def check_positive_int(value: object, name: str, *, maximum: int | None = None) -> int:
    """A Python int >= 1 (not bool), at most `maximum` when given; e.g. sampling steps."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be at least 1{bound}, got {value}")
    return int(value)
