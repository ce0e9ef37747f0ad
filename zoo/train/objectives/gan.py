"""`GANObjective`: reconstruction + adversarial training, the base that family GAN objectives extend.

Generator step: the reconstruction objective plus `gan_weight * adversarial loss` of the discriminator's verdict on
the reconstruction (from `disc_start` on), optionally scaled by VQGAN's adaptive weight (Esser et al. 2021,
https://arxiv.org/abs/2012.09841, eq. 7), plus `feature_matching_weight * feature matching` (MelGAN,
https://arxiv.org/abs/1910.06711) for discriminators that return feature maps. Discriminator step: real inputs
against the detached reconstructions of the same batch.

Two discriminator call styles are supported (losses and discriminators come from `zoo.losses`):
- single input, `D(x) -> logits` (PatchGAN): called on the reconstruction in the generator step and on real and
  fake in the discriminator step;
- paired, `D(real, fake) -> (logits_real, logits_fake, fmaps_real, fmaps_fake)` (HiFi-GAN style MPD / MRD / DAC).

Families override `build_discriminator` or `adversarial_terms` for anything else.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any

import torch
from torch import nn

from zoo.losses import (
    GAN_LOSSES,
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    PatchGAN,
    adaptive_weight,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from zoo.train.objectives.reconstruction import ReconstructionObjective, align_signals
from zoo.train.objectives.registry import register_objective

__all__ = ["DISCRIMINATORS", "GANObjective", "is_paired"]

DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "patchgan": PatchGAN,
    "mpd": MultiPeriodDiscriminator,
    "mrd": MultiResolutionDiscriminator,
    "dac": DACDiscriminator,
}


def is_paired(discriminator: nn.Module) -> bool:
    """Whether `forward` takes (real, fake) rather than one input."""
    params = list(inspect.signature(discriminator.forward).parameters.values())
    required = [p for p in params if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY,
                                                                                          p.POSITIONAL_OR_KEYWORD)]
    return len(required) >= 2


@register_objective("gan")
class GANObjective(ReconstructionObjective):
    """Reconstruction + adversarial objective.

    Args:
        discriminator: one of `DISCRIMINATORS` (patchgan, mpd, mrd, dac); families may override
            `build_discriminator` instead.
        discriminator_kwargs: its constructor arguments.
        gan_loss: a `zoo.losses.GAN_LOSSES` kind (hinge, hinge_clamped, non_saturating, lsgan).
        gan_weight: weight of the generator's adversarial term.
        feature_matching_weight: weight of feature matching (paired discriminators only).
        disc_loss_weight: weight of the discriminator loss (0.5 reproduces taming's VQGAN).
        disc_start: optimiser step from which the discriminator is trained and the adversarial terms are used.
        adaptive_weight: scale the adversarial term by VQGAN's adaptive weight (clamped to [0, adaptive_max]).
        adaptive_max: upper clamp of the adaptive weight (1e4 in taming).
        last_layer: fnmatch pattern naming the model parameter for the adaptive weight; default: the last
            parameter with ndim >= 2 in registration order (the decoder's output layer in most tokenizers).
        **kwargs: `ReconstructionObjective` arguments (l1_weight, l2_weight, loss_weights, default_loss_weight).
    """

    def __init__(
        self,
        discriminator: str = "patchgan",
        discriminator_kwargs: dict[str, Any] | None = None,
        gan_loss: str = "hinge",
        gan_weight: float = 0.1,
        feature_matching_weight: float = 0.0,
        disc_loss_weight: float = 1.0,
        disc_start: int = 0,
        adaptive_weight: bool = False,
        adaptive_max: float = 1e4,
        last_layer: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if gan_loss not in GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}")
        if disc_start < 0:
            raise ValueError(f"disc_start must be >= 0, got {disc_start}")
        self.discriminator_name = discriminator
        self.discriminator_kwargs = dict(discriminator_kwargs or {})
        self.gan_loss = gan_loss
        self.gan_weight = float(gan_weight)
        self.feature_matching_weight = float(feature_matching_weight)
        self.disc_loss_weight = float(disc_loss_weight)
        self.disc_start = int(disc_start)
        self.adaptive_weight = adaptive_weight
        self.adaptive_max = float(adaptive_max)
        self.last_layer_pattern = last_layer
        self._last_layer: nn.Parameter | None = None
        self._paired = False
        self._pair: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_discriminator(self, model: nn.Module) -> nn.Module:
        """The discriminator for `model`: `DISCRIMINATORS[discriminator](**discriminator_kwargs)`."""
        if self.discriminator_name not in DISCRIMINATORS:
            raise ValueError(
                f"discriminator must be one of {sorted(DISCRIMINATORS)}, got {self.discriminator_name!r}"
            )
        return DISCRIMINATORS[self.discriminator_name](**self.discriminator_kwargs)

    def setup(self, model: nn.Module) -> None:
        self.discriminator = self.build_discriminator(model)
        self._paired = is_paired(self.discriminator)
        if self.feature_matching_weight and not self._paired:
            raise ValueError("feature_matching_weight needs a discriminator that returns feature maps (mpd, mrd, dac)")
        if self.adaptive_weight:
            self._last_layer = self._find_last_layer(model)

    def _find_last_layer(self, model: nn.Module) -> nn.Parameter:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if self.last_layer_pattern is not None:
            hits = [(n, p) for n, p in named if fnmatch.fnmatchcase(n, self.last_layer_pattern)]
            if len(hits) != 1:
                raise ValueError(
                    f"last_layer {self.last_layer_pattern!r} must match exactly one parameter of the model, matched "
                    f"{[n for n, _ in hits][:5]}; e.g. {named[-1][0]!r}"
                )
            return hits[0][1]
        matrices = [p for _, p in named if p.ndim >= 2]
        if not matrices:
            raise ValueError("adaptive_weight needs a weight matrix/kernel in the model; set last_layer")
        return matrices[-1]

    def adversarial_terms(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generator-side terms for the reconstruction `fake` (with gradient) and its input `real`: "gan" and, for
        paired discriminators with `feature_matching_weight`, "feature_matching"."""
        if not self._paired:
            return {"gan": generator_loss(self.discriminate(fake, update=False), self.gan_loss)}
        _, logits_fake, fmaps_real, fmaps_fake = self.discriminate(real, fake, update=False)
        terms = {"gan": generator_loss(logits_fake, self.gan_loss)}
        if self.feature_matching_weight:
            terms["feature_matching"] = feature_matching_loss(fmaps_real, fmaps_fake)
        return terms

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, out = self.forward_model(model, batch)
        loss, terms = self.reconstruction_loss(x, out)
        if out.reconstruction is None:
            raise ValueError("objective 'gan' needs ForwardOutput.reconstruction to show the discriminator")
        fake, real = align_signals(out.reconstruction, x)
        self._pair = (real.detach(), fake.detach())
        if not self.trains_discriminator(step):
            return loss, terms
        adversarial = self.adversarial_terms(real, fake)
        weight = torch.tensor(self.gan_weight, device=loss.device)
        if self.adaptive_weight and torch.is_grad_enabled():
            weight = weight * adaptive_weight(loss, adversarial["gan"], self._last_layer, self.adaptive_max)
        loss = loss + weight * adversarial["gan"]
        if "feature_matching" in adversarial:
            loss = loss + self.feature_matching_weight * adversarial["feature_matching"]
        terms.update({k: v.detach() for k, v in adversarial.items()})
        terms["gan_weight"] = weight.detach()
        return loss, terms

    def discriminator_loss(
        self, model: nn.Module, batch: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._pair is None:  # no generator step on this batch before: reconstruct it without gradients
            with torch.no_grad():
                x, out = self.forward_model(model, batch)
            fake, real = align_signals(out.reconstruction, x)
            self._pair = (real, fake)
        real, fake = self._pair
        self._pair = None
        fake = fake.to(real.dtype)
        if self._paired:
            logits_real, logits_fake, _, _ = self.discriminate(real, fake, update=True)
        else:
            logits_real = self.discriminate(real, update=True)
            logits_fake = self.discriminate(fake, update=True)
        loss = self.disc_loss_weight * discriminator_loss(logits_real, logits_fake, self.gan_loss)

        def mean(logits: Any) -> torch.Tensor:
            items = [logits] if isinstance(logits, torch.Tensor) else list(logits)
            return torch.stack([t.detach().float().mean() for t in items]).mean()

        return loss, {"logits_real": mean(logits_real), "logits_fake": mean(logits_fake)}
