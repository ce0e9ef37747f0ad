"""Seeded synthetic data with natural-signal statistics, for tests and smoke runs that must not touch files.

Images are little scenes: a two-tone "sky / ground" backdrop, 1/f^2 ("pink") texture, which is the power spectrum
of natural photos (Field 1987, https://doi.org/10.1364/JOSAA.4.002379), and a few soft-edged shaded shapes.
Audio is either speech-like (a glottal harmonic source with a moving pitch, shaped by three moving formants,
gated into syllables, plus fricative noise bursts) or music-like (notes of a scale with decaying harmonics), at a
random peak level in [-6, -1] dBFS over a faint noise floor. Item i depends only on (seed, i).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.data.common import item_seed
from zoo.data.factory import register_dataset

__all__ = ["SyntheticAudio", "SyntheticImage", "synthetic_audio", "synthetic_image"]


class _SyntheticDataset(Dataset):
    """`num_items` items; item i is `make(g)` with `g` seeded by (seed, i) only. Subclasses set `num_items` and
    `seed` and implement `make`."""

    num_items: int
    seed: int

    def make(self, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.num_items:
            raise IndexError(f"index {index} out of range for {self.num_items} items")
        g = torch.Generator().manual_seed(item_seed(self.seed, 0, 0, index))
        return self.make(g)


# ------------------------------------------------------------------------------------------------- images
def _pink(g: torch.Generator, h: int, w: int, channels: int, alpha: float = 2.0) -> torch.Tensor:
    """Unit-variance noise [C, H, W] with power spectrum ~ 1/f^alpha."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    f = torch.sqrt(fy ** 2 + fx ** 2)
    f[0, 0] = 1.0
    amp = f.pow(-alpha / 2)
    amp[0, 0] = 0.0
    phase = 2 * math.pi * torch.rand(channels, h, w // 2 + 1, generator=g)
    noise = torch.fft.irfft2(torch.polar(amp.expand(channels, -1, -1).contiguous(), phase), s=(h, w))
    return noise / noise.flatten(1).std(dim=1).clamp_min(1e-8).view(-1, 1, 1)


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g)


def _colour(g: torch.Generator) -> torch.Tensor:
    """A random colour [3, 1, 1], desaturated towards its grey level like most natural surfaces."""
    c = _rand(g, 3, 1, 1)
    return 0.55 * c + 0.45 * c.mean()


def synthetic_image(size: int, g: torch.Generator) -> torch.Tensor:
    """One [3, size, size] scene in [0, 1]."""
    ys = torch.linspace(0, 1, size).view(size, 1).expand(size, size)
    xs = torch.linspace(0, 1, size).view(1, size).expand(size, size)
    # backdrop: two colours meeting at a tilted horizon, each with a vertical shading ramp
    horizon = 0.3 + 0.4 * _rand(g, 1) + (_rand(g, 1) - 0.5) * 0.3 * (xs - 0.5)
    top, bottom = _colour(g), _colour(g) * 0.8
    ramp = (0.8 + 0.4 * ys).unsqueeze(0)
    sky = top * ramp
    ground = bottom * (1.2 - 0.4 * ys).unsqueeze(0)
    edge = torch.sigmoid((ys - horizon) * size / 2).unsqueeze(0)
    img = sky * (1 - edge) + ground * edge
    texture = _pink(g, size, size, 1) * (0.02 + 0.06 * _rand(g, 1))
    img = img + texture * (0.8 + 0.4 * _rand(g, 3, 1, 1))
    # shapes in painter's order: rotated ellipses and rectangles, shaded and textured, soft anti-aliased edges
    for _ in range(int(torch.randint(2, 8, (), generator=g))):
        cx, cy = _rand(g, 2).unbind()
        rx, ry = (0.05 + 0.3 * _rand(g, 2)).unbind()
        theta = math.pi * float(_rand(g, 1))
        u = (xs - cx) * math.cos(theta) + (ys - cy) * math.sin(theta)
        v = -(xs - cx) * math.sin(theta) + (ys - cy) * math.cos(theta)
        if float(_rand(g, 1)) < 0.5:
            dist = torch.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1  # ellipse
            scale = min(float(rx), float(ry))
        else:
            dist = torch.maximum(u.abs() / rx, v.abs() / ry) - 1  # rectangle
            scale = min(float(rx), float(ry))
        mask = torch.sigmoid(-dist * scale * size * 1.5).unsqueeze(0)
        colour = _colour(g)
        shade = 1 + 0.35 * (_rand(g, 1) - 0.5) * 2 * (u / rx).clamp(-1, 1).unsqueeze(0)
        fill = colour * shade + _pink(g, size, size, 1) * 0.06 * float(_rand(g, 1))
        img = img * (1 - mask) + fill * mask
    return img.clamp(0, 1)


@register_dataset("synthetic_image")
class SyntheticImage(_SyntheticDataset):
    """`num_items` synthetic scenes [3, image_size, image_size] in [0, 1]; item i depends only on (seed, i)."""

    def __init__(self, num_items: int = 1024, image_size: int = 256, seed: int = 0) -> None:
        if num_items < 1 or image_size < 8:
            raise ValueError(f"SyntheticImage needs num_items >= 1 and image_size >= 8, got {num_items}, {image_size}")
        self.num_items, self.image_size, self.seed = int(num_items), int(image_size), int(seed)

    def make(self, g: torch.Generator) -> torch.Tensor:
        return synthetic_image(self.image_size, g)


# ------------------------------------------------------------------------------------------------- audio
def _smooth(x: torch.Tensor, width: int) -> torch.Tensor:
    """Moving average with a Hann kernel (removes clicks from piecewise-constant controls)."""
    width = max(3, width | 1)
    k = torch.hann_window(width + 2, periodic=False)[1:-1]
    k = (k / k.sum()).view(1, 1, -1)
    return F.conv1d(F.pad(x.view(1, 1, -1), (width // 2, width // 2), mode="replicate"), k).view(-1)


def _segments(g: torch.Generator, n: int, sr: int, lo: float, hi: float) -> list[tuple[int, int]]:
    out, pos = [], 0
    while pos < n:
        length = int(sr * (lo + (hi - lo) * float(_rand(g, 1))))
        out.append((pos, min(n, pos + max(length, 1))))
        pos += max(length, 1)
    return out


def _upsample(x: torch.Tensor, n: int) -> torch.Tensor:
    """Linear interpolation of control curves [..., m] to [..., n] samples."""
    shape = x.shape[:-1]
    return F.interpolate(x.reshape(1, -1, x.shape[-1]), size=n, mode="linear", align_corners=True).reshape(*shape, n)


def _speechlike(g: torch.Generator, n: int, sr: int) -> torch.Tensor:
    nyquist = sr / 2
    rate = 1000  # control curves (pitch, formants, envelopes) live at 1 kHz and are interpolated to audio rate
    m = max(2, math.ceil(n * rate / sr) + 1)
    f0_base = 85 + 165 * float(_rand(g, 1))
    voiced_env, fric_env = torch.zeros(m), torch.zeros(m)
    formants = torch.zeros(3, m)
    f0_ctrl = torch.zeros(m)
    for a, b in _segments(g, m, rate, 0.06, 0.3):
        kind = float(_rand(g, 1))
        if kind < 0.6:  # vowel-like syllable
            voiced_env[a:b] = 0.5 + 0.5 * float(_rand(g, 1))
        elif kind < 0.8:  # fricative
            fric_env[a:b] = 0.1 + 0.3 * float(_rand(g, 1))
        formants[0, a:b] = 300 + 500 * float(_rand(g, 1))
        formants[1, a:b] = 900 + 1400 * float(_rand(g, 1))
        formants[2, a:b] = 2400 + 600 * float(_rand(g, 1))
        f0_ctrl[a:b] = 2 ** (0.25 * (float(_rand(g, 1)) - 0.5))
    voiced_env, fric_env = _smooth(voiced_env, 12), _smooth(fric_env, 8)
    formants = torch.stack([_smooth(f, 30) for f in formants])
    f0_c = f0_base * _smooth(f0_ctrl, 60) * (1 + 0.01 * torch.sin(2 * math.pi * 5 * torch.arange(m) / rate))
    k = torch.arange(1, int(min(5000.0, 0.95 * nyquist) / f0_c.min()) + 1, dtype=torch.float32).view(-1, 1)
    fk = k * f0_c.view(1, -1)
    bw = torch.tensor([80.0, 120.0, 200.0]).view(3, 1, 1)
    gain = torch.exp(-0.5 * ((fk.unsqueeze(0) - formants.unsqueeze(1)) / bw) ** 2).sum(0) + 0.02
    gain = gain * k.pow(-1.0) * (fk < 0.95 * nyquist)
    f0 = _upsample(f0_c, n)
    phase = 2 * math.pi * torch.cumsum(f0.double(), 0).remainder(sr).float() / sr
    voiced = (_upsample(gain, n) * torch.sin(k * phase.view(1, -1))).sum(0)
    voiced = voiced / voiced.abs().max().clamp_min(1e-6)
    noise = torch.randn(n, generator=g)
    hiss = F.pad(noise[1:] - 0.9 * noise[:-1], (1, 0))
    hiss = hiss / hiss.abs().max().clamp_min(1e-6)
    return voiced * _upsample(voiced_env, n) + hiss * _upsample(fric_env, n)


def _musiclike(g: torch.Generator, n: int, sr: int) -> torch.Tensor:
    scale = torch.tensor([0, 2, 4, 5, 7, 9, 11])
    root = 45 + int(torch.randint(0, 15, (), generator=g))
    out = torch.zeros(n)
    t_all = torch.arange(n) / sr
    bright = 0.8 + 1.2 * float(_rand(g, 1))
    decay = 1.5 + 6 * float(_rand(g, 1))
    for a, b in _segments(g, n, sr, 0.12, 0.6):
        if float(_rand(g, 1)) < 0.15:
            continue  # rest
        step = int(scale[int(torch.randint(0, 7, (), generator=g))]) + 12 * int(torch.randint(0, 2, (), generator=g))
        freq = 440.0 * 2 ** ((root + step - 69) / 12)
        t = t_all[: min(n - a, 2 * sr)]  # notes ring for at most 2 s
        k = torch.arange(1, min(24, int(0.45 * sr / freq)) + 1, dtype=torch.float32).view(-1, 1)
        partials = (k.pow(-bright) * torch.sin(2 * math.pi * freq * k * t.view(1, -1))).sum(0)
        env = torch.exp(-decay * t) * (1 - torch.exp(-t * 300))
        out[a: a + t.numel()] += 0.6 * partials * env
    return out


def synthetic_audio(num_samples: int, sample_rate: int, g: torch.Generator) -> torch.Tensor:
    """One [num_samples] clip in [-1, 1]: speech-like (70 %) or music-like, peak in [-6, -1] dBFS."""
    wav = _speechlike(g, num_samples, sample_rate) if float(_rand(g, 1)) < 0.7 else \
        _musiclike(g, num_samples, sample_rate)
    wav = wav + torch.randn(num_samples, generator=g) * 10 ** ((-60 + 20 * float(_rand(g, 1))) / 20)
    peak_db = -6 + 5 * float(_rand(g, 1))
    return (wav * (10 ** (peak_db / 20) / wav.abs().max().clamp_min(1e-6))).clamp(-1, 1)


@register_dataset("synthetic_audio")
class SyntheticAudio(_SyntheticDataset):
    """`num_items` synthetic mono clips [num_samples] in [-1, 1]; item i depends only on (seed, i)."""

    def __init__(self, num_items: int = 1024, sample_rate: int = 24000, num_samples: int = 24000,
                 seed: int = 0) -> None:
        if num_items < 1 or sample_rate < 1000 or num_samples < 1:
            raise ValueError(f"SyntheticAudio needs num_items >= 1, sample_rate >= 1000, num_samples >= 1; got "
                             f"{num_items}, {sample_rate}, {num_samples}")
        self.num_items, self.sample_rate, self.num_samples, self.seed = (int(num_items), int(sample_rate),
                                                                         int(num_samples), int(seed))

    def make(self, g: torch.Generator) -> torch.Tensor:
        return synthetic_audio(self.num_samples, self.sample_rate, g)
