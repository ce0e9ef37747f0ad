"""Reconstruction metrics: images (PSNR, SSIM, LPIPS, rFID, pFID), audio (mel / STFT distance, SI-SDR, STOI, PESQ,
optional DistillMOS and ViSQOL) and codebook usage; `evaluate` runs them over a folder (`zoo eval`).

    from zoo.metrics import psnr, ssim, FID, perturb_tokens
    from zoo.metrics import METRICS, register_metric   # the per-item metric table (zoo.metrics.table)
    from zoo.metrics.evaluate import evaluate
"""

from zoo.metrics.audio import MetricUnavailable, mel_distance, pesq, si_sdr, stft_distance, stoi
from zoo.metrics.codebook import CodebookUsage, usage_from_counts
from zoo.metrics.fid import FID, FeatureStats, InceptionV3, frechet_distance, tf_bilinear_resize
from zoo.metrics.image import psnr, ssim
from zoo.metrics.pfid import (
    PFID_ALPHA,
    PFID_DELTA,
    change_rate,
    expected_change_rate,
    perturb_batch,
    perturb_ids,
    perturb_tokens,
)
from zoo.metrics.table import DEFAULT_METRICS, METRICS, metrics_for, register_metric

__all__ = [
    "CodebookUsage",
    "DEFAULT_METRICS",
    "FID",
    "FeatureStats",
    "InceptionV3",
    "METRICS",
    "MetricUnavailable",
    "PFID_ALPHA",
    "PFID_DELTA",
    "change_rate",
    "expected_change_rate",
    "frechet_distance",
    "mel_distance",
    "metrics_for",
    "perturb_batch",
    "perturb_ids",
    "perturb_tokens",
    "pesq",
    "psnr",
    "register_metric",
    "si_sdr",
    "ssim",
    "stft_distance",
    "stoi",
    "tf_bilinear_resize",
    "usage_from_counts",
]
