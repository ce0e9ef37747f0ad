"""Shared building blocks: attention, MLPs, transformer and AdaLN blocks, norms, conv blocks, positional embeddings.

Families compose these through plain keyword options instead of keeping private copies.
"""

from zoo.nn.adaln import DIT_CHUNK_ORDER, AdaLNHead, AdaLNModulation, AdaLNZeroBlock, modulate
from zoo.nn.attention import Attention, build_attention_mask, causal_mask, lengths_to_padding_mask
from zoo.nn.batching import per_item_on_cpu
from zoo.nn.conv import (
    AttnBlock,
    ConvNeXtBlock,
    DepthToSpaceUpsample,
    Downsample,
    ResnetBlock,
    Upsample,
    depth_to_space,
    space_to_depth,
)
from zoo.nn.mlp import GatedMlp, Mlp, QuickGELU, gated_hidden_dim, make_activation, make_mlp
from zoo.nn.norms import (
    AdaptiveGroupNorm,
    ChannelLayerNorm,
    EmbeddingAdaLayerNorm,
    Fp32LayerNorm,
    RMSNorm,
    make_norm,
)
from zoo.nn.posemb import (
    TimestepEmbedder,
    apply_rotary,
    rotary_1d,
    rotary_2d,
    sincos_1d,
    sincos_2d,
    timestep_embedding,
)
from zoo.nn.transformer import Block, CrossAttentionBlock, DropPath, LayerScale, Transformer

__all__ = [
    "DIT_CHUNK_ORDER",
    "AdaLNHead",
    "AdaLNModulation",
    "AdaLNZeroBlock",
    "AdaptiveGroupNorm",
    "Attention",
    "AttnBlock",
    "Block",
    "ChannelLayerNorm",
    "ConvNeXtBlock",
    "CrossAttentionBlock",
    "DepthToSpaceUpsample",
    "Downsample",
    "DropPath",
    "EmbeddingAdaLayerNorm",
    "Fp32LayerNorm",
    "GatedMlp",
    "LayerScale",
    "Mlp",
    "QuickGELU",
    "RMSNorm",
    "ResnetBlock",
    "TimestepEmbedder",
    "Transformer",
    "Upsample",
    "apply_rotary",
    "build_attention_mask",
    "causal_mask",
    "depth_to_space",
    "gated_hidden_dim",
    "lengths_to_padding_mask",
    "make_activation",
    "make_mlp",
    "make_norm",
    "modulate",
    "per_item_on_cpu",
    "rotary_1d",
    "rotary_2d",
    "sincos_1d",
    "sincos_2d",
    "space_to_depth",
    "timestep_embedding",
]
