"""KARL (https://arxiv.org/abs/2507.07995): adaptive-length 1D tokens with halting on a MAGE VQGAN base."""

from zoo.image.karl.binning import ERROR_BINS, error_bin
from zoo.image.karl.model import KARL
from zoo.image.karl.vqgan import VQGAN
from zoo.image.karl.vqgan_tokenizer import KARLVQGAN

__all__ = ["ERROR_BINS", "KARL", "KARLVQGAN", "VQGAN", "error_bin"]
