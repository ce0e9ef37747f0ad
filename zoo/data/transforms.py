"""Seeded crops for PIL images and segment / gain helpers for waveforms. Randomness comes from a torch.Generator."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

__all__ = ["CROPS", "crop_box", "crop_image", "fit_length", "peak_normalize", "random_segment", "to_tensor"]

CROPS = ("random", "center", "multiscale", "resize")


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return lo + int(torch.randint(0, hi - lo + 1, (), generator=g)) if hi > lo else lo


def crop_box(width: int, height: int, size: int, mode: str, g: torch.Generator | None,
             scale: tuple[float, float] = (0.25, 1.0)) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) source box that `crop_image` resizes to `size` x `size`.

    Modes:
        random: a random square whose side is the shorter image side scaled to `size` (i.e. the classic
            resize-shorter-side + random crop of VQGAN / taming training), so the whole height or width is used.
        center: the central square of side min(width, height) (resize-shorter-side + centre crop, the eval crop).
        multiscale: a random square whose side is log-uniform in `scale` x the shorter side, never below `size`
            pixels when the image allows it (no upsampling), at a random position. Gives many distinct patches
            from few high-resolution photos.
        resize: the whole image (aspect ratio not kept).
    """
    short = min(width, height)
    if mode == "resize":
        return 0.0, 0.0, float(width), float(height)
    if mode == "center":
        left, top = (width - short) / 2, (height - short) / 2
        return left, top, left + short, top + short
    if g is None:
        raise ValueError(f"crop mode {mode!r} is random and needs a generator")
    if mode == "random":
        side = short
    elif mode == "multiscale":
        lo, hi = scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"multiscale crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        side = short * math.exp(_uniform(g, math.log(lo), math.log(hi)))
        side = min(short, max(side, size))
    else:
        raise ValueError(f"crop must be one of {CROPS}, got {mode!r}")
    side = round(side)
    left = _randint(g, 0, width - side)
    top = _randint(g, 0, height - side)
    return float(left), float(top), float(left + side), float(top + side)


def crop_image(image: Image.Image, size: int, mode: str = "random", g: torch.Generator | None = None,
               scale: tuple[float, float] = (0.25, 1.0), hflip: bool = False,
               box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """Crop (see `crop_box`, or the given `box`) and resize to `size` x `size` with antialiased bicubic resampling
    in one PIL call; then a random horizontal flip when `hflip`."""
    if box is None:
        box = crop_box(image.width, image.height, size, mode, g, scale)
    out = image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    if hflip and g is not None and float(torch.rand((), generator=g)) < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float [3, H, W] in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def random_segment(total: int, length: int, g: torch.Generator | None) -> int:
    """Start sample of a `length`-long window in a `total`-long signal: random with `g`, else 0."""
    if total <= length or g is None:
        return 0
    return _randint(g, 0, total - length)


def fit_length(wav: torch.Tensor, length: int, pad: str = "repeat") -> torch.Tensor:
    """Trim [T] to `length`, or extend it by repeating the clip (WavTokenizer / Vocos behaviour) or with zeros."""
    t = wav.shape[-1]
    if t >= length:
        return wav[..., :length]
    if t == 0:
        return wav.new_zeros(length)
    if pad == "repeat":
        return wav.repeat(math.ceil(length / t))[:length]
    if pad == "zeros":
        return torch.nn.functional.pad(wav, (0, length - t))
    raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")


def peak_normalize(wav: torch.Tensor, gain_db: float, max_gain_db: float = 40.0) -> torch.Tensor:
    """Scale so the peak sits at `gain_db` dBFS (sox `norm`), amplifying at most `max_gain_db` (silence stays quiet)."""
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    if peak == 0.0:
        return wav
    gain = min(10 ** (gain_db / 20) / peak, 10 ** (max_gain_db / 20))
    return wav * gain
