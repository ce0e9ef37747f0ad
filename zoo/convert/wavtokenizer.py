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

from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule, check_complete
from zoo.registry import register_converter
from zoo.weights import load_official_checkpoint

__all__ = ["WavTokenizerConverter", "encoder_layout", "split_checkpoint"]

GENERATOR_PREFIXES = ("feature_extractor.", "backbone.", "head.")
# Submodules of the official LightningModule that only serve training (decoder/experiment.py).
TRAINING_PREFIXES = ("multiperioddisc.", "multiresddisc.", "dac.", "dacdiscriminator.", "melspec_loss.",
                     "disc_loss.", "gen_loss.", "feat_matching_loss.", "utmos_model.")
ENCODER = "feature_extractor.encodec.encoder.model."
CODEBOOK = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
_INDEX = re.compile(r"^(\d+)\.(.*)$")


def _squeeze_1x1(t: torch.Tensor) -> torch.Tensor:
    return t.squeeze(-1)


def _unsqueeze_1x1(t: torch.Tensor) -> torch.Tensor:
    return t[..., None]


# Everything but the SEANet encoder, whose Sequential indices depend on the architecture (see `_encoder_rules`).
_FIXED_RULES = KeyMap([
    Rule("feature_extractor.encodec.decoder.{rest:*}", None),  # EnCodec's waveform decoder: stored, never run
    Rule("head.istft.window", None),  # a periodic Hann window, checked in `read`
    Rule(CODEBOOK + "{name:embed|embed_avg|cluster_size|inited}", "quantizer.{name}"),
    Rule("backbone.pos_net.2.{proj:q|k|v}.weight", "backbone.pos_net.2.attn.{proj}.weight", _squeeze_1x1,
         _unsqueeze_1x1),
    Rule("backbone.pos_net.2.{proj:q|k|v}.bias", "backbone.pos_net.2.attn.{proj}.bias"),
    Rule("backbone.pos_net.2.proj_out.weight", "backbone.pos_net.2.attn.proj.weight", _squeeze_1x1, _unsqueeze_1x1),
    Rule("backbone.pos_net.2.proj_out.bias", "backbone.pos_net.2.attn.proj.bias"),
    Rule("backbone.{rest:*}", "backbone.{rest:*}"),
    Rule("head.out.{p}", "head.out.{p}"),
])


def encoder_layout(state: dict[str, torch.Tensor]) -> dict[str, Any]:
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


def _layout_of(num_stages: int, n_residual_layers: int, lstm_layers: int) -> dict[str, Any]:
    """The official Sequential indices for an architecture (EnCodec SEANetEncoder: conv, per stage the residual
    blocks then ELU + downsampling conv, then the LSTM, ELU and the output conv)."""
    stages, index = [], 1
    for _ in range(num_stages):
        res = list(range(index, index + n_residual_layers))
        stages.append({"res": res, "down": index + n_residual_layers + 1})
        index += n_residual_layers + 2
    lstm = [index] if lstm_layers else []
    conv_out = index + 2 if lstm_layers else index + 1
    return {"conv_in": 0, "stages": stages, "lstm": lstm, "conv_out": conv_out, "n_residual_layers": n_residual_layers}


def _encoder_rules(layout: dict[str, Any]) -> KeyMap:
    rules = [Rule(f"{ENCODER}{layout['conv_in']}.conv.conv.{{p}}", "encoder.conv_in.conv.{p}")]
    for s, stage in enumerate(layout["stages"]):
        for j, index in enumerate(stage["res"]):
            ours = f"encoder.stages.{s}.res.{j}."
            rules += [Rule(f"{ENCODER}{index}.block.1.conv.conv.{{p}}", ours + "conv1.conv.{p}"),
                      Rule(f"{ENCODER}{index}.block.3.conv.conv.{{p}}", ours + "conv2.conv.{p}"),
                      Rule(f"{ENCODER}{index}.shortcut.conv.conv.{{p}}", ours + "shortcut.conv.{p}")]
        rules.append(Rule(f"{ENCODER}{stage['down']}.conv.conv.{{p}}", f"encoder.stages.{s}.down.conv.{{p}}"))
    for index in layout["lstm"]:
        rules.append(Rule(f"{ENCODER}{index}.lstm.{{p}}", "encoder.lstm.{p}"))
    rules.append(Rule(f"{ENCODER}{layout['conv_out']}.conv.conv.{{p}}", "encoder.conv_out.conv.{p}"))
    return KeyMap(rules)


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key!r}, which every WavTokenizer generator has")
    return tuple(state[key].shape)


# kwarg -> how to read it off the generator tensors (layout = `encoder_layout(state)`)
def _strides(state: dict, layout: dict) -> list[int]:
    strides = []
    for stage in layout["stages"]:
        kernel = _shape(state, f"{ENCODER}{stage['down']}.conv.conv.weight_v")[-1]
        if kernel % 2:
            raise ValueError(f"SEANet downsampling conv {stage['down']} has odd kernel {kernel}; expected 2 * stride")
        strides.append(kernel // 2)
    return strides


def _lstm_layers(state: dict, layout: dict) -> int:
    if not layout["lstm"]:
        return 0
    return sum(1 for k in state if k.startswith(f"{ENCODER}{layout['lstm'][0]}.lstm.weight_ih_l"))


_INFER = {
    "encoder_strides": _strides,
    "n_filters": lambda s, lay: _shape(s, f"{ENCODER}{lay['conv_in']}.conv.conv.weight_v")[0],
    "n_residual_layers": lambda s, lay: lay["n_residual_layers"],
    "lstm_layers": _lstm_layers,
    "latent_dim": lambda s, lay: _shape(s, f"{ENCODER}{lay['conv_out']}.conv.conv.weight_v")[0],
    "codebook_size": lambda s, lay: _shape(s, f"{CODEBOOK}embed")[0],
    "dim": lambda s, lay: _shape(s, "backbone.embed.weight")[0],
    "intermediate_dim": lambda s, lay: _shape(s, "backbone.convnext.0.pwconv1.weight")[0],
    "num_layers": lambda s, lay: len({k.split(".")[2] for k in s if k.startswith("backbone.convnext.")}),
    "num_bandwidths": lambda s, lay: _shape(s, "backbone.norm.scale.weight")[0],
    "n_fft": lambda s, lay: _shape(s, "head.out.weight")[0] - 2,
}


def split_checkpoint(raw: Any) -> dict[str, torch.Tensor]:
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


@register_converter("wavtokenizer")
class WavTokenizerConverter(Converter):
    """An official WavTokenizer `.ckpt` (and optionally its LightningCLI yaml) -> `WavTokenizer`.

    Every width is inferred from the tensors; the yaml, when given, is only checked against them.
    """

    def read(self, checkpoint: str | Path | dict, config: Any = None, sample_rate: int = 24000
             ) -> OfficialCheckpoint:
        data = checkpoint if isinstance(checkpoint, dict) else load_official_checkpoint(checkpoint)
        state = split_checkpoint(data)
        cfg = _read_config(config)
        rate = int(cfg.get("sample_rate", sample_rate)) if cfg is not None else int(sample_rate)
        raw = OfficialCheckpoint("wavtokenizer", state, cfg, str(checkpoint) if not isinstance(checkpoint, dict)
                                 else "<state dict>", {"sample_rate": rate})
        n_fft = _INFER["n_fft"](state, None)
        window = state.get("head.istft.window")
        if window is not None and window.device.type != "meta" and not torch.allclose(window.float(), torch.hann_window(n_fft), atol=1e-6):
            raise ValueError("head.istft.window is not a periodic Hann window of n_fft samples; unsupported checkpoint")
        inited = state.get(f"{CODEBOOK}inited")
        if inited is not None and inited.device.type != "meta" and not bool(inited.flatten()[0]):
            raise ValueError("the codebook was never initialised (inited=0): this checkpoint predates training")
        return raw

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        layout = encoder_layout(raw.state)
        kwargs = {name: fn(raw.state, layout) for name, fn in _INFER.items()}
        if raw.config is not None:
            _check_config(raw.config, kwargs)
        return {"sample_rate": raw.extras.get("sample_rate", 24000), **kwargs}

    def _keymap(self, layout: dict[str, Any]) -> KeyMap:
        return _encoder_rules(layout) + _FIXED_RULES

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        ours, _, unknown = self._keymap(encoder_layout(raw.state)).to_ours(raw.state)
        own = model.state_dict()
        if unknown:
            raise ValueError(f"WavTokenizer checkpoint has {len(unknown)} keys this converter does not know: {unknown}")
        for key in ("quantizer.inited", "quantizer.cluster_size"):  # stored [1] / [C]; reshape to ours
            if key in ours and key in own:
                ours[key] = ours[key].reshape(own[key].shape)
        check_complete(ours, own, "WavTokenizer checkpoint does not match the architecture")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        c = model.config
        layout = _layout_of(len(c["encoder_strides"]), c["n_residual_layers"], c["lstm_layers"])
        out = self._keymap(layout).to_official(model.state_dict())
        out["head.istft.window"] = torch.hann_window(c["n_fft"], device=out["head.out.weight"].device)
        return out
