"""Feed-forward blocks: the classic two-layer `Mlp` and the gated `GatedMlp` (SwiGLU, GEGLU)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "silu", "relu", "tanh")


class QuickGELU(nn.Module):
    """`x * sigmoid(1.702 x)`, the GELU approximation of OpenAI CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    """Activation module from its name: `gelu` (exact erf), `gelu_tanh`, `quick_gelu`, `silu`, `relu`, `tanh`."""
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def gated_hidden_dim(dim: int, mlp_ratio: float, multiple_of: int = 1) -> int:
    """Hidden width of a SwiGLU that keeps the parameter count of a `mlp_ratio` Mlp: `int(2 * int(dim * ratio) / 3)`,
    rounded up to `multiple_of` (https://arxiv.org/abs/2002.05202; the FlexTok / LLaMA convention)."""
    hidden = int(2 * int(dim * mlp_ratio) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class Mlp(nn.Module):
    """`fc2(drop(act(fc1(x))))`, then dropout.

    Args:
        in_features: input width.
        hidden_features: hidden width; defaults to `int(in_features * mlp_ratio)`.
        out_features: output width; defaults to `in_features`.
        mlp_ratio: used when `hidden_features` is None.
        act: activation name (see `make_activation`).
        bias: biases on both Linears.
        drop: dropout after the activation and after `fc2`.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        mlp_ratio: float = 4.0,
        act: str = "gelu",
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = int(in_features * mlp_ratio) if hidden_features is None else hidden_features
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.act = make_activation(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, in_features if out_features is None else out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class GatedMlp(nn.Module):
    """Gated feed-forward `fc2(act(fc1(x)) * fc3(x))` (SwiGLU with `act="silu"`, GEGLU with `"gelu"`).

    `fc1` is the gate (activated), `fc3` the up projection and `fc2` the down projection, as in FlexTok and LLaMA.

    Args:
        in_features: input width.
        hidden_features: hidden width; default `gated_hidden_dim(in_features, mlp_ratio, multiple_of)` when
            `swiglu_hidden`, else `int(in_features * mlp_ratio)`.
        out_features: output width; defaults to `in_features`.
        mlp_ratio: ratio used when `hidden_features` is None.
        swiglu_hidden: shrink the hidden width by 2/3 to keep the parameter count of an ungated Mlp.
        multiple_of: round the derived hidden width up to a multiple of this.
        act: gate activation name.
        bias: biases on the three Linears.
        drop: dropout before `fc2` and after it.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        mlp_ratio: float = 4.0,
        swiglu_hidden: bool = True,
        multiple_of: int = 1,
        act: str = "silu",
        bias: bool = False,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden_features is None:
            if swiglu_hidden:
                hidden_features = gated_hidden_dim(in_features, mlp_ratio, multiple_of)
            else:
                hidden_features = int(in_features * mlp_ratio)
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.fc3 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = make_activation(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features if out_features is None else out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)) * self.fc3(x))))


def make_mlp(
    kind: str, dim: int, mlp_ratio: float = 4.0, act: str | None = None, bias: bool = True, drop: float = 0.0
) -> nn.Module:
    """`"mlp"` -> `Mlp` (default act gelu), `"swiglu"` -> `GatedMlp` (default act silu, 2/3 hidden rule),
    `"glu"` -> `GatedMlp` without the 2/3 rule."""
    if kind == "mlp":
        return Mlp(dim, mlp_ratio=mlp_ratio, act=act or "gelu", bias=bias, drop=drop)
    if kind == "swiglu":
        return GatedMlp(dim, mlp_ratio=mlp_ratio, act=act or "silu", bias=bias, drop=drop)
    if kind == "glu":
        return GatedMlp(dim, mlp_ratio=mlp_ratio, swiglu_hidden=False, act=act or "silu", bias=bias, drop=drop)
    raise ValueError(f"unknown mlp kind {kind!r}; expected 'mlp', 'swiglu' or 'glu'")

