"""TokenFlow (Qu et al., CVPR 2025, https://arxiv.org/abs/2412.03069): one index, two meanings.

    image -> semantic encoder (CLIP / SigLIP / ViTamin ViT) -> Linear-Tanh-Linear -> 32-d semantic map  \
          -> pixel encoder (VQGAN CNN, f16) -> 1x1 conv              -> 8-d pixel map     -> concat 40-d map
          -> multi-scale residual quantisation (VAR-style; scales 1, 2, 4, ..., g) with a shared-index dual
             codebook: id = argmin d_sem + d_pix over two l2-normalised tables
          -> semantic half: BEiT ViT (depth 3, patch 1) -> Linear-Tanh-Linear -> teacher-space features
          -> pixel half:    1x1 conv -> VQGAN CNN decoder (plain, or the "enhanced" one: 256 wide, 4 res-blocks)

One model serves several input sizes: the semantic ViT's native size (224 px for CLIP-B/16: 14 x 14 grid, 8 scales,
561 ids) and, for the CLIP encoder, a larger `image_size` whose position tables are resized (the official
`infer_interpolate`: 256 px, 16 x 16 grid, 9 scales, 817 ids). The input size picks the path; the scale schedule
of a path is `scales` up to its grid side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.api import Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.checks import check_image
from zoo.image.tokenflow.cnn import PixelDecoder, PixelEncoder
from zoo.image.tokenflow.semantic import ClipVisionEncoder, SemanticDecoder, TaskHead
from zoo.image.tokenflow.timm_encoders import TIMM_ENCODERS, TimmSemanticEncoder
from zoo.quant.dual import DualCodebookVQ
from zoo.quant.multiscale import (
    check_scales,
    multiscale_assign,
    multiscale_codes,
    multiscale_quantize,
    scale_offsets,
    whole_scales,
)
from zoo.registry import register_family

__all__ = ["SEMANTIC_ENCODERS", "TokenFlow"]

SEMANTIC_ENCODERS = ("clip", *TIMM_ENCODERS)


@register_family("tokenflow")
class TokenFlow(ImageTokenizer):
    """TokenFlow image tokenizer: `[B, 3, S, S]` in [0, 1] -> ids `[B, sum s^2]`, scale by scale (row-major within a
    scale), `layout` the list of `(s, s)` grids. Each id selects a semantic and a pixel code together.

    Args:
        image_size: the default input size (256 for the released t2i CLIP-B tokenizer, 384 for TokenFlow-XL).
        native_image_size: the semantic encoder's own input size (224 for CLIP-B/16); a second accepted input size
            whose path uses the learnt position tables as they are. None: `image_size`.
        scales: the scale schedule at `image_size`, ending at its grid side; the native path uses its prefix up to
            the native grid side. Official: [1, 2, 4, 6, 8, 10, 12, 14] (+16 with `infer_interpolate`) for CLIP-B,
            [1..10, 12, 14, 17, 22, 27] for SigLIP, [1, 2, 4, ..., 16] for ViTamin.
        codebook_size: ids (32768 in the releases).
        semantic_code_dim, pixel_code_dim: widths of the two codebooks (32 and 8).
        semantic_encoder: "clip" (OpenAI CLIP ViT layout on zoo.nn), "siglip_so400m" or "vitamin_xlarge" (timm).
        semantic_width, semantic_layers, semantic_heads, semantic_patch_size: the CLIP ViT's size (768, 12, 12, 16
            for ViT-B/16). For timm encoders: None keeps the released architecture (width/layers/heads may shrink
            it for tests; the patch size must stay None).
        semantic_decoder_width, semantic_decoder_depth, semantic_decoder_heads: the BEiT decoder (768 for CLIP-B,
            1152 for SigLIP / ViTamin; depth 3; 12 heads).
        semantic_out_dim: teacher feature width the semantic head predicts (512 CLIP-B, 1152 SigLIP / ViTamin).
        cnn_channels, encoder_ch_mult, num_res_blocks: pixel encoder (128, [1, 1, 2, 2, 4], 2).
        decoder_channels, decoder_ch_mult, decoder_res_blocks: pixel decoder; plain 128 / 2, "enhanced" 256 / 4
            (each level runs `decoder_res_blocks + 1` res-blocks).
        z_channels: CNN latent width (256).
        norm_groups: CNN GroupNorm groups (32 in the releases; fewer for narrow tiny CNNs).
        dropout: CNN dropout (training only).
        scale_dropout: probability of skipping one random scale (not the first) in a training forward (0.1).
        entropy_loss: also return the codebook entropy loss in training (`entropy_loss_ratio` > 0).
    """

    # trained only by the semantic loss on extras["semantic_features"] (the contract tests sum `losses` and the image)
    unused_in_forward = ("semantic_decoder.*", "semantic_head.*")

    def __init__(
        self,
        image_size: int = 256,
        native_image_size: int | None = 224,
        scales: Sequence[int] = (1, 2, 4, 6, 8, 10, 12, 14, 16),
        codebook_size: int = 32768,
        semantic_code_dim: int = 32,
        pixel_code_dim: int = 8,
        semantic_encoder: str = "clip",
        semantic_width: int | None = 768,
        semantic_layers: int | None = 12,
        semantic_heads: int | None = 12,
        semantic_patch_size: int | None = 16,
        semantic_decoder_width: int = 768,
        semantic_decoder_depth: int = 3,
        semantic_decoder_heads: int = 12,
        semantic_out_dim: int = 512,
        cnn_channels: int = 128,
        encoder_ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        decoder_channels: int = 256,
        decoder_ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        decoder_res_blocks: int = 4,
        z_channels: int = 256,
        norm_groups: int = 32,
        dropout: float = 0.0,
        scale_dropout: float = 0.1,
        entropy_loss: bool = False,
    ) -> None:
        super().__init__()
        if semantic_encoder not in SEMANTIC_ENCODERS:
            raise ValueError(f"semantic_encoder must be one of {SEMANTIC_ENCODERS}, got {semantic_encoder!r}")
        if len(encoder_ch_mult) != len(decoder_ch_mult):
            raise ValueError(f"encoder_ch_mult {list(encoder_ch_mult)} and decoder_ch_mult {list(decoder_ch_mult)} "
                             "must have the same length (the same downsampling)")
        if not 0.0 <= scale_dropout < 1.0:
            raise ValueError(f"scale_dropout must lie in [0, 1), got {scale_dropout}")
        native = image_size if native_image_size is None else native_image_size
        self.image_size = image_size
        self.native_image_size = native
        self.semantic_code_dim = semantic_code_dim
        self.pixel_code_dim = pixel_code_dim
        self.scale_dropout = float(scale_dropout)
        self.downsample = 2 ** (len(encoder_ch_mult) - 1)

        if semantic_encoder == "clip":
            missing = [n for n, v in (("semantic_width", semantic_width), ("semantic_layers", semantic_layers),
                                      ("semantic_heads", semantic_heads),
                                      ("semantic_patch_size", semantic_patch_size)) if v is None]
            if missing:
                raise ValueError(f"the clip semantic encoder needs {missing} (e.g. 768, 12, 12, 16 for ViT-B/16)")
            if image_size % semantic_patch_size:
                raise ValueError(f"image_size {image_size} must be a multiple of semantic_patch_size "
                                 f"{semantic_patch_size}")
            self.semantic_encoder = ClipVisionEncoder(native, semantic_patch_size, semantic_width, semantic_layers,
                                                      semantic_heads)
            width = semantic_width
        else:
            if semantic_patch_size is not None:
                raise ValueError(f"{semantic_encoder} has the patch size of its timm architecture; set "
                                 "semantic_patch_size to null")
            if native != image_size:
                raise ValueError(f"{semantic_encoder} runs at its native size only; set native_image_size to null "
                                 f"or {image_size}")
            self.semantic_encoder = TimmSemanticEncoder(semantic_encoder, native, semantic_width, semantic_layers,
                                                        semantic_heads)
            width = self.semantic_encoder.width
            self.unused_in_forward = type(self).unused_in_forward + tuple(
                "semantic_encoder." + p for p in self.semantic_encoder.unused_parameters)
        self._semantic_patch = self.semantic_encoder.patch_size

        # input size -> (grid side, scale schedule)
        scales = check_scales(scales)
        self.scales = scales
        self._paths: dict[int, tuple[int, list[int]]] = {}
        for size in dict.fromkeys((image_size, native)):
            grid = size // self._semantic_patch
            if grid not in scales:
                raise ValueError(f"input size {size} gives a {grid} x {grid} semantic grid (patch "
                                 f"{self._semantic_patch}), which must be one of the scales {scales}")
            self._paths[size] = (grid, [s for s in scales if s <= grid])
        if self._paths[image_size][1] != scales:
            raise ValueError(f"scales {scales} must end at the {image_size} px grid side {self._paths[image_size][0]}")
        native_grid = self._paths[native][0]

        self.semantic_proj = TaskHead(width, semantic_code_dim)
        self.encoder = PixelEncoder(cnn_channels, encoder_ch_mult, num_res_blocks, z_channels, norm_groups, dropout)
        self.pixel_proj = nn.Conv2d(z_channels, pixel_code_dim, 1)
        self.quantizer = DualCodebookVQ(codebook_size, semantic_code_dim, pixel_code_dim, metric="cosine",
                                        entropy_loss=entropy_loss)
        self.pixel_unproj = nn.Conv2d(pixel_code_dim, z_channels, 1)
        self.decoder = PixelDecoder(decoder_channels, decoder_ch_mult, decoder_res_blocks, z_channels, norm_groups,
                                    dropout)
        self.semantic_decoder = SemanticDecoder(native_grid, semantic_code_dim, semantic_decoder_width,
                                                semantic_decoder_depth, semantic_decoder_heads)
        self.semantic_head = TaskHead(semantic_decoder_width, semantic_out_dim)
        for head in (self.semantic_proj, self.semantic_head):  # official `_init_weights` of the task layers
            for layer in (head.fc1, head.fc2):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

    # ------------------------------------------------------------------ sizes and paths

    @property
    def input_sizes(self) -> list[int]:
        """Accepted input sizes: `image_size` first, then the native size if it differs."""
        return list(self._paths)

    def path(self, size: int) -> tuple[int, list[int]]:
        """(grid side, scale schedule) of the path for `size` px inputs."""
        if size not in self._paths:
            raise ValueError(f"{type(self).__name__} takes {' or '.join(f'{s}x{s}' for s in self._paths)} pixels, "
                             f"got {size}x{size}; resize or center-crop first")
        return self._paths[size]

    def num_tokens_for(self, size: int | None = None) -> int:
        """Ids of a full encode at `size` px (default `image_size`): 817 for CLIP-B at 256, 561 at 224."""
        return scale_offsets(self.path(self.image_size if size is None else size)[1])[-1]

    def check_input(self, x: object) -> torch.Tensor:
        x = check_image(x, None)
        if x.shape[-2] != x.shape[-1] or x.shape[-1] not in self._paths:
            sizes = " or ".join(f"{s}x{s}" for s in self._paths)
            raise ValueError(f"image batch must be {sizes} pixels for this tokenizer, got {x.shape[-2]}x{x.shape[-1]}; "
                             f"resize or center-crop first (zoo.io.read_image(path, size={self.image_size}) does it)")
        return x

    # ------------------------------------------------------------------ pieces

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer, "shared")]

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """`x` `[B, 3, S, S]` in [-1, 1] -> the quantiser's input map `[B, 40, g, g]` (semantic channels first)."""
        size = x.shape[-1]
        grid, _ = self.path(size)
        sem = self.semantic_proj(self.semantic_encoder(x))
        if sem.shape[1] != grid * grid:
            raise ValueError(f"the semantic encoder gave {sem.shape[1]} tokens at {size} px, expected {grid}^2")
        sem = sem.transpose(1, 2).reshape(x.shape[0], self.semantic_code_dim, grid, grid)
        pixel_size = grid * self.downsample
        if pixel_size != size:  # SigLIP: 27 x 27 patches of 14 px; the CNN sees the image resized to 27 * 16 px
            x = F.interpolate(x, size=(pixel_size, pixel_size), mode="bicubic", align_corners=False)
        pix = self.pixel_proj(self.encoder(x))
        return torch.cat([sem.to(pix.dtype), pix], dim=1)

    def decode_maps(self, quant: torch.Tensor, size: int, semantic: bool = True, pixel: bool = True
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Summed code map `[B, 40, g, g]` -> (semantic features `[B, g*g, semantic_out_dim]`, image `[B, 3, size,
        size]` in [-1, 1], unclamped); either may be skipped."""
        sem_q, pix_q = quant.split([self.semantic_code_dim, self.pixel_code_dim], dim=1)
        sem = self.semantic_head(self.semantic_decoder(sem_q)) if semantic else None
        img = None
        if pixel:
            img = self.decoder(self.pixel_unproj(pix_q))
            if img.shape[-1] != size:  # SigLIP: back from 27 * 16 px to the input size
                img = F.interpolate(img, size=(size, size), mode="bicubic", align_corners=False)
        return sem, img

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()  # ids from inference_mode cannot index the trainable codebook under autograd
        return self.quantizer.lookup(ids)

    def _token_path(self, tokens: Tokens) -> tuple[int, int, list[int]]:
        """(input size, grid side, scales) of checked `tokens` (all rows of the same length)."""
        ids = tokens.ids
        if ids.dim() != 2:
            raise ValueError(f"{type(self).__name__} ids are [B, N] (one shared codebook), got shape "
                             f"{tuple(ids.shape)}")
        size = int(tokens.meta.get("image_size", self.image_size))
        grid, path_scales = self.path(size)
        scales = whole_scales(ids.shape[1], path_scales)
        if tokens.layout not in ((), [], None):
            layout = [tuple(int(v) for v in item) for item in tokens.layout]
            if layout != [(s, s) for s in scales]:
                raise ValueError(f"Tokens.layout {tokens.layout} does not match the {ids.shape[1]} ids, which are "
                                 f"the scales {scales} of the {size} px path; were these tokens made by another "
                                 "tokenizer, or cut inside a scale?")
        return size, grid, scales

    def _rows_by_length(self, tokens: Tokens) -> list[tuple[torch.Tensor, Tokens]]:
        """Split a ragged batch (`lengths` from `Tokens.cat`) into groups of rows with the same valid length."""
        if tokens.lengths is None or bool((tokens.lengths == tokens.num_tokens).all()):
            return [(torch.arange(tokens.batch_size, device=tokens.device), tokens)]
        groups = []
        for length in torch.unique(tokens.lengths).tolist():
            rows = (tokens.lengths == length).nonzero().flatten()
            part = tokens[rows]
            scales = whole_scales(int(length), self.path(int(tokens.meta.get("image_size", self.image_size)))[1])
            groups.append((rows, Tokens(part.ids[:, :length], None, [(s, s) for s in scales], part.meta)))
        return groups

    def _from_tokens(self, tokens: Tokens, semantic: bool, pixel: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        self.check_tokens(tokens)
        outputs: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
        for rows, part in self._rows_by_length(tokens):
            size, grid, scales = self._token_path(part)
            quant = multiscale_codes(self._lookup, part.ids, scales, grid)
            sem, img = self.decode_maps(quant, size, semantic, pixel)
            outputs.append((rows, sem, img))
        if len(outputs) == 1:
            return outputs[0][1], outputs[0][2]
        merged = []
        for i in (1, 2):
            first = outputs[0][i]
            if first is None:
                merged.append(None)
                continue
            out = first.new_empty((tokens.batch_size, *first.shape[1:]))
            for item in outputs:
                out[item[0]] = item[i]
            merged.append(out)
        return merged[0], merged[1]

    # ------------------------------------------------------------------ contract

    def encode(self, x: torch.Tensor, num_tokens: int | None = None) -> Tokens:
        """Images `[B, 3, S, S]` in [0, 1] (S one of `input_sizes`) -> `Tokens` with ids `[B, N]`, `lengths` `[B]`
        (all N), `layout` the `(s, s)` grids of the scales and `meta["image_size"]` (which picks the decode path).

        Args:
            num_tokens: keep the whole scales whose ids fit in this many (coarse to fine; e.g. 21 = scales 1, 2, 4);
                only those scales are computed. None: every scale of the path.
        """
        x = self.check_input(x)
        size = x.shape[-1]
        _, scales = self.path(size)
        if num_tokens is not None:
            offsets = scale_offsets(scales)
            if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < offsets[1]:
                raise ValueError(f"num_tokens must be an int >= {offsets[1]} (the first scale), got {num_tokens!r}")
            scales = scales[: max(i for i, n in enumerate(offsets) if n <= num_tokens)]
        ids = multiscale_assign(self.quantizer, self.encode_features(x * 2 - 1), scales)
        # lengths = every row's valid ids (all of them), so that batches cut at different scales `Tokens.cat`
        lengths = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device)
        return Tokens(ids, lengths, [(s, s) for s in scales], {"image_size": size})

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """`Tokens` (any prefix of whole scales) -> images `[B, 3, S, S]` in the [0, 1] convention, `(y + 1) / 2`
        of the official output, not clamped."""
        _, img = self._from_tokens(tokens, semantic=False, pixel=True)
        return (img + 1) / 2

    def semantic_features(self, tokens: Tokens) -> torch.Tensor:
        """The semantic decoder's output for `tokens`: `[B, g*g, semantic_out_dim]` in the teacher's feature space
        (the official `decode_code(ids)[0]`, what training aligns with the teacher's patch features)."""
        sem, _ = self._from_tokens(tokens, semantic=True, pixel=False)
        return sem

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> `[B, N, semantic_code_dim + pixel_code_dim]` = [l2-normalised semantic row | l2-normalised pixel
        row] (the official `get_codebook_entry`), differentiable w.r.t. both codebooks."""
        self.check_tokens(tokens)
        return self._lookup(tokens.ids)

    def forward(self, x: torch.Tensor) -> ForwardOutput:
        """Training pass on images `[B, 3, S, S]` in [0, 1].

        Returns `ForwardOutput` with the reconstruction in [0, 1] scale, tokens of the scales used (one may be
        dropped with probability `scale_dropout` in training), losses `codebook`, `commitment` (and `entropy`)
        averaged over scales, unweighted (official weights 1 and 0.25), the quantiser's statistics averaged over
        scales, and extras `semantic_features` `[B, g*g, semantic_out_dim]` for the teacher loss.
        """
        x = self.check_input(x)
        size = x.shape[-1]
        _, scales = self.path(size)
        h = self.encode_features(x * 2 - 1)
        q = multiscale_quantize(self.quantizer, h, scales, self.scale_dropout if self.training else 0.0)
        sem, img = self.decode_maps(q.quantized, size)
        tokens = Tokens(q.ids.detach(), layout=[(s, s) for s in q.scales], meta={"image_size": size})
        extras: dict[str, Any] = {"semantic_features": sem, "scales": q.scales}
        return ForwardOutput((img + 1) / 2, tokens, dict(q.losses), dict(q.stats), extras)
