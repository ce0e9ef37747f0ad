"""TokenFlow's training objective (official `VQLoss` of ByteFlow-AI/TokenFlow, https://arxiv.org/abs/2412.03069).

Generator step, with the official weights as defaults:

    1 * L2 + 1 * LPIPS                  (images in [-1, 1], as the official loss sees them)
  + 1 * codebook + 0.25 * commitment    (on the l2-normalised halves, averaged over scales; `entropy_weight` is the
                                         official `entropy_loss_ratio`, 0 by default)
  + 1 * semantic                        (mean over tokens of 1 - cos between the semantic decoder's output and the
                                         frozen teacher's patch features: CLIP-B/16 `ln_post(tokens) @ proj`, i.e.
                                         `teacher_head=True`)
  + 0.5 * hinge generator loss of a PatchGAN (64 channels, 3 layers, BatchNorm), from `disc_start` (20000)

Discriminator step (from `disc_start`): `disc_weight * 0.5 * (relu(1 - D(x)) + relu(1 + D(y)))`.

`finetune_decoder=True` is the official second stage (`--finetune_decoder`): every parameter but the pixel
decoder's is frozen, the semantic loss is dropped (nothing it reaches trains); the same pixel losses and GAN.
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

__all__ = ["TokenFlowObjective"]


@register_objective("tokenflow")
class TokenFlowObjective(GANObjective):
    """The TokenFlow loss; see the module docstring for the formula.

    Args:
        l2_weight: pixel MSE (on [-1, 1] images).
        perceptual_weight: LPIPS (0: no LPIPS network is built).
        lpips_net, lpips_weights: LPIPS backbone and its local torchvision weights file (see `zoo.losses.LPIPS`).
        codebook_weight, commitment_weight, entropy_weight: weights of the quantiser's losses (1, 0.25, 0).
        semantic_weight: the teacher loss (1; 0: no teacher is built).
        teacher, teacher_weights, teacher_size, teacher_layer, teacher_kwargs: the frozen teacher
            (`zoo.losses.build_teacher`): for the paper, timm "vit_base_patch16_clip_224" with the OpenAI CLIP file
            and `teacher_kwargs={num_classes: 512}`; offline, "efficientnet_lite0".
        teacher_head: apply the teacher model's `head` to every patch feature (CLIP's `visual.proj`, 768 -> 512).
        finetune_decoder: train the pixel decoder only (the official second stage).
        disc_weight: adversarial weight (0.5); disc_start: first step with adversarial training (20000).
        discriminator_kwargs: `zoo.losses.PatchGAN` arguments; gan_loss: adversarial loss kind (hinge).
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
        semantic_weight: float = 1.0,
        teacher: str = "vit_base_patch16_clip_224",
        teacher_weights: str | None = None,
        teacher_size: int | None = None,
        teacher_layer: int | None = None,
        teacher_kwargs: dict[str, Any] | None = None,
        teacher_head: bool = True,
        finetune_decoder: bool = False,
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
        self.perceptual_weight = float(perceptual_weight)
        self.lpips_args = {"net": lpips_net, "backbone_weights": lpips_weights}
        self.codebook_weight = float(codebook_weight)
        self.commitment_weight = float(commitment_weight)
        self.entropy_weight = float(entropy_weight)
        self.finetune_decoder = bool(finetune_decoder)
        self.semantic_weight = 0.0 if self.finetune_decoder else float(semantic_weight)
        self.teacher_args = {"name": teacher, "weights": teacher_weights, "input_size": teacher_size,
                             "layer": teacher_layer, **dict(teacher_kwargs or {})}
        self.teacher_head = bool(teacher_head)
        self.lpips: nn.Module | None = None
        self.align: nn.Module | None = None

    def setup(self, model: nn.Module) -> None:
        super().setup(model)
        if model.family != "tokenflow":
            raise ValueError(f"objective 'tokenflow' trains TokenFlow models, got a {model.family} model")
        if self.perceptual_weight:
            from zoo.losses import LPIPS

            self.lpips = LPIPS(**self.lpips_args)
        if self.entropy_weight and not model.config.get("entropy_loss"):
            raise ValueError("entropy_weight > 0 needs the model built with entropy_loss=True (model.kwargs)")
        if self.finetune_decoder:
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("decoder."))
        if self.semantic_weight:
            from zoo.losses.semantic import SemanticAlignmentLoss, build_teacher

            teacher = build_teacher(**self.teacher_args)
            dim = teacher.dim
            if self.teacher_head:
                head = getattr(teacher.model, "head", None)
                if not isinstance(head, nn.Linear):
                    raise ValueError(f"teacher_head=True needs a teacher with a Linear head (CLIP's projection); "
                                     f"{self.teacher_args['name']} has {type(head).__name__}")
                dim = head.out_features
            if dim != model.config["semantic_out_dim"]:
                raise ValueError(f"the teacher gives {dim} channels but the model's semantic_out_dim is "
                                 f"{model.config['semantic_out_dim']}; set model.kwargs.semantic_out_dim={dim}")
            self.align = SemanticAlignmentLoss(teacher)

    @torch.no_grad()
    def teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's patch features `[B, C, h, w]` for images in [0, 1] (projected by its head if asked)."""
        feats = self.align.teacher(images)
        if self.teacher_head:
            head = self.align.teacher.model.head
            feats = F.linear(feats.permute(0, 2, 3, 1), head.weight, head.bias).permute(0, 3, 1, 2)
        return feats

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        out = model(x)
        y = out.reconstruction
        terms = {"l2": F.mse_loss(y.float() * 2 - 1, x.float() * 2 - 1)}
        weighted = [(self.l2_weight, "l2")]
        if self.lpips is not None:
            terms["lpips"] = self.lpips(y, x).mean()
            weighted.append((self.perceptual_weight, "lpips"))
        for name, weight in (("codebook", self.codebook_weight), ("commitment", self.commitment_weight),
                             ("entropy", self.entropy_weight)):
            if name in out.losses:
                terms[name] = out.losses[name].float()
                weighted.append((weight, name))
        if self.align is not None:
            terms["semantic"] = self.align(out.extras["semantic_features"], teacher_features=self.teacher_features(x))
            weighted.append((self.semantic_weight, "semantic"))
        loss = sum(w * terms[name] for w, name in weighted if w)
        self._pair = (x.detach(), y.detach())
        if self.trains_discriminator(step):
            terms["gan"] = adversarial_loss(self.discriminate(y, update=False), self.gan_loss)
            loss = loss + self.gan_weight * terms["gan"]
        for name, value in out.stats.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                terms[name] = value.detach().float().reshape(())
        return loss, {k: v.detach() for k, v in terms.items()}
