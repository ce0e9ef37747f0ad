"""`build_dataset`: a dataset from its type name and keyword arguments (what recipes and the trainer use)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch.utils.data import Dataset

from zoo.data.audio import AudioFolder
from zoo.data.image import ImageFolder
from zoo.data.shards import tar_shards
from zoo.data.synthetic import SyntheticAudio, SyntheticImage

__all__ = ["DATASETS", "build_dataset"]

# type name -> (constructor, the keyword that `path` maps to, or None when the type reads no files)
DATASETS: dict[str, tuple[Callable[..., Dataset], str | None]] = {
    "image_folder": (ImageFolder, "root"),
    "audio_folder": (AudioFolder, "root"),
    "tar_shards": (tar_shards, "shards"),
    "synthetic_image": (SyntheticImage, None),
    "synthetic_audio": (SyntheticAudio, None),
}

_TAR_KWARGS = (set(inspect.signature(ImageFolder).parameters) | set(inspect.signature(AudioFolder).parameters)
               | {"shards", "modality", "extensions"}) - {"root", "files"}


def _accepted(name: str) -> set[str]:
    if name == "tar_shards":
        return _TAR_KWARGS
    return set(inspect.signature(DATASETS[name][0]).parameters) - {"files"}


def build_dataset(cfg: Mapping[str, Any] | str, *, path: Any = None, defaults: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> Dataset:
    """Build a dataset whose items are tensors: images [3, H, W] in [0, 1], audio [T] in [-1, 1].

    Args:
        cfg: a mapping with `type` (one of `DATASETS`: image_folder, audio_folder, tar_shards, synthetic_image,
            synthetic_audio), an optional `path` and the constructor's keyword arguments, either flat or under a
            `kwargs` key, e.g. ``{"type": "image_folder", "path": "/data/photos/train", "image_size": 256,
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
    if name not in DATASETS:
        raise ValueError(f"dataset type must be one of {sorted(DATASETS)}, got {name!r}")
    nested = spec.pop("kwargs", None) or {}
    args = {**spec, **dict(nested), **kwargs}
    if path is not None:
        args["path"] = path
    ctor, path_key = DATASETS[name]
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
            if key == "modality" and name != "tar_shards":
                continue
            args[key] = value
    if path_key is not None and path_key not in args:
        raise ValueError(f"dataset type {name!r} needs a path (the {path_key!r} folder or pattern)")
    return ctor(**args)
