"""Official TokenFlow checkpoints (ByteFlow-AI/TokenFlow, `tokenflow_clipb_32k_enhanced.pt`, `tokenflow_siglip_32k.pt`)
-> `zoo` TokenFlow.

The official loaders (`reconstruction_vq_ddp.py`, the t2i / i2t `tokenflow_model`) build `TokenFlow(ModelArgs(...))`
and load `ckpt["ema"]`, else `["model"]`, else `["state_dict"]`, strictly. The repository has no config file:
`ModelArgs` comes from command-line flags or is hard-coded in `tokenflow_model`. Here:

* the container is read with `torch.load(weights_only=True)` (training checkpoints also hold an
  `argparse.Namespace`, the one extra class allowed);
* `config` (a JSON file or dict) carries the `ModelArgs` fields, plus an optional `fixture_overrides` block for
  constants the official code hard-codes (CLIP width/heads, BEiT decoder heads, CNN width / res-blocks) when a
  checkpoint was made with other values. Unknown fields are refused. Without a config, sizes come from the tensor
  shapes and the teacher from the key names, and a CLIP-B checkpoint is read as the t2i loader reads the
  released one (`infer_interpolate=True`: 256 px, 9 scales; its 224 px native path stays available);
* head counts cannot be read from shapes: CLIP uses width // 64 (what `load_clip_vision` does), the BEiT decoder
  12 (`get_model_default_params`), unless overridden;
* every tensor must map to a parameter and every parameter must be filled. Dropped: the training-time id FIFO
  `quantize.codebook_used` and the constant input-normalisation buffers `scaling_layer.{shift,scale}` (checked
  against the teacher's mean / std). `to_official` writes both back, so the official strict loader accepts it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.convert import hf_siglip
from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule, check_complete
from zoo.registry import register_converter

__all__ = ["MODEL_ARGS", "TEACHERS", "TokenFlowConverter", "keymap"]

# the official ModelArgs fields (tokenflow/tokenizer/vq_model.py) and the override keys this converter reads
MODEL_ARGS = frozenset({
    "codebook_size", "codebook_embed_dim", "semantic_code_dim", "codebook_l2_norm", "codebook_show_usage",
    "commit_loss_beta", "entropy_loss_ratio", "encoder_ch_mult", "decoder_ch_mult", "z_channels", "dropout_p",
    "kmeans", "teacher", "enhanced_decoder", "infer_interpolate",
})
OVERRIDES = frozenset({
    "clip_width", "clip_layers", "clip_heads", "clip_patch", "clip_input_resolution", "clip_output_dim",
    "vqkd_decoder_heads", "cnn_ch", "cnn_num_res_blocks", "encoder_heads",
})
CODEBOOK_USED_LENGTH = 131072  # `register_buffer("codebook_used", zeros(131072))` whatever the codebook size
_CLIP_SCALES = [1, 2, 4, 6, 8, 10, 12, 14]
# teacher -> semantic encoder kind, native input size, scale schedule (TokenFlow.__init__)
TEACHERS: dict[str, dict[str, Any]] = {
    "clipb_224": {"kind": "clip", "size": 224, "scales": _CLIP_SCALES},
    "vitamin_xlarge_256": {"kind": "vitamin_xlarge", "size": 256, "scales": [1, 2, 4, 6, 8, 10, 12, 14, 16]},
    "siglip_384": {"kind": "siglip_so400m", "size": 384,
                   "scales": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 27]},
}
# released timm architectures: (width, layers, heads)
_TIMM_SIZES = {"siglip_so400m": (1152, 27, 16), "vitamin_xlarge": (1152, 32, 16)}
_KIND_TO_TEACHER = {spec["kind"]: name for name, spec in TEACHERS.items()}


# -- reading --------------------------------------------------------------------------------------------------------
def _pick_state(data: dict, source: str) -> dict[str, torch.Tensor]:
    for key in ("ema", "model", "state_dict"):  # the official loaders' order
        if key in data and isinstance(data[key], dict):
            data = data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state or len(state) != len(data):
        others = sorted(k for k, v in data.items() if not isinstance(v, torch.Tensor))[:8]
        raise ValueError(f"{source} is not a TokenFlow state dict: expected tensors under 'ema', 'model' or "
                         f"'state_dict', found non-tensor entries {others}")
    return state


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no TokenFlow checkpoint at {path}; download tokenflow_clipb_32k_enhanced.pt or tokenflow_siglip_32k.pt "
            "from the HF repo ByteFlow-AI/TokenFlow and pass its local path"
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal reads the same
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: {err}. "
                         "zoo never executes pickled code; re-save the state dict as plain tensors.") from None
    if not isinstance(data, dict):
        raise TypeError(f"{path} holds a {type(data).__name__}, expected a dict (checkpoint or state dict)")
    return _pick_state(data, str(path))


def read_config(config: str | Path | dict | None) -> dict | None:
    """The official `ModelArgs` fields (JSON file or dict); unknown fields are refused."""
    if config is None:
        return None
    if not isinstance(config, dict):
        path = Path(config)
        if not path.exists():
            raise FileNotFoundError(f"no TokenFlow config at {path}; pass a JSON of the ModelArgs fields used")
        config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise TypeError("a TokenFlow config is a JSON object of ModelArgs fields")
    unknown = sorted(set(config) - MODEL_ARGS - {"fixture_overrides"})
    if unknown:
        raise ValueError(f"unknown TokenFlow config fields {unknown}; the official ModelArgs fields are "
                         f"{sorted(MODEL_ARGS)} (plus an optional fixture_overrides block)")
    bad = sorted(set(config.get("fixture_overrides") or {}) - OVERRIDES)
    if bad:
        raise ValueError(f"unknown fixture_overrides {bad}; known: {sorted(OVERRIDES)}")
    return dict(config)


# -- key maps -------------------------------------------------------------------------------------------------------
_PIXEL_RULES = KeyMap([
    Rule("encoder.conv_blocks.{i}.res.{j}.{rest:*}", "encoder.stages.{i}.blocks.{j}.{rest:*}"),
    Rule("decoder.conv_blocks.{i}.res.{j}.{rest:*}", "decoder.stages.{i}.blocks.{j}.{rest:*}"),
    Rule("{side:encoder|decoder}.conv_blocks.{i}.attn.{j}.{rest:*}", "{side}.stages.{i}.attn.{j}.{rest:*}"),
    Rule("encoder.conv_blocks.{i}.downsample.conv.{p}", "encoder.stages.{i}.resample.conv.{p}"),
    Rule("decoder.conv_blocks.{i}.upsample.conv.{p}", "decoder.stages.{i}.resample.conv.{p}"),
    Rule("{side:encoder|decoder}.mid.{rest:*}", "{side}.mid.{rest:*}"),
    Rule("{side:encoder|decoder}.{m:conv_in|norm_out|conv_out}.{p}", "{side}.{m}.{p}"),
    Rule("quant_conv.{p}", "pixel_proj.{p}"),
    Rule("post_quant_conv.{p}", "pixel_unproj.{p}"),
    Rule("quantize.embedding_vqkd.weight", "quantizer.embed_semantic"),
    Rule("quantize.embedding_vqgan.weight", "quantizer.embed_pixel"),
    Rule("quantize.codebook_used", None),  # training-time FIFO of recent ids (usage statistic only)
    Rule("scaling_layer.{p:shift|scale}", None),  # constant teacher mean / std, checked in convert_state_dict
    Rule("encode_task_layer.0.{p}", "semantic_proj.fc1.{p}"),
    Rule("encode_task_layer.2.{p}", "semantic_proj.fc2.{p}"),
    Rule("decode_task_layer.0.{p}", "semantic_head.fc1.{p}"),
    Rule("decode_task_layer.2.{p}", "semantic_head.fc2.{p}"),
])
# BEiT-v2 ViT (vqkd_model.VisionTransformer) as the semantic decoder
_DECODER_RULES = KeyMap([
    Rule("decoder_vqkd.{m:cls_token|pos_embed}", "semantic_decoder.{m}"),
    Rule("decoder_vqkd.patch_embed.proj.{p}", "semantic_decoder.patch_embed.{p}"),
    Rule("decoder_vqkd.fc_norm.{p}", "semantic_decoder.norm.{p}"),
    Rule("decoder_vqkd.blocks.{i}.{rest:*}", "semantic_decoder.blocks.{i}.{rest:*}"),
])
# OpenAI CLIP VisionTransformer (clip/model.py) without `proj`
_CLIP_RULES = KeyMap([
    Rule("encoder_vqkd.class_embedding", "semantic_encoder.cls_token"),
    Rule("encoder_vqkd.positional_embedding", "semantic_encoder.pos_embed"),
    Rule("encoder_vqkd.conv1.weight", "semantic_encoder.patch_embed.weight"),
    Rule("encoder_vqkd.ln_pre.{p}", "semantic_encoder.norm_pre.{p}"),
    Rule("encoder_vqkd.ln_post.{p}", "semantic_encoder.norm.{p}"),
    Rule("encoder_vqkd.transformer.resblocks.{i}.attn.in_proj_weight", "semantic_encoder.blocks.{i}.attn.qkv.weight"),
    Rule("encoder_vqkd.transformer.resblocks.{i}.attn.in_proj_bias", "semantic_encoder.blocks.{i}.attn.qkv.bias"),
    Rule("encoder_vqkd.transformer.resblocks.{i}.attn.out_proj.{p}", "semantic_encoder.blocks.{i}.attn.proj.{p}"),
    Rule("encoder_vqkd.transformer.resblocks.{i}.ln_1.{p}", "semantic_encoder.blocks.{i}.norm1.{p}"),
    Rule("encoder_vqkd.transformer.resblocks.{i}.ln_2.{p}", "semantic_encoder.blocks.{i}.norm2.{p}"),
    Rule("encoder_vqkd.transformer.resblocks.{i}.mlp.c_fc.{p}", "semantic_encoder.blocks.{i}.mlp.fc1.{p}"),
    Rule("encoder_vqkd.transformer.resblocks.{i}.mlp.c_proj.{p}", "semantic_encoder.blocks.{i}.mlp.fc2.{p}"),
])
# HF SiglipVisionModel -> timm vit_so400m_patch14_siglip_384. `qkv_proj`, `q_proj` / `kv_proj` of the head are the
# official q/k/v projections fused (and the head's packed in_proj split) by `hf_siglip.fuse` before the table runs.
_SV, _ST = "encoder_vqkd.vision_model.", "semantic_encoder.model."
_SIGLIP_RULES = hf_siglip.keymap(_SV, _ST)
# timm ViTamin: the official module is the timm model itself (head and fc_norm deleted)
_VITAMIN_RULES = KeyMap([Rule("encoder_vqkd.{rest:*}", "semantic_encoder.model.{rest:*}")])
_ENCODER_RULES = {"clip": _CLIP_RULES, "siglip_so400m": _SIGLIP_RULES, "vitamin_xlarge": _VITAMIN_RULES}


def keymap(kind: str) -> KeyMap:
    """The official <-> zoo key table for a TokenFlow with semantic encoder `kind`."""
    return _PIXEL_RULES + _DECODER_RULES + _ENCODER_RULES[kind]


_PREPARE: dict[str, Callable[[dict], dict]] = {"siglip_so400m": lambda state: hf_siglip.fuse(state, _SV)}
_FINISH: dict[str, Callable[[dict], dict]] = {"siglip_so400m": lambda state: hf_siglip.unfuse(state, _SV)}


# -- shapes ---------------------------------------------------------------------------------------------------------
def _indices(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key}, which every TokenFlow checkpoint has; is it a TokenFlow file?")
    return tuple(state[key].shape)


def teacher_from_keys(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("encoder_vqkd.transformer.resblocks.") for k in state):
        return "clipb_224"
    if any(k.startswith(_SV) for k in state):
        return "siglip_384"
    if any(k.startswith("encoder_vqkd.patch_embed.backbone.") for k in state):
        return "vitamin_xlarge_256"
    raise ValueError("the checkpoint has no recognisable semantic encoder (encoder_vqkd.*: CLIP transformer, SigLIP "
                     "vision_model or timm ViTamin); is it a TokenFlow file?")


class _Read:
    """What the handlers of `_INFER` read: state, ModelArgs fields, overrides, teacher; shared sizes computed once."""

    def __init__(self, state: dict[str, torch.Tensor], config: dict | None) -> None:
        self.state = state
        self.has_config = config is not None
        self.args = {k: v for k, v in (config or {}).items() if k != "fixture_overrides"}
        self.overrides = dict((config or {}).get("fixture_overrides") or {})
        found = teacher_from_keys(state)
        teacher = self.args.get("teacher") or found
        if teacher not in TEACHERS:
            raise ValueError(f"teacher {teacher!r} is not a TokenFlow teacher; expected one of {sorted(TEACHERS)}")
        if teacher != found:
            raise ValueError(f"the config names teacher {teacher!r} but the checkpoint's semantic encoder is {found!r}")
        self.teacher = teacher
        self.spec = TEACHERS[teacher]
        self.kind = self.spec["kind"]
        # without a config, CLIP-B reads as the released t2i loader builds it (infer_interpolate=True)
        default = not self.has_config and teacher == "clipb_224"
        self.interpolate = bool(self.args.get("infer_interpolate", default)) and teacher == "clipb_224"
        self.cnn = _shape(state, "encoder.conv_in.weight")[0]
        self.levels = len(_indices(state, "encoder.conv_blocks."))

    def encoder_mult(self) -> list[int]:
        widths = [_shape(self.state, f"encoder.conv_blocks.{i}.res.0.conv1.weight")[0] for i in range(self.levels)]
        if any(w % self.cnn for w in widths):
            raise ValueError(f"encoder level widths {widths} are not multiples of conv_in's {self.cnn}")
        return [w // self.cnn for w in widths]

    def decoder_widths(self) -> list[int]:
        """Decoder level widths, finest level first (decoder stage k runs level levels - 1 - k)."""
        n = len(_indices(self.state, "decoder.conv_blocks."))
        return [_shape(self.state, f"decoder.conv_blocks.{n - 1 - level}.res.0.conv1.weight")[0] for level in range(n)]

    def decoder_mult(self) -> list[int]:
        return list(self.args.get("decoder_ch_mult") or self.args.get("encoder_ch_mult") or self.encoder_mult())

    def decoder_channels(self) -> int:
        widths, mult = self.decoder_widths(), self.decoder_mult()
        if len(widths) != len(mult) or any(w != widths[0] // mult[0] * m for w, m in zip(widths, mult)):
            raise ValueError(f"decoder level widths {widths} do not fit decoder_ch_mult {mult}")
        return widths[0] // mult[0]

    def clip(self) -> tuple[int, int, int, int]:
        width = _shape(self.state, "encoder_vqkd.class_embedding")[0]
        layers = len(_indices(self.state, "encoder_vqkd.transformer.resblocks."))
        patch = _shape(self.state, "encoder_vqkd.conv1.weight")[-1]
        heads = int(self.overrides.get("clip_heads", max(width // 64, 1)))
        return width, layers, heads, patch

    def timm_size(self) -> tuple[int | None, int | None, int | None]:
        """(width, layers, heads) overrides of a timm encoder: None where the checkpoint has the released size."""
        if self.kind == "siglip_so400m":
            width = _shape(self.state, _SV + "embeddings.patch_embedding.weight")[0]
            layers = len(_indices(self.state, _SV + "encoder.layers."))
        else:
            width = _shape(self.state, "encoder_vqkd.blocks.0.norm1.weight")[0]
            layers = len(_indices(self.state, "encoder_vqkd.blocks."))
        released = _TIMM_SIZES[self.kind]
        if (width, layers) == released[:2] and "encoder_heads" not in self.overrides:
            return None, None, None
        if "encoder_heads" not in self.overrides:
            raise ValueError(f"the {self.kind} encoder is {width} wide with {layers} layers, not the released "
                             f"{released[0]} / {released[1]}; give its heads as fixture_overrides.encoder_heads")
        return width, layers, int(self.overrides["encoder_heads"])


def _scales(r: _Read) -> list[int]:
    return list(r.spec["scales"]) + ([16] if r.interpolate else [])


_INFER: dict[str, Callable[[_Read], Any]] = {
    "image_size": lambda r: 256 if r.interpolate else r.spec["size"],
    "native_image_size": lambda r: r.spec["size"] if r.interpolate else None,
    "scales": _scales,
    "codebook_size": lambda r: _shape(r.state, "quantize.embedding_vqkd.weight")[0],
    "semantic_code_dim": lambda r: _shape(r.state, "quantize.embedding_vqkd.weight")[1],
    "pixel_code_dim": lambda r: _shape(r.state, "quantize.embedding_vqgan.weight")[1],
    "semantic_encoder": lambda r: r.kind,
    "semantic_width": lambda r: r.clip()[0] if r.kind == "clip" else r.timm_size()[0],
    "semantic_layers": lambda r: r.clip()[1] if r.kind == "clip" else r.timm_size()[1],
    "semantic_heads": lambda r: r.clip()[2] if r.kind == "clip" else r.timm_size()[2],
    "semantic_patch_size": lambda r: r.clip()[3] if r.kind == "clip" else None,
    "semantic_decoder_width": lambda r: _shape(r.state, "decoder_vqkd.cls_token")[-1],
    "semantic_decoder_depth": lambda r: len(_indices(r.state, "decoder_vqkd.blocks.")),
    "semantic_decoder_heads": lambda r: int(r.overrides.get("vqkd_decoder_heads", 12)),
    "semantic_out_dim": lambda r: _shape(r.state, "decode_task_layer.2.weight")[0],
    "cnn_channels": lambda r: r.cnn,
    "encoder_ch_mult": lambda r: r.encoder_mult(),
    "num_res_blocks": lambda r: len(_indices(r.state, "encoder.conv_blocks.0.res.")),
    "decoder_channels": lambda r: r.decoder_channels(),
    "decoder_ch_mult": lambda r: r.decoder_mult(),
    "decoder_res_blocks": lambda r: len(_indices(r.state, "decoder.conv_blocks.0.res.")) - 1,
    "z_channels": lambda r: _shape(r.state, "encoder.conv_out.weight")[0],
    "dropout": lambda r: float(r.args.get("dropout_p", 0.0)),
    "entropy_loss": lambda r: float(r.args.get("entropy_loss_ratio", 0.0)) > 0,
}
# ModelArgs fields that the shapes also give: they must agree
_CONFIG_CHECKS = {"codebook_size": "codebook_size", "pixel_code_dim": "codebook_embed_dim",
                  "semantic_code_dim": "semantic_code_dim", "z_channels": "z_channels",
                  "encoder_ch_mult": "encoder_ch_mult", "decoder_ch_mult": "decoder_ch_mult"}


def _check_options(r: _Read, kwargs: dict[str, Any]) -> None:
    a = r.args
    if a.get("kmeans"):
        raise ValueError("kmeans=True (EMA k-means codebook, `EmbeddingEMA`) is a training-time initialisation this "
                         "implementation does not reproduce; no released checkpoint uses it")
    if a.get("codebook_l2_norm") is False:
        raise ValueError("codebook_l2_norm=False is not supported (the official code has no working non-l2 path)")
    for ours, official in _CONFIG_CHECKS.items():
        if official in a and _normal(a[official]) != _normal(kwargs[ours]):
            raise ValueError(f"config {official}={a[official]} does not match the checkpoint ({kwargs[ours]})")
    plain = (kwargs["decoder_channels"], kwargs["decoder_res_blocks"])
    if a.get("enhanced_decoder") is True and plain != (256, 4):
        raise ValueError(f"enhanced_decoder=True is a 256-wide decoder with 4 res-blocks per level; the checkpoint "
                         f"has {plain[0]} wide, {plain[1]}")
    if a.get("enhanced_decoder") is False and plain != (kwargs["cnn_channels"], kwargs["num_res_blocks"]):
        raise ValueError(f"enhanced_decoder=False builds the decoder like the encoder (ch {kwargs['cnn_channels']}, "
                         f"{kwargs['num_res_blocks']} res-blocks); the checkpoint's decoder is {plain[0]} wide, "
                         f"{plain[1]} res-blocks")
    for key, ours in (("cnn_ch", "cnn_channels"), ("cnn_num_res_blocks", "num_res_blocks"),
                      ("clip_width", "semantic_width"), ("clip_layers", "semantic_layers"),
                      ("clip_patch", "semantic_patch_size")):
        if key in r.overrides and int(r.overrides[key]) != kwargs[ours]:
            raise ValueError(f"fixture_overrides.{key}={r.overrides[key]} does not match the checkpoint "
                             f"({kwargs[ours]})")
    if r.kind == "clip":
        rows = _shape(r.state, "encoder_vqkd.positional_embedding")[0]
        native = kwargs["semantic_patch_size"] * round((rows - 1) ** 0.5)
        expected = int(r.overrides.get("clip_input_resolution", r.spec["size"]))
        if native != expected:
            raise ValueError(f"the CLIP position table ({rows} rows, patch {kwargs['semantic_patch_size']}) is for "
                             f"{native} px, the teacher clipb_224 for {expected} px")


def _normal(value: Any) -> Any:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


def infer_kwargs(state: dict[str, torch.Tensor], config: dict | None = None) -> dict[str, Any]:
    """`TokenFlow` constructor kwargs for an official state dict (and ModelArgs config, if given)."""
    r = _Read(state, config)
    kwargs = {name: handler(r) for name, handler in _INFER.items()}
    _check_options(r, kwargs)
    return kwargs


@register_converter("tokenflow")
class TokenFlowConverter(Converter):
    """An official TokenFlow checkpoint (`.pt`, or a loaded dict) and its ModelArgs JSON -> `TokenFlow`."""

    # dropout_p, entropy_loss_ratio and the scale dropout (a constant 0.1 of the official code) change training only
    training_kwargs = frozenset({"dropout", "entropy_loss", "scale_dropout"})

    def read(self, checkpoint: str | Path | dict, config: Any = None) -> OfficialCheckpoint:
        if isinstance(checkpoint, dict):
            state, source = _pick_state(checkpoint, "<state dict>"), "<state dict>"
        else:
            state, source = read_checkpoint(checkpoint), str(checkpoint)
        return OfficialCheckpoint("tokenflow", state, read_config(config), source)

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        return infer_kwargs(raw.state, raw.config)

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        kind = model.config["semantic_encoder"]
        state = _PREPARE.get(kind, dict)(raw.state)
        ours, _, unknown = keymap(kind).to_ours(state)
        if unknown:
            raise ValueError(
                f"the TokenFlow checkpoint has {len(unknown)} tensors this converter does not know: {unknown[:12]}"
                f"{' ...' if len(unknown) > 12 else ''}. Is it a TokenFlow VQ checkpoint (teacher {kind}) with an "
                "option this implementation does not support (e.g. using_shared_conv)?"
            )
        _check_scaling(raw.state, kind)
        check_complete(ours, model.state_dict(), "TokenFlow conversion mismatch")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        kind = model.config["semantic_encoder"]
        own = model.state_dict()
        official = _FINISH.get(kind, dict)(keymap(kind).to_official(own))
        like = own["quantizer.embed_semantic"]
        official["quantize.codebook_used"] = torch.zeros(CODEBOOK_USED_LENGTH, dtype=like.dtype, device=like.device)
        if kind != "clip":
            from zoo.image.tokenflow.timm_encoders import TIMM_ENCODERS

            spec = TIMM_ENCODERS[kind]
            for name in ("mean", "std"):
                value = torch.tensor(spec[name], dtype=like.dtype).view(1, 3, 1, 1).to(like.device)
                official[f"scaling_layer.{'shift' if name == 'mean' else 'scale'}"] = value
        return official


def _check_scaling(state: dict[str, torch.Tensor], kind: str) -> None:
    """The dropped `scaling_layer` buffers must be the constants the encoder applies."""
    if kind == "clip" or not any(k.startswith("scaling_layer.") for k in state):
        return
    from zoo.image.tokenflow.timm_encoders import TIMM_ENCODERS

    spec = TIMM_ENCODERS[kind]
    for key, name in (("scaling_layer.shift", "mean"), ("scaling_layer.scale", "std")):
        if key in state and state[key].device.type != "meta":
            expected = torch.tensor(spec[name]).view(1, 3, 1, 1)
            if not torch.allclose(state[key].float().cpu(), expected, atol=1e-6):
                raise ValueError(f"{key} is {state[key].flatten().tolist()}, not the {kind} teacher's {name} "
                                 f"{list(spec[name])}; this implementation normalises with the latter")
