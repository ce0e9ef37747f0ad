"""WavTokenizer on long audio: the memory bound of chunked encode/decode, and how far chunks are from whole clips.

    python benchmarks/wavtokenizer_long_audio.py --difference            # bundled tiny weights, real speech
    python benchmarks/wavtokenizer_long_audio.py --memory                # peak memory and time vs length

`--difference`: the bundled speech clip repeated at changing levels to `--seconds` (default 60), encoded and
decoded whole and in chunks (30 s chunks, 2 s context, and 5 s chunks); prints the share of differing ids, the SNR
between the chunked and the whole-clip decode, and the mel distance (DAC, 7 scales) of each decode to the input.

`--memory`: each (model, minutes, chunking) in its own process: encode + decode of that much audio (speech clip
repeated), peak resident memory above the loaded model (ru_maxrss) and wall time. The input and output waveforms
(4 bytes per sample each) are part of the peak; the rest is the model's working memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _speech(seconds: float):
    import torch

    from zoo.data.samples import sample_audio

    wav, _ = sample_audio(sample_rate=24000)
    gains = (1.0, 0.5, 0.8, 0.3, 0.9, 0.6)
    repeats = int(seconds * 24000 // wav.shape[-1]) + 1
    return torch.cat([wav * gains[i % len(gains)] for i in range(repeats)], dim=-1)[:, : int(seconds * 24000)]


def difference(seconds: float) -> None:
    import torch

    import zoo
    from zoo.metrics.audio import mel_distance

    torch.set_num_threads(2)
    tok = zoo.load("wavtokenizer-tiny")
    x = _speech(seconds)
    with torch.inference_mode():
        whole = tok.encode(x, chunk_seconds=None)
        audio_whole = tok.decode(whole, chunk_seconds=None)
        mel_whole = float(mel_distance(x, audio_whole, 24000)[0])
        print(f"{seconds:.0f} s of speech, wavtokenizer-tiny (bundled weights); whole clip: mel distance to the input "
              f"{mel_whole:.4f}")
        print("| chunk | context | ids differing | SNR chunked vs whole (dB) | mel distance to input |")
        print("|---|---|---|---|---|")
        for chunk, context in ((30.0, 2.0), (5.0, 2.0), (5.0, 0.5)):
            tok.chunk_context_seconds = context
            tokens = tok.encode(x, chunk_seconds=chunk)
            audio = tok.decode(whole, chunk_seconds=chunk)
            differing = int((tokens.ids != whole.ids).sum())
            snr = float(10 * torch.log10(audio_whole.square().sum() / (audio - audio_whole).square().sum()))
            mel = float(mel_distance(x, audio, 24000)[0])
            print(f"| {chunk:.0f} s | {context:.1f} s | {differing} / {whole.ids.numel()} | {snr:.1f} | {mel:.4f} |")


def _one_run(model: str, minutes: float, chunked: bool) -> dict:
    """Child process: peak memory above the loaded model for encode + decode of `minutes` of audio."""
    import torch

    import zoo

    torch.set_num_threads(2)
    torch.manual_seed(0)
    tok = zoo.load(model, weights="default" if model == "wavtokenizer-tiny" else None)
    x = _speech(minutes * 60)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    chunk = 30.0 if chunked else None
    start = time.perf_counter()
    with torch.inference_mode():
        tokens = tok.encode(x, chunk_seconds=chunk)
        audio = tok.decode(tokens, chunk_seconds=chunk)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": model, "minutes": minutes, "chunked": chunked, "extra_peak_mb": (peak - base) / 1024,
            "signal_mb": (x.numel() + audio.numel()) * 4 / 2 ** 20, "seconds": elapsed}


def memory(runs: list[tuple[str, float, bool]], timeout: float) -> None:
    print("| model | audio | chunks | peak memory above the model | of which input + output audio | wall time |")
    print("|---|---|---|---|---|---|")
    for model, minutes, chunked in runs:
        cmd = [sys.executable, __file__, "--one", json.dumps([model, minutes, chunked])]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        except subprocess.TimeoutExpired:
            print(f"| {model} | {minutes:g} min | {'30 s' if chunked else 'whole'} | (over {timeout:.0f} s) | | |")
            continue
        if done.returncode != 0:
            print(f"| {model} | {minutes:g} min | {'30 s' if chunked else 'whole'} | failed: "
                  f"{done.stderr.strip().splitlines()[-1][:80]} | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {model} | {minutes:g} min | {'30 s' if chunked else 'whole'} | {r['extra_peak_mb']:.0f} MiB | "
              f"{r['signal_mb']:.0f} MiB | {r['seconds']:.1f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--difference", action="store_true")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one_run(*json.loads(args.one))))
        return
    if args.difference:
        difference(args.seconds)
    if args.memory:
        runs = [("wavtokenizer-tiny", m, c) for m in (1, 10) for c in (False, True)]
        runs += [("wavtokenizer-tiny", 60, True)]
        runs += [("wavtokenizer-small-75", m, c) for m in (1, 3) for c in (False, True)]
        memory(runs, args.timeout)


if __name__ == "__main__":
    main()
