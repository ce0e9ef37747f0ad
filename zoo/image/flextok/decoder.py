"""FlexTok decoder: a rectified-flow transformer that predicts the velocity of noised VAE latents, conditioned on
the (nested-dropout masked) register tokens and the timestep."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.image.flextok.layers import PatchPosEmbed, TrunkOptions, patchify, plain_norm, unpatchify
from zoo.nn.adaln import AdaLNHead, AdaLNZeroBlock
from zoo.nn.posemb import TimestepEmbedder

NULL_CONDS = ("learned", "zero")
REGISTER_POSEMBS = ("learnable", "none")


class FlexTokDecoder(nn.Module):
    """Velocity `v(x_t, t | registers)` for latents `[B, C, h, w]`.

    Per image the sequence is `[patch tokens of x_t, register tokens]` with full attention inside the image. Register
    tokens are `from_latents(codes) + register posemb`; positions >= keep_k are replaced by `mask_token` (nested
    dropout, no posemb) and, for the unconditional CFG branch, every register by `null_cond`.

    Identical tokens stay identical through the whole network (no positional signal, same modulation, full
    attention), so each run of mask or null tokens is evaluated once and counted `m` times in the softmax by adding
    `log(m)` to its attention logit. This is exact and skips most of the register work for short token sequences
    and for the unconditional branch.
    """

    def __init__(
        self,
        in_channels: int,
        patch_size: int,
        grid: int,
        code_dim: int,
        dim: int,
        depth: int,
        head_dim: int,
        num_registers: int,
        trunk: TrunkOptions | None = None,
        posemb: str = "sincos",
        posemb_size: int | None = None,
        register_posemb: str = "learnable",
        null_cond: str = "learned",
        adaln_groups: int = 2,
        head_adaln: bool = True,
        freq_dim: int = 256,
        max_timestep: float = 1.0,
        repa_layer: int | None = None,
        repa_dim: int | None = None,
        repa_hidden: int = 2048,
    ) -> None:
        super().__init__()
        if register_posemb not in REGISTER_POSEMBS:
            raise ValueError(f"register_posemb must be one of {REGISTER_POSEMBS}, got {register_posemb!r}")
        if null_cond not in NULL_CONDS:
            raise ValueError(f"null_cond must be one of {NULL_CONDS}, got {null_cond!r}")
        if adaln_groups not in (1, 2):
            raise ValueError(f"adaln_groups must be 1 (shared) or 2 (patches / registers), got {adaln_groups}")
        if repa_layer is not None and not 1 <= repa_layer <= depth:
            raise ValueError(f"repa_layer must lie in [1, depth={depth}], got {repa_layer}")
        self.in_channels, self.patch_size, self.grid = in_channels, patch_size, grid
        self.num_registers = num_registers
        self.repa_layer = repa_layer

        self.from_latents = nn.Linear(code_dim, dim)
        self.register_pos_embed = (
            nn.Parameter(torch.randn(num_registers, dim) * 0.02) if register_posemb == "learnable" else None
        )
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        if null_cond == "learned":
            self.null_cond = nn.Parameter(torch.randn(dim) * 0.02)
        else:
            self.register_buffer("null_cond", torch.zeros(dim), persistent=False)
        self.patch_embed = nn.Linear(in_channels * patch_size**2, dim)
        self.pos_embed = PatchPosEmbed(posemb, dim, grid, posemb_size)
        self.time_embed = TimestepEmbedder(dim, freq_dim=freq_dim, max_period=256.0, freq_scale=1000.0 / max_timestep)
        kw = (trunk or TrunkOptions()).block_kwargs(dim, head_dim, adaln_groups)
        self.blocks = nn.ModuleList(AdaLNZeroBlock(dim, **kw) for _ in range(depth))
        out_dim = in_channels * patch_size**2
        if head_adaln:
            self.head = AdaLNHead(dim, out_dim, norm="fp32_layernorm", norm_eps=1e-5)
        else:
            self.head = nn.Sequential(plain_norm(dim), nn.Linear(dim, out_dim))
            nn.init.zeros_(self.head[1].weight)
            nn.init.zeros_(self.head[1].bias)
        if repa_layer is not None:
            if not repa_dim:
                raise ValueError("repa_dim (the teacher feature width) is required with repa_layer")
            # REPA projector (https://arxiv.org/abs/2410.06940): 3-layer SiLU MLP on the patch tokens
            self.repa_proj = nn.Sequential(
                nn.Linear(dim, repa_hidden), nn.SiLU(), nn.Linear(repa_hidden, repa_hidden), nn.SiLU(),
                nn.Linear(repa_hidden, repa_dim),
            )
        else:
            self.repa_proj = None

    def register_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """FSQ codes `[B, R, code_dim]` -> register tokens `[B, R, dim]` before masking (computed once per decode)."""
        regs = self.from_latents(codes)
        if self.register_pos_embed is not None:
            regs = regs + self.register_pos_embed[: regs.shape[1]]
        return regs

    def _rows(
        self, regs: torch.Tensor, keep_k: list[int], uncond: list[bool], collapse: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Register part of each sequence row and the attention-logit offset of its keys (`None` when all are 0).

        Returns `[rows, Lr, D]` tokens (zero padded) and a `[rows, Lr]` float offset: 0 for a single token,
        `log(m)` for a token standing for m identical ones, `-inf` for padding.
        """
        r = self.num_registers
        tokens, offsets = [], []
        for b, (k, drop) in enumerate(zip(keep_k, uncond)):
            fill, kept = (self.null_cond, 0) if drop else (self.mask_token, k)
            n_fill = r - kept
            parts = [regs[b, :kept]] if kept else []
            offset = [0.0] * kept
            if n_fill and collapse:
                parts.append(fill[None])
                offset.append(math.log(n_fill))
            elif n_fill:
                parts.append(fill[None].expand(n_fill, -1))
                offset += [0.0] * n_fill
            tokens.append(torch.cat(parts, dim=0))
            offsets.append(offset)
        width = max(len(o) for o in offsets)
        same = all(len(o) == width for o in offsets) and not any(v for o in offsets for v in o)
        out = torch.stack([F.pad(t, (0, 0, 0, width - t.shape[0])) for t in tokens])
        if same:
            return out, None
        bias = torch.full((len(offsets), width), float("-inf"))
        for i, o in enumerate(offsets):
            bias[i, : len(o)] = torch.tensor(o)
        return out, bias.to(device=regs.device, dtype=regs.dtype)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        regs: torch.Tensor,
        keep_k: list[int],
        uncond: list[bool],
        collapse: bool = True,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Velocity `[B, C, h, w]` of `x_t` at times `t` `[B]`.

        Args:
            regs: `register_tokens(codes)` `[B, R, D]`.
            keep_k: tokens kept per image (the rest become the mask token).
            uncond: per image, replace every register by the null condition (CFG's unconditional branch).
            collapse: evaluate runs of identical mask/null tokens once (exact; see the class docstring).
            return_features: also return the REPA projection of the patch tokens after block `repa_layer`.
        """
        patches = self.patch_embed(patchify(x_t, self.patch_size))
        pos = self.pos_embed()
        if pos is not None:
            patches = patches + pos
        p = patches.shape[1]
        reg_rows, offset = self._rows(regs, keep_k, uncond, collapse)
        x = torch.cat([patches, reg_rows], dim=1)
        mask = None
        if offset is not None:
            key_bias = torch.cat([offset.new_zeros(offset.shape[0], p), offset], dim=1)
            mask = key_bias[:, None, None, :].expand(-1, 1, x.shape[1], -1)
        temb = self.time_embed(t)
        groups = (torch.arange(x.shape[1], device=x.device) >= p).long()
        features = None
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, temb, group_ids=groups, attn_mask=mask)
            if return_features and i == self.repa_layer:
                features = self.repa_proj(x[:, :p])
        out = self.head(x[:, :p], temb) if isinstance(self.head, AdaLNHead) else self.head(x[:, :p])
        v = unpatchify(out, self.patch_size, self.grid, self.in_channels)
        if return_features:
            if features is None:
                raise ValueError("return_features needs a decoder built with repa_layer")
            return v, features
        return v
