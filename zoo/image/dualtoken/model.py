"""DualToken (Song et al. 2025, https://arxiv.org/abs/2503.14324): pixel and semantic vocabularies from one SigLIP.

    image -> SigLIP blocks 1..26 (so400m, 27 blocks)
        pixel:    block-6 tokens -> prequant_pixel (+ 0.6 x prequant_shortcut(block-4 tokens)) -> 32-d
                  -> residual VQ, depth 8, one 16384 x 32 codebook shared by the depths (EMA, unused codes restarted)
                  -> postquant_pixel (causal) -> 27 x 27 map, bilinearly resized to 24 x 24 -> post_quant_conv
                  -> CNN decoder (x16) -> 384 x 384 image
        semantic: block-26 tokens -> prequant_semantic -> 32-d -> residual VQ (EMA), depth 8, 16384 x 32
                  -> postquant_semantic (causal) replaces the block-26 hidden state
                  -> block 27 -> post-LayerNorm -> attention-pooling head -> pooled embedding (1152)

Ids of one image: `[N, K]` with N = 27 x 27 positions and K = 8 pixel depths followed by 8 semantic depths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from zoo.api import MAKER_KEY, Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.image.dualtoken.backbone import SiglipBackbone
from zoo.image.dualtoken.decoder import PixelDecoder, PostQuantResnetBlock
from zoo.image.dualtoken.projection import AttnProjection
from zoo.quant.rvq import ResidualVQ
from zoo.registry import register_family

__all__ = ["DualToken"]

VOCABULARIES = ("pixel", "semantic")


@register_family("dualtoken")
class DualToken(ImageTokenizer):
    """DualToken image tokenizer: `[B, 3, S, S]` in [0, 1] -> ids `[B, g*g, pixel_depth + semantic_depth]`.

    `Tokens.meta["pixel"]` / `["semantic"]` give the `[start, stop)` columns of each vocabulary (`[0, 8]` and
    `[8, 16]` for a full encode); `tok.codebooks` has one entry per column (`pixel.0` .. `semantic.7`, the depths of
    a vocabulary sharing one table). `decode` reads the pixel columns, `semantic_embedding` the semantic ones;
    either may hold a prefix of its depths (`encode(x, pixel_depth=2)`, `truncate(t, ...)`, `decode(t,
    pixel_depth=2)`): a residual prefix is a coarser code.

    Args:
        image_size: input side S (384 for patch14-384, 256 for patch16-256).
        backbone_patch_size, backbone_width, backbone_depth, backbone_heads, backbone_mlp_dim: the SigLIP ViT
            (so400m: 14 or 16, 1152, 27, 16, 4304).
        pooled_dim: a Linear after the pooling head to a teacher of another width (tiny models whose offline
            teacher is not SigLIP); None for the official model.
        pixel_layer: block whose output feeds the pixel branch (official `layer_recon`, 1-based: 6).
        shortcut_layer: block added to it through its own projection (`layer_shortcut`: 4); None: no shortcut.
        shortcut_weight: weight of that shortcut (`weight_shortcut`: 0.6).
        semantic_layer: block whose output feeds the semantic branch and is replaced by its codes (`layer_sem`: 26).
        codebook_size, code_dim: codes per codebook (16384) and their width (32); both vocabularies.
        pixel_depth, semantic_depth: residual depths (8 at 384 px, 4 at 256 px).
        shared_codebook: one table for all depths of a vocabulary (True in the releases).
        decay: EMA decay of the codebooks (0.99).
        restart_unused_codes: in training, codes whose EMA count falls below 1 restart from batch vectors.
        decoder_channels, decoder_ch_mult, decoder_res_blocks: CNN decoder (128, [1, 1, 4, 4, 8], 2); its input
            grid is `image_size / 2^(len(decoder_ch_mult) - 1)` (24 at 384 px: the 27 x 27 code map is bilinearly
            resized to it).
        decoder_in_channels: channels after `post_quant_conv` (1024).
        decoder_attn_resolutions: nominal decoder resolutions with attention ([24] at 384 px, [16] at 256 px).
        norm_groups: GroupNorm groups of the decoder side (32 in the official code).
        dropout: decoder dropout (training only).
    """

    def __init__(
        self,
        image_size: int = 384,
        backbone_patch_size: int = 14,
        backbone_width: int = 1152,
        backbone_depth: int = 27,
        backbone_heads: int = 16,
        backbone_mlp_dim: int = 4304,
        pooled_dim: int | None = None,
        pixel_layer: int = 6,
        shortcut_layer: int | None = 4,
        shortcut_weight: float = 0.6,
        semantic_layer: int = 26,
        codebook_size: int = 16384,
        code_dim: int = 32,
        pixel_depth: int = 8,
        semantic_depth: int = 8,
        shared_codebook: bool = True,
        decay: float = 0.99,
        restart_unused_codes: bool = True,
        decoder_channels: int = 128,
        decoder_ch_mult: Sequence[int] = (1, 1, 4, 4, 8),
        decoder_res_blocks: int = 2,
        decoder_in_channels: int = 1024,
        decoder_attn_resolutions: Sequence[int] = (24,),
        norm_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= semantic_layer <= backbone_depth:
            raise ValueError(f"semantic_layer must be in [1, backbone_depth={backbone_depth}], got {semantic_layer}")
        for name, layer in (("pixel_layer", pixel_layer), ("shortcut_layer", shortcut_layer)):
            if layer is not None and not 1 <= layer <= semantic_layer:
                raise ValueError(f"{name} must be in [1, semantic_layer={semantic_layer}] (the official code asserts "
                                 f"layer_sem >= layer_recon, layer_shortcut), got {layer}")
        if backbone_width % code_dim:
            raise ValueError(f"backbone_width {backbone_width} must be a multiple of code_dim {code_dim}: the "
                             f"projections use backbone_width // code_dim heads of code_dim channels")
        upsampling = 2 ** (len(decoder_ch_mult) - 1)
        if image_size % upsampling:
            raise ValueError(f"image_size {image_size} must be a multiple of the decoder's upsampling {upsampling} "
                             f"(decoder_ch_mult {list(decoder_ch_mult)})")
        self.image_size = image_size
        self.pixel_layer = pixel_layer
        self.shortcut_layer = shortcut_layer
        self.shortcut_weight = float(shortcut_weight)
        self.semantic_layer = semantic_layer
        self.pixel_depth = pixel_depth
        self.semantic_depth = semantic_depth
        self.decoder_grid = image_size // upsampling

        self.backbone = SiglipBackbone(image_size, backbone_patch_size, backbone_width, backbone_depth,
                                       backbone_heads, backbone_mlp_dim, pooled_dim)
        self.grid = self.backbone.grid
        heads = backbone_width // code_dim  # official: hidden_size // embed_dim for all five projections
        self.prequant_pixel = AttnProjection(backbone_width, code_dim, heads)
        self.prequant_shortcut = AttnProjection(backbone_width, code_dim, heads) if shortcut_layer else None
        self.prequant_semantic = AttnProjection(backbone_width, code_dim, heads)
        quant = {"shared_codebook": shared_codebook, "ema": True, "decay": decay,
                 "dead_code_threshold": 1.0 if restart_unused_codes else 0.0}
        self.quantizer_pixel = ResidualVQ(codebook_size, code_dim, pixel_depth, **quant)
        self.quantizer_semantic = ResidualVQ(codebook_size, code_dim, semantic_depth, **quant)
        self.postquant_pixel = AttnProjection(code_dim, backbone_width, heads, causal=True)
        self.postquant_semantic = AttnProjection(code_dim, backbone_width, heads, causal=True)
        self.post_quant_conv = PostQuantResnetBlock(backbone_width, decoder_in_channels, norm_groups, dropout)
        self.decoder = PixelDecoder(decoder_channels, decoder_ch_mult, decoder_res_blocks, decoder_in_channels,
                                    image_size, decoder_attn_resolutions, norm_groups, dropout)
        # trained only through the pooled embedding (extras["pooled"], the semantic teacher loss)
        tail = [f"backbone.model.blocks.{i}.*" for i in range(semantic_layer, backbone_depth)]
        self.unused_in_forward = ("postquant_semantic.*", *tail, "backbone.model.norm.*",
                                  "backbone.model.attn_pool.*", "backbone.model.head.*")

    # ------------------------------------------------------------------ vocabularies

    @property
    def codebooks(self) -> list[Codebook]:
        """One `Codebook` per id column of a full encode: `pixel.0` .. `pixel.{d-1}`, `semantic.0` .. ."""
        books = [Codebook(self.quantizer_pixel.layer(k), f"pixel.{k}") for k in range(self.pixel_depth)]
        return books + [Codebook(self.quantizer_semantic.layer(k), f"semantic.{k}")
                        for k in range(self.semantic_depth)]

    @property
    def num_tokens(self) -> int:
        """Positions per image (27 x 27 = 729 at 384 px)."""
        return self.grid * self.grid

    def _depth(self, value: Any, full: int, name: str) -> int:
        if value is None:
            return full
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= full:
            raise ValueError(f"{name} must be an int in [1, {full}], got {value!r}")
        return value

    # ------------------------------------------------------------------ pieces

    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `[B, 3, S, S]` in [0, 1] -> (pixel, semantic) quantiser inputs, each `[B, g*g, code_dim]`."""
        h = self.backbone.embed(x * 2 - 1)  # SigLIP's processor: (x - 0.5) / 0.5
        pixel = shortcut = None
        for i, block in enumerate(self.backbone.blocks[: self.semantic_layer]):
            h = block(h)
            if i + 1 == self.shortcut_layer:
                shortcut = self.prequant_shortcut(h)
            if i + 1 == self.pixel_layer:
                pixel = self.prequant_pixel(h)
        if shortcut is not None:
            pixel = pixel + self.shortcut_weight * shortcut
        return pixel, self.prequant_semantic(h)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixel code sums `[B, g*g, code_dim]` -> images `[B, 3, S, S]` in [-1, 1] (the official `decode`)."""
        h = self.postquant_pixel(codes)
        h = h.reshape(codes.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2).contiguous()
        if self.grid != self.decoder_grid:  # official decoder_latent_shape: 27 x 27 -> 24 x 24
            h = F.interpolate(h, size=(self.decoder_grid, self.decoder_grid), mode="bilinear", align_corners=False)
        return self.decoder(self.post_quant_conv(h))

    def semantic_tail(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Semantic code sums `[B, g*g, code_dim]` -> (the hidden state they replace `[B, g*g, width]` (official
        `zq_sem`), the post-LN last hidden state, the pooled embedding `[B, pooled width]`)."""
        hidden = self.postquant_semantic(codes)
        normed, pooled = self.backbone.tail(hidden, self.semantic_layer)
        return hidden, normed, pooled

    # ------------------------------------------------------------------ tokens

    def _slices(self, tokens: Tokens) -> tuple[slice, slice]:
        """The pixel and semantic columns of `tokens`, from `meta` (or a full encode's layout when absent)."""
        k = tokens.ids.shape[-1]
        out = []
        for name, default in zip(VOCABULARIES, ([0, self.pixel_depth], [self.pixel_depth, k])):
            span = tokens.meta.get(name, default)
            if (not isinstance(span, (list, tuple)) or len(span) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
                raise ValueError(f"Tokens.meta[{name!r}] must be [start, stop) column indices, got {span!r}")
            out.append(slice(span[0], span[1]))
        pixel, semantic = out
        full = {"pixel": self.pixel_depth, "semantic": self.semantic_depth}
        for name, part in (("pixel", pixel), ("semantic", semantic)):
            depth = part.stop - part.start
            if not 1 <= depth <= full[name]:
                raise ValueError(f"Tokens.meta[{name!r}] = [{part.start}, {part.stop}) holds {depth} {name} depths; "
                                 f"this tokenizer has 1 to {full[name]}")
        if pixel.start != 0 or semantic.start != pixel.stop or semantic.stop != k:
            raise ValueError(f"ids have K={k} columns, which must be the pixel columns then the semantic ones; "
                             f"Tokens.meta says pixel [{pixel.start}, {pixel.stop}), semantic [{semantic.start}, "
                             f"{semantic.stop}). Use tok.truncate(tokens, ...) to cut depths")
        return pixel, semantic

    def check_tokens(self, tokens: object) -> Tokens:
        """Raise a clear error unless `tokens` hold DualToken ids for this model (any depth prefixes)."""
        if not isinstance(tokens, Tokens):
            raise TypeError(f"decode expects zoo.Tokens (from encode or Tokens.load), got {type(tokens).__name__}")
        maker = tokens.meta.get(MAKER_KEY)
        if isinstance(maker, str) and maker not in (self.name, self.family):
            raise ValueError(f"these tokens were made by {maker}, not by {self.name or self.family}; decode them with "
                             f"that tokenizer (zoo.load({maker!r})), or drop the mark: tokens.meta.pop({MAKER_KEY!r})")
        ids = tokens.ids
        if ids.dim() != 3:
            raise ValueError(f"DualToken ids are [B, N, K] (K = pixel then semantic depths), got shape "
                             f"{tuple(ids.shape)}")
        if ids.shape[0] == 0 or ids.shape[1] == 0 or ids.shape[2] == 0:
            raise ValueError(f"the tokens hold no ids (shape {tuple(ids.shape)}); encode something first")
        if ids.shape[1] != self.num_tokens:
            raise ValueError(f"{type(self).__name__} decodes {self.grid} x {self.grid} = {self.num_tokens} positions "
                             f"per image, got {ids.shape[1]}; were these tokens made by another tokenizer?")
        if tokens.layout not in ((), [], None) and tuple(tokens.layout) != (self.grid, self.grid):
            raise ValueError(f"Tokens.layout {tokens.layout} is not this tokenizer's grid ({self.grid}, {self.grid})")
        self._slices(tokens)
        size = self.quantizer_pixel.codebook_size
        bad = (ids < 0) | (ids >= size)
        if bad.any():
            where = tuple(bad.nonzero()[0].tolist())
            raise ValueError(f"token ids must lie in [0, {size}) for {type(self).__name__}; got {ids[where].item()} "
                             f"at (batch, position, column) {where}. Were these tokens made by another tokenizer?")
        return tokens

    def truncate(self, tokens: Tokens, pixel_depth: int | None = None, semantic_depth: int | None = None) -> Tokens:
        """Keep the first `pixel_depth` pixel and `semantic_depth` semantic depths (None keeps a vocabulary's)."""
        self.check_tokens(tokens)
        pixel, semantic = self._slices(tokens)
        kp = self._depth(pixel_depth, pixel.stop - pixel.start, "pixel_depth")
        ks = self._depth(semantic_depth, semantic.stop - semantic.start, "semantic_depth")
        ids = torch.cat([tokens.ids[..., pixel][..., :kp], tokens.ids[..., semantic][..., :ks]], dim=-1)
        meta = dict(tokens.meta, pixel=[0, kp], semantic=[kp, kp + ks])
        return Tokens(ids, tokens.lengths, tokens.layout, meta)

    def _split(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        ids = tokens.ids
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()  # ids from inference_mode cannot index codebooks under autograd
        pixel, semantic = self._slices(tokens)
        return ids[..., pixel], ids[..., semantic]

    # ------------------------------------------------------------------ contract

    def encode(self, x: torch.Tensor, pixel_depth: int | None = None, semantic_depth: int | None = None) -> Tokens:
        """Images `[B, 3, S, S]` in [0, 1] -> `Tokens` with ids `[B, g*g, kp + ks]` (pixel depths, then semantic
        depths; all of each by default), layout `(g, g)`, `meta["pixel"] = [0, kp]`, `meta["semantic"] = [kp,
        kp + ks]`. A depth below the full one computes only that prefix (the same ids as the full encode's)."""
        x = self.check_input(x)
        kp = self._depth(pixel_depth, self.pixel_depth, "pixel_depth")
        ks = self._depth(semantic_depth, self.semantic_depth, "semantic_depth")
        pixel, semantic = self.latents(x)
        ids = torch.cat([self.quantizer_pixel.assign(pixel, kp), self.quantizer_semantic.assign(semantic, ks)], -1)
        return Tokens(ids, None, (self.grid, self.grid), {"pixel": [0, kp], "semantic": [kp, kp + ks]})

    def decode(self, tokens: Tokens, pixel_depth: int | None = None) -> torch.Tensor:
        """`Tokens` -> images `[B, 3, S, S]` in the [0, 1] convention (`(y + 1) / 2` of the official output, not
        clamped), from the pixel columns (their first `pixel_depth` depths when given)."""
        pixel_ids, _ = self._split(tokens)
        kp = self._depth(pixel_depth, pixel_ids.shape[-1], "pixel_depth")
        codes = self.quantizer_pixel.lookup(pixel_ids[..., :kp]).to(self.dtype)
        return (self.decode_codes(codes) + 1) / 2

    def semantic_embedding(self, tokens: Tokens, semantic_depth: int | None = None) -> torch.Tensor:
        """The pooled embedding `[B, width]` (or `[B, pooled_dim]`) from the semantic columns: their code sum
        replaces the semantic layer's hidden state, then the remaining SigLIP blocks, post-LN and the MAP head (the
        official `pooler_output`, which training aligns with the frozen teacher's)."""
        return self._semantic(tokens, semantic_depth)[1]

    def semantic_features(self, tokens: Tokens, semantic_depth: int | None = None) -> torch.Tensor:
        """The post-LN last hidden state `[B, g*g, width]` from the semantic columns (what the pooling head reads)."""
        return self._semantic(tokens, semantic_depth)[0]

    def _semantic(self, tokens: Tokens, semantic_depth: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_tokens(tokens)
        _, semantic_ids = self._split(tokens)
        ks = self._depth(semantic_depth, semantic_ids.shape[-1], "semantic_depth")
        codes = self.quantizer_semantic.lookup(semantic_ids[..., :ks]).to(self.dtype)
        _, normed, pooled = self.semantic_tail(codes)
        return normed, pooled

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> code vectors `[B, N, K, code_dim]`, column by column (the official `get_code_emb_with_depth` of
        each vocabulary, concatenated); differentiable w.r.t. nothing (EMA codebooks)."""
        pixel_ids, semantic_ids = self._split(tokens)
        return torch.cat([self.quantizer_pixel.lookup_per_depth(pixel_ids),
                          self.quantizer_semantic.lookup_per_depth(semantic_ids)], dim=-2)

    def forward(self, x: torch.Tensor) -> ForwardOutput:
        """Training pass on images `[B, 3, S, S]` in [0, 1].

        Returns the reconstruction in [0, 1] scale, the tokens, the unweighted losses `pixel_commitment` and
        `semantic_commitment` (mean over depths of the MSE to the running code sum, the official `quant_loss`;
        the codebooks learn by EMA), usage / perplexity per vocabulary, and extras `pooled` (the student pooler
        output) and `semantic_hidden` (postquant_semantic's output, the official `zq_semantic`).
        """
        x = self.check_input(x)
        pixel, semantic = self.latents(x)
        qp = self.quantizer_pixel(pixel)
        qs = self.quantizer_semantic(semantic)
        image = self.decode_codes(qp.quantized)
        hidden, _, pooled = self.semantic_tail(qs.quantized)
        kp = self.pixel_depth
        tokens = Tokens(torch.cat([qp.ids, qs.ids], -1).detach(), None, (self.grid, self.grid),
                        {"pixel": [0, kp], "semantic": [kp, kp + self.semantic_depth]})
        losses = {"pixel_commitment": qp.losses["commitment"], "semantic_commitment": qs.losses["commitment"]}
        stats = {f"{name}_{key}": out.stats[key] for name, out in (("pixel", qp), ("semantic", qs))
                 for key in ("usage", "perplexity")}
        return ForwardOutput((image + 1) / 2, tokens, losses, stats, {"pooled": pooled, "semantic_hidden": hidden})
