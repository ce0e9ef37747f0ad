"""Waveform discriminators: multi-period (HiFi-GAN), multi-resolution (UnivNet / Vocos) and DAC's multi-band one.

Every discriminator here has the same call: ``d(y, y_hat, bandwidth_id=None)`` with real and generated audio
([B, T] or [B, 1, T]) returns ``(logits_real, logits_fake, fmaps_real, fmaps_fake)``: one logit tensor and one
list of feature maps per sub-discriminator, ready for `zoo.losses.gan` (`discriminator_loss`, `generator_loss`,
`feature_matching_loss`). WavTokenizer trains with `MultiPeriodDiscriminator(periods=(2, 3, 5, 7, 11),
num_embeddings=4)`, `MultiResolutionDiscriminator(num_embeddings=4)` (hinge) and `DACDiscriminator()` (LSGAN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = [
    "BandDiscriminator",
    "DACDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiResolutionDiscriminator",
    "PeriodDiscriminator",
    "ResolutionDiscriminator",
]

Outputs = tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[list[torch.Tensor]]]


def _mono(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 2:
        raise ValueError(f"discriminators expect audio [B, T] or [B, 1, T], got shape {tuple(x.shape)}")
    return x.float()


def _conditioned(x: torch.Tensor, post: nn.Module, emb: nn.Embedding | None, cond: torch.Tensor | None,
                 fmap: list[torch.Tensor]) -> torch.Tensor:
    """Vocos' projection conditioning (https://arxiv.org/abs/1802.05637): logits + <emb(cond), features>."""
    h = 0
    if cond is not None:
        if emb is None:
            raise ValueError("bandwidth_id given but the discriminator was built with num_embeddings=None")
        e = emb(cond.to(x.device).long().view(-1))
        h = (e.view(e.shape[0], -1, 1, 1) * x).sum(dim=1, keepdim=True)
    x = post(x)
    fmap.append(x)
    return torch.flatten(x + h, 1, -1)


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN period discriminator (https://arxiv.org/abs/2010.05646): the waveform folded to [T/p, p] frames."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, lrelu_slope: float = 0.1,
                 num_embeddings: int | None = None) -> None:
        super().__init__()
        self.period, self.lrelu_slope = period, lrelu_slope
        chans = [1, 32, 128, 512, 1024, 1024]
        pad = (kernel_size // 2, 0)
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (kernel_size, 1), (stride if i < 4 else 1, 1), pad))
            for i in range(5)
        ])
        self.emb = None
        if num_embeddings is not None:
            self.emb = nn.Embedding(num_embeddings, 1024)
            nn.init.zeros_(self.emb.weight)
        self.conv_post = weight_norm(nn.Conv2d(1024, 1, (3, 1), 1, (1, 0)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = _mono(x).unsqueeze(1)
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        fmap = []
        for i, conv in enumerate(self.convs):
            x = F.leaky_relu(conv(x), self.lrelu_slope)
            if i > 0:  # Vocos keeps the first layer's output out of feature matching
                fmap.append(x)
        return _conditioned(x, self.conv_post, self.emb, cond, fmap), fmap


class ResolutionDiscriminator(nn.Module):
    """UnivNet multi-resolution discriminator branch (https://arxiv.org/abs/2106.07889) on |STFT| magnitudes,
    with Vocos' rectangular window (`window=None`)."""

    def __init__(self, resolution: Sequence[int], channels: int = 64, lrelu_slope: float = 0.1,
                 num_embeddings: int | None = None) -> None:
        super().__init__()
        if len(resolution) != 3:
            raise ValueError(f"resolution must be (n_fft, hop_length, win_length), got {resolution}")
        self.resolution, self.lrelu_slope = tuple(int(r) for r in resolution), lrelu_slope
        c = channels
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, (7, 5), (2, 2), (3, 2))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 1), (2, 1))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 2), (2, 1))),
            weight_norm(nn.Conv2d(c, c, 3, (2, 1), 1)),
            weight_norm(nn.Conv2d(c, c, 3, (2, 2), 1)),
        ])
        self.emb = None
        if num_embeddings is not None:
            self.emb = nn.Embedding(num_embeddings, c)
            nn.init.zeros_(self.emb.weight)
        self.conv_post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))
        # Vocos passes window=None, i.e. a rectangular window; spelled out to keep torch from warning
        self.register_buffer("window", torch.ones(self.resolution[2]), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n_fft, hop, win = self.resolution
        x = _mono(x)
        x = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window=self.window.to(x.dtype), center=True,
                       return_complex=True).abs().unsqueeze(1)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.lrelu_slope)
            fmap.append(x)
        return _conditioned(x, self.conv_post, self.emb, cond, fmap), fmap


class _MultiDiscriminator(nn.Module):
    discriminators: nn.ModuleList

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor, bandwidth_id: torch.Tensor | None = None) -> Outputs:
        """Real `y` and generated `y_hat` ([B, T]) -> (logits_real, logits_fake, fmaps_real, fmaps_fake)."""
        lr, lf, fr, ff = [], [], [], []
        for d in self.discriminators:
            a, fa = d(y, bandwidth_id)
            b, fb = d(y_hat, bandwidth_id)
            lr.append(a)
            lf.append(b)
            fr.append(fa)
            ff.append(fb)
        return lr, lf, fr, ff


class MultiPeriodDiscriminator(_MultiDiscriminator):
    """HiFi-GAN MPD with Vocos' optional conditioning embeddings (WavTokenizer: periods 2,3,5,7,11; 4 embeddings).

    Args:
        periods: one period discriminator per entry.
        num_embeddings: conditioning table size (e.g. bandwidth ids); None for unconditional.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), num_embeddings: int | None = None) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([PeriodDiscriminator(p, num_embeddings=num_embeddings) for p in periods])


class MultiResolutionDiscriminator(_MultiDiscriminator):
    """Vocos / WavTokenizer MRD: one magnitude-spectrogram discriminator per (n_fft, hop_length, win_length)."""

    def __init__(self, resolutions: Sequence[Sequence[int]] = ((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512)),
                 channels: int = 64, num_embeddings: int | None = None) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([ResolutionDiscriminator(r, channels, num_embeddings=num_embeddings)
                                             for r in resolutions])


# ------------------------------------------------------------------------------------------- DAC (optional)
DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def _wn_conv(*args, act: bool = True, **kwargs) -> nn.Module:
    conv = weight_norm(nn.Conv2d(*args, **kwargs))
    return nn.Sequential(conv, nn.LeakyReLU(0.1)) if act else conv


class _DACPeriod(nn.Module):
    """DAC's period discriminator: like HiFi-GAN's but always right-pads by the period and keeps every layer."""

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = period
        chans = [1, 32, 128, 512, 1024, 1024]
        self.convs = nn.ModuleList([_wn_conv(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0))
                                    for i in range(5)])
        self.conv_post = _wn_conv(1024, 1, kernel_size=(3, 1), padding=(1, 0), act=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.pad(x, (0, self.period - x.shape[-1] % self.period), mode="reflect")
        x = x.view(x.shape[0], 1, -1, self.period)
        fmap = []
        for layer in self.convs:
            x = layer(x)
            fmap.append(x)
        fmap.append(self.conv_post(x))
        return fmap


class BandDiscriminator(nn.Module):
    """DAC's complex multi-band STFT discriminator (https://arxiv.org/abs/2306.06546): real/imag STFT channels,
    the frequency axis split into bands, each with its own conv stack, merged for the output conv."""

    def __init__(self, window_length: int, hop_factor: float = 0.25, bands: Sequence[Sequence[float]] = DAC_BANDS,
                 channels: int = 32) -> None:
        super().__init__()
        self.window_length, self.hop_length = window_length, int(window_length * hop_factor)
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        c = channels

        def stack() -> nn.ModuleList:
            return nn.ModuleList([
                _wn_conv(2, c, (3, 9), (1, 1), padding=(1, 4)),
                _wn_conv(c, c, (3, 9), (1, 2), padding=(1, 4)),
                _wn_conv(c, c, (3, 9), (1, 2), padding=(1, 4)),
                _wn_conv(c, c, (3, 9), (1, 2), padding=(1, 4)),
                _wn_conv(c, c, (3, 3), (1, 1), padding=(1, 1)),
            ])

        self.band_convs = nn.ModuleList([stack() for _ in self.bands])
        self.conv_post = _wn_conv(c, 1, (3, 3), (1, 1), padding=(1, 1), act=False)
        self.register_buffer("window", torch.hann_window(window_length), persistent=False)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Complex STFT as [B, 2, frames, bins], framed like audiotools' `match_stride=True` (frames = T / hop)."""
        t, hop, win = x.shape[-1], self.hop_length, self.window_length
        right = math.ceil(t / hop) * hop - t
        pad = (win - hop) // 2
        x = F.pad(x.unsqueeze(1), (pad, pad + right), mode="reflect").squeeze(1)
        s = torch.stft(x, n_fft=win, hop_length=hop, window=self.window.to(x.dtype), center=True,
                       return_complex=True)[..., 2:-2]
        return torch.view_as_real(s).permute(0, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        spec = self.spectrogram(x)
        fmap, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs):
            band = spec[..., lo:hi]
            for layer in convs:
                band = layer(band)
                fmap.append(band)
            outs.append(band)
        fmap.append(self.conv_post(torch.cat(outs, dim=-1)))
        return fmap


class DACDiscriminator(nn.Module):
    """DAC's combined discriminator: period discriminators plus multi-band complex-STFT discriminators.

    Inputs are DC-removed and peak-normalised to 0.8 first, as in DAC. Same call as the others; the logits are
    each sub-discriminator's last feature map (DAC uses them with LSGAN). `bandwidth_id` is accepted and ignored.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), fft_sizes: Sequence[int] = (2048, 1024, 512),
                 bands: Sequence[Sequence[float]] = DAC_BANDS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([_DACPeriod(p) for p in periods] +
                                            [BandDiscriminator(f, bands=bands) for f in fft_sizes])

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=-1, keepdim=True)
        return 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def discriminate(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        x = self.preprocess(_mono(x))
        return [d(x) for d in self.discriminators]

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor, bandwidth_id: torch.Tensor | None = None) -> Outputs:
        real, fake = self.discriminate(y), self.discriminate(y_hat)
        return ([f[-1] for f in real], [f[-1] for f in fake], [f[:-1] for f in real], [f[:-1] for f in fake])
