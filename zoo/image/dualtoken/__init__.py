"""DualToken (https://arxiv.org/abs/2503.14324): pixel and semantic residual vocabularies from one SigLIP backbone."""

from zoo.image.dualtoken.model import DualToken

__all__ = ["DualToken"]
