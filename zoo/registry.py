"""One registry drives everything: `list_models`, `load`, `hubconf.py`, the docs table and the tests.

A family registers its class (`@register_family`, found by importing every module of `zoo.image`, `zoo.audio`
and `zoo.face`) and, optionally, an official-checkpoint converter (`@register_converter` on a
`zoo.convert.Converter` in `zoo/convert/<family>.py`, imported only when that family's official files are read).
Each variant is one YAML file `configs/<family>/<variant>.yaml` naming the family, its constructor kwargs and its
weights entries.

One build path: every model is `cls(**kwargs)`. The kwargs of a registered variant are its YAML's (plus
overrides); official weights are filtered into that architecture by the family's converter, after a check that the
architecture the official files imply is the registered one.

Names: a bare string is a registry name, always; a folder written by `save_pretrained` is a `Path`, a string
that looks like a path (`./dir`, `../dir`, `/abs/dir`, `~/dir`, `dir/sub`), or `local-dir:NAME`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from zoo.api import Tokenizer
from zoo.plugins import Registry
from zoo.precision import check_precision, warn_if_emulated
from zoo.weights import WeightsEntry, load_official_checkpoint, load_safetensors

LOCAL_PREFIX = "local-dir:"
_SPECS: dict[str, ModelSpec] = {}
_LOADED = False
_SPEC_KEYS = {"name", "family", "description", "paper", "kwargs", "weights", "tags"}


def _check_family(cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
        raise TypeError(f"register_family expects a Tokenizer subclass, got {cls!r}")


def _check_converter(obj: Any) -> None:
    from zoo.convert.base import Converter

    if not isinstance(obj, Converter):
        raise TypeError(f"register_converter expects a zoo.convert.Converter subclass, got {obj!r}")


FAMILIES: Registry[type[Tokenizer]] = Registry("family", packages=("zoo.image", "zoo.audio", "zoo.face"),
                                               check=_check_family)
# A converter lives in `zoo/convert/<family>.py`; one for a part of a family ("karl-vqgan": KARL's base VQGAN)
# may live in its family's module, so a lookup imports the module named before the first "-".
CONVERTERS: Registry[Any] = Registry("converter", packages=("zoo.convert",), check=_check_converter,
                                     lazy_module=lambda family: f"zoo.convert.{family.split('-')[0]}")


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

    @property
    def bundled_weights(self) -> WeightsEntry | None:
        """The default weights entry when its file ships inside the package (works offline), else None."""
        entry = self.weights.get(self.default_weights) if self.default_weights else None
        return entry if entry is not None and entry.bundled else None


def register_family(name: str) -> Callable[[type[Tokenizer]], type[Tokenizer]]:
    """Class decorator: make a `Tokenizer` subclass buildable by family name."""

    def decorate(cls: type[Tokenizer]) -> type[Tokenizer]:
        FAMILIES.add(name, cls)
        cls.family = name
        return cls

    return decorate


def register_converter(family: str) -> Callable[[type], type]:
    """Class decorator on a `zoo.convert.Converter` subclass: the official-checkpoint converter of `family`."""

    def decorate(cls: type) -> type:
        cls.family = family
        CONVERTERS.add(family, cls())
        return cls

    return decorate


def get_converter(family: str) -> Any:
    """The converter of `family` (imports `zoo.convert.<family>` only)."""
    try:
        return CONVERTERS.get(family)
    except KeyError:
        raise KeyError(f"no official converter for family {family!r}; available: "
                       f"{', '.join(CONVERTERS.names()) or 'none'}") from None


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
    FAMILIES.discover()
    for path in sorted(config_root().glob("*/*.yaml")):
        spec = _parse_spec(path)
        if spec.name in _SPECS:
            raise ValueError(f"model name {spec.name!r} is defined twice: {_SPECS[spec.name].config_path} and {path}")
        if spec.family not in FAMILIES:
            raise ValueError(f"{path}: family {spec.family!r} is not registered (known: {FAMILIES.names()})")
        _SPECS[spec.name] = spec


def register_model(name: str, family: str, kwargs: dict[str, Any] | None = None, *, description: str = "",
                   weights: dict[str, Any] | None = None) -> ModelSpec:
    """Register a variant from Python (the YAML files in `configs/` are the usual way)."""
    _ensure_loaded()
    if name in _SPECS:
        raise ValueError(f"model name {name!r} is already registered ({_SPECS[name].config_path})")
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not registered (known: {FAMILIES.names()})")
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
    import fnmatch

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
    return FAMILIES.names()


def get_family(name: str) -> type[Tokenizer]:
    _ensure_loaded()
    return FAMILIES.get(name)


def get_spec(name: str) -> ModelSpec:
    """The registered variant `name`; an unknown name lists close matches."""
    import difflib

    _ensure_loaded()
    if name not in _SPECS:
        close = difflib.get_close_matches(name, list(_SPECS), n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (zoo.list_models() lists all {len(_SPECS)})")
    return _SPECS[name]


# -- names --------------------------------------------------------------------------------------------------------
def _looks_like_path(text: str) -> bool:
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return text.startswith((".", "~")) or any(s in text for s in seps)


def resolve_ref(ref: str | Path) -> tuple[str, str | Path]:
    """What a model reference means: `("path", Path)` for a folder reference, `("name", str)` for a registry name.

    A `Path`, `local-dir:NAME`, or a string that looks like a path (`./x`, `../x`, `/x`, `~/x`, `a/b`) is a folder;
    any other string is a registry name, even when a folder of that name exists in the working directory.
    """
    if isinstance(ref, Path):
        return "path", ref.expanduser()
    if not isinstance(ref, str) or not ref:
        raise TypeError(f"a model is a registered name (str) or a folder (pathlib.Path), got {ref!r}")
    if ref.startswith(LOCAL_PREFIX):
        rest = ref[len(LOCAL_PREFIX):]
        if not rest:
            raise ValueError(f"{LOCAL_PREFIX} needs a folder after it, e.g. {LOCAL_PREFIX}my-model")
        return "path", Path(rest).expanduser()
    if _looks_like_path(ref):
        return "path", Path(ref).expanduser()
    return "name", ref


def get_spec_for(name: str) -> ModelSpec:
    """`get_spec`, but an unregistered name that is also a local folder gets an error naming both readings."""
    try:
        return get_spec(name)
    except KeyError as err:
        if Path(name).exists():
            raise KeyError(
                f"{name!r} is read as a registry name, and no model of that name is registered "
                f"({err.args[0]}). A folder {name!r} exists in {Path.cwd()}: to load it, pass "
                f"pathlib.Path({name!r}), './{name}' or '{LOCAL_PREFIX}{name}'"
            ) from None
        raise


# -- building -----------------------------------------------------------------------------------------------------
def _signature_defaults(cls: type) -> tuple[dict[str, Any], set[str]]:
    params = inspect.signature(cls.__init__).parameters
    defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    names = {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return defaults, names


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _normalise(a), _normalise(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (type(a) is type(b) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def kwargs_diff(cls: type, registered: dict[str, Any], inferred: dict[str, Any],
                ignore: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Lines `name: registered X, official files Y` for every inferred kwarg that disagrees with the registered one
    (a kwarg the registered config leaves out counts as the constructor default)."""
    defaults, names = _signature_defaults(cls)
    lines = []
    for key in sorted(inferred):
        if key in ignore:
            continue
        if key not in names:
            lines.append(f"{key}: the converter infers {inferred[key]!r}, but {cls.__name__} takes no such argument")
            continue
        mine = registered[key] if key in registered else defaults.get(key, "<required, not set>")
        if not _same(mine, inferred[key]):
            lines.append(f"{key}: registered {mine!r}, official files {inferred[key]!r}")
    return lines


def _nonpersistent_buffers(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_buffers()} - set(model.state_dict())


def apply_state_dict(model: Tokenizer, state: dict, origin: str) -> Tokenizer:
    """Load `state` strictly (every key, every shape); a model on the meta device takes the tensors (cast to its
    dtypes) as its own. Raises a ValueError naming `origin` on any mismatch."""
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
    on_meta = any(t.device.type == "meta" for t in own.values())
    if on_meta:  # fresh, allocator-aligned copies: file-backed tensors can be misaligned, which changes kernels
        state = {k: v.to(dtype=own[k].dtype, device="cpu").clone(memory_format=torch.contiguous_format)
                 for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


def build(cls: type[Tokenizer], kwargs: dict[str, Any], state_fn: Callable[[Tokenizer], dict] | None, origin: str,
          name: str | None = None) -> Tokenizer:
    """The one builder: `cls(**kwargs)`, then the weights `state_fn(model)` (None: keep the random init).

    With weights, the model is built on the meta device (no random init of large models) and takes the loaded
    tensors; models with non-persistent buffers (computed tables) are built on the CPU instead.
    """
    if state_fn is None:
        model = cls(**kwargs)
    else:
        with torch.device("meta"):
            model = cls(**kwargs)
        if _nonpersistent_buffers(model):
            model = cls(**kwargs)
        apply_state_dict(model, state_fn(model), origin)
    model.name = name
    return model


def create(name: str, **overrides: Any) -> Tokenizer:
    """Build the architecture of variant `name` with random weights (kwargs override the config)."""
    spec = get_spec(name)
    return build(get_family(spec.family), {**spec.kwargs, **overrides}, None, name, name)


def _load_dir(directory: Path, weights: Any, overrides: dict) -> Tokenizer:
    config_file = directory / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_file} cannot be read as JSON ({type(err).__name__}: {err}); it is truncated or "
                         "not written by save_pretrained: save the model again") from None
    if not isinstance(config, dict) or config.get("format") != "zoo.tokenizer/1":
        raise ValueError(f"{config_file} is not a zoo config (written by save_pretrained)")
    if not isinstance(config.get("family"), str) or not isinstance(config.get("kwargs"), dict):
        raise ValueError(f"{config_file} lacks its 'family' name or its 'kwargs' mapping; it is damaged: save the "
                         "model again")
    try:
        cls = get_family(config["family"])
    except KeyError as err:
        raise ValueError(f"{config_file} names family {config['family']!r}, which is not registered "
                         f"({err.args[0] if err.args else err})") from None
    kwargs = {**config["kwargs"], **overrides}
    file = directory / "model.safetensors" if weights == "default" else None if weights is None else Path(weights)
    try:
        if file is None:
            return build(cls, kwargs, None, str(directory), config.get("name"))
        return build(cls, kwargs, lambda m: load_safetensors(file), str(file), config.get("name"))
    except TypeError as err:  # kwargs the class does not take: a damaged or foreign config
        raise TypeError(f"{config_file}: cannot build {cls.__name__} from its kwargs ({err})") from None


def load(
    name_or_dir: str | Path,
    weights: str | Path | None = "default",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    precision: str = "fp32",
    **overrides: Any,
) -> Tokenizer:
    """Build a tokenizer and load its weights; returns it in eval mode.

    Args:
        name_or_dir: a registered name (`zoo.list_models()`), or a folder written by `save_pretrained` given as a
            `pathlib.Path`, a path-like string (`./dir`, `/abs/dir`, `a/b`) or `local-dir:NAME`. A bare string is
            always a registry name, so a folder in the working directory never shadows a registered model.
        weights: "default" (the variant's default entry), a tag of its weights entries, a path to a
            `.safetensors` file, or None for random initialisation.
        device, dtype: moved to after loading.
        precision: "fp32" (default), "bf16" or "fp16": encode / decode run their heavy layers under autocast of that
            dtype, quantisers and other sensitive parts in fp32 (`zoo.precision`; fidelity in docs/performance.md).
        **overrides: constructor kwargs replacing the config's (also with official weights, where they must agree
            with what the official files imply).
    """
    check_precision(precision)
    kind, ref = resolve_ref(name_or_dir)
    if kind == "path":
        path = Path(ref)
        if path.is_dir():
            if not (path / "config.json").exists():
                raise FileNotFoundError(f"{path} has no config.json; a model folder is written by save_pretrained")
            model = _load_dir(path, weights, overrides)
        elif path.is_file():
            raise ValueError(f"{path} is a file; zoo.load takes a model folder (save_pretrained) or a registered "
                             "name. For a weights file: zoo.load(NAME, weights=PATH)")
        else:
            raise FileNotFoundError(f"no model folder at {path}")
    else:
        model = _load_registered(get_spec_for(str(ref)), weights, overrides)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    model.precision = precision
    if precision != "fp32":
        warn_if_emulated(precision, model.device)
    return model


def _load_registered(spec: ModelSpec, weights: Any, overrides: dict) -> Tokenizer:
    cls = get_family(spec.family)
    kwargs = {**spec.kwargs, **overrides}
    if weights is None:
        return build(cls, kwargs, None, spec.name, spec.name)
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
            model = _load_official(spec, cls, kwargs, entry, file)
        else:
            model = build(cls, kwargs, lambda m: load_safetensors(file), str(file), spec.name)
        model.weights_tag = entry.tag
        return model
    path = Path(weights)
    if not path.exists():
        tags = ", ".join(spec.weights) or "none"
        raise FileNotFoundError(f"weights {str(weights)!r} is neither a file nor a weights tag of {spec.name} "
                                f"(tags: {tags})")
    model = build(cls, kwargs, lambda m: load_safetensors(path), str(path), spec.name)
    model.weights_tag = str(path.resolve())  # provenance for reports (zoo eval): the file itself
    return model


def _load_official(spec: ModelSpec, cls: type[Tokenizer], kwargs: dict, entry: WeightsEntry, file: Path) -> Tokenizer:
    converter = get_converter(spec.family)
    config = entry.official_config.resolve() if entry.official_config else None
    raw = converter.read(file, config)
    inferred = converter.infer_kwargs(raw)
    for key in converter.release_kwargs:  # left null by the variant: the release's files say
        if kwargs.get(key) is None and key in inferred:
            kwargs[key] = inferred[key]
    diff = kwargs_diff(cls, kwargs, inferred, ignore=converter.training_kwargs)
    if diff:
        where = spec.config_path or "the registered config"
        raise ValueError(
            f"the official weights {file} do not fit the registered architecture of {spec.name} ({where}):\n  "
            + "\n  ".join(diff)
            + f"\nIf the release really has these values, correct {where}; to build whatever the file holds, use "
            f"zoo.from_official({spec.family!r}, {str(file)!r}, config=...)."
        )
    return build(cls, kwargs, lambda m: converter.convert_state_dict(raw, m), str(file), spec.name)


def from_official(family: str, checkpoint: str | Path | dict, config: str | Path | dict | None = None,
                  **options: Any) -> Tokenizer:
    """Convert an official release checkpoint of `family` into our Tokenizer with the same outputs.

    Thin: read the release, infer the constructor kwargs it implies, build `cls(**kwargs)`, filter the official
    tensors into it. Extra keyword arguments go to the converter's `read` (e.g. FlexTok's `vae=` folder).
    """
    _ensure_loaded()
    converter = get_converter(family)
    cls = get_family(family)
    raw = converter.read(checkpoint, config, **options)
    kwargs = converter.infer_kwargs(raw)
    model = build(cls, kwargs, lambda m: converter.convert_state_dict(raw, m), raw.source)
    return model.eval()


__all__ = [
    "CONVERTERS",
    "FAMILIES",
    "LOCAL_PREFIX",
    "ModelSpec",
    "apply_state_dict",
    "build",
    "create",
    "from_official",
    "get_converter",
    "get_family",
    "get_spec",
    "kwargs_diff",
    "list_families",
    "list_models",
    "load",
    "load_official_checkpoint",
    "register_converter",
    "register_family",
    "register_model",
    "resolve_ref",
    "unregister_model",
]
