"""Adversarial losses, feature matching and the PatchGAN image discriminator.

Loss conventions (a list of logits, one per sub-discriminator, is averaged over the list):

| kind | discriminator | generator |
|---|---|---|
| hinge | E[relu(1 - D(x))] + E[relu(1 + D(G))] | -E[D(G)] (VQGAN / taming, https://arxiv.org/abs/2012.09841) |
| hinge_clamped | same as hinge | E[relu(1 - D(G))] (HiFi-GAN / Vocos / WavTokenizer) |
| non_saturating | E[softplus(-D(x))] + E[softplus(D(G))] | E[softplus(-D(G))] (Goodfellow et al. 2014) |
| lsgan | E[(1 - D(x))^2] + E[D(G)^2] | E[(1 - D(G))^2] (Mao et al. 2017, used by DAC) |

The discriminator loss is the plain sum of its real and fake terms; taming's VQGAN halves it, so a recipe that
reproduces it sets the weight 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GAN_LOSSES", "PatchGAN", "adaptive_weight", "discriminator_loss", "feature_matching_loss",
           "generator_loss"]

GAN_LOSSES = ("hinge", "hinge_clamped", "non_saturating", "lsgan")
_ALIASES = {"vanilla": "non_saturating", "bce": "non_saturating", "ls": "lsgan", "mse": "lsgan"}

Logits = torch.Tensor | Sequence[torch.Tensor]


def _kind(kind: str) -> str:
    kind = _ALIASES.get(kind, kind)
    if kind not in GAN_LOSSES:
        raise ValueError(f"GAN loss must be one of {GAN_LOSSES} (or {sorted(_ALIASES)}), got {kind!r}")
    return kind


def _as_list(x: Logits) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


def discriminator_loss(real: Logits, fake: Logits, kind: str = "hinge") -> torch.Tensor:
    """Discriminator loss on logits for real and generated inputs (tensors, or lists averaged over)."""
    kind = _kind(kind)
    real, fake = _as_list(real), _as_list(fake)
    if len(real) != len(fake) or not real:
        raise ValueError(f"need as many real as fake logits (and at least one), got {len(real)} and {len(fake)}")
    total = 0.0
    for r, f in zip(real, fake):
        r, f = r.float(), f.float()
        if kind in ("hinge", "hinge_clamped"):
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        elif kind == "non_saturating":
            total = total + F.softplus(-r).mean() + F.softplus(f).mean()
        else:
            total = total + (1 - r).pow(2).mean() + f.pow(2).mean()
    return total / len(real)


def generator_loss(fake: Logits, kind: str = "hinge") -> torch.Tensor:
    """Generator (adversarial) loss on the discriminator's logits for generated inputs."""
    kind = _kind(kind)
    fake = _as_list(fake)
    if not fake:
        raise ValueError("generator_loss got no logits")
    total = 0.0
    for f in fake:
        f = f.float()
        if kind == "hinge":
            total = total - f.mean()
        elif kind == "hinge_clamped":
            total = total + F.relu(1 - f).mean()
        elif kind == "non_saturating":
            total = total + F.softplus(-f).mean()
        else:
            total = total + (1 - f).pow(2).mean()
    return total / len(fake)


def feature_matching_loss(real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]]
                          ) -> torch.Tensor:
    """L1 between discriminator feature maps (MelGAN, https://arxiv.org/abs/1910.06711).

    `real[d][l]` / `fake[d][l]`: layer l of sub-discriminator d. Mean |r - f| per map, summed over layers and
    averaged over sub-discriminators (WavTokenizer's scaling). The real maps are detached.
    """
    if len(real) != len(fake) or not real:
        raise ValueError(f"need feature maps of as many sub-discriminators, got {len(real)} and {len(fake)}")
    total = 0.0
    for rd, fd in zip(real, fake):
        if len(rd) != len(fd):
            raise ValueError(f"sub-discriminator gave {len(rd)} real but {len(fd)} fake feature maps")
        for r, f in zip(rd, fd):
            total = total + (r.detach().float() - f.float()).abs().mean()
    return total / len(real)


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's balance ||grad rec|| / ||grad gan|| at the decoder's last layer (https://arxiv.org/abs/2012.09841,
    eq. 7), detached and clamped to [0, max_weight]. Needs a graph through `last_layer` for both losses."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    w = g_rec.norm() / (g_gan.norm() + 1e-4)
    return w.clamp(0.0, max_weight).detach()


class PatchGAN(nn.Module):
    """PatchGAN discriminator (pix2pix, https://arxiv.org/abs/1611.07004), as in taming's NLayerDiscriminator.

    Takes images in the zoo convention ([B, 3, H, W] in [0, 1]) and maps them to [-1, 1] first (what taming's
    discriminators see). Returns a logit map [B, 1, h, w] (about H/8 with 3 layers). Submodule names follow taming
    (`main.<i>`), so its discriminator weights load directly.

    Args:
        in_channels: image channels.
        channels: width of the first layer (ndf).
        num_layers: stride-2 layers (receptive field 70 px at 3).
        norm: "batch" (taming), "group", "instance" or "none".
        rescale_input: map [0, 1] inputs to [-1, 1].
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3, norm: str = "batch",
                 rescale_input: bool = True) -> None:
        super().__init__()
        if norm not in ("batch", "group", "instance", "none"):
            raise ValueError(f"PatchGAN norm must be batch, group, instance or none, got {norm!r}")
        if num_layers < 1:
            raise ValueError(f"PatchGAN num_layers must be >= 1, got {num_layers}")
        self.rescale_input = rescale_input

        def norm_layer(c: int) -> nn.Module:
            if norm == "batch":
                return nn.BatchNorm2d(c)
            if norm == "group":
                return nn.GroupNorm(min(32, c), c)
            if norm == "instance":
                return nn.InstanceNorm2d(c, affine=True)
            return nn.Identity()

        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=bias),
                       norm_layer(channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCGAN init as in taming: conv N(0, 0.02), norm scale N(1, 0.02), bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"PatchGAN expects [B, C, H, W] images, got shape {tuple(x.shape)}")
        return self.main(x * 2 - 1 if self.rescale_input else x)
