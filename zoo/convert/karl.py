"""Official KARL checkpoints (ShivamDuggal4/karl, `karl_small_vqgan_quantized_latents.pth`) -> `zoo` KARL.

The official loaders read `torch.load(path)["ema"]` into `karl_small(...)` with `strict=False`. Here:

* the container is read with `torch.load(weights_only=True)` (training checkpoints also hold an
  `argparse.Namespace`, the one extra class allowed) and the state is `["ema"]`, else `["model"]`, else the file;
* `config` is the folder with the official yaml files, `karl_vqgan.yaml` (KARL kwargs) and `vqgan.yaml` (the base
  VQGAN's taming config), plus an optional `fixture_overrides.json` (the shared fixture's shrunken size tables),
  or a dict `{"karl": ..., "vqgan": ..., "overrides": ...}`, or None (the release files' values);
* sizes come from the tensor shapes; head counts, which shapes cannot give, from the official preset tables
  (`karl_small`: width 1024, 8 layers, 8 heads on both sides) with the overrides applied, and the config values must
  agree with the shapes;
* every tensor must map and every parameter must be filled. The stage-2 discriminators and LPIPS networks
  (`gan_losses.*`, in the EMA of a full-finetuning run) are dropped with a note. Continuous-latent and VAE-base
  checkpoints are refused by name.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule, check_complete
from zoo.registry import register_converter

__all__ = ["PRESETS", "KARLConverter", "infer_kwargs", "keymap", "read_checkpoint", "read_config"]

# kolmogorov_tokenizers/__init__.py: the module-level size tables and what each preset reads from them
WIDTH = {"small": 512, "base": 768, "semi_large": 1024}
NUM_LAYERS = {"small": 8, "base": 12, "semi_large": 16}
NUM_HEADS = {"small": 8, "base": 12, "semi_large": 16}
# preset -> (encoder width, layers, heads, decoder width, layers, heads) as table keys
PRESETS = {
    "karl_tiny": ("small", "small", "small", "small", "small", "small"),
    "karl_small": ("semi_large", "small", "small", "semi_large", "small", "small"),
    "karl_small_decoder_semilarge": ("semi_large", "small", "small", "semi_large", "semi_large", "semi_large"),
    "karl_small_decoder_base": ("semi_large", "small", "small", "base", "base", "base"),
    "karl_small_decoder_small": ("semi_large", "small", "small", "small", "small", "small"),
    "karl_base": ("base", "base", "base", "base", "base", "base"),
    "karl_semilarge": ("semi_large", "semi_large", "semi_large", "semi_large", "semi_large", "semi_large"),
}
RELEASE_PRESET = "karl_small"  # every released checkpoint
# the official constants the architecture shares with every release
FULL_BUDGET = 256  # `sample_token_counts` in training / the README budget
VQGAN_NORM_GROUPS = 32
# karl_vqgan.yaml keys: which the model reads, which only training reads
_KARL_MODEL_KEYS = {"vq_codebook_size", "vq_token_dim", "vq_use_l2_norm", "patch_size", "max_grid_tokens"}
_KARL_TRAINING_KEYS = {"vq_commitment_cost", "dynamic_halting", "dynamic_halting_threshold", "num_init_latent_tokens",
                       "max_rollout_iters", "quantize_latent", "factorize_latent", "train_stage"}


# -- reading --------------------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint: `ema`, else `model`, else the file itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no KARL checkpoint at {path}; download karl_small_vqgan_quantized_latents.pth (the Dropbox links in "
            "kolmogorov_tokenizers/pretrained_models/download.py of ShivamDuggal4/karl) and pass its local path"
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal is reported the same way
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: {err}. zoo never "
            "executes pickled code; re-save checkpoint['ema'] as plain tensors."
        ) from None
    if not isinstance(data, dict):
        raise TypeError(f"{path} holds a {type(data).__name__}, expected a dict (checkpoint or state dict)")
    for key in ("ema", "model"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state or len(state) != len(data):
        others = sorted(k for k, v in data.items() if not isinstance(v, torch.Tensor))[:8]
        raise ValueError(f"{path} is not a KARL state dict: expected tensors under 'ema' or 'model', found "
                         f"non-tensor entries {others}")
    return state


def _load_yaml(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise TypeError(f"{path} is not a mapping")
    return data


def read_config(config: str | Path | dict | None) -> dict:
    """`{"karl": karl_vqgan.yaml, "vqgan": vqgan.yaml's model.params, "overrides": fixture_overrides.json}`."""
    if config is None:
        return {"karl": {}, "vqgan": {}, "overrides": {}}
    if isinstance(config, dict):
        unknown = set(config) - {"karl", "vqgan", "overrides"}
        if unknown:
            raise ValueError(f"a KARL config dict has keys karl, vqgan, overrides; got unknown {sorted(unknown)}")
        out = {"karl": dict(config.get("karl") or {}), "vqgan": dict(config.get("vqgan") or {}),
               "overrides": dict(config.get("overrides") or {})}
    else:
        folder = Path(config)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"config must be the folder holding the official karl_vqgan.yaml and vqgan.yaml "
                f"(kolmogorov_tokenizers/configs/ and base_tokenizers/configs/ of ShivamDuggal4/karl); got {folder}"
            )
        missing = [n for n in ("karl_vqgan.yaml", "vqgan.yaml") if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {missing}; copy them from the official repository")
        out = {"karl": _load_yaml(folder / "karl_vqgan.yaml"), "vqgan": _load_yaml(folder / "vqgan.yaml"),
               "overrides": {}}
        if (folder / "fixture_overrides.json").is_file():
            out["overrides"] = json.loads((folder / "fixture_overrides.json").read_text())
    vqgan = out["vqgan"]
    if "model" in vqgan:  # the file's layout: model.params (+ ddconfig)
        vqgan = dict((vqgan["model"] or {}).get("params") or {})
    out["vqgan"] = vqgan
    return out


# -- shapes -------------------------------------------------------------------------------------------------------
_VQGAN = "base_tokenizer.vqgan."


def _indices(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key}, which every KARL checkpoint has; is it a KARL file?")
    return tuple(state[key].shape)


def _check_kind(state: dict[str, torch.Tensor]) -> None:
    if any(k.startswith("base_tokenizer.vae.") for k in state):
        raise ValueError("this is a VAE-base KARL checkpoint (base_tokenizer.vae.*); zoo implements the VQGAN-base "
                         "release only (karl_small_vqgan_quantized_latents.pth)")
    if "quantize.embedding.weight" not in state:
        raise ValueError("the checkpoint has no latent codebook (quantize.embedding.weight): a continuous-latent KARL "
                         "gives no discrete tokens; use a *_quantized_latents.pth release")


def _sizes(config: dict, width: tuple[int, int], depth: tuple[int, int]) -> tuple[int, int]:
    """(encoder heads, decoder heads) from the preset and size tables, checked against the shapes."""
    overrides = config["overrides"]
    tables = {"width": dict(WIDTH), "num_layers": dict(NUM_LAYERS), "num_heads": dict(NUM_HEADS)}
    for name, table in (overrides.get("size_tables") or {}).items():
        if not isinstance(table, dict):  # e.g. a "comment" string
            continue
        if name not in tables:
            raise ValueError(f"fixture_overrides size_tables has an unknown table {name!r}")
        tables[name].update({k: int(v) for k, v in table.items() if k in tables[name]})
    preset = overrides.get("preset", RELEASE_PRESET)
    if preset not in PRESETS:
        raise ValueError(f"unknown KARL preset {preset!r}; known: {sorted(PRESETS)}")
    keys = PRESETS[preset]
    heads = []
    for side, (w_key, l_key, h_key), w, d in (("encoder", keys[:3], width[0], depth[0]),
                                               ("decoder", keys[3:], width[1], depth[1])):
        expected = (tables["width"][w_key], tables["num_layers"][l_key])
        if expected != (w, d):
            raise ValueError(f"the checkpoint's {side} is {w} wide with {d} layers, but preset {preset} gives "
                             f"{expected}; name the preset (and size tables) in fixture_overrides.json")
        heads.append(tables["num_heads"][h_key])
    return heads[0], heads[1]


def infer_kwargs(state: dict[str, torch.Tensor], config: dict | None = None) -> dict[str, Any]:
    """`KARL` constructor kwargs for an official state dict and config (see `read_config`)."""
    config = read_config(config) if not (isinstance(config, dict) and "overrides" in config) else config
    _check_kind(state)
    karl, vq, overrides = config["karl"], config["vqgan"], config["overrides"]
    enc_w, dec_w = _shape(state, "latent_tokens")[1], _shape(state, "decoder_mask_token")[2]
    enc_d, dec_d = len(_indices(state, "encoder.transformer.")), len(_indices(state, "decoder.transformer."))
    enc_h, dec_h = _sizes(config, (enc_w, dec_w), (enc_d, dec_d))
    patch = _shape(state, "patch_embed.weight")
    channels = _shape(state, _VQGAN + "encoder.conv_in.weight")[0]
    levels = _indices(state, _VQGAN + "encoder.down.")
    blocks = _indices(state, _VQGAN + "encoder.down.0.block.")
    ch_mult = [_shape(state, f"{_VQGAN}encoder.down.{i}.block.{blocks[-1]}.conv2.weight")[0] // channels
               for i in levels]
    vq_dim = _shape(state, _VQGAN + "quantize.embedding.weight")[1]
    grid = int((overrides.get("resolved_sizes") or {}).get("grid", [16])[0])  # asserted 16 x 16 by the official code
    kwargs = {
        "image_size": int((overrides.get("resolved_sizes") or {}).get("image_size", grid * patch[-1])),
        "patch_size": patch[-1],
        "encoder_width": enc_w, "encoder_depth": enc_d, "encoder_heads": enc_h,
        "decoder_width": dec_w, "decoder_depth": dec_d, "decoder_heads": dec_h,
        "codebook_size": _shape(state, "quantize.embedding.weight")[0],
        "codebook_dim": _shape(state, "quantize.embedding.weight")[1],
        "max_grid_tokens": _shape(state, "encoder_positional_embedding")[1],
        "max_latent_tokens": _shape(state, "latent_tokens")[0],
        "halting_hidden": _shape(state, "halting_mlp.0.weight")[0],
        "full_budget": FULL_BUDGET,
        "vqgan_channels": channels,
        "vqgan_ch_mult": ch_mult,
        "vqgan_num_res_blocks": len(blocks),
        "vqgan_dim": vq_dim,
        "vqgan_codebook_size": _shape(state, _VQGAN + "quantize.embedding.weight")[0],
        "vqgan_norm_groups": VQGAN_NORM_GROUPS,
    }
    _check_config(kwargs, karl, vq, overrides, patch)
    return kwargs


def _check_config(kwargs: dict, karl: dict, vq: dict, overrides: dict, patch: tuple[int, ...]) -> None:
    """The official yaml values must agree with the shapes; options this implementation lacks are refused."""
    unknown = sorted(set(karl) - _KARL_MODEL_KEYS - _KARL_TRAINING_KEYS)
    if unknown:
        raise ValueError(f"unknown karl_vqgan.yaml options {unknown}; this converter knows the KARLTokenizer kwargs")
    if not karl.get("vq_use_l2_norm", True):
        raise ValueError("vq_use_l2_norm: False is not supported; every release uses the l2-normalised latent VQ")
    checks = {"vq_codebook_size": kwargs["codebook_size"], "vq_token_dim": kwargs["codebook_dim"],
              "patch_size": kwargs["patch_size"], "max_grid_tokens": kwargs["max_grid_tokens"]}
    dd = dict(vq.get("ddconfig") or {})
    checks_vq = {"n_embed": ("vqgan_codebook_size", vq.get("n_embed")),
                 "embed_dim": ("vqgan_dim", vq.get("embed_dim")),
                 "z_channels": ("vqgan_dim", dd.get("z_channels")), "ch": ("vqgan_channels", dd.get("ch")),
                 "num_res_blocks": ("vqgan_num_res_blocks", dd.get("num_res_blocks"))}
    problems = [f"karl_vqgan.yaml {k}={karl[k]} but the checkpoint has {v}" for k, v in checks.items()
                if k in karl and int(karl[k]) != v]
    problems += [f"vqgan.yaml {k}={value} but the checkpoint has {kwargs[ours]}"
                 for k, (ours, value) in checks_vq.items() if value is not None and int(value) != kwargs[ours]]
    if "ch_mult" in dd and list(dd["ch_mult"]) != kwargs["vqgan_ch_mult"]:
        problems.append(f"vqgan.yaml ch_mult={list(dd['ch_mult'])} but the checkpoint has {kwargs['vqgan_ch_mult']}")
    if dd.get("double_z", False):
        problems.append("vqgan.yaml double_z: True is not the MAGE VQGAN (a KL autoencoder?)")
    if dd.get("resolution") is not None and int(dd["resolution"]) != kwargs["image_size"]:
        problems.append(f"vqgan.yaml resolution={dd['resolution']} but the model runs at {kwargs['image_size']}")
    base_args = overrides.get("base_tokenizer_args") or {}
    if base_args.get("id", "vqgan") != "vqgan":
        problems.append(f"base_tokenizer_args id={base_args['id']!r}: only the VQGAN base is implemented")
    if "embed_dim" in base_args and int(base_args["embed_dim"]) != kwargs["vqgan_dim"]:
        problems.append(f"base_tokenizer_args embed_dim={base_args['embed_dim']} but the VQGAN has {kwargs['vqgan_dim']}")
    if patch[1] != 3 or patch[0] != kwargs["encoder_width"] - kwargs["vqgan_dim"]:
        problems.append(f"patch_embed {patch} should map 3 channels to encoder width - VQGAN dim "
                        f"({kwargs['encoder_width']} - {kwargs['vqgan_dim']})")
    if problems:
        raise ValueError("the KARL config does not match the checkpoint:\n  " + "\n  ".join(problems))


# -- key mapping ----------------------------------------------------------------------------------------------------
_BLOCK = (("ln_1.{p}", "norm1.{p}"), ("attn.in_proj_weight", "attn.qkv.weight"), ("attn.in_proj_bias", "attn.qkv.bias"),
          ("attn.out_proj.{p}", "attn.proj.{p}"), ("ln_2.{p}", "norm2.{p}"), ("mlp.c_fc.{p}", "mlp.fc1.{p}"),
          ("mlp.c_proj.{p}", "mlp.fc2.{p}"))
_RES = "{m:norm1|conv1|norm2|conv2|nin_shortcut}.{p}"


def _vqgan_rules(official: str, ours: str) -> list[Rule]:
    """The MAGE VQGAN's taming names (under `official`) -> ours (under `ours`)."""
    return [
        Rule(official + "{s:encoder|decoder}.{m:conv_in|norm_out|conv_out}.{p}", ours + "{s}.{m}.{p}"),
        Rule(official + "{s:encoder|decoder}.mid.block_1." + _RES, ours + "{s}.mid.0.{m}.{p}"),
        Rule(official + "{s:encoder|decoder}.mid.block_2." + _RES, ours + "{s}.mid.1.{m}.{p}"),
        Rule(official + "encoder.down.{i}.block.{j}." + _RES, ours + "encoder.levels.{i}.blocks.{j}.{m}.{p}"),
        Rule(official + "decoder.up.{i}.block.{j}." + _RES, ours + "decoder.levels.{i}.blocks.{j}.{m}.{p}"),
        Rule(official + "decoder.up.{i}.upsample.conv.{p}", ours + "decoder.levels.{i}.upsample.{p}"),
        Rule(official + "quantize.embedding.weight", ours + "quantizer.embed"),
    ]

KEYMAP = KeyMap(
    [Rule(f"{side}.transformer.{{i}}.{a}", f"{side}.blocks.{{i}}.{b}") for side in ("encoder", "decoder")
     for a, b in _BLOCK]
    + [
        Rule("encoder_positional_embedding", "encoder.pos_embed"),
        Rule("latent_tokens", "encoder.latent_tokens"),
        Rule("rec_loss_embeddings", "encoder.error_embeddings"),
        Rule("patch_embed.{p}", "encoder.patch_embed.{p}"),
        Rule("encoder_ln_pre.{p}", "encoder.norm_in.{p}"),
        Rule("encoder_ln_post_halt.{p}", "encoder.halt_norm.{p}"),
        Rule("encoder_ln_post.{p}", "encoder.quant_norm.{p}"),
        Rule("halting_mlp.0.{p}", "encoder.halting_mlp.fc1.{p}"),
        Rule("halting_mlp.2.{p}", "encoder.halting_mlp.fc2.{p}"),
        Rule("pre_quantizer_mlp.{p}", "encoder.quant_proj.{p}"),
        Rule("quantize.embedding.weight", "quantizer.embed"),
        Rule("decoder_embed.{p}", "decoder.latent_proj.{p}"),
        Rule("decoder_latent_tokens_timestep_embed", "decoder.latent_pos_embed"),
        Rule("decoder_mask_token", "decoder.mask_token"),
        Rule("decoder_positional_embedding", "decoder.pos_embed"),
        Rule("decoder.ln_pre.{p}", "decoder.norm_in.{p}"),
        Rule("decoder.ln_post.{p}", "decoder.norm_out.{p}"),
        Rule("decoder.ffn.0.{p}", "decoder.head.fc1.{p}"),
        Rule("decoder.ffn.2.{p}", "decoder.head.fc2.{p}"),
    ]
    + _vqgan_rules(_VQGAN, "vqgan.")
    + [
        # stage-2 training modules kept in the EMA: 8 x (LPIPS + PatchGAN); never used by inference
        Rule("gan_losses.{rest:*}", None),
    ]
)


def keymap() -> KeyMap:
    """The official <-> zoo key table of KARL (VQGAN base)."""
    return KEYMAP


@register_converter("karl")
class KARLConverter(Converter):
    """An official KARL checkpoint (`.pth`, or a loaded state dict) and its config folder -> `KARL`."""

    def read(self, checkpoint: str | Path | dict, config: Any = None) -> OfficialCheckpoint:
        if isinstance(checkpoint, dict):
            state, source = dict(checkpoint), "<state dict>"
        else:
            state, source = read_checkpoint(checkpoint), str(checkpoint)
        return OfficialCheckpoint("karl", state, read_config(config), source)

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        return infer_kwargs(raw.state, raw.config)

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        ours, dropped, unknown = KEYMAP.to_ours(raw.state)
        if unknown:
            raise ValueError(
                f"the KARL checkpoint has {len(unknown)} tensors this converter does not know: {unknown[:12]}"
                f"{' ...' if len(unknown) > 12 else ''}. Is it a KARL VQGAN-base quantised-latent checkpoint?"
            )
        if dropped:
            warnings.warn(f"ignoring {len(dropped)} stage-2 training tensors (gan_losses.*: the discriminators and "
                          "LPIPS networks of full fine-tuning); inference does not use them", stacklevel=3)
        check_complete(ours, model.state_dict(), "KARL conversion mismatch")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return KEYMAP.to_official(model.state_dict())


# -- the base VQGAN on its own (MAGE's vqgan.ckpt) ---------------------------------------------------------------------
VQGAN_KEYMAP = KeyMap(_vqgan_rules("", "vqgan."))


def read_vqgan_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """MAGE's `vqgan.ckpt` (a taming `VQModel` state dict, top level or under `state_dict`), weights_only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no VQGAN checkpoint at {path}; download MAGE's vqgan.ckpt (Google Drive id "
            "13S_unB87n6KKuuMdyMnyExW0G1kplTbP, base_tokenizers/pretrained_models/download.py of ShivamDuggal4/karl)"
        )
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: "
                         f"{err}. zoo never executes pickled code; re-save the state dict as plain tensors.") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} is not a VQGAN state dict of tensors")
    return dict(data)


def infer_vqgan_kwargs(state: dict[str, torch.Tensor], vqgan_yaml: dict | None = None) -> dict[str, Any]:
    """`KARLVQGAN` kwargs for a MAGE VQGAN state dict (and its `vqgan.yaml` model.params, if given)."""
    prefixed = {_VQGAN + k: v for k, v in state.items()}
    channels = _shape(prefixed, _VQGAN + "encoder.conv_in.weight")[0]
    levels = _indices(prefixed, _VQGAN + "encoder.down.")
    blocks = _indices(prefixed, _VQGAN + "encoder.down.0.block.")
    kwargs = {
        "channels": channels,
        "ch_mult": [_shape(prefixed, f"{_VQGAN}encoder.down.{i}.block.{blocks[-1]}.conv2.weight")[0] // channels
                    for i in levels],
        "num_res_blocks": len(blocks),
        "z_channels": _shape(prefixed, _VQGAN + "quantize.embedding.weight")[1],
        "codebook_size": _shape(prefixed, _VQGAN + "quantize.embedding.weight")[0],
        "norm_groups": VQGAN_NORM_GROUPS,
    }
    params = dict(vqgan_yaml or {})
    if "model" in params:
        params = dict((params["model"] or {}).get("params") or {})
    dd = dict(params.get("ddconfig") or {})
    kwargs["image_size"] = int(dd.get("resolution", 256))
    for name, ours in (("ch", "channels"), ("num_res_blocks", "num_res_blocks"), ("z_channels", "z_channels")):
        if name in dd and int(dd[name]) != kwargs[ours]:
            raise ValueError(f"vqgan.yaml {name}={dd[name]} but the checkpoint has {kwargs[ours]}")
    if "n_embed" in params and int(params["n_embed"]) != kwargs["codebook_size"]:
        raise ValueError(f"vqgan.yaml n_embed={params['n_embed']} but the checkpoint has {kwargs['codebook_size']}")
    if "ch_mult" in dd and list(dd["ch_mult"]) != kwargs["ch_mult"]:
        raise ValueError(f"vqgan.yaml ch_mult={list(dd['ch_mult'])} but the checkpoint has {kwargs['ch_mult']}")
    return kwargs


@register_converter("karl-vqgan")
class KARLVQGANConverter(Converter):
    """MAGE's `vqgan.ckpt` (KARL's base tokenizer before fine-tuning) and optionally its `vqgan.yaml` -> `KARLVQGAN`.

    `config` is the yaml file (or its parsed dict). The checkpoint is a plain taming `VQModel` state dict that the
    official wrapper loads strictly: `encoder.*`, `decoder.*`, `quantize.embedding.weight`."""

    training_kwargs = frozenset({"dead_code_threshold", "kmeans_init"})

    def read(self, checkpoint: str | Path | dict, config: Any = None) -> OfficialCheckpoint:
        if isinstance(checkpoint, dict):
            state, source = dict(checkpoint), "<state dict>"
        else:
            state, source = read_vqgan_checkpoint(checkpoint), str(checkpoint)
        if config is not None and not isinstance(config, dict):
            config = _load_yaml(Path(config))
        return OfficialCheckpoint("karl-vqgan", state, config, source)

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        return infer_vqgan_kwargs(raw.state, raw.config)

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        ours, _, unknown = VQGAN_KEYMAP.to_ours(raw.state)
        if unknown:
            raise ValueError(f"the VQGAN checkpoint has {len(unknown)} tensors this converter does not know: "
                             f"{unknown[:12]}{' ...' if len(unknown) > 12 else ''}")
        check_complete(ours, model.state_dict(), "MAGE VQGAN conversion mismatch")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return VQGAN_KEYMAP.to_official(model.state_dict())
