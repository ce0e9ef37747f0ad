"""`DualCodebookVQ`: one id indexes two codebooks at once (TokenFlow's shared mapping,
https://arxiv.org/abs/2412.03069)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.quant import entropy as _entropy
from zoo.quant.base import Quantizer, fp32, row_chunks, straight_through
from zoo.quant.distance import squared_distances
from zoo.quant.output import QuantizerOutput
from zoo.quant.rotation import rotation_trick
from zoo.quant.stats import code_stats
from zoo.quant.vq import METRICS, masked_mse

__all__ = ["DualCodebookVQ"]


class DualCodebookVQ(Quantizer):
    """Shared-index dual codebook: z = [semantic | pixel] picks the one id minimising the weighted sum of distances.

    `id = argmin_k (semantic_weight * d_sem[k] + pixel_weight * d_pix[k])` (first index on ties), with
    `d = ||z_half||^2 + ||e_k||^2 - 2 z_half.e_k` on each half; with "cosine" each half of z and each codebook is
    l2-normalised first (`F.normalize`, eps 1e-12), as in TokenFlow. The code is `[e_sem[id] | e_pix[id]]`
    (each half unit-norm for "cosine", so the total norm is sqrt(2)).

    Args:
        codebook_size: number of ids (TokenFlow: 32768).
        semantic_dim: width of the first part of z and of `embed_semantic` (TokenFlow: 32).
        pixel_dim: width of the second part and of `embed_pixel` (TokenFlow: 8). `dim = semantic_dim + pixel_dim`.
        semantic_weight, pixel_weight: weights of the two distances (TokenFlow: 1.0 and 1.0).
        metric: "cosine" (per-half l2-normalisation, TokenFlow) or "euclidean".
        rotation_trick: rotation-trick gradient (https://arxiv.org/abs/2410.06424) instead of straight-through.
        entropy_loss: add `losses["entropy"]` on minus the summed distance (training only).
        entropy_temperature: its temperature (0.01).

    Parameters (for converters): `embed_semantic` `[C, semantic_dim]` (TokenFlow `quantize.embedding_vqkd.weight`)
    and `embed_pixel` `[C, pixel_dim]` (`quantize.embedding_vqgan.weight`); stored unnormalised, normalised at use.
    Stats add `semantic_d_norm` / `pixel_d_norm` = mean over rows of sum over codes of d^2 (TokenFlow's
    `vqkd_d_norm` / `vqgan_d_norm`).
    """

    def __init__(
        self,
        codebook_size: int,
        semantic_dim: int,
        pixel_dim: int,
        *,
        semantic_weight: float = 1.0,
        pixel_weight: float = 1.0,
        metric: str = "cosine",
        rotation_trick: bool = False,
        entropy_loss: bool = False,
        entropy_temperature: float = 0.01,
    ) -> None:
        super().__init__()
        if min(codebook_size, semantic_dim, pixel_dim) < 1:
            raise ValueError(
                f"codebook_size, semantic_dim and pixel_dim must be >= 1, got {codebook_size}, {semantic_dim}, "
                f"{pixel_dim}"
            )
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if semantic_weight < 0 or pixel_weight < 0:
            raise ValueError(f"weights must be >= 0, got {semantic_weight} and {pixel_weight}")
        self.codebook_size = codebook_size
        self.semantic_dim = semantic_dim
        self.pixel_dim = pixel_dim
        self.dim = semantic_dim + pixel_dim
        self.semantic_weight = semantic_weight
        self.pixel_weight = pixel_weight
        self.metric = metric
        self.use_rotation_trick = rotation_trick
        self.entropy_loss = entropy_loss
        self.entropy_temperature = entropy_temperature
        bound = 1.0 / codebook_size
        self.embed_semantic = nn.Parameter(torch.empty(codebook_size, semantic_dim).uniform_(-bound, bound))
        self.embed_pixel = nn.Parameter(torch.empty(codebook_size, pixel_dim).uniform_(-bound, bound))

    # ------------------------------------------------------------------ codes

    def _normalize(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=-1) if self.metric == "cosine" else x

    def codebooks(self) -> tuple[Tensor, Tensor]:
        """(semantic `[C, semantic_dim]`, pixel `[C, pixel_dim]`) codes in fp32, normalised for "cosine"."""
        return self._normalize(self.embed_semantic.float()), self._normalize(self.embed_pixel.float())

    def embeddings(self) -> Tensor:
        return torch.cat(self.codebooks(), dim=-1)

    def lookup(self, ids: Tensor) -> Tensor:
        self._check_ids(ids)
        return self.embeddings()[ids]

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        semantic, pixel = x.split([self.semantic_dim, self.pixel_dim], dim=-1)
        return self._normalize(semantic), self._normalize(pixel)

    def distances(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(d_semantic, d_pixel), each `[..., C]` fp32: the two squared distances before weighting."""
        self._check_input(z)
        with fp32(z.device):
            semantic, pixel = self._split(z.reshape(-1, self.dim).float())
            e_sem, e_pix = self.codebooks()
            d_sem, d_pix = squared_distances(semantic, e_sem), squared_distances(pixel, e_pix)
        shape = (*z.shape[:-1], self.codebook_size)
        return d_sem.reshape(shape), d_pix.reshape(shape)

    @torch.no_grad()
    def assign(self, z: Tensor) -> Tensor:
        """Ids `[...]`: argmin of the weighted sum of the semantic and pixel distances (first index on ties)."""
        self._check_input(z)
        with fp32(z.device):
            semantic, pixel = self._split(z.reshape(-1, self.dim).float())
            e_sem, e_pix = self.codebooks()
            ids = torch.empty(semantic.shape[0], dtype=torch.long, device=z.device)
            for rows in row_chunks(semantic.shape[0], self.codebook_size):
                dist = (self.semantic_weight * squared_distances(semantic[rows], e_sem)
                        + self.pixel_weight * squared_distances(pixel[rows], e_pix))
                ids[rows] = dist.argmin(-1)
        return ids.reshape(z.shape[:-1])

    # ----------------------------------------------------------------- forward

    def forward(self, z: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        self._check_input(z)
        shape = z.shape
        m = self._flat_mask(mask, shape)
        with fp32(z.device):
            semantic, pixel = self._split(z.reshape(-1, self.dim).float())
            x = torch.cat([semantic, pixel], dim=-1)
            e_sem, e_pix = self.codebooks()
            n = x.shape[0]
            ids = torch.empty(n, dtype=torch.long, device=z.device)
            d_norm_sem = torch.zeros(n, device=z.device)
            d_norm_pix = torch.zeros(n, device=z.device)
            with_entropy = self.entropy_loss and self.training
            entropy_rows = []
            blocks = [slice(0, n)] if with_entropy else row_chunks(n, self.codebook_size)
            for rows in blocks:
                with torch.set_grad_enabled(with_entropy and torch.is_grad_enabled()):
                    d_sem = squared_distances(semantic[rows], e_sem)
                    d_pix = squared_distances(pixel[rows], e_pix)
                    dist = self.semantic_weight * d_sem + self.pixel_weight * d_pix
                ids[rows] = dist.detach().argmin(-1)
                d_norm_sem[rows] = d_sem.detach().pow(2).sum(-1)
                d_norm_pix[rows] = d_pix.detach().pow(2).sum(-1)
                if with_entropy:
                    entropy_rows.append(dist if m is None else dist[m[rows]])
            codes = torch.cat([e_sem, e_pix], dim=-1)[ids]
            losses = {
                "commitment": masked_mse(x, codes.detach(), m),
                "codebook": masked_mse(codes, x.detach(), m),
            }
            if with_entropy:
                losses["entropy"] = _entropy.entropy_loss(-torch.cat(entropy_rows), self.entropy_temperature)
            quantized = rotation_trick(x, codes) if self.use_rotation_trick else straight_through(codes, x)
            stats = code_stats(ids, self.codebook_size, m)
            valid = max(n if m is None else int(m.sum()), 1)
            keep = slice(None) if m is None else m
            stats["semantic_d_norm"] = d_norm_sem[keep].sum() / valid
            stats["pixel_d_norm"] = d_norm_pix[keep].sum() / valid
        return QuantizerOutput(quantized.reshape(shape).to(z.dtype), ids.reshape(shape[:-1]), losses, stats)

    def _neighbor_space(self) -> Tensor:
        # weighted sum of squared distances = squared distance between the sqrt-weighted concatenations
        e_sem, e_pix = self.codebooks()
        return torch.cat([math.sqrt(self.semantic_weight) * e_sem, math.sqrt(self.pixel_weight) * e_pix], dim=-1)

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, semantic_dim={self.semantic_dim}, pixel_dim={self.pixel_dim}, "
            f"weights=({self.semantic_weight}, {self.pixel_weight}), metric={self.metric!r}"
        )
