"""Ours against the official code, every family that has an official-code benchmark, in one command.

Each row runs the family's own benchmark script in a fresh process with `--official` (random weights of the
release's architecture, converted with `zoo.from_official`, both implementations timed alternately in that one
process, outputs compared), and this script gathers the rows into one table: family, op, input, threads, both
medians, the ratio (official seconds / ours) and the fidelity check (ids equal, largest output difference).

    python benchmarks/official.py --wavtokenizer ~/src/WavTokenizer --gigatok ~/src/GigaTok \\
        --flextok ~/src/ml-flextok --out runs/official.jsonl --write-docs docs/performance.md

A family whose checkout is not given is skipped (said so). `--write-docs` replaces the table between the
`<!-- official-speed:begin -->` and `<!-- official-speed:end -->` markers of the page. `--quick` runs one short row
per family (a check that the comparisons work, not numbers to publish).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- official-speed:begin -->", "<!-- official-speed:end -->"

# (family, script, arguments, input label, threads); FlexTok runs on one thread: the official compiled flex attention
# crashes with two on an AVX2 CPU (docs/performance.md)
ROWS = [
    ("WavTokenizer small-75", "wavtokenizer_speed.py", ["--op", "encode", "--batch", "1", "--seconds", "10"], "1 x 10 s", 2),
    ("WavTokenizer small-75", "wavtokenizer_speed.py", ["--op", "encode", "--batch", "8", "--seconds", "3"], "8 x 3 s", 2),
    ("WavTokenizer small-75", "wavtokenizer_speed.py", ["--op", "decode", "--batch", "1", "--seconds", "10"], "1 x 10 s", 2),
    ("WavTokenizer small-75", "wavtokenizer_speed.py", ["--op", "decode", "--batch", "8", "--seconds", "3"], "8 x 3 s", 2),
    ("GigaTok S-S", "gigatok_speed.py", ["--op", "encode", "--batch", "1"], "1 x 256 px", 2),
    ("GigaTok S-S", "gigatok_speed.py", ["--op", "encode", "--batch", "8"], "8 x 256 px", 2),
    ("GigaTok S-S", "gigatok_speed.py", ["--op", "decode", "--batch", "1"], "1 x 256 px", 2),
    ("GigaTok S-S", "gigatok_speed.py", ["--op", "decode", "--batch", "8"], "8 x 256 px", 2),
    ("FlexTok d12-d12", "flextok_speed.py", ["--op", "tokenize", "--batch", "1"], "1 x 256 px", 1),
    ("FlexTok d12-d12", "flextok_speed.py", ["--op", "detokenize", "--steps", "8", "--k", "16"],
     "1 image, k=16, 8 steps", 1),
    ("FlexTok d12-d12", "flextok_speed.py", ["--op", "detokenize", "--steps", "8", "--k", "256"],
     "1 image, k=256, 8 steps", 1),
]
QUICK = {  # one short row per family: the same code paths in a few seconds
    "wavtokenizer_speed.py": ["--op", "decode", "--batch", "1", "--seconds", "1"],
    "gigatok_speed.py": ["--op", "decode", "--batch", "1"],
    "flextok_speed.py": ["--op", "detokenize", "--steps", "1", "--k", "16"],
}
CHECKOUT = {"wavtokenizer_speed.py": "wavtokenizer", "gigatok_speed.py": "gigatok", "flextok_speed.py": "flextok"}


def _json_from(stdout: str) -> dict:
    """The result object a benchmark script printed (one line, or indented): the last top-level JSON object."""
    decoder = json.JSONDecoder()
    found = None
    for start, char in enumerate(stdout):
        if char == "{" and (start == 0 or stdout[start - 1] == "\n"):
            try:
                found, _ = decoder.raw_decode(stdout[start:])
            except json.JSONDecodeError:
                continue
    if found is None:
        raise ValueError(f"no JSON result in the benchmark's output:\n{stdout[-2000:]}")
    return found


def normalise(script: str, result: dict) -> dict:
    """One schema for the three scripts: ours_s, official_s, fidelity (text)."""
    if script == "wavtokenizer_speed.py":
        ours, official = result["zoo"]["median_s"], result["official"]["median_s"]
        fidelity = (f"ids equal: {result['ids_equal']}; audio max abs diff {result['audio_max_abs_diff']:.1e}")
    elif script == "gigatok_speed.py":
        ours, official = result["results"]["ours"]["median_s"], result["results"]["official"]["median_s"]
        fidelity = (f"ids equal: {result['ids_equal']}" if "ids_equal" in result
                    else f"image max abs diff {result['max_abs_diff_[-1,1]']:.1e} (in [-1, 1])")
    else:
        ours, official = result["ours_median_s"], result["official_median_s"]
        fidelity = (f"ids equal: {result['ids_equal']}" if "ids_equal" in result
                    else f"image max abs diff {result['max_abs_diff']:.1e} (in [0, 1])")
    return {"ours_s": ours, "official_s": official, "speedup": official / ours, "fidelity": fidelity}


def run_row(script: str, args: list[str], threads: int, checkout: Path, runs: int) -> dict:
    cmd = [sys.executable, str(HERE / script), *args, "--threads", str(threads), "--runs", str(runs),
           "--official", str(checkout)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return _json_from(done.stdout)


def table(rows: list[dict]) -> str:
    lines = ["| family | op | input | threads | ours (s) | official (s) | speed-up | outputs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['op']} | {r['input']} | {r['threads']} | {r['ours_s']:.3f} | "
                     f"{r['official_s']:.3f} | **{r['speedup']:.2f}x** | {r['fidelity']} |")
    return "\n".join(lines)


def write_docs(page: Path, rows: list[dict], header: str) -> None:
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{page} has no {BEGIN} ... {END} markers to put the table between; add them where the "
                         "table belongs")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{BEGIN}\n{header}\n\n{table(rows)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("wavtokenizer", "gigatok", "flextok"):
        parser.add_argument(f"--{name}", type=Path, default=None, help=f"official {name} checkout")
    parser.add_argument("--runs", type=int, default=5, help="timed calls of each implementation per row")
    parser.add_argument("--quick", action="store_true", help="one short row per family (does it work?)")
    parser.add_argument("--threads", type=int, default=None,
                        help="run every row on this many threads instead of the table's (e.g. 1 on a machine that "
                             "has a training job on the other core)")
    parser.add_argument("--out", type=Path, default=None, help="append every row as a JSON line here")
    parser.add_argument("--write-docs", type=Path, default=None, help="put the table into this page's markers")
    parser.add_argument("--from", dest="saved", type=Path, default=None,
                        help="print (and --write-docs) the rows of a JSON-lines file that --out wrote, running nothing")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.saved is not None:
        rows = []
        for line in args.saved.read_text().splitlines():
            row = json.loads(line)
            script = next(s for f, s, *_ in ROWS if f == row["family"])
            rows.append({**row, **normalise(script, row["raw"])})
        print(table(rows))
        if args.write_docs is not None:
            write_docs(args.write_docs, rows, _header(args.runs, args.threads))
        return 0
    checkouts = {script: getattr(args, key) for script, key in CHECKOUT.items()}
    missing = sorted({CHECKOUT[s] for s, path in checkouts.items() if path is None})
    if len(missing) == len(CHECKOUT):
        parser.error("give at least one official checkout: --wavtokenizer, --gigatok or --flextok")
    for name in missing:
        print(f"skipping {name}: no --{name} checkout given", file=sys.stderr)
    plan = ROWS
    if args.quick:
        plan = [(f, s, QUICK[s], "quick", t) for f, s, _, _, t in {r[1]: r for r in ROWS}.values()]
    rows = []
    for i, (family, script, row_args, label, threads) in enumerate(plan, 1):
        if checkouts[script] is None:
            continue
        threads = args.threads or threads
        start = time.perf_counter()
        print(f"[{i}/{len(plan)}] {family} {' '.join(row_args)} ...", file=sys.stderr, flush=True)
        result = run_row(script, row_args, threads, checkouts[script].expanduser(), 1 if args.quick else args.runs)
        op = row_args[row_args.index("--op") + 1]
        row = {"family": family, "op": op, "input": label, "threads": threads, **normalise(script, result),
               "raw": result}
        rows.append(row)
        print(f"    {row['speedup']:.2f}x ({row['ours_s']:.3f} s vs {row['official_s']:.3f} s), {row['fidelity']} "
              f"[{time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
        if args.out is not None:
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    print(table(rows))
    if args.write_docs is not None:
        write_docs(args.write_docs, rows, _header(args.runs, args.threads))
    return 0


def _header(runs: int, threads: int | None = None) -> str:
    import torch

    option = f" --threads {threads}" if threads else ""
    cpu = f"{platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()})"
    return (f"`python benchmarks/official.py --runs {runs}{option}` with the official checkouts, "
            f"{time.strftime('%Y-%m-%d')}, {cpu}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, fp32, CPU; medians of timed calls alternating between "
            "the two implementations in one process.")


if __name__ == "__main__":
    sys.exit(main())
