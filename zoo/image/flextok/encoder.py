"""FlexTok encoder: a ViT over VAE-latent patches plus learnt register tokens that become the 1D tokens."""

from __future__ import annotations

import torch
from torch import nn

from zoo.image.flextok.layers import PatchPosEmbed, TrunkOptions, patchify, plain_norm
from zoo.nn.transformer import Block

ENCODER_MASKS = ("causal_last", "causal", "full")


def encoder_mask(num_patches: int, num_registers: int, mode: str, device: torch.device) -> torch.Tensor | None:
    """Bool `[L, L]` (True = may attend) over `[patches, registers]`.

    `"causal_last"` (prefix LM, the paper's causal register mask): patches see all patches, register i sees all
    patches and registers 0..i. `"causal"`: causal over the whole sequence. `"full"`: None (no mask).
    """
    if mode == "full":
        return None
    n = num_patches + num_registers
    idx = torch.arange(n, device=device)
    allowed = idx[None, :] <= idx[:, None]
    if mode == "causal_last":
        allowed = allowed | (idx[None, :] < num_patches)
    return allowed


class FlexTokEncoder(nn.Module):
    """VAE latents `[B, C, h, w]` -> pre-quantisation register latents `[B, R, code_dim]`.

    Sequence per image: `[patch tokens (row-major), registers]`; the register outputs go through a parameter-free
    LayerNorm and `to_latents` (Linear to the FSQ dim).
    """

    def __init__(
        self,
        in_channels: int,
        patch_size: int,
        grid: int,
        dim: int,
        depth: int,
        head_dim: int,
        num_registers: int,
        code_dim: int,
        trunk: TrunkOptions | None = None,
        mask: str = "causal_last",
        posemb: str = "sincos",
        posemb_size: int | None = None,
    ) -> None:
        super().__init__()
        if mask not in ENCODER_MASKS:
            raise ValueError(f"encoder mask must be one of {ENCODER_MASKS}, got {mask!r}")
        self.patch_size, self.grid, self.mask_mode = patch_size, grid, mask
        self.num_registers = num_registers
        self.patch_embed = nn.Linear(in_channels * patch_size**2, dim)
        self.pos_embed = PatchPosEmbed(posemb, dim, grid, posemb_size)
        self.registers = nn.Parameter(torch.randn(num_registers, dim) * 0.02)
        kw = (trunk or TrunkOptions()).block_kwargs(dim, head_dim)
        self.blocks = nn.ModuleList(Block(dim, **kw) for _ in range(depth))
        self.norm = plain_norm(dim)
        self.to_latents = nn.Linear(dim, code_dim)
        # zero init as the official LinearHead: FSQ inputs start unsaturated (tanh-bounded codes that saturate early
        # get no gradient and collapse onto a few codes)
        nn.init.zeros_(self.to_latents.weight)
        nn.init.zeros_(self.to_latents.bias)

    @property
    def causal(self) -> bool:
        """True when register i never depends on registers after it, so a prefix can be computed alone."""
        return self.mask_mode != "full"

    def forward(self, latents: torch.Tensor, num_registers: int | None = None) -> torch.Tensor:
        """`num_registers` < R computes only the first registers; with a causal mask they equal the prefix of the
        full computation (with `mask="full"` every register is always computed)."""
        n = self.num_registers if num_registers is None or not self.causal else num_registers
        x = self.patch_embed(patchify(latents, self.patch_size))
        pos = self.pos_embed()
        if pos is not None:
            x = x + pos
        p = x.shape[1]
        x = torch.cat([x, self.registers[:n].expand(x.shape[0], -1, -1)], dim=1)
        mask = encoder_mask(p, n, self.mask_mode, x.device)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        return self.to_latents(self.norm(x[:, p:]))
