"""The base VQGAN on its own: a 2D tokenizer (g x g ids of a raw codebook), trainable with the engine.

KARL distils this tokenizer's codes; a tiny one is trained first (`recipes/karl/vqgan-tiny.yaml`) and its tensors are
copied into `karl-tiny`'s `vqgan.*` (the names are the same) before KARL's own stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.api import Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.image.karl.vqgan import VQGAN
from zoo.registry import register_family

__all__ = ["KARLVQGAN"]


@register_family("karl-vqgan")
class KARLVQGAN(ImageTokenizer):
    """MAGE VQGAN tokenizer: `[B, 3, S, S]` in [0, 1] -> ids `[B, g*g]` (layout (g, g)) -> images.

    Args:
        image_size: input side S.
        channels, ch_mult, num_res_blocks, z_channels, codebook_size: the taming `ddconfig` and `n_embed`
            (MAGE / KARL release: 128, [1, 1, 2, 2, 4], 2, 256, 1024).
        norm_groups: GroupNorm groups (32 in the release).
        dead_code_threshold: restart codes whose moving-average hits per batch fall below this (training aid for
            short CPU runs, not in MAGE's recipe; 0 disables).
        kmeans_init: initialise the codebook by k-means on the first training batch.
    """

    def __init__(
        self,
        image_size: int = 256,
        channels: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 256,
        codebook_size: int = 1024,
        norm_groups: int = 32,
        dead_code_threshold: float = 0.0,
        kmeans_init: bool = False,
    ) -> None:
        super().__init__()
        self.vqgan = VQGAN(channels, ch_mult, num_res_blocks, z_channels, codebook_size, norm_groups,
                           dead_code_threshold=dead_code_threshold, kmeans_init=kmeans_init)
        if image_size % self.vqgan.factor:
            raise ValueError(f"image_size ({image_size}) must be a multiple of the downsampling factor "
                             f"{self.vqgan.factor}")
        self.image_size = image_size
        self.grid_size = image_size // self.vqgan.factor

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.vqgan.quantizer, "codebook")]

    def encode(self, x: torch.Tensor) -> Tokens:
        """Images `[B, 3, S, S]` in [0, 1] -> ids `[B, g*g]` (row-major), layout `(g, g)`."""
        x = self.check_input(x)
        ids = self.vqgan.assign(self.vqgan.encode_map(x))
        return Tokens(ids, layout=(self.grid_size, self.grid_size), meta={"image_size": self.image_size})

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """`Tokens` -> images `[B, 3, S, S]` in the [0, 1] convention (not clamped)."""
        ids = self.check_tokens(tokens).ids
        if ids.dim() != 2 or ids.shape[1] != self.grid_size**2:
            raise ValueError(f"karl-vqgan decodes ids of shape [B, {self.grid_size ** 2}], got {tuple(ids.shape)}")
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()  # ids made under inference_mode, looked up with autograd on
        codes = self.vqgan.quantizer.lookup(ids)
        return self.vqgan.decode_map(self.vqgan.codes_to_map(codes, self.grid_size))

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> raw code vectors `[B, g*g, z_channels]` (differentiable w.r.t. the codebook)."""
        ids = self.check_tokens(tokens).ids
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()
        return self.vqgan.quantizer.lookup(ids)

    def forward(self, x: torch.Tensor) -> ForwardOutput:
        """Training pass: reconstruction through the quantised map; losses `codebook`, `commitment` (unweighted)."""
        x = self.check_input(x)
        z = self.vqgan.encode_map(x)
        q = self.vqgan.quantizer(z.permute(0, 2, 3, 1))
        y = self.vqgan.decode_map(q.quantized.permute(0, 3, 1, 2))
        ids = q.ids.flatten(1).detach()
        tokens = Tokens(ids, layout=(self.grid_size, self.grid_size), meta={"image_size": self.image_size})
        return ForwardOutput(y, tokens, dict(q.losses), dict(q.stats))
