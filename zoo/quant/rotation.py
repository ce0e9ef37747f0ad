"""The rotation trick: a gradient estimator through vector quantisation (Fifty et al. 2024,
https://arxiv.org/abs/2410.06424)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["rotation_trick"]


def rotation_trick(z: Tensor, codes: Tensor, eps: float = 1e-6) -> Tensor:
    """Forward: exactly `codes`; backward: the rotation-trick gradient to `z`.

    The code is written as `q = s R z` with `R` the rotation (plus reflection) taking the direction of `z` onto
    that of `q` and `s = |q| / |z|`; `R` and `s` are constants for autograd, so the gradient reaching `z` is
    `s R^T g` instead of the straight-through `g`: it keeps the angle between the gradient and the code.
    `R z = z - 2 (z.w) w + 2 (z.u) q^`, with `u = z/|z|`, `q^ = q/|q|`, `w = (u + q^)/|u + q^|`, and the `eps`
    placement of the reference implementation (cfifty/rotation_trick, used by GigaTok with eps 1e-6).
    No gradient reaches `codes` through this path (the codebook learns from the codebook loss).

    The forward is returned as `codes + (r - r.detach())`, so it is bit-identical to the code vector, whereas
    the reference returns `r` itself, which differs from the code by a relative ~1e-6 (the eps).
    """
    codes = codes.detach()
    z_norm = z.norm(dim=-1, keepdim=True)
    q_norm = codes.norm(dim=-1, keepdim=True)
    u = (z / (z_norm + eps)).detach()
    q_hat = codes / (q_norm + eps)
    w = u + q_hat
    w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # u = -q^ (antipodal) leaves only the 2 (z.u) q^ term
    rotated = z - 2 * (z * w).sum(-1, keepdim=True) * w + 2 * (z * u).sum(-1, keepdim=True) * q_hat
    rotated = rotated * (q_norm / (z_norm + eps)).detach()
    return codes + (rotated - rotated.detach())
