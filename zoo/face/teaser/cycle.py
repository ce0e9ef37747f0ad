"""The expression augmentation of TEASER's cycle path (SMIRK's second path, official `TeaserTrainer.step2`).

The batch's FLAME parameters are repeated `Ke` times and split into four random groups:

1. random: Gaussian offsets (scale 1 + U(0, 2)) on a random half of the expression coefficients, clamped to +-4,
   plus Gaussian noise of scale U(0, 0.2);
2. permuted: the group's expressions shuffled among its samples, scaled by U(0.25, 1.5), plus noise;
3. template: an expression template (FLAME: FaMoS captures; zoo's offline model: coefficients of training frames)
   scaled by U(0.25, 1.5), plus noise;
4. zero: noise only, no jaw opening, eyelids U(0, 1).

Every sample's jaw gets N(0, 0.2) x (1, 0.1, 0.1) on a random half of the samples (opening clamped to [0, 0.5]) and
its eyelids U(-0.25, 0.25) (clamped to [0, 1]). Noise scales, probabilities and clamps are the official ones.
"""

from __future__ import annotations

import torch

__all__ = ["augment_expressions"]


def _noise(count: int, width: int, like: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    scale = 0.2 * torch.rand(count, 1, generator=g, device=like.device, dtype=like.dtype)
    return scale * torch.randn(count, width, generator=g, device=like.device, dtype=like.dtype)


def augment_expressions(params: dict[str, torch.Tensor], repeats: int, templates: torch.Tensor,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Repeat `params` (detached) `repeats` times and augment `expression_params`, `jaw_params` and
    `eyelid_params` as in the module docstring.

    Args:
        params: encoder outputs (`expression_params` [B, E], `jaw_params` [B, 3], `eyelid_params` [B, 2], ...).
        repeats: Ke, the official number of versions per sample.
        templates: `[N, E']` expression templates (E' <= E: the first E' coefficients are set; N >= 1).
        generator: randomness (None: the global generator).
    """
    feats = {k: torch.cat([v.detach()] * repeats, 0).clone() for k, v in params.items()}
    exp = feats["expression_params"]
    total, width = exp.shape
    g = generator
    order = torch.randperm(total, generator=g).to(exp.device)
    quarter = total // 4
    groups = [order[:quarter], order[quarter:2 * quarter], order[2 * quarter:3 * quarter], order[3 * quarter:]]

    ids = groups[0]  # random expressions
    n = len(ids)
    if n:
        keep = torch.bernoulli(torch.full((n, width), 0.5, device=exp.device, dtype=exp.dtype), generator=g)
        scale = 1 + 2 * torch.rand(n, 1, generator=g, device=exp.device, dtype=exp.dtype)
        new = torch.randn(n, width, generator=g, device=exp.device, dtype=exp.dtype) * scale * keep + exp[ids]
        exp[ids] = torch.clamp(new, -4.0, 4.0) + _noise(n, width, exp, g)

    ids = groups[1]  # permutation
    n = len(ids)
    if n:
        scale = 0.25 + 1.25 * torch.rand(n, 1, generator=g, device=exp.device, dtype=exp.dtype)
        shuffled = exp[ids][torch.randperm(n, generator=g).to(exp.device)]
        exp[ids] = scale * shuffled + _noise(n, width, exp, g)

    ids = groups[2]  # template injection
    n = len(ids)
    if n:
        if templates.dim() != 2 or templates.shape[0] < 1 or templates.shape[1] > width:
            raise ValueError(f"expression templates must be [N >= 1, <= {width}], got {tuple(templates.shape)}")
        pick = torch.randint(0, templates.shape[0], (n,), generator=g).to(exp.device)
        chosen = templates.to(exp)[pick]
        scale = 0.25 + 1.25 * torch.rand(n, 1, generator=g, device=exp.device, dtype=exp.dtype)
        exp[ids[:, None], torch.arange(chosen.shape[1], device=exp.device)] = scale * chosen
        exp[ids] = exp[ids] + _noise(n, width, exp, g)

    jaw = feats["jaw_params"]
    half = torch.bernoulli(torch.full((total, 1), 0.5, device=jaw.device, dtype=jaw.dtype), generator=g)
    scale_mask = jaw.new_tensor([1.0, 0.1, 0.1]).view(1, 3) * half
    jaw = jaw + torch.randn(jaw.shape, generator=g, device=jaw.device, dtype=jaw.dtype) * 0.2 * scale_mask
    jaw[:, 0] = torch.clamp(jaw[:, 0], 0.0, 0.5)
    lids = feats["eyelid_params"]
    lids = torch.clamp(lids + (-1 + 2 * torch.rand(lids.shape, generator=g, device=lids.device,
                                                    dtype=lids.dtype)) * 0.25, 0.0, 1.0)

    ids = groups[3]  # zero expression, eyelids free
    n = len(ids)
    if n:
        exp[ids] = _noise(n, width, exp, g)
        jaw[ids] = 0.0
        lids[ids] = torch.rand(n, lids.shape[1], generator=g, device=lids.device, dtype=lids.dtype)
    feats["expression_params"], feats["jaw_params"], feats["eyelid_params"] = exp, jaw, lids
    return feats
