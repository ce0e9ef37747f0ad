"""Tar shards for large sets: few big files instead of millions of small ones, read by offset (no extraction)."""

from __future__ import annotations

import inspect
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.atomic import atomic_path
from zoo.data.audio import AUDIO_EXTENSIONS, AudioFolder
from zoo.data.common import SeededDataset, list_tar_members
from zoo.data.factory import register_dataset
from zoo.data.image import IMAGE_EXTENSIONS, ImageFolder

__all__ = ["tar_shards", "write_tar_shards"]

# what a recipe may set: the folder types' options (their `root` aside) and the shard options
_TAR_ARGS = (set(inspect.signature(ImageFolder).parameters) | set(inspect.signature(AudioFolder).parameters)
             | {"shards", "modality", "extensions"}) - {"root", "files"}


@register_dataset("tar_shards", path_arg="shards", accepts=_TAR_ARGS)
def tar_shards(shards: str | Path | Sequence[str | Path], modality: str = "image",
               extensions: Sequence[str] | None = None, **kwargs: Any) -> SeededDataset:
    """A dataset over the image or audio members of uncompressed tar shards.

    Args:
        shards: a .tar path, a glob pattern ("/data/train-*.tar"), a folder of .tar files, or a list of these.
        modality: "image" (items as `ImageFolder`) or "audio" (items as `AudioFolder`).
        extensions: member suffixes to keep (default: the modality's usual ones; other members are ignored).
        **kwargs: the `ImageFolder` / `AudioFolder` options (image_size, crop, sample_rate, num_samples, seed, ...).

    The shards are indexed once (tar headers only); each item then reads its bytes by seeking, so the dataset is
    map-style and works with any sampler, worker count and `set_epoch` like the folder datasets.
    """
    if modality in ("image", "face"):
        return ImageFolder(files=list_tar_members(shards, extensions or IMAGE_EXTENSIONS), **kwargs)
    if modality == "audio":
        return AudioFolder(files=list_tar_members(shards, extensions or AUDIO_EXTENSIONS), **kwargs)
    raise ValueError(f"tar_shards modality must be 'image', 'face' or 'audio', got {modality!r}")


def write_tar_shards(files: Sequence[str | Path], out_dir: str | Path, shard_size: int = 1000,
                     prefix: str = "shard", root: str | Path | None = None) -> list[Path]:
    """Pack `files` into uncompressed tar shards of `shard_size` members: `out_dir/{prefix}-000000.tar`, ...

    Member names are the paths relative to `root` (default: their common parent), so labels in folder names
    survive. Returns the shard paths.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("write_tar_shards got no files")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    base = Path(root) if root is not None else Path(os.path.commonpath([str(f.parent) for f in files]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(0, len(files), shard_size):
        path = out / f"{prefix}-{k // shard_size:06d}.tar"
        with atomic_path(path) as tmp:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
                for f in files[k: k + shard_size]:
                    tf.add(str(f), arcname=str(f.relative_to(base)), recursive=False)
        paths.append(path)
    return paths
