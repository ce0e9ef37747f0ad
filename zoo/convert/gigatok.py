"""Official GigaTok checkpoints (SilentView/GigaTok, `VQ_*256*.pt` + `configs/vq/*.yaml`) -> `zoo` GigaTok.

The official loader builds `VQVitModelPlus` (1D) or `VQVitModel2DPlus` (2D) from `model.init_args` of the YAML
and loads `ckpt["ema"]`, else `["model"]`, else `["state_dict"]` with `strict=False` (missing keys raise,
unexpected ones are ignored). Here:

* the container is read with `torch.load(weights_only=True)`; training checkpoints also hold an
  `argparse.Namespace`, which is the one extra class allowed;
* every config option is checked: options that no release uses and this implementation does not reproduce are
  refused by name;
* sizes the YAML cannot express (the CNN width `ch`, `num_res_blocks`, a transformer size name outside the
  official table, the image size) come from the tensor shapes, or from a `fixture_overrides:` block when present.
  Head counts cannot be read from shapes: they come from the official size table, the override block, or
  `width // 64` (every official size uses 64-wide heads);
* every checkpoint tensor must map to a parameter and every parameter must be filled. The only tensors dropped are
  the training-time code-usage FIFO (`quantize.codebook_used`) and the semantic-distillation projector
  (`distill_mlp`) when the config does not use it, as the official loader does.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from zoo.registry import register_converter

__all__ = ["convert_gigatok", "official_kwargs", "map_state_dict", "read_checkpoint"]

# official transformer sizes (blocks.py): width, layers, heads
VIT_SIZES = {
    "tiny": (256, 4, 4),
    "small": (512, 6, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "xl": (1280, 36, 20),
    "xxl": (1536, 48, 24),
    "xxxl": (2560, 48, 40),
}
# `load_model_from_config` fills `out_inner_dim` from the teacher when the config has none
TEACHER_DIMS = {"dinov2-vit-l": 1024, "dinov2-vit-b": 768, "dinov2-vit-s": 384, "siglip-sovit-400m": 1152,
                "clip_dfn-vit-l/14": 1024}

# options of VQVitModelPlusArgs / VQVitModel2DPlusArgs that must keep these values (none of the releases changes
# them); the value after `|` is also accepted
_FIXED_OPTIONS = {
    "use_lfq": False, "bernoulli_sample": False, "eval_deterministic": False, "simvq": False,
    "codebook_transform": None, "freeze_codebook": False, "use_rope": False, "use_qk_norm": False,
    "use_flash_attn": False, "learnable_1d_query_init": False, "rope_1d": False, "last_level_2d_query_init": False,
    "multi_level_2d_query_init": False, "learnable_2d_query_init": False, "res_up_down_sample": False,
    "downsample_match_channel": False, "upsample_match_channel": False, "res_codebook_updown_sample": False,
    "downsample_improve": False, "use_attn": False, "rope_2d": False, "stochastic": False,
    "encoder_2d_distill": False, "with_prior_model": False, "codebook_l2_norm": True,
}
# options that only matter for training (weights of losses the objective owns) or logging
_TRAINING_OPTIONS = {"codebook_show_usage", "commit_loss_beta", "fea_rec_loss_type", "fea_rec_loss_weight",
                     "stochastic_temperature", "prior_model_config", "model_size", "encoder_size", "decoder_size"}
_MODEL_OPTIONS = {"codebook_size", "codebook_embed_dim", "entropy_loss_ratio", "encoder_ch_mult", "decoder_ch_mult",
                  "num_latent_tokens", "z_channels", "dropout_p", "multi_level_query_init", "adaptive_gn", "d2s_up",
                  "rot", "distill_depth", "out_inner_dim", "transformer_layer_type"}
_MODEL_CLASSES = {"VQVitModelPlus": "1d", "VQVitModel2DPlus": "2d"}


# -- reading --------------------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint: `ema`, else `model`, else `state_dict`, else the file itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no GigaTok checkpoint at {path}; download the official VQ_*.pt (README of SilentView/GigaTok) and "
            "pass its local path"
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unpickling refusal the same way
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: {err}. zoo never "
            "executes pickled code; re-save the state dict as plain tensors."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a dict (checkpoint or state dict)")
    for key in ("ema", "model", "state_dict"):
        if key in data and isinstance(data[key], dict):
            data = data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state or len(state) != len(data):
        others = sorted(k for k, v in data.items() if not isinstance(v, torch.Tensor))[:8]
        raise ValueError(
            f"{path} is not a GigaTok state dict: expected tensors under 'ema', 'model' or 'state_dict', found "
            f"non-tensor entries {others}"
        )
    return state


def _read_config(config: str | Path | dict | None) -> dict | None:
    if config is None or isinstance(config, dict):
        return config
    import yaml

    path = Path(config)
    if not path.exists():
        raise FileNotFoundError(f"no GigaTok config at {path}; pass the official configs/vq/*.yaml used for training")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(f"{path} is not an official GigaTok config (no top-level 'model' section)")
    return data


# -- shapes ---------------------------------------------------------------------------------------------------------
def _indices(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _vit_prefixes(layout: str) -> tuple[str, str]:
    return ("s2to1encoder.", "s1to2decoder.") if layout == "1d" else ("s2dencoder.", "s2ddecoder.")


def _layout_from_keys(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("s2to1encoder.") for k in state):
        return "1d"
    if any(k.startswith("s2dencoder.") for k in state):
        return "2d"
    raise ValueError("the checkpoint has neither s2to1encoder.* (1D GigaTok) nor s2dencoder.* (2D GigaTok) tensors")


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key}, which every GigaTok checkpoint has; is it a GigaTok file?")
    return tuple(state[key].shape)


def _vit_size(
    state: dict[str, torch.Tensor], prefix: str, name: str | None, overrides: dict, what: str
) -> tuple[int, int, int]:
    width = _shape(state, prefix + "ln_post.weight")[0]
    depth = len(_indices(state, prefix + "transformer."))
    if name in VIT_SIZES:
        size = VIT_SIZES[name]
        if size[:2] != (width, depth):
            raise ValueError(
                f"the config names the {what} size {name!r} ({size[0]} wide, {size[1]} layers) but the checkpoint "
                f"has {width} wide, {depth} layers"
            )
        return size
    custom = (overrides.get("vit_sizes") or {}).get(name) if name is not None else None
    if custom:
        if (int(custom["width"]), int(custom["num_layers"])) != (width, depth):
            raise ValueError(f"fixture_overrides.vit_sizes.{name} does not match the checkpoint ({width}, {depth})")
        return width, depth, int(custom["num_heads"])
    for official in VIT_SIZES.values():
        if official[:2] == (width, depth) and name is None:
            return official
    heads = max(width // 64, 1)
    warnings.warn(
        f"GigaTok {what} size {name!r} is not an official size: read width {width} and {depth} layers from the "
        f"checkpoint and assumed {heads} heads (64 wide, as every official size)",
        stacklevel=3,
    )
    return width, depth, heads


def official_kwargs(state: dict[str, torch.Tensor], config: dict | None = None) -> tuple[dict[str, Any], str]:
    """`GigaTok` constructor kwargs for an official state dict (and config, if given); also returns the layout."""
    config = config or {}
    model_cfg = config.get("model") or {}
    args = dict(model_cfg.get("init_args") or {})
    overrides = dict(config.get("fixture_overrides") or {})
    layout = _layout_from_keys(state)
    if model_cfg.get("model_cls") is not None:
        cls = model_cfg["model_cls"]
        if cls not in _MODEL_CLASSES:
            raise ValueError(f"model_cls {cls!r} is not a GigaTok VQ model; expected one of {sorted(_MODEL_CLASSES)}")
        if _MODEL_CLASSES[cls] != layout:
            raise ValueError(f"the config is {cls} ({_MODEL_CLASSES[cls]}) but the checkpoint is a {layout} model")

    unknown = sorted(set(args) - set(_FIXED_OPTIONS) - _TRAINING_OPTIONS - _MODEL_OPTIONS)
    if unknown:
        raise ValueError(f"unknown GigaTok config options {unknown}; this converter knows the official Args fields")
    changed = sorted(k for k, v in _FIXED_OPTIONS.items() if k in args and args[k] != v)
    if changed:
        raise ValueError(
            "this GigaTok implementation does not reproduce "
            + ", ".join(f"{k}={args[k]!r} (supported: {_FIXED_OPTIONS[k]!r})" for k in changed)
            + "; no released checkpoint uses them"
        )
    if layout == "2d" and args.get("transformer_layer_type", "TransformerLayer") != "TransformerLayer":
        raise ValueError(
            f"2D GigaTok with transformer_layer_type={args['transformer_layer_type']!r} is not supported; the released "
            "2D tokenizers use 'TransformerLayer'"
        )

    enc_prefix, dec_prefix = _vit_prefixes(layout)
    z_channels = _shape(state, "encoder.conv_out.weight")[0]
    cnn_channels = _shape(state, "encoder.conv_in.weight")[0]
    num_res_blocks = len(_indices(state, "encoder.conv_blocks.0.res."))
    levels = len(_indices(state, "encoder.conv_blocks."))
    enc_mult = [_shape(state, f"encoder.conv_blocks.{i}.res.0.conv1.weight")[0] // cnn_channels for i in range(levels)]
    dec_mult = [
        _shape(state, f"decoder.conv_blocks.{levels - 1 - i}.res.0.conv1.weight")[0] // cnn_channels
        for i in range(levels)
    ]
    codebook_size, codebook_dim = _shape(state, "quantize.embedding.weight")
    grid_tokens = _shape(state, enc_prefix + "positional_embedding")[0]
    grid = round(grid_tokens**0.5)
    image_size = int(overrides.get("image_size", grid * 2 ** (levels - 1)))

    checks = {
        "encoder_ch_mult": enc_mult, "decoder_ch_mult": dec_mult, "z_channels": z_channels,
        "codebook_size": codebook_size, "codebook_embed_dim": codebook_dim,
    }
    for key, value in checks.items():
        given = args.get(key, value)
        if (list(given) if isinstance(value, list) else given) != value:
            raise ValueError(f"config {key}={given} does not match the checkpoint ({value})")
    for key, value in (("cnn_ch", cnn_channels), ("cnn_num_res_blocks", num_res_blocks)):
        if key in overrides and int(overrides[key]) != value:
            raise ValueError(f"fixture_overrides.{key}={overrides[key]} does not match the checkpoint ({value})")
    dec_blocks = len(_indices(state, "decoder.conv_blocks.0.res."))
    if dec_blocks != num_res_blocks + 1:
        raise ValueError(f"decoder levels have {dec_blocks} res-blocks, expected encoder's {num_res_blocks} + 1")

    size = args.get("model_size", "small" if args else None)  # VQVitModelPlusArgs default: "small"
    enc_name = args.get("encoder_size") or size
    dec_name = args.get("decoder_size") or size
    enc_w, enc_d, enc_h = _vit_size(state, enc_prefix, enc_name, overrides, "encoder")
    dec_w, dec_d, dec_h = _vit_size(state, dec_prefix, dec_name, overrides, "decoder")

    semantic_depth, semantic_dim = _semantic(state, dec_prefix, args, config, dec_d)
    kwargs: dict[str, Any] = dict(
        image_size=image_size,
        token_layout=layout,
        num_latent_tokens=(
            _shape(state, enc_prefix + "latent_token_positional_embedding")[0] if layout == "1d" else grid_tokens
        ),
        codebook_size=codebook_size,
        codebook_dim=codebook_dim,
        z_channels=z_channels,
        cnn_channels=cnn_channels,
        encoder_ch_mult=enc_mult,
        decoder_ch_mult=dec_mult,
        num_res_blocks=num_res_blocks,
        encoder_width=enc_w, encoder_depth=enc_d, encoder_heads=enc_h,
        decoder_width=dec_w, decoder_depth=dec_d, decoder_heads=dec_h,
        multi_level_query_init=bool(args.get("multi_level_query_init", True)) if layout == "1d" else True,
        adaptive_norm="decoder.adaptive.0.gamma.weight" in state,
        depth_to_space="decoder.conv_blocks.0.upsample.conv1.weight" in state,
        rotation_trick=bool(args.get("rot", True)),
        entropy_loss=float(args.get("entropy_loss_ratio", 0.0)) > 0,
        semantic_depth=semantic_depth,
        semantic_dim=semantic_dim,
        dropout=float(args.get("dropout_p", 0.0)),
    )
    if "adaptive_gn" in args and bool(args["adaptive_gn"]) != kwargs["adaptive_norm"]:
        raise ValueError(f"config adaptive_gn={args['adaptive_gn']} does not match the checkpoint")
    if "d2s_up" in args and bool(args["d2s_up"]) != kwargs["depth_to_space"]:
        raise ValueError(f"config d2s_up={args['d2s_up']} does not match the checkpoint")
    return kwargs, layout


def _semantic(
    state: dict[str, torch.Tensor], dec_prefix: str, args: dict, config: dict, decoder_depth: int
) -> tuple[int | None, int | None]:
    """(semantic_depth, semantic_dim): the distillation head is kept when the config uses it and the file has it.
    Without a config the releases' depth 3 is assumed (capped at the decoder depth)."""
    head_key = dec_prefix + "distill_mlp.4.weight"
    depth = args.get("distill_depth", min(3, decoder_depth) if not config else None)
    if depth is None:
        return None, None
    if head_key not in state:
        warnings.warn(
            "the checkpoint has no semantic-distillation head (distill_mlp); building GigaTok without one "
            "(inference is unaffected; fine-tuning with the semantic loss starts a new head)",
            stacklevel=3,
        )
        return int(depth), None
    dim = state[head_key].shape[0]
    configured = args.get("out_inner_dim")
    trainer = config.get("trainer") or {}
    if configured is None and trainer.get("distill_loss"):
        configured = TEACHER_DIMS.get(trainer.get("distill_model", "dinov2-vit-b"))
    if configured is not None and int(configured) != dim:
        raise ValueError(f"config out_inner_dim={configured} does not match the checkpoint's distill_mlp ({dim})")
    return int(depth), int(dim)


# -- key mapping ----------------------------------------------------------------------------------------------------
_BLOCK_RENAMES = (
    ("self_attn.in_proj_weight", "attn.qkv.weight"),
    ("self_attn.in_proj_bias", "attn.qkv.bias"),
    ("self_attn.out_proj.", "attn.proj."),
    ("multihead_attn.in_proj_weight", "cross_attn.qkv.weight"),
    ("multihead_attn.in_proj_bias", "cross_attn.qkv.bias"),
    ("multihead_attn.out_proj.", "cross_attn.proj."),
    ("linear1.", "mlp.fc1."),
    ("linear2.", "mlp.fc2."),
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
    ("norm3.", "norm3."),
)
_VIT_RENAMES = {
    "ln_pre.": "norm_in.",
    "encoder_embed.": "embed.",
    "decoder_embed.": "embed.",
    "global_proj.": "query_proj.",
    "ln_post.": "norm_out.",
    "conv_out.": None,  # encoder: 1x1 conv -> proj_out Linear; decoder: conv_out (3x3) kept
    "distill_mlp.0.": "semantic_head.fc1.",
    "distill_mlp.2.": "semantic_head.fc2.",
    "distill_mlp.4.": "semantic_head.fc3.",
}


def _map_cnn(key: str) -> str | None:
    m = re.fullmatch(r"(encoder|decoder)\.conv_blocks\.(\d+)\.res\.(\d+)\.(.+)", key)
    if m:
        return f"{m[1]}.stages.{m[2]}.blocks.{m[3]}.{m[4]}"
    m = re.fullmatch(r"(encoder)\.conv_blocks\.(\d+)\.downsample\.(conv\.(?:weight|bias))", key)
    if m:
        return f"{m[1]}.stages.{m[2]}.downsample.{m[3]}"
    m = re.fullmatch(r"decoder\.conv_blocks\.(\d+)\.upsample\.(conv1?\.(?:weight|bias))", key)
    if m:
        return f"decoder.stages.{m[1]}.upsample.{m[2]}"
    m = re.fullmatch(r"decoder\.adaptive\.(\d+)\.((?:gamma|beta)\.(?:weight|bias))", key)
    if m:
        return f"decoder.stages.{m[1]}.norm.{m[2]}"
    if re.fullmatch(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(weight|bias)", key):
        return key
    if re.fullmatch(r"(encoder|decoder)\.mid\.\d+\.(norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias)", key):
        return key
    return None


def _map_vit(rest: str, ours: str, is_encoder: bool) -> str | None:
    m = re.fullmatch(r"transformer\.(\d+)\.(.+)", rest)
    if m:
        for old, new in _BLOCK_RENAMES:
            if m[2].startswith(old):
                return f"{ours}blocks.{m[1]}.{new}{m[2][len(old):]}"
        return None
    if rest == "positional_embedding":
        return ours + "pos_embed"
    if rest == "latent_token_positional_embedding":
        return ours + ("query_pos_embed" if is_encoder else "latent_pos_embed")
    for old, new in _VIT_RENAMES.items():
        if rest.startswith(old):
            if new is None:
                new = "proj_out." if is_encoder else "conv_out."
            return ours + new + rest[len(old):]
    return None


def map_state_dict(
    state: dict[str, torch.Tensor], layout: str, keep_semantic_head: bool
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Official tensors -> ours. Returns (mapped state, dropped keys, unknown keys)."""
    enc_prefix, dec_prefix = _vit_prefixes(layout)
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        new: str | None = None
        if key == "quantize.codebook_used":
            dropped.append(key)
            continue
        if ".distill_mlp." in key or key.startswith("distill_mlp."):
            if not (keep_semantic_head and key.startswith(dec_prefix)):
                dropped.append(key)
                continue
        if key.startswith(("encoder.", "decoder.")):
            new = _map_cnn(key)
        elif key.startswith(enc_prefix):
            new = _map_vit(key[len(enc_prefix):], "encoder_vit.", True)
        elif key.startswith(dec_prefix):
            new = _map_vit(key[len(dec_prefix):], "decoder_vit.", False)
        elif key in ("quant_conv.weight", "quant_conv.bias"):
            new = key.replace("quant_conv", "quant_proj")
        elif key in ("post_quant_conv.weight", "post_quant_conv.bias"):
            new = key.replace("post_quant_conv", "post_quant_proj")
        elif key == "quantize.embedding.weight":
            new = "quantizer.embed"
        if new is None:
            unknown.append(key)
            continue
        if new.endswith(("pos_embed", "query_pos_embed", "latent_pos_embed")):
            value = value.permute(1, 0, 2)  # (L, 1, W) sequence-first -> (1, L, W)
        elif new in ("quant_proj.weight", "post_quant_proj.weight", "encoder_vit.proj_out.weight"):
            value = value.flatten(1)  # 1x1 conv -> Linear
        mapped[new] = value.contiguous()
    return mapped, dropped, unknown


@register_converter("gigatok")
def convert_gigatok(checkpoint: str | Path | dict, config: str | Path | dict | None = None):
    """Build our `GigaTok` from an official checkpoint (`.pt`, or an already loaded state dict) and its YAML.

    Without `config` everything is read from the tensor shapes, with the settings every release shares
    (multi-level query init, rotation trick, semantic features after decoder block 3, no entropy loss).
    """
    from zoo.image.gigatok import GigaTok

    state = dict(checkpoint) if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    cfg = _read_config(config)
    kwargs, layout = official_kwargs(state, cfg)
    mapped, dropped, unknown = map_state_dict(state, layout, keep_semantic_head=kwargs["semantic_dim"] is not None)
    if unknown:
        raise ValueError(
            f"the GigaTok checkpoint has {len(unknown)} tensors this converter does not know: {unknown[:12]}"
            f"{' ...' if len(unknown) > 12 else ''}. Is it a GigaTok VQ checkpoint with an option this implementation "
            "does not support?"
        )
    ignored = [k for k in dropped if k != "quantize.codebook_used"]
    if ignored:
        warnings.warn(f"ignoring the unused semantic-distillation projector {ignored[:3]}...", stacklevel=2)
    with torch.device("meta"):
        model = GigaTok(**kwargs)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    extra = sorted(set(mapped) - set(own))
    if missing or extra:
        raise ValueError(f"GigaTok conversion mismatch: missing {missing[:10]}, unexpected {extra[:10]}")
    for key, value in mapped.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{key}: the model expects {tuple(own[key].shape)}, the checkpoint has {tuple(value.shape)}"
            )
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True, assign=True)
    return model.eval()
