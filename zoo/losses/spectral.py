"""Spectral reconstruction losses for audio: log-mel L1 (single and multi-resolution) and multi-resolution STFT.

All take (prediction, target) waveforms [B, T] or [B, 1, T] and compute in fp32 (spectra under autocast lose the
small magnitudes the log needs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MelSpectrogramLoss", "MultiResolutionMelLoss", "MultiResolutionSTFTLoss"]


def _pair(y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def flat(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim == 1:
            x = x.unsqueeze(0)
        if x.ndim != 2:
            raise ValueError(f"expected audio [B, T] or [B, 1, T], got shape {tuple(x.shape)}")
        return x.float()

    y_hat, y = flat(y_hat), flat(y)
    if y_hat.shape != y.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(y_hat.shape)} vs {tuple(y.shape)}")
    return y_hat, y


class MelSpectrogramLoss(nn.Module):
    """L1 between log mel magnitude spectrograms: Vocos / WavTokenizer's `MelSpecReconstructionLoss`.

    torchaudio MelSpectrogram (Hann window, centred, power 1, HTK mel scale), log(clamp(., 1e-7)), mean |diff|.
    WavTokenizer weights it 45x at 24 kHz, n_fft 1024, hop 256, 100 mels.
    """

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 100,
                 clamp_eps: float = 1e-7) -> None:
        super().__init__()
        import torchaudio

        self.clamp_eps = clamp_eps
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                                        n_mels=n_mels, center=True, power=1)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_hat, y = _pair(y_hat, y)
        with torch.autocast(y.device.type, enabled=False):
            a = torch.log(self.mel(y_hat).clamp(min=self.clamp_eps))
            b = torch.log(self.mel(y).clamp(min=self.clamp_eps))
        return F.l1_loss(a, b)


class MultiResolutionMelLoss(nn.Module):
    """Sum over resolutions of log10-mel L1 (+ optional linear-mel L1), DAC's `MelSpectrogramLoss` recipe
    (https://arxiv.org/abs/2306.06546): windows 32..2048 with 5..320 mels, hop = window / 4, Slaney mel filters.

    Args:
        sample_rate: Hz.
        window_lengths: STFT sizes, one per resolution.
        n_mels: mel bands per resolution.
        hop_ratio: hop as a fraction of the window.
        clamp_eps: floor before the log.
        power: exponent on the mel magnitudes before the log (DAC 44 kHz: 1.0).
        mag_weight: weight of the linear-magnitude L1 term (DAC 44 kHz: 0).
        log_weight: weight of the log10 term.
    """

    def __init__(self, sample_rate: int = 24000, window_lengths: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
                 n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320), hop_ratio: float = 0.25,
                 clamp_eps: float = 1e-5, power: float = 1.0, mag_weight: float = 0.0, log_weight: float = 1.0) -> None:
        super().__init__()
        import torchaudio

        if len(window_lengths) != len(n_mels):
            raise ValueError(f"window_lengths and n_mels need one entry per resolution, got {len(window_lengths)} "
                             f"and {len(n_mels)}")
        self.clamp_eps, self.power, self.mag_weight, self.log_weight = clamp_eps, power, mag_weight, log_weight
        self.mels = nn.ModuleList([
            torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=w, win_length=w,
                                                 hop_length=max(1, int(w * hop_ratio)), n_mels=m, center=True,
                                                 power=1, norm="slaney", mel_scale="slaney")
            for w, m in zip(window_lengths, n_mels)
        ])

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_hat, y = _pair(y_hat, y)
        loss = 0.0
        with torch.autocast(y.device.type, enabled=False):
            for mel in self.mels:
                a, b = mel(y_hat), mel(y)
                if self.log_weight:
                    la = torch.log10(a.clamp(min=self.clamp_eps).pow(self.power))
                    lb = torch.log10(b.clamp(min=self.clamp_eps).pow(self.power))
                    loss = loss + self.log_weight * F.l1_loss(la, lb)
                if self.mag_weight:
                    loss = loss + self.mag_weight * F.l1_loss(a, b)
        return loss


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int, window: torch.Tensor) -> torch.Tensor:
    s = torch.stft(x, n_fft, hop, win, window, return_complex=True)
    return (s.real.pow(2) + s.imag.pow(2)).clamp(min=1e-7).sqrt()


class MultiResolutionSTFTLoss(nn.Module):
    """Parallel WaveGAN's multi-resolution STFT loss (https://arxiv.org/abs/1910.11480, eq. 4-6): spectral
    convergence ||  |Y| - |Ŷ| ||_F / || |Y| ||_F plus mean |log|Y| - log|Ŷ||, each averaged over resolutions.

    Args:
        fft_sizes, hop_lengths, win_lengths: one entry per resolution (defaults: the paper's three).
        sc_weight, mag_weight: weights of the two terms.
    """

    def __init__(self, fft_sizes: Sequence[int] = (1024, 2048, 512), hop_lengths: Sequence[int] = (120, 240, 50),
                 win_lengths: Sequence[int] = (600, 1200, 240), sc_weight: float = 1.0, mag_weight: float = 1.0) -> None:
        super().__init__()
        if not len(fft_sizes) == len(hop_lengths) == len(win_lengths):
            raise ValueError("fft_sizes, hop_lengths and win_lengths need one entry per resolution")
        self.resolutions = list(zip(fft_sizes, hop_lengths, win_lengths))
        self.sc_weight, self.mag_weight = sc_weight, mag_weight
        for i, (_, _, w) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", torch.hann_window(w), persistent=False)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_hat, y = _pair(y_hat, y)
        sc, mag = 0.0, 0.0
        with torch.autocast(y.device.type, enabled=False):
            for i, (n_fft, hop, win) in enumerate(self.resolutions):
                window = getattr(self, f"window{i}")
                a, b = (_magnitude(x, n_fft, hop, win, window) for x in (y_hat, y))
                sc = sc + torch.linalg.norm(b - a, dim=(-2, -1)).div(torch.linalg.norm(b, dim=(-2, -1))
                                                                     .clamp_min(1e-7)).mean()
                mag = mag + F.l1_loss(a.log(), b.log())
        n = len(self.resolutions)
        return self.sc_weight * sc / n + self.mag_weight * mag / n
