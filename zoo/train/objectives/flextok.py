"""FlexTok's training objective: the rectified-flow loss of the model plus REPA feature alignment.

The official repository releases no training code; the paper trains with a rectified-flow loss (logit-normal t),
nested dropout of the register tokens, null-condition dropout for CFG and REPA (https://arxiv.org/abs/2410.06940)
on decoder features with a frozen DINOv2-L. The model's `forward` does the first three; this objective adds REPA:
`1 - cos` between `extras["decoder_features"]` (the decoder's projected patch tokens) and the teacher's patch
features at the same grid positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.train.objectives.base import Objective, split_batch
from zoo.train.objectives.registry import register_objective

__all__ = ["FlexTokObjective"]


@register_objective("flextok")
class FlexTokObjective(Objective):
    """`flow_weight * flow + repa_weight * (1 - cos(decoder features, teacher features))`.

    Args:
        flow_weight: weight of the model's `losses["flow"]`.
        repa_weight: weight of the REPA term (0 disables it and no teacher is built).
        teacher: `zoo.losses.semantic.build_teacher` preset or timm name ("dinov2_vitl14" for the paper,
            "efficientnet_lite0" offline).
        teacher_weights: local weights file of the teacher (optional for efficientnet_lite0).
        teacher_size: image side fed to the teacher.
        teacher_layer: teacher block whose output is the target (None: its final features).
    """

    def __init__(
        self,
        flow_weight: float = 1.0,
        repa_weight: float = 0.5,
        teacher: str = "efficientnet_lite0",
        teacher_weights: str | None = None,
        teacher_size: int | None = None,
        teacher_layer: int | None = None,
    ) -> None:
        super().__init__()
        self.flow_weight = float(flow_weight)
        self.repa_weight = float(repa_weight)
        self.teacher_args = {
            "name": teacher, "weights": teacher_weights, "input_size": teacher_size, "layer": teacher_layer
        }
        self.align: nn.Module | None = None

    def setup(self, model: nn.Module) -> None:
        if not self.repa_weight:
            return
        from zoo.losses.semantic import SemanticAlignmentLoss, build_teacher

        decoder = getattr(model, "decoder", None)
        if getattr(decoder, "repa_proj", None) is None:
            raise ValueError("repa_weight > 0 needs a FlexTok built with repa_layer and repa_dim (model.kwargs), "
                             "or set objective.kwargs.repa_weight=0")
        teacher = build_teacher(**self.teacher_args)
        dim = teacher.dim
        if dim != model.config["repa_dim"]:
            raise ValueError(f"teacher {self.teacher_args['name']} gives {dim} channels but the model's repa_dim is "
                             f"{model.config['repa_dim']}; set model.kwargs.repa_dim={dim}")
        self.align = SemanticAlignmentLoss(teacher)

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        out = model(x)
        terms = {"flow": out.losses["flow"].float()}
        total = self.flow_weight * terms["flow"]
        if self.align is not None:
            terms["repa"] = self.align(out.extras["decoder_features"], images=x)
            total = total + self.repa_weight * terms["repa"]
        for name, value in out.stats.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                terms[name] = value.detach().float().reshape(())
        return total, terms
