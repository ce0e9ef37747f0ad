"""TokenFlow's larger semantic encoders, built through timm (`pretrained=False`; weights come from the converted
official checkpoint, whose `encoder_vqkd.*` tensors are these networks after training).

* `siglip_so400m`: `google/siglip-so400m-patch14-384` as timm's `vit_so400m_patch14_siglip_384` with the tanh GELU of
  the HF model (TokenFlow-XL). TokenFlow reads `hidden_states[-2]`: the tokens after all blocks but the last, before
  the final norm; the last block, the final norm and the attention-pooling head are carried (the official loader is
  strict) but not run.
* `vitamin_xlarge`: timm's `vitamin_xlarge_256` without its classifier and `fc_norm` (deleted by the official code);
  TokenFlow reads `forward_features`.

Inputs are the tokenizer's [-1, 1] images; each encoder applies its teacher's normalisation (the official
`ScalingLayerForSigLip` / `ScalingLayerForClip`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["TIMM_ENCODERS", "TimmSemanticEncoder"]

# kind -> timm architecture, constructor kwargs, feature read-out, input normalisation (mean, std)
TIMM_ENCODERS: dict[str, dict[str, Any]] = {
    "siglip_so400m": {
        "arch": "vit_so400m_patch14_siglip_384", "kwargs": {"act_layer": "gelu_tanh"}, "features": "penultimate",
        "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "patch_size": 14,
    },
    "vitamin_xlarge": {
        "arch": "vitamin_xlarge_256", "kwargs": {"num_classes": 0}, "features": "final",
        "mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711), "patch_size": 16,
    },
}


class TimmSemanticEncoder(nn.Module):
    """A timm vision transformer read out as TokenFlow does: `[B, 3, H, W]` in [-1, 1] -> `[B, g*g, width]`.

    Args:
        kind: a key of `TIMM_ENCODERS`.
        image_size: input size (the architecture's own: 384 SigLIP, 256 ViTamin).
        width, layers, heads: optional reductions of the architecture (`embed_dim`, `depth`, `num_heads`), for
            small stand-ins in tests; None keeps the released size.
    """

    def __init__(self, kind: str, image_size: int, width: int | None = None, layers: int | None = None,
                 heads: int | None = None) -> None:
        super().__init__()
        if kind not in TIMM_ENCODERS:
            raise ValueError(f"unknown timm semantic encoder {kind!r}; expected one of {sorted(TIMM_ENCODERS)}")
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"the {kind} semantic encoder is built with timm: pip install timm") from err
        spec = TIMM_ENCODERS[kind]
        kwargs = dict(spec["kwargs"], img_size=image_size)
        for name, value in (("embed_dim", width), ("depth", layers), ("num_heads", heads)):
            if value is not None:
                kwargs[name] = int(value)
        self.kind = kind
        self.features = spec["features"]
        self.patch_size = int(spec["patch_size"])
        self.model = timm.create_model(spec["arch"], pretrained=False, **kwargs)
        if self.features == "final" and hasattr(self.model, "fc_norm"):
            self.model.fc_norm = nn.Identity()  # deleted by the official code
        self.width = int(self.model.embed_dim)
        # plain constants, not buffers: a model without non-persistent buffers loads its weights on the meta device
        self.mean, self.std = tuple(spec["mean"]), tuple(spec["std"])

    @property
    def unused_parameters(self) -> tuple[str, ...]:
        """fnmatch patterns (relative to this module) of parameters the read-out never runs."""
        if self.features == "penultimate":
            last = len(self.model.blocks) - 1
            return (f"model.blocks.{last}.*", "model.norm.*", "model.attn_pool.*")
        return ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # official scaling layers: ((x + 1) * 127.5).clamp(0, 255) / 255, then (. - mean) / std
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (((x + 1.0) * 127.5).clamp(0.0, 255.0) / 255.0 - mean) / std
        if self.features == "final":
            return self.model.forward_features(x)
        m = self.model
        h = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        for block in m.blocks[:-1]:
            h = block(h)
        return h
