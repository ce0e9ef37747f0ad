"""GigaTok (https://arxiv.org/abs/2504.08736): CNN + ViT VQ tokenizer with semantic regularisation."""

from zoo.image.gigatok.model import GigaTok

__all__ = ["GigaTok"]
