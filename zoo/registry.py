"""One registry drives everything: `list_models`, `load`, `hubconf.py`, the docs table and the tests.

A family registers its class (`@register_family`) and, optionally, an official-checkpoint converter
(`@register_converter`). Each variant is one YAML file `configs/<family>/<variant>.yaml` naming the family, its
constructor kwargs and its weights entries.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from zoo.api import Tokenizer
from zoo.weights import WeightsEntry, load_official_checkpoint, load_safetensors

_FAMILIES: dict[str, type[Tokenizer]] = {}
_CONVERTERS: dict[str, Callable[..., Tokenizer]] = {}
_SPECS: dict[str, "ModelSpec"] = {}
_LOADED = False
_FAMILY_PACKAGES = ("zoo.image", "zoo.audio", "zoo.face", "zoo.convert")
_SPEC_KEYS = {"name", "family", "description", "paper", "kwargs", "weights", "tags"}


@dataclass
class ModelSpec:
    """A registered variant: architecture (family + kwargs) separate from its weights entries."""

    name: str
    family: str
    description: str = ""
    paper: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, WeightsEntry] = field(default_factory=dict)
    default_weights: str | None = None
    tags: list[str] = field(default_factory=list)
    config_path: Path | None = None

    @property
    def modality(self) -> str:
        return get_family(self.family).modality


def register_family(name: str) -> Callable[[type[Tokenizer]], type[Tokenizer]]:
    """Class decorator: make a `Tokenizer` subclass buildable by family name."""

    def decorate(cls: type[Tokenizer]) -> type[Tokenizer]:
        if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
            raise TypeError(f"register_family({name!r}) expects a Tokenizer subclass, got {cls!r}")
        if name in _FAMILIES and _FAMILIES[name] is not cls:
            raise ValueError(f"family {name!r} is already registered by {_FAMILIES[name].__qualname__}")
        cls.family = name
        _FAMILIES[name] = cls
        return cls

    return decorate


def register_converter(family: str) -> Callable[[Callable[..., Tokenizer]], Callable[..., Tokenizer]]:
    """Function decorator: `fn(checkpoint, config=None) -> Tokenizer` for official release files of `family`."""

    def decorate(fn: Callable[..., Tokenizer]) -> Callable[..., Tokenizer]:
        _CONVERTERS[family] = fn
        return fn

    return decorate


def config_root() -> Path:
    """The folder of variant YAMLs: `zoo/configs` in an installed wheel, `configs/` in a source checkout."""
    for candidate in (Path(__file__).resolve().parent / "configs", Path(__file__).resolve().parents[1] / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("zoo's configs folder is missing; reinstall the package")


def _parse_spec(path: Path) -> ModelSpec:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a variant config must be a mapping")
    unknown = set(data) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
    for key in ("name", "family"):
        if key not in data:
            raise ValueError(f"{path}: missing required key {key!r}")
    weights_data = dict(data.get("weights") or {})
    default = weights_data.pop("default", None)
    weights = {tag: WeightsEntry.from_dict(tag, entry or {}) for tag, entry in weights_data.items()}
    if default is None and weights:
        default = next(iter(weights))
    if default is not None and default not in weights:
        raise ValueError(f"{path}: default weights {default!r} is not one of {sorted(weights)}")
    return ModelSpec(
        name=data["name"],
        family=data["family"],
        description=data.get("description", ""),
        paper=data.get("paper"),
        kwargs=dict(data.get("kwargs") or {}),
        weights=weights,
        default_weights=default,
        tags=list(data.get("tags") or []),
        config_path=path,
    )


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for package in _FAMILY_PACKAGES:
        importlib.import_module(package)
    for path in sorted(config_root().glob("*/*.yaml")):
        spec = _parse_spec(path)
        if spec.name in _SPECS:
            raise ValueError(f"model name {spec.name!r} is defined twice: {_SPECS[spec.name].config_path} and {path}")
        if spec.family not in _FAMILIES:
            raise ValueError(f"{path}: family {spec.family!r} is not registered (known: {sorted(_FAMILIES)})")
        _SPECS[spec.name] = spec


def register_model(name: str, family: str, kwargs: dict[str, Any] | None = None, *, description: str = "",
                   weights: dict[str, Any] | None = None) -> ModelSpec:
    """Register a variant from Python (the YAML files in `configs/` are the usual way)."""
    _ensure_loaded()
    if name in _SPECS:
        raise ValueError(f"model name {name!r} is already registered ({_SPECS[name].config_path})")
    if family not in _FAMILIES:
        raise ValueError(f"family {family!r} is not registered (known: {sorted(_FAMILIES)})")
    data = dict(weights or {})
    default = data.pop("default", None)
    entries = {tag: WeightsEntry.from_dict(tag, entry or {}) for tag, entry in data.items()}
    spec = ModelSpec(name, family, description, kwargs=dict(kwargs or {}), weights=entries,
                     default_weights=default or next(iter(entries), None))
    _SPECS[name] = spec
    return spec


def unregister_model(name: str) -> None:
    _SPECS.pop(name, None)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str | list[str] = "*", *, family: str | None = None, modality: str | None = None,
                pretrained: bool = False) -> list[str]:
    """Registered variant names matching fnmatch `pattern` (or any of a list), naturally sorted.

    Args:
        pattern: wildcard(s), e.g. "gigatok-*" or ["*-tiny", "wavtokenizer-*"].
        family: keep one family.
        modality: keep "image", "audio" or "face".
        pretrained: keep variants with at least one weights entry.
    """
    _ensure_loaded()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    names = []
    for name, spec in _SPECS.items():
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if family is not None and spec.family != family:
            continue
        if modality is not None and spec.modality != modality:
            continue
        if pretrained and not spec.weights:
            continue
        names.append(name)
    return sorted(names, key=_natural_key)


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def get_family(name: str) -> type[Tokenizer]:
    _ensure_loaded()
    if name not in _FAMILIES:
        raise KeyError(f"unknown family {name!r}; known families: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def get_spec(name: str) -> ModelSpec:
    """The registered variant `name`; an unknown name lists close matches."""
    _ensure_loaded()
    if name not in _SPECS:
        close = difflib.get_close_matches(name, list(_SPECS), n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (zoo.list_models() lists all {len(_SPECS)})")
    return _SPECS[name]


def create(name: str, **overrides: Any) -> Tokenizer:
    """Build the architecture of variant `name` with random weights (kwargs override the config)."""
    spec = get_spec(name)
    cls = get_family(spec.family)
    model = cls(**{**spec.kwargs, **overrides})
    model.name = name
    return model


def _apply_state_dict(model: Tokenizer, state: dict, origin: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{origin} does not match {type(model).__name__}: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
            " (is it for another variant? check config kwargs)"
        )
    shapes = [k for k in own if own[k].shape != state[k].shape]
    if shapes:
        k = shapes[0]
        raise ValueError(f"{origin}: shape mismatch for {k}: model {tuple(own[k].shape)}, file {tuple(state[k].shape)}")
    model.load_state_dict(state, strict=True)


def _load_dir(directory: Path, weights: Any, overrides: dict) -> Tokenizer:
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    if config.get("format") != "zoo.tokenizer/1":
        raise ValueError(f"{config_file} is not a zoo config (written by save_pretrained)")
    cls = get_family(config["family"])
    model = cls(**{**config["kwargs"], **overrides})
    model.name = config.get("name")
    if weights is not None:
        file = directory / "model.safetensors" if weights == "default" else Path(weights)
        _apply_state_dict(model, load_safetensors(file), str(file))
    return model


def load(
    name_or_dir: str | Path,
    weights: str | Path | None = "default",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> Tokenizer:
    """Build a tokenizer and load its weights; returns it in eval mode.

    Args:
        name_or_dir: a registered name (`zoo.list_models()`) or a folder written by `save_pretrained`.
        weights: "default" (the variant's default entry), a tag of its weights entries, a path to a
            `.safetensors` file, or None for random initialisation.
        device, dtype: moved to after loading.
        **overrides: constructor kwargs replacing the config's.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json; a model folder is written by save_pretrained")
        model = _load_dir(path, weights, overrides)
    elif isinstance(name_or_dir, Path) or "/" in str(name_or_dir):
        raise FileNotFoundError(f"no model folder at {name_or_dir}")
    else:
        model = _load_registered(get_spec(str(name_or_dir)), weights, overrides)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _load_registered(spec: ModelSpec, weights: Any, overrides: dict) -> Tokenizer:
    if weights is None:
        return create(spec.name, **overrides)
    if isinstance(weights, str) and weights == "default":
        if spec.default_weights is None:
            raise ValueError(
                f"{spec.name} has no published weights yet; use zoo.load({spec.name!r}, weights=None) for a random "
                "model, or weights=PATH for your own .safetensors"
            )
        weights = spec.default_weights
    if isinstance(weights, str) and weights in spec.weights:
        entry = spec.weights[weights]
        file = entry.source.resolve()
        if entry.format == "official":
            config = entry.official_config.resolve() if entry.official_config else None
            model = from_official(spec.family, file, config=config)
            model.name = spec.name
        else:
            model = create(spec.name, **overrides)
            _apply_state_dict(model, load_safetensors(file), str(file))
        model.weights_tag = entry.tag
        return model
    path = Path(weights)
    if not path.exists():
        tags = ", ".join(spec.weights) or "none"
        raise FileNotFoundError(f"weights {str(weights)!r} is neither a file nor a weights tag of {spec.name} "
                                f"(tags: {tags})")
    model = create(spec.name, **overrides)
    _apply_state_dict(model, load_safetensors(path), str(path))
    return model


def from_official(family: str, checkpoint: str | Path, config: str | Path | dict | None = None,
                  **kwargs: Any) -> Tokenizer:
    """Convert an official release checkpoint of `family` into our Tokenizer with the same outputs.

    Extra keyword arguments go to the family's converter (e.g. FlexTok's `vae=` folder)."""
    _ensure_loaded()
    if family not in _CONVERTERS:
        raise KeyError(f"no official converter for family {family!r}; available: {', '.join(sorted(_CONVERTERS))}")
    model = _CONVERTERS[family](checkpoint, config=config, **kwargs)
    return model.eval()


__all__ = [
    "ModelSpec",
    "create",
    "from_official",
    "get_family",
    "get_spec",
    "list_families",
    "list_models",
    "load",
    "load_official_checkpoint",
    "register_converter",
    "register_family",
    "register_model",
    "unregister_model",
]
