"""KARL (Duggal et al. 2025, https://arxiv.org/abs/2507.07995): single-pass adaptive-length 1D image tokens.

    image [0, 1] --VQGAN encoder--> continuous map z (g x g)
    [error token | patch_embed(image) (+) z + pos | latent_tokens[:T]] --transformer--> T latents
        -> halting_mlp: p_t; a token with p_t > 0.75 is halted (inactive)
        -> quant_proj -> l2-normalised VQ (4096 x 12): one id per token
    active ids -> normalise(code) -> latent_proj + latent_pos_embed[t], with g*g mask tokens + 2D positions
        --transformer--> logits over the VQGAN codes -> softmax-weighted VQGAN codebook --VQGAN decoder--> image

The error token embeds the desired L1 reconstruction error epsilon (binned upwards onto 19 values,
`zoo.image.karl.binning`), so one pass decides how many of the T budgeted tokens an image needs: the paper's proxy
for its Kolmogorov complexity. Training (`zoo/train/objectives/karl.py`) distils the frozen VQGAN's codes first,
then fine-tunes everything with pixel and adversarial losses; both stages use the two-pass "upside-down RL" step
that `forward(..., refine=True)` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.api import Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.image.karl.binning import as_errors
from zoo.image.karl.halting import HALT_THRESHOLD, budgets, compact_active
from zoo.image.karl.transformer import LatentDecoder, LatentEncoder
from zoo.image.karl.vqgan import VQGAN
from zoo.quant.vq import VectorQuantizer
from zoo.registry import register_family

__all__ = ["DEFAULT_TARGET_ERROR", "KARL"]

DEFAULT_TARGET_ERROR = 0.05  # the official `encode(desired_reconstruction_quality=0.05)` default
RECONSTRUCT = ("grad", "no_grad", "none")


def _init_like_official(module: nn.Module) -> None:
    """Official `_init_weights`: Linear/Conv truncated-normal(0.02) with zero biases, unit LayerNorms; the packed
    q/k/v projections keep `nn.MultiheadAttention`'s xavier-uniform with zero bias."""
    for name, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if name.endswith("attn.qkv"):
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _check_positions(positions: Any, batch: int, length: int) -> None:
    """`Tokens.meta["positions"]` must be an integer `[B, >= N]` tensor (what `encode` writes); clear error else."""
    fix = ("use the meta that KARL.encode returned with these ids, or delete meta['positions'] to place the tokens at "
           "positions 0..N-1")
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"Tokens.meta['positions'] must be a tensor of the active tokens' original positions, got "
                        f"{type(positions).__name__}; {fix}")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"Tokens.meta['positions'] must hold integer token positions, got dtype {positions.dtype}; "
                        f"{fix}")
    if positions.dim() != 2 or positions.shape[0] != batch or positions.shape[1] < length:
        raise ValueError(f"Tokens.meta['positions'] must have shape [B, N] = [{batch}, {length}] (one original token "
                         f"position per id), got {list(positions.shape)}; {fix}")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


@register_family("karl")
class KARL(ImageTokenizer):
    """KARL tokenizer: `encode(x, num_tokens=T, target_error=eps)` -> the active tokens among T, `decode` -> image.

    Args:
        image_size: input side S (256 in the releases, whose grid is asserted to be 16 x 16).
        patch_size: patch embedding stride, equal to the VQGAN's downsampling factor (16).
        encoder_width, encoder_depth, encoder_heads: latent encoder (`karl_small`: 1024, 8, 8).
        decoder_width, decoder_depth, decoder_heads: latent decoder (`karl_small`: 1024, 8, 8).
        codebook_size, codebook_dim: the latent VQ (4096 x 12, l2-normalised).
        max_grid_tokens: side M of the two (W, M, M) positional tables (64).
        max_latent_tokens: rows of the latent query and latent position tables, the largest budget (512).
        halting_hidden: hidden width of `halting_mlp` (512).
        full_budget: the default budget and the second pass's budget in training (256, the official constant).
        vqgan_channels, vqgan_ch_mult, vqgan_num_res_blocks, vqgan_dim, vqgan_codebook_size: the base MAGE VQGAN
            (128, [1, 1, 2, 2, 4], 2, 256, 1024).
        vqgan_norm_groups: GroupNorm groups of the VQGAN (32; fewer only for narrow tiny models).
        official_init: initialise as the official constructor (else PyTorch defaults for the linear layers).
    """

    # `softmax(logits) @ codebook` reads the base codebook as a constant (official `.weight.data`): no gradient
    unused_in_forward = ("vqgan.quantizer.embed",)

    def __init__(
        self,
        image_size: int = 256,
        patch_size: int = 16,
        encoder_width: int = 1024,
        encoder_depth: int = 8,
        encoder_heads: int = 8,
        decoder_width: int = 1024,
        decoder_depth: int = 8,
        decoder_heads: int = 8,
        codebook_size: int = 4096,
        codebook_dim: int = 12,
        max_grid_tokens: int = 64,
        max_latent_tokens: int = 512,
        halting_hidden: int = 512,
        full_budget: int = 256,
        vqgan_channels: int = 128,
        vqgan_ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        vqgan_num_res_blocks: int = 2,
        vqgan_dim: int = 256,
        vqgan_codebook_size: int = 1024,
        vqgan_norm_groups: int = 32,
        official_init: bool = True,
    ) -> None:
        super().__init__()
        factor = 2 ** (len(vqgan_ch_mult) - 1)
        if patch_size != factor:
            raise ValueError(f"patch_size ({patch_size}) must equal the VQGAN downsampling factor 2^(len(vqgan_ch_mult)"
                             f" - 1) = {factor}: both maps are concatenated cell by cell")
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        if not 1 <= full_budget <= max_latent_tokens:
            raise ValueError(f"full_budget must lie in [1, max_latent_tokens={max_latent_tokens}], got {full_budget}")
        self.image_size = image_size
        self.grid_size = image_size // patch_size
        self.full_budget = full_budget
        self.encoder = LatentEncoder(encoder_width, encoder_depth, encoder_heads, patch_size, vqgan_dim, codebook_dim,
                                     max_grid_tokens, max_latent_tokens, halting_hidden)
        self.decoder = LatentDecoder(decoder_width, decoder_depth, decoder_heads, codebook_dim, vqgan_codebook_size,
                                     max_grid_tokens, max_latent_tokens, encoder_width)
        if official_init:
            _init_like_official(self)  # before the quantiser and the (pretrained) VQGAN, as the official model
        self.quantizer = VectorQuantizer(codebook_size, codebook_dim, metric="cosine")
        self.vqgan = VQGAN(vqgan_channels, vqgan_ch_mult, vqgan_num_res_blocks, vqgan_dim, vqgan_codebook_size,
                           vqgan_norm_groups)

    # ------------------------------------------------------------------ pieces

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer, "latent")]

    @property
    def max_tokens(self) -> int:
        return self.encoder.max_tokens

    def image_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] -> (encoder image tokens `[B, G, W]`, the VQGAN's continuous map `[B, D, g, g]`)."""
        z = self.vqgan.encode_map(x)
        return self.encoder.image_tokens(x, z), z

    def soft_codes(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits `[B, G, K]` -> the softmax-weighted raw VQGAN codebook `[B, G, D]` (a constant codebook)."""
        return torch.softmax(logits.float(), dim=-1) @ self.vqgan.quantizer.embed.detach().float()

    def pixels(self, codes: torch.Tensor) -> torch.Tensor:
        """Row-major VQGAN code vectors `[B, G, D]` -> images `[B, 3, S, S]` in [0, 1] scale, unclamped."""
        return self.vqgan.decode_map(self.vqgan.codes_to_map(codes, self.grid_size))

    def _latent_groups(self, num_tokens: Any, batch: int, device: torch.device) -> dict[int, torch.Tensor]:
        """Budget per image -> {budget: indices of the images with it} (each group runs as one batch)."""
        values = torch.tensor(budgets(num_tokens, batch, self.full_budget, self.max_tokens))
        return {int(t): (values == t).nonzero()[:, 0].to(device) for t in values.unique().tolist()}

    # ------------------------------------------------------------------ contract

    def encode(
        self,
        x: torch.Tensor,
        num_tokens: int | Sequence[int] | torch.Tensor | None = None,
        target_error: float | Sequence[float] | torch.Tensor | None = None,
    ) -> Tokens:
        """Images `[B, 3, S, S]` in [0, 1] -> the active tokens of each image.

        Args:
            num_tokens: the token budget T, an int or one per image (1..`max_latent_tokens`); default
                `full_budget` (256).
            target_error: the desired mean L1 reconstruction error (in [0, 1] pixel units), a float or one per image;
                default 0.05. A looser error lets more tokens halt.

        Returns `Tokens` with ids `[B, max T]`: `ids[b, :lengths[b]]` are the active tokens' ids in their original
        order (then padding 0), `lengths` the active counts; `meta["halt_prob"]` `[B, max T]` every token's halting
        probability in token order (1.0 past an image's budget), `meta["positions"]` the active tokens' original
        positions, `meta["num_tokens"]` the budgets and `meta["target_error"]` the errors asked for.
        """
        x = self.check_input(x)
        b = x.shape[0]
        errors = as_errors(DEFAULT_TARGET_ERROR if target_error is None else target_error, b, x.device)
        groups = self._latent_groups(num_tokens, b, x.device)
        width = max(groups)
        ids = torch.zeros(b, width, dtype=torch.long, device=x.device)
        halt_prob = torch.ones(b, width, dtype=torch.float32, device=x.device)
        image_tokens, _ = self.image_tokens(x)
        for t, rows in groups.items():
            logits, latents = self.encoder(image_tokens[rows], errors[rows], t)
            halt_prob[rows, :t] = torch.sigmoid(logits.float())
            ids[rows, :t] = self.quantizer.assign(latents)
        active = halt_prob <= HALT_THRESHOLD  # past a budget the probability is 1.0: never active
        compact, positions, lengths = compact_active(ids, active)
        budget = torch.tensor([t for t in budgets(num_tokens, b, self.full_budget, self.max_tokens)],
                              device=x.device)
        meta = {"image_size": self.image_size, "halt_prob": halt_prob, "positions": positions,
                "num_tokens": budget, "target_error": errors}
        return Tokens(compact, lengths, (width,), meta)

    def estimate_complexity(
        self,
        x: torch.Tensor,
        target_error: float | Sequence[float] | torch.Tensor | None = None,
        num_tokens: int | Sequence[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The number of tokens each image needs at `target_error` (default 0.05) out of `num_tokens` (default 256):
        LongTensor `[B]`, the paper's Kolmogorov-complexity proxy. Runs the encoder and the halting head only."""
        x = self.check_input(x)
        b = x.shape[0]
        errors = as_errors(DEFAULT_TARGET_ERROR if target_error is None else target_error, b, x.device)
        counts = torch.zeros(b, dtype=torch.long, device=x.device)
        image_tokens, _ = self.image_tokens(x)
        for t, rows in self._latent_groups(num_tokens, b, x.device).items():
            logits, _ = self.encoder(image_tokens[rows], errors[rows], t)
            counts[rows] = (torch.sigmoid(logits.float()) <= HALT_THRESHOLD).sum(1)
        return counts

    def _active_codes(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Checked tokens -> (unit-norm codes `[B, L]`, positions `[B, L]`, padding mask or None), L = max length."""
        tokens = self.check_tokens(tokens)
        ids = tokens.ids
        if ids.dim() != 2:
            raise ValueError(f"KARL decodes ids of shape [B, N], got {tuple(ids.shape)}")
        b, n = ids.shape
        lengths = tokens.lengths if tokens.lengths is not None else torch.full((b,), n, device=ids.device)
        positions = tokens.meta.get("positions")
        if positions is None:  # hand-made tokens: the first lengths[b] token positions
            positions = torch.arange(n, device=ids.device)[None].expand(b, n)
        else:
            _check_positions(positions, b, n)
        length = int(lengths.max()) if b else 0
        ids, positions = ids[:, :length], positions[:, :length].to(ids.device).long()
        valid = torch.arange(length, device=ids.device)[None] < lengths[:, None]
        bad = valid & ((positions < 0) | (positions >= self.max_tokens))
        if bad.any():
            raise ValueError(f"token positions must lie in [0, {self.max_tokens}), got {positions[bad][:5].tolist()}")
        ids = ids.masked_fill(~valid, 0)
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()
        codes = self.quantizer.lookup(ids)
        return codes, positions.masked_fill(~valid, 0), (None if bool(valid.all()) else ~valid)

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """`Tokens` -> images `[B, 3, S, S]` in the [0, 1] convention (not clamped). Only the active tokens
        (`ids[b, :lengths[b]]`, at `meta["positions"]`) are attended to, so tokens cut to their lengths decode the
        same."""
        codes, positions, padding = self._active_codes(tokens)
        logits = self.decoder(codes, positions, self.grid_size, padding)
        return self.pixels(self.soft_codes(logits))

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> unit-norm latent codes `[B, N, codebook_dim]` (differentiable w.r.t. the codebook)."""
        ids = self.check_tokens(tokens).ids
        if ids.is_inference() and not torch.is_inference_mode_enabled():
            ids = ids.clone()
        return self.quantizer.lookup(ids)

    # ------------------------------------------------------------------ training

    def _pass(self, image_tokens: torch.Tensor, errors: torch.Tensor, num_tokens: int, active_targets: int,
              mask_halted: bool, reconstruct: str, quantize: bool = True) -> dict[str, Any]:
        """One encoder-quantiser-decoder pass at budget `num_tokens` (see `forward`)."""
        halt_logits, latents = self.encoder(image_tokens, errors, num_tokens)
        q = self.quantizer(latents)
        # without `quantize` the decoder reads the l2-normalised latents themselves (the VQ's continuous relaxation)
        codes = q.quantized if quantize else F.normalize(latents.float(), dim=-1).to(q.quantized.dtype)
        positions, padding = torch.arange(num_tokens, device=latents.device), None
        if mask_halted:  # the decoder gets the active tokens only (as the official mask, without the halted rows)
            active = torch.sigmoid(halt_logits.detach().float()) <= HALT_THRESHOLD
            order = torch.sort((~active).to(torch.uint8), dim=1, stable=True).indices
            length = int(active.sum(1).max())
            order = order[:, :length]
            codes = codes.gather(1, order[..., None].expand(-1, -1, codes.shape[-1]))
            padding = ~active.gather(1, order)
            positions = order
        logits = self.decoder(codes, positions, self.grid_size, padding)
        codes = self.soft_codes(logits)
        pixels = None
        if reconstruct == "grad":
            pixels = self.pixels(codes)
        elif reconstruct == "no_grad":
            with torch.no_grad():
                pixels = self.pixels(codes.detach())
        halt_active = _bce(halt_logits[:, :active_targets], 0.0)
        halt_stop = _bce(halt_logits[:, active_targets:], 1.0) if active_targets < num_tokens else None
        return {"num_tokens": num_tokens, "logits": logits, "codes": codes, "reconstruction": pixels,
                "halt_logits": halt_logits, "active_targets": active_targets, "ids": q.ids, "vq": q,
                "halt_active": halt_active, "halt_stop": halt_stop}

    def forward(
        self,
        x: torch.Tensor,
        *,
        num_tokens: int | None = None,
        target_error: float | Sequence[float] | torch.Tensor | None = None,
        refine: bool = False,
        reconstruct: str = "grad",
        quantize: bool = True,
    ) -> ForwardOutput:
        """Training pass; with `refine` the official two-pass step.

        Pass 1 tokenises `x` with budget `num_tokens` (default `full_budget`) conditioned on `target_error`; the
        decoder sees every token in training (the official pass has no halting mask) and the halting head is
        pushed towards "active" for all of them. With `refine`, pass 2 re-tokenises with the full budget
        conditioned on the L1 error pass 1 achieved per image: the first `num_tokens` tokens are targets for
        "active", the rest for "halted", and the decoder ignores the tokens currently predicted halted.

        Args:
            reconstruct: "grad" (pixels with autograd: stage 2), "no_grad" (pixels only to measure the achieved
                error: stage 1) or "none" (refine then still measures the error without autograd).
            quantize: False feeds the decoder the l2-normalised continuous latents instead of their codes (the VQ
                still runs for its ids, losses and statistics): the warm-up of `karl-distill` (`continuous_steps`),
                during which a small model's latents can become image-dependent before quantisation erases weak
                differences.

        Returns `ForwardOutput`: `reconstruction` of pass 1 (None for "none"); losses `codebook`, `commitment`
        (unweighted VQ losses on unit vectors), `halt_active`, `halt_stop` (BCE of the halting logits), each summed
        over the passes; extras `passes` (per pass: logits, soft codes, reconstruction, halting logits, ids, VQ
        output), `target_ids` (the VQGAN's ids of `x`, `[B, G]`), `target_codes` (their code vectors) and
        `achieved_error` (pass 1's per-image L1, when measured).
        """
        if reconstruct not in RECONSTRUCT:
            raise ValueError(f"reconstruct must be one of {RECONSTRUCT}, got {reconstruct!r}")
        x = self.check_input(x)
        b = x.shape[0]
        first = budgets(num_tokens, b, self.full_budget, self.max_tokens)[0]
        errors = as_errors(DEFAULT_TARGET_ERROR if target_error is None else target_error, b, x.device)
        image_tokens, z = self.image_tokens(x)
        target_ids = self.vqgan.assign(z.detach())
        target_codes = self.vqgan.quantizer.embed.detach()[target_ids]
        want = "no_grad" if refine and reconstruct == "none" else reconstruct
        passes = [self._pass(image_tokens, errors, first, first, not self.training, want, quantize)]
        achieved = None
        if passes[0]["reconstruction"] is not None:
            achieved = (x.float() - passes[0]["reconstruction"].detach().float()).abs().flatten(1).mean(1)
        if refine:
            full = self.full_budget
            passes.append(self._pass(image_tokens, achieved, full, min(first, full), True, reconstruct, quantize))
        losses: dict[str, torch.Tensor] = {}
        for p in passes:
            terms = dict(p["vq"].losses, halt_active=p["halt_active"])
            if p["halt_stop"] is not None:
                terms["halt_stop"] = p["halt_stop"]
            for name, value in terms.items():
                losses[name] = losses.get(name, 0) + value
        stats = dict(passes[0]["vq"].stats)
        stats["active_fraction"] = (torch.sigmoid(passes[-1]["halt_logits"].detach().float())
                                    <= HALT_THRESHOLD).float().mean()
        recon = passes[0]["reconstruction"] if reconstruct != "none" else None
        active = torch.sigmoid(passes[0]["halt_logits"].detach().float()) <= HALT_THRESHOLD
        compact, positions, lengths = compact_active(passes[0]["ids"].detach(), active)
        tokens = Tokens(compact, lengths, (first,), {"image_size": self.image_size, "positions": positions})
        extras = {"passes": passes, "target_ids": target_ids, "target_codes": target_codes,
                  "achieved_error": achieved}
        return ForwardOutput(recon, tokens, losses, stats, extras)
