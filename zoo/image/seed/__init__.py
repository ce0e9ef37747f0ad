"""SEED-2 (https://arxiv.org/abs/2310.01218): EVA ViT + causal Q-Former -> 32 VQ tokens -> unCLIP image embedding."""

from zoo.image.seed.model import SEED

__all__ = ["SEED"]
