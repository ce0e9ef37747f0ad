"""Per-item throughput at batch 1, 4 and 8 (`zoo.bench.benchmark`, random weights, 2 threads): what batching pays.

    python benchmarks/batching.py
"""
import inspect
import json

import torch

import zoo
from zoo.bench import benchmark

torch.set_num_threads(2)
for name, seconds in (("wavtokenizer-small-75", 3.0), ("gigatok-tiny", 1.0), ("flextok-tiny", 1.0), ("dualtoken-tiny", 1.0)):
    torch.manual_seed(0)
    tok = zoo.load(name, weights=None)
    dec = {"steps": 8} if "steps" in inspect.signature(tok.decode).parameters else {}
    if "generator" in inspect.signature(tok.decode).parameters:
        dec["generator"] = torch.Generator().manual_seed(0)
    base = None
    for b in (1, 4, 8):
        r = benchmark(tok, batch_size=b, iters=3, warmup=1, seconds=seconds, decode_kwargs=dec)
        if b == 1: base = r
        print(json.dumps({"model": name, "batch": b, "encode_items_per_s": round(r["encode_items_per_s"], 2),
                          "decode_items_per_s": round(r["decode_items_per_s"], 2),
                          "encode_vs_b1": round(r["encode_items_per_s"] / base["encode_items_per_s"], 2),
                          "decode_vs_b1": round(r["decode_items_per_s"] / base["decode_items_per_s"], 2)}), flush=True)
