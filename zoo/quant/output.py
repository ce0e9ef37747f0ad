"""`QuantizerOutput`: the one return type of every quantiser in `zoo.quant`."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["QuantizerOutput"]


@dataclass
class QuantizerOutput:
    """What `forward(z)` of every `zoo.quant` quantiser returns.

    Attributes:
        quantized: the code vectors, same shape as `z` (channels-last) and cast back to `z.dtype`. The forward value
            is exactly the code (for l2-normalised quantisers: the unit-norm code); the gradient w.r.t. `z` is the
            straight-through or rotation-trick estimate.
        ids: LongTensor of code ids, `z.shape[:-1]` (`[..., K]` for residual quantisers with depth K).
        losses: unweighted scalar losses by name, fp32: `commitment` (pulls z to the codes), `codebook` (pulls
            learnable codes to z), `entropy` (when enabled). Families apply their own weights (e.g. beta=0.25).
        stats: scalar diagnostics without gradient, fp32: `usage` (fraction of the codebook hit in this batch) and
            `perplexity` (exp of the entropy of the batch code histogram), plus quantiser-specific extras.
    """

    quantized: Tensor
    ids: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)
