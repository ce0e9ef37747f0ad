"""Rectified-flow sampling for FlexTok: an Euler integrator with classifier-free guidance (CFG) and adaptive
projected guidance (APG, https://arxiv.org/abs/2410.02416).

Convention (as the official `MinRFPipeline`, itself from https://github.com/cloneofsimo/minRF): `x_t = t * noise +
(1 - t) * data`, so t = 1 is pure noise, t = 0 is data, and the network predicts the velocity `v = noise - data`.
With `dt = 1 / steps` the sampler visits `t = 1, (steps - 1) / steps, ..., 1 / steps` and steps `x <- x - dt * v`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Guidance = float | Callable[[float], float]


def cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain classifier-free guidance, `v_u + g * (v_c - v_u)` (https://arxiv.org/abs/2207.12598)."""
    return v_uncond + scale * (v_cond - v_uncond)


def apg(
    v_cond: torch.Tensor,
    v_uncond: torch.Tensor,
    scale: float,
    running: torch.Tensor | None,
    momentum: float = -0.5,
    eta: float = 0.0,
    norm_threshold: float = 2.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive projected guidance on `[B, C, H, W]` predictions; returns `(guided, new_running)`.

    The guidance direction `v_c - v_u` goes through a momentum buffer (`running = diff + momentum * running`, one
    per image, kept across steps by the caller), is clipped to L2 norm `norm_threshold` per image, and only its
    component orthogonal to `v_c` (projection in float64, as the official code) is added with weight `scale - 1`.
    """
    diff = v_cond - v_uncond
    if running is not None:
        diff = diff + momentum * running
    running = diff
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=(-1, -2, -3), keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    d64 = diff.double()
    unit = torch.nn.functional.normalize(v_cond.double(), dim=(-1, -2, -3))
    parallel = (d64 * unit).sum(dim=(-1, -2, -3), keepdim=True) * unit
    orthogonal = (d64 - parallel).to(diff.dtype)
    update = orthogonal + eta * parallel.to(diff.dtype) if eta else orthogonal
    return v_cond + (scale - 1) * update, running


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]],
    noise: torch.Tensor,
    steps: int,
    guidance: Guidance = 1.0,
    use_apg: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Integrate from `noise` (t = 1) to data (t = 0) in `steps` Euler steps.

    Args:
        velocity: `velocity(x, t, with_uncond) -> (v_cond, v_uncond or None)`, with `t` a `[B]` tensor. The model
            side decides how to evaluate both branches (e.g. in one batched pass).
        noise: `[B, C, H, W]` initial latents x_1.
        steps: number of Euler steps.
        guidance: guidance scale, or a function `t -> scale`. Guidance is off when it is the constant 1.0.
        use_apg: APG instead of plain CFG.
        callback: called after each step with a dict of `t`, `x_t`, `v_cond`, `v_uncond`, `v` (for inspection).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    guided = callable(guidance) or guidance != 1.0
    x = noise
    dt = 1.0 / steps
    running = None
    for i in range(steps, 0, -1):
        t_value = i / steps
        t = t_value * torch.ones(x.shape[0], device=x.device)
        v_cond, v_uncond = velocity(x, t, guided)
        v = v_cond
        if guided:
            scale = guidance(t_value) if callable(guidance) else guidance
            if use_apg:
                v, running = apg(v_cond, v_uncond, scale, running)
            else:
                v = cfg(v_cond, v_uncond, scale)
        if callback is not None:
            callback({"t": t, "x_t": x, "v_cond": v_cond, "v_uncond": v_uncond, "v": v})
        x = x - dt * v
    return x
