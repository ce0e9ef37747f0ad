"""Quantisers for discrete tokenizers: one return type (`QuantizerOutput`) and one base class (`Quantizer`).

    from zoo.quant import VectorQuantizer, FSQ, ResidualVQ, DualCodebookVQ, entropy_loss
    vq = VectorQuantizer(16384, 8, metric="cosine", rotation_trick=True)   # GigaTok / LlamaGen style
    out = vq(z)                      # z channels-last [..., 8]
    out.quantized, out.ids, out.losses["commitment"], out.stats["usage"]
    ids = vq.assign(z)               # the side-effect-free way from latents to ids (what every encode uses)

Every family builds its quantiser from this package; distances and rounding run in fp32 under autocast.
"""

from zoo.quant.base import Quantizer
from zoo.quant.distance import squared_distances
from zoo.quant.dual import DualCodebookVQ
from zoo.quant.entropy import entropy_loss
from zoo.quant.fsq import FSQ
from zoo.quant.kmeans import kmeans
from zoo.quant.output import QuantizerOutput
from zoo.quant.perturb import perturb_batch, perturb_ids
from zoo.quant.rotation import rotation_trick
from zoo.quant.rvq import ResidualVQ
from zoo.quant.stats import code_stats
from zoo.quant.vq import VectorQuantizer

__all__ = [
    "FSQ",
    "DualCodebookVQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVQ",
    "VectorQuantizer",
    "code_stats",
    "entropy_loss",
    "kmeans",
    "perturb_batch",
    "perturb_ids",
    "rotation_trick",
    "squared_distances",
]
