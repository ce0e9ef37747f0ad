"""Initial weights of a CLIP-B TokenFlow for training: the semantic encoder from OpenAI CLIP ViT-B/16, the rest fresh.

The official model does the same in its constructor (`clip.load_clip_vision("ViT-B/16")`, `visual.*` weights,
`proj` deleted). Here the CLIP weights come from a local state-dict file with `visual.*` keys, e.g. open_clip's
`ViT-B-16` `openai` checkpoint (`open_clip_pytorch_model.bin`), read with `torch.load(weights_only=True)`; OpenAI's
TorchScript archive is not read (re-save its `state_dict()` first). Tensors are renamed with the converter's table.

    python recipes/tokenflow/init_from_clip.py --clip /ckpt/open_clip_vit_b16_openai.bin \
        --target tokenflow-clipb-256 --set image_size=224 native_image_size=null \
        "scales=[1,2,4,6,8,10,12,14]" decoder_channels=128 decoder_res_blocks=2 \
        --out runs/tokenflow-clipb/init.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", required=True, help="OpenAI CLIP ViT-B/16 state dict (visual.* keys)")
    parser.add_argument("--target", default="tokenflow-clipb-256", help="registered TokenFlow variant")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="constructor overrides (YAML values)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh tensors")
    parser.add_argument("--out", required=True, help="safetensors file to write (train with model.weights=...)")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    import zoo
    from zoo.convert.tokenflow import keymap
    from zoo.train.warm_start import parse_overrides

    try:
        overrides = parse_overrides(args.set)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    state = torch.load(args.clip, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    visual = {"encoder_vqkd." + k[len("visual."):]: v for k, v in state.items()
              if k.startswith("visual.") and k != "visual.proj"}
    if not visual:
        raise SystemExit(f"{args.clip} has no visual.* tensors; pass an OpenAI CLIP ViT-B/16 state dict")
    ours, _, unknown = keymap("clip").to_ours(visual)
    if unknown:
        raise SystemExit(f"{args.clip}: tensors that are not OpenAI CLIP ViT layout: {unknown[:8]}")
    torch.manual_seed(args.seed)
    model = zoo.load(args.target, weights=None, **overrides)
    if model.config["semantic_encoder"] != "clip":
        raise SystemExit(f"{args.target} does not use the CLIP semantic encoder")
    own = model.state_dict()
    wrong = sorted(k for k in ours if k not in own or own[k].shape != ours[k].shape)
    missing = sorted(k for k in own if k.startswith("semantic_encoder.") and k not in ours)
    if wrong or missing:
        raise SystemExit(f"the CLIP file does not fit {args.target}'s semantic encoder: wrong {wrong[:5]}, "
                         f"missing {missing[:5]}")
    own.update({k: v.to(own[k].dtype) for k, v in ours.items()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in own.items()}, args.out, metadata={"format": "pt"})
    print(f"wrote {args.out}: {len(ours)} semantic-encoder tensors from {args.clip}, {len(own) - len(ours)} fresh")


if __name__ == "__main__":
    main()
