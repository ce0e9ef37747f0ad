"""The generic objective every family can train with: pixel/sample L1 and L2 plus the model's own losses."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.api import ForwardOutput
from zoo.train.objectives.base import Objective, split_batch
from zoo.train.objectives.registry import register_objective

__all__ = ["ReconstructionObjective", "align_signals"]


def align_signals(reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring a reconstruction and its input to one shape: `[B,1,T]` audio is squeezed to `[B,T]` and a time axis
    that differs by a few samples (decoder padding) is cut to the shorter one. Other mismatches are errors."""
    if target.dim() == 3 and target.shape[1] == 1 and reconstruction.dim() == 2:
        target = target[:, 0]
    if reconstruction.dim() == 3 and reconstruction.shape[1] == 1 and target.dim() == 2:
        reconstruction = reconstruction[:, 0]
    if reconstruction.shape[:-1] == target.shape[:-1] and target.dim() == 2:
        length = min(reconstruction.shape[-1], target.shape[-1])
        reconstruction, target = reconstruction[..., :length], target[..., :length]
    if reconstruction.shape != target.shape:
        raise ValueError(
            f"reconstruction shape {tuple(reconstruction.shape)} does not match the input {tuple(target.shape)}; "
            "the model's forward must return the signal in the input convention"
        )
    return reconstruction, target


@register_objective("reconstruction")
class ReconstructionObjective(Objective):
    """`l1_weight * |y - x| + l2_weight * (y - x)^2 + sum_k w_k * losses[k]`.

    `y` is `ForwardOutput.reconstruction` (skipped when a family returns None, e.g. a flow decoder whose loss is
    in `losses`), `losses` the model's unweighted auxiliary losses (commitment, codebook, entropy, ...).

    Args:
        l1_weight: weight of the mean absolute error.
        l2_weight: weight of the mean squared error.
        loss_weights: weight per auxiliary loss name; names the model does not produce are an error.
        default_loss_weight: weight of auxiliary losses not listed in `loss_weights`.
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        l2_weight: float = 0.0,
        loss_weights: dict[str, float] | None = None,
        default_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.l1_weight = float(l1_weight)
        self.l2_weight = float(l2_weight)
        self.loss_weights = {str(k): float(v) for k, v in (loss_weights or {}).items()}
        self.default_loss_weight = float(default_loss_weight)
        self._checked_names = False

    def forward_model(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, ForwardOutput]:
        """Run the tokenizer's training forward on the batch signal; returns (input, output)."""
        x, _ = split_batch(batch)
        out = model(x)
        if not isinstance(out, ForwardOutput):
            raise TypeError(f"the model's forward must return zoo.api.ForwardOutput, got {type(out).__name__}")
        return x, out

    def reconstruction_loss(self, x: torch.Tensor, out: ForwardOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted L1/L2 and auxiliary losses, with every unweighted term and the model's stats to log."""
        terms: dict[str, torch.Tensor] = {}
        total = x.new_zeros((), dtype=torch.float32)
        if out.reconstruction is not None and (self.l1_weight or self.l2_weight):
            y, target = align_signals(out.reconstruction.float(), x.float())
            if self.l1_weight:
                terms["l1"] = F.l1_loss(y, target)
                total = total + self.l1_weight * terms["l1"]
            if self.l2_weight:
                terms["l2"] = F.mse_loss(y, target)
                total = total + self.l2_weight * terms["l2"]
        if not self._checked_names:
            unknown = sorted(set(self.loss_weights) - set(out.losses))
            if unknown:
                raise ValueError(
                    f"objective loss_weights name {unknown}, which the model does not return; "
                    f"its losses are {sorted(out.losses) or 'none'}"
                )
            self._checked_names = True
        for name, value in out.losses.items():
            terms[name] = value.float()
            weight = self.loss_weights.get(name, self.default_loss_weight)
            if weight:
                total = total + weight * terms[name]
        if not terms:
            raise ValueError(
                "nothing to minimise: the model returned no reconstruction and no losses (or every weight is 0)"
            )
        for name, value in out.stats.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                terms.setdefault(name, value.detach().float().reshape(()))
        return total, terms

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, out = self.forward_model(model, batch)
        return self.reconstruction_loss(x, out)
