"""Datasets for the trainer: a recipe's `data.train` / `data.val` section -> `zoo.data.build_dataset`.

The engine adds what the model implies (`image_size`, `sample_rate`, `modality`) as defaults, checks that a
configured `path` exists before anything else happens, and accepts `type: synthetic` as the modality's
synthetic set (`synthetic_image` or `synthetic_audio`), so a recipe works for any family without files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

__all__ = ["build_dataset", "check_path", "model_defaults"]


def model_defaults(model: Any) -> dict[str, Any]:
    """Dataset defaults a tokenizer implies: its modality and input size or sample rate."""
    modality = getattr(model, "modality", "image")
    out: dict[str, Any] = {"modality": "image" if modality == "face" else modality}
    if modality in ("image", "face") and getattr(model, "image_size", None) is not None:
        size = model.image_size
        out["image_size"] = size if isinstance(size, int) else int(size[0])
    if modality == "audio" and getattr(model, "sample_rate", None) is not None:
        out["sample_rate"] = int(model.sample_rate)
    return out


def check_path(cfg: Any, split: str = "train") -> None:
    """Raise a FileNotFoundError naming `data.<split>.path` when it is set and does not exist (globs excepted)."""
    path = cfg.path
    if path is not None and not Path(path).expanduser().exists() and not any(c in str(path) for c in "*?["):
        raise FileNotFoundError(
            f"data.{split}.path {str(path)!r} does not exist (relative paths start at {Path.cwd()}); point it at "
            f"your {cfg.type} data on the command line, e.g. data.{split}.path=/data/train"
        )


def build_dataset(cfg: Any, defaults: dict[str, Any] | None = None, split: str = "train") -> Dataset:
    """Build the dataset of a `DatasetConfig` (type, path, kwargs).

    Args:
        cfg: the recipe section (`data.train` or `data.val`).
        defaults: `model_defaults(model)`; each is used when the dataset takes it and the recipe does not set it.
        split: "train" or "val", for messages.

    Raises:
        FileNotFoundError: `path` does not exist (named, with the working directory it was resolved from).
    """
    from zoo.data import build_dataset as build_zoo_dataset

    defaults = dict(defaults or {})
    dtype, path = cfg.type, cfg.path
    check_path(cfg, split)
    if dtype == "synthetic":
        dtype = "synthetic_audio" if defaults.get("modality") == "audio" else "synthetic_image"
    try:
        return build_zoo_dataset({"type": dtype, "kwargs": dict(cfg.kwargs)}, path=path, defaults=defaults)
    except (TypeError, ValueError) as err:
        raise type(err)(f"data.{split}: {err}") from None
