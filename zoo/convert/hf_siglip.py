"""Hugging Face SigLIP vision tensors <-> the fused layout zoo's timm-style SigLIP uses (TokenFlow, DualToken).

HF keeps each layer's attention as separate `q_proj` / `k_proj` / `v_proj` and the attention-pooling head as one
packed `in_proj`; zoo's key tables expect one `qkv_proj` per layer and the head split into `q_proj` + `kv_proj`.
`fuse` runs before a family's key table, `unfuse` after its inverse; both only touch keys under `prefix`.
`keymap(official, ours)` is the vision tower's table from the fused names to timm's `VisionTransformer`.
"""

from __future__ import annotations

import re

import torch

from zoo.convert.keymap import KeyMap, Rule

__all__ = ["fuse", "keymap", "unfuse"]


def fuse(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """HF q / k / v projections -> one `qkv_proj` per layer; the head's packed `in_proj` -> `q_proj` + `kv_proj`.

    Args:
        state: official tensors (left unchanged; a new dict is returned).
        prefix: where the vision model's keys start, e.g. "siglip_model.vision_model.".
    """
    qkv = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)")
    out = dict(state)
    for key in list(state):
        m = qkv.fullmatch(key)
        if m is None:
            continue
        base = key[: -len(f"q_proj.{m.group(2)}")]
        parts = [base + f"{n}_proj.{m.group(2)}" for n in "qkv"]
        missing = [p for p in parts if p not in state]
        if missing:
            raise ValueError(f"the SigLIP layer {m.group(1)} lacks {missing}")
        out[base + f"qkv_proj.{m.group(2)}"] = torch.cat([out.pop(p) for p in parts])
    head = prefix + "head.attention."
    for p in ("weight", "bias"):
        packed = out.pop(head + f"in_proj_{p}", None)
        if packed is not None:
            width = packed.shape[0] // 3
            out[head + f"q_proj.{p}"], out[head + f"kv_proj.{p}"] = packed[:width], packed[width:]
    return out


def unfuse(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The inverse of `fuse`: `qkv_proj` -> q / k / v projections, the head's `q_proj` + `kv_proj` -> `in_proj`."""
    out = {}
    head = prefix + "head.attention."
    for key, value in state.items():
        if key.endswith((".self_attn.qkv_proj.weight", ".self_attn.qkv_proj.bias")):
            base, p = key.rsplit(".qkv_proj.", 1)
            for name, part in zip("qkv", value.chunk(3)):
                out[f"{base}.{name}_proj.{p}"] = part
        elif key.startswith(head + "kv_proj."):
            continue
        elif key.startswith(head + "q_proj."):
            p = key.rsplit(".", 1)[1]
            out[head + f"in_proj_{p}"] = torch.cat([value, state[head + f"kv_proj.{p}"]])
        else:
            out[key] = value
    return out


def _add_batch(t: torch.Tensor) -> torch.Tensor:
    return t[None]


def _drop_batch(t: torch.Tensor) -> torch.Tensor:
    return t[0]


def keymap(official: str, ours: str) -> KeyMap:
    """HF `SiglipVisionModel` names under `official` (after `fuse`) <-> timm `VisionTransformer` names under `ours`."""
    return KeyMap([
        Rule(official + "embeddings.patch_embedding.{p}", ours + "patch_embed.proj.{p}"),
        Rule(official + "embeddings.position_embedding.weight", ours + "pos_embed", _add_batch, _drop_batch),
        Rule(official + "embeddings.position_ids", None),  # an index buffer (persistent in older transformers)
        Rule(official + "encoder.layers.{i}.self_attn.qkv_proj.{p}", ours + "blocks.{i}.attn.qkv.{p}"),
        Rule(official + "encoder.layers.{i}.self_attn.out_proj.{p}", ours + "blocks.{i}.attn.proj.{p}"),
        Rule(official + "encoder.layers.{i}.layer_norm1.{p}", ours + "blocks.{i}.norm1.{p}"),
        Rule(official + "encoder.layers.{i}.layer_norm2.{p}", ours + "blocks.{i}.norm2.{p}"),
        Rule(official + "encoder.layers.{i}.mlp.{fc:fc1|fc2}.{p}", ours + "blocks.{i}.mlp.{fc}.{p}"),
        Rule(official + "post_layernorm.{p}", ours + "norm.{p}"),
        Rule(official + "head.probe", ours + "attn_pool.latent"),
        Rule(official + "head.attention.q_proj.{p}", ours + "attn_pool.q.{p}"),
        Rule(official + "head.attention.kv_proj.{p}", ours + "attn_pool.kv.{p}"),
        Rule(official + "head.attention.out_proj.{p}", ours + "attn_pool.proj.{p}"),
        Rule(official + "head.layernorm.{p}", ours + "attn_pool.norm.{p}"),
        Rule(official + "head.mlp.{fc:fc1|fc2}.{p}", ours + "attn_pool.mlp.{fc}.{p}"),
    ])
