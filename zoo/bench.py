"""Encode/decode throughput of a tokenizer on random input of its size (`zoo bench`).

    import zoo
    from zoo.bench import benchmark, format_result
    tok = zoo.load("gigatok-tiny", weights=None)
    result = benchmark(tok, batch_size=4, iters=3)
    print(format_result(result, tok.modality))
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["benchmark", "decode_kwargs_for", "format_result", "make_input", "precision_fidelity"]


def make_input(tok, batch_size: int, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Random input of the tokenizer's size on its device: `seconds` of noise in [-0.3, 0.3] (audio), or the
    tokenizer's `example_input` (images, faces); seeded, so every run times the same input."""
    generator = torch.Generator().manual_seed(seed)
    if tok.modality == "audio":
        num = int(seconds * tok.sample_rate)
        if num < 1:
            raise ValueError(f"{seconds} s gives no sample at {tok.sample_rate} Hz")
        x = 0.3 * (2 * torch.rand(batch_size, num, generator=generator) - 1)
    else:
        x = tok.example_input(batch_size, generator=generator)
    return x.to(tok.device)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def _using_precision(tok, precision: str | None) -> Iterator[None]:
    """Run the block with `tok.precision = precision` (None: unchanged), and restore the tokenizer's own after."""
    previous = tok.precision
    tok.precision = previous if precision is None else precision
    try:
        yield
    finally:
        tok.precision = previous


def _timed(fn: Callable[[], Any], iters: int, warmup: int, device: str) -> tuple[float, Any]:
    """Seconds per call of `fn` over `iters` calls after `warmup` untimed ones, and the last call's output."""
    out = None
    for _ in range(warmup):
        out = fn()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        out = fn()
    _synchronize(device)
    return (time.perf_counter() - start) / iters, out


def benchmark(
    tok,
    *,
    batch_size: int = 1,
    iters: int = 3,
    warmup: int = 1,
    seconds: float = 1.0,
    precision: str | None = None,
    encode_kwargs: Mapping[str, Any] | None = None,
    decode_kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Time `tok.encode` and `tok.decode` (inference mode, optional autocast) on `make_input(tok, batch_size,
    seconds)`.

    Args:
        tok: a tokenizer on the device to measure (its parameters' device).
        iters / warmup: timed and untimed calls of each stage.
        precision: "fp32", "bf16" or "fp16" for this measurement (`zoo.precision`); None: the tokenizer's own.
        encode_kwargs / decode_kwargs: passed to every call (e.g. `num_tokens`, `steps`, `generator`).
        name: the model name the result reports (default `tok.name`).

    Returns a JSON-ready dict: model, device, precision, batch_size, input_shape, tokens_shape, encode/decode
    ms per batch and items per second, and for audio the real-time factors.
    """
    if iters < 1 or batch_size < 1 or warmup < 0:
        raise ValueError(f"iters and batch_size must be >= 1 and warmup >= 0, got {iters}, {batch_size}, {warmup}")
    device = str(tok.device)
    x = make_input(tok, batch_size, seconds)
    enc_kwargs, dec_kwargs = dict(encode_kwargs or {}), dict(decode_kwargs or {})
    with _using_precision(tok, precision), torch.inference_mode():
        used = tok.precision
        enc_s, tokens = _timed(lambda: tok.encode(x, **enc_kwargs), iters, warmup, device)
        dec_s, _ = _timed(lambda: tok.decode(tokens, **dec_kwargs), iters, warmup, device)
    result = {
        "model": name if name is not None else tok.name,
        "device": device,
        "precision": used,
        "batch_size": batch_size,
        "input_shape": list(x.shape),
        "tokens_shape": list(tokens.ids.shape),
        "encode_ms_per_batch": 1000 * enc_s,
        "decode_ms_per_batch": 1000 * dec_s,
        "encode_items_per_s": batch_size / enc_s,
        "decode_items_per_s": batch_size / dec_s,
    }
    if tok.modality == "audio":
        audio_seconds = batch_size * x.shape[-1] / tok.sample_rate
        result["encode_realtime_factor"] = audio_seconds / enc_s
        result["decode_realtime_factor"] = audio_seconds / dec_s
    return result


def format_result(result: Mapping[str, Any], modality: str) -> str:
    """The human-readable report of a `benchmark` result (what `zoo bench` prints)."""
    lines = [
        (f"{result['model']} on {result['device']} ({result['precision']}), batch {result['batch_size']}, "
         f"input {tuple(result['input_shape'])} -> tokens {tuple(result['tokens_shape'])}")
    ]
    unit = "clips" if modality == "audio" else "images"
    for stage in ("encode", "decode"):
        ms, rate = result[f"{stage}_ms_per_batch"], result[f"{stage}_items_per_s"]
        line = f"  {stage}: {ms:.2f} ms/batch, {rate:.2f} {unit}/s"
        if modality == "audio":
            line += f", {result[f'{stage}_realtime_factor']:.1f}x realtime"
        lines.append(line)
    return "\n".join(lines)


def decode_kwargs_for(tok, seed: int, sample_rate: int | None, steps: int | None = None) -> dict[str, Any]:
    """Fresh decode kwargs for one call: a newly seeded generator for stochastic decoders (the same noise in every
    call), audio back at the input's `sample_rate`, and `steps` sampler steps for decoders that take them (None: the
    decoder's default)."""
    import inspect

    params = inspect.signature(tok.decode).parameters
    kwargs: dict[str, Any] = {}
    if steps is not None and "steps" in params:
        kwargs["steps"] = steps
    if "generator" in params:
        kwargs["generator"] = torch.Generator(device=tok.device).manual_seed(seed)
    if tok.modality == "audio" and sample_rate is not None:
        kwargs["sample_rate"] = sample_rate
    return kwargs


def _signal_metrics(tok, x: torch.Tensor, y: torch.Tensor, sample_rate: int | None) -> dict[str, float]:
    from zoo.metrics import MetricUnavailable, mel_distance, psnr, stoi

    if tok.modality != "audio":
        return {"psnr": float(psnr(x.clamp(0, 1), y.clamp(0, 1)).mean())}
    rate = sample_rate or tok.sample_rate
    n = min(x.shape[-1], y.shape[-1])
    x, y = x[..., :n], y[..., :n]
    out = {"mel_distance": float(mel_distance(x, y, rate).mean())}
    try:
        out["stoi"] = sum(stoi(a, b, rate) for a, b in zip(x, y)) / len(x)
    except MetricUnavailable:
        pass
    return out


def precision_fidelity(tok, x: torch.Tensor, precision: str, *, encode_kwargs: Mapping[str, Any] | None = None,
                       sample_rate: int | None = None, seed: int = 0, iters: int = 0) -> dict[str, Any]:
    """What `precision` changes against fp32 on input `x`: the share of ids that stay the same, the reconstruction
    metrics of both (PSNR for images and faces; mel distance and, where pystoi is installed, STOI for audio; each
    encoded and decoded wholly in its precision), and with `iters` > 0 the encode / decode speed-up (median of
    `iters` timed calls each after one warm-up, fp32 and `precision` alternating in this process)."""
    enc = dict(encode_kwargs or {})
    if tok.modality == "audio" and sample_rate is not None:
        enc["sample_rate"] = sample_rate
    runs: dict[str, dict[str, Any]] = {}
    with _using_precision(tok, None):  # the modes below set tok.precision; the tokenizer's own comes back after
        for mode in ("fp32", precision):
            tok.precision = mode
            with torch.inference_mode():
                tokens = tok.encode(x, **enc)
                y = tok.decode(tokens, **decode_kwargs_for(tok, seed, sample_rate))
            runs[mode] = {"tokens": tokens, "metrics": _signal_metrics(tok, x, y, sample_rate)}
        ref, red = runs["fp32"]["tokens"], runs[precision]["tokens"]
        valid = ref.valid_mask() & red.valid_mask()
        if ref.ids.dim() == 3:
            valid = valid[..., None].expand_as(ref.ids)
        same = (ref.ids == red.ids)[valid]
        result: dict[str, Any] = {"precision": precision, "ids_agreement": float(same.float().mean()),
                                  "num_ids": int(same.numel())}
        for key, value in runs["fp32"]["metrics"].items():
            result[f"{key}_fp32"] = value
            result[f"{key}_{precision}"] = runs[precision]["metrics"][key]
        if iters > 0:
            result.update(_speedups(tok, x, enc, precision, iters, seed, sample_rate))
    return result


def _speedups(tok, x: torch.Tensor, enc: dict[str, Any], precision: str, iters: int, seed: int,
              sample_rate: int | None) -> dict[str, float]:
    import statistics

    device = str(tok.device)
    times: dict[tuple[str, str], list[float]] = {}
    tokens = {}
    with torch.inference_mode():
        for mode in ("fp32", precision):  # warm-up, and the tokens each precision decodes
            tok.precision = mode
            tokens[mode] = tok.encode(x, **enc)
            tok.decode(tokens[mode], **decode_kwargs_for(tok, seed, sample_rate))
        for _ in range(iters):
            for mode in ("fp32", precision):
                tok.precision = mode
                seconds, _ = _timed(lambda: tok.encode(x, **enc), 1, 0, device)
                times.setdefault(("encode", mode), []).append(seconds)
                seconds, _ = _timed(lambda m=mode: tok.decode(tokens[m], **decode_kwargs_for(tok, seed, sample_rate)), 1,
                                    0, device)
                times.setdefault(("decode", mode), []).append(seconds)
    out = {}
    for op in ("encode", "decode"):
        fp32_s, red_s = statistics.median(times[(op, "fp32")]), statistics.median(times[(op, precision)])
        out[f"{op}_s_fp32"], out[f"{op}_s_{precision}"] = fp32_s, red_s
        out[f"{op}_speedup"] = fp32_s / red_s
    return out
