"""The table of per-item reconstruction metrics, by name and modality (training-time validation and `zoo eval`).

A per-item metric is `fn(reference, estimate, sample_rate) -> [B]`: one value per item of a batch (`sample_rate` is
None for images). Register one with a decorator in any module of `zoo.metrics` (found on the first lookup):

    @register_metric("psnr", modalities=("image", "face"))
    def _psnr(reference, estimate, sample_rate):
        return psnr(reference, estimate)

    METRICS.get("psnr")            # the function
    metrics_for("audio")           # {"mel_distance": fn, "si_sdr": fn, "stft_distance": fn}
    DEFAULT_METRICS["audio"]       # ("si_sdr", "mel_distance"): what validation reports when a recipe names none
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from zoo.metrics.audio import mel_distance, si_sdr, stft_distance
from zoo.metrics.image import psnr, ssim
from zoo.plugins import Registry

__all__ = ["DEFAULT_METRICS", "METRICS", "PerItemMetric", "metrics_for", "register_metric"]

PerItemMetric = Callable[[torch.Tensor, torch.Tensor, "int | None"], torch.Tensor]

METRICS: Registry[PerItemMetric] = Registry("metric", packages=("zoo.metrics",))

# the metrics a modality reports when none are named (in this order)
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "image": ("psnr", "ssim"),
    "face": ("psnr", "ssim"),
    "audio": ("si_sdr", "mel_distance"),
}


def register_metric(name: str, *, modalities: Iterable[str]) -> Callable[[PerItemMetric], PerItemMetric]:
    """Decorator: register `fn(reference, estimate, sample_rate) -> [B]` as metric `name` for `modalities`."""
    modalities = tuple(modalities)
    if not modalities:
        raise ValueError(f"metric {name!r} names no modality")
    return METRICS.register(name, modalities=modalities)


def metrics_for(modality: str) -> dict[str, PerItemMetric]:
    """Every registered per-item metric that applies to `modality`, by name (sorted)."""
    return {name: fn for name, fn in METRICS.items() if modality in METRICS.info(name).get("modalities", ())}


# -- the built-in metrics -----------------------------------------------------------------------------------------


@register_metric("psnr", modalities=("image", "face"))
def _psnr(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
    return psnr(reference, estimate)


@register_metric("ssim", modalities=("image", "face"))
def _ssim(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
    return ssim(reference, estimate)


@register_metric("si_sdr", modalities=("audio",))
def _si_sdr(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
    return si_sdr(reference, estimate)


@register_metric("mel_distance", modalities=("audio",))
def _mel_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
    return mel_distance(reference, estimate, sample_rate=sample_rate)


@register_metric("stft_distance", modalities=("audio",))
def _stft_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
    return stft_distance(reference, estimate)
