"""DualToken's backbone: a SigLIP vision transformer built through timm, run in three pieces.

The official model is HF `SiglipModel` (SigLIP2 so400m: patch14-384 -> 27 x 27 tokens, patch16-256 -> 16 x 16; 27
layers, width 1152, 16 heads, MLP 4304, tanh GELU, LayerNorm eps 1e-6, no class token, attention-pooling "MAP"
head). Here it is timm's `VisionTransformer` of `vit_so400m_patch14_siglip_384` with the sizes as arguments
(`pretrained=False`: the weights come from a converted checkpoint or a local SigLIP file), which is the same
network: patch conv, learnt positions, pre-LN blocks, `norm` (HF `post_layernorm`) and `attn_pool` (HF `head`).

DualToken reads it in pieces: the blocks up to the semantic layer (`embed` + `blocks`), then, after the semantic
hidden state is replaced by the dequantised codes, the remaining blocks, the final norm and the pooling head
(`tail`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SiglipBackbone"]

TIMM_ARCH = "vit_so400m_patch14_siglip_384"


class SiglipBackbone(nn.Module):
    """timm SigLIP ViT: `[B, 3, S, S]` in SigLIP's [-1, 1] -> `[B, (S // patch)^2, width]` tokens, block by block.

    Args:
        image_size: input side (384 / 256); the grid is `image_size // patch_size` (384 // 14 = 27: the last 6
            pixels of each side fall outside the patch grid, as in the official model).
        patch_size, width, depth, heads, mlp_dim: the transformer (14 / 16, 1152, 27, 16, 4304 for so400m).
        pooled_dim: a Linear after the pooling head (timm's classifier slot) mapping the pooled embedding to a
            teacher of another width; None (the official model) keeps the head's `width`-wide output.
    """

    def __init__(self, image_size: int = 384, patch_size: int = 14, width: int = 1152, depth: int = 27,
                 heads: int = 16, mlp_dim: int = 4304, pooled_dim: int | None = None) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as err:
            raise ImportError("the DualToken backbone is built with timm: pip install timm") from err
        if width % heads:
            raise ValueError(f"backbone width {width} must be a multiple of its heads {heads}")
        if image_size < patch_size:
            raise ValueError(f"image_size {image_size} is smaller than one {patch_size} px patch")
        # timm sizes the MLP as int(width * mlp_ratio); the half keeps float rounding from landing on mlp_dim - 1
        ratio = (mlp_dim + 0.5) / width
        self.model = timm.create_model(
            TIMM_ARCH, pretrained=False, img_size=image_size, patch_size=patch_size, embed_dim=width, depth=depth,
            num_heads=heads, mlp_ratio=ratio, act_layer="gelu_tanh", num_classes=pooled_dim or 0,
        )
        if self.model.blocks[0].mlp.fc1.out_features != mlp_dim:
            raise ValueError(f"timm built an MLP of {self.model.blocks[0].mlp.fc1.out_features}, not {mlp_dim}")
        self.grid = image_size // patch_size
        self.width = width
        self.depth = depth

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.blocks

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images in SigLIP's [-1, 1] -> patch tokens with positions `[B, grid^2, width]` (HF `embeddings`)."""
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def tail(self, h: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks `start..depth-1`, the final norm and the pooling head: -> (normed tokens, pooled embedding)."""
        m = self.model
        for block in m.blocks[start:]:
            h = block(h)
        h = m.norm(h)
        return h, m.forward_head(h)
