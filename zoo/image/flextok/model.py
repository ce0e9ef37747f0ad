"""FlexTok (https://arxiv.org/abs/2502.13967): images -> 1..256 ordered 1D tokens -> images with a rectified flow.

A frozen diffusers `AutoencoderKL` maps the image to latents; a ViT with register tokens (causal over the
registers) turns the latents into register latents that FSQ quantises; a rectified-flow transformer conditioned on
any prefix of those tokens (the rest replaced by a learnt mask token, nested dropout) generates the latents back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from zoo.api import Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.image.flextok.decoder import FlexTokDecoder
from zoo.image.flextok.encoder import FlexTokEncoder
from zoo.image.flextok.layers import TrunkOptions
from zoo.image.flextok.sampling import Guidance, euler_sample
from zoo.quant import FSQ
from zoo.registry import register_family

# The official default VAE architecture (`flextok/vae_wrapper.py` VAE_BASE_CFG, an SDXL-like f8 AutoencoderKL).
DEFAULT_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
}
NESTED_DROPOUT_MODES = ("pow2", "uniform", "uniform_pow2")
TIME_SAMPLINGS = ("logit_normal", "uniform", "mode")


def _build_vae(config: dict[str, Any]) -> nn.Module:
    from diffusers import AutoencoderKL

    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    return AutoencoderKL(**kwargs)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@register_family("flextok")
class FlexTok(ImageTokenizer):
    """FlexTok tokenizer: `encode(x, num_tokens=k)` -> up to `num_registers` ordered tokens per image, `decode`
    samples the image back with a rectified-flow decoder (CFG or APG guidance).

    Args:
        image_size: input resolution (square).
        vae: diffusers `AutoencoderKL` config (constructor kwargs); None is FlexTok's default f8, 16-channel VAE.
        vae_scaling_factor: latents are `mode(posterior) * factor`; None takes `vae["scaling_factor"]` (else 1).
        vae_sample_posterior: sample the posterior instead of its mode when encoding (official default False for
            the released configs; then `encode` is deterministic).
        patch_size: latent patch size of encoder and decoder.
        num_registers: register tokens = maximum number of tokens per image.
        levels: FSQ levels (64,000 codes for [8, 8, 8, 5, 5, 5]).
        encoder_dim, encoder_depth, encoder_head_dim: encoder transformer.
        decoder_dim, decoder_depth, decoder_head_dim: decoder transformer.
        mlp_ratio, gated_mlp, qkv_bias, proj_bias, mlp_bias, qk_norm: transformer block options (both transformers).
        encoder_mask: `"causal_last"` (registers causal, the paper), `"causal"` or `"full"`.
        encoder_posemb, decoder_posemb: patch positional embedding, `"sincos"`, `"learnable_sum"`,
            `"learnable_prod"` or `"none"`; `posemb_size` is the grid the tables are built on (default the patch grid).
        register_posemb: `"learnable"` (added to the decoder registers before nested dropout) or `"none"`.
        null_cond: CFG null condition, `"learned"` vector or `"zero"`.
        adaln_groups: 2 modulates patch and register tokens separately (official `adaLN_expansion=2`), 1 shares.
        head_adaln: adaLN shift/scale in the output head.
        freq_dim, max_timestep: timestep features (`t` in [0, max_timestep]).
        nested_dropout: training distribution of the kept prefix k: `"pow2"` (k in {1, 2, 4, ..., R}), `"uniform"`
            (1..R) or `"uniform_pow2"` (uniform, rounded up to a power of two).
        cond_dropout: training probability of replacing all registers by the null condition (for CFG).
        time_sampling: training timesteps: `"logit_normal"` (sigmoid of N(time_mean, time_std), SD3), `"uniform"`,
            or `"mode"` (SD3 mode sampling with `time_mode_scale`, the official noise module).
        repa_layer, repa_dim, repa_hidden: REPA alignment of the decoder patch tokens after block `repa_layer` to a
            `repa_dim`-wide teacher (projector MLP with `repa_hidden` units); the features are returned by `forward`
            in `extras["decoder_features"]`.
    """

    unused_in_forward: ClassVar[tuple[str, ...]] = (
        "vae.*",  # frozen
        "decoder.mask_token",  # only reached when the sampled k < R
        "decoder.null_cond",  # only reached when the CFG dropout fires
        "decoder.repa_proj.*",  # reached through the REPA loss of the objective (extras)
    )

    def __init__(
        self,
        image_size: int = 256,
        vae: dict | None = None,
        vae_scaling_factor: float | None = None,
        vae_sample_posterior: bool = False,
        patch_size: int = 2,
        num_registers: int = 256,
        levels: list[int] | None = None,
        encoder_dim: int = 768,
        encoder_depth: int = 12,
        encoder_head_dim: int = 64,
        decoder_dim: int = 768,
        decoder_depth: int = 12,
        decoder_head_dim: int = 64,
        mlp_ratio: float = 4.0,
        gated_mlp: bool = True,
        qkv_bias: bool = False,
        proj_bias: bool = False,
        mlp_bias: bool = False,
        qk_norm: bool = True,
        encoder_mask: str = "causal_last",
        encoder_posemb: str = "sincos",
        decoder_posemb: str = "sincos",
        posemb_size: int | None = None,
        register_posemb: str = "learnable",
        null_cond: str = "learned",
        adaln_groups: int = 2,
        head_adaln: bool = True,
        freq_dim: int = 256,
        max_timestep: float = 1.0,
        nested_dropout: str = "pow2",
        cond_dropout: float = 0.1,
        time_sampling: str = "logit_normal",
        time_mean: float = 0.0,
        time_std: float = 1.0,
        time_mode_scale: float = 0.0,
        repa_layer: int | None = None,
        repa_dim: int | None = None,
        repa_hidden: int = 2048,
    ) -> None:
        super().__init__()
        levels = [8, 8, 8, 5, 5, 5] if levels is None else list(levels)
        vae = dict(DEFAULT_VAE if vae is None else vae)
        if nested_dropout not in NESTED_DROPOUT_MODES:
            raise ValueError(f"nested_dropout must be one of {NESTED_DROPOUT_MODES}, got {nested_dropout!r}")
        if nested_dropout == "pow2" and not _is_pow2(num_registers):
            raise ValueError(f"nested_dropout='pow2' needs a power-of-two num_registers, got {num_registers}")
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1), got {cond_dropout}")
        self.image_size = image_size
        self.vae = _build_vae(vae)
        self.vae.requires_grad_(False)
        self.vae.eval()
        factor = vae.get("scaling_factor") if vae_scaling_factor is None else vae_scaling_factor
        self.vae_scaling_factor = 1.0 if factor is None else float(factor)
        self.vae_sample_posterior = vae_sample_posterior
        self.latent_channels = int(vae.get("latent_channels", 4))
        down = 2 ** (len(vae.get("down_block_types", [None])) - 1)
        if image_size % (down * patch_size):
            raise ValueError(
                f"image_size ({image_size}) must be a multiple of VAE downsampling ({down}) x patch_size ({patch_size})"
            )
        self.latent_size = image_size // down
        grid = self.latent_size // patch_size
        self.num_registers = num_registers
        self.nested_dropout = nested_dropout
        self.cond_dropout = cond_dropout
        self.time_sampling, self.time_mean, self.time_std = time_sampling, time_mean, time_std
        self.time_mode_scale = time_mode_scale
        trunk = TrunkOptions(mlp_ratio, gated_mlp, qkv_bias, proj_bias, mlp_bias, qk_norm)
        self.encoder = FlexTokEncoder(
            self.latent_channels, patch_size, grid, encoder_dim, encoder_depth, encoder_head_dim, num_registers,
            len(levels), mask=encoder_mask, posemb=encoder_posemb, posemb_size=posemb_size, trunk=trunk,
        )
        self.quantizer = FSQ(levels)
        self.decoder = FlexTokDecoder(
            self.latent_channels, patch_size, grid, len(levels), decoder_dim, decoder_depth, decoder_head_dim,
            num_registers, posemb=decoder_posemb, register_posemb=register_posemb, null_cond=null_cond,
            adaln_groups=adaln_groups, head_adaln=head_adaln, freq_dim=freq_dim, max_timestep=max_timestep,
            repa_layer=repa_layer, repa_dim=repa_dim, repa_hidden=repa_hidden, posemb_size=posemb_size, trunk=trunk,
        )

    # -- contract ------------------------------------------------------------------------------------------------
    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer, "fsq")]

    def train(self, mode: bool = True) -> FlexTok:
        super().train(mode)
        self.vae.eval()  # frozen: never in training mode
        return self

    def _num_tokens(self, num_tokens: int | Sequence[int] | torch.Tensor | None, batch: int) -> list[int]:
        r = self.num_registers
        if num_tokens is None:
            return [r] * batch
        if isinstance(num_tokens, int):
            ks = [num_tokens] * batch
        else:
            ks = [int(k) for k in torch.as_tensor(num_tokens).flatten().tolist()]
            if len(ks) != batch:
                raise ValueError(f"num_tokens needs one value per image ({batch}), got {len(ks)}")
        if any(not 1 <= k <= r for k in ks):
            raise ValueError(f"num_tokens must lie in [1, {r}], got {ks}")
        return ks

    def vae_encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> scaled VAE latents `[B, C, h, w]`."""
        if images.device.type == "cpu":
            # oneDNN's convolutions (88 % of tokenize) are ~8 % faster on channels-last input; the weights stay as
            # they are (benchmarks/flextok_speed.py --official: ids equal to the official code)
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            dist = self.vae.encode(images).latent_dist
            if self.vae_sample_posterior:
                z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator, device=images.device)
            else:
                z = dist.mode()
        return (z * self.vae_scaling_factor).contiguous()

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (raw decoder output)."""
        return self.vae.decode(latents / self.vae_scaling_factor).sample

    def encode(
        self,
        x: torch.Tensor,
        num_tokens: int | Sequence[int] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tokens:
        """Images `[B, 3, S, S]` in [0, 1] -> `Tokens` with ids `[B, max(k)]` and `lengths` `[B]`.

        Args:
            num_tokens: tokens to keep per image, an int or one per image (1..num_registers); default all. The
                tokens are ordered coarse to fine, so a prefix is a valid shorter tokenization.
            generator: only used with `vae_sample_posterior=True`.
        """
        x = self.check_input(x)
        ks = self._num_tokens(num_tokens, x.shape[0])
        latents = self.vae_encode(x * 2 - 1, generator)
        z = self.encoder(latents, num_registers=max(ks))
        ids = self.quantizer.assign(z[:, : max(ks)])
        lengths = torch.tensor(ks, device=ids.device)
        ids = ids.masked_fill(torch.arange(ids.shape[1], device=ids.device)[None] >= lengths[:, None], 0)
        return Tokens(ids, lengths, (ids.shape[1],), {"image_size": self.image_size})

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """ids -> FSQ code vectors `[B, N, len(levels)]` (positions past `lengths` are the code of id 0)."""
        self.check_tokens(tokens)
        if tokens.ids.dim() != 2:
            raise ValueError(f"FlexTok tokens are [B, N], got ids of shape {tuple(tokens.ids.shape)}")
        ids = tokens.ids.masked_fill(~tokens.valid_mask(), 0)
        return self.quantizer.lookup(ids)

    def _codes(self, tokens: Tokens) -> tuple[torch.Tensor, list[int]]:
        """Pad ids to `num_registers` with id 0 (as the official `detokenize`) and look up the FSQ codes."""
        ids = tokens.ids
        if ids.dim() != 2:
            raise ValueError(f"FlexTok tokens are [B, N], got ids of shape {tuple(ids.shape)}")
        if ids.shape[1] > self.num_registers:
            raise ValueError(f"FlexTok decodes at most {self.num_registers} tokens per image, got {ids.shape[1]}")
        lengths = tokens.lengths if tokens.lengths is not None else torch.full((ids.shape[0],), ids.shape[1])
        ids = ids.masked_fill(~tokens.valid_mask(), 0)
        ids = F.pad(ids, (0, self.num_registers - ids.shape[1]))
        return self.quantizer.lookup(ids).to(self.decoder.from_latents.weight.dtype), lengths.tolist()

    def initial_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_1 `[B, C, h, w]`, drawn image by image from `generator` (the official order)."""
        shape = (1, self.latent_channels, self.latent_size, self.latent_size)
        device = self.decoder.from_latents.weight.device
        return torch.cat([torch.randn(shape, generator=generator, device=device) for _ in range(batch)])

    def velocity_fn(
        self, regs: torch.Tensor, keep_k: list[int], collapse: bool = True, batch_uncond: bool | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]]:
        """The `velocity(x, t, with_uncond)` callable of `euler_sample` for register tokens `regs`.

        Conditional and unconditional branches run as one padded batch unless their lengths differ so much that two
        passes cost less (`batch_uncond=None`, the default); True / False force one or two passes.
        """
        b = regs.shape[0]
        r = self.num_registers

        def length(k: int, drop: bool) -> int:
            if drop:
                return 1 if collapse else r
            return k + (k < r) if collapse else r

        cond_len = [length(k, False) for k in keep_k]
        uncond_len = length(0, True)
        one_pass = batch_uncond
        if one_pass is None:
            padded = 2 * b * max(max(cond_len), uncond_len)
            one_pass = padded <= 1.15 * (b * max(cond_len) + b * uncond_len)

        def velocity(x: torch.Tensor, t: torch.Tensor, with_uncond: bool):
            if not with_uncond:
                return self.decoder(x, t, regs, keep_k, [False] * b, collapse), None
            if one_pass:
                v = self.decoder(torch.cat([x, x]), torch.cat([t, t]), torch.cat([regs, regs]), keep_k + keep_k,
                                 [False] * b + [True] * b, collapse)
                return v[:b], v[b:]
            v_c = self.decoder(x, t, regs, keep_k, [False] * b, collapse)
            v_u = self.decoder(x, t, regs, keep_k, [True] * b, collapse)
            return v_c, v_u

        return velocity

    def decode(
        self,
        tokens: Tokens,
        steps: int = 20,
        guidance: Guidance = 7.5,
        apg: bool = True,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        collapse: bool = True,
        batch_uncond: bool | None = None,
        callback: Callable[[dict], None] | None = None,
        return_latents: bool = False,
    ) -> torch.Tensor:
        """Tokens -> images `[B, 3, S, S]` in the [0, 1] convention (raw decoder output, not clamped).

        Args:
            steps: Euler steps from t = 1 (noise) to t = 0.
            guidance: CFG scale or a function `t -> scale`; 1.0 disables guidance (one pass per step).
            apg: adaptive projected guidance (https://arxiv.org/abs/2410.02416) instead of plain CFG. The defaults
                (20 steps, 7.5, APG) are the official README's.
            generator: seeds the initial noise (drawn per image, in the official order).
            noise: the initial latent noise x_1 `[B, C, h, w]` itself (overrides `generator`).
            collapse: evaluate runs of identical mask/null register tokens once (exact, faster).
            batch_uncond: run the CFG branches in one batch (None: when it is cheaper).
            callback: called after each step with `t`, `x_t`, `v_cond`, `v_uncond` and `v`.
            return_latents: return the final VAE latents instead of images.
        """
        self.check_tokens(tokens)
        for flag, value in (("apg", apg), ("collapse", collapse), ("return_latents", return_latents)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        if batch_uncond is not None and not isinstance(batch_uncond, bool):
            raise TypeError(f"batch_uncond must be True, False or None, got {batch_uncond!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        codes, keep_k = self._codes(tokens)
        b = codes.shape[0]
        if noise is None:
            noise = self.initial_noise(b, generator)
        expected = (b, self.latent_channels, self.latent_size, self.latent_size)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
        with torch.no_grad():
            regs = self.decoder.register_tokens(codes)
            velocity = self.velocity_fn(regs, keep_k, collapse, batch_uncond)
            latents = euler_sample(velocity, noise.to(regs.dtype), steps, guidance, apg, callback)
            if return_latents:
                return latents
            return (self.vae_decode(latents) + 1) / 2

    # -- training ------------------------------------------------------------------------------------------------
    def sample_keep_k(self, batch: int, generator: torch.Generator | None = None) -> list[int]:
        """Nested-dropout prefix lengths for a training batch (https://arxiv.org/abs/1402.0915; FlexTok samples
        powers of two so that the rare long prefixes still get trained)."""
        r = self.num_registers
        if self.nested_dropout == "pow2":
            exps = torch.randint(0, int(math.log2(r)) + 1, (batch,), generator=generator)
            return [2 ** int(e) for e in exps]
        ks = torch.randint(1, r + 1, (batch,), generator=generator).tolist()
        if self.nested_dropout == "uniform_pow2":
            ks = [min(1 << (k - 1).bit_length(), r) for k in ks]
        return ks

    def sample_time(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training timesteps in (0, 1); t = 1 is noise."""
        if self.time_sampling == "logit_normal":
            # SD3 (https://arxiv.org/abs/2403.03206): more weight on the middle of the path
            n = torch.randn(batch, generator=generator) * self.time_std + self.time_mean
            return torch.sigmoid(n).to(device)
        u = torch.rand(batch, generator=generator)
        if self.time_sampling == "mode":
            u = 1 - u - self.time_mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
        return u.to(device)

    def forward(
        self,
        x: torch.Tensor,
        num_tokens: int | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> ForwardOutput:
        """Training step: rectified-flow loss `||v(x_t, t | tokens) - (noise - latents)||^2` with nested dropout of
        the tokens and null-condition dropout; `extras["decoder_features"]` holds the REPA projections.

        Args:
            num_tokens: fix the kept prefix instead of sampling it (int or one per image).
            generator: seeds k, t, the noise and the condition dropout (for reproducible steps).
        """
        x = self.check_input(x)
        b = x.shape[0]
        latents = self.vae_encode(x * 2 - 1, generator)
        z = self.encoder(latents)
        q = self.quantizer(z)
        keep_k = self.sample_keep_k(b, generator) if num_tokens is None else self._num_tokens(num_tokens, b)
        drop = (torch.rand(b, generator=generator) < self.cond_dropout).tolist() if self.training else [False] * b
        t = self.sample_time(b, latents.device, generator)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        tt = t.view(-1, 1, 1, 1).to(latents.dtype)
        x_t = tt * noise + (1 - tt) * latents
        regs = self.decoder.register_tokens(q.quantized)
        want = self.decoder.repa_proj is not None
        out = self.decoder(x_t, t, regs, keep_k, drop, collapse=True, return_features=want)
        v, features = out if want else (out, None)
        flow = F.mse_loss(v.float(), (noise - latents).float())
        losses = {"flow": flow, **q.losses}
        stats = {**q.stats, "keep_k": torch.tensor(keep_k, dtype=torch.float32).mean(), "t": t.mean().detach()}
        extras: dict[str, Any] = {"target": noise - latents, "velocity": v, "keep_k": torch.tensor(keep_k)}
        if features is not None:
            extras["decoder_features"] = features
        tokens = Tokens(q.ids.detach(), None, (q.ids.shape[1],), {"image_size": self.image_size})
        return ForwardOutput(reconstruction=None, tokens=tokens, losses=losses, stats=stats, extras=extras)
