"""FlexTok d12-d12 CPU speed: tokenize and detokenize (25 and 8 steps, CFG 7.5 with APG) in images/s.

Same protocol as `shared/reference/speed_baseline.md` (official code, same machine class): random weights with the
zero-initialised adaLN/read-out tensors refilled with N(0, 0.02^2), float32, eval, inference mode, 2 threads, one
configuration per process, warm-up calls, median of timed calls. Every timed call's output is compared with the
plain path (no collapsed mask/null tokens, CFG branches run separately), which is the computation the parity tests
check against the official fixture, so the speed-up comes at equal outputs. `--plain` also times that plain path
in the same process (runs interleaved), a speed-up measure that does not depend on the load of a shared machine.

    python benchmarks/flextok_speed.py --op tokenize --batch 1
    python benchmarks/flextok_speed.py --op detokenize --steps 8 --k 256
    python benchmarks/flextok_speed.py --all          # every row of the baseline table, one process each

`--official PATH` times the official code in the same process: a checkout of apple/ml-flextok
(with hydra-core and mup installed) builds the d12-d12 of the baseline's reconstructed config (section 2.3: the
parity fixture's hydra config scaled to dim 768, depth 12, head_dim 64, 256 registers, the default VAE with
scaling factor 1), its zero tensors refilled as above; `zoo.from_official` converts that model's state dict, the
ids (tokenize) or images from the same seeded noise (detokenize) of both are compared, and the two are timed
alternately.

    python benchmarks/flextok_speed.py --op tokenize --batch 2 --official ~/src/ml-flextok
    python benchmarks/flextok_speed.py --op detokenize --steps 8 --k 16 --threads 1 --official ~/src/ml-flextok
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASELINE = {  # median seconds per call of the official code (speed_baseline.md, table 0)
    ("tokenize", 1, None, None): 2.17,
    ("tokenize", 4, None, None): 9.54,
    ("detokenize", 1, 25, 256): 36.3,
    ("detokenize", 1, 25, 16): 38.8,
    ("detokenize", 1, 8, 256): 14.67,
    ("detokenize", 1, 8, 16): 14.80,
}


def build(threads: int):
    import torch

    torch.set_num_threads(threads)
    import zoo

    torch.manual_seed(0)
    tok = zoo.load("flextok-d12-d12", weights=None)
    with torch.no_grad():
        for name, param in tok.named_parameters():
            if param.dim() and not param.any():
                param.normal_(0.0, 0.02)
    return tok.eval()


def run_one(op: str, batch: int, steps: int | None, k: int | None, runs: int, threads: int, plain: bool) -> dict:
    import torch

    tok = build(threads)
    g = torch.Generator().manual_seed(0)
    x = tok.example_input(batch, g)
    with torch.inference_mode():
        tokens = tok.encode(x)
        if op == "tokenize":
            def call():
                return tok.encode(x).ids

            def reference():
                return tokens.ids
        else:
            short = tokens if k is None else tok.encode(x, num_tokens=k)
            noise = tok.initial_noise(batch, torch.Generator().manual_seed(1))
            kwargs = {"steps": steps, "guidance": 7.5, "apg": True, "noise": noise}

            def call():
                return tok.decode(short, **kwargs)

            def reference():
                return tok.decode(short, collapse=False, batch_uncond=False, **kwargs)

        call()  # warm-up
        ref = reference()
        times, plain_times, diffs = [], [], []
        for _ in range(runs):  # interleaved, so both paths see the same machine load
            start = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - start)
            diffs.append(float((out.float() - ref.float()).abs().max()))
            if op == "detokenize" and plain:
                start = time.perf_counter()
                reference()
                plain_times.append(time.perf_counter() - start)
    median = statistics.median(times)
    base = BASELINE.get((op, batch, steps, k))
    return {
        "op": op, "batch": batch, "steps": steps, "k": k, "threads": threads, "runs": runs,
        "median_s": round(median, 3), "min_s": round(min(times), 3), "max_s": round(max(times), 3),
        "images_per_s": round(batch / median, 4), "official_median_s": base,
        "speedup": round(base / median, 2) if base else None, "max_abs_diff_vs_plain_path": max(diffs),
        "plain_median_s": round(statistics.median(plain_times), 3) if plain_times else None,
        "speedup_vs_plain": round(statistics.median(plain_times) / median, 2) if plain_times else None,
    }


def official_config(fixture_config: Path) -> dict:
    """The baseline's reconstructed d12-d12 hydra config, from the parity fixture's (speed_baseline.md, 2.3)."""
    cfg = json.loads(fixture_config.read_text())
    cfg["_target_"] = "flextok.flextok_wrapper.FlexTok"
    cfg["vae"].update(hf_hub_path=None, scaling_factor=1.0)  # the default AutoencoderKL; scale does not change speed
    scale = {"dim": {32: 768, 48: 768}, "depth": {2: 12}, "head_dim": {16: 64}, "n_min": {16: 256}, "n_max": {16: 256}}
    sizes = {(4, 4): [16, 16], (16,): [256]}  # patch grid 32 / 2 and the 256 register positions

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in scale and value in scale[key]:
                    node[key] = scale[key][value]
                elif key == "max_sizes" and tuple(value) in sizes:
                    node[key] = sizes[tuple(value)]
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(cfg)
    return cfg


def run_official(op: str, batch: int, steps: int, k: int, runs: int, threads: int, checkout: Path,
                 fixture_config: Path) -> dict:
    """Time the official d12-d12 and ours (converted from its state dict) alternately on the same input: tokenize
    (ids compared) or detokenize of the first `k` tokens with `steps` Euler steps, CFG 7.5 + APG, the same seeded
    noise (images compared in [0, 1] units)."""
    import torch

    sys.path.insert(0, str(checkout))
    torch.set_num_threads(threads)
    import hydra

    import zoo

    cfg = official_config(fixture_config)
    torch.manual_seed(0)
    official = hydra.utils.instantiate(cfg).eval()
    with torch.no_grad():
        for param in official.parameters():
            if param.dim() and not param.any():
                param.normal_(0.0, 0.02)
    config = {key: value for key, value in cfg.items() if key != "_target_"}
    ours = zoo.from_official("flextok", dict(official.state_dict()), config=config).eval()
    x = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = ours.encode(x)
        if op == "tokenize":
            def run_official_op():
                return torch.cat(official.tokenize(x * 2 - 1))

            def run_ours():
                return ours.encode(x).ids
        else:
            short = tokens.ids[:, :k]
            sampler = {"guidance_scale": 7.5, "perform_norm_guidance": True}

            def run_official_op():
                images = official.detokenize([short[i:i + 1] for i in range(batch)], vae_image_sizes=32,
                                             timesteps=steps, generator=torch.Generator().manual_seed(1),
                                             verbose=False, **sampler)
                return (images + 1) / 2

            def run_ours():
                return ours.decode(zoo.Tokens(short, torch.full((batch,), k), (k,)), steps=steps, guidance=7.5,
                                   apg=True, generator=torch.Generator().manual_seed(1))
        ref = run_official_op()  # the first call also compiles the official flex attention
        mine = run_ours()
        times: dict[str, list[float]] = {"official": [], "ours": []}
        for _ in range(runs):  # alternating, so both see the same machine load
            start = time.perf_counter()
            run_official_op()
            times["official"].append(time.perf_counter() - start)
            start = time.perf_counter()
            run_ours()
            times["ours"].append(time.perf_counter() - start)
    median = {key: statistics.median(value) for key, value in times.items()}
    result = {"op": op, "batch": batch, "threads": threads, "runs": runs,
              "ours_median_s": round(median["ours"], 3), "official_median_s": round(median["official"], 3),
              "speedup_vs_official": round(median["official"] / median["ours"], 3),
              "parameters": sum(p.numel() for p in official.parameters())}
    if op == "tokenize":
        result.update(ids_equal=bool(torch.equal(ref, mine)), ids=int(mine.numel()))
    else:
        result.update(steps=steps, k=k, max_abs_diff=float((ref.float() - mine.float()).abs().max()))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--op", choices=["tokenize", "detokenize"], default="tokenize")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="also time the plain path (interleaved runs)")
    parser.add_argument("--all", action="store_true", help="run every baseline row, each in a fresh process")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    parser.add_argument("--official", type=Path, help="apple/ml-flextok checkout: time it in this process")
    parser.add_argument("--fixture-config", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "flextok" / "config.json",
                        help="the parity fixture's hydra config that --official scales up")
    args = parser.parse_args(argv)
    if args.official is not None:
        result = run_official(args.op, args.batch, args.steps, args.k, args.runs, args.threads, args.official,
                              args.fixture_config)
        print(json.dumps(result), flush=True)
        if args.out:
            with Path(args.out).open("a") as handle:
                handle.write(json.dumps(result) + "\n")
        return
    if args.all:
        for op, batch, steps, k in BASELINE:
            cmd = [sys.executable, __file__, "--op", op, "--batch", str(batch), "--runs", str(args.runs),
                   "--threads", str(args.threads)]
            if op == "detokenize":
                cmd += ["--steps", str(steps), "--k", str(k)]
            if args.out:
                cmd += ["--out", args.out]
            if args.plain:
                cmd += ["--plain"]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            subprocess.run(cmd, check=True, env=env)
        return
    steps = args.steps if args.op == "detokenize" else None
    k = args.k if args.op == "detokenize" else None
    result = run_one(args.op, args.batch, steps, k, args.runs, args.threads, args.plain)
    line = json.dumps(result)
    print(line, flush=True)
    if args.out:
        with Path(args.out).open("a") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
