"""Optional learned / perceptual speech-quality predictors, each from its own package (weights ship in the wheel):

- `distillmos`: DistillMOS (Stahl & Gamper 2025, https://arxiv.org/abs/2502.05356), a no-reference MOS predictor
  distilled from XLS-R SQA; `pip install --no-deps distillmos xls-r-sqa`.
- `visqol`: ViSQOL v3 speech mode at 16 kHz (Chinen et al. 2020, https://arxiv.org/abs/2004.09584), MOS-LQO of an
  estimate against its reference; `pip install visqol-python`.

Both resample to 16 kHz with torchaudio and raise `MetricUnavailable` with the install line when missing.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from zoo.metrics.audio import MetricUnavailable, as_clip, resample

__all__ = ["distillmos", "visqol", "visqol_mapper"]

QUALITY_RATE = 16000


@functools.lru_cache(maxsize=1)
def _distillmos_model() -> torch.nn.Module:
    try:
        import distillmos as package
    except ImportError as err:
        raise MetricUnavailable(
            f"DistillMOS needs `pip install --no-deps distillmos xls-r-sqa` (weights ship in the wheel): {err}"
        ) from None
    model = package.ConvTransformerSQAModel()
    return model.eval()


def distillmos(estimate: torch.Tensor, sample_rate: int) -> float:
    """DistillMOS prediction (1..5) for one clip `[T]`; no reference needed."""
    wav = resample(as_clip(estimate, "distillmos"), sample_rate, QUALITY_RATE)
    with torch.no_grad():
        return float(_distillmos_model()(wav[None]).reshape(-1)[0])


@functools.lru_cache(maxsize=1)
def _visqol_api():
    try:
        from visqol.api import VisqolApi
    except ImportError as err:
        raise MetricUnavailable(f"ViSQOL needs `pip install visqol-python`: {err}") from None
    api = VisqolApi()
    # The deep-lattice mapper needs ai-edge-litert; without it the package's polynomial mapper is used.
    api.create(mode="speech", use_lattice_model=importlib.util.find_spec("ai_edge_litert") is not None)
    return api


def visqol(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> float:
    """ViSQOL speech-mode MOS-LQO (1..5) of one clip `[T]` against its reference, at 16 kHz."""
    ref = resample(as_clip(reference, "visqol"), sample_rate, QUALITY_RATE)
    est = resample(as_clip(estimate, "visqol"), sample_rate, QUALITY_RATE)
    if ref.shape != est.shape:
        raise ValueError(f"visqol: reference {tuple(ref.shape)} and estimate {tuple(est.shape)} differ")
    result = _visqol_api().measure_from_arrays(ref.double().numpy(), est.double().numpy(), QUALITY_RATE)
    return float(result.moslqo)


def visqol_mapper() -> str:
    """Which MOS mapper `visqol` uses here (recorded in the protocol)."""
    return "lattice" if importlib.util.find_spec("ai_edge_litert") is not None else "polynomial"

