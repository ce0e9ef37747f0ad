"""KARL's loss-condition token: the desired L1 reconstruction error epsilon, binned upwards onto 19 fixed values.

The official `get_discretized_loss_and_embedding` (ShivamDuggal4/karl, kolmogorov_tokenizers/karl_vqgan.py) picks
the smallest bin value >= epsilon, compared in float32 (a "ceil"), and falls back to the last bin (0.38) when every
bin is smaller. There is no 0.08 bin. The chosen row of the learnt `(19, width)` table is the encoder's first token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["ERROR_BINS", "as_errors", "error_bin"]

# the official `rec_losses` table (19 values; 0.08 is not one of them)
ERROR_BINS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.09, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.24, 0.28,
              0.32, 0.38)


def error_bin(errors: torch.Tensor) -> torch.Tensor:
    """Bin index (LongTensor, same shape) of each desired L1 error: the smallest bin value >= the error in float32,
    or the last bin when no bin is that large."""
    values = torch.tensor(ERROR_BINS, dtype=torch.float32, device=errors.device)
    e = errors.detach().float().unsqueeze(-1)
    fits = values >= e
    # first fitting bin (the values are increasing); argmax of a bool row returns the first True
    index = fits.to(torch.uint8).argmax(-1)
    return torch.where(fits.any(-1), index, torch.full_like(index, len(ERROR_BINS) - 1))


def as_errors(target_error: float | Sequence[float] | torch.Tensor, batch: int,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """`target_error` (one float, or one per image) -> float32 `[batch]`; clear errors for anything else."""
    if isinstance(target_error, bool):
        raise TypeError("target_error must be a float (the desired mean L1 error in [0, 1] pixel units), got a bool")
    if isinstance(target_error, (int, float)):
        values = torch.full((batch,), float(target_error), dtype=torch.float32, device=device)
    else:
        values = torch.as_tensor(target_error, dtype=torch.float32, device=device).flatten()
        if values.numel() != batch:
            raise ValueError(f"target_error needs one value per image ({batch}), got {values.numel()}")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"target_error must be finite and >= 0 (a mean L1 error in [0, 1] pixel units), got "
                         f"{values.tolist()}")
    return values
