"""SEED-2 image tokenizer (SEED-LLaMA, Ge et al. 2023, https://arxiv.org/abs/2310.01218): 32 causal 1D tokens.

    image 224 px -> EVA-CLIP ViT-g/14 (frozen) -> ln_vision -> causal Q-Former (32 queries, BERT-base)
        -> encode_task_layer (768 -> 768 -> 32, tanh) -> VQ 8192 x 32 (plain L2, no normalisation) -> ids [B, 32]
    ids -> codes -> decode_task_layer (32 -> 32 -> 768, tanh) + pos_embed_image -> 4 ViT blocks (12 heads)
        -> image_down (768 -> 256 -> 128 -> 32 per token) -> flatten 32 x 32 -> distill_image_proj -> [B, 1024]

The 1024-d result is an OpenCLIP ViT-H/14 image embedding that Stable Diffusion 2.1 unCLIP turns into pixels
(`decode`, through diffusers from a local folder). Training-only branch: `recon_pos_embed` + `recon_blocks`
rebuild the Q-Former features from the codes (the stage-2 `1 - cos` loss). The queries attend causally so that
the tokens suit left-to-right language models (https://arxiv.org/abs/2307.08041).

`seed-tiny` adds a small embedding-conditioned rectified-flow pixel decoder (`pixel_decoder`), trained by our
recipe, so that its tokens decode to pixels offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.api import Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.image.seed.backbone import CNNBackbone
from zoo.image.seed.pixel_decoder import DECODER_DEFAULTS, EmbeddingFlowDecoder
from zoo.image.seed.qformer import CausalQFormer
from zoo.image.seed.unclip import load_unclip, resolve_unclip_folder, unclip_decode
from zoo.image.seed.vit import EVA_MLP_RATIO, EVAViT
from zoo.nn import Block, Mlp
from zoo.quant.stats import code_stats
from zoo.quant.vq import VectorQuantizer
from zoo.registry import register_family

__all__ = ["CLIP_MEAN", "CLIP_STD", "PARTS", "SEED"]

# OpenAI CLIP normalisation (`models/transforms.py` of the official repo)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# image_down widths, hard-coded in `Blip2QformerQuantizer.__init__`
IMAGE_DOWN = (256, 128, 32)
# what `forward` can compute (see its docstring)
PARTS = ("contrastive", "codebook", "pixels")


class ImageDown(nn.Module):
    """Per-token `Linear(H, 256) -> ReLU -> Linear(256, 128) -> ReLU -> Linear(128, 32)`, no biases."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, IMAGE_DOWN[0], bias=False)
        self.fc2 = nn.Linear(IMAGE_DOWN[0], IMAGE_DOWN[1], bias=False)
        self.fc3 = nn.Linear(IMAGE_DOWN[1], IMAGE_DOWN[2], bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def _vit_blocks(dim: int, depth: int, heads: int) -> nn.ModuleList:
    """The `vit.py` blocks of SEED's decode side: pre-norm, fused qkv with bias, LayerNorm eps 1e-6, MLP 4x."""
    return nn.ModuleList(Block(dim, num_heads=heads, mlp_ratio=4.0, qkv_bias=True, norm_eps=1e-6)
                         for _ in range(depth))


@register_family("seed")
class SEED(ImageTokenizer):
    """SEED image tokenizer: `[B, 3, S, S]` in [0, 1] -> 32 causal ids; ids -> unCLIP image embedding -> pixels.

    Args:
        image_size: input side S (224; the ViT's position table fixes it).
        patch_size: ViT patch side (14).
        vit_width, vit_depth, vit_heads: EVA ViT size (1408, 39, 16: EVA-CLIP-g without its last block).
        vit_mlp_ratio: EVA MLP ratio (4.3637).
        vit_drop_path: stochastic depth of the ViT when it is trained (0).
        qformer_width, qformer_depth, qformer_heads, qformer_intermediate: Q-Former BERT size (768, 12, 12, 3072).
        cross_attention_freq: Q-Former layers l with l % freq == 0 cross-attend to the image (2).
        num_query_tokens: learned queries = tokens per image (32).
        causal_queries: causal query self-attention (the official code turns it on for exactly 32 queries).
        qformer_norm_eps: Q-Former LayerNorm epsilon (1e-12).
        qformer_dropout, qformer_attn_dropout: BERT dropouts when the Q-Former trains (bert-base: 0.1, 0.1).
        codebook_size, codebook_dim: VQ size (8192 x 32).
        decode_depth: blocks of the image-embedding branch and of the feature-reconstruction branch (4).
        decoder_heads: their heads (12, hard-coded in the official code).
        recon_depth: blocks of the training-only feature-reconstruction branch (default `decode_depth`; 0: none).
        embedding_dim: width of the image embedding (1024 = OpenCLIP ViT-H/14, what SD-2.1 unCLIP takes).
        text_vocab_size: build the Q-Former text side and the contrastive heads for stage-1 training (None: the
            released inference model, without them).
        max_text_len: text position-table rows (512).
        contrastive_dim: width of the image-text contrastive space (256, BLIP-2's `embed_dim`).
        pixel_decoder: kwargs of an `EmbeddingFlowDecoder` (width, depth, num_heads, patch_size, cond_dropout,
            steps, guidance) to decode pixels without unCLIP (seed-tiny); None for the release.
        dead_code_threshold: restart codes whose moving-average use falls below this (not in the official recipe;
            a tiny codebook trained on few photos collapses without it; 0 disables).
        backbone: "eva" (the release's EVA ViT, sized by the vit_* arguments) or a frozen pretrained CNN trunk from
            `zoo.image.seed.backbone.BACKBONES` ("efficientnet_lite0": seed-tiny's offline stand-in for the frozen
            EVA-CLIP ViT; the vit_* arguments are then unused).
    """

    # the stage-1 text side is trained by image-text pairs only (forward(x, text_ids=...))
    unused_in_forward = ("qformer.word_embed.*", "qformer.text_pos_embed.*", "qformer.layers.*.text_mlp.*",
                         "qformer.layers.*.text_norm.*", "vision_proj.*", "text_proj.*", "temp")

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        vit_width: int = 1408,
        vit_depth: int = 39,
        vit_heads: int = 16,
        vit_mlp_ratio: float = EVA_MLP_RATIO,
        vit_drop_path: float = 0.0,
        qformer_width: int = 768,
        qformer_depth: int = 12,
        qformer_heads: int = 12,
        qformer_intermediate: int = 3072,
        cross_attention_freq: int = 2,
        num_query_tokens: int = 32,
        causal_queries: bool = True,
        qformer_norm_eps: float = 1e-12,
        qformer_dropout: float = 0.0,
        qformer_attn_dropout: float = 0.0,
        codebook_size: int = 8192,
        codebook_dim: int = 32,
        decode_depth: int = 4,
        decoder_heads: int = 12,
        recon_depth: int | None = None,
        embedding_dim: int = 1024,
        text_vocab_size: int | None = None,
        max_text_len: int = 512,
        contrastive_dim: int = 256,
        pixel_decoder: dict[str, Any] | None = None,
        dead_code_threshold: float = 0.0,
        backbone: str = "eva",
    ) -> None:
        super().__init__()
        if qformer_width % decoder_heads:
            raise ValueError(f"qformer_width ({qformer_width}) must be a multiple of decoder_heads ({decoder_heads}): "
                             "the decode-side blocks split it into that many heads")
        self.image_size = image_size
        self.num_tokens = num_query_tokens
        if backbone == "eva":
            self.visual_encoder: nn.Module = EVAViT(image_size, patch_size, vit_width, vit_depth, vit_heads,
                                                    vit_mlp_ratio, vit_drop_path)
        else:
            self.visual_encoder = CNNBackbone(backbone)
            vit_width = self.visual_encoder.width
        self.ln_vision = nn.LayerNorm(vit_width, eps=1e-5)  # torch's default eps, unlike every other norm here
        self.qformer = CausalQFormer(qformer_width, qformer_depth, qformer_heads, qformer_intermediate, vit_width,
                                     num_query_tokens, cross_attention_freq, causal_queries, qformer_norm_eps,
                                     qformer_dropout, qformer_attn_dropout, text_vocab_size, max_text_len)
        self.encode_task_layer = Mlp(qformer_width, qformer_width, codebook_dim, act="tanh")
        self.quantizer = VectorQuantizer(codebook_size, codebook_dim, metric="euclidean", distance_form="taming",
                                         dead_code_threshold=dead_code_threshold)
        self.decode_task_layer = Mlp(codebook_dim, codebook_dim, qformer_width, act="tanh")
        recon_depth = decode_depth if recon_depth is None else recon_depth
        if recon_depth:
            self.recon_pos_embed = nn.Parameter(torch.zeros(1, num_query_tokens, qformer_width))
            self.recon_blocks = _vit_blocks(qformer_width, recon_depth, decoder_heads)
        else:
            self.recon_pos_embed, self.recon_blocks = None, None
        self.image_pos_embed = nn.Parameter(torch.zeros(1, num_query_tokens, qformer_width))
        self.image_blocks = _vit_blocks(qformer_width, decode_depth, decoder_heads)
        self.image_down = ImageDown(qformer_width)
        self.image_proj = nn.Linear(num_query_tokens * IMAGE_DOWN[-1], embedding_dim)
        if text_vocab_size is not None:  # BLIP-2 stage-1 heads
            self.vision_proj = nn.Linear(qformer_width, contrastive_dim)
            self.text_proj = nn.Linear(qformer_width, contrastive_dim)
            self.temp = nn.Parameter(torch.tensor(0.07))
        else:
            self.vision_proj = self.text_proj = self.temp = None
        if pixel_decoder is not None:
            unknown = sorted(set(pixel_decoder) - set(DECODER_DEFAULTS))
            if unknown:
                raise ValueError(f"pixel_decoder got unknown keys {unknown}; it takes {sorted(DECODER_DEFAULTS)}")
            self.pixel_decoder = EmbeddingFlowDecoder(image_size, embedding_dim, **pixel_decoder)
        else:
            self.pixel_decoder = None
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.__dict__["_unclip"] = None  # (folder, pipeline), loaded on first unCLIP decode; not a submodule

    # ------------------------------------------------------------------ pieces

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer, "codebook")]

    @property
    def layout(self) -> tuple[int]:
        return (self.num_tokens,)

    def vision_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images `[B, 3, S, S]` in [0, 1] -> `ln_vision(ViT(CLIP-normalised x))` `[B, 1 + grid^2, vit_width]` (or the
        CNN backbone's tokens)."""
        if isinstance(self.visual_encoder, EVAViT):
            x = (x - self.clip_mean) / self.clip_std
        return self.ln_vision(self.visual_encoder(x))

    def query_features(self, x: torch.Tensor, return_hidden: bool = False
                       ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images in [0, 1] -> causal Q-Former outputs `[B, 32, qformer_width]` (with `return_hidden`, also the
        hidden states after the embedding norm and each layer)."""
        return self.qformer(self.vision_features(x), return_hidden=return_hidden)

    def embedding_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors `[B, 32, codebook_dim]` -> image embeddings `[B, embedding_dim]` (`get_codebook_entry`
        after the codebook lookup)."""
        return self._image_branch(self.decode_task_layer(codes))

    def _image_branch(self, up: torch.Tensor) -> torch.Tensor:
        h = up + self.image_pos_embed
        for block in self.image_blocks:
            h = block(h)
        return self.image_proj(self.image_down(h).flatten(1))  # query-major: index = q * 32 + c

    def _ids(self, tokens: Tokens) -> torch.Tensor:
        ids = self.check_tokens(tokens).ids
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens:
            raise ValueError(f"SEED ids must have shape [B, {self.num_tokens}] (one row of {self.num_tokens} tokens "
                             f"per image), got {tuple(ids.shape)}")
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()  # made under inference_mode; a plain copy can enter autograd
        return ids

    # ------------------------------------------------------------------ contract

    def encode(self, x: torch.Tensor) -> Tokens:
        """Images `[B, 3, S, S]` in [0, 1] -> `Tokens` with ids `[B, 32]`, layout `(32,)`, in causal query order."""
        x = self.check_input(x)
        z = self.encode_task_layer(self.query_features(x))
        return Tokens(self.quantizer.assign(z), layout=self.layout, meta={"image_size": self.image_size})

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> the raw code rows `[B, 32, codebook_dim]` (differentiable w.r.t. the codebook)."""
        return self.quantizer.lookup(self._ids(tokens))

    def image_embedding(self, tokens: Tokens) -> torch.Tensor:
        """ids (any ids, not only encoded ones) -> the image embedding `[B, embedding_dim]` that the decoder takes
        (the official `get_codebook_entry`)."""
        return self.embedding_from_codes(self.embed(tokens))

    def decode(self, tokens: Tokens, steps: int | None = None, guidance: float | None = None,
               generator: torch.Generator | None = None, unclip: str | None = None) -> torch.Tensor:
        """`Tokens` -> images `[B, 3, H, W]` in the [0, 1] convention (not clamped).

        Args:
            steps, guidance: sampler steps and classifier-free guidance scale. None: the official 20 and 10 for
                unCLIP, the values recorded with the bundled pixel decoder for it.
            generator: seeds the initial noise (and unCLIP's embedding noise): same seed, same images.
            unclip: folder of the diffusers `StableUnCLIPImg2ImgPipeline` (`stabilityai/stable-diffusion-2-1-unclip`)
                to decode with; default `$ZOO_SEED_UNCLIP`. A model with a `pixel_decoder` uses it unless this is
                given. unCLIP images are 768 x 768 whatever the input size.
        """
        embedding = self.image_embedding(tokens)
        if self.pixel_decoder is not None and unclip is None:
            return (self.pixel_decoder.sample(embedding, steps, guidance, generator) + 1) / 2
        pipe = self._unclip_pipeline(unclip)
        return unclip_decode(pipe, embedding, 20 if steps is None else steps, 10.0 if guidance is None else guidance,
                             generator)

    def _unclip_pipeline(self, folder: str | None) -> Any:
        path = resolve_unclip_folder(folder)
        cached = self.__dict__["_unclip"]
        if cached is None or cached[0] != path:
            dtype = next(self.parameters()).dtype
            self.__dict__["_unclip"] = (path, load_unclip(path, self.device, dtype))
        return self.__dict__["_unclip"][1]

    # ------------------------------------------------------------------ training

    def contrastive_features(self, x: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor | None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: (l2-normalised projection of the last causal query `[B, contrastive_dim]`, l2-normalised
        projection of the text [CLS] feature `[B, contrastive_dim]`). The last query is the one that has seen all
        the others, the official choice for the causal Q-Former."""
        if self.vision_proj is None:
            raise ValueError("stage-1 training needs the text side: build the model with text_vocab_size")
        image = F.normalize(self.vision_proj(self.query_features(x)[:, -1]), dim=-1)
        text = F.normalize(self.text_proj(self.qformer.encode_text(text_ids, text_mask)[:, 0]), dim=-1)
        return image, text

    def forward(
        self,
        x: torch.Tensor,
        *,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        embedding_target: torch.Tensor | None = None,
        parts: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> ForwardOutput:
        """Training pass; freezing (ViT and Q-Former in stage 2) is done by the objective with `requires_grad`.

        Args:
            x: images `[B, 3, S, S]` in [0, 1].
            text_ids, text_mask: captions as token ids `[B, L]` (stage 1).
            embedding_target: the teacher's image embeddings `[B, embedding_dim]` (stage 2).
            parts: which of `PARTS` to compute; default every one that applies ("contrastive" with text,
                "pixels" with a pixel decoder). "contrastive": extras `image_feat`, `text_feat`, `temp`.
                "codebook": losses `commitment` and `codebook` (unweighted VQ terms; legacy weights 1 and 0.25),
                `feature_reconstruction` (`1 - cos` between `recon_blocks(codes)` and the detached Q-Former output)
                and, with `embedding_target`, `embedding` (MSE); extras `image_embedding`. "pixels": loss `flow` of
                the pixel decoder conditioned on the embedding of the quantised tokens.
            generator: random source of the pixel decoder's noise and timesteps.
        """
        x = self.check_input(x)
        if parts is None:
            parts = ["codebook"] + (["contrastive"] if text_ids is not None else []) + (
                ["pixels"] if self.pixel_decoder is not None else [])
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise ValueError(f"parts must be among {PARTS}, got unknown {unknown}")
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        extras: dict[str, Any] = {}
        tokens = None
        if "contrastive" in parts:
            if text_ids is None:
                raise ValueError("the contrastive part needs text_ids (captions as token ids)")
            image_feat, text_feat = self.contrastive_features(x, text_ids, text_mask)
            extras.update(image_feat=image_feat, text_feat=text_feat, temp=self.temp)
        if "codebook" in parts or "pixels" in parts:
            q = self.query_features(x)
            z = self.encode_task_layer(q)
            if "codebook" in parts:
                out = self.quantizer(z)
                ids, quantized = out.ids, out.quantized
                losses.update(out.losses)
                stats.update(out.stats)
            else:  # the codebook is not trained: no statistics or code restarts may touch it
                ids = self.quantizer.assign(z)
                quantized = self.quantizer.lookup(ids).to(z.dtype)
                stats.update(code_stats(ids, self.quantizer.codebook_size))
            tokens = Tokens(ids.detach(), layout=self.layout, meta={"image_size": self.image_size})
            up = self.decode_task_layer(quantized)
            embedding = self._image_branch(up)
            extras["image_embedding"] = embedding
            if "codebook" in parts:
                if self.recon_blocks is not None:
                    h = up + self.recon_pos_embed
                    for block in self.recon_blocks:
                        h = block(h)
                    cos = F.cosine_similarity(h.float(), q.detach().float(), dim=-1)
                    losses["feature_reconstruction"] = (1 - cos).mean()
                if embedding_target is not None:
                    losses["embedding"] = F.mse_loss(embedding.float(), embedding_target.float())
            if "pixels" in parts:
                if self.pixel_decoder is None:
                    raise ValueError("this SEED has no pixel decoder (pixel_decoder=None)")
                losses["flow"] = self.pixel_decoder.loss(x, embedding, generator)
        return ForwardOutput(None, tokens, losses, stats, extras)
