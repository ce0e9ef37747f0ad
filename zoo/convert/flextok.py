"""Official FlexTok checkpoints (apple/ml-flextok, hub repos `EPFL-VILAB/flextok_*`) -> `zoo` FlexTok.

A release is a `model.safetensors` whose header `__metadata__` holds the hydra config (each entry the Python `str()`
of a dict), and/or a hub `config.json` with the same entries; the VAE comes from a diffusers `AutoencoderKL` folder
named by `vae.hf_hub_path`. The config is a data-flow program: `module_dict`s run in order and pass tensors through
named keys. `interpret` walks it in that order (never sorted), checks that it is the FlexTok wiring this package
implements, and translates it into plain constructor kwargs plus a key map. Anything it does not recognise (a class,
an argument value, a data-flow connection, a checkpoint tensor) is refused with the full list of problems.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.registry import register_converter

__all__ = ["FlexTokConverter", "OfficialWiringError", "interpret", "read_official_config"]

_P = "flextok.model."
_TARGETS = {
    "per_sample_op": _P + "utils.dict_ops.PerSampleOp",
    "cf_to_cl": _P + "utils.dict_ops.channels_first_to_last",
    "cl_to_cf": _P + "utils.dict_ops.channels_last_to_first",
    "patch_emb": _P + "preprocessors.patching.PatchEmbedder",
    "posemb": _P + "utils.posembs.PositionalEmbeddingAdder",
    "registers": _P + "preprocessors.registers.Registers1D",
    "packer": _P + "preprocessors.flex_seq_packing.BlockWiseSequencePacker",
    "transformer": _P + "trunks.transformers.FlexTransformer",
    "unpacker": _P + "postprocessors.seq_unpacking.SequenceUnpacker",
    "linear_head": _P + "postprocessors.heads.LinearHead",
    "patch_head": _P + "postprocessors.heads.ToPatchesLinearHead",
    "linear": _P + "preprocessors.linear.LinearLayer",
    "nested_dropout": _P + "preprocessors.token_dropout.MaskedNestedDropout",
    "learned_null": _P + "preprocessors.nullcond.LearnedNullCond",
    "zero_null": _P + "preprocessors.nullcond.ZeroNullCond",
    "time": _P + "preprocessors.time_embedding.TimestepEmbedder",
    "wrapper": _P + "utils.wrappers.SequentialModuleDictWrapper",
    "vae": "flextok.vae_wrapper.StableDiffusionVAE",
    "fsq": "flextok.regularizers.quantize_fsq.FSQ",
    "noise": "flextok.flow_matching.noise_modules.MinRFNoiseModule",
    "pipeline": "flextok.flow_matching.pipelines.MinRFPipeline",
    "model": "flextok.flextok_wrapper.FlexTok",
    "model_hub": "flextok.flextok_wrapper.FlexTokFromHub",
}
_KIND = {v: k for k, v in _TARGETS.items()}
_TOP_LEVEL = ("vae", "encoder", "decoder", "regularizer", "flow_matching_noise_module", "pipeline")
# arguments that only affect initialisation, compilation or training-time memory
_IGNORED_ARGS = {"weight_init_style", "compile_block_mask", "use_act_checkpoint", "compile_encode_fn", "frozen",
                 "force_vae_encode", "dtype_override", "logvar_init", "return_materialized_mask"}


class OfficialWiringError(ValueError):
    """The official config or checkpoint uses something this implementation does not reproduce."""


# -- reading ------------------------------------------------------------------------------------------------------
def _parse_value(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    if value.lstrip().startswith("{"):
        import yaml

        try:
            return yaml.safe_load(value.replace("None", "null"))
        except yaml.YAMLError:
            pass
    return value


def _safetensors_metadata(path: Path) -> dict[str, str]:
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    return header.get("__metadata__") or {}


def _unwrap(config: dict) -> dict:
    if "config" in config and isinstance(config["config"], dict) and "encoder" in config["config"]:
        return config["config"]
    return config


def read_official_config(checkpoint: str | Path, config: str | Path | dict | None = None) -> tuple[Path, dict, str]:
    """Locate the weights file and the hydra config; returns `(safetensors path, config, where it came from)`.

    Order: an explicit `config` (dict or `config.json`), else the safetensors metadata, else a `config.json` next to
    the weights. JSON objects keep their file order (Python dicts are ordered), which is the module execution order.
    """
    path = Path(checkpoint)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if (path / "model.safetensors").exists():
            files = [path / "model.safetensors"]
        if len(files) != 1:
            raise FileNotFoundError(
                f"{path} must hold model.safetensors (the official FlexTok checkpoint); found {[f.name for f in files]}"
            )
        path = files[0]
    if not path.exists():
        raise FileNotFoundError(f"no FlexTok checkpoint at {path}")
    if path.suffix != ".safetensors":
        raise ValueError(f"official FlexTok checkpoints are .safetensors files, got {path.name}")
    if isinstance(config, dict):
        return path, _unwrap(config), "the given dict"
    if config is not None:
        cfg_path = Path(config)
        cfg_path = cfg_path / "config.json" if cfg_path.is_dir() else cfg_path
        return path, _unwrap(json.loads(cfg_path.read_text())), str(cfg_path)
    meta = _safetensors_metadata(path)
    if any(key in meta for key in _TOP_LEVEL):
        return path, {k: _parse_value(v) for k, v in meta.items()}, f"{path.name} metadata"
    sibling = path.parent / "config.json"
    if sibling.exists():
        return path, _unwrap(json.loads(sibling.read_text())), str(sibling)
    raise FileNotFoundError(
        f"{path} has no hydra config in its metadata and there is no config.json beside it; pass "
        "config=<the release's config.json>"
    )


# -- interpreting -------------------------------------------------------------------------------------------------
@dataclass
class _Program:
    """State of the symbolic run: what each data-dict key holds, the kwargs found and the key map."""

    kinds: dict[str, str] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    keymap: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None]] = field(default_factory=list)
    fused: list[tuple[list[str], str]] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)  # (official key, what to compare it to)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def read(self, where: str, key: Any, *expected: str) -> str | None:
        kind = self.kinds.get(key)
        if kind is None:
            written = ", ".join(f"{k}={v}" for k, v in self.kinds.items()) or "nothing yet"
            self.problems.append(
                f"{where} reads {key!r} before any module writes it (written so far: {written}). If the config came "
                "from a config.json written with sort_keys, its module order is alphabetical: use the safetensors "
                "metadata or an order-preserving config.json"
            )
            return None
        if expected and kind not in expected:
            self.problems.append(f"{where} reads {key!r} holding {kind}, expected {' or '.join(expected)}")
            return None
        return kind

    def write(self, key: Any, kind: str) -> None:
        self.kinds[key] = kind

    def set(self, where: str, name: str, value: Any) -> None:
        if name in self.kwargs and self.kwargs[name] != value:
            self.problems.append(f"{where}: {name}={value!r} conflicts with {self.kwargs[name]!r} set earlier")
        self.kwargs[name] = value

    def want(self, where: str, args: dict, name: str, allowed: Any, default: Any = None) -> None:
        value = args.get(name, default)
        options = allowed if isinstance(allowed, tuple) else (allowed,)
        if value not in options:
            self.problems.append(f"{where}: {name}={value!r} is not supported (supported: {options})")


def _target(cfg: Any) -> str:
    return cfg.get("_target_", "<no _target_>") if isinstance(cfg, dict) else f"<{type(cfg).__name__}>"


def _known_args(kind: str) -> set[str] | None:
    """Constructor arguments of the official classes (read from apple/ml-flextok @ 87d00cc)."""
    args = {
        "per_sample_op": "read_key write_key per_sample_op",
        "patch_emb": "input_tensor_list_read_key patches_list_write_key n_patches_write_key patch_sizes channels_in "
                     "dim flatten_patches weight_init_style",
        "posemb": "read_key write_key dim max_sizes posemb_type posemb_scaling posemb_write_key",
        "registers": "input_tensor_list_read_key register_sizes_read_write_key registers_write_key dim n_min n_max "
                     "n_eval size_sampling_mode ordering_mode extra_registers_write_key extra_registers_dim",
        "packer": "input_list_read_keys packed_seq_write_key block_mask_write_key inner_packed_shapes_write_key "
                  "outer_packed_shapes_write_key mask_mode max_seq_len pad_to_multiple emb_packing_fn_write_key "
                  "per_subseq_embs compile_block_mask return_materialized_mask",
        "transformer": "input_seq_read_key output_seq_write_key dim depth head_dim mlp_ratio qkv_bias proj_bias "
                       "mlp_bias drop drop_path_rate act_layer norm_layer gated_mlp qk_norm use_act_checkpoint "
                       "weight_init_style zero_init_query_proj block_mask_read_key score_mod_read_key "
                       "adaLN_emb_read_key adaLN_packing_fn_read_key adaLN_expansion rope_forward_read_key "
                       "intermediate_layer_write_key intermediate_layers",
        "unpacker": "packed_seq_read_key inner_seq_write_keys inner_packed_shapes_read_key "
                    "outer_packed_shapes_read_key",
        "linear_head": "read_key write_key dim dim_out use_mup_readout weight_init_style norm_layer dtype_override "
                       "adaLN_emb_read_key adaLN_packing_fn_read_key adaLN_bias proj_bias",
        "patch_head": "read_key write_key dim channels_out patch_sizes use_mup_readout weight_init_style norm_layer "
                      "dtype_override adaLN_emb_read_key adaLN_packing_fn_read_key adaLN_bias proj_bias",
        "linear": "read_key write_key dim_in dim weight_init_style dtype_override proj_bias",
        "nested_dropout": "read_write_key dim eval_keep_k_read_key train_keep_k_write_key size_sampling_mode",
        "learned_null": "read_write_key dim eval_drop_flag_read_key dropout_prob replace_with_single_token",
        "zero_null": "read_write_key eval_drop_flag_read_key dropout_prob",
        "time": "timesteps_read_key time_embedding_write_key dim frequency_embedding_size weight_init_style "
                "max_timestep temb_as_tokens",
        "vae": "images_read_key vae_latents_read_key vae_latents_write_key images_reconst_write_key "
               "vae_kl_loss_write_key latent_channels scaling_factor dtype_override hf_hub_path sample_posterior "
               "learnable_logvar logvar_init compile_encode_fn force_vae_encode frozen",
        "fsq": "latents_read_key quants_write_key tokens_write_key levels drop_quant_p corrupt_tokens_p "
               "min_corrupt_tokens_p apply_corrupt_tokens_p packed_call",
        "noise": "clean_images_read_key noised_images_write_key timesteps_write_key sigmas_write_key ln stratisfied "
                 "mode_scale noise_write_key noise_read_key",
        "pipeline": "noise_read_key target_sizes_read_key latents_read_key timesteps_read_key noised_images_read_key "
                    "reconst_write_key out_channels",
    }.get(kind)
    return None if args is None else set(args.split()) | {"_target_", "_partial_"}


def _square(where: str, prog: _Program, sizes: Any, what: str) -> int | None:
    if not (isinstance(sizes, (list, tuple)) and len(sizes) == 2 and sizes[0] == sizes[1]):
        prog.problems.append(f"{where}: {what}={sizes!r}; only square 2D sizes are supported")
        return None
    return int(sizes[0])


def _transformer_keys(prog: _Program, official: str, ours: str, depth: int, args: dict, adaln: bool) -> None:
    for i in range(depth):
        o, z = f"{official}.blocks.{i}", f"{ours}.blocks.{i}"
        prog.fused.append(([f"{o}.attn.wq.weight", f"{o}.attn.wk.weight", f"{o}.attn.wv.weight"],
                           f"{z}.attn.qkv.weight"))
        if args.get("qkv_bias", False):
            prog.fused.append(([f"{o}.attn.wq.bias", f"{o}.attn.wk.bias", f"{o}.attn.wv.bias"], f"{z}.attn.qkv.bias"))
        names = ["attn.proj.weight"] + (["attn.proj.bias"] if args.get("proj_bias", False) else [])
        fcs = ("fc1", "fc2", "fc3") if args.get("gated_mlp", True) else ("fc1", "fc2")
        for fc in fcs:
            names.append(f"mlp.{fc}.weight")
            if args.get("mlp_bias", False):
                names.append(f"mlp.{fc}.bias")
        if adaln:
            names += ["adaLN_modulation.1.weight", "adaLN_modulation.1.bias"]
        for name in names:
            prog.keymap.append((f"{o}.{name}", f"{z}.{name}", None))


def _handle_transformer(where: str, prog: _Program, args: dict, side: str, official: str) -> None:
    prefix = "encoder" if side == "enc" else "decoder"
    prog.read(where, args.get("input_seq_read_key"), f"{side}_packed")
    if args.get("block_mask_read_key") != prog.kwargs.get(f"_{side}_mask_key"):
        prog.problems.append(f"{where}: block_mask_read_key={args.get('block_mask_read_key')!r} is not the mask "
                             f"written by the sequence packer ({prog.kwargs.get(f'_{side}_mask_key')!r})")
    for name in ("score_mod_read_key", "rope_forward_read_key"):
        prog.want(where, args, name, None)
    prog.want(where, args, "act_layer", None)
    prog.want(where, args, "norm_layer", None)
    prog.want(where, args, "zero_init_query_proj", False, False)
    depth, dim, head_dim = int(args.get("depth", 12)), int(args.get("dim", 768)), int(args.get("head_dim", 64))
    prog.set(where, f"{prefix}_dim", dim)
    prog.set(where, f"{prefix}_depth", depth)
    prog.set(where, f"{prefix}_head_dim", head_dim)
    for name, default in (("mlp_ratio", 4.0), ("gated_mlp", True), ("qkv_bias", False), ("proj_bias", False),
                          ("mlp_bias", False), ("qk_norm", True)):
        prog.set(where, name, args.get(name, default))
    if args.get("drop", 0.0) or args.get("drop_path_rate", 0.0):
        prog.notes.append(f"{where}: dropout / drop-path rates are training-only and were not carried over")
    if args.get("intermediate_layers"):
        prog.notes.append(f"{where}: intermediate_layers={args['intermediate_layers']} (REPA features) carry no "
                          "weights; set repa_layer yourself to train with REPA")
    adaln = args.get("adaLN_emb_read_key") is not None
    if side == "enc" and adaln:
        prog.problems.append(f"{where}: an adaLN-conditioned encoder is not supported")
    if side == "dec":
        if not adaln:
            prog.problems.append(f"{where}: the decoder transformer must be adaLN-conditioned on the time embedding")
        else:
            prog.read(where, args["adaLN_emb_read_key"], "temb")
            expansion = int(args.get("adaLN_expansion", 1))
            packing = prog.read(where, args.get("adaLN_packing_fn_read_key"), "packing_fn", "packing_fn_subseq")
            if expansion == 2 and packing != "packing_fn_subseq":
                prog.problems.append(f"{where}: adaLN_expansion=2 needs the packer's per_subseq_embs=True")
            elif expansion == 1 and packing != "packing_fn":
                prog.problems.append(f"{where}: adaLN_expansion=1 needs the packer's per_subseq_embs=False")
            elif expansion not in (1, 2):
                prog.problems.append(f"{where}: adaLN_expansion={expansion} is not supported (1 or 2)")
            prog.set(where, "adaln_groups", expansion)
    prog.write(args.get("output_seq_write_key"), f"{side}_packed_out")
    _transformer_keys(prog, official, f"{prefix}", depth, args, adaln)


@dataclass
class _Module:
    """One `module_dict` entry being interpreted: where it is, its official key prefix and arguments."""

    where: str
    official: str
    kind: str
    args: dict
    side: str
    prog: _Program

    @property
    def prefix(self) -> str:
        return "encoder" if self.side == "enc" else "decoder"


def _on_per_sample_op(m: _Module) -> None:
    where, args, prog = m.where, m.args, m.prog
    op = _KIND.get(_target(args.get("per_sample_op")))
    if op == "cf_to_cl":
        src = prog.read(where, args.get("read_key"), "latents", "noised")
        prog.write(args.get("write_key"), f"{src}_cl")
    elif op == "cl_to_cf":
        prog.read(where, args.get("read_key"), "velocity_cl")
        prog.write(args.get("write_key"), "velocity")
    else:
        prog.problems.append(f"{where}: per_sample_op {_target(args.get('per_sample_op'))} is not supported")


def _on_patch_emb(m: _Module) -> None:
    where, official, args, side, prog, prefix = m.where, m.official, m.args, m.side, m.prog, m.prefix
    want = "latents_cl" if side == "enc" else "noised_cl"
    prog.read(where, args.get("input_tensor_list_read_key"), want)
    prog.set(where, "patch_size", _square(where, prog, args.get("patch_sizes"), "patch_sizes"))
    prog.set(where, "_channels", args.get("channels_in"))
    if args.get("dim") is None:
        prog.problems.append(f"{where}: PatchEmbedder without a projection (dim=None) is not supported")
    prog.write(args.get("patches_list_write_key"), f"{side}_patches")
    for p in ("weight", "bias"):
        prog.keymap.append((f"{official}.patch_proj.{p}", f"{prefix}.patch_embed.{p}", None))


def _on_posemb(m: _Module) -> None:
    where, official, args, side, prog, prefix = m.where, m.official, m.args, m.side, m.prog, m.prefix
    src = prog.read(where, args.get("read_key"), f"{side}_patches", "dec_regs")
    if args.get("write_key") != args.get("read_key"):
        prog.problems.append(f"{where}: a posemb written to another key than it reads is not supported")
    kind_ = args.get("posemb_type", "sincos")
    if src == "dec_regs":
        if prog.kwargs.get("_dec_regs_state") != "projected":
            prog.problems.append(f"{where}: the register posemb must come right after the code projection")
        if kind_ != "learnable_sum" or len(args.get("max_sizes", [])) != 1:
            prog.problems.append(f"{where}: register posemb {kind_} {args.get('max_sizes')} is not supported "
                                 "(learnable_sum over 1 dim)")
        prog.set(where, "register_posemb", "learnable")
        prog.kwargs["_dec_regs_state"] = "posemb"
        prog.keymap.append((f"{official}.posembs", "decoder.register_pos_embed",
                            lambda t: t[0, 0].t()))
    else:
        size = _square(where, prog, args.get("max_sizes"), "max_sizes")
        prog.set(where, "_posemb_size", size)
        if args.get("posemb_scaling", "absolute") != "absolute":
            prog.problems.append(f"{where}: posemb_scaling={args.get('posemb_scaling')!r} is not supported")
        if kind_ not in ("sincos", "learnable_sum", "learnable_prod"):
            prog.problems.append(f"{where}: posemb_type={kind_!r} is not supported")
        prog.set(where, f"{prefix}_posemb", kind_)
        if kind_ == "sincos":
            prog.checks.append((f"{official}.posembs", f"{prefix}.pos_embed.table"))
        else:
            prog.keymap.append((f"{official}.posembs", f"{prefix}.pos_embed.weight",
                                lambda t: t[:, 0].transpose(1, 2)))
        prog.kinds[args.get("read_key")] = f"{side}_patches"


def _on_registers(m: _Module) -> None:
    where, official, args, prog = m.where, m.official, m.args, m.prog
    prog.read(where, args.get("input_tensor_list_read_key"), "enc_patches")
    prog.want(where, args, "ordering_mode", "nested", "nested")
    prog.want(where, args, "extra_registers_write_key", None)
    n_max = int(args.get("n_max", 0))
    if args.get("n_eval") not in (None, n_max):
        prog.problems.append(f"{where}: n_eval={args.get('n_eval')} != n_max={n_max} is not supported")
    prog.set(where, "num_registers", n_max)
    prog.write(args.get("registers_write_key"), "enc_registers")
    prog.keymap.append((f"{official}.registers", "encoder.registers", None))


def _on_packer(m: _Module) -> None:
    where, args, side, prog = m.where, m.args, m.side, m.prog
    inputs = args.get("input_list_read_keys") or []
    want = ["enc_patches", "enc_registers"] if side == "enc" else ["dec_patches", "dec_regs"]
    got = [prog.kinds.get(k) for k in inputs]
    if got != want:
        prog.problems.append(f"{where}: packs {inputs} holding {got}; expected [{', '.join(want)}] in this order")
    if side == "dec" and prog.kwargs.get("_dec_regs_state") not in ("dropout", "nullcond", "posemb"):
        prog.problems.append(f"{where}: decoder registers are packed before nested dropout / null condition")
    mode = args.get("mask_mode", "full")
    if side == "enc":
        if mode not in ("causal_last", "causal", "full"):
            prog.problems.append(f"{where}: mask_mode={mode!r} is not supported")
        prog.set(where, "encoder_mask", mode)
    elif mode != "full":
        prog.problems.append(f"{where}: decoder mask_mode={mode!r} is not supported (full)")
    prog.write(args.get("packed_seq_write_key"), f"{side}_packed")
    prog.kwargs[f"_{side}_mask_key"] = args.get("block_mask_write_key")
    prog.write(args.get("block_mask_write_key"), f"{side}_mask")
    prog.write(args.get("inner_packed_shapes_write_key"), f"{side}_ps_inner")
    prog.write(args.get("outer_packed_shapes_write_key"), f"{side}_ps_outer")
    if args.get("emb_packing_fn_write_key") is not None:
        subseq = bool(args.get("per_subseq_embs", False))
        prog.write(args["emb_packing_fn_write_key"], "packing_fn_subseq" if subseq else "packing_fn")


def _on_transformer(m: _Module) -> None:
    where, official, args, side, prog = m.where, m.official, m.args, m.side, m.prog
    _handle_transformer(where, prog, args, side, official)


def _on_unpacker(m: _Module) -> None:
    where, args, side, prog = m.where, m.args, m.side, m.prog
    prog.read(where, args.get("packed_seq_read_key"), f"{side}_packed_out")
    prog.read(where, args.get("inner_packed_shapes_read_key"), f"{side}_ps_inner")
    prog.read(where, args.get("outer_packed_shapes_read_key"), f"{side}_ps_outer")
    keys = args.get("inner_seq_write_keys") or []
    if len(keys) != 2:
        prog.problems.append(f"{where}: expected two unpacked sequences (patches, registers), got {keys}")
    else:
        prog.write(keys[0], f"{side}_patches_out")
        prog.write(keys[1], f"{side}_registers_out")


def _on_linear_head(m: _Module) -> None:
    where, official, args, side, prog = m.where, m.official, m.args, m.side, m.prog
    if side != "enc":
        prog.problems.append(f"{where}: a LinearHead in the decoder is not supported")
    prog.read(where, args.get("read_key"), "enc_registers_out")
    prog.want(where, args, "use_mup_readout", False, False)
    prog.want(where, args, "norm_layer", None)
    prog.want(where, args, "adaLN_emb_read_key", None)
    prog.want(where, args, "proj_bias", True, True)
    prog.set(where, "_code_dim", args.get("dim_out"))
    prog.write(args.get("write_key"), "enc_latents")
    for p in ("weight", "bias"):
        prog.keymap.append((f"{official}.proj.{p}", f"encoder.to_latents.{p}", None))


def _on_linear(m: _Module) -> None:
    where, official, args, prog = m.where, m.official, m.args, m.prog
    prog.read(where, args.get("read_key"), "quants")
    prog.want(where, args, "proj_bias", True, True)
    prog.set(where, "_code_dim", args.get("dim_in"))
    prog.write(args.get("write_key"), "dec_regs")
    prog.kwargs["_dec_regs_state"] = "projected"
    for p in ("weight", "bias"):
        prog.keymap.append((f"{official}.proj.{p}", f"decoder.from_latents.{p}", None))


def _on_nested_dropout(m: _Module) -> None:
    where, official, args, prog = m.where, m.official, m.args, m.prog
    prog.read(where, args.get("read_write_key"), "dec_regs")
    if prog.kwargs.get("_dec_regs_state") not in ("projected", "posemb"):
        prog.problems.append(f"{where}: nested dropout must follow the projection / register posemb")
    prog.kwargs["_dec_regs_state"] = "dropout"
    mode = args.get("size_sampling_mode", "uniform")
    if mode not in ("uniform", "pow2", "uniform_pow2"):
        prog.problems.append(f"{where}: size_sampling_mode={mode!r} is not supported")
    prog.set(where, "nested_dropout", mode)
    prog.keymap.append((f"{official}.dropout_mask_token", "decoder.mask_token", None))


def _on_null_cond(m: _Module) -> None:
    kind, where, official, args, prog = m.kind, m.where, m.official, m.args, m.prog
    prog.read(where, args.get("read_write_key"), "dec_regs")
    if prog.kwargs.get("_dec_regs_state") != "dropout":
        prog.problems.append(f"{where}: the null condition must come right after nested dropout")
    prog.kwargs["_dec_regs_state"] = "nullcond"
    # the sampler's unconditional pass sets this hard-coded key
    prog.want(where, args, "eval_drop_flag_read_key", "eval_dropout_mask", "eval_dropout_mask")
    prog.want(where, args, "replace_with_single_token", False, False)
    prog.set(where, "null_cond", "learned" if kind == "learned_null" else "zero")
    prog.set(where, "cond_dropout", float(args.get("dropout_prob", 0.0)))
    if kind == "learned_null":
        prog.keymap.append((f"{official}.nullcond", "decoder.null_cond", None))


def _on_time(m: _Module) -> None:
    where, official, args, prog = m.where, m.official, m.args, m.prog
    prog.read(where, args.get("timesteps_read_key"), "timesteps")
    prog.want(where, args, "temb_as_tokens", False, False)
    prog.set(where, "freq_dim", int(args.get("frequency_embedding_size", 256)))
    prog.set(where, "max_timestep", float(args.get("max_timestep", 1000.0)))
    prog.write(args.get("time_embedding_write_key"), "temb")
    for p in ("0.weight", "0.bias", "2.weight", "2.bias"):
        prog.keymap.append((f"{official}.mlp.{p}", f"decoder.time_embed.mlp.{p}", None))


def _on_patch_head(m: _Module) -> None:
    where, official, args, side, prog = m.where, m.official, m.args, m.side, m.prog
    if side != "dec":
        prog.problems.append(f"{where}: ToPatchesLinearHead in the encoder is not supported")
    prog.read(where, args.get("read_key"), "dec_patches_out")
    prog.want(where, args, "use_mup_readout", False, False)
    prog.want(where, args, "norm_layer", None)
    prog.want(where, args, "adaLN_packing_fn_read_key", None)
    prog.want(where, args, "adaLN_bias", True, True)
    prog.want(where, args, "proj_bias", True, True)
    prog.set(where, "patch_size", _square(where, prog, args.get("patch_sizes"), "patch_sizes"))
    prog.set(where, "_channels", args.get("channels_out"))
    adaln = args.get("adaLN_emb_read_key") is not None
    if adaln:
        prog.read(where, args["adaLN_emb_read_key"], "temb")
    prog.set(where, "head_adaln", adaln)
    prog.write(args.get("write_key"), "velocity_cl")
    head = "decoder.head" if adaln else "decoder.head.1"
    names = ["proj.weight", "proj.bias"] if adaln else ["weight", "bias"]
    for o, z in zip(["proj.weight", "proj.bias"], names):
        prog.keymap.append((f"{official}.{o}", f"{head}.{z}", None))
    if adaln:
        for p in ("weight", "bias"):
            prog.keymap.append((f"{official}.adaLN_modulation.1.{p}", f"decoder.head.adaLN_modulation.1.{p}",
                                None))


# official module kind -> its handler (classes listed in `_TARGETS`)
_HANDLERS: dict[str, Callable[[_Module], None]] = {
    "per_sample_op": _on_per_sample_op,
    "patch_emb": _on_patch_emb,
    "posemb": _on_posemb,
    "registers": _on_registers,
    "packer": _on_packer,
    "transformer": _on_transformer,
    "unpacker": _on_unpacker,
    "linear_head": _on_linear_head,
    "linear": _on_linear,
    "nested_dropout": _on_nested_dropout,
    "learned_null": _on_null_cond,
    "zero_null": _on_null_cond,
    "time": _on_time,
    "patch_head": _on_patch_head,
}


def _walk(prog: _Program, cfg: Any, side: str) -> None:
    top = "encoder" if side == "enc" else "decoder"
    if _target(cfg) != _TARGETS["wrapper"] or not isinstance(cfg.get("module_dict"), dict):
        prog.problems.append(f"{top}: expected {_TARGETS['wrapper']} with a module_dict, got {_target(cfg)}")
        return
    for name, module in cfg["module_dict"].items():
        where = f"{top}.module_dict.{name}"
        kind = _KIND.get(_target(module))
        if kind is None or kind in ("wrapper", "vae", "fsq", "noise", "pipeline", "model", "model_hub"):
            prog.problems.append(f"{where}: unsupported module {_target(module)}")
            continue
        known = _known_args(kind) or set()
        unknown = sorted(set(module) - known)
        if unknown:
            prog.problems.append(f"{where}: unknown arguments {unknown} for {_target(module)}")
        handler = _HANDLERS.get(kind)
        if handler is None:
            prog.problems.append(f"{where}: {kind} cannot appear in the {top}")
            continue
        handler(_Module(where, f"{top}.module_dict.{name}", kind, module, side, prog))


def _check_args(prog: _Program, where: str, cfg: Any, kind: str) -> dict:
    if _KIND.get(_target(cfg)) != kind:
        prog.problems.append(f"{where}: expected {_TARGETS[kind]}, got {_target(cfg)}")
        return {}
    unknown = sorted(set(cfg) - (_known_args(kind) or set()))
    if unknown:
        prog.problems.append(f"{where}: unknown arguments {unknown} for {_target(cfg)}")
    return cfg


def interpret(config: dict) -> _Program:
    """Check the official hydra config and translate it (see the module docstring)."""
    prog = _Program()
    missing = [k for k in _TOP_LEVEL if k not in config]
    if missing:
        raise OfficialWiringError(f"the FlexTok config lacks the entries {missing}; got {list(config)}")
    extra = sorted(set(config) - set(_TOP_LEVEL) - {"_target_"})
    if extra:
        prog.problems.append(f"unknown top-level config entries {extra}")
    if "_target_" in config and _KIND.get(config["_target_"]) not in ("model", "model_hub"):
        prog.problems.append(f"_target_={config['_target_']!r} is not the FlexTok wrapper")

    vae = _check_args(prog, "vae", config["vae"], "vae")
    prog.want("vae", vae, "learnable_logvar", False, False)
    prog.set("vae", "vae_sample_posterior", bool(vae.get("sample_posterior", True)))
    prog.kwargs["_vae"] = vae
    if vae.get("dtype_override") not in (None, "fp32"):
        prog.notes.append(f"vae.dtype_override={vae['dtype_override']!r} ignored: the VAE runs in the model dtype")
    prog.write(vae.get("vae_latents_write_key"), "latents")

    fsq = _check_args(prog, "regularizer", config["regularizer"], "fsq")
    pipe = _check_args(prog, "pipeline", config["pipeline"], "pipeline")
    noise = _check_args(prog, "flow_matching_noise_module", config["flow_matching_noise_module"], "noise")
    prog.want("pipeline", pipe, "noise_read_key", None)

    _walk(prog, config["encoder"], "enc")
    prog.read("regularizer", fsq.get("latents_read_key"), "enc_latents")
    prog.set("regularizer", "levels", [int(v) for v in fsq.get("levels", [])])
    for name in ("drop_quant_p", "corrupt_tokens_p"):
        if fsq.get(name, 0.0):
            prog.notes.append(f"regularizer.{name}={fsq[name]} is training-only and was not carried over")

    # the decoder starts from the data dict the detokenize pipeline builds
    prog.kinds = {fsq.get("quants_write_key"): "quants", pipe.get("timesteps_read_key"): "timesteps",
                  pipe.get("noised_images_read_key"): "noised"}
    if pipe.get("latents_read_key") != fsq.get("quants_write_key"):
        prog.problems.append(f"pipeline.latents_read_key={pipe.get('latents_read_key')!r} is not the FSQ output "
                             f"{fsq.get('quants_write_key')!r}")
    _walk(prog, config["decoder"], "dec")
    prog.read("pipeline", pipe.get("reconst_write_key"), "velocity")
    if pipe.get("out_channels") != prog.kwargs.get("_channels"):
        prog.problems.append(f"pipeline.out_channels={pipe.get('out_channels')} != latent channels "
                             f"{prog.kwargs.get('_channels')}")
    if prog.kwargs.get("_code_dim") != len(prog.kwargs.get("levels", [])):
        prog.problems.append(f"code dim {prog.kwargs.get('_code_dim')} != number of FSQ levels {prog.kwargs['levels']}")
    if "null_cond" not in prog.kwargs or "nested_dropout" not in prog.kwargs:
        prog.problems.append("the decoder needs a MaskedNestedDropout and a null condition (LearnedNullCond / "
                             "ZeroNullCond) on the register tokens")
    prog.kwargs.setdefault("register_posemb", "none")
    prog.kwargs.setdefault("encoder_posemb", "none")
    prog.kwargs.setdefault("decoder_posemb", "none")
    if noise.get("ln", True):
        prog.set("flow_matching_noise_module", "time_sampling", "logit_normal")
    else:
        scale = float(noise.get("mode_scale", 0.0))
        prog.set("flow_matching_noise_module", "time_sampling", "mode" if scale else "uniform")
        prog.set("flow_matching_noise_module", "time_mode_scale", scale)
    return prog


# -- VAE ----------------------------------------------------------------------------------------------------------
def _vae_config(hf_hub_path: str | None, base: Path, vae: str | Path | dict | None) -> tuple[dict, Path | None]:
    """The AutoencoderKL config (and its folder, when there is one)."""
    if isinstance(vae, dict):
        return dict(vae), None
    candidates: list[Path] = []
    if vae is not None:
        candidates.append(Path(vae))
    elif hf_hub_path is not None:
        candidates += [base / hf_hub_path, Path(hf_hub_path)]
    for candidate in candidates:
        file = candidate / "config.json" if candidate.is_dir() else candidate
        if file.is_file():
            return json.loads(file.read_text()), file.parent
    if vae is not None:
        raise FileNotFoundError(f"no AutoencoderKL config.json at {vae}")
    if hf_hub_path is None:
        from zoo.image.flextok.model import DEFAULT_VAE

        return dict(DEFAULT_VAE), None
    try:
        from huggingface_hub import hf_hub_download

        file = Path(hf_hub_download(hf_hub_path, "config.json"))
        return json.loads(file.read_text()), file.parent
    except Exception as err:  # noqa: BLE001 (offline, unknown repo, missing package: one advice)
        raise FileNotFoundError(
            f"the FlexTok config names the VAE {hf_hub_path!r}, which is neither a folder beside the checkpoint "
            f"({base / hf_hub_path}) nor reachable on the Hugging Face hub ({type(err).__name__}). Download "
            f"https://huggingface.co/{hf_hub_path} (config.json is enough when the checkpoint holds vae.vae.* "
            f"tensors) and pass vae=<that folder>"
        ) from None


def _clean_vae_config(config: dict) -> dict:
    from diffusers import AutoencoderKL

    allowed = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise OfficialWiringError(f"the FlexTok VAE must be a diffusers AutoencoderKL, got {config['_class_name']}")
    return {k: v for k, v in config.items() if k in allowed}


# -- converting ---------------------------------------------------------------------------------------------------
def _is_vae_config(config: Any) -> bool:
    if isinstance(config, dict):
        return config.get("_class_name") == "AutoencoderKL"
    if config is None:
        return False
    path = Path(config)
    path = path / "config.json" if path.is_dir() else path
    try:
        return json.loads(path.read_text()).get("_class_name") == "AutoencoderKL"
    except (OSError, ValueError):
        return False


# parts of an AutoencoderKL config that do not change its weights or its outputs here (latent scale handled apart)
_VAE_NON_ARCHITECTURE = {"scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast",
                         "sample_size"}


def _vae_architecture(config: dict) -> dict | None:
    """The AutoencoderKL architecture of a cleaned VAE config; None when it is FlexTok's default VAE."""
    from diffusers import AutoencoderKL

    from zoo.image.flextok.model import DEFAULT_VAE

    defaults = {n: p.default for n, p in inspect.signature(AutoencoderKL.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}

    def canonical(cfg: dict) -> dict:
        full = {**defaults, **cfg}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in full.items() if k not in _VAE_NON_ARCHITECTURE}

    arch = {k: v for k, v in config.items() if k not in _VAE_NON_ARCHITECTURE}
    return None if canonical(arch) == canonical(DEFAULT_VAE) else arch


@register_converter("flextok")
class FlexTokConverter(Converter):
    """Official FlexTok release -> `zoo.image.flextok.FlexTok` with the same tokens and decoder outputs.

    `read(checkpoint, config=None, vae=None, image_size=None)`:
        checkpoint: `model.safetensors`, the folder holding it (and optionally `config.json`, the VAE folder), or a
            state dict (then `config` is required).
        config: the hydra config (dict or `config.json`) when the checkpoint metadata lacks it; a diffusers
            AutoencoderKL `config.json` (or its folder) here is taken as `vae`.
        vae: the AutoencoderKL folder / config.json / dict; default: `vae.hf_hub_path` beside the checkpoint, then
            the hub cache.
        image_size: the resolution, when the config has no patch posemb to infer it from.
    """

    # training-time settings the hydra config states; a registered variant keeps its own
    training_kwargs = frozenset({"nested_dropout", "cond_dropout", "time_sampling", "time_mode_scale"})
    # the VAE latent scale belongs to the VAE release (its config.json), not to the FlexTok architecture
    release_kwargs = frozenset({"vae_scaling_factor"})

    def read(self, checkpoint: str | Path | dict, config: Any = None, vae: str | Path | dict | None = None,
             image_size: int | None = None) -> OfficialCheckpoint:
        from safetensors.torch import load_file

        if vae is None and _is_vae_config(config):
            config, vae = None, config
        if isinstance(checkpoint, dict):
            if not isinstance(config, dict):
                raise OfficialWiringError("a FlexTok state dict needs its hydra config as a dict (config=...)")
            path, cfg, origin, state = Path("<state dict>"), _unwrap(config), "the given dict", dict(checkpoint)
        else:
            path, cfg, origin = read_official_config(checkpoint, config)
            state = load_file(str(path))
        prog = interpret(cfg)
        vae_args = prog.kwargs.pop("_vae")
        vae_cfg, vae_dir = _vae_config(vae_args.get("hf_hub_path"), path.parent, vae)
        vae_clean = _clean_vae_config(vae_cfg)
        vae_clean["latent_channels"] = int(vae_clean.get("latent_channels", vae_args.get("latent_channels", 16)))
        if vae_clean["latent_channels"] != prog.kwargs.get("_channels"):
            prog.problems.append(f"VAE latent_channels={vae_clean['latent_channels']} but the FlexTok patches "
                                 f"expect {prog.kwargs.get('_channels')}")
        if prog.problems:
            lines = "\n  - ".join(prog.problems)
            raise OfficialWiringError(f"cannot convert {path} (config from {origin}):\n  - {lines}")
        if not any(k.startswith("vae.vae.") for k in state):
            weights = vae_dir / "diffusion_pytorch_model.safetensors" if vae_dir is not None else None
            if weights is not None and weights.exists():
                state.update({f"vae.vae.{k}": v for k, v in load_file(str(weights)).items()})
        extras = {"prog": prog, "vae": vae_clean, "vae_args": vae_args, "image_size": image_size,
                  "vae_weights": vae_dir}
        return OfficialCheckpoint("flextok", state, cfg, str(path), extras)

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        prog, vae = raw.extras["prog"], raw.extras["vae"]
        kwargs = {k: v for k, v in prog.kwargs.items() if not k.startswith("_")}
        down = 2 ** (len(vae.get("down_block_types", [None])) - 1)
        posemb_size = prog.kwargs.get("_posemb_size")
        image_size = raw.extras.get("image_size")
        if image_size is None:
            if posemb_size is None:
                raise OfficialWiringError("the config has no patch posemb to infer the resolution from; pass "
                                          "image_size")
            image_size = posemb_size * kwargs["patch_size"] * down
        grid = image_size // down // kwargs["patch_size"]
        kwargs["image_size"] = image_size
        kwargs["posemb_size"] = None if posemb_size in (None, grid) else posemb_size
        kwargs["vae"] = _vae_architecture(vae)
        kwargs["vae_scaling_factor"] = float(raw.extras["vae_args"].get("scaling_factor")
                                             or vae.get("scaling_factor") or 1.0)
        return kwargs

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        prog, state, path = raw.extras["prog"], raw.state, raw.source
        if not any(k.startswith("vae.vae.") for k in state):
            where = raw.extras.get("vae_weights")
            raise FileNotFoundError(f"{path} holds no vae.vae.* tensors and no VAE weights were found (looked in "
                                    f"{where}); pass vae=<AutoencoderKL folder>")
        own = model.state_dict()
        new: dict[str, torch.Tensor] = {}
        used: set[str] = set()
        problems: list[str] = []
        for key, value in state.items():
            if key.startswith("vae.vae."):
                new["vae." + key[len("vae.vae."):]] = value
                used.add(key)
        for official, ours, transform in prog.keymap:
            if official not in state:
                problems.append(f"checkpoint lacks {official} (for {ours})")
                continue
            value = state[official]
            if ours == "decoder.register_pos_embed":
                value = transform(value)[: model.num_registers]
            elif transform is not None:
                value = transform(value)
            new[ours] = value
            used.add(official)
        for parts, ours in prog.fused:
            absent = [p for p in parts if p not in state]
            if absent:
                problems.append(f"checkpoint lacks {absent} (for {ours})")
                continue
            new[ours] = torch.cat([state[p] for p in parts], dim=0)
            used.update(parts)
        for official, ours in prog.checks:
            if official not in state:
                problems.append(f"checkpoint lacks {official}")
                continue
            used.add(official)
            table = state[official][0].permute(1, 2, 0)
            ref = model.get_buffer(ours)
            g = math.isqrt(ref.shape[0])
            table = table[:g, :g].reshape(g * g, -1)
            if table.shape != ref.shape or not torch.allclose(table.float(), ref.float(), atol=1e-5):
                problems.append(f"{official} is not the sin-cos table this implementation computes")
        unknown = sorted(set(state) - used)
        if unknown:
            problems.append(f"{len(unknown)} checkpoint tensors have no place in the model: {unknown}")
        missing = sorted(set(own) - set(new))
        if missing:
            problems.append(f"{len(missing)} model tensors are not in the checkpoint: {missing}")
        for key in sorted(set(own) & set(new)):
            if tuple(own[key].shape) != tuple(new[key].shape):
                problems.append(f"{key}: checkpoint shape {tuple(new[key].shape)} != model {tuple(own[key].shape)}")
        if problems:
            lines = "\n  - ".join(problems)
            raise OfficialWiringError(f"cannot load {path}:\n  - {lines}")
        return new
