"""Official WavTokenizer Lightning checkpoint (+ optional LightningCLI yaml) -> `zoo.audio.WavTokenizer`.

Reads `ckpt["state_dict"]` with `torch.load(weights_only=True)`, keeps the generator (`feature_extractor.`,
`backbone.`, `head.`), drops the training-only discriminator and loss modules, infers every width from tensor
shapes (the official code hard-codes the encoder's 32 filters and 512 latent dims, so a yaml cannot describe a
shrunk model), checks the yaml against the shapes when one is given, and refuses unknown or missing keys with a list.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import yaml

from zoo.audio.wavtokenizer import WavTokenizer
from zoo.registry import register_converter
from zoo.weights import load_official_checkpoint

__all__ = ["convert_state_dict", "convert_wavtokenizer", "infer_kwargs"]

GENERATOR_PREFIXES = ("feature_extractor.", "backbone.", "head.")
# Submodules of the official LightningModule that only serve training (decoder/experiment.py).
TRAINING_PREFIXES = ("multiperioddisc.", "multiresddisc.", "dac.", "dacdiscriminator.", "melspec_loss.",
                     "disc_loss.", "gen_loss.", "feat_matching_loss.", "utmos_model.")
ENCODER = "feature_extractor.encodec.encoder.model."
UNUSED_DECODER = "feature_extractor.encodec.decoder."  # EnCodec's waveform decoder: stored, never run
CODEBOOK = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
_INDEX = re.compile(r"^(\d+)\.(.*)$")


def _encoder_layout(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Where conv_in, the stages, the LSTM and conv_out sit in the official `nn.Sequential`."""
    convs, res, lstm = set(), set(), set()
    for key in state:
        if not key.startswith(ENCODER):
            continue
        match = _INDEX.match(key[len(ENCODER):])
        if match is None:
            raise ValueError(f"unexpected encoder key {key!r}")
        index, rest = int(match.group(1)), match.group(2)
        if rest.startswith("conv.conv."):
            convs.add(index)
        elif rest.startswith(("block.", "shortcut.")):
            res.add(index)
        elif rest.startswith("lstm."):
            lstm.add(index)
        else:
            raise ValueError(f"unexpected encoder key {key!r}")
    if len(convs) < 2:
        raise ValueError(f"the checkpoint has no SEANet encoder under {ENCODER}* (found conv layers {sorted(convs)})")
    convs = sorted(convs)
    conv_in, downs, conv_out = convs[0], convs[1:-1], convs[-1]
    stages, start = [], conv_in
    for down in downs:
        stages.append({"res": sorted(i for i in res if start < i < down), "down": down})
        start = down
    per_stage = {len(stage["res"]) for stage in stages}
    if len(per_stage) != 1:
        raise ValueError(f"SEANet stages have different numbers of residual blocks: {[s['res'] for s in stages]}")
    return {"conv_in": conv_in, "stages": stages, "lstm": sorted(lstm), "conv_out": conv_out,
            "n_residual_layers": per_stage.pop()}


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key!r}, which every WavTokenizer generator has")
    return tuple(state[key].shape)


def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`WavTokenizer` constructor kwargs read off the generator's tensor shapes."""
    layout = _encoder_layout(state)
    strides = []
    for stage in layout["stages"]:
        kernel = _shape(state, f"{ENCODER}{stage['down']}.conv.conv.weight_v")[-1]
        if kernel % 2:
            raise ValueError(f"SEANet downsampling conv {stage['down']} has odd kernel {kernel}; expected 2 * stride")
        strides.append(kernel // 2)
    lstm_layers = sum(1 for k in state if k.startswith(f"{ENCODER}{layout['lstm'][0]}.lstm.weight_ih_l")) \
        if layout["lstm"] else 0
    head_rows = _shape(state, "head.out.weight")[0]
    num_layers = len({k.split(".")[2] for k in state if k.startswith("backbone.convnext.")})
    return {
        "encoder_strides": strides,
        "n_filters": _shape(state, f"{ENCODER}{layout['conv_in']}.conv.conv.weight_v")[0],
        "n_residual_layers": layout["n_residual_layers"],
        "lstm_layers": lstm_layers,
        "latent_dim": _shape(state, f"{ENCODER}{layout['conv_out']}.conv.conv.weight_v")[0],
        "codebook_size": _shape(state, f"{CODEBOOK}embed")[0],
        "dim": _shape(state, "backbone.embed.weight")[0],
        "intermediate_dim": _shape(state, "backbone.convnext.0.pwconv1.weight")[0],
        "num_layers": num_layers,
        "num_bandwidths": _shape(state, "backbone.norm.scale.weight")[0],
        "n_fft": head_rows - 2,
    }


def _encoder_key_map(state: dict[str, torch.Tensor]) -> dict[str, str]:
    layout = _encoder_layout(state)
    targets = {layout["conv_in"]: "encoder.conv_in.", layout["conv_out"]: "encoder.conv_out."}
    for s, stage in enumerate(layout["stages"]):
        targets[stage["down"]] = f"encoder.stages.{s}.down."
        for j, index in enumerate(stage["res"]):
            targets[index] = f"encoder.stages.{s}.res.{j}."
    for index in layout["lstm"]:
        targets[index] = "encoder."
    mapping = {}
    for key in state:
        if not key.startswith(ENCODER):
            continue
        index, rest = _INDEX.match(key[len(ENCODER):]).groups()
        rest = rest.replace("block.1.conv.conv.", "conv1.conv.").replace("block.3.conv.conv.", "conv2.conv.")
        rest = rest.replace("shortcut.conv.conv.", "shortcut.conv.").replace("conv.conv.", "conv.")
        mapping[key] = targets[int(index)] + rest
    return mapping


def convert_state_dict(state: dict[str, torch.Tensor], model: WavTokenizer) -> dict[str, torch.Tensor]:
    """Official generator state dict -> our state dict; raises ValueError listing unknown and missing keys."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    encoder_map = _encoder_key_map(state)
    quantizer_map = model.quantizer_state_names()
    for key, value in state.items():
        if key in encoder_map:
            out[encoder_map[key]] = value
        elif key.startswith(UNUSED_DECODER) or key == "head.istft.window":
            continue
        elif key.startswith(CODEBOOK) and key[len(CODEBOOK):] in quantizer_map:
            name = quantizer_map[key[len(CODEBOOK):]]
            if name is not None:
                out[name] = value.reshape(model.state_dict()[name].shape) if value.dim() <= 1 else value
        elif key.startswith("backbone.pos_net.2.") and key.split(".")[3] in ("q", "k", "v", "proj_out"):
            _, _, _, proj, param = key.split(".")
            target = "proj" if proj == "proj_out" else proj
            out[f"backbone.pos_net.2.attn.{target}.{param}"] = value.squeeze(-1) if param == "weight" else value
        elif key.startswith(("backbone.", "head.out.")):
            out[key] = value
        else:
            unknown.append(key)
    own = model.state_dict()
    missing = sorted(set(own) - set(out))
    unknown += sorted(set(out) - set(own))
    if unknown or missing:
        raise ValueError(
            f"WavTokenizer checkpoint does not match the architecture inferred from it:\n"
            f"  unknown keys ({len(unknown)}): {unknown}\n  missing keys ({len(missing)}): {missing}"
        )
    wrong = [f"{k}: checkpoint {tuple(out[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if out[k].shape != own[k].shape]
    if wrong:
        raise ValueError("WavTokenizer checkpoint shapes do not match:\n  " + "\n  ".join(wrong))
    return out


def _read_config(config: str | Path | dict | None) -> dict | None:
    if config is None:
        return None
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"no WavTokenizer config yaml at {path}")
        config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise TypeError(f"config must be a yaml path or a dict, got {type(config).__name__}")
    return config.get("model", {}).get("init_args", config)


def _check_config(config: dict, kwargs: dict[str, Any]) -> None:
    """Compare the yaml's values with what the tensor shapes say; a mismatch means the pair does not belong together."""
    def args(part: str) -> dict:
        return (config.get(part) or {}).get("init_args", {}) or {}

    features, backbone, head = args("feature_extractor"), args("backbone"), args("head")
    hop = 1
    for s in kwargs["encoder_strides"]:
        hop *= s
    checks = [
        ("feature_extractor.dowmsamples (reversed)", list(reversed(features.get("dowmsamples", [])))
         if "dowmsamples" in features else None, kwargs["encoder_strides"]),
        ("feature_extractor.vq_bins", features.get("vq_bins"), kwargs["codebook_size"]),
        ("feature_extractor.num_quantizers", features.get("num_quantizers"), 1),
        ("feature_extractor.bandwidths (count)", len(features["bandwidths"]) if "bandwidths" in features else None,
         kwargs["num_bandwidths"]),
        ("backbone.input_channels", backbone.get("input_channels"), kwargs["latent_dim"]),
        ("backbone.dim", backbone.get("dim"), kwargs["dim"]),
        ("backbone.intermediate_dim", backbone.get("intermediate_dim"), kwargs["intermediate_dim"]),
        ("backbone.num_layers", backbone.get("num_layers"), kwargs["num_layers"]),
        ("backbone.adanorm_num_embeddings", backbone.get("adanorm_num_embeddings"), kwargs["num_bandwidths"]),
        ("head.dim", head.get("dim"), kwargs["dim"]),
        ("head.n_fft", head.get("n_fft"), kwargs["n_fft"]),
        ("head.hop_length", head.get("hop_length"), hop),
        ("head.padding", head.get("padding"), "same"),
    ]
    wrong = [f"{name}: yaml {value!r}, checkpoint {expected!r}" for name, value, expected in checks
             if value is not None and value != expected]
    if wrong:
        raise ValueError("the WavTokenizer yaml does not match the checkpoint:\n  " + "\n  ".join(wrong))


def split_checkpoint(raw: dict) -> dict[str, torch.Tensor]:
    """The generator part of an official checkpoint; refuses prefixes that are neither generator nor training."""
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a WavTokenizer checkpoint: expected a Lightning dict with a 'state_dict' of tensors")
    generator, unknown = {}, []
    for key, value in state.items():
        if key.startswith(GENERATOR_PREFIXES):
            generator[key] = value
        elif not key.startswith(TRAINING_PREFIXES):
            unknown.append(key)
    if unknown:
        raise ValueError(f"WavTokenizer checkpoint has {len(unknown)} keys of unknown modules: {unknown}")
    return generator


@register_converter("wavtokenizer")
def convert_wavtokenizer(checkpoint: str | Path, config: str | Path | dict | None = None,
                         sample_rate: int = 24000) -> WavTokenizer:
    """An official WavTokenizer `.ckpt` (and optionally its LightningCLI yaml) -> `WavTokenizer` in eval mode.

    Every width is inferred from the tensors; the yaml, when given, is only checked against them.
    """
    state = split_checkpoint(load_official_checkpoint(checkpoint))
    kwargs = infer_kwargs(state)
    config = _read_config(config)
    if config is not None:
        _check_config(config, kwargs)
        sample_rate = int(config.get("sample_rate", sample_rate))
    window = state.get("head.istft.window")
    if window is not None and not torch.allclose(window.float(), torch.hann_window(kwargs["n_fft"]), atol=1e-6):
        raise ValueError("head.istft.window is not a periodic Hann window of n_fft samples; unsupported checkpoint")
    inited = state.get(f"{CODEBOOK}inited")
    if inited is not None and not bool(inited.flatten()[0]):
        raise ValueError("the codebook was never initialised (inited=0): this checkpoint predates training")
    model = WavTokenizer(sample_rate=sample_rate, **kwargs)
    model.load_state_dict(convert_state_dict(state, model), strict=True)
    return model.eval()
