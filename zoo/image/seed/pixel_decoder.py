"""A small image-embedding-conditioned pixel decoder: SEED-tiny's offline stand-in for the unCLIP diffusion model.

The released SEED tokens decode through Stable Diffusion 2.1 unCLIP, a diffusion model conditioned on one image
embedding. This decoder plays the same role at tiny scale: a rectified-flow DiT (https://arxiv.org/abs/2212.09748)
in pixel space whose every block is modulated (AdaLN-zero) by `time embedding + projection of the embedding`.
Training drops the embedding with probability `cond_dropout` (a learned null embedding takes its place) so that
sampling can use classifier-free guidance (https://arxiv.org/abs/2207.12598), as unCLIP does.

Flow convention and sampler are FlexTok's (`zoo.image.flextok.sampling`): `x_t = t * noise + (1 - t) * data`,
velocity `noise - data`, Euler steps from t = 1 to 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.image.flextok.layers import patchify, unpatchify
from zoo.image.flextok.sampling import euler_sample
from zoo.nn import AdaLNHead, AdaLNZeroBlock, TimestepEmbedder, sincos_2d

__all__ = ["DECODER_DEFAULTS", "EmbeddingFlowDecoder"]

DECODER_DEFAULTS = {"width": 192, "depth": 4, "num_heads": 4, "patch_size": 8, "cond_dropout": 0.1, "steps": 20,
                    "guidance": 1.5, "prediction": "velocity", "min_t": 0.05}
PREDICTIONS = ("velocity", "x")


class EmbeddingFlowDecoder(nn.Module):
    """Velocity `v(x_t, t | embedding)` on images `[B, 3, S, S]` in [-1, 1].

    Args:
        image_size: output side S.
        embedding_dim: width of the conditioning embedding.
        width, depth, num_heads: transformer size.
        patch_size: pixel patch side (S must be a multiple).
        cond_dropout: probability of replacing the embedding by the null embedding in training.
        steps, guidance: the default Euler steps and guidance scale of `sample`.
        prediction: what the network outputs: "velocity" (`noise - data`, as FlexTok) or "x" (the clean image,
            turned into the velocity `(x_t - x) / t`): with patches wider than the model (14 x 14 x 3 = 588 numbers
            into width 128) a network cannot output the noise a velocity holds, but it can output the image (Li & He
            2025, "Back to Basics: Let Denoising Generative Models Denoise").
        min_t: with prediction "x", the smallest t divided by (the velocity's 1 / t blows up near the data).
    """

    def __init__(self, image_size: int, embedding_dim: int, width: int = 192, depth: int = 4, num_heads: int = 4,
                 patch_size: int = 8, cond_dropout: float = 0.1, steps: int = 20, guidance: float = 1.5,
                 prediction: str = "velocity", min_t: float = 0.05) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"pixel decoder: image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"pixel decoder: cond_dropout must lie in [0, 1), got {cond_dropout}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"pixel decoder: prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not 0.0 < min_t < 1.0:
            raise ValueError(f"pixel decoder: min_t must lie in (0, 1), got {min_t}")
        self.prediction, self.min_t = prediction, float(min_t)
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size
        self.cond_dropout = cond_dropout
        self.default_steps, self.default_guidance = int(steps), float(guidance)
        self.patch_embed = nn.Linear(3 * patch_size**2, width)
        self.register_buffer("pos_embed", sincos_2d(self.grid, self.grid, width), persistent=False)
        self.time_embed = TimestepEmbedder(width, freq_dim=256, time_scale=1000.0)
        self.cond_proj = nn.Sequential(nn.LayerNorm(embedding_dim), nn.Linear(embedding_dim, width), nn.SiLU(),
                                       nn.Linear(width, width))
        self.null_embedding = nn.Parameter(torch.zeros(embedding_dim))
        self.blocks = nn.ModuleList(AdaLNZeroBlock(width, num_heads=num_heads, attention_kwargs={"qkv_bias": True})
                                    for _ in range(depth))
        self.head = AdaLNHead(width, 3 * patch_size**2)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """`x_t` `[B, 3, S, S]`, `t` `[B]` in [0, 1], `embedding` `[B, D]` -> velocity `[B, 3, S, S]`."""
        cond = self.time_embed(t) + self.cond_proj(embedding.to(self.null_embedding.dtype))
        x = self.patch_embed(patchify(x_t, self.patch_size)) + self.pos_embed
        for block in self.blocks:
            x = block(x, cond)
        out = unpatchify(self.head(x, cond), self.patch_size, self.grid, 3)
        if self.prediction == "x":  # out is the clean image: v = (x_t - x) / t
            return (x_t - out) / t.clamp_min(self.min_t)[:, None, None, None].to(out.dtype)
        return out

    def loss(self, images: torch.Tensor, embedding: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Rectified-flow loss: images `[B, 3, S, S]` in [0, 1], their embeddings `[B, D]`; t is logit-normal
        (https://arxiv.org/abs/2403.03206), the embedding is dropped with probability `cond_dropout`."""
        data = images * 2 - 1
        b = data.shape[0]
        device = data.device
        t = torch.sigmoid(torch.randn(b, device=device, generator=generator))
        noise = torch.randn(data.shape, device=device, generator=generator, dtype=data.dtype)
        x_t = t[:, None, None, None] * noise + (1 - t[:, None, None, None]) * data
        if self.training and self.cond_dropout > 0:
            drop = torch.rand(b, device=device, generator=generator) < self.cond_dropout
            embedding = torch.where(drop[:, None], self.null_embedding.to(embedding.dtype)[None], embedding)
        v = self.velocity(x_t, t, embedding)
        return F.mse_loss(v.float(), (noise - data).float())

    @torch.no_grad()
    def sample(self, embedding: torch.Tensor, steps: int | None = None, guidance: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Embeddings `[B, D]` -> images `[B, 3, S, S]` in the [-1, 1] scale (not clamped)."""
        steps = self.default_steps if steps is None else steps
        guidance = self.default_guidance if guidance is None else float(guidance)
        if not math.isfinite(guidance):
            raise ValueError(f"guidance must be a finite number, got {guidance}")
        b = embedding.shape[0]
        noise = torch.randn(b, 3, self.image_size, self.image_size, generator=generator,
                            device=generator.device if generator is not None else embedding.device)
        noise = noise.to(device=embedding.device, dtype=self.null_embedding.dtype)
        null = self.null_embedding[None].expand(b, -1)

        def velocity(x: torch.Tensor, t: torch.Tensor, with_uncond: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            if not with_uncond:
                return self.velocity(x, t, embedding), None
            both = self.velocity(torch.cat([x, x]), torch.cat([t, t]), torch.cat([embedding, null]))
            return both[:b], both[b:]

        return euler_sample(velocity, noise, steps, guidance)
