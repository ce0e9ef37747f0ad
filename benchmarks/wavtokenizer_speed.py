"""WavTokenizer CPU speed: encode and decode real-time factor (seconds of 24 kHz audio per wall-clock second).

Protocol of `shared/reference/speed_baseline.md`: random weights with the codebook drawn from N(0, 0.5^2) and
`inited` = 1, float32, eval, `torch.inference_mode()`, 2 threads, warm-up calls, median of timed calls; encode =
wav -> ids, decode = ids -> wav. Each timed run records how much CPU other processes used meanwhile
(/proc/stat minus this process), and runs where they took >= 5% of the cores are marked contaminated.

Two in-process comparisons make the speed-up independent of the load of a shared machine (runs interleaved):
`--official PATH` times the official code (a checkout of jishengpeng/WavTokenizer) on the same weights, converted
with `zoo.from_official`, and checks equal outputs (ids identical, audio max |diff|); `--plain` times our model on
its plain path (the training-time code: batched encoder, separate 1x1 convs, weight norm recomputed), which is
what the parity tests compare with the official fixture.

    python benchmarks/wavtokenizer_speed.py --op encode --batch 1 --seconds 10 --official ~/src/WavTokenizer
    python benchmarks/wavtokenizer_speed.py --all --plain     # every row of the baseline table, one process each
    python benchmarks/wavtokenizer_speed.py --gemm-floor --batch 1 --seconds 10   # decode's fp32 GEMM lower bound
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = {  # official code, median seconds per call (speed_baseline.md, table 0)
    ("wavtokenizer-small-75", "encode", 1, 10): 0.411,
    ("wavtokenizer-small-75", "encode", 8, 3): 1.768,
    ("wavtokenizer-small-75", "decode", 1, 10): 0.562,
    ("wavtokenizer-small-75", "decode", 8, 3): 1.300,
    ("wavtokenizer-small-40", "encode", 1, 10): 0.289,
    ("wavtokenizer-small-40", "encode", 8, 3): 0.960,
    ("wavtokenizer-small-40", "decode", 1, 10): 0.325,
    ("wavtokenizer-small-40", "decode", 8, 3): 0.721,
}
OFFICIAL_YAML = {
    "wavtokenizer-small-75": "configs/wavtokenizer_smalldata_frame75_3s_nq1_code4096_dim512_kmeans200_attn.yaml",
    "wavtokenizer-small-40": "configs/wavtokenizer_smalldata_frame40_3s_nq1_code4096_dim512_kmeans200_attn.yaml",
}


def _cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime + stime


def timed(fn, cores: int) -> tuple[float, float]:
    """Run `fn` once: (seconds, share of the machine's cores other processes used meanwhile)."""
    busy0, own0 = _cpu_jiffies()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    busy1, own1 = _cpu_jiffies()
    hz = os.sysconf("SC_CLK_TCK")
    others = max(0, (busy1 - busy0) - (own1 - own0)) / hz
    return seconds, others / (seconds * cores)


def build(name: str, official: Path | None):
    """Our model with baseline-style random weights, and the official model on the same weights (or None)."""
    import torch

    import zoo

    torch.manual_seed(0)
    if official is None:
        model = zoo.load(name, weights=None)
        with torch.no_grad():
            model.quantizer.embed.normal_(0.0, 0.5)
            model.quantizer.embed_avg.copy_(model.quantizer.embed)
            model.quantizer.inited.fill_(1.0)
        return model.eval(), None
    sys.path.insert(0, str(official))
    from decoder.pretrained import WavTokenizer as Official

    ref = Official.from_hparams0802(str(official / OFFICIAL_YAML[name]))
    book = ref.feature_extractor.encodec.quantizer.vq.layers[0]._codebook
    with torch.no_grad():
        book.embed.normal_(0.0, 0.5)
        book.embed_avg.copy_(book.embed)
        book.inited.fill_(1.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.ckpt"
        torch.save({"state_dict": ref.state_dict()}, path)
        model = zoo.from_official("wavtokenizer", path)
    return model.eval(), ref.eval()


def run_one(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    model, ref = build(args.model, Path(args.official).expanduser() if args.official else None)
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(args.batch, int(args.seconds * model.sample_rate), generator=g)
    with torch.inference_mode():
        tokens = model.encode(x)
    calls = {}
    if args.op == "encode":
        calls["zoo"] = lambda: model.encode(x)
    else:
        calls["zoo"] = lambda: model.decode(tokens)
    if args.plain:
        model_params = list(model.parameters())

        def plain():  # the training-time code path, without building a graph
            for p in model_params:
                p.requires_grad_(False)
            with torch.enable_grad():
                return calls["zoo"]()

        calls["plain"] = plain
    check = {}
    if ref is not None:
        bandwidth = torch.tensor([0])
        codes = tokens.ids[None]
        if args.op == "encode":
            calls["official"] = lambda: ref.encode_infer(x, bandwidth_id=bandwidth)
        else:
            calls["official"] = lambda: ref.decode(ref.codes_to_features(codes), bandwidth_id=bandwidth)
        with torch.inference_mode():
            _, official_codes = ref.encode_infer(x, bandwidth_id=bandwidth)
            official_audio = ref.decode(ref.codes_to_features(official_codes), bandwidth_id=bandwidth)
            check["ids_equal"] = bool(torch.equal(official_codes[0], tokens.ids))
            audio = model.decode(tokens)
            check["audio_max_abs_diff"] = float((audio - official_audio[:, : x.shape[-1]]).abs().max())
    if args.plain:
        with torch.inference_mode():
            fast = model.decode(tokens) if args.op == "decode" else model.encode(x).ids
        slow = calls["plain"]()
        slow = slow if args.op == "decode" else slow.ids
        check["plain_max_abs_diff"] = float((fast.float() - slow.float()).abs().max())
    cores = os.cpu_count() or 1
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in calls}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for fn in calls.values():
                fn()
    for _ in range(args.runs):
        for name, fn in calls.items():
            if name == "plain":
                times[name].append(timed(fn, cores))
            else:
                with torch.inference_mode():
                    times[name].append(timed(fn, cores))
    audio_seconds = args.batch * args.seconds
    result = {"model": args.model, "op": args.op, "batch": args.batch, "seconds": args.seconds,
              "threads": args.threads, "runs": args.runs, **check}
    for name, rows in times.items():
        clean = [s for s, load in rows if load < 0.05]
        pool = clean or [s for s, _ in rows]
        median = statistics.median(pool)
        result[name] = {"median_s": round(median, 4), "min_s": round(min(pool), 4), "max_s": round(max(pool), 4),
                        "rtf": round(audio_seconds / median, 2), "clean_runs": len(clean),
                        "others_load_median": round(statistics.median(load for _, load in rows), 3)}
    base = BASELINE.get((args.model, args.op, args.batch, int(args.seconds)))
    if base is not None:
        result["baseline_s"] = base
        result["speedup_vs_baseline_table"] = round(base / result["zoo"]["median_s"], 2)
    for other in ("official", "plain"):
        if other in result:
            result[f"speedup_vs_{other}_same_process"] = round(result[other]["median_s"] / result["zoo"]["median_s"], 2)
    return result


def gemm_floor(args: argparse.Namespace) -> dict:
    """Lower bound of the decode time in fp32: every Linear/Conv1d the decoder runs, timed alone as one GEMM of the
    same shape (a k-tap convolution as `[frames, k * C_in] x [k * C_in, C_out]`); attention products, norms,
    activations, depthwise convolutions and the iSTFT are left out, so the real floor is higher still."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(args.threads)
    model, _ = build(args.model, None)
    x = 0.1 * torch.randn(args.batch, int(args.seconds * model.sample_rate), generator=torch.Generator().manual_seed(0))
    shapes: list[tuple[int, int, int]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        inp = inputs[0]
        if isinstance(module, nn.Linear):
            shapes.append((inp.numel() // inp.shape[-1], module.in_features, module.out_features))
        elif module.groups == 1:  # Conv1d; depthwise ones are memory-bound, not GEMMs
            shapes.append((output.shape[0] * output.shape[-1], module.in_channels * module.kernel_size[0],
                           module.out_channels))

    with torch.inference_mode():
        tokens = model.encode(x)
        hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d))]
        shapes.clear()
        model.decode(tokens)
        for hook in hooks:
            hook.remove()
        decode_calls = [timed(lambda: model.decode(tokens), 1)[0] for _ in range(args.runs)]
        gemm = 0.0
        flops = 0
        for rows, inner, out in shapes:
            a, w = torch.randn(rows, inner), torch.randn(out, inner)
            F.linear(a, w)
            gemm += statistics.median(timed(lambda: F.linear(a, w), 1)[0] for _ in range(args.runs))
            flops += 2 * rows * inner * out
    decode = statistics.median(decode_calls)
    return {"model": args.model, "op": "decode_gemm_floor", "batch": args.batch, "seconds": args.seconds,
            "threads": args.threads, "gemms": len(shapes), "gflop": round(flops / 1e9, 1),
            "gemm_s": round(gemm, 4), "decode_s": round(decode, 4), "gemm_share": round(gemm / decode, 3),
            "gemm_gflops": round(flops / gemm / 1e9, 1), "max_speedup_at_fp32": round(decode / gemm, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wavtokenizer-small-75", choices=sorted({k[0] for k in BASELINE}))
    parser.add_argument("--op", default="encode", choices=["encode", "decode"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--official", default=None, help="path to an official WavTokenizer checkout (A/B + parity)")
    parser.add_argument("--plain", action="store_true", help="also time our plain (training-time) code path")
    parser.add_argument("--all", action="store_true", help="every baseline row of --model, one process each")
    parser.add_argument("--json", default=None, help="append result rows to this JSON-lines file")
    parser.add_argument("--gemm-floor", action="store_true",
                        help="time the decoder's GEMMs alone: the fp32 lower bound of decode (no official code)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.all:
        rows = [k for k in BASELINE if k[0] == args.model]
        for _, op, batch, seconds in rows:
            cmd = [sys.executable, __file__, "--model", args.model, "--op", op, "--batch", str(batch),
                   "--seconds", str(seconds), "--threads", str(args.threads), "--runs", str(args.runs),
                   "--warmup", str(args.warmup)]
            cmd += (["--official", args.official] if args.official else []) + (["--plain"] if args.plain else [])
            cmd += ["--json", args.json] if args.json else []
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        return 0
    sys.path.insert(0, str(REPO))
    result = gemm_floor(args) if args.gemm_floor else run_one(args)
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
