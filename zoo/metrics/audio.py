"""Audio reconstruction metrics. Argument order is always (reference, estimate), as in `pesq` and `pystoi`.

- `mel_distance` (DAC, Kumar et al. 2023, https://arxiv.org/abs/2306.06546), `stft_distance` (Parallel WaveGAN,
  Yamamoto et al. 2020, https://arxiv.org/abs/1910.11480), `si_sdr`: `[B, T]` -> `[B]`; the spectral ones score
  each item with the training losses of `zoo.losses.spectral`, so metric and loss are one definition.
- `stoi` (pystoi) and `pesq` (the `pesq` package, ITU-T P.862): one clip at a time, as those packages work; both
  resample with torchaudio to the rate they are defined at, and raise `MetricUnavailable` with the reason when a
  clip cannot be scored (e.g. shorter than PESQ's 0.25 s minimum).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

__all__ = [
    "MetricUnavailable",
    "mel_distance",
    "pesq",
    "resample",
    "si_sdr",
    "stft_distance",
    "stoi",
]

PESQ_RATES = {"wb": 16000, "nb": 8000}


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here (missing package or weights, input it is not defined for); says why."""


def _pair(reference: torch.Tensor, estimate: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if reference.shape != estimate.shape:
        raise ValueError(f"{what}: reference {tuple(reference.shape)} and estimate {tuple(estimate.shape)} differ; "
                         "trim both to the same length")
    if reference.dim() == 1:
        reference, estimate = reference[None], estimate[None]
    if reference.dim() != 2:
        raise ValueError(f"{what} expects [B, T] or [T] audio, got shape {tuple(reference.shape)}")
    return reference.float(), estimate.float()


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """`zoo.io.resample` in float32 (torchaudio's windowed sinc for every common pair of rates; no-op when the rates
    match)."""
    if orig_rate == new_rate:
        return wav
    from zoo.io import resample as _resample

    return _resample(wav.float(), orig_rate, new_rate)


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB over the last dim (Le Roux et al. 2019, https://arxiv.org/abs/1811.02508);
    both signals are made zero-mean first. Computed in float64."""
    if reference.shape != estimate.shape:
        raise ValueError(f"si_sdr: reference {tuple(reference.shape)} and estimate {tuple(estimate.shape)} differ")
    ref = reference.double() - reference.double().mean(-1, keepdim=True)
    est = estimate.double() - estimate.double().mean(-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


@functools.lru_cache(maxsize=8)
def _mel_loss(sample_rate: int) -> torch.nn.Module:
    from zoo.losses.spectral import MultiResolutionMelLoss

    return MultiResolutionMelLoss(sample_rate)


@functools.lru_cache(maxsize=1)
def _stft_loss() -> torch.nn.Module:
    from zoo.losses.spectral import MultiResolutionSTFTLoss

    return MultiResolutionSTFTLoss()


def _per_item(loss: torch.nn.Module, largest_window: int, reference: torch.Tensor, estimate: torch.Tensor,
              what: str) -> torch.Tensor:
    # centred STFTs reflect-pad by half a window, which needs a longer signal
    if reference.shape[-1] <= largest_window // 2:
        raise MetricUnavailable(
            f"clip too short for {what}: {reference.shape[-1]} samples, needs more than {largest_window // 2} "
            f"(half its largest window, {largest_window})"
        )
    loss = loss.to(reference.device)
    with torch.no_grad():
        values = [loss(estimate[i : i + 1], reference[i : i + 1]) for i in range(reference.shape[0])]
    return torch.stack(values).double()


def stft_distance(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT distance `[B]`: Parallel WaveGAN's spectral convergence + log-magnitude L1, averaged
    over its three resolutions (`zoo.losses.MultiResolutionSTFTLoss`, one item at a time)."""
    reference, estimate = _pair(reference, estimate, "stft_distance")
    loss = _stft_loss()
    return _per_item(loss, max(n_fft for n_fft, _, _ in loss.resolutions), reference, estimate, "stft_distance")


def mel_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Multi-scale mel distance `[B]`: DAC's mel loss, the sum over 7 scales (windows 32..2048, 5..320 slaney mels,
    hop = window / 4) of L1 between log10 mel magnitudes (`zoo.losses.MultiResolutionMelLoss`, one item at a time).
    """
    reference, estimate = _pair(reference, estimate, "mel_distance")
    loss = _mel_loss(sample_rate)
    return _per_item(loss, max(mel.n_fft for mel in loss.mels), reference, estimate, "mel_distance")


def as_clip(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    x = torch.as_tensor(x).float()
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1:
        raise ValueError(f"{what} scores one clip at a time: expected [T], got shape {tuple(x.shape)}")
    return x


def stoi(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility of one clip, by `pystoi` (which resamples to 10 kHz itself).

    Raises `MetricUnavailable` where pystoi would return its 1e-5 placeholder (clip too short or silent)."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as err:
        raise MetricUnavailable(f"STOI needs the pystoi package (pip install pystoi): {err}") from None
    ref, est = as_clip(reference, "stoi"), as_clip(estimate, "stoi")
    if ref.shape != est.shape:
        raise ValueError(f"stoi: reference {tuple(ref.shape)} and estimate {tuple(est.shape)} differ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(ref.double().numpy(), est.double().numpy(), sample_rate, extended=extended))
    # pystoi returns a placeholder 1e-5 (with a warning) when too few non-silent 384 ms segments remain
    for warning in caught:
        if "Not enough STFT frames" in str(warning.message):
            raise MetricUnavailable(
                f"clip too short (or too silent) for STOI: {ref.numel() / sample_rate:.3f} s; pystoi needs at "
                "least 30 non-silent 25.6 ms frames (about 0.4 s) after removing silence"
            )
    return value


def pesq(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int, mode: str = "wb") -> float:
    """PESQ (ITU-T P.862) MOS-LQO of one clip by the `pesq` package: wide-band at 16 kHz (`mode="wb"`) or
    narrow-band at 8 kHz (`"nb"`); other rates are resampled there with torchaudio first.

    Raises `MetricUnavailable` saying why when the clip cannot be scored (shorter than 0.25 s, no speech found).
    """
    try:
        import pesq as _pesq
    except ImportError as err:
        raise MetricUnavailable(f"PESQ needs the pesq package (pip install pesq): {err}") from None
    if mode not in PESQ_RATES:
        raise ValueError(f"pesq mode must be 'wb' (16 kHz) or 'nb' (8 kHz), got {mode!r}")
    rate = PESQ_RATES[mode]
    ref, est = as_clip(reference, "pesq"), as_clip(estimate, "pesq")
    if ref.shape != est.shape:
        raise ValueError(f"pesq: reference {tuple(ref.shape)} and estimate {tuple(est.shape)} differ")
    ref, est = resample(ref, sample_rate, rate), resample(est, sample_rate, rate)
    if ref.numel() < rate // 4:
        raise MetricUnavailable(
            f"clip too short for PESQ: {ref.numel() / rate:.3f} s, the minimum is 0.25 s ({rate // 4} samples at "
            f"{rate} Hz)"
        )
    try:
        return float(_pesq.pesq(rate, ref.numpy().astype(np.float32), est.numpy().astype(np.float32), mode))
    except _pesq.NoUtterancesError:
        raise MetricUnavailable("PESQ found no utterances (speech) in the reference clip") from None
    except _pesq.BufferTooShortError:
        raise MetricUnavailable(f"clip too short for PESQ at {rate} Hz (the minimum is 0.25 s)") from None
