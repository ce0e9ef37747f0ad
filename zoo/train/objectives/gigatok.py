"""GigaTok's training objective (official `VQLoss` of SilentView/GigaTok, https://arxiv.org/abs/2504.08736).

Generator step, with the official weights as defaults:

    1 * L2 + 1 * LPIPS                        (images in [-1, 1], as the official loss sees them)
  + 1 * codebook + 0.25 * commitment          (on l2-normalised vectors; `entropy_weight` for XL-XXL: 0.005)
  + 0.5 * semantic                            (1 - cos between `extras["decoder_features"]` and the teacher's patch
                                               features; the official -cos has the same gradient)
  + 1 * feature reconstruction                (MSE decoder-ViT map vs CNN-encoder map, only before `aux_loss_end`)
  + L2 + LPIPS of the direct CNN reconstruction  (decoder(encoder(x)), only before `aux_loss_end`)
  + 0.5 * hinge generator loss of a PatchGAN  (from `disc_start`)

Discriminator step (from `disc_start`): `0.5 * disc_weight * (relu(1 - D(x)) + relu(1 + D(y)))`, the official
`disc_weight * hinge_d_loss`. Optional RobustTok latent perturbation (https://arxiv.org/abs/2503.08354) goes to
the model's forward, after the VQ losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.losses import generator_loss as adversarial_loss
from zoo.train.objectives.base import split_batch
from zoo.train.objectives.gan import GANObjective
from zoo.train.objectives.registry import register_objective

__all__ = ["GigaTokObjective"]


@register_objective("gigatok")
class GigaTokObjective(GANObjective):
    """The GigaTok loss; see the module docstring for the formula.

    Args:
        l2_weight: pixel MSE (on [-1, 1] images).
        perceptual_weight: LPIPS (0 disables it and no LPIPS network is built).
        lpips_net, lpips_weights: LPIPS backbone and its local torchvision weights file (see `zoo.losses.LPIPS`).
        codebook_weight, commitment_weight, entropy_weight: weights of the quantiser's losses.
        semantic_weight: semantic regularisation (`proj_weight`; 0 disables it and no teacher is built).
        teacher, teacher_weights, teacher_size, teacher_layer: the frozen teacher (`zoo.losses.build_teacher`):
            "dinov2_vitb14" with the official DINOv2 file for the paper, "efficientnet_lite0" offline.
        feature_reconstruction_weight: MSE between decoder-ViT and CNN-encoder maps, before `aux_loss_end`.
        aux_loss_end: step at which the auxiliary terms stop (15000 for S-S/S-B/B-L, 0 for XL-XXL).
        direct_reconstruction: add the direct CNN reconstruction terms before `aux_loss_end`.
        perturbation: `{"alpha", "beta", "delta"}` for latent perturbation, or None.
        disc_weight: adversarial weight for generator and discriminator (official 0.5).
        disc_start: first step with adversarial training (official 20000).
        discriminator_kwargs: `zoo.losses.PatchGAN` arguments (official: 64 channels, 3 layers, BatchNorm).
        gan_loss: adversarial loss kind (official hinge).
    """

    def __init__(
        self,
        l2_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        lpips_net: str = "vgg",
        lpips_weights: str | None = None,
        codebook_weight: float = 1.0,
        commitment_weight: float = 0.25,
        entropy_weight: float = 0.0,
        semantic_weight: float = 0.5,
        teacher: str = "dinov2_vitb14",
        teacher_weights: str | None = None,
        teacher_size: int | None = None,
        teacher_layer: int | None = None,
        feature_reconstruction_weight: float = 1.0,
        aux_loss_end: int = 15000,
        direct_reconstruction: bool = True,
        perturbation: dict[str, float] | None = None,
        disc_weight: float = 0.5,
        disc_start: int = 20000,
        discriminator_kwargs: dict[str, Any] | None = None,
        gan_loss: str = "hinge",
    ) -> None:
        super().__init__(
            discriminator="patchgan",
            discriminator_kwargs=dict(discriminator_kwargs or {"channels": 64, "num_layers": 3, "norm": "batch"}),
            gan_loss=gan_loss,
            gan_weight=disc_weight,
            disc_loss_weight=0.5 * disc_weight,  # official: disc_weight * 0.5 * (hinge real + hinge fake)
            disc_start=disc_start,
            l1_weight=0.0,
            l2_weight=l2_weight,
        )
        if perturbation is not None:
            unknown = set(perturbation) - {"alpha", "beta", "delta"}
            if unknown:
                raise ValueError(f"perturbation takes alpha, beta and delta, got unknown keys {sorted(unknown)}")
        self.perceptual_weight = float(perceptual_weight)
        self.lpips_args = dict(net=lpips_net, backbone_weights=lpips_weights)
        self.codebook_weight = float(codebook_weight)
        self.commitment_weight = float(commitment_weight)
        self.entropy_weight = float(entropy_weight)
        self.semantic_weight = float(semantic_weight)
        self.teacher_args = dict(name=teacher, weights=teacher_weights, input_size=teacher_size, layer=teacher_layer)
        self.feature_reconstruction_weight = float(feature_reconstruction_weight)
        self.aux_loss_end = int(aux_loss_end)
        self.direct_reconstruction = bool(direct_reconstruction)
        self.perturbation = dict(perturbation) if perturbation else None
        self.lpips: nn.Module | None = None
        self.align: nn.Module | None = None

    def setup(self, model: nn.Module) -> None:
        super().setup(model)
        if self.perceptual_weight:
            from zoo.losses import LPIPS

            self.lpips = LPIPS(**self.lpips_args)
        if self.entropy_weight and not model.config.get("entropy_loss"):
            raise ValueError("entropy_weight > 0 needs the model built with entropy_loss=True (model.kwargs)")
        if self.semantic_weight:
            from zoo.losses.semantic import SemanticAlignmentLoss, build_teacher

            dim = model.config.get("semantic_dim")
            if not dim or model.config.get("semantic_depth") is None:
                raise ValueError("semantic_weight > 0 needs a GigaTok with semantic_depth and semantic_dim "
                                 "(model.kwargs), or set objective.kwargs.semantic_weight=0")
            teacher = build_teacher(**self.teacher_args)
            if teacher.dim != dim:
                raise ValueError(f"teacher {self.teacher_args['name']} gives {teacher.dim} channels but the model's "
                                 f"semantic_dim is {dim}; set model.kwargs.semantic_dim={teacher.dim}")
            self.align = SemanticAlignmentLoss(teacher)

    def _pixel_terms(self, y: torch.Tensor, x: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
        terms = {prefix + "l2": F.mse_loss(y.float() * 2 - 1, x.float() * 2 - 1)}
        if self.lpips is not None:
            terms[prefix + "lpips"] = self.lpips(y, x).mean()
        return terms

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        aux = step < self.aux_loss_end
        out = model(x, direct_reconstruction=aux and self.direct_reconstruction, perturbation=self.perturbation)
        y = out.reconstruction
        terms = self._pixel_terms(y, x, "")
        weighted = [(self.l2_weight, "l2"), (self.perceptual_weight, "lpips")]
        if aux and self.direct_reconstruction:
            terms.update(self._pixel_terms(out.extras["direct_reconstruction"], x, "direct_"))
            weighted += [(self.l2_weight, "direct_l2"), (self.perceptual_weight, "direct_lpips")]
        for name, weight in (("codebook", self.codebook_weight), ("commitment", self.commitment_weight),
                             ("entropy", self.entropy_weight)):
            if name in out.losses:
                terms[name] = out.losses[name].float()
                weighted.append((weight, name))
        if aux:
            terms["feature_reconstruction"] = out.losses["feature_reconstruction"].float()
            weighted.append((self.feature_reconstruction_weight, "feature_reconstruction"))
        if self.align is not None:
            terms["semantic"] = self.align(out.extras["decoder_features"], images=x)
            weighted.append((self.semantic_weight, "semantic"))
        loss = sum(w * terms[name] for w, name in weighted if w and name in terms)
        self._pair = (x.detach(), y.detach())
        if self.trains_discriminator(step):
            terms["gan"] = adversarial_loss(self.discriminate(y, update=False), self.gan_loss)
            loss = loss + self.gan_weight * terms["gan"]
        for name, value in out.stats.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                terms[name] = value.detach().float().reshape(())
        return loss, {k: v.detach() for k, v in terms.items()}
