"""Image folders: every picture under a folder (recursively), as [3, H, W] float tensors in [0, 1].

Pictures are decoded by `zoo.io.open_image`, the one image reader of zoo (16-bit, palette, greyscale, alpha, CMYK,
EXIF orientation handled the same way as in the CLI and evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from zoo.data.common import SeededDataset, TarMember
from zoo.data.factory import register_dataset
from zoo.data.transforms import CROPS, crop_box, crop_image, to_tensor
from zoo.io import IMAGE_EXTENSIONS, open_image

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "load_image"]


def load_image(item: str | Path | TarMember, min_side: int | None = None) -> Image.Image:
    """Decode one picture to RGB (`zoo.io.open_image`). With `min_side`, JPEGs decode at a reduced DCT scale when
    that keeps the shorter side >= min_side (several times faster on large photos; see PIL `Image.draft`)."""
    draft = None if min_side is None else (lambda w, h: min(w, h) / min_side)
    return open_image(item, draft=draft)


@register_dataset("image_folder", path_arg="root")
class ImageFolder(SeededDataset):
    """Pictures under `root` (recursive), cropped to `image_size` squares.

    Args:
        root: folder to search (ignored when `files` is given).
        image_size: side of the returned square.
        crop: "random" (resize shorter side + random crop), "center" (resize shorter side + centre crop),
            "multiscale" (random squares of log-uniform scale in `scale` x the shorter side, then resized) or
            "resize" (squash the whole image). See `zoo.data.transforms.crop_box`.
        scale: multiscale range, as fractions of the shorter side.
        hflip: random horizontal flips.
        recursive: search sub-folders.
        extensions: file suffixes to keep.
        seed: base seed; item i's crop depends only on (seed, rank, epoch, i).
        rank: process rank (default: env RANK or 0).
        skip_unreadable: skip and count files that fail to decode instead of raising (see `SeededDataset`).
        files: explicit list of paths or tar members instead of a folder.
        mosaic: probability that an item is a 2 x 2 mosaic of half-size crops of itself and three other random
            pictures (each cropped as above). For distilling a pooled embedding from few photos: a mosaic's target
            is a new mixture of four pictures' content, so a small training set gives combinatorially many targets
            (the mosaic augmentation of YOLOv4, Bochkovskiy et al. 2020, arXiv:2004.10934). Needs an even size.

    Items are float tensors [3, image_size, image_size] in [0, 1].
    """

    def __init__(
        self,
        root: str | Path | None = None,
        image_size: int = 256,
        crop: str = "random",
        scale: Sequence[float] = (0.25, 1.0),
        hflip: bool = False,
        recursive: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        seed: int = 0,
        rank: int | None = None,
        skip_unreadable: bool = False,
        files: Sequence[Any] | None = None,
        mosaic: float = 0.0,
    ) -> None:
        super().__init__(seed=seed, rank=rank, skip_unreadable=skip_unreadable)
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if len(scale) != 2:
            raise ValueError(f"scale must be (lo, hi), got {scale}")
        if not 0.0 <= mosaic <= 1.0:
            raise ValueError(f"mosaic is a probability in [0, 1], got {mosaic}")
        if mosaic > 0 and image_size % 2:
            raise ValueError(f"mosaic needs an even image_size (four half-size tiles), got {image_size}")
        self.mosaic = float(mosaic)
        self.image_size, self.crop, self.scale, self.hflip = int(image_size), crop, tuple(scale), hflip
        self._set_items(root, files, extensions, recursive)

    def load(self, item: Any, generator: torch.Generator) -> torch.Tensor:
        if self.mosaic > 0 and torch.rand((), generator=generator).item() < self.mosaic:
            others = torch.randint(len(self.items), (3,), generator=generator).tolist()
            tiles = [self._crop(x, generator, self.image_size // 2)
                     for x in (item, *(self.items[i] for i in others))]
            return torch.cat([torch.cat(tiles[:2], dim=2), torch.cat(tiles[2:], dim=2)], dim=1)
        return self._crop(item, generator, self.image_size)

    def _crop(self, item: Any, generator: torch.Generator, size: int) -> torch.Tensor:
        rng = None if self.crop in ("center", "resize") and not self.hflip else generator
        found: dict[str, Any] = {}

        def reduction(width: int, height: int) -> float:
            # the crop box in the upright full-size picture; a JPEG decodes at 1/2, 1/4 or 1/8 scale when the crop
            # is shrunk that much anyway (PIL `draft`)
            box = crop_box(width, height, size, self.crop, rng, self.scale)
            found.update(size=(width, height), box=box)
            return min(box[2] - box[0], box[3] - box[1]) / size

        image = open_image(item, draft=reduction)
        (width, height), box = found["size"], found["box"]
        sx, sy = image.width / width, image.height / height
        box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        return to_tensor(crop_image(image, size, self.crop, rng, self.scale, self.hflip, box=box))

    def __repr__(self) -> str:
        return (f"ImageFolder({len(self)} images, image_size={self.image_size}, crop={self.crop!r}, "
                f"seed={self.seed}, rank={self.rank}" + (f", mosaic={self.mosaic}" if self.mosaic else "") + ")")
