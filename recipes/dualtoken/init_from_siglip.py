"""Initial weights of a DualToken for training: the backbone from a released SigLIP2, everything else fresh.

The official model does the same in its constructor (`SiglipModel.from_pretrained(pretrained_model)`: the
SigLIP2 so400m checkpoint named by the config). Here the SigLIP comes from a local HF folder (`model.safetensors`,
or its sharded index) or a weights file; its `vision_model.*` tensors are renamed with the converter's table
(the text tower is not part of the tokenizer). The same folder is the frozen teacher of the objective
(`objective.kwargs.teacher_weights`).

    python recipes/dualtoken/init_from_siglip.py --siglip /ckpt/siglip2-so400m-patch14-384 \
        --target dualtoken-siglip2-384 --out runs/dualtoken-384/init.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--siglip", required=True, help="local SigLIP folder (HF layout) or weights file")
    parser.add_argument("--target", default="dualtoken-siglip2-384", help="registered DualToken variant")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="constructor overrides (YAML values)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh tensors")
    parser.add_argument("--out", required=True, help="safetensors file to write (train with model.weights=...)")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    import zoo
    from zoo.convert.dualtoken import read_siglip_weights, siglip_to_backbone
    from zoo.train.warm_start import parse_overrides

    try:
        overrides = parse_overrides(args.set)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    backbone = siglip_to_backbone(read_siglip_weights(args.siglip))
    torch.manual_seed(args.seed)
    model = zoo.load(args.target, weights=None, **overrides)
    if model.family != "dualtoken":
        raise SystemExit(f"{args.target} is a {model.family} model, not DualToken")
    own = model.state_dict()
    wrong = sorted(k for k in backbone if k not in own or own[k].shape != backbone[k].shape)
    missing = sorted(k for k in own if k.startswith("backbone.") and k not in backbone
                     and not k.startswith("backbone.model.head."))
    if wrong or missing:
        raise SystemExit(f"the SigLIP does not fit {args.target}'s backbone: wrong {wrong[:5]}, missing {missing[:5]}")
    own.update({k: v.to(own[k].dtype) for k, v in backbone.items()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in own.items()}, args.out, metadata={"format": "pt"})
    print(f"wrote {args.out}: {len(backbone)} backbone tensors from {args.siglip}, {len(own) - len(backbone)} fresh")


if __name__ == "__main__":
    main()
