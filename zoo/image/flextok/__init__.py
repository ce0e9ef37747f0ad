"""FlexTok: flexible-length 1D image tokens with a rectified-flow decoder (apple/ml-flextok)."""

from zoo.image.flextok.model import FlexTok

__all__ = ["FlexTok"]
