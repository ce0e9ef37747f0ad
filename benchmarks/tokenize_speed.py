"""`zoo tokenize` throughput: items/s with 1 and 2 processes, and its overhead over a plain read + encode loop.

The same generated images (seeded, PNG, 160-240 px, resized/cropped to the model's size as `zoo tokenize` does)
go through three paths, each timed from a cold start of its work (model already built):

* plain: the loop a user would write, `read_image` + `tok.encode` in batches, nothing written;
* pipeline, 1 process: `TokenizeJob(...).run()` in this process (listing, reading, encoding, shard + record writes,
  sha256, manifest);
* pipeline, 2 processes: `accelerate launch --multi_gpu --num_processes 2` on the CPU (each process
  `OMP_NUM_THREADS=threads / 2`): its work time (`manifest.json` "seconds": first shard to last, after start-up and
  model loading) and, as a conservative number, the end-to-end time of the launch.

The three are measured `--repeats` times in turn and the medians reported, with the machine's load average,
since on a shared machine other processes move absolute numbers.

    python benchmarks/tokenize_speed.py --model gigatok-tiny --items 96 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = int(rng.integers(160, 240)), int(rng.integers(160, 240))
        coarse = rng.random((h // 8 + 1, w // 8 + 1, 3))
        array = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
        Image.fromarray((array * 255).astype(np.uint8)).save(folder / f"img{i:05d}.png")


def plain_loop(model: str, folder: Path, batch: int) -> float:
    import zoo
    from zoo.io import read_image

    tok = zoo.load(model)
    files = sorted(folder.glob("*.png"))
    start = time.perf_counter()
    with torch.inference_mode():
        for k in range(0, len(files), batch):
            x = torch.cat([read_image(f, size=tok.input_size, mode="crop") for f in files[k: k + batch]])
            tok.encode(x)
    return time.perf_counter() - start


def pipeline_one(model: str, folder: Path, out: Path, batch: int, shard_size: int) -> float:
    from zoo.pretokenize import TokenizeJob

    job = TokenizeJob(model, str(folder), out, batch_size=batch, shard_size=shard_size, device="cpu", quiet=True)
    job.run()
    return json.loads((out / "manifest.json").read_text())["seconds"]


def pipeline_two(model: str, folder: Path, out: Path, batch: int, shard_size: int, threads: int
                 ) -> tuple[float, float]:
    """(work seconds from the manifest, end-to-end seconds of the launch)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // 2)), ACCELERATE_USE_CPU="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zoo.cli",
               "tokenize", model, "--data", str(folder), "--out", str(out), "--batch-size", str(batch),
               "--shard-size", str(shard_size), "--device", "cpu", "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return json.loads((out / "manifest.json").read_text())["seconds"], time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gigatok-tiny")
    p.add_argument("--items", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import statistics

    times: dict[str, list[float]] = {"plain": [], "one": [], "two": [], "two_end_to_end": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.items)
        plain_loop(args.model, folder, args.batch)  # warm-up: file cache, kernels
        for r in range(args.repeats):
            times["plain"].append(plain_loop(args.model, folder, args.batch))
            times["one"].append(pipeline_one(args.model, folder, Path(tmp) / f"one{r}", args.batch, args.shard_size))
            work, total = pipeline_two(args.model, folder, Path(tmp) / f"two{r}", args.batch, args.shard_size,
                                       args.threads)
            times["two"].append(work)
            times["two_end_to_end"].append(total)
        same = all((Path(tmp) / "one0" / f.name).read_bytes() == f.read_bytes()
                   for f in (Path(tmp) / "two0").glob("shard-*.safetensors"))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = args.items
    result = {
        "model": args.model, "items": n, "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "load_average_1min_after": os.getloadavg()[0],
        "plain_items_per_s": n / med["plain"], "pipeline_1proc_items_per_s": n / med["one"],
        "pipeline_2proc_items_per_s": n / med["two"], "pipeline_2proc_items_per_s_end_to_end": n / med["two_end_to_end"],
        "pipeline_overhead": med["one"] / med["plain"] - 1, "speedup_2proc_vs_1proc": med["one"] / med["two"],
        "shards_identical_1_vs_2_processes": same, "seconds": times,
    }
    for key, value in result.items():
        print(f"{key:40s} {value:.3f}" if isinstance(value, float) else f"{key:40s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
