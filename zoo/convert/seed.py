"""Official SEED-2 tokenizer files -> `zoo` SEED.

The release is two files, loaded the way `Blip2QformerQuantizer.from_pretrained` loads them:

1. the LAVIS `eva_vit_g.pth` (raw EVA ViT state dict, no prefix), which `create_eva_vit_g` loads into
   `visual_encoder.*` with `strict=False` (the file may hold more blocks than the depth-39 model: ignored);
2. `seed_quantizer.pt` (`AILab-CVC/seed-tokenizer-2`, a raw state dict, loaded over it with `strict=False`), which
   carries no ViT weights in the release (its loader prints `missing keys: 511`, the ViT's count).

plus the `bert-base-uncased` config the Q-Former is built from. `zoo.from_official("seed", PT, config=DIR)` reads
DIR/eva_vit_g.pth, DIR/bert-base-uncased/config.json (or DIR/config.json) and DIR/fixture_overrides.json (sizes
that are Python constants in the official code, for shrunk test fixtures).

The official `strict=False` is made explicit: the tensors the official model also leaves unused (the BERT text side
and MLM head that `__init__` sets to None, the text-distillation branch, EVA blocks past the depth, the position-id
buffer) are listed in a warning and dropped; any other unknown tensor is refused (pass `strict=False` to `read` /
`from_official` to drop those too, as the official loader silently does); a missing tensor is always refused.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule, check_complete
from zoo.registry import register_converter

__all__ = ["LAVIS_EVA_URL", "SEEDConverter", "keymap"]

LAVIS_EVA_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
RELEASE = "https://huggingface.co/AILab-CVC/seed-tokenizer-2 (seed_quantizer.pt)"
# Python constants of the official code (create_eva_vit_g, Blip2QformerQuantizer, bert-base-uncased)
OFFICIAL = {"vit_depth": 39, "vit_heads": 16, "vit_mlp_ratio": 4.3637, "cross_attention_freq": 2,
            "decoder_heads": 12, "qformer_heads": 12, "qformer_dropout": 0.1, "qformer_attn_dropout": 0.1,
            "qformer_norm_eps": 1e-12}

_BERT = "Qformer.bert.encoder.layer.{i}."
_OURS = "qformer.layers.{i}."


def _attention_rules(official: str, ours: str) -> list[Rule]:
    rules = [Rule(f"{_BERT}{official}.self.{a}.{{p}}", f"{_OURS}{ours}_attn.{b}.{{p}}")
             for a, b in (("query", "q"), ("key", "k"), ("value", "v"))]
    rules.append(Rule(f"{_BERT}{official}.output.dense.{{p}}", f"{_OURS}{ours}_attn.proj.{{p}}"))
    rules.append(Rule(f"{_BERT}{official}.output.LayerNorm.{{p}}", f"{_OURS}{ours}_norm.{{p}}"))
    return rules


def _mlp(official: str, ours: str) -> list[Rule]:
    return [Rule(f"{official}.0.{{p}}", f"{ours}.fc1.{{p}}"), Rule(f"{official}.2.{{p}}", f"{ours}.fc2.{{p}}")]


_IMAGE_TOKENIZER = KeyMap([
    Rule("visual_encoder.{rest:*}", "visual_encoder.{rest:*}"),
    Rule("ln_vision.{p}", "ln_vision.{p}"),
    Rule("query_tokens", "qformer.query_tokens"),
    Rule("Qformer.bert.embeddings.LayerNorm.{p}", "qformer.embed_norm.{p}"),
    *_attention_rules("attention", "self"),
    *_attention_rules("crossattention", "cross"),
    Rule(f"{_BERT}intermediate_query.dense.{{p}}", f"{_OURS}mlp.fc1.{{p}}"),
    Rule(f"{_BERT}output_query.dense.{{p}}", f"{_OURS}mlp.fc2.{{p}}"),
    Rule(f"{_BERT}output_query.LayerNorm.{{p}}", f"{_OURS}mlp_norm.{{p}}"),
    Rule("quantize.embedding.weight", "quantizer.embed"),
    *_mlp("encode_task_layer", "encode_task_layer"),
    *_mlp("decode_task_layer", "decode_task_layer"),
    Rule("pos_embed", "recon_pos_embed"),
    Rule("blocks.{i}.{rest:*}", "recon_blocks.{i}.{rest:*}"),
    Rule("pos_embed_image", "image_pos_embed"),
    Rule("blocks_image.{i}.{rest:*}", "image_blocks.{i}.{rest:*}"),
    Rule("image_down.0.weight", "image_down.fc1.weight"),
    Rule("image_down.2.weight", "image_down.fc2.weight"),
    Rule("image_down.4.weight", "image_down.fc3.weight"),
    Rule("distill_image_proj.{p}", "image_proj.{p}"),
])
# the Q-Former text side and BLIP-2 stage-1 heads: kept for a model built with text_vocab_size (stage-1 training)
_TEXT = KeyMap([
    Rule("Qformer.bert.embeddings.word_embeddings.weight", "qformer.word_embed.weight"),
    Rule("Qformer.bert.embeddings.position_embeddings.weight", "qformer.text_pos_embed.weight"),
    Rule(f"{_BERT}intermediate.dense.{{p}}", f"{_OURS}text_mlp.fc1.{{p}}"),
    Rule(f"{_BERT}output.dense.{{p}}", f"{_OURS}text_mlp.fc2.{{p}}"),
    Rule(f"{_BERT}output.LayerNorm.{{p}}", f"{_OURS}text_norm.{{p}}"),
    Rule("vision_proj.{p}", "vision_proj.{p}"),
    Rule("text_proj.{p}", "text_proj.{p}"),
    Rule("temp", "temp"),
])
# tensors the official image tokenizer holds or receives but never uses: dropped with a listing
_UNUSED = KeyMap([
    Rule("Qformer.bert.embeddings.position_ids", None),  # index buffer of the (deleted) text position table
    Rule("Qformer.cls.{rest:*}", None),  # BERT masked-LM head, set to None in __init__
    Rule("pos_embed_text", None),  # text-distillation branch of the codebook training model
    Rule("blocks_text.{rest:*}", None),
    Rule("distill_text_proj.{rest:*}", None),
    Rule("{m:Reverse_Qformer|Reverse_Qformer_text}.{rest:*}", None),  # `use_qformer_image` / text variants
    Rule("{m:reverse_tokens|reverse_tokens_text}", None),
    Rule("itm_head.{rest:*}", None),  # BLIP-2 matching head (stage 1 with matching)
])


def keymap(text: bool) -> KeyMap:
    """The official <-> zoo key table; `text`: also map the Q-Former text side and the stage-1 heads."""
    if text:
        return _IMAGE_TOKENIZER + _TEXT + _UNUSED
    return _IMAGE_TOKENIZER + KeyMap([Rule(r.official, None) for r in _TEXT.rules]) + _UNUSED


# -- reading ----------------------------------------------------------------------------------------------------------
def _torch_load(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal is reported the same way
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: {err}. "
                         "zoo never executes pickled code; re-save the state dict as plain tensors.") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):  # a LAVIS training checkpoint
        data = data["model"]
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} ({what}) holds a {type(data).__name__}, expected a state dict")
    bad = sorted(k for k, v in data.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{path} ({what}) is not a plain state dict: non-tensor entries {bad[:6]}")
    return dict(data)


def _read_overrides(path: Path) -> dict[str, dict]:
    """fixture_overrides.json -> {"vit": {...}, "quantizer": {...}, "bert": {...}}, each with the shrunk values and
    the ones listed as unchanged (the official file keys name the Python location of the constant)."""
    data = json.loads(path.read_text())
    out: dict[str, dict] = {}
    for where, values in data.items():
        if not isinstance(values, dict):
            continue
        flat = {k: v for k, v in values.items() if k not in ("official", "unchanged")}
        flat.update({k: v for k, v in (values.get("unchanged") or {}).items() if not isinstance(v, str)})
        if "VisionTransformer" in where:
            out["vit"] = flat
        elif "Blip2QformerQuantizer" in where:
            out["quantizer"] = flat
        elif "config.json" in where:
            out["bert"] = flat
    return out


def _bert_config(folder: Path) -> Path | None:
    for candidate in (folder / "bert-base-uncased" / "config.json", folder / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def _read_config(config: Any, vit: str | Path | None) -> tuple[dict | None, dict, Path | None]:
    """(BERT config, overrides, EVA file) from `config`: a folder, a BERT config.json, or a dict with optional
    keys `bert`, `overrides`, `vit`."""
    if config is None:
        return None, {}, Path(vit).expanduser() if vit is not None else None
    if isinstance(config, dict):
        eva = config.get("vit", vit)
        return config.get("bert"), dict(config.get("overrides") or {}), Path(eva).expanduser() if eva else None
    path = Path(config).expanduser()
    if path.is_file() and path.suffix == ".json":
        return json.loads(path.read_text()), {}, Path(vit).expanduser() if vit is not None else None
    if not path.is_dir():
        raise FileNotFoundError(f"SEED config {path} is neither a folder (with eva_vit_g.pth and the bert-base-uncased "
                                "config) nor a BERT config.json")
    bert_file = _bert_config(path)
    overrides = _read_overrides(path / "fixture_overrides.json") if (path / "fixture_overrides.json").is_file() else {}
    eva = Path(vit).expanduser() if vit is not None else (path / "eva_vit_g.pth")
    return (json.loads(bert_file.read_text()) if bert_file else None), overrides, eva if eva.is_file() or vit else None


# -- shapes -----------------------------------------------------------------------------------------------------------
def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the SEED checkpoint lacks {key}; is it a SEED-2 tokenizer file ({RELEASE})?")
    return tuple(state[key].shape)


def _count(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _check(name: str, configured: Any, found: Any, where: str) -> None:
    if configured is not None and configured != found:
        raise ValueError(f"{where} says {name}={configured!r} but the weights have {found!r}")


def infer_kwargs(raw: OfficialCheckpoint) -> dict[str, Any]:
    """`SEED` constructor kwargs of an official checkpoint (shapes + BERT config + the Python constants)."""
    state = raw.state
    config = raw.config or {}
    bert = config.get("bert") or {}
    over = config.get("overrides") or {}
    vit_o, quant_o, bert_o = over.get("vit", {}), over.get("quantizer", {}), over.get("bert", {})
    if not any(k.startswith("visual_encoder.") for k in state):
        raise ValueError(_no_vit_message(raw.source))
    patch = _shape(state, "visual_encoder.patch_embed.proj.weight")[-1]
    vit_width = _shape(state, "visual_encoder.cls_token")[-1]
    tokens = _shape(state, "visual_encoder.pos_embed")[1] - 1
    grid = round(tokens**0.5)
    if grid * grid != tokens:
        raise ValueError(f"visual_encoder.pos_embed has {tokens} patch entries, not a square grid")
    image_size = int(raw.extras.get("image_size") or vit_o.get("img_size") or grid * patch)
    _check("patch_size", vit_o.get("patch_size"), patch, "fixture_overrides.json")
    _check("embed_dim", vit_o.get("embed_dim"), vit_width, "fixture_overrides.json")
    depth = int(vit_o.get("depth", OFFICIAL["vit_depth"]))  # from the code, never from the blocks in the file
    if "num_heads" in vit_o:
        heads = int(vit_o["num_heads"])
    elif vit_width == 1408:
        heads = OFFICIAL["vit_heads"]
    else:
        raise ValueError(f"the EVA ViT is {vit_width} wide, not the release's ViT-g (1408, 16 heads); its head count "
                         "cannot be read from the weights: give it in fixture_overrides.json")
    mlp_ratio = float(vit_o.get("mlp_ratio", OFFICIAL["vit_mlp_ratio"]))
    hidden = _shape(state, "visual_encoder.blocks.0.mlp.fc1.weight")[0]
    if int(vit_width * mlp_ratio) != hidden:
        raise ValueError(f"EVA MLP width {hidden} != int({vit_width} * {mlp_ratio}); not an EVA ViT-g layout")

    num_queries, width = _shape(state, "query_tokens")[1:]
    layers = _count(state, "Qformer.bert.encoder.layer.")
    _check("hidden_size", bert.get("hidden_size"), width, "the BERT config")
    _check("num_hidden_layers", bert.get("num_hidden_layers"), len(layers), "the BERT config")
    intermediate = _shape(state, "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight")[0]
    _check("intermediate_size", bert.get("intermediate_size"), intermediate, "the BERT config")
    for key, value in bert_o.items():
        if key in bert:
            _check(key, value, bert[key], "fixture_overrides.json vs the BERT config")
    if "num_attention_heads" in bert:
        q_heads = int(bert["num_attention_heads"])
    elif width == 768:
        q_heads = OFFICIAL["qformer_heads"]
    else:
        raise ValueError(f"the Q-Former is {width} wide, not BERT-base; pass the BERT config.json it was built from "
                         "(config=DIR with bert-base-uncased/config.json) for its head count")
    cross = [i for i in layers if f"Qformer.bert.encoder.layer.{i}.crossattention.self.query.weight" in state]
    freq = OFFICIAL["cross_attention_freq"]
    if cross != [i for i in layers if i % freq == 0]:
        raise ValueError(f"cross-attention sits in Q-Former layers {cross}; SEED's Q-Former has it every {freq} "
                         "layers from layer 0")
    context = _shape(state, "Qformer.bert.encoder.layer.0.crossattention.self.key.weight")[1]
    if context != vit_width:
        raise ValueError(f"the Q-Former cross-attends to {context}-d tokens but the ViT is {vit_width} wide")

    codebook_size, codebook_dim = _shape(state, "quantize.embedding.weight")
    _check("n_embed", quant_o.get("n_embed"), codebook_size, "fixture_overrides.json")
    _check("codebook_embed_dim", quant_o.get("codebook_embed_dim"), codebook_dim, "fixture_overrides.json")
    decode_depth = len(_count(state, "blocks_image."))
    _check("decode_depth", quant_o.get("decode_depth"), decode_depth, "fixture_overrides.json")
    embedding_dim, flat = _shape(state, "distill_image_proj.weight")
    _check("image_features_dim", quant_o.get("image_features_dim"), embedding_dim, "fixture_overrides.json")
    if flat != num_queries * 32:
        raise ValueError(f"distill_image_proj takes {flat} inputs, expected {num_queries} queries x 32")
    down = [_shape(state, f"image_down.{i}.weight") for i in (0, 2, 4)]
    if down != [(256, width), (128, 256), (32, 128)]:
        raise ValueError(f"image_down has shapes {down}; SEED's is {width} -> 256 -> 128 -> 32 without biases")
    return {
        "image_size": image_size,
        "patch_size": patch,
        "vit_width": vit_width,
        "vit_depth": depth,
        "vit_heads": heads,
        "vit_mlp_ratio": mlp_ratio,
        "qformer_width": width,
        "qformer_depth": len(layers),
        "qformer_heads": q_heads,
        "qformer_intermediate": intermediate,
        "cross_attention_freq": freq,
        "num_query_tokens": num_queries,
        "causal_queries": num_queries == 32,  # `is_casual = query_embeds.shape[1] == 32` in the official BertModel
        "qformer_norm_eps": float(bert.get("layer_norm_eps", OFFICIAL["qformer_norm_eps"])),
        "qformer_dropout": float(bert.get("hidden_dropout_prob", OFFICIAL["qformer_dropout"])),
        "qformer_attn_dropout": float(bert.get("attention_probs_dropout_prob", OFFICIAL["qformer_attn_dropout"])),
        "codebook_size": codebook_size,
        "codebook_dim": codebook_dim,
        "decode_depth": decode_depth,
        "decoder_heads": OFFICIAL["decoder_heads"],
        "recon_depth": len(_count(state, "blocks.")),
        "embedding_dim": embedding_dim,
        "text_vocab_size": None,
        "pixel_decoder": None,
    }


def _no_vit_message(source: str) -> str:
    return (f"{source} carries no ViT weights (the released seed_quantizer.pt does not: its official loader reports "
            f"the 511 ViT tensors missing). Pass the LAVIS EVA file too: config=DIR holding eva_vit_g.pth, or "
            f"vit=PATH ({LAVIS_EVA_URL})")


# -- the converter ----------------------------------------------------------------------------------------------------
@register_converter("seed")
class SEEDConverter(Converter):
    """`seed_quantizer.pt` + `eva_vit_g.pth` + the BERT config -> `SEED` (see the module docstring)."""

    training_kwargs = frozenset({"qformer_dropout", "qformer_attn_dropout", "vit_drop_path", "dead_code_threshold"})

    def read(self, checkpoint: str | Path | dict, config: Any = None, *, vit: str | Path | None = None,
             strict: bool = True, image_size: int | None = None) -> OfficialCheckpoint:
        """Read the release.

        Args:
            checkpoint: `seed_quantizer.pt` (or a state dict, which may already hold `visual_encoder.*`).
            config: a folder with `eva_vit_g.pth`, `bert-base-uncased/config.json` (or `config.json`) and optionally
                `fixture_overrides.json`; or a BERT config.json; or a dict with keys `bert`, `overrides`, `vit`.
            vit: the LAVIS `eva_vit_g.pth` when it is not in the config folder.
            strict: refuse tensors no rule knows (True), or drop them with a warning as the official loader does.
            image_size: build for this input size (the ViT position table is resized bicubically, as the official
                `interpolate_pos_embed`); default: the file's.
        """
        bert, overrides, eva_file = _read_config(config, vit)
        if isinstance(checkpoint, dict):
            quantizer_state, source = dict(checkpoint), "<state dict>"
        else:
            quantizer_state, source = _torch_load(Path(checkpoint).expanduser(), "SEED checkpoint"), str(checkpoint)
        state: dict[str, torch.Tensor] = {}
        if eva_file is not None:  # official order: the ViT file first, then the checkpoint over it
            state.update({f"visual_encoder.{k}": v for k, v in _torch_load(eva_file, "EVA ViT file").items()})
        state.update(quantizer_state)
        raw = OfficialCheckpoint("seed", state, {"bert": bert, "overrides": overrides}, source,
                                 extras={"strict": strict, "image_size": image_size})
        if not any(k.startswith("visual_encoder.") for k in state):
            raise FileNotFoundError(_no_vit_message(source))
        return raw

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        return infer_kwargs(raw)

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        own = model.state_dict()
        text = any(k.startswith("qformer.word_embed.") for k in own)
        depth = len(model.visual_encoder.blocks)
        state = {}
        past_depth = []
        for key, value in raw.state.items():
            m = re.match(r"visual_encoder\.blocks\.(\d+)\.", key)
            if m and int(m.group(1)) >= depth:
                past_depth.append(key)  # SEED builds depth 39 of the 40-block EVA-CLIP-g
                continue
            state[key] = value
        ours, dropped, unknown = keymap(text).to_ours(state)
        if unknown and raw.extras.get("strict", True):
            raise ValueError(
                f"the SEED checkpoint has {len(unknown)} tensors that the official image tokenizer does not define: "
                f"{unknown[:12]}{' ...' if len(unknown) > 12 else ''}. The official loader (strict=False) ignores "
                "them silently; to do the same pass strict=False (zoo.from_official('seed', ..., strict=False))"
            )
        ignored = sorted(dropped + past_depth + unknown)
        listed = [k for k in ignored if k != "Qformer.bert.embeddings.position_ids"]
        if listed:
            warnings.warn(f"SEED: ignoring {len(listed)} official tensors the image tokenizer does not use (the "
                          f"official strict=False load ignores them too): {listed}", stacklevel=3)
        key = "visual_encoder.pos_embed"
        if key in ours and key in own and ours[key].shape != own[key].shape:
            from zoo.image.seed.vit import resample_pos_embed

            ours[key] = resample_pos_embed(ours[key], model.visual_encoder.grid)
        missing = sorted(set(own) - set(ours))
        if any(k.startswith("visual_encoder.") for k in missing):
            vit_missing = [k for k in missing if k.startswith("visual_encoder.")]
            raise ValueError(f"the EVA ViT weights lack {len(vit_missing)} tensors of the depth-{depth} ViT: "
                             f"{vit_missing[:8]}{' ...' if len(vit_missing) > 8 else ''}. Is the EVA file "
                             f"({LAVIS_EVA_URL}) complete, and is the depth right (fixture_overrides.json)?")
        check_complete(ours, own, "SEED conversion mismatch")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        own = model.state_dict()
        text = any(k.startswith("qformer.word_embed.") for k in own)
        return keymap(text).to_official(own)


def official_to_ours(state: dict[str, torch.Tensor], text: bool, vit_depth: int | None = None
                     ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename the tensors of an official SEED / BLIP-2 / LAVIS state dict (e.g. `blip2_pretrained.pth`, a stage-1
    `checkpoint_0.pth`) that have a place in a zoo SEED; returns (ours, names of the official tensors left out).
    For initialising training runs, which then take what fits (`zoo.train.warm_start`)."""
    kept, left = {}, []
    for key, value in state.items():
        m = re.match(r"visual_encoder\.blocks\.(\d+)\.", key)
        if m and vit_depth is not None and int(m.group(1)) >= vit_depth:
            left.append(key)
            continue
        kept[key] = value
    ours, dropped, unknown = keymap(text).to_ours(kept)
    return ours, sorted(left + dropped + unknown)


def read_state(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """An official state dict file (`weights_only=True`; a LAVIS `{"model": ...}` checkpoint is unwrapped)."""
    return _torch_load(Path(path).expanduser(), what)
