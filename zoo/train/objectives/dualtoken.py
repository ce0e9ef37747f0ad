"""DualToken's training objective (official `src/open_clip_train/train.py`, `--stage 1` as `run.sh` runs it).

Generator step, with the official weights as defaults:

    hidden_weight (5) * (MSE - cos)(postquant_semantic output, teacher hidden state at the semantic layer)
  + pooled_weight (1) * (MSE - cos)(student pooler output, frozen teacher pooler output)
  + 5 * (pixel commitment + semantic commitment)       (the quantisers' `quant_loss`; the codebooks learn by EMA)
  + 5 * MSE(reconstruction, image)                       (both in [-1, 1], as the official loss sees them)
  + 1 * LPIPS
  + 0.75 * w * (-mean D(reconstruction))                 (from `disc_start`; w = ||grad(MSE + LPIPS)|| /
                                                         (||grad gan|| + 1e-4) at the decoder's output conv,
                                                         clamped to [0.3, 10])

`cos` is the cosine over the feature axis, averaged over tokens / the batch. The teacher is the frozen SigLIP the
backbone starts from (the official `SiglipVisionModel.from_pretrained(pretrained_model)`): its hidden state after
the semantic layer (the official `hidden_states[-2]`, layer 26 of 27) and its pooler output. Stage 0 of the
official script (its semantic term is `5 * (MSE - cos)` of the poolers alone, no GAN) is `hidden_weight=0,
pooled_weight=5, disc_start` past the end.

Discriminator step (from `disc_start`): a `ResidualPatchGAN` (64 channels, 3 layers, GroupNorm; the official
`NLayerDiscriminator`) with the official leaky hinge `0.5 * (mean leaky_relu(1 - D(x)) + mean leaky_relu(1 +
D(y)))`, weighted 1 during the first GAN epoch and `disc_weight` (0.75) from `disc_weight_from` on.

Offline, `teacher="efficientnet_lite0"` (an ImageNet classifier, `zoo.losses.build_teacher`) gives the pooled
target (its globally pooled 1280-d features); the model then needs `pooled_dim=1280` and the hidden term is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.losses import PatchGAN, adaptive_weight
from zoo.losses import generator_loss as adversarial_loss
from zoo.losses.residual_patchgan import ResidualPatchGAN
from zoo.train.objectives.base import split_batch
from zoo.train.objectives.gan import GANObjective
from zoo.train.objectives.registry import register_objective

__all__ = ["DualTokenObjective", "PooledTeacher", "SiglipTeacher", "leaky_hinge_loss", "mse_minus_cos"]


def mse_minus_cos(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE, mean cosine over the last axis) between student and (detached) teacher features, in fp32."""
    s, t = student.float(), teacher.detach().float()
    return F.mse_loss(s, t), F.cosine_similarity(s, t, dim=-1).mean()


def leaky_hinge_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The official discriminator loss: hinge with leaky_relu (slope 0.01) instead of relu, halved."""
    return 0.5 * (F.leaky_relu(1 - real.float()).mean() + F.leaky_relu(1 + fake.float()).mean())


class SiglipTeacher(nn.Module):
    """The frozen SigLIP a DualToken starts from: images in [0, 1] -> (hidden state after block `layer`
    `[B, N, width]`, pooler output `[B, width]`).

    Args:
        model_config: the student's constructor kwargs (the backbone is rebuilt with its sizes, no `pooled_dim`).
        weights: a local HF SigLIP folder (model.safetensors) or weights file; its `vision_model.*` tensors.
    """

    def __init__(self, model_config: dict[str, Any], weights: str | Path) -> None:
        super().__init__()
        from zoo.convert.dualtoken import read_siglip_weights, siglip_to_backbone
        from zoo.image.dualtoken.backbone import SiglipBackbone

        c = model_config
        self.backbone = SiglipBackbone(c["image_size"], c["backbone_patch_size"], c["backbone_width"],
                                       c["backbone_depth"], c["backbone_heads"], c["backbone_mlp_dim"])
        state = {k[len("backbone."):]: v for k, v in siglip_to_backbone(read_siglip_weights(weights)).items()}
        self.backbone.load_state_dict(state, strict=True)
        self.backbone.eval().requires_grad_(False)
        self.layer = int(c["semantic_layer"])
        self.dim = int(c["backbone_width"])

    def train(self, mode: bool = True) -> SiglipTeacher:
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone.embed(images * 2 - 1)
        for block in self.backbone.blocks[: self.layer]:
            h = block(h)
        _, pooled = self.backbone.tail(h, self.layer)
        return h, pooled


class PooledTeacher(nn.Module):
    """A frozen timm classifier (`zoo.losses.build_teacher`) as a pooled-embedding teacher: images in [0, 1] ->
    (None, globally pooled features `[B, num_features]`, e.g. 1280 for EfficientNet-Lite0)."""

    def __init__(self, name: str, weights: str | Path | None = None, input_size: int | None = None) -> None:
        super().__init__()
        from zoo.losses.semantic import build_teacher

        self.teacher = build_teacher(name, weights=weights, input_size=input_size)
        self.dim = int(self.teacher.model.num_features)

    def train(self, mode: bool = True) -> PooledTeacher:
        super().train(mode)
        self.teacher.train(mode)
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[None, torch.Tensor]:
        t = self.teacher
        x = images.float()
        if x.shape[-2:] != (t.input_size, t.input_size):
            x = F.interpolate(x, size=(t.input_size, t.input_size), mode="bicubic", antialias=True,
                              align_corners=False)
        x = (x - t.mean) / t.std
        return None, t.model.forward_head(t.model.forward_features(x), pre_logits=True)


@register_objective("dualtoken")
class DualTokenObjective(GANObjective):
    """The DualToken loss; see the module docstring for the formula.

    Args:
        l2_weight: pixel MSE on [-1, 1] images (5).
        perceptual_weight: LPIPS (1; 0: no LPIPS network is built, e.g. offline where its VGG is not available).
        lpips_net, lpips_weights: LPIPS backbone and its local torchvision weights file (see `zoo.losses.LPIPS`).
        commitment_weight: weight of the pixel + semantic commitment losses (5).
        hidden_weight: (MSE - cos) of the postquant semantic hidden state vs the teacher's (5; SigLIP teacher only).
        pooled_weight: (MSE - cos) of the pooler outputs (1).
        teacher: "siglip" (the frozen SigLIP the backbone starts from, `teacher_weights` = its local folder) or a
            `zoo.losses.build_teacher` name for a pooled-only teacher ("efficientnet_lite0" offline).
        teacher_weights, teacher_size: its local weights and (for the timm teachers) input side.
        disc_weight: weight of the adversarial term and of the discriminator loss after its first epoch (0.75).
        disc_start: first step with adversarial training (official: half of the first epoch, 19531 steps of 256).
        disc_weight_from: step from which the discriminator loss is scaled by `disc_weight` (official: the second
            GAN epoch, 39062).
        adaptive_min, adaptive_max: clamp of the adaptive weight ([0.3, 10]).
        discriminator: "residual_patchgan" (official) or "patchgan" (pix2pix / taming); discriminator_kwargs its
            arguments.
    """

    def __init__(
        self,
        l2_weight: float = 5.0,
        perceptual_weight: float = 1.0,
        lpips_net: str = "vgg",
        lpips_weights: str | None = None,
        commitment_weight: float = 5.0,
        hidden_weight: float = 5.0,
        pooled_weight: float = 1.0,
        teacher: str = "siglip",
        teacher_weights: str | None = None,
        teacher_size: int | None = None,
        disc_weight: float = 0.75,
        disc_start: int = 19531,
        disc_weight_from: int = 39062,
        adaptive_min: float = 0.3,
        adaptive_max: float = 10.0,
        discriminator: str = "residual_patchgan",
        discriminator_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if discriminator not in ("residual_patchgan", "patchgan"):
            raise ValueError(f"discriminator must be residual_patchgan or patchgan, got {discriminator!r}")
        if not 0 <= adaptive_min <= adaptive_max:
            raise ValueError(f"need 0 <= adaptive_min <= adaptive_max, got {adaptive_min}, {adaptive_max}")
        super().__init__(
            discriminator=discriminator,
            discriminator_kwargs=dict(discriminator_kwargs or {"channels": 64, "num_layers": 3}),
            gan_loss="hinge",  # the official vanilla_g_loss is -mean(D(y)), our hinge generator term
            gan_weight=disc_weight,
            disc_start=disc_start,
            adaptive_weight=True,
            adaptive_max=adaptive_max,
            last_layer="decoder.conv_out.weight",
            l1_weight=0.0,
            l2_weight=l2_weight,
        )
        self.perceptual_weight = float(perceptual_weight)
        self.lpips_args = {"net": lpips_net, "backbone_weights": lpips_weights}
        self.commitment_weight = float(commitment_weight)
        self.hidden_weight = float(hidden_weight)
        self.pooled_weight = float(pooled_weight)
        self.teacher_args = {"name": teacher, "weights": teacher_weights, "input_size": teacher_size}
        self.disc_weight = float(disc_weight)
        self.disc_weight_from = int(disc_weight_from)
        self.adaptive_min = float(adaptive_min)
        self.lpips: nn.Module | None = None
        self.teacher: nn.Module | None = None

    def build_discriminator(self, model: nn.Module) -> nn.Module:
        cls = ResidualPatchGAN if self.discriminator_name == "residual_patchgan" else PatchGAN
        return cls(**self.discriminator_kwargs)

    def setup(self, model: nn.Module) -> None:
        if getattr(model, "family", None) != "dualtoken":
            raise ValueError(f"objective 'dualtoken' trains DualToken models, got a {type(model).__name__}")
        super().setup(model)
        if self.perceptual_weight:
            from zoo.losses import LPIPS

            self.lpips = LPIPS(**self.lpips_args)
        if self.hidden_weight or self.pooled_weight:
            self.teacher = self._build_teacher(model)

    def _build_teacher(self, model: nn.Module) -> nn.Module:
        name, weights = self.teacher_args["name"], self.teacher_args["weights"]
        config = model.config
        if name == "siglip":
            if weights is None:
                raise FileNotFoundError("teacher 'siglip' needs teacher_weights: the local SigLIP2 folder the backbone "
                                        "starts from (HF layout, model.safetensors)")
            teacher = SiglipTeacher(config, weights)
        else:
            if self.hidden_weight:
                raise ValueError(f"hidden_weight needs the SigLIP teacher's hidden states; teacher {name!r} gives a "
                                 "pooled embedding only: set objective.kwargs.hidden_weight=0")
            teacher = PooledTeacher(name, weights, self.teacher_args["input_size"])
        pooled = config.get("pooled_dim") or config["backbone_width"]
        if self.pooled_weight and teacher.dim != pooled:
            raise ValueError(f"the teacher's pooled embedding has {teacher.dim} channels but the model's has {pooled}; "
                             f"set model.kwargs.pooled_dim={teacher.dim}")
        return teacher

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        out = model(x)
        y = out.reconstruction
        terms = {"l2": F.mse_loss(y.float() * 2 - 1, x.float() * 2 - 1)}
        nll = terms["l2"]  # what the adaptive weight balances: MSE + p_weight * LPIPS, unscaled by l2_weight
        loss = self.l2_weight * terms["l2"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips(y, x).mean()
            nll = nll + self.perceptual_weight * terms["lpips"]
            loss = loss + self.perceptual_weight * terms["lpips"]
        for name in ("pixel_commitment", "semantic_commitment"):
            terms[name] = out.losses[name].float()
            loss = loss + self.commitment_weight * terms[name]
        if self.teacher is not None:
            hidden, pooled = self.teacher(x)
            if self.hidden_weight:
                terms["hidden_mse"], terms["hidden_cos"] = mse_minus_cos(out.extras["semantic_hidden"], hidden)
                loss = loss + self.hidden_weight * (terms["hidden_mse"] - terms["hidden_cos"])
            if self.pooled_weight:
                terms["pooled_mse"], terms["pooled_cos"] = mse_minus_cos(out.extras["pooled"], pooled)
                loss = loss + self.pooled_weight * (terms["pooled_mse"] - terms["pooled_cos"])
        self._pair = (x.detach(), y.detach())
        if self.trains_discriminator(step):
            terms["gan"] = adversarial_loss(self.discriminate(y, update=False), self.gan_loss)
            weight = torch.tensor(self.gan_weight, device=loss.device)
            if torch.is_grad_enabled():
                w = adaptive_weight(nll, terms["gan"], self._last_layer, self.adaptive_max).clamp_min(self.adaptive_min)
                terms["adaptive_weight"] = w
                weight = weight * w
            loss = loss + weight * terms["gan"]
        for name, value in out.stats.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                terms[name] = value.detach().float().reshape(())
        return loss, {k: v.detach() for k, v in terms.items()}

    def discriminator_loss(self, model: nn.Module, batch: Any, step: int
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._pair is None:  # no generator step on this batch: reconstruct it without gradients
            x, _ = split_batch(batch)
            with torch.no_grad():
                self._pair = (x, model(x).reconstruction)
        real, fake = self._pair
        self._pair = None
        logits_real = self.discriminate(real, update=True)
        logits_fake = self.discriminate(fake.to(real.dtype), update=True)
        weight = self.disc_weight if step >= self.disc_weight_from else 1.0
        loss = weight * leaky_hinge_loss(logits_real, logits_fake)
        return loss, {"logits_real": logits_real.detach().float().mean(),
                      "logits_fake": logits_fake.detach().float().mean()}
