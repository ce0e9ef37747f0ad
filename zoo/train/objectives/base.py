"""`Objective`: what a training step minimises, given a tokenizer and a batch.

An objective is an `nn.Module` (so frozen helpers such as a perceptual network move with it) that exposes

- `generator_loss(model, batch, step) -> (loss, terms)`: the tokenizer's loss and named scalars to log;
- optionally a `discriminator` module, `disc_start` and `discriminator_loss(model, batch, step) -> (loss, terms)`.

The engine builds it from the recipe (`objective.name`, `objective.kwargs`), calls `setup(model)` once before
making the optimisers, and prepares `discriminator` for distributed training with its own optimiser.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Objective", "split_batch"]

_SIGNAL_KEYS = ("image", "audio", "x", "signal", "face")


def split_batch(batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """A loader batch -> (signal, everything else).

    Batches are either the signal tensor itself or a mapping holding it under one of "image", "audio", "x",
    "signal" or "face" (other entries, e.g. "lengths", are returned in the second value).
    """
    if isinstance(batch, torch.Tensor):
        return batch, {}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], {"rest": batch[1:]}
    if isinstance(batch, dict):
        for key in _SIGNAL_KEYS:
            if key in batch:
                return batch[key], {k: v for k, v in batch.items() if k != key}
        raise ValueError(f"batch mapping has keys {sorted(batch)}; expected the signal under one of {_SIGNAL_KEYS}")
    raise TypeError(f"a batch must be a Tensor or a mapping with the signal under {_SIGNAL_KEYS}, got {type(batch)}")


class Objective(nn.Module):
    """Base class of training objectives; subclass and decorate with `@register_objective(name)`."""

    def __init__(self) -> None:
        super().__init__()
        self.discriminator: nn.Module | None = None
        self.disc_start: int = 0
        self.__dict__["_disc_runner"] = None  # the distributed wrapper of `discriminator` (not a submodule)

    def setup(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) tokenizer before optimisers exist: build model-dependent parts here."""

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the total loss to minimise for the tokenizer and a dict of named scalar terms to log."""
        raise NotImplementedError(f"{type(self).__name__} must implement generator_loss")

    def discriminator_loss(
        self, model: nn.Module, batch: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the discriminator's loss and terms (objectives with a `discriminator` implement this)."""
        raise NotImplementedError(f"{type(self).__name__} has a discriminator but no discriminator_loss")

    def trains_discriminator(self, step: int) -> bool:
        """Whether the discriminator is trained (and used by the generator loss) at optimiser step `step`."""
        return self.discriminator is not None and step >= self.disc_start

    def attach_discriminator(self, runner: nn.Module | None) -> None:
        """The engine hands over the prepared (e.g. DDP-wrapped) discriminator used for its own updates."""
        self.__dict__["_disc_runner"] = runner

    def discriminate(self, *inputs: torch.Tensor, update: bool) -> Any:
        """Run the discriminator on `inputs` (one signal, or real and fake for paired discriminators).

        Args:
            update: True in `discriminator_loss` (goes through the distributed wrapper so its gradients are
                synchronised); False in `generator_loss` (the bare module, whose parameters the engine freezes
                during the generator step so only the tokenizer receives gradients).
        """
        if self.discriminator is None:
            raise RuntimeError(f"{type(self).__name__} has no discriminator")
        runner = self.__dict__["_disc_runner"]
        module = runner if update and runner is not None else self.discriminator
        return module(*inputs)
