"""TEASER's encoders (official `src/teaser_encoder.py`): four independent MobileNetV3 feature backbones on the same
`[B, 3, 224, 224]` image in [0, 1] (no mean/std normalisation).

    pose       tf_mobilenetv3_small_minimal_100 -> pool -> Linear(6): pose_params [3] (axis-angle), cam [3] (s, tx, ty)
    shape      tf_mobilenetv3_large_minimal_100 -> pool -> Linear(n_shape)
    expression tf_mobilenetv3_large_minimal_100 -> pool -> Linear(n_exp + 5): expression, eyelids (clamped to [0, 1]),
               jaw = (relu(opening), clamp(sides, +-0.2))
    token      tf_mobilenetv3_small_minimal_100, maps f[-1..-4] pooled to 1x1, 2x2, 4x4, 8x8 -> 4 Linear -> tokens
               (token 0 the coarsest, from the 7x7 map; token 3 the finest, from the 56x56 map)

The `tf_` backbones use BatchNorm eps 1e-3 and TF "SAME" padding (dynamic, asymmetric for stride 2); "minimal" means
ReLU, 3x3 depthwise kernels, no squeeze-excite. They come from timm with `pretrained=False` (the checkpoint holds
every weight); module and key names are the official ones, so official state dicts load by prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TeaserEncoder", "create_backbone", "token_feature_dims"]

SMALL = "tf_mobilenetv3_small_minimal_100"
LARGE = "tf_mobilenetv3_large_minimal_100"
TF_BN_EPS = 1e-3  # timm's BN_EPS_TF_DEFAULT


def create_backbone(name: str, multiplier: float = 1.0) -> tuple[nn.Module, list[int]]:
    """A timm MobileNetV3 feature extractor (5 maps, strides 2..32) and its channel counts.

    Multiplier 1.0 is the registered timm model; other channel multipliers (small variants, the parity fixture)
    need timm's generator `_gen_mobilenet_v3`, called with exactly the arguments the registered `tf_` model uses.
    """
    import timm

    if multiplier == 1.0:
        model = timm.create_model(name, pretrained=False, features_only=True)
    else:
        try:
            from timm.models.mobilenetv3 import _gen_mobilenet_v3
        except ImportError as err:  # a timm without the generator function
            raise ImportError(f"MobileNetV3 with channel multiplier {multiplier} needs timm's _gen_mobilenet_v3 "
                              f"(timm 0.9 - 1.0); this timm ({timm.__version__}) lacks it: {err}") from None
        model = _gen_mobilenet_v3(name, multiplier, pretrained=False, features_only=True, bn_eps=TF_BN_EPS,
                                  pad_type="same")
    return model, list(model.feature_info.channels())


def token_feature_dims(multiplier: float = 1.0) -> list[int]:
    """Input widths of the four token Linears: `[c5, 4 c4, 16 c3, 64 c2]` of the small backbone's channels."""
    with torch.device("meta"):
        _, channels = create_backbone(SMALL, multiplier)
    return [channels[-1], 4 * channels[-2], 16 * channels[-3], 64 * channels[-4]]


def _pooled(features: torch.Tensor, size: int = 1) -> torch.Tensor:
    return F.adaptive_avg_pool2d(features, (size, size)).flatten(1)


class PoseEncoder(nn.Module):
    def __init__(self, multiplier: float) -> None:
        super().__init__()
        self.encoder, channels = create_backbone(SMALL, multiplier)
        self.pose_cam_layers = nn.Sequential(nn.Linear(channels[-1], 6))
        # official init: tiny head, camera scale starting at 7
        with torch.no_grad():
            self.pose_cam_layers[0].weight.mul_(1e-3)
            self.pose_cam_layers[0].bias.mul_(1e-3)
            self.pose_cam_layers[0].weight[3] = 0
            self.pose_cam_layers[0].bias[3] = 7

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        pose_cam = self.pose_cam_layers(_pooled(self.encoder(image)[-1]))
        return {"pose_params": pose_cam[:, :3], "cam": pose_cam[:, 3:]}


class ShapeEncoder(nn.Module):
    def __init__(self, multiplier: float, n_shape: int) -> None:
        super().__init__()
        self.encoder, channels = create_backbone(LARGE, multiplier)
        self.shape_layers = nn.Sequential(nn.Linear(channels[-1], n_shape))
        nn.init.zeros_(self.shape_layers[0].weight)  # official init: the mean shape
        nn.init.zeros_(self.shape_layers[0].bias)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"shape_params": self.shape_layers(_pooled(self.encoder(image)[-1]))}


class ExpressionEncoder(nn.Module):
    def __init__(self, multiplier: float, n_exp: int) -> None:
        super().__init__()
        self.encoder, channels = create_backbone(LARGE, multiplier)
        self.expression_layers = nn.Sequential(nn.Linear(channels[-1], n_exp + 5))
        self.n_exp = n_exp
        with torch.no_grad():
            self.expression_layers[0].weight.mul_(0.1)
            self.expression_layers[0].bias.mul_(0.1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = self.expression_layers(_pooled(self.encoder(image)[-1]))
        n = self.n_exp
        jaw = torch.cat([F.relu(raw[:, n + 2:n + 3]), torch.clamp(raw[:, n + 3:n + 5], -0.2, 0.2)], dim=1)
        return {"expression_params": raw[:, :n], "eyelid_params": torch.clamp(raw[:, n:n + 2], 0, 1),
                "jaw_params": jaw}


class TokenEncoder(nn.Module):
    """The multi-scale appearance tokenizer: four continuous `token_dim` vectors per image."""

    def __init__(self, multiplier: float, token_dim: int) -> None:
        super().__init__()
        self.encoder, channels = create_backbone(SMALL, multiplier)
        dims = [channels[-1], 4 * channels[-2], 16 * channels[-3], 64 * channels[-4]]
        self.token_layers = nn.ModuleList([nn.Sequential(nn.Linear(d, token_dim)) for d in dims])
        with torch.no_grad():  # official init (the pose head's, copied: component 3 starts at 7)
            for layer in self.token_layers:
                layer[0].weight.mul_(1e-3)
                layer[0].bias.mul_(1e-3)
                layer[0].weight[3] = 0
                layer[0].bias[3] = 7

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """`[B, 4, token_dim]`, batch-major (the official module returns `[4, B, token_dim]`)."""
        maps = self.encoder(image)
        tokens = [self.token_layers[0](_pooled(maps[-1]))]
        for i in range(1, 4):  # f[-2] -> 2x2, f[-3] -> 4x4, f[-4] -> 8x8, flattened channel-major
            tokens.append(self.token_layers[i](_pooled(maps[-1 - i], 2**i)))
        return torch.stack(tokens, dim=1)


class TeaserEncoder(nn.Module):
    """All four encoders: image -> dict of `pose_params`, `cam`, `shape_params`, `expression_params`,
    `eyelid_params`, `jaw_params` and `tokens` `[B, 4, token_dim]`."""

    def __init__(self, n_shape: int = 300, n_exp: int = 50, multiplier: float = 1.0, token_dim: int = 256) -> None:
        super().__init__()
        self.pose_encoder = PoseEncoder(multiplier)
        self.shape_encoder = ShapeEncoder(multiplier, n_shape)
        self.expression_encoder = ExpressionEncoder(multiplier, n_exp)
        self.token_encoder = TokenEncoder(multiplier, token_dim)

    def geometry(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The FLAME parameters and camera only."""
        out = self.pose_encoder(image)
        out.update(self.shape_encoder(image))
        out.update(self.expression_encoder(image))
        return out

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.geometry(image)
        out["tokens"] = self.token_encoder(image)
        return out
