"""TokenFlow (https://arxiv.org/abs/2412.03069): shared-index dual codebook over multi-scale residual tokens."""

from zoo.image.tokenflow.model import TokenFlow

__all__ = ["TokenFlow"]
