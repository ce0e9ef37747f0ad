"""`VectorQuantizer`: nearest-code VQ (VQ-VAE, https://arxiv.org/abs/1711.00937) with the usual training tricks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.quant import entropy as _entropy
from zoo.quant._dist import all_reduce_sum_, broadcast_
from zoo.quant.base import Quantizer, fp32, straight_through
from zoo.quant.distance import DISTANCE_FORMS, squared_distances
from zoo.quant.kmeans import kmeans, nearest_code, sample_vectors
from zoo.quant.output import QuantizerOutput
from zoo.quant.rotation import rotation_trick
from zoo.quant.stats import code_stats

__all__ = ["VectorQuantizer", "masked_mse"]

METRICS = ("euclidean", "cosine")


def masked_mse(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over rows `[N, D]` where `mask` `[N]` is True (all rows when None); 0 when empty."""
    diff = a - b if mask is None else (a - b)[mask]
    return diff.pow(2).sum() / max(diff.numel(), 1)


class VectorQuantizer(Quantizer):
    """Vector quantiser: each vector becomes its nearest code.

    Args:
        codebook_size: number of codes C.
        dim: code width D (the last dim of z).
        metric: "euclidean", or "cosine": z and the codes are l2-normalised (`F.normalize`, eps 1e-12) before the
            squared distance, which on the unit sphere is `2 - 2 cos`, so "cosine" and "l2-normalised" are the
            same thing (LlamaGen `codebook_l2_norm`, GigaTok, KARL). `quantized`, `lookup` and `embeddings()` then
            return unit-norm codes, and the losses compare normalised vectors.
        ema: learn the codes by exponential moving averages of the assigned vectors (EnCodec / WavTokenizer;
            `embed` becomes a buffer and there is no codebook loss) instead of by gradients.
        decay: EMA decay (0.99 in EnCodec).
        eps: Laplace smoothing of the EMA cluster sizes, `(n_k + eps) / (n + C eps) * n`.
        kmeans_init: initialise the codes with k-means on the first training batch (then `inited` = 1).
        kmeans_iters: Lloyd iterations of that k-means (WavTokenizer: 200).
        dead_code_threshold: in training, codes whose EMA count falls below this are restarted from random vectors
            of the batch, with their count reset to the threshold (EnCodec: 2; 0 disables). Counts are tracked
            with `decay` also when `ema` is False.
        rotation_trick: gradient through the rotation trick (https://arxiv.org/abs/2410.06424) instead of the
            straight-through estimator; the forward value is the same code.
        entropy_loss: add `losses["entropy"]` (`zoo.quant.entropy_loss` on minus the distances), in training only,
            since it needs the full `[N, C]` distance matrix.
        entropy_temperature: its softmax temperature (LlamaGen: 0.01).
        distance_form: summation order of the squared distance, "taming" or "encodec" (see `squared_distances`);
            only matters for bit-exact ids on near-ties with official code.

    State (names for checkpoint converters):
        embed `[C, D]`: the codes (nn.Parameter; a buffer when `ema`). Official: `quantize.embedding.weight`
            (LlamaGen, GigaTok, SEED, KARL), `quantizer.vq.layers.0._codebook.embed` (EnCodec / WavTokenizer).
        embed_avg `[C, D]` (only with `ema`): EMA of the per-code sums of assigned vectors (`_codebook.embed_avg`).
        cluster_size `[C]` (with `ema` or `dead_code_threshold`): EMA of code counts (`_codebook.cluster_size`).
        inited `[1]` (only with `kmeans_init`): 1.0 once the k-means ran (`_codebook.inited`).
        Training-only FIFOs of recent ids (`quantize.codebook_used`) have no counterpart: drop them.

    Under torch.distributed, training-mode calls all-reduce the EMA statistics and broadcast k-means centroids and
    restart samples from rank 0, so every rank must call `forward` in training mode together.

    Differences from EnCodec's `EuclideanCodebook`, none of which changes inference: k-means runs only in training
    (EnCodec also runs it on an eval batch when `inited` is 0), sets `embed_avg = means * counts` and counts
    clamped to >= 1 (EnCodec keeps `embed_avg = means`, so the first EMA step rescales the codes), and a restarted
    code also resets its `embed_avg` and `cluster_size` (EnCodec writes only `embed`, which its EMA step overwrites
    in the same call, so its restart never takes effect).
    """

    embed: Tensor
    embed_avg: Tensor
    cluster_size: Tensor
    inited: Tensor

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        metric: str = "euclidean",
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        rotation_trick: bool = False,
        entropy_loss: bool = False,
        entropy_temperature: float = 0.01,
        distance_form: str = "taming",
    ) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be >= 1, got {codebook_size} and {dim}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if distance_form not in DISTANCE_FORMS:
            raise ValueError(f"distance_form must be one of {DISTANCE_FORMS}, got {distance_form!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.metric = metric
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = float(dead_code_threshold)
        self.use_rotation_trick = rotation_trick
        self.entropy_loss = entropy_loss
        self.entropy_temperature = entropy_temperature
        self.distance_form = distance_form

        embed = torch.empty(codebook_size, dim)
        if kmeans_init:
            embed.zero_()
        elif ema:
            nn.init.kaiming_uniform_(embed)  # EnCodec's `uniform_init`
        else:
            embed.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)  # taming / LlamaGen
        if ema:
            self.register_buffer("embed", embed)
            self.register_buffer("embed_avg", embed.clone())
        else:
            self.embed = nn.Parameter(embed)
        if ema or self.dead_code_threshold > 0:
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
        if kmeans_init:
            self.register_buffer("inited", torch.zeros(1))

    @property
    def tracks_counts(self) -> bool:
        return self.ema or self.dead_code_threshold > 0

    # ------------------------------------------------------------------ codes

    def embeddings(self) -> Tensor:
        """The codes `[C, D]` in fp32 (unit-norm for "cosine"); differentiable unless `ema`."""
        embed = self.embed.float()
        return F.normalize(embed, p=2, dim=-1) if self.metric == "cosine" else embed

    def lookup(self, ids: Tensor) -> Tensor:
        self._check_ids(ids)
        return self.embeddings()[ids]

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances `[..., C]` (fp32) from `z` `[..., D]` to every code, as used for the assignment."""
        self._check_input(z)
        with fp32(z.device):
            x = self._prepare(z.reshape(-1, self.dim).float())
            d = squared_distances(x, self.embeddings(), self.distance_form)
        return d.reshape(*z.shape[:-1], self.codebook_size)

    @torch.no_grad()
    def assign(self, z: Tensor) -> Tensor:
        """Nearest-code ids `[...]` of `z` `[..., D]` (first index on ties); nothing is updated."""
        self._check_input(z)
        with fp32(z.device):
            x = self._prepare(z.reshape(-1, self.dim).float())
            ids, _ = self._assign(x, self.embeddings())
        return ids.reshape(z.shape[:-1])

    # ----------------------------------------------------------------- forward

    def forward(self, z: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        """Quantise `z` `[..., D]`. In training this also runs k-means init, EMA updates and code restarts."""
        self._check_input(z)
        shape = z.shape
        m = self._flat_mask(mask, shape)
        with fp32(z.device):
            x = self._prepare(z.reshape(-1, self.dim).float())
            if self.training:
                self._maybe_kmeans_init(x.detach(), m)
            codebook = self.embeddings()
            with_entropy = self.entropy_loss and self.training
            ids, dist = self._assign(x, codebook, with_distances=with_entropy)
            codes = codebook[ids]
            losses = {"commitment": masked_mse(x, codes.detach(), m)}
            if not self.ema:
                losses["codebook"] = masked_mse(codes, x.detach(), m)
            if dist is not None:
                losses["entropy"] = _entropy.entropy_loss(-(dist if m is None else dist[m]), self.entropy_temperature)
            if self.training:
                self._update(x.detach(), ids, m)
            quantized = rotation_trick(x, codes) if self.use_rotation_trick else straight_through(codes, x)
            stats = code_stats(ids, self.codebook_size, m)
        return QuantizerOutput(quantized.reshape(shape).to(z.dtype), ids.reshape(shape[:-1]), losses, stats)

    # -------------------------------------------------- pieces (also used by ResidualVQ)

    def _prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=-1) if self.metric == "cosine" else x

    def _assign(self, x: Tensor, codebook: Tensor, with_distances: bool = False) -> tuple[Tensor, Tensor | None]:
        """Nearest code of each row of `x` `[N, D]` (first index on ties). With `with_distances` also returns the
        differentiable `[N, C]` distances; otherwise works in row chunks without keeping them."""
        if with_distances:
            dist = squared_distances(x, codebook, self.distance_form)
            return dist.detach().argmin(-1), dist
        with torch.no_grad():
            return nearest_code(x.detach(), codebook.detach(), self.distance_form), None

    @torch.no_grad()
    def _maybe_kmeans_init(self, x: Tensor, mask: Tensor | None) -> None:
        if not self.kmeans_init or bool(self.inited.item()):
            return
        samples = x if mask is None else x[mask]
        if samples.shape[0] == 0:
            return
        means, counts = kmeans(samples, self.codebook_size, self.kmeans_iters, spherical=self.metric == "cosine")
        broadcast_(means)
        broadcast_(counts)
        counts = counts.clamp_min(1.0)  # empty clusters keep their sampled mean instead of collapsing to 0
        self.embed.data.copy_(means)
        if self.tracks_counts:
            self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_avg.copy_(means * counts[:, None])
        self.inited.fill_(1.0)

    @torch.no_grad()
    def _update(self, x: Tensor, ids: Tensor, mask: Tensor | None) -> None:
        """One training step of the code statistics: EMA counts/sums, dead-code restart, EMA codes."""
        if not self.tracks_counts:
            return
        if mask is not None:
            x, ids = x[mask], ids[mask]
        counts = all_reduce_sum_(torch.bincount(ids, minlength=self.codebook_size).float())
        self.cluster_size.mul_(self.decay).add_(counts.to(self.cluster_size.dtype), alpha=1 - self.decay)
        if self.ema:
            sums = torch.zeros(self.codebook_size, self.dim, device=x.device).index_add_(0, ids, x)
            all_reduce_sum_(sums)
            self.embed_avg.mul_(self.decay).add_(sums.to(self.embed_avg.dtype), alpha=1 - self.decay)
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(x)
        if self.ema:
            size = self.cluster_size.float()
            total = size.sum()
            smoothed = (size + self.eps) / (total + self.codebook_size * self.eps) * total
            self.embed.copy_(self.embed_avg.float() / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead_codes(self, x: Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0 or x.shape[0] == 0:
            return
        samples = broadcast_(sample_vectors(x, num_dead).contiguous())
        self.cluster_size[dead] = self.dead_code_threshold
        if self.ema:
            self.embed_avg[dead] = (samples * self.dead_code_threshold).to(self.embed_avg.dtype)
        else:
            self.embed.data[dead] = samples.to(self.embed.dtype)

    def extra_repr(self) -> str:
        parts = [f"codebook_size={self.codebook_size}", f"dim={self.dim}", f"metric={self.metric!r}"]
        if self.ema:
            parts.append(f"ema=True, decay={self.decay}")
        if self.kmeans_init:
            parts.append(f"kmeans_init=True, kmeans_iters={self.kmeans_iters}")
        if self.dead_code_threshold:
            parts.append(f"dead_code_threshold={self.dead_code_threshold}")
        if self.use_rotation_trick:
            parts.append("rotation_trick=True")
        if self.entropy_loss:
            parts.append(f"entropy_loss=True, entropy_temperature={self.entropy_temperature}")
        return ", ".join(parts)
