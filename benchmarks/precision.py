"""Fidelity and speed of the reduced-precision mode (`zoo.load(name, precision=...)`) against fp32, per model.

For every bundled tiny model (or the names given): the share of ids equal to fp32, the reconstruction metric in both
modes (PSNR for images; mel distance and STOI for audio; each encoded and decoded wholly in its mode) and, with
`--iters N`, the encode / decode speed-up, fp32 and the reduced mode timed alternately in this process
(`zoo.bench.precision_fidelity`). Images: the whole photos of `--photos` (the held-out photos of the bundled
models' corpus; default the bundled sample), resized and centre-cropped to the model's size. Audio: the WAV files of
`--speech` (default the bundled held-out sentence).

    python benchmarks/precision.py --photos runs/photos/heldout --iters 3 --markdown docs/assets/precision_cpu.md
    python benchmarks/precision.py wavtokenizer-tiny --precision fp16 --device cuda --iters 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

import zoo
from zoo.bench import precision_fidelity
from zoo.data import sample_path
from zoo.io import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, read_audio, read_image


def _files(folder: Path | None, extensions: tuple[str, ...], default: Path) -> list[Path]:
    if folder is None:
        return [default]
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)
    if not files:
        sys.exit(f"no {'/'.join(extensions)} files in {folder}")
    return files


def _inputs(tok, args: argparse.Namespace) -> list[tuple[torch.Tensor, int | None]]:
    if tok.modality == "audio":
        return [read_audio(p) for p in _files(args.speech, AUDIO_EXTENSIONS, sample_path("speech.wav"))]
    photos = _files(args.photos, IMAGE_EXTENSIONS, sample_path("photo.png"))
    return [(torch.cat([read_image(p, size=tok.input_size) for p in photos]), None)]


def measure(name: str, args: argparse.Namespace) -> dict:
    tok = zoo.load(name).to(args.device)
    rows = [precision_fidelity(tok, x.to(args.device), args.precision, sample_rate=rate, iters=args.iters)
            for x, rate in _inputs(tok, args)]
    merged: dict = {"model": name, "precision": args.precision, "inputs": len(rows)}
    num = sum(r["num_ids"] for r in rows)
    merged["ids_agreement"] = sum(r["ids_agreement"] * r["num_ids"] for r in rows) / num
    merged["num_ids"] = num
    for key in rows[0]:
        if key not in merged and isinstance(rows[0][key], float) and key != "ids_agreement":
            merged[key] = sum(r[key] for r in rows) / len(rows)
    return merged


def _markdown(results: list[dict], args: argparse.Namespace) -> str:
    p = args.precision
    lines = [(f"Device: {args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} "
              f"threads, torch {torch.__version__}); precision {p} against fp32."), "",
             "| model | ids equal to fp32 | metric fp32 | metric " + p + " | encode speed-up | decode speed-up |",
             "|---|---|---|---|---|---|"]
    for r in results:
        key = "psnr" if "psnr_fp32" in r else "stoi" if "stoi_fp32" in r else "mel_distance"
        unit = " dB" if key == "psnr" else ""
        speed = [f"{r[f'{op}_speedup']:.2f}x" if f"{op}_speedup" in r else "-" for op in ("encode", "decode")]
        lines.append(f"| {r['model']} | {100 * r['ids_agreement']:.1f} % of {r['num_ids']} | {key} "
                     f"{r[f'{key}_fp32']:.3f}{unit} | {r[f'{key}_{p}']:.3f}{unit} | {speed[0]} | {speed[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="models (default: every bundled tiny model)")
    parser.add_argument("--precision", choices=("bf16", "fp16"), default="bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--photos", type=Path, help="folder of whole photos (default: the bundled sample)")
    parser.add_argument("--speech", type=Path, help="folder of WAV clips (default: the bundled sample)")
    parser.add_argument("--iters", type=int, default=0, help="timed calls per mode for the speed-ups (0: none)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or [n for n in zoo.list_models("*-tiny*") if zoo.get_spec(n).bundled_weights is not None]
    results = []
    for name in names:
        result = measure(name, args)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
        results.append(result)
    table = _markdown(results, args)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
