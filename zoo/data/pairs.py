"""Image-text pairs from WebDataset-style tar shards: `KEY.jpg` (or another image suffix) beside `KEY.txt`.

The shards are indexed once (tar headers only) and read by offset, so the dataset is map-style like the folder
types (any sampler, workers, exact resume). Items are `{"image": [3, S, S] float in [0, 1], "text": str}`; the
default collate turns a batch into `{"image": [B, 3, S, S], "text": [str] * B}`.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.data.common import SeededDataset, TarMember, list_tar_members, open_item
from zoo.data.factory import register_dataset
from zoo.data.image import IMAGE_EXTENSIONS, ImageFolder

__all__ = ["ImageTextShards", "write_image_text_shards"]

TEXT_EXTENSIONS = (".txt",)


def _key(member: TarMember) -> str:
    """WebDataset's sample key: the member path up to the first dot of its file name."""
    folder, name = os.path.split(member.name)
    return os.path.join(folder, name.split(".", 1)[0])


@register_dataset("image_text_shards", path_arg="shards")
class ImageTextShards(SeededDataset):
    """Image-caption pairs of tar shards (`KEY.<image ext>` + `KEY.txt`, UTF-8).

    Args:
        shards: a .tar path, a glob pattern, a folder of .tar files, or a list of these.
        image_size, crop, scale, hflip: as `ImageFolder` (the crop is drawn per item from (seed, rank, epoch, i)).
        seed, rank, skip_unreadable: as `SeededDataset`.

    Members without their partner are ignored; a shard set without any pair is an error.
    """

    def __init__(self, shards: str | Path | Sequence[str | Path], image_size: int = 224, crop: str = "random",
                 scale: Sequence[float] = (0.25, 1.0), hflip: bool = False, seed: int = 0, rank: int | None = None,
                 skip_unreadable: bool = False) -> None:
        super().__init__(seed=seed, rank=rank, skip_unreadable=skip_unreadable)
        images = {_key(m): m for m in list_tar_members(shards, IMAGE_EXTENSIONS)}
        try:
            texts = {_key(m): m for m in list_tar_members(shards, TEXT_EXTENSIONS)}
        except FileNotFoundError:
            texts = {}
        keys = sorted(set(images) & set(texts))
        if not keys:
            raise FileNotFoundError(f"no image-text pairs (KEY.jpg beside KEY.txt) in tar shards {shards!r}: "
                                    f"{len(images)} images, {len(texts)} captions")
        self.items = [(images[k], texts[k]) for k in keys]
        self._images = ImageFolder(files=[pair[0] for pair in self.items], image_size=image_size, crop=crop,
                                   scale=scale, hflip=hflip, seed=seed, rank=rank)

    def load(self, item: Any, generator: torch.Generator) -> dict[str, Any]:
        image_member, text_member = item
        stream = open_item(text_member)
        text = stream.read().decode("utf-8").strip() if not isinstance(stream, str) else Path(stream).read_text()
        return {"image": self._images.load(image_member, generator), "text": text}

    def __repr__(self) -> str:
        return f"ImageTextShards({len(self)} pairs, image_size={self._images.image_size}, crop={self._images.crop!r})"


def write_image_text_shards(pairs: Sequence[tuple[str | Path, str]], out_dir: str | Path, shard_size: int = 1000,
                            prefix: str = "pairs") -> list[Path]:
    """Write (image file, caption) pairs as uncompressed shards `out_dir/{prefix}-000000.tar`, ... with members
    `NNNNNNNN.<image suffix>` and `NNNNNNNN.txt`. Returns the shard paths."""
    if not pairs:
        raise ValueError("write_image_text_shards got no pairs")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(pairs), shard_size):
        path = out / f"{prefix}-{start // shard_size:06d}.tar"
        tmp = path.with_suffix(".tar.part")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for index, (image, caption) in enumerate(pairs[start: start + shard_size], start=start):
                image = Path(image)
                key = f"{index:08d}"
                tf.add(str(image), arcname=key + image.suffix.lower(), recursive=False)
                data = str(caption).encode("utf-8")
                info = tarfile.TarInfo(key + ".txt")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
        paths.append(path)
    return paths
