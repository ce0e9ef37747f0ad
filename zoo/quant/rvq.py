"""`ResidualVQ`: residual vector quantisation (SoundStream https://arxiv.org/abs/2107.03312; RQ-VAE
https://arxiv.org/abs/2203.01941)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.quant.base import Quantizer, fp32, straight_through
from zoo.quant.output import QuantizerOutput
from zoo.quant.rotation import rotation_trick
from zoo.quant.stats import code_stats
from zoo.quant.vq import VectorQuantizer, masked_mse

__all__ = ["ResidualVQ"]


class ResidualVQ(Quantizer):
    """Residual VQ: depth k quantises what depths 0..k-1 left over; the code is the sum over depths.

    ids have shape `[..., K]` (K = depth used). The output is `sum_k code_k` with one straight-through (or
    rotation-trick) gradient to z for the whole sum (RQ-VAE), not one per depth.

    Args:
        codebook_size: codes per codebook C.
        dim: code width D.
        depth: number of residual steps K (DualToken: 8; EnCodec-style codecs: n_q).
        shared_codebook: one codebook for all depths (DualToken, RQ-VAE `shared_codebook`) instead of one per
            depth. With EMA the shared codebook gets one update per step from all depths' residuals.
        ema, decay, eps, kmeans_init, kmeans_iters, dead_code_threshold, distance_form: as in `VectorQuantizer`,
            applied to every depth's codebook (Euclidean metric).
        rotation_trick: rotation-trick gradient for the summed code.

    Losses: `commitment` = mean over depths k of `mse(z, sum_{j<=k} code_j)` with the codes detached (RQ-VAE);
    `codebook` (when not `ema`) = mean over depths of `mse(code_k, residual_k)` with the residual detached.
    Stats: `usage` / `perplexity` averaged over depths, plus `usage_{k}` / `perplexity_{k}` per depth.

    State (for converters): `layers.{i}.embed` (and `embed_avg`, `cluster_size`, `inited` as in
    `VectorQuantizer`), i in [0, depth), or only `layers.0.*` with `shared_codebook`.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        depth: int,
        *,
        shared_codebook: bool = False,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        rotation_trick: bool = False,
        distance_form: str = "taming",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.depth = depth
        self.shared_codebook = shared_codebook
        self.ema = ema
        self.use_rotation_trick = rotation_trick
        self.layers = nn.ModuleList(
            VectorQuantizer(
                codebook_size,
                dim,
                ema=ema,
                decay=decay,
                eps=eps,
                kmeans_init=kmeans_init,
                kmeans_iters=kmeans_iters,
                dead_code_threshold=dead_code_threshold,
                distance_form=distance_form,
            )
            for _ in range(1 if shared_codebook else depth)
        )

    def layer(self, k: int) -> VectorQuantizer:
        """The codebook of depth `k` (the same module for every depth with `shared_codebook`); a `VectorQuantizer`
        satisfies the one-codebook contract, e.g. for `zoo.api.Codebook(rvq.layer(k), f"depth{k}")`."""
        if not 0 <= k < self.depth:
            raise ValueError(f"depth index must be in [0, {self.depth}), got {k}")
        return self.layers[0 if self.shared_codebook else k]

    # ------------------------------------------------------------------ codes

    def embeddings(self) -> Tensor:
        """`[depth, C, D]`: the codebook of every depth (repeated when shared)."""
        return torch.stack([self.layer(k).embeddings() for k in range(self.depth)])

    def _check_depth_ids(self, ids: Tensor) -> None:
        if ids.ndim < 1 or not 1 <= ids.shape[-1] <= self.depth:
            raise ValueError(f"ResidualVQ ids must be [..., K] with 1 <= K <= {self.depth}, got {tuple(ids.shape)}")
        self._check_ids(ids)

    def lookup(self, ids: Tensor) -> Tensor:
        """ids `[..., K]` -> `[..., D]`: the sum of the K depths' codes (a prefix K < depth is a coarser code)."""
        return self.lookup_per_depth(ids).sum(-2)

    def lookup_per_depth(self, ids: Tensor) -> Tensor:
        """ids `[..., K]` -> `[..., K, D]`: each depth's code."""
        self._check_depth_ids(ids)
        return torch.stack([self.layer(k).embeddings()[ids[..., k]] for k in range(ids.shape[-1])], dim=-2)

    def neighbors(self, ids: Tensor, k: int) -> Tensor:
        """ids `[..., K]` -> `[..., K, k]`: neighbours of each depth's id in that depth's codebook."""
        self._check_depth_ids(ids)
        return torch.stack([self.layer(d).neighbors(ids[..., d], k) for d in range(ids.shape[-1])], dim=-2)

    @torch.no_grad()
    def assign(self, z: Tensor, depth: int | None = None) -> Tensor:
        """Ids `[..., depth]` of `z` `[..., D]`: each depth's nearest code to the remaining residual."""
        self._check_input(z)
        depth = self._depth(depth)
        with fp32(z.device):
            residual = z.reshape(-1, self.dim).float()
            ids_list = []
            for k in range(depth):
                codebook = self.layer(k).embeddings()
                ids, _ = self.layer(k)._assign(residual, codebook)
                ids_list.append(ids)
                residual = residual - codebook[ids]
        return torch.stack(ids_list, dim=-1).reshape(*z.shape[:-1], depth)

    def _depth(self, depth: int | None) -> int:
        depth = self.depth if depth is None else depth
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth must be in [1, {self.depth}], got {depth}")
        return depth

    # ----------------------------------------------------------------- forward

    def forward(self, z: Tensor, mask: Tensor | None = None, depth: int | None = None) -> QuantizerOutput:
        """Quantise `z` `[..., D]` with the first `depth` codebooks (all by default): ids `[..., depth]`."""
        self._check_input(z)
        depth = self._depth(depth)
        shape = z.shape
        m = self._flat_mask(mask, shape)
        with fp32(z.device):
            x = z.reshape(-1, self.dim).float()
            residual = x.detach()
            total = torch.zeros_like(x)
            ids_list, residuals, commitment, codebook_losses = [], [], [], []
            for k in range(depth):
                layer = self.layer(k)
                if self.training and (k == 0 or not self.shared_codebook):
                    layer._maybe_kmeans_init(residual, m)
                codebook = layer.embeddings()
                ids, _ = layer._assign(residual, codebook)
                codes = codebook[ids]
                if not self.ema:
                    codebook_losses.append(masked_mse(codes, residual, m))
                total = total + codes
                commitment.append(masked_mse(x, total.detach(), m))
                ids_list.append(ids)
                residuals.append(residual)
                residual = residual - codes.detach()
            if self.training:
                self._update(residuals, ids_list, m)
            losses = {"commitment": torch.stack(commitment).mean()}
            if codebook_losses:
                losses["codebook"] = torch.stack(codebook_losses).mean()
            quantized = rotation_trick(x, total) if self.use_rotation_trick else straight_through(total, x)
            stats: dict[str, Tensor] = {}
            for k, ids in enumerate(ids_list):
                for name, value in code_stats(ids, self.codebook_size, m).items():
                    stats[f"{name}_{k}"] = value
            stats["usage"] = torch.stack([stats[f"usage_{k}"] for k in range(depth)]).mean()
            stats["perplexity"] = torch.stack([stats[f"perplexity_{k}"] for k in range(depth)]).mean()
        ids = torch.stack(ids_list, dim=-1).reshape(*shape[:-1], depth)
        return QuantizerOutput(quantized.reshape(shape).to(z.dtype), ids, losses, stats)

    def _update(self, residuals: list[Tensor], ids_list: list[Tensor], mask: Tensor | None) -> None:
        if self.shared_codebook:
            flat_mask = None if mask is None else mask.repeat(len(residuals))
            self.layers[0]._update(torch.cat(residuals), torch.cat(ids_list), flat_mask)
        else:
            for k, (residual, ids) in enumerate(zip(residuals, ids_list)):
                self.layers[k]._update(residual, ids, mask)

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, dim={self.dim}, depth={self.depth}, "
            f"shared_codebook={self.shared_codebook}"
        )
