"""TEASER (https://arxiv.org/abs/2502.10982): FLAME geometry + four continuous appearance tokens, decoded by a
token-conditioned neural renderer. See `zoo.face.teaser.model`."""

from zoo.face.teaser.edit import swap_appearance, transfer_expression
from zoo.face.teaser.model import GEOMETRY_KEYS, Teaser

__all__ = ["GEOMETRY_KEYS", "Teaser", "swap_appearance", "transfer_expression"]
