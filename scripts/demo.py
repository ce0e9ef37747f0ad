"""`make demo`: tokenize and reconstruct the bundled samples offline, write the results, print the metrics.

Beside each model's numbers on the bundled sample it prints the held-out numbers recorded with its bundled weights
(the weights entry's `metrics`, measured on data the model never saw; the protocol is in the entry and on the
model's docs page).

Audio: wavtokenizer-tiny on `zoo/data/samples/speech.wav` -> tokens file -> decoded WAV + spectrogram PNG.
Images: every image tokenizer's tiny variant on `zoo/data/samples/photo.png` -> tokens file -> PNG.
Faces: every face tokenizer's tiny variant on `zoo/data/samples/face.png` (a crop with its MediaPipe points) -> the
face tokens (16 ids for teaser-fsq-tiny) -> the face painted back into the crop, beside the input and the fitted
geometry.
A model without bundled weights runs with random weights, and the demo says so; except KARL (adaptive length) and the
face tokenizers, shown with their bundled weights and skipped with a printed reason without them (random weights
show nothing about adaptive token counts or faces).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import zoo
from zoo.io import read_audio, read_image, write_audio, write_image

SAMPLES = Path(zoo.__file__).resolve().parent / "data" / "samples"


def _load(name: str) -> tuple[zoo.Tokenizer, str]:
    entry = zoo.get_spec(name).bundled_weights
    if entry is not None:
        return zoo.load(name), f"bundled weights '{entry.tag}'"
    torch.manual_seed(0)
    return zoo.load(name, weights=None), "RANDOM weights (no bundled weights yet: outputs are noise-like)"


def heldout_metrics(name: str) -> dict[str, float]:
    """The numeric held-out metrics recorded with `name`'s bundled weights, flattened (`psnr_k8`), or {} without
    bundled weights; the protocol text is left out."""
    entry = zoo.get_spec(name).bundled_weights
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}_{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = float(value)

    walk("", {} if entry is None else entry.metrics)
    return flat


def _round_trip(path: Path, encode: Callable[[], zoo.Tokens], decode: Callable[[zoo.Tokens], Any]):
    """encode -> tokens file at `path` -> reload -> decode, in inference mode: (reloaded tokens, decoded, seconds)."""
    start = time.perf_counter()
    with torch.inference_mode():
        encode().save(path)
        tokens = zoo.Tokens.load(path)
        decoded = decode(tokens)
    return tokens, decoded, time.perf_counter() - start


def _audio_metrics(reference: torch.Tensor, estimate: torch.Tensor, rate: int) -> dict:
    from zoo.metrics import MetricUnavailable, mel_distance, pesq, si_sdr, stoi

    results: dict = {}
    for key, fn in (
        ("stoi", lambda: stoi(reference, estimate, rate)),
        ("pesq_wb", lambda: pesq(reference, estimate, rate)),
        ("mel_distance", lambda: float(mel_distance(reference[None], estimate[None], rate).mean())),
        ("si_sdr", lambda: float(si_sdr(reference[None], estimate[None]).mean())),
    ):
        try:
            results[key] = fn()
        except MetricUnavailable as err:
            results[key] = f"unavailable: {err}"
    return results


def demo_audio(name: str, out: Path) -> dict:
    tok, how = _load(name)
    wav, rate = read_audio(SAMPLES / "speech.wav")
    print(f"[{name}] {how}; input {wav.shape[-1] / rate:.2f} s at {rate} Hz")
    tokens, audio, elapsed = _round_trip(out / f"{name}.tokens.safetensors", lambda: tok.encode(wav, sample_rate=rate),
                                         lambda t: tok.decode(t, sample_rate=rate))
    write_audio(audio[0], out / f"{name}.wav", rate)
    metrics = _audio_metrics(wav[0], audio[0], rate)
    metrics.update(tokens=int(tokens.ids.shape[1]), seconds=round(elapsed, 3), weights=how)
    return metrics


def demo_image(name: str, out: Path) -> dict:
    from zoo.metrics import psnr, ssim

    tok, how = _load(name)
    image = read_image(SAMPLES / "photo.png", size=tok.input_size[0])
    print(f"[{name}] {how}; input {tuple(image.shape[-2:])}")
    tokens, recon, elapsed = _round_trip(out / f"{name}.tokens.safetensors", lambda: tok.encode(image),
                                         lambda t: tok.decode(t).clamp(0, 1))
    write_image(torch.cat([image, recon], dim=-1)[0], out / f"{name}.png")
    metrics = {"psnr": float(psnr(image, recon).mean()), "ssim": float(ssim(image, recon).mean())}
    metrics.update(tokens=int(tokens.ids.shape[1]), seconds=round(elapsed, 3), weights=how)
    return metrics


def demo_karl(name: str, out: Path, errors: tuple[float, float] = (0.03, 0.07)) -> dict | None:
    """KARL (adaptive length): the bundled photo at a tight and a loose target error (the official README: 0.03 for
    detail, 0.07 for fewer tokens), the token counts and both reconstructions side by side. Skipped, with the reason
    printed, while the model has no bundled weights."""
    from zoo.metrics import psnr

    entry = zoo.get_spec(name).bundled_weights
    if entry is None:
        print(f"[{name}] skipped: no bundled weights yet (its training has not reached the 20 dB "
              f"target; see docs/karl.md), and random weights show nothing about adaptive token counts")
        return None
    tok = zoo.load(name)
    image = read_image(SAMPLES / "photo.png", size=tok.input_size[0])
    print(f"[{name}] bundled weights '{entry.tag}'; input {tuple(image.shape[-2:])}, target errors {errors}")
    start = time.perf_counter()
    metrics: dict = {}
    recons = [image]
    for eps in errors:
        tokens, recon, _ = _round_trip(out / f"{name}.eps{eps}.tokens.safetensors",
                                       lambda eps=eps: tok.encode(image, target_error=eps),
                                       lambda t: tok.decode(t).clamp(0, 1))
        recons.append(recon)
        metrics[f"tokens@eps{eps}"] = int(tokens.lengths[0])
        metrics[f"psnr@eps{eps}"] = float(psnr(image, recon).mean())
        print(f"[{name}] target_error={eps}: {int(tokens.lengths[0])} of {tokens.ids.shape[1]} tokens active")
    write_image(torch.cat(recons, dim=-1)[0], out / f"{name}.png")
    metrics.update(seconds=round(time.perf_counter() - start, 3), weights=f"bundled weights '{entry.tag}'")
    return metrics


def demo_face(name: str, out: Path) -> dict | None:
    """A face tokenizer on the bundled face crop: encode with its MediaPipe hull points, save and reload the tokens,
    decode into the crop; writes input | geometry | reconstruction. Skipped, with the reason, without bundled weights."""
    from zoo.metrics import psnr, ssim

    entry = zoo.get_spec(name).bundled_weights
    if entry is None:
        print(f"[{name}] skipped: no bundled weights yet (see docs/teaser.md)")
        return None
    tok = zoo.load(name)
    image = read_image(SAMPLES / "face.png")
    hull = torch.tensor(json.loads((SAMPLES / "face.json").read_text())["hull_points"])[None]
    print(f"[{name}] bundled weights '{entry.tag}'; face crop {tuple(image.shape[-2:])}")
    tokens, (recon, geometry), elapsed = _round_trip(
        out / f"{name}.tokens.safetensors", lambda: tok.encode(image, hull_points=hull),
        lambda t: (tok.decode(t, image=image).clamp(0, 1), tok.render(t)["image"].clamp(0, 1)))
    write_image(torch.cat([image, geometry, recon], dim=-1)[0], out / f"{name}.png")
    metrics = {"psnr": float(psnr(image, recon).mean()), "ssim": float(ssim(image, recon).mean())}
    metrics.update(tokens=int(tokens.ids.numel()), seconds=round(elapsed, 3), weights=f"bundled weights '{entry.tag}'")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="where results are written")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results = {}
    for name in zoo.list_models("*-tiny", modality="audio"):
        results[name] = demo_audio(name, args.out)
    for name in zoo.list_models("*-tiny", modality="image"):
        if zoo.get_spec(name).family == "karl":
            metrics = demo_karl(name, args.out)
            if metrics is not None:
                results[name] = metrics
            continue
        results[name] = demo_image(name, args.out)
    for name in zoo.list_models("*-tiny", modality="face"):
        metrics = demo_face(name, args.out)
        if metrics is not None:
            results[name] = metrics
    for name, metrics in results.items():
        metrics["heldout"] = heldout_metrics(name)
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(n) for n in results) if results else 10
    print()
    for name, metrics in results.items():
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                          if k not in ("weights", "heldout"))
        print(f"{name:<{width}}  sample: {shown}")
        heldout = ", ".join(f"{k}={v:.4g}" for k, v in metrics["heldout"].items())
        print(f"{'':<{width}}  held-out (recorded with the weights): {heldout or 'none recorded'}")
    print(f"\nwrote tokens, reconstructions and metrics.json to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
