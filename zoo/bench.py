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
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["AMP_DTYPES", "benchmark", "format_result", "make_input"]

AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def _autocast(device: str, amp: str):
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


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
    amp: str = "none",
    encode_kwargs: Mapping[str, Any] | None = None,
    decode_kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Time `tok.encode` and `tok.decode` (inference mode, optional autocast) on `make_input(tok, batch_size,
    seconds)`.

    Args:
        tok: a tokenizer on the device to measure (its parameters' device).
        iters / warmup: timed and untimed calls of each stage.
        amp: "none", "bf16" or "fp16" (autocast dtype).
        encode_kwargs / decode_kwargs: passed to every call (e.g. `num_tokens`, `steps`, `generator`).
        name: the model name the result reports (default `tok.name`).

    Returns a JSON-ready dict: model, device, amp, batch_size, input_shape, tokens_shape, encode/decode
    ms per batch and items per second, and for audio the real-time factors.
    """
    if iters < 1 or batch_size < 1 or warmup < 0:
        raise ValueError(f"iters and batch_size must be >= 1 and warmup >= 0, got {iters}, {batch_size}, {warmup}")
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    device = str(tok.device)
    x = make_input(tok, batch_size, seconds)
    enc_kwargs, dec_kwargs = dict(encode_kwargs or {}), dict(decode_kwargs or {})
    with torch.inference_mode(), _autocast(device, amp):
        enc_s, tokens = _timed(lambda: tok.encode(x, **enc_kwargs), iters, warmup, device)
        dec_s, _ = _timed(lambda: tok.decode(tokens, **dec_kwargs), iters, warmup, device)
    result = {
        "model": name if name is not None else tok.name,
        "device": device,
        "amp": amp,
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
        f"{result['model']} on {result['device']} (amp {result['amp']}), batch {result['batch_size']}, "
        f"input {tuple(result['input_shape'])} -> tokens {tuple(result['tokens_shape'])}"
    ]
    unit = "clips" if modality == "audio" else "images"
    for stage in ("encode", "decode"):
        ms, rate = result[f"{stage}_ms_per_batch"], result[f"{stage}_items_per_s"]
        line = f"  {stage}: {ms:.2f} ms/batch, {rate:.2f} {unit}/s"
        if modality == "audio":
            line += f", {result[f'{stage}_realtime_factor']:.1f}x realtime"
        lines.append(line)
    return "\n".join(lines)
