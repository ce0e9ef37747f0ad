"""LPIPS (Zhang et al. 2018, https://arxiv.org/abs/1801.03924) through the `lpips` package, offline.

The `lpips` wheel ships only the learned linear heads; the VGG16 / AlexNet / SqueezeNet backbone weights are
torchvision's ImageNet files, which torchvision downloads. Here they come from a local file instead: an explicit
path, or torchvision's own cache file in `torch.hub.get_dir()/checkpoints/` (e.g. `vgg16-397923af.pth`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

__all__ = ["BACKBONE_FILES", "LPIPS", "build_lpips", "find_backbone_weights", "load_lpips_backbone"]

# torchvision's cache file names (the hash prefix is part of the name torchvision looks for)
BACKBONE_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_TORCHVISION_ARCH = {"vgg": "vgg16", "alex": "alexnet", "squeeze": "squeezenet1_1"}


def find_backbone_weights(net: str = "vgg", path: str | Path | None = None) -> Path:
    """The backbone state-dict file: `path`, else env `ZOO_LPIPS_BACKBONE`, else torchvision's cache file.

    Raises:
        FileNotFoundError naming the file it looked for and where to put it.
    """
    if net not in BACKBONE_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    candidates = [Path(path).expanduser()] if path is not None else []
    if path is None and os.environ.get("ZOO_LPIPS_BACKBONE"):
        candidates.append(Path(os.environ["ZOO_LPIPS_BACKBONE"]).expanduser())
    cache = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
    if path is None:
        candidates.append(cache)
    for c in candidates:
        if c.is_file():
            return c
    arch = _TORCHVISION_ARCH[net]
    raise FileNotFoundError(
        f"LPIPS-{net} needs the torchvision ImageNet {arch} weights ({BACKBONE_FILES[net]}), which the lpips package "
        f"does not ship; looked at {[str(c) for c in candidates]}. Put the file at {cache} (on a machine with "
        f"internet: python -c \"import torchvision; torchvision.models.{arch}(weights='DEFAULT')\" writes it "
        f"there), or pass its path (backbone_weights=... / env ZOO_LPIPS_BACKBONE)."
    )


def load_lpips_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision backbone state dict (`features.<i>.*`) into an `lpips.LPIPS`'s sliced trunk.

    lpips keeps torchvision's layer indices as module names inside its slices (`net.slice2.5.weight` is
    `features.5.weight`), so the mapping is by index. A full lpips state dict (`net.slice*` keys) loads as is.
    """
    if any(k.startswith("net.slice") for k in state_dict):
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if [k for k in missing if k.startswith("net.")] or unexpected:
            raise ValueError(f"LPIPS checkpoint does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return
    wanted = {}
    for name, _ in list(model.net.named_parameters()) + list(model.net.named_buffers()):
        _slice, index, leaf = name.split(".", 2)
        key = f"features.{index}.{leaf}"
        if key not in state_dict:
            raise ValueError(f"backbone state dict has no {key!r} (needed for lpips net.{name}); is it a torchvision "
                             f"{model.pnet_type} ImageNet checkpoint? It has keys like {list(state_dict)[:4]}")
        wanted[name] = state_dict[key]
    own = model.net.state_dict()
    for name, value in wanted.items():
        if own[name].shape != value.shape:
            raise ValueError(f"backbone tensor for net.{name} has shape {tuple(value.shape)}, "
                             f"expected {tuple(own[name].shape)}")
    model.net.load_state_dict(wanted, strict=True)


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """Make torch.nn.init a no-op while modules whose every weight is loaded afterwards are built.

    lpips builds a whole torchvision network (VGG16 with its 120M-parameter classifier) only to keep its
    `features`; random-initialising it takes seconds and is thrown away (the pattern of transformers'
    `no_init_weights`)."""
    from torch.nn import init

    names = ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "constant_", "zeros_", "ones_",
             "xavier_uniform_", "xavier_normal_", "trunc_normal_")
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)


def build_lpips(net: str = "vgg", backbone_weights: str | Path | None = None, version: str = "0.1",
                spatial: bool = False):
    """An `lpips.LPIPS` with its published linear heads and a local backbone file, frozen and in eval mode."""
    try:
        import lpips
    except ImportError as e:
        raise ImportError("LPIPS needs the lpips package: pip install lpips") from e
    path = find_backbone_weights(net, backbone_weights)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    with _skip_init():  # every weight comes from a file: the backbone below, the linear heads inside lpips
        model = lpips.LPIPS(net=net, version=version, pretrained=True, pnet_rand=True, spatial=spatial,
                            verbose=False)
    load_lpips_backbone(model, state)
    return model.eval().requires_grad_(False)


class LPIPS(nn.Module):
    """LPIPS distance between images in the zoo convention ([B, 3, H, W] in [0, 1]); differentiable in the inputs.

    Args:
        net: "vgg" (the loss most tokenizers train with), "alex" (the usual metric) or "squeeze".
        backbone_weights: torchvision backbone state dict; default: torchvision's cache file (see module doc).
        spatial: return per-pixel maps [B, 1, H, W] instead of [B].

    The network stays frozen and in eval mode whatever `.train()` says.
    """

    def __init__(self, net: str = "vgg", backbone_weights: str | Path | None = None, spatial: bool = False) -> None:
        super().__init__()
        self.net_name = net
        self.model = build_lpips(net, backbone_weights, spatial=spatial)

    def train(self, mode: bool = True) -> LPIPS:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two [B, 3, H, W] images of one shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        d = self.model(x.float(), y.float(), normalize=True)  # normalize=True: [0, 1] -> [-1, 1] inside lpips
        return d if self.model.spatial else d.flatten()
