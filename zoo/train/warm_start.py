"""Start a model of a new shape from a trained one of the same family (e.g. a deeper transformer).

Every tensor whose name and shape match is copied. Residual blocks the source lacks start as identity maps: the
output projections of their attention and MLP branches are zero (as in ReZero, https://arxiv.org/abs/2003.04887),
so a model that only gained blocks computes exactly what the source did and training continues from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["WarmStart", "parse_overrides", "warm_start"]

# Output projections of a pre-norm residual block (`zoo.nn.Block`, `zoo.nn.CrossAttentionBlock`).
_RESIDUAL_OUTPUTS = re.compile(r"\.blocks\.\d+\.(attn\.proj|cross_attn\.proj|mlp\.fc2)\.(weight|bias)$")


@dataclass
class WarmStart:
    """What `warm_start` did: tensors copied, tensors left fresh, and which of those were zeroed."""

    copied: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    zeroed: list[str] = field(default_factory=list)


@torch.no_grad()
def warm_start(source: nn.Module, target: nn.Module) -> WarmStart:
    """Copy `source`'s tensors into `target` where name and shape match; zero the residual output projections of
    blocks that exist only in `target`. Returns the lists of names (fresh ones keep their initialisation)."""
    src = source.state_dict()
    report = WarmStart()
    for name, tensor in target.state_dict().items():
        if name in src and src[name].shape == tensor.shape:
            tensor.copy_(src[name])
            report.copied.append(name)
            continue
        report.fresh.append(name)
        if name not in src and _RESIDUAL_OUTPUTS.search(name):
            tensor.zero_()
            report.zeroed.append(name)
    if not report.copied:
        raise ValueError(
            f"no tensor of the source {type(source).__name__} matches the target {type(target).__name__} by name "
            "and shape; warm_start is for two shapes of the same family"
        )
    return report


def parse_overrides(items: list[str]) -> dict:
    """`["key=value", ...]` (a script's `--set` of constructor overrides) -> `{key: value}`, values read as YAML."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides
