"""Store the final (EMA) weights of a training run as a registered variant's bundled weights file.

The run's tensors must match the registered architecture (names and shapes). With `--fp16`, float tensors are
stored as float16 to halve the file (the model still runs in float32: loading upcasts them); the largest rounding
change is printed. The same tensors always give the same bytes. Prints the sha256 to put in the variant's config.

    python recipes/export_weights.py runs/flextok-long/final zoo/data/weights/flextok-tiny.safetensors \
        --model flextok-tiny --fp16
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="save_pretrained folder of the run (config.json + model.safetensors)")
    parser.add_argument("out", help="bundled weights file to write")
    parser.add_argument("--model", required=True, help="registered variant the weights are for")
    parser.add_argument("--fp16", action="store_true", help="store float tensors as float16")
    args = parser.parse_args(argv)
    from safetensors.torch import load_file, save_file

    import zoo
    from zoo.weights import sha256_file

    state = load_file(str(Path(args.run) / "model.safetensors"))
    expected = {k: tuple(v.shape) for k, v in zoo.load(args.model, weights=None).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        diff = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        raise SystemExit(
            f"{args.run} does not match the registered {args.model} architecture ({len(diff)} tensors differ by name "
            f"or shape, e.g. {diff[:5]}); export it for the variant it was trained as"
        )
    out = {k: (v.half() if args.fp16 and v.is_floating_point() else v).contiguous() for k, v in state.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors writes the metadata map in hash order, so with two keys the same tensors
    # give files (and sha256s) that differ from run to run.
    from zoo.atomic import atomic_path

    with atomic_path(args.out) as tmp:  # a temporary name renamed when complete: never a half-written bundle
        save_file(out, str(tmp), metadata={"format": "pt"})
    worst = max((state[k].float() - out[k].float()).abs().max().item() for k in state if state[k].is_floating_point())
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB, max rounding {worst:.2e})")
    print(f"sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
