"""Optimisers and learning-rate schedules from the recipe's `optim` and `schedule` sections."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["LRSchedule", "build_optimizer", "build_scheduler"]


OPTIM_ATTRIBUTE = "zoo_optim"  # per-parameter options an objective may set in `setup`: {"lr_scale": x, "betas": (a, b)}


def build_optimizer(module: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """AdamW/Adam over the trainable parameters; weight decay only on tensors with ndim >= 2.

    An objective can give some parameters their own learning-rate factor and betas before the optimisers are built
    (e.g. TEASER's encoders at 0.25 x the generator's rate with Adam's default betas): it sets
    `param.zoo_optim = {"lr_scale": 0.25, "betas": (0.9, 0.999)}`, and those parameters form their own groups (the
    schedule multiplies every group's rate by the same factor, so the ratio holds).

    Args:
        module: the model (or discriminator) to optimise.
        cfg: an `OptimizerConfig` (name, lr, betas, weight_decay, eps).
    """
    groups: dict[tuple, list[nn.Parameter]] = {}
    for param in module.parameters():
        if param.requires_grad:
            options = getattr(param, OPTIM_ATTRIBUTE, None) or {}
            unknown = set(options) - {"lr_scale", "betas"}
            if unknown:
                raise ValueError(f"per-parameter optimiser options are lr_scale and betas, got {sorted(unknown)}")
            betas = tuple(float(b) for b in options.get("betas", cfg.betas))
            key = (param.ndim >= 2, float(options.get("lr_scale", 1.0)), betas)
            groups.setdefault(key, []).append(param)
    if not groups:
        raise ValueError(f"{type(module).__name__} has no trainable parameters to optimise")
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(cfg.name)
    if cls is None:
        raise ValueError(f"optimizer name must be adamw or adam, got {cfg.name!r}")
    param_groups = [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": cfg.lr * scale,
                     "betas": betas} for (decay, scale, betas), params in sorted(groups.items(), key=lambda kv: (
                         not kv[0][0], kv[0][1] != 1.0, kv[0][1], kv[0][2]))]
    return cls(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


class LRSchedule:
    """lr multiplier at step s: linear warm-up over `warmup` steps, then constant, cosine or linear decay to
    `min_lr_ratio` at `max_steps`."""

    def __init__(self, max_steps: int, warmup: int = 0, kind: str = "cosine", min_lr_ratio: float = 0.0) -> None:
        if kind not in ("cosine", "constant", "linear"):
            raise ValueError(f"schedule kind must be cosine, constant or linear, got {kind!r}")
        self.max_steps, self.warmup, self.kind, self.min_lr_ratio = max_steps, warmup, kind, min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.max_steps - self.warmup))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` following `LRSchedule` for a `ScheduleConfig` (stepped once per optimiser step).

    The multiplier is wrapped in a plain function so that checkpoints store only the step count: a resumed run
    follows the schedule of its own recipe (e.g. a larger `max_steps`), not the one saved.
    """
    schedule = LRSchedule(cfg.max_steps, cfg.warmup, cfg.kind, cfg.min_lr_ratio)

    def multiplier(step: int) -> float:
        return schedule(step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
