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

from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule, check_complete, flatten_1x1, unflatten_1x1
from zoo.registry import register_converter

__all__ = ["GigaTokConverter", "infer_kwargs", "keymap", "read_checkpoint"]

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


class _Shapes:
    """What the handlers of `_INFER` read: the state, the official config's init_args, the override block and the
    layout with its ViT prefixes, plus the sizes several kwargs share (computed once)."""

    def __init__(self, state: dict[str, torch.Tensor], config: dict | None) -> None:
        self.state = state
        self.config = config or {}
        model_cfg = self.config.get("model") or {}
        self.args = dict(model_cfg.get("init_args") or {})
        self.overrides = dict(self.config.get("fixture_overrides") or {})
        self.layout = _layout_from_keys(state)
        self.enc_prefix, self.dec_prefix = _vit_prefixes(self.layout)
        self.cnn_channels = _shape(state, "encoder.conv_in.weight")[0]
        self.levels = len(_indices(state, "encoder.conv_blocks."))
        self.grid_tokens = _shape(state, self.enc_prefix + "positional_embedding")[0]
        size = self.args.get("model_size", "small" if self.args else None)  # VQVitModelPlusArgs default: "small"
        self.encoder = _vit_size(state, self.enc_prefix, self.args.get("encoder_size") or size, self.overrides,
                                 "encoder")
        self.decoder = _vit_size(state, self.dec_prefix, self.args.get("decoder_size") or size, self.overrides,
                                 "decoder")
        self.semantic = _semantic(state, self.dec_prefix, self.args, self.config, self.decoder[1])

    def mult(self, side: str) -> list[int]:
        levels = range(self.levels) if side == "encoder" else range(self.levels - 1, -1, -1)
        return [_shape(self.state, f"{side}.conv_blocks.{i}.res.0.conv1.weight")[0] // self.cnn_channels
                for i in levels]


def _image_size(c: _Shapes) -> int:
    return int(c.overrides.get("image_size", round(c.grid_tokens**0.5) * 2 ** (c.levels - 1)))


def _num_latent_tokens(c: _Shapes) -> int:
    if c.layout == "2d":
        return c.grid_tokens
    return _shape(c.state, c.enc_prefix + "latent_token_positional_embedding")[0]


# constructor kwarg -> one small handler reading it off the shapes / the official config
_INFER: dict[str, Any] = {
    "image_size": _image_size,
    "token_layout": lambda c: c.layout,
    "num_latent_tokens": _num_latent_tokens,
    "codebook_size": lambda c: _shape(c.state, "quantize.embedding.weight")[0],
    "codebook_dim": lambda c: _shape(c.state, "quantize.embedding.weight")[1],
    "z_channels": lambda c: _shape(c.state, "encoder.conv_out.weight")[0],
    "cnn_channels": lambda c: c.cnn_channels,
    "encoder_ch_mult": lambda c: c.mult("encoder"),
    "decoder_ch_mult": lambda c: c.mult("decoder"),
    "num_res_blocks": lambda c: len(_indices(c.state, "encoder.conv_blocks.0.res.")),
    "encoder_width": lambda c: c.encoder[0],
    "encoder_depth": lambda c: c.encoder[1],
    "encoder_heads": lambda c: c.encoder[2],
    "decoder_width": lambda c: c.decoder[0],
    "decoder_depth": lambda c: c.decoder[1],
    "decoder_heads": lambda c: c.decoder[2],
    "multi_level_query_init": lambda c: bool(c.args.get("multi_level_query_init", True)) if c.layout == "1d" else True,
    "adaptive_norm": lambda c: "decoder.adaptive.0.gamma.weight" in c.state,
    "depth_to_space": lambda c: "decoder.conv_blocks.0.upsample.conv1.weight" in c.state,
    "rotation_trick": lambda c: bool(c.args.get("rot", True)),
    "entropy_loss": lambda c: float(c.args.get("entropy_loss_ratio", 0.0)) > 0,
    "semantic_depth": lambda c: c.semantic[0],
    "semantic_dim": lambda c: c.semantic[1],
    "dropout": lambda c: float(c.args.get("dropout_p", 0.0)),
}
# the official config's own names for values the shapes also give: they must agree
_CONFIG_CHECKS = {"encoder_ch_mult": "encoder_ch_mult", "decoder_ch_mult": "decoder_ch_mult",
                  "z_channels": "z_channels", "codebook_size": "codebook_size", "codebook_dim": "codebook_embed_dim",
                  "adaptive_norm": "adaptive_gn", "depth_to_space": "d2s_up"}


def _check_options(c: _Shapes) -> None:
    """Refuse config options this implementation does not reproduce, and class/layout mismatches."""
    model_cfg = c.config.get("model") or {}
    cls = model_cfg.get("model_cls")
    if cls is not None:
        if cls not in _MODEL_CLASSES:
            raise ValueError(f"model_cls {cls!r} is not a GigaTok VQ model; expected one of {sorted(_MODEL_CLASSES)}")
        if _MODEL_CLASSES[cls] != c.layout:
            raise ValueError(f"the config is {cls} ({_MODEL_CLASSES[cls]}) but the checkpoint is a {c.layout} model")
    unknown = sorted(set(c.args) - set(_FIXED_OPTIONS) - _TRAINING_OPTIONS - _MODEL_OPTIONS)
    if unknown:
        raise ValueError(f"unknown GigaTok config options {unknown}; this converter knows the official Args fields")
    changed = sorted(k for k, v in _FIXED_OPTIONS.items() if k in c.args and c.args[k] != v)
    if changed:
        raise ValueError(
            "this GigaTok implementation does not reproduce "
            + ", ".join(f"{k}={c.args[k]!r} (supported: {_FIXED_OPTIONS[k]!r})" for k in changed)
            + "; no released checkpoint uses them"
        )
    if c.layout == "2d" and c.args.get("transformer_layer_type", "TransformerLayer") != "TransformerLayer":
        raise ValueError(
            f"2D GigaTok with transformer_layer_type={c.args['transformer_layer_type']!r} is not supported; the "
            "released 2D tokenizers use 'TransformerLayer'"
        )


def infer_kwargs(state: dict[str, torch.Tensor], config: dict | None = None) -> dict[str, Any]:
    """`GigaTok` constructor kwargs for an official state dict (and config, if given)."""
    c = _Shapes(state, config)
    _check_options(c)
    kwargs = {name: handler(c) for name, handler in _INFER.items()}
    for ours, official in _CONFIG_CHECKS.items():
        if official in c.args and not _equal(c.args[official], kwargs[ours]):
            raise ValueError(f"config {official}={c.args[official]} does not match the checkpoint ({kwargs[ours]})")
    for key, value in (("cnn_ch", kwargs["cnn_channels"]), ("cnn_num_res_blocks", kwargs["num_res_blocks"])):
        if key in c.overrides and int(c.overrides[key]) != value:
            raise ValueError(f"fixture_overrides.{key}={c.overrides[key]} does not match the checkpoint ({value})")
    dec_blocks = len(_indices(state, "decoder.conv_blocks.0.res."))
    if dec_blocks != kwargs["num_res_blocks"] + 1:
        raise ValueError(f"decoder levels have {dec_blocks} res-blocks, expected encoder's "
                         f"{kwargs['num_res_blocks']} + 1")
    return kwargs


def _equal(a: Any, b: Any) -> bool:
    return (list(a) == list(b)) if isinstance(b, list) else (bool(a) == b if isinstance(b, bool) else a == b)


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
def _seq_first(t: torch.Tensor) -> torch.Tensor:
    return t.permute(1, 0, 2)  # (L, 1, W) sequence-first <-> (1, L, W)


_CNN_RULES = KeyMap([
    Rule("{side:encoder|decoder}.conv_blocks.{i}.res.{j}.{rest:*}", "{side}.stages.{i}.blocks.{j}.{rest:*}"),
    Rule("encoder.conv_blocks.{i}.downsample.conv.{p:weight|bias}", "encoder.stages.{i}.downsample.conv.{p}"),
    Rule("decoder.conv_blocks.{i}.upsample.{conv:conv|conv1}.{p:weight|bias}", "decoder.stages.{i}.upsample.{conv}.{p}"),
    Rule("decoder.adaptive.{i}.{g:gamma|beta}.{p:weight|bias}", "decoder.stages.{i}.norm.{g}.{p}"),
    Rule("{side:encoder|decoder}.{m:conv_in|norm_out|conv_out}.{p:weight|bias}", "{side}.{m}.{p}"),
    Rule("{side:encoder|decoder}.mid.{i}.{m:norm1|conv1|norm2|conv2|nin_shortcut}.{p:weight|bias}",
         "{side}.mid.{i}.{m}.{p}"),
    Rule("quant_conv.weight", "quant_proj.weight", flatten_1x1, unflatten_1x1),
    Rule("quant_conv.bias", "quant_proj.bias"),
    Rule("post_quant_conv.weight", "post_quant_proj.weight", flatten_1x1, unflatten_1x1),
    Rule("post_quant_conv.bias", "post_quant_proj.bias"),
    Rule("quantize.embedding.weight", "quantizer.embed"),
    Rule("quantize.codebook_used", None),  # training-time FIFO of recent ids
])
# official nn.TransformerEncoder/DecoderLayer names -> ours
_BLOCK = (
    ("self_attn.in_proj_weight", "attn.qkv.weight"), ("self_attn.in_proj_bias", "attn.qkv.bias"),
    ("self_attn.out_proj.{p}", "attn.proj.{p}"), ("multihead_attn.in_proj_weight", "cross_attn.qkv.weight"),
    ("multihead_attn.in_proj_bias", "cross_attn.qkv.bias"), ("multihead_attn.out_proj.{p}", "cross_attn.proj.{p}"),
    ("linear1.{p}", "mlp.fc1.{p}"), ("linear2.{p}", "mlp.fc2.{p}"), ("{n:norm1|norm2|norm3}.{p}", "{n}.{p}"),
)


def _vit_rules(official: str, ours: str, is_encoder: bool, keep_semantic_head: bool) -> KeyMap:
    rules = [Rule(f"{official}transformer.{{i}}.{a}", f"{ours}blocks.{{i}}.{b}") for a, b in _BLOCK]
    rules += [
        Rule(f"{official}positional_embedding", f"{ours}pos_embed", _seq_first, _seq_first),
        Rule(f"{official}latent_token_positional_embedding",
             f"{ours}{'query_pos_embed' if is_encoder else 'latent_pos_embed'}", _seq_first, _seq_first),
        Rule(f"{official}ln_pre.{{p}}", f"{ours}norm_in.{{p}}"),
        Rule(f"{official}ln_post.{{p}}", f"{ours}norm_out.{{p}}"),
        Rule(f"{official}{'encoder' if is_encoder else 'decoder'}_embed.{{p}}", f"{ours}embed.{{p}}"),
        Rule(f"{official}global_proj.{{p}}", f"{ours}query_proj.{{p}}"),
    ]
    if is_encoder:  # 1x1 conv -> Linear
        rules += [Rule(f"{official}conv_out.weight", f"{ours}proj_out.weight", flatten_1x1, unflatten_1x1),
                  Rule(f"{official}conv_out.bias", f"{ours}proj_out.bias")]
    else:
        rules.append(Rule(f"{official}conv_out.{{p}}", f"{ours}conv_out.{{p}}"))
        for i, fc in (("0", "fc1"), ("2", "fc2"), ("4", "fc3")):
            target = f"{ours}semantic_head.{fc}.{{p}}" if keep_semantic_head else None
            rules.append(Rule(f"{official}distill_mlp.{i}.{{p}}", target))
    # the semantic-distillation projector of the other side / the top level: never used by inference
    rules.append(Rule(f"{official}distill_mlp.{{rest:*}}", None))
    return KeyMap(rules)


def keymap(layout: str, keep_semantic_head: bool) -> KeyMap:
    """The official <-> zoo key table of a 1D or 2D GigaTok."""
    enc, dec = _vit_prefixes(layout)
    return (_CNN_RULES + _vit_rules(enc, "encoder_vit.", True, False)
            + _vit_rules(dec, "decoder_vit.", False, keep_semantic_head)
            + KeyMap([Rule("distill_mlp.{rest:*}", None)]))


@register_converter("gigatok")
class GigaTokConverter(Converter):
    """An official GigaTok checkpoint (`.pt`, or an already loaded state dict) and its YAML -> `GigaTok`.

    Without a config everything is read from the tensor shapes, with the settings every release shares
    (multi-level query init, rotation trick, semantic features after decoder block 3, no entropy loss).
    """

    # loss and gradient options: they change training only (entropy_loss_ratio, rot, dropout_p in the YAML)
    training_kwargs = frozenset({"dropout", "entropy_loss", "rotation_trick"})

    def read(self, checkpoint: str | Path | dict, config: Any = None) -> OfficialCheckpoint:
        if isinstance(checkpoint, dict):
            state, source = dict(checkpoint), "<state dict>"
        else:
            state, source = read_checkpoint(checkpoint), str(checkpoint)
        return OfficialCheckpoint("gigatok", state, _read_config(config), source)

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        return infer_kwargs(raw.state, raw.config)

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        own = model.state_dict()
        keep = any(k.startswith("decoder_vit.semantic_head.") for k in own)
        ours, dropped, unknown = keymap(_layout_from_keys(raw.state), keep).to_ours(raw.state)
        if unknown:
            raise ValueError(
                f"the GigaTok checkpoint has {len(unknown)} tensors this converter does not know: {unknown[:12]}"
                f"{' ...' if len(unknown) > 12 else ''}. Is it a GigaTok VQ checkpoint with an option this "
                "implementation does not support?"
            )
        ignored = [k for k in dropped if k != "quantize.codebook_used"]
        if ignored:
            warnings.warn(f"ignoring the unused semantic-distillation projector {ignored[:3]}...", stacklevel=3)
        check_complete(ours, own, "GigaTok conversion mismatch")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        own = model.state_dict()
        keep = any(k.startswith("decoder_vit.semantic_head.") for k in own)
        return keymap(model.config["token_layout"], keep).to_official(own)
