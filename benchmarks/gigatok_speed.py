"""GigaTok S-S (1D) CPU speed: encode (images -> ids) and decode (ids -> images), images per second.

Protocol of `shared/reference/speed_baseline.md`: the S-S architecture at 256 px with its constructor's random
weights, float32, eval, `torch.inference_mode()`, 2 threads, warm-up calls, then the median of timed calls.
Every timed call also records the share of the machine's cores that *other* processes used meanwhile
(/proc/stat), since a shared machine makes absolute numbers drift.

For a speed-up that does not depend on the machine's load, `--official PATH` builds the official `VQVitModelPlus`
(a checkout of SilentView/GigaTok) from `configs/vq/VQ_SS256.yaml`, converts its weights with
`zoo.from_official`, checks that both give the same ids and images, and times the two alternately in the same
process. `--plain` times our model with autograd mode on (no graph is built: the weights are frozen), which turns
off the inference path (in-place activations and residual adds in the CNNs).

    python benchmarks/gigatok_speed.py --op decode --batch 1 --official ~/src/GigaTok
    python benchmarks/gigatok_speed.py --op encode --batch 8 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# official code on an idle 2-vCPU Zen 4 VM: median seconds per call (speed_baseline.md, table 0)
BASELINE = {("encode", 1): 1.137, ("encode", 8): 9.58, ("decode", 1): 1.723, ("decode", 8): 15.79}


def _jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(fields) - fields[3] - fields[4], int(own[11]) + int(own[12])


def timed(fn) -> tuple[float, float]:
    """Seconds of one call of `fn` and the share of all cores that other processes used meanwhile."""
    busy0, own0 = _jiffies()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    busy1, own1 = _jiffies()
    ticks = seconds * os.sysconf("SC_CLK_TCK") * os.cpu_count()
    return seconds, max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(ticks, 1e-9))


def build_ours():
    import zoo

    torch.manual_seed(0)
    return zoo.load("gigatok-ss-1d", weights=None).eval().requires_grad_(False)


def build_official(checkout: Path):
    """The official S-S model (random init) and ours with its converted weights."""
    import yaml

    import zoo

    sys.path.insert(0, str(checkout))
    from tokenizer.tokenizer_image.vq.vq_vit_model import VQVitModelPlus, VQVitModelPlusArgs

    config = yaml.safe_load((checkout / "configs/vq/VQ_SS256.yaml").read_text())
    args = dict(config["model"]["init_args"], out_inner_dim=768)  # what load_model_from_config fills in
    torch.manual_seed(0)
    official = VQVitModelPlus(VQVitModelPlusArgs(**args)).eval().requires_grad_(False)
    ours = zoo.from_official("gigatok", dict(official.state_dict()), config=config).requires_grad_(False)
    return official, ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("encode", "decode"), required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per implementation")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--official", type=Path, default=None, help="checkout of SilentView/GigaTok to compare with")
    parser.add_argument("--plain", action="store_true", help="also time our model without its inference path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    official = None
    if args.official is not None:
        official, ours = build_official(args.official.expanduser())
    else:
        ours = build_ours()
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(args.batch, 3, 32, 32, generator=gen), size=256, mode="bicubic")
    x = x.clamp(0, 1)
    with torch.inference_mode():
        tokens = ours.encode(x)
    shape = [args.batch, 8, 1, tokens.ids.shape[1]]

    calls = {}
    if args.op == "encode":
        calls["ours"] = (lambda: ours.encode(x), torch.inference_mode)
        if args.plain:
            calls["ours_plain"] = (lambda: ours.encode(x), torch.enable_grad)
        if official is not None:
            calls["official"] = (lambda: official.encode(x * 2 - 1), torch.inference_mode)
    else:
        calls["ours"] = (lambda: ours.decode(tokens), torch.inference_mode)
        if args.plain:
            calls["ours_plain"] = (lambda: ours.decode(tokens), torch.enable_grad)
        if official is not None:
            calls["official"] = (lambda: official.decode_code(tokens.ids.reshape(-1), shape), torch.inference_mode)

    check = {}
    if official is not None:
        with torch.inference_mode():
            if args.op == "encode":
                ids = official.encode(x * 2 - 1)[2][2].reshape(args.batch, -1)
                check["ids_equal"] = bool(torch.equal(ids, tokens.ids))
            else:
                ref = official.decode_code(tokens.ids.reshape(-1), shape)
                check["max_abs_diff_[-1,1]"] = float((ours.decode(tokens) * 2 - 1 - ref).abs().max())

    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for name, (fn, mode) in calls.items():
        with mode():
            for _ in range(args.warmup):
                fn()
    for _ in range(args.runs):  # interleaved, so load changes hit every implementation alike
        for name, (fn, mode) in calls.items():
            with mode():
                times[name].append(timed(fn))

    baseline = BASELINE.get((args.op, args.batch))
    rows = {}
    for name, values in times.items():
        seconds = statistics.median(v[0] for v in values)
        rows[name] = {
            "median_s": round(seconds, 4),
            "min_s": round(min(v[0] for v in values), 4),
            "images_per_s": round(args.batch / seconds, 3),
            "others_cpu_share": round(statistics.median(v[1] for v in values), 3),
        }
        if baseline is not None:
            rows[name]["speedup_vs_baseline_table"] = round(baseline / seconds, 3)
    if "official" in rows:
        for name in rows:
            rows[name]["speedup_vs_official_same_run"] = round(rows["official"]["median_s"] / rows[name]["median_s"], 3)
    print(json.dumps({"op": args.op, "batch": args.batch, "threads": args.threads, "runs": args.runs,
                      "baseline_s": baseline, **check, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
