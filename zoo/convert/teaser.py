"""Official TEASER checkpoints (Pixel-Talk/TEASER `TEASER.pt`, `model_{epoch}.pt`) -> `zoo` Teaser.

The release is the flat dict `BaseTrainer.save_model` writes: every tensor of the trainer whose name starts with
`teaser_encoder` or `teaser_generator` (1300 tensors at full size, BatchNorm statistics included), no config. SMIRK's
code writes the same layout under `smirk_encoder.` / `smirk_generator.`, which is accepted for TEASER-architecture
files; SMIRK's own release (no token encoder, a plain U-Net generator) is a different network and is refused by
name. The file is read with `torch.load(weights_only=True)` on the CPU.

Every size comes from the tensor shapes: `n_shape`, `n_exp`, the backbone channel multiplier (the backbones built
with it must reproduce every backbone shape), `token_dim`, the generator width and its ResNet block count. Our
module names are the official ones, so the key map is two prefix rules.

`read(checkpoint, config=None, flame=None)`: `config` is TEASER's `assets/` folder (landmark embeddings, eyelids,
masks; the official layout also holds `FLAME2020/generic_model.pkl`), `flame` a FLAME file (`generic_model.pkl` or a
FLAME-format `.safetensors`); they become the tokenizer's `face_model` / `face_model_assets` (release kwargs: the
face model belongs to the user's files, not to the architecture).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from zoo.convert.base import Converter, OfficialCheckpoint
from zoo.convert.keymap import KeyMap, Rule, check_complete
from zoo.registry import register_converter

__all__ = ["TeaserConverter", "infer_multiplier", "keymap", "read_checkpoint"]

PREFIXES = ("teaser", "smirk")
_MULTIPLIER_CANDIDATES = tuple(k / 100 for k in range(5, 401, 5))


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no TEASER checkpoint at {path}; download TEASER.pt (Google Drive link in the Pixel-Talk/TEASER README, "
            "`gdown 1SjYuCfDf5ElxK3VNvcF7KPBR57EIRDSY`) and pass its path"
        )
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any refusal of the safe unpickler is reported the same way
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: {err}. "
                         "zoo never executes pickled code; an official TEASER checkpoint is a flat dict of tensors") \
            from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}; an official TEASER checkpoint is a flat dict of tensors")
    return data


def _prefix(state: dict[str, Any]) -> str:
    found = {p for p in PREFIXES if any(k.startswith((f"{p}_encoder.", f"{p}_generator.")) for k in state)}
    if len(found) != 1:
        sample = sorted(state)[:5]
        raise ValueError(
            "a TEASER checkpoint holds teaser_encoder.* / teaser_generator.* tensors (SMIRK-style files: smirk_*); "
            + (f"this one mixes {sorted(found)}" if found else f"this one has neither (first keys: {sample})")
        )
    return found.pop()


def keymap(prefix: str = "teaser") -> KeyMap:
    """The official <-> zoo key table (our module names are the official ones below the prefix)."""
    return KeyMap([
        Rule(f"{prefix}_encoder.{{rest:*}}", "encoder.{rest:*}"),
        Rule(f"{prefix}_generator.{{rest:*}}", "generator.{rest:*}"),
    ])


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key}, which every TEASER checkpoint has")
    return tuple(state[key].shape)


def _backbone_shapes(state: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}


def infer_multiplier(state: dict[str, torch.Tensor], p: str = "teaser") -> float:
    """The MobileNetV3 channel multiplier whose small and large backbones reproduce every backbone shape."""
    from zoo.face.teaser.encoder import LARGE, SMALL, create_backbone

    wanted = {name: _backbone_shapes(state, f"{p}_encoder.{enc}_encoder.encoder.")
              for name, enc in ((SMALL, "pose"), (LARGE, "shape"))}
    last = wanted[SMALL].get("blocks.5.0.conv.weight", (576,))[0]
    order = sorted(_MULTIPLIER_CANDIDATES, key=lambda m: (abs(m - last / 576), m))
    for multiplier in order[:12]:
        with torch.device("meta"):
            ok = all({k: tuple(v.shape) for k, v in create_backbone(name, multiplier)[0].state_dict().items()} == shapes
                     for name, shapes in wanted.items())
        if ok:
            return multiplier
    raise ValueError(f"no MobileNetV3 channel multiplier near {last / 576:.3f} reproduces the checkpoint's backbone "
                     f"shapes (tried {order[:12]}); is it a TEASER checkpoint with the official timm backbones?")


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def _refuse_other_layouts(state: dict[str, torch.Tensor], p: str) -> None:
    if any(".enc1conv1." in k for k in state) or not any(k.startswith(f"{p}_encoder.token_encoder.") for k in state):
        raise ValueError(
            f"this is not a TEASER model: it has no {p}_encoder.token_encoder.* tensors"
            + (" and its generator is SMIRK's plain U-Net (…enc1conv1…)" if any(".enc1conv1." in k for k in state)
               else "") + ". SMIRK's release is a different network (geometry encoders + an untokenised "
            "U-Net); zoo's teaser family implements TEASER's token-conditioned generator"
        )
    if not any(k.startswith(f"{p}_generator.") for k in state):
        raise ValueError(f"the checkpoint has no {p}_generator.* tensors (a first-stage, encoder-only checkpoint?); "
                         "zoo's Teaser needs the full model")


@register_converter("teaser")
class TeaserConverter(Converter):
    """An official TEASER checkpoint (+ the user's FLAME files) -> `zoo.face.teaser.Teaser`."""

    release_kwargs = frozenset({"face_model", "face_model_assets"})

    def read(self, checkpoint: str | Path | dict, config: Any = None, flame: str | Path | None = None
             ) -> OfficialCheckpoint:
        if isinstance(checkpoint, dict):
            data, source = dict(checkpoint), "<state dict>"
        else:
            data, source = read_checkpoint(checkpoint), str(checkpoint)
        others = sorted(k for k, v in data.items() if not isinstance(v, torch.Tensor))
        if others:
            raise ValueError(f"{source} is not a flat dict of tensors (non-tensor entries {others[:8]}); an official "
                             "TEASER checkpoint is what BaseTrainer.save_model writes")
        prefix = _prefix(data)
        face_model = face_assets = None
        if config is not None:
            folder = Path(config).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"config must be TEASER's assets/ folder (FLAME landmark embeddings, eyelids, "
                                        f"masks); {folder} is not a folder")
            face_model = face_assets = str(folder)
        if flame is not None:
            flame_path = Path(flame).expanduser()
            if not flame_path.exists():
                raise FileNotFoundError(f"no FLAME file at {flame_path} (generic_model.pkl from "
                                        "https://flame.is.tue.mpg.de, or a FLAME-format .safetensors)")
            face_model = str(flame_path)
            if flame_path.suffix == ".safetensors":
                face_assets = None
        if face_model == face_assets:
            face_assets = None
        extras = {"prefix": prefix, "face_model": face_model, "face_model_assets": face_assets}
        return OfficialCheckpoint("teaser", data, None, source, extras)

    def infer_kwargs(self, raw: OfficialCheckpoint) -> dict[str, Any]:
        state, p = raw.state, raw.extras.get("prefix") or _prefix(raw.state)
        _refuse_other_layouts(state, p)
        enc, gen = f"{p}_encoder.", f"{p}_generator."
        in_channels = _shape(state, gen + "encoder1.conv1.weight")[1]
        out_channels = _shape(state, gen + "conv.weight")[0]
        if (in_channels, out_channels) != (6, 3):
            raise ValueError(f"the generator maps {in_channels} -> {out_channels} channels; TEASER's maps 6 "
                             "(render + masked image) -> 3")
        kwargs = {
            "n_shape": _shape(state, enc + "shape_encoder.shape_layers.0.weight")[0],
            "n_exp": _shape(state, enc + "expression_encoder.expression_layers.0.weight")[0] - 5,
            "backbone_multiplier": infer_multiplier(state, p),
            "token_dim": _shape(state, enc + "token_encoder.token_layers.0.0.weight")[0],
            "init_features": _shape(state, gen + "encoder1.conv1.weight")[0],
            "res_blocks": _count(state, re.escape(gen) + r"resnet_blocks\.(\d+)\."),
        }
        for key in ("face_model", "face_model_assets"):
            if raw.extras.get(key) is not None:
                kwargs[key] = raw.extras[key]
        return kwargs

    def convert_state_dict(self, raw: OfficialCheckpoint, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        p = raw.extras.get("prefix") or _prefix(raw.state)
        _refuse_other_layouts(raw.state, p)
        ours, _, unknown = keymap(p).to_ours(raw.state)  # the table drops nothing
        if unknown:
            raise ValueError(f"the TEASER checkpoint has {len(unknown)} tensors outside {p}_encoder / {p}_generator: "
                             f"{unknown[:12]}{' ...' if len(unknown) > 12 else ''}")
        check_complete(ours, model.state_dict(), "TEASER conversion mismatch")
        return ours

    def to_official(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return keymap("teaser").to_official(model.state_dict())
