"""Exponential moving average of a model's parameters, checkpointed with the run.

Only floating-point parameters are averaged (fp32 shadow copies); buffers (e.g. a VQ's EMA codebook, BatchNorm
statistics) are taken from the live model when the average is applied, since averaging codebook entries across
dead-code restarts would blend unrelated codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """`shadow = decay * shadow + (1 - decay) * param` after every optimiser step.

    Args:
        model: the (unwrapped) model whose trainable parameters are tracked.
        decay: the averaging constant, e.g. 0.999.
        warmup: when True, use `min(decay, (1 + n) / (10 + n))` at update n, so early averages are not
            dominated by the random initialisation.

    Has `state_dict` / `load_state_dict` (tensors and numbers only), which `zoo.train.checkpoint` stores as
    safetensors with the run's checkpoints.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {
            name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        params = dict(model.named_parameters())
        names = list(self.shadow)
        shadows = [self.shadow[n] for n in names]
        torch._foreach_lerp_(shadows, [params[n].detach().float() for n in names], 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's tracked parameters with the averages."""
        params = dict(model.named_parameters())
        for name, value in self.shadow.items():
            params[name].copy_(value.to(params[name].dtype))

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the averages into `model` (e.g. for evaluation or export), then restore it."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise ValueError(f"EMA checkpoint lacks parameters {missing[:5]}; was it saved for another model?")
        shapes = [n for n in self.shadow if tuple(state["shadow"][n].shape) != tuple(self.shadow[n].shape)]
        if shapes:
            raise ValueError(f"EMA checkpoint has other shapes for {shapes[:5]}; was it saved for another model?")
        for name in self.shadow:
            self.shadow[name].copy_(state["shadow"][name])
        self.num_updates = int(state["num_updates"])

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {name: value.to(device) for name, value in self.shadow.items()}
        return self
