"""Frozen teachers of one global image embedding `[B, D]` per image (images `[B, 3, H, W]` in [0, 1]).

* `"clip_vision"`: a local Hugging Face `CLIPVisionModelWithProjection` folder; its `image_embeds`. SEED's stage-2
  target is `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (1024-d, the embedding space of SD-2.1 unCLIP), fed the same
  224 px CLIP-normalised crop as the tokenizer.
* `"efficientnet_lite0"`: the offline ImageNet EfficientNet-Lite0 (`zoo.losses.semantic.build_teacher`), its final
  1280-channel features averaged over positions: the stand-in for tiny offline models.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EMBEDDING_TEACHERS", "build_embedding_teacher"]

EMBEDDING_TEACHERS = ("clip_vision", "efficientnet_lite0")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PooledTeacher(nn.Module):
    """Mean over positions of a `zoo.losses.semantic.Teacher`'s feature map."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    @property
    def dim(self) -> int:
        return self.teacher.dim

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images).float().mean(dim=(2, 3))


class CLIPVisionTeacher(nn.Module):
    """`CLIPVisionModelWithProjection(...).image_embeds` of 224 px CLIP-normalised images (frozen, eval mode)."""

    def __init__(self, folder: str | Path, input_size: int | None = None) -> None:
        super().__init__()
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError as err:
            raise ImportError("the clip_vision teacher needs transformers (pip install transformers)") from err
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json); download "
                                    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K (SEED's teacher) and pass its folder")
        self.model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.input_size = int(input_size or self.model.config.image_size)
        self.register_buffer("mean", torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> CLIPVisionTeacher:
        super().train(mode)
        self.model.eval()
        return self

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", antialias=True,
                              align_corners=False)
        return self.model(pixel_values=(x - self.mean) / self.std).image_embeds.float()


def build_embedding_teacher(name: str, weights: str | Path | None = None, input_size: int | None = None
                            ) -> nn.Module:
    """A frozen embedding teacher (see the module docstring); `.dim` is its width.

    Raises:
        FileNotFoundError naming what to download when local weights are missing.
    """
    if name == "clip_vision":
        if weights is None:
            raise FileNotFoundError("the clip_vision teacher needs weights=<local CLIPVisionModelWithProjection "
                                    "folder> (laion/CLIP-ViT-H-14-laion2B-s32B-b79K for SEED)")
        return CLIPVisionTeacher(weights, input_size)
    if name == "efficientnet_lite0":
        from zoo.losses.semantic import build_teacher

        return PooledTeacher(build_teacher("efficientnet_lite0", weights=weights, input_size=input_size))
    raise ValueError(f"embedding teacher must be one of {EMBEDDING_TEACHERS}, got {name!r}")
