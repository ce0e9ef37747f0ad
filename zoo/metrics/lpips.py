"""LPIPS as a metric: the `zoo.losses.perceptual.LPIPS` network (the `lpips` package's linear heads on a local
torchvision backbone file), per image, without gradients, with its protocol. Missing backbone weights give
`MetricUnavailable` saying which file to put where.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zoo.losses.perceptual import BACKBONE_FILES, LPIPS, find_backbone_weights
from zoo.metrics.audio import MetricUnavailable
from zoo.weights import sha256_file

__all__ = ["LPIPSMetric"]


class LPIPSMetric(nn.Module):
    """Per-image LPIPS `[B]` between images `[B, 3, H, W]` in [0, 1] (lower is more similar).

    Args:
        net: "vgg" (what tokenizers train with and most tokenizer papers report) or "alex" (the LPIPS paper's
            recommended metric).
        backbone: torchvision ImageNet weights file (`vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth`); default:
            `$ZOO_LPIPS_BACKBONE`, then torchvision's cache `torch.hub.get_dir()/checkpoints/`.
    """

    def __init__(self, net: str = "vgg", backbone: str | Path | None = None) -> None:
        super().__init__()
        try:
            self.backbone_path = find_backbone_weights(net, backbone)
        except FileNotFoundError:
            where = backbone or Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
            raise MetricUnavailable(
                f"backbone weights not found at {where}, put {BACKBONE_FILES[net]} there (torchvision's ImageNet "
                f"weights, which the lpips wheel does not ship; or pass --lpips-backbone PATH / set ZOO_LPIPS_BACKBONE)"
            ) from None
        self.net = net
        try:
            self.lpips = LPIPS(net=net, backbone_weights=self.backbone_path)
        except ImportError as err:
            raise MetricUnavailable(str(err)) from None

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y).double()

    def protocol(self) -> dict:
        return {
            "net": self.net,
            "version": "0.1",
            "package": "lpips (linear heads from the wheel)",
            "backbone": str(self.backbone_path),
            "backbone_sha256": sha256_file(self.backbone_path),
            "input": "[0, 1] float, no resize",
        }
