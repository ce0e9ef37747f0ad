"""Per-item throughput at batch 1, 4 and 8, one model of every family (`zoo.bench.benchmark`, random weights): what
batching pays.

    python benchmarks/batching.py                        # every family, 2 threads
    python benchmarks/batching.py --models karl-tiny --threads 1 --out runs/batching.jsonl
"""
import argparse
import json
import sys

import torch

import zoo
from zoo.bench import benchmark, decode_kwargs_for

# one model per family (the release size where a CPU call stays short, else the tiny one), and audio clip seconds
MODELS = {
    "wavtokenizer-small-75": 3.0,  # the release size
    "gigatok-tiny": 1.0,
    "flextok-tiny": 1.0,
    "dualtoken-tiny": 1.0,
    "tokenflow-tiny": 1.0,
    "karl-tiny": 1.0,
    "seed-tiny": 1.0,
    "teaser-fsq-tiny": 1.0,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registered names (default: one per family)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.models:
        torch.manual_seed(0)
        tok = zoo.load(name, weights=None)
        base = None
        for b in (1, 4, 8):
            r = benchmark(tok, batch_size=b, iters=args.iters, warmup=1, seconds=MODELS.get(name, 1.0),
                          decode_kwargs=decode_kwargs_for(tok, 0, None, steps=8))
            base = base or r
            row = {"model": name, "threads": args.threads, "batch": b,
                   "encode_items_per_s": round(r["encode_items_per_s"], 2),
                   "decode_items_per_s": round(r["decode_items_per_s"], 2),
                   "encode_vs_b1": round(r["encode_items_per_s"] / base["encode_items_per_s"], 2),
                   "decode_vs_b1": round(r["decode_items_per_s"] / base["decode_items_per_s"], 2)}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
