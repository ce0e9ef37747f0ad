"""Stage 3 of the bundled `flextok-tiny`: store the final (EMA) weights of the engine run as the package's default.

Float tensors are stored as float16 to keep the file small (the model runs in float32; loading upcasts them).

    python recipes/flextok/export_tiny.py runs/flextok-tiny/final zoo/data/weights/flextok-tiny.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="save_pretrained folder of the run (config.json + model.safetensors)")
    parser.add_argument("out", help="bundled weights file to write")
    args = parser.parse_args(argv)
    from safetensors.torch import load_file, save_file

    import zoo
    from zoo.weights import sha256_file

    state = load_file(str(Path(args.run) / "model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    model = zoo.load("flextok-tiny", weights=None)
    missing = sorted(set(model.state_dict()) ^ set(half))
    if missing:
        raise ValueError(f"{args.run} does not match the registered flextok-tiny architecture: {missing[:10]}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(half, args.out, metadata={"format": "pt", "model": "flextok-tiny"})
    worst = max((state[k].float() - half[k].float()).abs().max().item() for k in state if state[k].is_floating_point())
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB, max fp16 rounding {worst:.2e})")
    print(f"sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
