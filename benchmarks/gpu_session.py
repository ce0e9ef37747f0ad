"""One prepared GPU session for issue 20: the rows docs/performance.md still lacks, in one command that fits a
15-minute device lease.

    python benchmarks/gpu_session.py --out runs/gpu --budget-s 420
    python benchmarks/gpu_session.py --device cpu --quick --out /tmp/gpu-check    # does it run? (tiny, CPU)

Steps, most valuable first; each prints as it goes and appends JSON lines to OUT/rows.jsonl. A step (or row) that
would start after `--budget-s` seconds is skipped and listed, and a row that fails records its error and the session
goes on, so one broken model never costs the lease:

1. `fidelity`: every bundled tiny model in bf16 and fp16 against fp32 on the device (`zoo.bench.precision_fidelity`
   on the bundled samples, as `benchmarks/precision.py`): ids agreement, metric change, encode / decode speed-ups
   with fp32 and the reduced mode alternating.
2. `speed`: one release-size model per family with random weights (`RELEASE`), batch 1 and 8, in fp32, bf16 and
   fp16 (`zoo.bench.benchmark`; flow decoders 8 steps): items per second, so the reduced-precision speed-up and
   what batching pays.
3. `compile`: `torch.compile` of gigatok-ss-2d's children but its quantiser: compile seconds, speed-up over eager,
   ids equal.

OUT/gpu_session.md gets the three tables, to paste into docs/performance.md with the device line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import zoo
from zoo.bench import benchmark, decode_kwargs_for, make_input, precision_fidelity
from zoo.data import sample_path
from zoo.io import read_audio, read_image

# one release-size model per family (random weights) and its input seconds for audio
RELEASE = {
    "wavtokenizer-small-75": 3.0,
    "gigatok-ss-2d": 1.0,
    "flextok-d12-d12": 1.0,
    "tokenflow-clipb-256": 1.0,
    "dualtoken-siglip2-256": 1.0,
    "karl-small-vqgan-in100": 1.0,
    "seed-tiny": 1.0,
    "teaser-fsq-tiny": 1.0,
}
REDUCED = ("bf16", "fp16")


class Session:
    """Budget, progress and the rows file of one run."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.budget_s, self.start = out, budget_s, time.perf_counter()
        self.skipped: list[str] = []
        out.mkdir(parents=True, exist_ok=True)
        self.rows_path = out / "rows.jsonl"

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, step: str, label: str, fn) -> dict[str, Any] | None:
        """`fn()` as one row of `step`, unless the budget is spent; errors are recorded, not raised."""
        if self.elapsed() > self.budget_s:
            self.skipped.append(f"{step}: {label}")
            print(f"[{self.elapsed():6.0f} s] skip {step} {label}: budget spent", flush=True)
            return None
        t = time.perf_counter()
        try:
            row = {"step": step, "label": label, **fn()}
        except Exception as error:  # noqa: BLE001 - one failing model must not end the session
            row = {"step": step, "label": label, "error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - t, 2)
        with self.rows_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"[{self.elapsed():6.0f} s] {step} {label}: {json.dumps(row)}", flush=True)
        return row


def _sample_input(tok) -> tuple[torch.Tensor, int | None]:
    if tok.modality == "audio":
        wav, rate = read_audio(sample_path("speech.wav"))
        return wav.to(tok.device), rate
    return read_image(sample_path("photo.png"), size=tok.input_size).to(tok.device), None


def fidelity(name: str, precision: str, device: str, iters: int) -> dict[str, Any]:
    tok = zoo.load(name).to(device)
    x, rate = _sample_input(tok)
    return {"model": name, **precision_fidelity(tok, x, precision, sample_rate=rate, iters=iters)}


def speed(name: str, device: str, batches: tuple[int, ...], iters: int, seconds: float) -> dict[str, Any]:
    torch.manual_seed(0)
    tok = zoo.load(name, weights=None).to(device)
    table = {}
    for batch in batches:
        for precision in ("fp32", *REDUCED):
            r = benchmark(tok, batch_size=batch, iters=iters, warmup=1, seconds=seconds, precision=precision,
                          decode_kwargs=decode_kwargs_for(tok, 0, None, steps=8))
            table[f"b{batch}_{precision}"] = {"encode_items_per_s": round(r["encode_items_per_s"], 3),
                                              "decode_items_per_s": round(r["decode_items_per_s"], 3)}
    return {"model": name, "table": table}


def compiled(name: str, device: str, batch: int, iters: int) -> dict[str, Any]:
    torch.manual_seed(0)
    tok = zoo.load(name, weights=None).to(device)
    eager = benchmark(tok, batch_size=batch, iters=iters, warmup=1)
    x = make_input(tok, batch)
    with torch.inference_mode():
        ids_eager = tok.encode(x).ids
    t = time.perf_counter()
    for child_name, child in tok.named_children():
        if child_name != "quantizer":
            child.compile()
    with torch.inference_mode():
        ids_compiled = tok.encode(x).ids  # compiles encode's graphs
        tok.decode(tok.encode(x))  # and decode's
    compile_s = time.perf_counter() - t
    fast = benchmark(tok, batch_size=batch, iters=iters, warmup=1)
    return {"model": name, "batch": batch, "compile_s": round(compile_s, 1),
            "encode_speedup": round(eager["encode_ms_per_batch"] / fast["encode_ms_per_batch"], 3),
            "decode_speedup": round(eager["decode_ms_per_batch"] / fast["decode_ms_per_batch"], 3),
            "ids_equal_fraction": float((ids_eager == ids_compiled).float().mean())}


def markdown(rows: list[dict[str, Any]], device_line: str, skipped: list[str]) -> str:
    lines = [device_line, "",
             "| model | precision | ids equal to fp32 | metric fp32 -> reduced | encode / decode speed-up |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r["step"] != "fidelity" or "error" in r:
            continue
        p = r["precision"]
        key = "psnr" if "psnr_fp32" in r else "stoi" if "stoi_fp32" in r else "mel_distance"
        speedup = (f"{r['encode_speedup']:.2f}x / {r['decode_speedup']:.2f}x" if "encode_speedup" in r else "-")
        lines.append(f"| {r['model']} | {p} | {100 * r['ids_agreement']:.1f} % | {key} {r[f'{key}_fp32']:.3f} -> "
                     f"{r[f'{key}_{p}']:.3f} | {speedup} |")
    lines += ["", "| model (random weights) | batch | fp32 items/s (encode / decode) | bf16 speed-up | fp16 speed-up |",
              "|---|---|---|---|---|"]
    for r in rows:
        if r["step"] != "speed" or "error" in r:
            continue
        for batch in sorted({int(k.split("_")[0][1:]) for k in r["table"]}):
            base = r["table"][f"b{batch}_fp32"]
            cells = [f"{base['encode_items_per_s']:.2f} / {base['decode_items_per_s']:.2f}"]
            for p in REDUCED:
                red = r["table"][f"b{batch}_{p}"]
                cells.append(f"{red['encode_items_per_s'] / base['encode_items_per_s']:.2f}x / "
                             f"{red['decode_items_per_s'] / base['decode_items_per_s']:.2f}x")
            lines.append(f"| {r['model']} | {batch} | " + " | ".join(cells) + " |")
    for r in rows:
        if r["step"] == "compile" and "error" not in r:
            lines += ["", (f"torch.compile ({r['model']}, batch {r['batch']}): {r['compile_s']} s to compile, encode "
                           f"{r['encode_speedup']}x, decode {r['decode_speedup']}x over eager, ids equal "
                           f"{100 * r['ids_equal_fraction']:.1f} %.")]
    failed = [f"{r['step']} {r['label']}: {r['error']}" for r in rows if "error" in r]
    if failed:
        lines += ["", "Failed rows:", *[f"- {f}" for f in failed]]
    if skipped:
        lines += ["", "Skipped (budget spent):", *[f"- {s}" for s in skipped]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for rows.jsonl and gpu_session.md")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no row after this many seconds")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one tiny model per step, 1 call: a check that it runs")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu --quick to check the script")
    iters = 1 if args.quick else args.iters
    session = Session(args.out, args.budget_s)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    device_line = (f"`python benchmarks/gpu_session.py` on {device_name} ({args.device}), torch {torch.__version__}, "
                   f"{time.strftime('%Y-%m-%d')}.")
    print(device_line, flush=True)
    bundled = [n for n in zoo.list_models("*-tiny") if zoo.get_spec(n).bundled_weights is not None]
    for name in bundled[:1] if args.quick else bundled:
        for precision in REDUCED[:1] if args.quick else REDUCED:
            session.run("fidelity", f"{name} {precision}",
                        lambda n=name, p=precision: fidelity(n, p, args.device, iters))
    release = {"gigatok-tiny": 1.0} if args.quick else RELEASE
    for name, seconds in release.items():
        session.run("speed", name, lambda n=name, s=seconds: speed(n, args.device, (1,) if args.quick else (1, 8),
                                                                      iters, s))
    if not args.quick:
        session.run("compile", "gigatok-ss-2d", lambda: compiled("gigatok-ss-2d", args.device, 8, iters))
    rows = [json.loads(line) for line in session.rows_path.read_text().splitlines()]
    (args.out / "gpu_session.md").write_text(markdown(rows, device_line, session.skipped))
    print(f"wrote {session.rows_path} and {args.out / 'gpu_session.md'} in {session.elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
