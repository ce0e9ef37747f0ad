"""GigaTok (Xiong et al. 2025, https://arxiv.org/abs/2504.08736): hybrid CNN + transformer VQ tokenizer.

    image -> CNN encoder -> ViT encoder (1D: Q-Former to N latent queries; 2D: ViT on the grid)
          -> linear to 8-d -> l2-normalised VQ (16384 codes, rotation trick) -> linear back
          -> ViT decoder (-> 2D grid) -> CNN decoder (adaptive GroupNorm, depth-to-space) -> image

Semantic regularisation aligns the decoder-ViT tokens after block `semantic_depth`, projected by
`semantic_head`, with a frozen teacher's patch features (DINOv2-B in the paper); `forward` returns them as
`extras["decoder_features"]`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.api import Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.quant.perturb import perturb_batch
from zoo.quant.vq import VectorQuantizer
from zoo.registry import register_family

from zoo.image.gigatok.cnn import CNNDecoder, CNNEncoder
from zoo.image.gigatok.vit import GridDecoder, GridEncoder, QueryDecoder, QueryEncoder

__all__ = ["GigaTok"]

LAYOUTS = ("1d", "2d")


def _init_like_official(module: nn.Module) -> None:
    """Truncated-normal(0.02) Linear/Conv weights, zero biases, unit LayerNorms (official `_init_weights`)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_family("gigatok")
class GigaTok(ImageTokenizer):
    """GigaTok image tokenizer: `[B, 3, S, S]` in [0, 1] -> `num_latent_tokens` ids (1D) or a g x g grid (2D).

    Args:
        image_size: input size S (the position tables fix it; 256 for every release).
        token_layout: "1d" (latent queries, `VQVitModelPlus`) or "2d" (one token per grid cell, `VQVitModel2DPlus`).
        num_latent_tokens: N for "1d" (a power of two with `multi_level_query_init`).
        codebook_size: number of codes.
        codebook_dim: code width (8).
        z_channels: width between the CNNs and the transformers (256).
        cnn_channels: base CNN width (128; a constant in the official code).
        encoder_ch_mult, decoder_ch_mult: CNN width multipliers per level; the grid is S / 2^(len - 1).
        num_res_blocks: encoder res-blocks per level (decoder: one more; 2 in the official code).
        encoder_width, encoder_depth, encoder_heads: encoder transformer (small 512/6/8, base 768/12/12,
            large 1024/24/16, xl 1280/36/20, xxl 1536/48/24).
        decoder_width, decoder_depth, decoder_heads: decoder transformer.
        multi_level_query_init: 1D queries from multi-level pooling of the grid (else the global mean).
        adaptive_norm: adaptive GroupNorm in the CNN decoder (`adaptive_gn`).
        depth_to_space: depth-to-space upsampling in the CNN decoder (`d2s_up`).
        rotation_trick: rotation-trick gradients through the quantiser (https://arxiv.org/abs/2410.06424).
        entropy_loss: also return the codebook entropy loss in training (XL-XXL).
        semantic_depth: 1-based decoder block whose output feeds `semantic_head` (None: no semantic hook).
        semantic_dim: teacher feature width (768 for DINOv2-B; None: no head).
        dropout: dropout in the CNN res-blocks and transformers.
        norm_groups: CNN GroupNorm groups (32 in every release; fewer lets tiny models use narrow CNNs).
        dead_code_threshold: restart codes whose moving-average hit count per batch falls below this from
            vectors of the batch (not in the official recipe, which relies on scale; 0 disables it). Short CPU
            runs of tiny models collapse to a few codes without it.
    """

    unused_in_forward = ("*.semantic_head.*",)  # trained only by the semantic loss on extras["decoder_features"]

    def __init__(
        self,
        image_size: int = 256,
        token_layout: str = "1d",
        num_latent_tokens: int = 256,
        codebook_size: int = 16384,
        codebook_dim: int = 8,
        z_channels: int = 256,
        cnn_channels: int = 128,
        encoder_ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        decoder_ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        encoder_width: int = 512,
        encoder_depth: int = 6,
        encoder_heads: int = 8,
        decoder_width: int = 512,
        decoder_depth: int = 6,
        decoder_heads: int = 8,
        multi_level_query_init: bool = True,
        adaptive_norm: bool = True,
        depth_to_space: bool = True,
        rotation_trick: bool = True,
        entropy_loss: bool = False,
        semantic_depth: int | None = 3,
        semantic_dim: int | None = 768,
        dropout: float = 0.0,
        norm_groups: int = 32,
        dead_code_threshold: float = 0.0,
        official_init: bool = True,
    ) -> None:
        super().__init__()
        if token_layout not in LAYOUTS:
            raise ValueError(f"token_layout must be one of {LAYOUTS}, got {token_layout!r}")
        if len(encoder_ch_mult) != len(decoder_ch_mult):
            raise ValueError(
                f"encoder_ch_mult and decoder_ch_mult must have the same length (same downsampling), got "
                f"{list(encoder_ch_mult)} and {list(decoder_ch_mult)}"
            )
        factor = 2 ** (len(encoder_ch_mult) - 1)
        if image_size % factor:
            raise ValueError(f"image_size ({image_size}) must be divisible by the CNN downsampling factor {factor}")
        self.image_size = image_size
        self.token_layout = token_layout
        self.grid_size = image_size // factor
        grid_tokens = self.grid_size**2
        self.num_tokens = num_latent_tokens if token_layout == "1d" else grid_tokens

        self.encoder = CNNEncoder(cnn_channels, encoder_ch_mult, num_res_blocks, z_channels, dropout, norm_groups)
        self.decoder = CNNDecoder(
            cnn_channels, decoder_ch_mult, num_res_blocks, z_channels, dropout, adaptive_norm, depth_to_space,
            norm_groups,
        )
        if token_layout == "1d":
            self.encoder_vit = QueryEncoder(
                z_channels, encoder_width, encoder_depth, encoder_heads, grid_tokens, num_latent_tokens,
                multi_level_query_init, dropout,
            )
            self.decoder_vit = QueryDecoder(
                z_channels, decoder_width, decoder_depth, decoder_heads, grid_tokens, num_latent_tokens,
                semantic_depth, semantic_dim, dropout,
            )
        else:
            self.encoder_vit = GridEncoder(
                z_channels, encoder_width, encoder_depth, encoder_heads, grid_tokens, dropout
            )
            self.decoder_vit = GridDecoder(
                z_channels, decoder_width, decoder_depth, decoder_heads, grid_tokens, semantic_depth, semantic_dim,
                dropout,
            )
        if official_init:
            _init_like_official(self)  # before the quantiser and its projections, as the official model
        self.quant_proj = nn.Linear(z_channels, codebook_dim)
        self.quantizer = VectorQuantizer(
            codebook_size, codebook_dim, metric="cosine", rotation_trick=rotation_trick, entropy_loss=entropy_loss,
            dead_code_threshold=dead_code_threshold,
        )
        self.post_quant_proj = nn.Linear(codebook_dim, z_channels)

    # ------------------------------------------------------------------ pieces

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer, "codebook")]

    @property
    def layout(self) -> tuple[int, ...]:
        return (self.num_tokens,) if self.token_layout == "1d" else (self.grid_size, self.grid_size)

    @property
    def semantic_head(self) -> nn.Module | None:
        return self.decoder_vit.semantic_head

    def encode_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`x` `[B, 3, S, S]` in [-1, 1] -> (CNN map `[B, z, g, g]`, pre-quantisation latents `[B, N, codebook_dim]`,
        not yet l2-normalised)."""
        grid = self.encoder(x)
        return grid, self.quant_proj(self.encoder_vit(grid.flatten(2).transpose(1, 2)))

    def decode_codes(
        self, codes: torch.Tensor, return_hidden: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Code vectors `[B, N, codebook_dim]` -> (pixels in [-1, 1], decoder-ViT map `[B, z, g, g]`, hidden tokens
        after block `semantic_depth` `[B, g^2, decoder_width]` when `return_hidden`, else None)."""
        grid, hidden = self.decoder_vit(self.post_quant_proj(codes), return_hidden=return_hidden)
        return self.decoder(grid), grid, hidden

    def semantic_features(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project decoder hidden tokens onto the teacher space with `semantic_head` `[B, g^2, semantic_dim]`."""
        if self.semantic_head is None:
            raise ValueError("this GigaTok has no semantic head; build it with semantic_depth and semantic_dim set")
        return self.semantic_head(hidden)

    def decoder_features(self, tokens: Tokens, project: bool = True) -> torch.Tensor:
        """The decoder features of the semantic regularisation for `tokens`: `[B, g^2, semantic_dim]` (or the raw
        `[B, g^2, decoder_width]` hidden tokens, the official linear-probe feature, with `project=False`)."""
        codes = self._codes(tokens)
        if self.decoder_vit.feature_depth is None:
            raise ValueError("this GigaTok has no feature hook; build it with semantic_depth set")
        _, _, hidden = self.decode_codes(codes, return_hidden=True)
        return self.semantic_features(hidden) if project else hidden

    def _codes(self, tokens: Tokens) -> torch.Tensor:
        """Checked ids -> code vectors `[B, N, codebook_dim]`; ids made under `torch.inference_mode()` are copied
        first when autograd is on, so that looking them up in the trainable codebook works."""
        ids = self._check_layout(self.check_tokens(tokens)).ids
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()
        return self.quantizer.lookup(ids)

    def _check_layout(self, tokens: Tokens) -> Tokens:
        ids = tokens.ids
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens:
            raise ValueError(
                f"{type(self).__name__} ({self.token_layout}) decodes ids of shape [B, {self.num_tokens}], got "
                f"{tuple(ids.shape)}"
            )
        return tokens

    # ------------------------------------------------------------------ contract

    def encode(self, x: torch.Tensor) -> Tokens:
        """Images `[B, 3, S, S]` in [0, 1] -> `Tokens` with ids `[B, N]`."""
        x = self.check_input(x)
        _, latents = self.encode_features(x * 2 - 1)
        ids = self.quantizer.assign(latents)
        return Tokens(ids, layout=self.layout, meta={"image_size": self.image_size})

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """`Tokens` -> images `[B, 3, S, S]` in the [0, 1] convention (`(y + 1) / 2`, not clamped)."""
        pixels, _, _ = self.decode_codes(self._codes(tokens))
        return (pixels + 1) / 2

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> unit-norm code vectors `[B, N, codebook_dim]` (differentiable w.r.t. the codebook)."""
        return self._codes(tokens)

    def forward(
        self,
        x: torch.Tensor,
        *,
        direct_reconstruction: bool = False,
        perturbation: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> ForwardOutput:
        """Training pass.

        Args:
            x: images `[B, 3, S, S]` in [0, 1].
            direct_reconstruction: also decode the CNN encoder map with the CNN decoder (the auxiliary loss of the
                first training steps), returned as `extras["direct_reconstruction"]` in [0, 1] scale.
            perturbation: `{"alpha", "beta", "delta"}` of RobustTok latent perturbation
                (https://arxiv.org/abs/2503.08354): the first `beta` of the batch has each token replaced, with
                probability `alpha`, by one of its `delta` nearest codes, after the VQ losses.
            generator: random source of the perturbation.

        Returns `ForwardOutput` with losses `commitment`, `codebook` (unweighted; the official weights are 0.25 and
        1), `entropy` (with `entropy_loss`) and `feature_reconstruction` (MSE between the decoder-ViT map and the
        detached CNN encoder map); extras `decoder_features` (semantic head output, `[B, g^2, semantic_dim]`),
        `decoder_hidden`, `encoder_features`, and `direct_reconstruction` when asked.
        """
        x = self.check_input(x)
        grid, latents = self.encode_features(x * 2 - 1)
        q = self.quantizer(latents)
        quantized = q.quantized
        ids = q.ids
        if perturbation:
            unknown = set(perturbation) - {"alpha", "beta", "delta"}
            if unknown:
                raise ValueError(f"perturbation takes alpha, beta and delta, got unknown keys {sorted(unknown)}")
            ids = perturb_batch(
                q.ids, self.quantizer, float(perturbation.get("beta", 0.1)), float(perturbation.get("alpha", 0.5)),
                int(perturbation.get("delta", 100)), generator,
            )
            quantized = quantized + (self.quantizer.lookup(ids).to(quantized.dtype) - quantized).detach()
        want_hidden = self.decoder_vit.feature_depth is not None
        pixels, rec_grid, hidden = self.decode_codes(quantized, return_hidden=want_hidden)
        losses = dict(q.losses)
        losses["feature_reconstruction"] = F.mse_loss(rec_grid.float(), grid.detach().float())
        extras: dict[str, Any] = {"encoder_features": grid}
        if hidden is not None:
            extras["decoder_hidden"] = hidden
            if self.semantic_head is not None:
                extras["decoder_features"] = self.semantic_head(hidden)
        if direct_reconstruction:
            extras["direct_reconstruction"] = (self.decoder(grid) + 1) / 2
        tokens = Tokens(ids.detach(), layout=self.layout, meta={"image_size": self.image_size})
        return ForwardOutput((pixels + 1) / 2, tokens, losses, dict(q.stats), extras)
