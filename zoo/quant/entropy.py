"""Entropy regulariser on soft code assignments (MaskGIT / MAGVIT; LlamaGen and GigaTok `compute_entropy_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["entropy_loss"]


def entropy_loss(affinity: Tensor, temperature: float = 0.01, eps: float = 1e-5) -> Tensor:
    """Per-sample entropy minus codebook entropy of `softmax(affinity / temperature)`.

    `affinity` `[..., C]` is a similarity to every code, usually minus the squared distance. Minimising the result
    makes each assignment confident (low per-sample entropy) while spreading the batch over the codebook (high
    entropy of the mean distribution). Matches LlamaGen's `compute_entropy_loss(affinity, "softmax", temperature)`:
    `-mean(sum(p log p)) + sum(p_avg log(p_avg + eps))`. Unweighted (GigaTok and TokenFlow scale it by 0.005).
    Computed in fp32 whatever the input dtype.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=affinity.device.type, enabled=False):
        logits = affinity.float().reshape(-1, affinity.shape[-1]) / temperature
        probs = F.softmax(logits, dim=-1)
        log_probs = F.log_softmax(logits, dim=-1)
        sample_entropy = -(probs * log_probs).sum(-1).mean()
        avg_probs = probs.mean(0)
        avg_entropy = -(avg_probs * torch.log(avg_probs + eps)).sum()
        return sample_entropy - avg_entropy
