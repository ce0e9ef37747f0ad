"""Official DualToken checkpoints (songweii/DualToken) -> `zoo` DualToken.

`main.py` saves `{"epoch", "name", "state_dict", "optimizer"}` and `inference.py` loads `["state_dict"]` strictly
into `create_model_and_transforms(config_path=<model_config_*>)`: an `RQVAESiglipModel` whose `siglip_model` is
the HF `SiglipModel` read from the config's `pretrained_model` folder (a local SigLIP2 checkpoint). Here:

* the checkpoint is read with `torch.load(weights_only=True)`: `["state_dict"]`, or a bare state dict;
* `config` is the official model config (the `model_config_*` folder, its `config.json`, or the parsed dict; the
  outer `rqvaesiglip` wrapper or the inner dict). Unknown fields are refused;
* the SigLIP config (heads, activation, LayerNorm eps, image size) comes from the local SigLIP folder: the
  `siglip_path=` option, else the config's `pretrained_model` (relative paths are taken relative to the config's
  folder). Without it the head count comes from the released widths (1152 -> 16);
* tensor names follow a `KeyMap` table. Handlers first fuse SigLIP's q / k / v into timm's `qkv` and split the
  pooling head's packed `in_proj` into `q` / `kv`, and fold the shared codebooks: an `nn.ModuleList` holding one
  module eight times saves eight copies (`codebooks.{0..7}.*`), which must be equal and become our one table;
* dropped, each checked or documented: the SigLIP text tower (`siglip_model.text_model.*`, `logit_scale`,
  `logit_bias`: the tokenizer never runs it; official training freezes it and passes no text), the projections'
  constant zero k bias (`*.attn.zero_k_bias`, checked to be zero) and each codebook's padding row (`nn.Embedding(n +
  1, d, padding_idx=n)`: id n is never produced). `to_official` writes all but the text tower back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.convert import hf_siglip
from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule, check_complete, is_meta
from zoo.registry import register_converter

__all__ = ["KEYMAP", "DualTokenConverter", "read_siglip_vision", "read_siglip_weights", "siglip_to_backbone"]

V = "siglip_model.vision_model."
B = "backbone.model."
_PROJECTIONS = {"prequant_pix": "prequant_pixel", "prequant_sem": "prequant_semantic",
                "prequant_shortcut": "prequant_shortcut", "postquant_pix": "postquant_pixel",
                "postquant_sem": "postquant_semantic"}
_QUANTIZERS = {"quantizer_pix": "quantizer_pixel", "quantizer_sem": "quantizer_semantic"}
CONFIG_FIELDS = frozenset({
    "architectures", "layer_recon", "layer_sem", "layer_shortcut", "weight_shortcut", "model_type", "hidden_size",
    "ddconfig", "decoder_latent_shape", "checkpointing", "ignore_keys", "vq_sem", "vq_pix", "pretrained_model",
    "torch_dtype", "transformers_version", "decay",
})
VQ_FIELDS = frozenset({"bottleneck_type", "ckpt_path", "code_shape", "decay", "embed_dim", "latent_shape", "n_embed",
                       "restart_unused_codes", "shared_codebook"})
DD_FIELDS = frozenset({"attn_resolutions", "ch", "ch_mult", "decoder_in_channels", "double_z", "dropout",
                       "in_channels", "num_res_blocks", "out_ch", "resolution", "z_channels"})
# the released configs' layers, used when no config is given
RELEASED_LAYERS = {"layer_recon": 6, "layer_sem": 26, "layer_shortcut": 4, "weight_shortcut": 0.6}
KNOWN_HEADS = {1152: 16, 1024: 16, 768: 12}  # SigLIP(2) so400m, large, base


def _drop_padding_row(t: torch.Tensor) -> torch.Tensor:
    return t[:-1]


def _add_padding_row(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(1, t.shape[1])])


# HF SiglipVisionModel (inside SiglipModel) -> timm VisionTransformer; `qkv_proj` and the head's `q_proj` / `kv_proj`
# exist only after `hf_siglip.fuse` (and before `hf_siglip.unfuse`)
SIGLIP_RULES = hf_siglip.keymap(V, B)
KEYMAP = SIGLIP_RULES + KeyMap([
    Rule("siglip_model.text_model.{rest:*}", None),  # the text tower: not part of the image tokenizer
    Rule("siglip_model.{p:logit_scale|logit_bias}", None),
    Rule("{m:prequant_pix|prequant_sem|prequant_shortcut|postquant_pix|postquant_sem}.attn.zero_k_bias", None),
    *[Rule(f"{theirs}.{{rest:*}}", f"{ours}.{{rest:*}}") for theirs, ours in _PROJECTIONS.items()],
    *[rule for theirs, ours in _QUANTIZERS.items() for rule in (
        Rule(f"{theirs}.codebooks.{{k}}.weight", f"{ours}.layers.{{k}}.embed", _drop_padding_row, _add_padding_row),
        Rule(f"{theirs}.codebooks.{{k}}.embed_ema", f"{ours}.layers.{{k}}.embed_avg"),
        Rule(f"{theirs}.codebooks.{{k}}.cluster_size_ema", f"{ours}.layers.{{k}}.cluster_size"),
    )],
    Rule("post_quant_conv.{rest:*}", "post_quant_conv.{rest:*}"),
    Rule("decoder.{rest:*}", "decoder.{rest:*}"),
])
_DROPPED_CHECKED = re.compile(r"(\w+)\.attn\.zero_k_bias")


# -- reading ----------------------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no DualToken checkpoint at {path}; pass the .pt that main.py saved (epoch_N.pt)")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal reads the same
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: {err}. "
                         "zoo never executes pickled code; re-save the state dict as plain tensors.") from None
    return _pick_state(data, str(path))


def _pick_state(data: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(data, dict):
        raise TypeError(f"{source} holds a {type(data).__name__}, expected a dict (checkpoint or state dict)")
    state = data.get("state_dict", data)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected {{'state_dict': {{name: tensor}}}} (what main.py saves) or a bare "
                         f"state dict; got keys {list(data)[:8]}")
    if any(k.startswith("module.") for k in state):
        raise ValueError(f"{source} has DDP 'module.' prefixes; strip them (main.py saves model.module.state_dict())")
    return dict(state)


def read_config(config: str | Path | dict | None) -> tuple[dict | None, Path | None]:
    """The inner `rqvaesiglip` config (fields checked) and the folder relative paths are resolved against."""
    if config is None:
        return None, None
    folder = None
    if not isinstance(config, dict):
        path = Path(config).expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no DualToken config at {path}; pass the model_config_* folder or its "
                                    "config.json")
        folder = path.parent
        config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise TypeError("a DualToken config is a JSON object (model_config_*/config.json)")
    inner = config.get("rqvaesiglip", config)
    unknown = sorted(set(inner) - CONFIG_FIELDS)
    for name, fields in (("vq_pix", VQ_FIELDS), ("vq_sem", VQ_FIELDS), ("ddconfig", DD_FIELDS)):
        unknown += [f"{name}.{k}" for k in sorted(set(inner.get(name) or {}) - fields)]
    if unknown:
        raise ValueError(f"unknown DualToken config fields {unknown}; known: {sorted(CONFIG_FIELDS)}")
    return dict(inner), folder


def read_siglip_vision(path: str | Path) -> dict:
    """The vision config of a local SigLIP folder (HF `config.json` of a SiglipModel or SiglipVisionModel)."""
    path = Path(path).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no SigLIP config at {file}")
    data = json.loads(file.read_text())
    return dict(data.get("vision_config", data))


def _siglip_folder(config: dict | None, folder: Path | None, siglip_path: str | Path | None) -> Path | None:
    """The local SigLIP folder: `siglip_path`, else the config's `pretrained_model` (None when not on disk)."""
    if siglip_path is not None:
        path = Path(siglip_path).expanduser()
        if not (path / "config.json").is_file() and not path.is_file():
            raise FileNotFoundError(f"siglip_path {path} holds no SigLIP config.json (the HF siglip2-so400m-* folder)")
        return path
    named = (config or {}).get("pretrained_model")
    if not named or "$" in named:  # the released configs say "$PATH_TO_YOUR_MODELS/siglip2-so400m-patch14-384"
        return None
    path = Path(named).expanduser()
    for candidate in ([folder / path] if folder is not None and not path.is_absolute() else []) + [path]:
        if (candidate / "config.json").is_file():
            return candidate
    return None


# -- handlers --------------------------------------------------------------------------------------------------------
def _depths(state: dict[str, torch.Tensor], quantizer: str) -> list[int]:
    pattern = re.compile(re.escape(quantizer) + r"\.codebooks\.(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if is_meta(a) or is_meta(b):
        return False
    return a.shape == b.shape and torch.equal(a, b)


def is_shared(state: dict[str, torch.Tensor], quantizer: str) -> bool:
    """Whether every depth's codebook tensors equal depth 0's (one module repeated in the official ModuleList)."""
    depths = _depths(state, quantizer)
    return all(_same(state[f"{quantizer}.codebooks.{k}.{leaf}"], state[f"{quantizer}.codebooks.0.{leaf}"])
               for k in depths[1:] for leaf in ("weight", "embed_ema", "cluster_size_ema")
               if f"{quantizer}.codebooks.0.{leaf}" in state)


def _fold_shared(state: dict[str, torch.Tensor], shared: dict[str, bool]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for quantizer, is_one in shared.items():
        if not is_one:
            continue
        if not is_shared(state, quantizer):
            raise ValueError(f"the config says {quantizer} shares one codebook across depths, but the checkpoint's "
                             f"{quantizer}.codebooks.k tensors differ between depths")
        for k in _depths(state, quantizer)[1:]:
            for leaf in ("weight", "embed_ema", "cluster_size_ema"):
                out.pop(f"{quantizer}.codebooks.{k}.{leaf}", None)
    return out


def _check_dropped(state: dict[str, torch.Tensor]) -> None:
    for key, value in state.items():
        if _DROPPED_CHECKED.fullmatch(key) and not is_meta(value) and value.abs().max() > 0:
            raise ValueError(f"{key} is not zero ({value.flatten()[:4].tolist()} ...); the official AttentionBlock "
                             "keeps a constant zero k bias, which this implementation assumes")


# -- shapes -----------------------------------------------------------------------------------------------------------
def _indices(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key}, which every DualToken checkpoint has; is it a DualToken file?")
    return tuple(state[key].shape)


class _Read:
    """What the `_INFER` handlers read: the state, the official config (or released defaults), the SigLIP config."""

    def __init__(self, raw: OfficialCheckpoint) -> None:
        self.state = raw.state
        self.config = raw.config or {}
        self.siglip = raw.extras.get("siglip_vision") or {}
        self.dd = self.config.get("ddconfig") or {}
        self.width = _shape(self.state, V + "embeddings.patch_embedding.weight")[0]
        self.levels = _indices(self.state, "decoder.up.")
        if not self.levels:
            raise ValueError("the checkpoint has no decoder.up.* tensors; is it a DualToken file?")

    def layer(self, name: str) -> Any:
        if self.config:
            return self.config.get(name)
        return RELEASED_LAYERS[name]

    def heads(self) -> int:
        if "num_attention_heads" in self.siglip:
            return int(self.siglip["num_attention_heads"])
        if self.width in KNOWN_HEADS:
            return KNOWN_HEADS[self.width]
        raise ValueError(f"the SigLIP width {self.width} is not a released one; give the local SigLIP folder "
                         "(siglip_path=..., or the config's pretrained_model) so its head count can be read")

    def image_size(self) -> int:
        if "resolution" in self.dd:
            return int(self.dd["resolution"])
        if "image_size" in self.siglip:
            return int(self.siglip["image_size"])
        # no config: the released habit, the patch grid's extent rounded to the decoder's upsampling (27 x 14 =
        # 378 -> 384, 16 x 16 = 256), the code map resized to image_size / upsampling (decoder_latent_shape)
        grid = math.isqrt(_shape(self.state, V + "embeddings.position_embedding.weight")[0])
        ups = 2 ** (len(self.levels) - 1)
        return round(grid * _shape(self.state, V + "embeddings.patch_embedding.weight")[-1] / ups) * ups

    def level_widths(self) -> list[int]:
        return [_shape(self.state, f"decoder.up.{level}.block.0.conv1.weight")[0] for level in self.levels]

    def decoder_channels(self) -> int:
        if "ch" in self.dd:
            return int(self.dd["ch"])
        return self.level_widths()[0]  # ch_mult[0] is 1 in both releases

    def decoder_ch_mult(self) -> list[int]:
        ch, widths = self.decoder_channels(), self.level_widths()
        if any(w % ch for w in widths):
            raise ValueError(f"decoder level widths {widths} are not multiples of ch {ch}")
        return [w // ch for w in widths]

    def attn_resolutions(self) -> list[int]:
        size = self.image_size()
        return [size // 2**level for level in self.levels if f"decoder.up.{level}.attn.0.norm.weight" in self.state]


def _vq(r: _Read, name: str, field: str, default: Any) -> Any:
    return (r.config.get(name) or {}).get(field, default)


_INFER: dict[str, Callable[[_Read], Any]] = {
    "image_size": lambda r: r.image_size(),
    "backbone_patch_size": lambda r: _shape(r.state, V + "embeddings.patch_embedding.weight")[-1],
    "backbone_width": lambda r: r.width,
    "backbone_depth": lambda r: len(_indices(r.state, V + "encoder.layers.")),
    "backbone_heads": lambda r: r.heads(),
    "backbone_mlp_dim": lambda r: _shape(r.state, V + "encoder.layers.0.mlp.fc1.weight")[0],
    "pooled_dim": lambda r: None,
    "pixel_layer": lambda r: int(r.layer("layer_recon")),
    "shortcut_layer": lambda r: (int(r.layer("layer_shortcut")) if any(k.startswith("prequant_shortcut.")
                                                                      for k in r.state) else None),
    "shortcut_weight": lambda r: float(r.layer("weight_shortcut") if r.layer("weight_shortcut") is not None else 0.6),
    "semantic_layer": lambda r: int(r.layer("layer_sem")),
    "codebook_size": lambda r: _shape(r.state, "quantizer_pix.codebooks.0.weight")[0] - 1,
    "code_dim": lambda r: _shape(r.state, "quantizer_pix.codebooks.0.weight")[1],
    "pixel_depth": lambda r: len(_depths(r.state, "quantizer_pix")),
    "semantic_depth": lambda r: len(_depths(r.state, "quantizer_sem")),
    "shared_codebook": lambda r: bool(_vq(r, "vq_pix", "shared_codebook", is_shared(r.state, "quantizer_pix"))),
    "decay": lambda r: float(_vq(r, "vq_pix", "decay", 0.99)),
    "restart_unused_codes": lambda r: bool(_vq(r, "vq_pix", "restart_unused_codes", True)),
    "decoder_channels": lambda r: r.decoder_channels(),
    "decoder_ch_mult": lambda r: r.decoder_ch_mult(),
    "decoder_res_blocks": lambda r: len(_indices(r.state, "decoder.up.0.block.")) - 1,
    "decoder_in_channels": lambda r: _shape(r.state, "decoder.conv_in.weight")[1],
    "decoder_attn_resolutions": lambda r: r.attn_resolutions(),
    "norm_groups": lambda r: 32,  # the official modules' `Normalize`
    "dropout": lambda r: float(r.dd.get("dropout", 0.0)),
}


def _check(r: _Read, kwargs: dict[str, Any]) -> None:
    """Refuse what this implementation does not build, and config fields that disagree with the tensors."""
    state, cfg, grid = r.state, r.config, kwargs["image_size"] // kwargs["backbone_patch_size"]
    if not cfg and kwargs["semantic_layer"] > kwargs["backbone_depth"]:
        raise ValueError(f"without its config the released layers are assumed (pixel 6, shortcut 4, semantic 26), "
                         f"but this SigLIP has {kwargs['backbone_depth']} layers: pass the official config "
                         "(model_config_*/config.json) the checkpoint was trained with")
    if "quantizer_sem.codebooks.0.weight" in state:
        sem = _shape(state, "quantizer_sem.codebooks.0.weight")
        if (sem[0] - 1, sem[1]) != (kwargs["codebook_size"], kwargs["code_dim"]):
            raise ValueError(f"pixel and semantic codebooks differ ({kwargs['codebook_size']} x {kwargs['code_dim']} "
                             f"vs {sem[0] - 1} x {sem[1]}); this implementation gives both vocabularies one size")
    act = r.siglip.get("hidden_act", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise ValueError(f"SigLIP hidden_act {act!r}: only the tanh GELU of SigLIP(2) (gelu_pytorch_tanh) is built")
    eps = float(r.siglip.get("layer_norm_eps", 1e-6))
    if eps != 1e-6:
        raise ValueError(f"SigLIP layer_norm_eps {eps}: the timm backbone uses 1e-6")
    if r.siglip.get("vision_use_head") is False:
        raise ValueError("the SigLIP has no pooling head (vision_use_head=False); DualToken's semantic loss needs it")
    if "image_size" in r.siglip and int(r.siglip["image_size"]) != kwargs["image_size"]:
        raise ValueError(f"ddconfig.resolution {kwargs['image_size']} differs from the SigLIP image_size "
                         f"{r.siglip['image_size']}")
    rows = _shape(state, V + "embeddings.position_embedding.weight")[0]
    if rows != grid * grid:
        raise ValueError(f"the position table has {rows} rows, not ({kwargs['image_size']} // "
                         f"{kwargs['backbone_patch_size']})^2 = {grid * grid}")
    if _shape(state, "decoder.conv_out.weight")[0] != 3:
        raise ValueError("the decoder does not output 3 channels")
    ups = 2 ** (len(kwargs["decoder_ch_mult"]) - 1)
    expected = kwargs["image_size"] // ups
    latent = cfg.get("decoder_latent_shape", [expected, expected]) if cfg else [expected, expected]
    if kwargs["image_size"] % ups or (latent is not None and list(latent) != [expected, expected]) or (
            latent is None and grid != expected):
        raise ValueError(f"decoder_latent_shape {latent} with a {grid} x {grid} code grid and x{ups} decoder does not "
                         f"give {kwargs['image_size']} px; this implementation resizes the codes to the decoder grid "
                         f"image_size / {ups}")
    if cfg:
        if cfg.get("hidden_size") not in (None, kwargs["backbone_width"]):
            raise ValueError(f"config hidden_size {cfg['hidden_size']} vs the SigLIP width {kwargs['backbone_width']}")
        if cfg.get("layer_shortcut") is not None and kwargs["shortcut_layer"] is None:
            raise ValueError("the config names layer_shortcut but the checkpoint has no prequant_shortcut tensors")
        for vq, depth in (("vq_pix", kwargs["pixel_depth"]), ("vq_sem", kwargs["semantic_depth"])):
            v = cfg.get(vq) or {}
            if v.get("bottleneck_type", "rq") not in ("rq", "rq_ema"):
                raise ValueError(f"{vq}.bottleneck_type {v['bottleneck_type']!r}: only rq / rq_ema exist")
            implied = {"n_embed": kwargs["codebook_size"], "embed_dim": kwargs["code_dim"],
                       "code_shape": [grid, grid, depth], "latent_shape": [grid, grid, kwargs["code_dim"]],
                       "shared_codebook": kwargs["shared_codebook"], "decay": kwargs["decay"],
                       "restart_unused_codes": kwargs["restart_unused_codes"]}
            for key, value in implied.items():
                if key in v and v[key] != value:
                    raise ValueError(f"config {vq}.{key}={v[key]} does not match the checkpoint / the pixel "
                                     f"vocabulary ({value}); both vocabularies share these settings here")
        dd = r.dd
        for key, value in (("ch_mult", kwargs["decoder_ch_mult"]), ("num_res_blocks", kwargs["decoder_res_blocks"]),
                           ("decoder_in_channels", kwargs["decoder_in_channels"]), ("in_channels", 3),
                           ("out_ch", 3)):
            if key in dd and (list(dd[key]) if isinstance(dd[key], (list, tuple)) else dd[key]) != value:
                raise ValueError(f"config ddconfig.{key}={dd[key]} does not match the checkpoint ({value})")
        if "attn_resolutions" in dd:
            nominal = {kwargs["image_size"] // 2**level for level in r.levels}
            listed = sorted(set(dd["attn_resolutions"]) & nominal)
            if listed != sorted(kwargs["decoder_attn_resolutions"]):
                raise ValueError(f"config ddconfig.attn_resolutions {dd['attn_resolutions']} vs the checkpoint's "
                                 f"attention levels (resolutions {kwargs['decoder_attn_resolutions']})")


def infer_kwargs(raw: OfficialCheckpoint) -> dict[str, Any]:
    """`DualToken` constructor kwargs for an official checkpoint (and its configs)."""
    r = _Read(raw)
    kwargs = {name: handler(r) for name, handler in _INFER.items()}
    _check(r, kwargs)
    return kwargs


def siglip_to_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A HF SigLIP state dict -> our `backbone.model.*` tensors (e.g. to start training from the released SigLIP2,
    or to build the frozen teacher). Takes `vision_model.*` (SiglipModel, and SiglipVisionModel up to transformers
    4.x) or unprefixed `embeddings.*` / `encoder.*` / ... (SiglipVisionModel in transformers 5). The text tower and
    the index buffer are dropped."""
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in state) else ""
    vision = {V + k[len(prefix):]: v for k, v in state.items()
              if k.startswith(prefix) and not k.startswith(("text_model.", "logit_"))}
    if V + "embeddings.patch_embedding.weight" not in vision:
        raise ValueError(f"no SigLIP vision tensors (vision_model.embeddings.patch_embedding.weight, ...) in the state "
                         f"dict (keys like {list(state)[:3]})")
    ours, _, unknown = SIGLIP_RULES.to_ours(hf_siglip.fuse(vision, V))
    if unknown:
        raise ValueError(f"unknown SigLIP vision tensors {unknown[:8]}")
    return ours


@register_converter("dualtoken")
class DualTokenConverter(Converter):
    """An official DualToken checkpoint (`epoch_N.pt`), its model config and the local SigLIP folder -> DualToken."""

    # the EMA decay, code restarts and decoder dropout change training only
    training_kwargs = frozenset({"decay", "restart_unused_codes", "dropout"})

    def read(self, checkpoint: str | Path | dict, config: Any = None, siglip_path: str | Path | None = None
             ) -> OfficialCheckpoint:
        if isinstance(checkpoint, dict):
            state, source = _pick_state(checkpoint, "<state dict>"), "<state dict>"
        else:
            state, source = read_checkpoint(checkpoint), str(checkpoint)
        inner, folder = read_config(config)
        siglip = _siglip_folder(inner, folder, siglip_path)
        extras = {"siglip_vision": read_siglip_vision(siglip) if siglip is not None else None,
                  "siglip_path": None if siglip is None else str(siglip)}
        return OfficialCheckpoint("dualtoken", state, inner, source, extras)

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        return infer_kwargs(raw)

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        shared = {name: bool(model.config["shared_codebook"]) for name in _QUANTIZERS}
        state = _fold_shared(hf_siglip.fuse(raw.state, V), shared)
        _check_dropped(state)
        ours, _, unknown = KEYMAP.to_ours(state)
        if unknown:
            raise ValueError(
                f"the DualToken checkpoint has {len(unknown)} tensors this converter does not know: {unknown[:12]}"
                f"{' ...' if len(unknown) > 12 else ''}. Is it an RQVAESiglipModel state dict (inference.py layout)?"
            )
        check_complete(ours, model.state_dict(), "DualToken conversion mismatch")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Our tensors in the official layout. The official strict loader also wants the SigLIP text tower
        (`siglip_model.text_model.*`, `logit_scale`, `logit_bias`), which a tokenizer does not hold: add them from
        the SigLIP checkpoint the official config names."""
        if model.config.get("pooled_dim") is not None:
            raise ValueError("pooled_dim adds a Linear after the pooling head that the official model does not have; "
                             "a model with it has no official layout")
        own = model.state_dict()
        official = hf_siglip.unfuse(KEYMAP.to_official(own), V)
        for theirs, ours in _PROJECTIONS.items():
            if f"{ours}.attn.q_bias" in own:
                official[f"{theirs}.attn.zero_k_bias"] = torch.zeros_like(own[f"{ours}.attn.q_bias"])
        if model.config["shared_codebook"]:
            for theirs, ours in _QUANTIZERS.items():
                depth = model.config["pixel_depth" if theirs.endswith("pix") else "semantic_depth"]
                for k in range(1, depth):
                    for leaf in ("weight", "embed_ema", "cluster_size_ema"):
                        official[f"{theirs}.codebooks.{k}.{leaf}"] = official[f"{theirs}.codebooks.0.{leaf}"]
        return official



def read_siglip_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local HF SigLIP checkpoint: a folder with `model.safetensors` (or its sharded index), or one
    `.safetensors` / `.bin` file (read with `torch.load(weights_only=True)`)."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(path / shard)))
            return state
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no SigLIP weights at {path}; pass the local siglip2-so400m-* folder (HF layout, "
                                "model.safetensors) or the weights file")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    return _pick_state(data, str(path))
