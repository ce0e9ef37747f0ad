"""`build_dataset`: a dataset from its type name and keyword arguments (what recipes and the trainer use).

Dataset types are a `zoo.plugins.Registry`: each is one decorated class or function where it is defined,

    @register_dataset("image_folder", path_arg="root")
    class ImageFolder(SeededDataset): ...

found on the first lookup among the modules of `zoo.data` (or registered by any module a recipe `imports`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch.utils.data import Dataset

from zoo.plugins import Registry

__all__ = ["DATASETS", "build_dataset", "register_dataset"]

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset", packages=("zoo.data",))

# constructor arguments that recipes do not set: explicit member lists are what `tar_shards` passes the folder types
_INTERNAL_ARGS = {"files"}


def register_dataset(name: str, *, path_arg: str | None = None, accepts: Iterable[str] | None = None
                     ) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: make a dataset class or factory function buildable as `{"type": name, ...}`.

    Args:
        name: the type name recipes use (`data.train.type`).
        path_arg: the keyword that a recipe's `path` maps to (`root`, `shards`); None when the type reads no files.
        accepts: the keyword names it takes, for a constructor whose signature does not list them (one that passes
            `**kwargs` on); default: the signature's named parameters.
    """
    return DATASETS.register(name, path_arg=path_arg, accepts=None if accepts is None else frozenset(accepts))


def _accepted(name: str) -> set[str]:
    accepts = DATASETS.info(name).get("accepts")
    if accepts is not None:
        return set(accepts)
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    named = {p.name for p in params if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    return named - _INTERNAL_ARGS


def build_dataset(cfg: Mapping[str, Any] | str, *, path: Any = None, defaults: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> Dataset:
    """Build a dataset whose items are tensors: images [3, H, W] in [0, 1], audio [T] in [-1, 1].

    Args:
        cfg: a mapping with `type` (a name in `DATASETS`: image_folder, audio_folder, tar_shards, synthetic_image,
            synthetic_audio, or one added with `register_dataset`), an optional `path` and the constructor's keyword
            arguments, either flat or under a `kwargs` key, e.g. ``{"type": "image_folder", "path": "/data/photos/train", "image_size": 256,
            "crop": "multiscale"}``; or just the type name, with everything else as keywords.
        path: the folder / shard pattern (maps to `root` or `shards`); overrides cfg["path"].
        defaults: values the model implies (`image_size`, `sample_rate`, `modality`, `rank`, ...); each is used
            only when the dataset takes it and it is not set explicitly. Unknown keys are ignored.
        **kwargs: more constructor arguments (win over cfg).

    Raises:
        ValueError for an unknown type, TypeError for arguments the type does not take (listing those it takes).
    """
    if isinstance(cfg, str):
        spec: dict[str, Any] = {"type": cfg}
    elif isinstance(cfg, Mapping) or hasattr(cfg, "items"):
        spec = dict(cfg.items())
    else:
        raise TypeError(f"build_dataset expects a mapping with 'type' or a type name, got {type(cfg).__name__}")
    name = spec.pop("type", None)
    if not isinstance(name, str) or name not in DATASETS:
        known = DATASETS.names()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"dataset type must be one of {known}, got {name!r}{hint}")
    nested = spec.pop("kwargs", None) or {}
    args = {**spec, **dict(nested), **kwargs}
    if path is not None:
        args["path"] = path
    ctor, path_key = DATASETS.get(name), DATASETS.info(name).get("path_arg")
    if "path" in args:
        p = args.pop("path")
        if p is not None:
            if path_key is None:
                raise ValueError(f"dataset type {name!r} reads no files; remove path {p!r}")
            args[path_key] = str(p) if not isinstance(p, (list, tuple)) else [str(x) for x in p]
    accepted = _accepted(name)
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise TypeError(f"dataset type {name!r} got unknown arguments {unknown}; it accepts {sorted(accepted)}")
    for key, value in (defaults or {}).items():
        if key in accepted and key not in args:
            args[key] = value
    if path_key is not None and path_key not in args:
        raise ValueError(f"dataset type {name!r} needs a path (the {path_key!r} folder or pattern)")
    return ctor(**args)
