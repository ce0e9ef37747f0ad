"""A PatchGAN whose strided layers are pre-activation residual blocks with GroupNorm (RQ-VAE / DualToken's
`NLayerDiscriminator`), instead of pix2pix's conv-BatchNorm-LeakyReLU stack (`zoo.losses.PatchGAN`).

    conv 3x3 s2 (in -> ch), LeakyReLU(0.2)
    for n in 1..L-1: block(ch * min(2^(n-1), 8) -> ch * min(2^n, 8), stride 2)
    block(-> ch * min(2^L, 8), stride 1)
    conv 3x3 (-> 1 logit per patch)

    block(x) = shortcut(x) + conv3x3(leaky_relu(groupnorm(x)))   (one conv; the shortcut is a 1x1 conv on x
                                                                  bilinearly resized to the block's output size)

Conv weights start from N(0, 0.02) (`weights_init`; biases keep PyTorch's default), GroupNorm from (1, 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualPatchGAN"]


class _Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, num_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        if self.nin_shortcut is None:
            return x + h
        if h.shape[-2:] != x.shape[-2:]:
            x = F.interpolate(x, size=h.shape[-2:], mode="bilinear", align_corners=False)
        return self.nin_shortcut(x) + h


class ResidualPatchGAN(nn.Module):
    """Images `[B, C, H, W]` (in [0, 1], mapped to [-1, 1] first) -> logits `[B, 1, H / 2^L, W / 2^L]`.

    Args:
        in_channels: image channels.
        channels: first width (ndf; 64 in DualToken).
        num_layers: L, the strided layers (3: 384 px -> 48 x 48 logits).
        num_groups: GroupNorm groups (32 in DualToken; every width must be a multiple).
        rescale_input: map [0, 1] inputs to [-1, 1] (what the official discriminator sees).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3, num_groups: int = 32,
                 rescale_input: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if channels % num_groups:
            raise ValueError(f"channels {channels} must be a multiple of num_groups {num_groups}")
        self.rescale_input = rescale_input
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            layers.append(_Block(channels * prev, channels * mult, 2 if n < num_layers else 1, num_groups))
        layers.append(nn.Conv2d(channels * mult, 1, 3, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"ResidualPatchGAN expects [B, C, H, W] images, got shape {tuple(x.shape)}")
        return self.main(x * 2 - 1 if self.rescale_input else x)
