"""Start a registered model of a new shape from trained weights (e.g. the 2D `gigatok-tiny` from the 1D).

`zoo.train.warm_start`: tensors matching by name and shape are copied, added transformer blocks start as identity
maps, so with only added blocks the grown model computes exactly what the source did (checked and printed here).
Tensors that exist only in the target (or changed shape) keep their fresh initialisation and are listed.

    python recipes/gigatok/warm_start.py --source runs/gigatok-cont/final --target gigatok-tiny \
        --out runs/gigatok-2d/init.safetensors
    python recipes/gigatok/warm_start.py --source runs/gigatok-cont/final --target gigatok-tiny-1d \
        --set encoder_depth=4 decoder_depth=4 --out runs/gigatok-deep/init.safetensors

Then train the target from the file (`model.weights=...`, with the same `--set` as `+model.kwargs.KEY=VALUE`).
"""

from __future__ import annotations

import argparse

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="the trained model: a save_pretrained folder (a run's final/)")
    parser.add_argument("--target", required=True, help="registered variant to build")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="constructor overrides of the target (YAML values), e.g. encoder_depth=4")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh tensors' initialisation")
    parser.add_argument("--out", required=True, help="weights file to write for the target")
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    import zoo
    from zoo.train.warm_start import parse_overrides, warm_start

    try:
        overrides = parse_overrides(args.set)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    source = zoo.load(args.source).float()
    torch.manual_seed(args.seed)  # the fresh tensors' initialisation, so that the file is reproducible
    target = zoo.load(args.target, weights=None, **overrides).float().eval()
    report = warm_start(source, target)
    print(f"copied {len(report.copied)} tensors; {len(report.fresh)} fresh, of which {len(report.zeroed)} zeroed:")
    for name in report.fresh:
        print(f"  {name} {tuple(target.state_dict()[name].shape)}")
    torch.manual_seed(0)
    probe = torch.rand(2, 3, source.image_size, source.image_size)
    with torch.inference_mode():
        source_tokens, target_tokens = source.encode(probe), target.encode(probe)
        if torch.equal(source_tokens.ids, target_tokens.ids):
            gap = (source.decode(source_tokens) - target.decode(target_tokens)).abs().max().item()
            print(f"grown model reproduces the source: ids equal, images within {gap:.1e}")
        else:
            print("the target's ids differ from the source's (a changed shape or layout): training starts from the "
                  "copied tensors, not from the source's function")
    from zoo.atomic import atomic_path

    with atomic_path(args.out) as tmp:
        save_file({k: v.contiguous() for k, v in target.state_dict().items()}, str(tmp))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
