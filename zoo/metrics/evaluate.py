"""Reconstruction evaluation of any tokenizer over an image or audio folder (`zoo eval`, `recipes/eval_recon.py`).

Each process of an Accelerate launch takes a contiguous shard of the sorted file list, encodes and decodes it in
batches, and keeps per-item values; per-item records are gathered to the main process, FID statistics and codebook
histograms are summed across processes in float64, so the numbers do not depend on the number of processes. The
main process writes `metrics.json`, `metrics.md`, `items.jsonl` and examples (a PNG grid for images, WAV pairs and
spectrogram PNGs for audio). A metric that cannot run is kept with `value: null` and the reason. A file that cannot
be read (or a clip too short for the model) is skipped and listed with the reason under `skipped` in metrics.json,
so one bad file does not lose a long evaluation; `strict=True` (`zoo eval --strict`) stops at the first instead.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from zoo.api import Tokenizer, Tokens, accepts_option
from zoo.atomic import atomic_path, atomic_write_text
from zoo.io import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, find_files, read_audio, read_image, write_audio
from zoo.metrics.audio import PESQ_RATES, MetricUnavailable, pesq, resample, stoi
from zoo.metrics.codebook import CodebookUsage
from zoo.metrics.fid import FID, FeatureStats, frechet_distance, sqrt_factor
from zoo.metrics.pfid import PFID_ALPHA, PFID_DELTA, count_changes, expected_change_rate, perturb_tokens
from zoo.metrics.report import write_markdown, write_spectrogram_png
from zoo.metrics.table import METRICS

__all__ = ["AUDIO_EXTRAS", "evaluate"]

AUDIO_EXTRAS = ("distillmos", "visqol")
# Lower is better for these; the rest are higher-is-better (shown in the markdown table).
LOWER_IS_BETTER = {"lpips", "rfid", "pfid", "mel_distance", "stft_distance"}


def _summary(values: Sequence[float | None], reasons: Counter | None = None, unit: str | None = None
             ) -> dict[str, Any]:
    """Mean/std over the items that were scored, with the reasons (and counts) for the others."""
    reasons = reasons or Counter()
    scored = [v for v in values if v is not None and math.isfinite(v)]
    out: dict[str, Any] = {"value": None, "n": len(scored)}
    if scored:
        t = torch.tensor(scored, dtype=torch.float64)
        out["value"] = float(t.mean())
        out["std"] = float(t.std()) if len(scored) > 1 else 0.0
    elif reasons:
        out["skipped"] = "; ".join(reasons)
    else:
        out["skipped"] = "no items were scored"
    if unit:
        out["unit"] = unit
    if reasons and scored:
        out["skipped_items"] = dict(reasons)
    return out


def _unavailable(reason: str) -> dict[str, Any]:
    return {"value": None, "skipped": reason}


def _sum_across(accelerator: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: accelerator.reduce(t, reduction="sum") if accelerator.num_processes > 1 else t


def _broadcast(accelerator: Any, obj: Any) -> Any:
    """The main process's `obj` on every process."""
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def _gather(accelerator: Any, items: list) -> list:
    if accelerator.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return gather_object(items)


def _sync_dim(accelerator: Any, stats: Sequence[FeatureStats], device: torch.device) -> None:
    """Give empty statistics (a process with no items) the feature dim of the others before the reduce."""
    local = max((s.sum.shape[0] for s in stats if s.sum is not None), default=-1)
    dim = max(_gather(accelerator, [local]))
    for s in stats:
        if s.sum is None and dim > 0:
            s.ensure(dim, device)


def _decode_kwargs(tok: Tokenizer, generator: torch.Generator, options: dict[str, Any]) -> dict[str, Any]:
    """The caller's decode options, plus `generator=` for stochastic decoders (flow / diffusion) that take it."""
    seeded = {"generator": generator} if "generator" in inspect.signature(tok.decode).parameters else {}
    return {**options, **seeded}


def check_options(tok: Tokenizer, encode_kwargs: dict[str, Any], decode_kwargs: dict[str, Any]) -> None:
    """Refuse options the tokenizer's encode/decode do not take, before any file is read."""
    for what, fn, options in (("encode", tok.encode, encode_kwargs), ("decode", tok.decode, decode_kwargs)):
        unknown = sorted(name for name in options if not accepts_option(fn, name))
        if unknown:
            known = [n for n in inspect.signature(fn).parameters if n not in ("self", "x", "tokens")]
            raise ValueError(f"{tok.name or type(tok).__name__}.{what} takes no {', '.join(unknown)} (its options: "
                             f"{', '.join(known) or 'none'})")


def _perturb(tok: Tokenizer, tokens: Tokens, first_index: int, alpha: float, delta: int, seed: int) -> Tokens:
    """Per-item seeded perturbation, so pFID does not depend on batch size or process count."""
    out = []
    for i, item in enumerate(tokens.unbatch()):
        generator = torch.Generator(device=item.device).manual_seed(seed * 1_000_003 + first_index + i)
        out.append(perturb_tokens(item, tok.codebooks, alpha, delta, generator))
    return Tokens.cat(out) if len(out) > 1 else out[0]


def evaluate(
    tok: Tokenizer,
    data: str | Path,
    out_dir: str | Path,
    *,
    accelerator: Any = None,
    batch_size: int = 8,
    max_items: int | None = None,
    seed: int = 0,
    fid: bool = True,
    fid_weights: str | Path | None = None,
    fid_extractor: torch.nn.Module | None = None,
    lpips_net: str = "vgg",
    lpips_backbone: str | Path | None = None,
    pfid_alpha: float = PFID_ALPHA,
    pfid_delta: int = PFID_DELTA,
    pesq_mode: str = "wb",
    audio_extras: Sequence[str] = AUDIO_EXTRAS,
    num_examples: int = 8,
    progress: bool = True,
    strict: bool = False,
    over_full_scale: str = "error",
    encode_kwargs: dict[str, Any] | None = None,
    decode_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate `tok` on the image or audio files under `data`; write results to `out_dir`; return the report.

    Args:
        tok: any tokenizer (`zoo.load(name)`), in eval mode on the accelerator's device.
        data: folder (searched recursively) or single file. Images are resized (shorter side) and center-cropped to
            `tok.image_size`; audio is mixed to mono and resampled to `tok.sample_rate`.
        accelerator: an `accelerate.Accelerator` (one is made when None).
        max_items: evaluate only the first N files (sorted order).
        fid / fid_weights / fid_extractor: rFID and pFID with the TF Inception (or an injected extractor).
        lpips_net / lpips_backbone: LPIPS trunk and a local backbone weights file (see `zoo.metrics.lpips`).
        pfid_alpha / pfid_delta / seed: the token perturbation of pFID.
        pesq_mode: "wb" (16 kHz) or "nb" (8 kHz).
        audio_extras: optional predictors to run ("distillmos", "visqol"); missing packages are reported.
        num_examples: items written as examples.
        strict: raise at the first unreadable file instead of skipping it (skipped files are listed in the report).
        over_full_scale: float audio files above full scale: "error" (skipped as unreadable), "normalize" or "clip"
            (`zoo.io.FULL_SCALE_POLICIES`).
        encode_kwargs / decode_kwargs: passed to every `encode` / `decode` call (e.g. `{"num_tokens": 8}`,
            `{"steps": 20, "guidance": 1.0}`); recorded in the report. Options the tokenizer does not take raise.
    """
    encode_kwargs, decode_kwargs = dict(encode_kwargs or {}), dict(decode_kwargs or {})
    check_options(tok, encode_kwargs, decode_kwargs)
    if accelerator is None:
        from accelerate import Accelerator

        accelerator = Accelerator()
    modality = "audio" if tok.modality == "audio" else "image"
    extensions = AUDIO_EXTENSIONS if modality == "audio" else IMAGE_EXTENSIONS
    files = find_files(data, extensions)
    if max_items is not None:
        files = files[:max_items]
    if not files:
        raise FileNotFoundError(f"no {modality} files ({', '.join(extensions)}) under {data}")
    out_dir = Path(out_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    tok = tok.to(accelerator.device).eval()
    indexed = list(enumerate(files))
    with accelerator.split_between_processes(indexed) as shard:
        shard = list(shard)
    run = _evaluate_audio if modality == "audio" else _evaluate_images
    options = dict(batch_size=batch_size, seed=seed, fid=fid, fid_weights=fid_weights, fid_extractor=fid_extractor,
                   lpips_net=lpips_net, lpips_backbone=lpips_backbone, pfid_alpha=pfid_alpha, pfid_delta=pfid_delta,
                   pesq_mode=pesq_mode, audio_extras=tuple(audio_extras), num_examples=num_examples,
                   progress=progress, strict=strict, over_full_scale=over_full_scale,
                   encode_kwargs=encode_kwargs, decode_kwargs=decode_kwargs)
    skipped: list[dict[str, Any]] = []
    metrics, records = run(tok, shard, out_dir, accelerator, skipped=skipped, **options)
    skipped = sorted(_gather(accelerator, skipped), key=lambda r: r["index"])
    report = {
        "model": tok.name or type(tok).__name__,
        "family": tok.family,
        "weights": tok.weights_tag,
        "modality": tok.modality,
        "data": str(Path(data).resolve()),
        "num_files": len(files),
        "num_items": len(files) - len(skipped),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "num_processes": accelerator.num_processes,
        "batch_size": batch_size,
        "seed": seed,
        "encode_kwargs": encode_kwargs,
        "decode_kwargs": decode_kwargs,
        "metrics": metrics,
    }
    if modality == "audio":
        report["sample_rate"] = tok.sample_rate
    else:
        report["image_size"] = list(tok.input_size)
    if accelerator.is_main_process:  # each file under a temporary name, renamed when complete
        atomic_write_text(out_dir / "items.jsonl", "".join(json.dumps(record) + "\n" for record in records))
        write_markdown(report, out_dir / "metrics.md", LOWER_IS_BETTER)
        atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return report


def _batches(shard: list, size: int) -> list[list]:
    return [shard[i : i + size] for i in range(0, len(shard), max(1, size))]


def _readable(items: list, read: Callable[[Path], Any], strict: bool, skipped: list) -> list[tuple[int, Path, Any]]:
    """`(index, path, read(path))` for the files that can be read; the others go to `skipped` with the reason
    (or raise, with `strict`)."""
    out = []
    for index, path in items:
        try:
            out.append((index, path, read(path)))
        except (ValueError, OSError) as err:  # the readers' errors for a bad file (FileNotFoundError included)
            if strict:
                raise
            skipped.append({"index": index, "file": str(path), "reason": f"{type(err).__name__}: {err}"})
    return out


def _progress(accelerator: Any, items: list, enabled: bool, what: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=what, disable=not (enabled and accelerator.is_local_main_process), unit="batch")


def _codebook_state(tok: Tokenizer, device: torch.device) -> tuple[CodebookUsage | None, str | None]:
    try:
        return CodebookUsage(tok.codebooks, device=device), None
    except (NotImplementedError, AttributeError) as err:
        return None, f"{type(tok).__name__} exposes no codebooks ({err})"


def _evaluate_images(tok, shard, out_dir, accelerator, *, batch_size, seed, fid, fid_weights, fid_extractor,
                     lpips_net, lpips_backbone, pfid_alpha, pfid_delta, num_examples, progress, strict, skipped,
                     encode_kwargs, decode_kwargs, **_):
    device = accelerator.device
    metrics: dict[str, Any] = {}
    fid_state, fid_reason = None, None
    if fid:
        try:
            fid_state = FID(extractor=fid_extractor, weights=fid_weights, device=device,
                            reference="the evaluated originals (same files, same crop)")
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            fid_reason = f"FID extractor unavailable: {err}"
    else:
        fid_reason = "disabled (--no-fid)"
    lpips_metric, lpips_reason = None, None
    try:
        from zoo.metrics.lpips import LPIPSMetric

        lpips_metric = LPIPSMetric(net=lpips_net, backbone=lpips_backbone).to(device)
    except MetricUnavailable as err:
        lpips_reason = str(err)
    usage, usage_reason = _codebook_state(tok, device)
    perturbed_stats = FeatureStats()
    changed = torch.zeros(2, dtype=torch.float64, device=device)  # changed ids, valid ids
    records, examples = [], []
    size = tok.input_size
    for batch in _progress(accelerator, _batches(shard, batch_size), progress, f"eval {tok.name or tok.family}"):
        readable = _readable(batch, lambda path: read_image(path, size=size), strict, skipped)
        if not readable:
            continue
        batch = [(index, path) for index, path, _ in readable]
        indices = [i for i, _ in batch]
        x = torch.cat([image for _, _, image in readable]).to(device)
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + indices[0])
        with torch.inference_mode():
            tokens = tok.encode(x, **encode_kwargs)
            recon = tok.decode(tokens, **_decode_kwargs(tok, generator, decode_kwargs)).float().clamp(0, 1)
            perturbed = None
            if usage is not None:
                usage.update(tokens)
                noisy = _perturb(tok, tokens, indices[0], pfid_alpha, pfid_delta, seed)
                changed += torch.tensor(count_changes(tokens, noisy), dtype=torch.float64, device=device)
                if fid_state is not None:
                    perturbed = tok.decode(noisy, **_decode_kwargs(tok, generator, decode_kwargs)).float().clamp(0, 1)
            values = {name: METRICS.get(name)(x, recon, None) for name in ("psnr", "ssim")}
            if lpips_metric is not None:
                values["lpips"] = lpips_metric(x, recon)
            if fid_state is not None:
                fid_state.update(x, real=True)
                fid_state.update(recon, real=False)
                if perturbed is not None:
                    perturbed_stats.update(fid_state.features(perturbed))
        for j, index in enumerate(indices):
            record = {"index": index, "file": str(batch[j][1])}
            record.update({k: float(v[j]) for k, v in values.items()})
            records.append(record)
        if accelerator.is_main_process and len(examples) < num_examples:
            take = num_examples - len(examples)
            rows = [x[:take], recon[:take]] + ([perturbed[:take]] if perturbed is not None else [])
            examples.extend(torch.stack(rows, 1).cpu())
    records = sorted(_gather(accelerator, records), key=lambda r: r["index"])
    # collectives on every process first
    total = _sum_across(accelerator)
    if fid_state is not None:
        _sync_dim(accelerator, [fid_state.real, fid_state.fake, perturbed_stats], device)
        fid_state.reduce(total)
        perturbed_stats.reduce(total)
    if usage is not None:
        usage.reduce(total)
        changed = total(changed)
    # then the summaries (two Frechet distances: a D x D eigh) on the main process only, shared afterwards
    if accelerator.is_main_process:
        metrics["psnr"] = _summary([r["psnr"] for r in records], unit="dB")
        metrics["ssim"] = _summary([r["ssim"] for r in records])
        if lpips_metric is not None:
            metrics["lpips"] = {**_summary([r["lpips"] for r in records]),
                                "protocol": lpips_metric.protocol()}
        else:
            metrics["lpips"] = _unavailable(lpips_reason)
        metrics.update(_fid_summaries(tok, fid_state, perturbed_stats, changed, usage, fid_reason, usage_reason,
                                      pfid_alpha, pfid_delta, seed))
        if examples:
            from torchvision.utils import save_image

            grid = torch.stack(examples)  # [n, rows, 3, H, W]
            with atomic_path(out_dir / "reconstructions.png") as tmp:
                save_image(grid.transpose(0, 1).reshape(-1, *grid.shape[2:]), tmp, nrow=grid.shape[0], padding=2,
                           format="PNG")
    return _broadcast(accelerator, metrics), records


def _fid_summaries(tok, fid_state, perturbed_stats, changed, usage, fid_reason, usage_reason, alpha, delta, seed):
    """rfid, pfid (with the perturbation protocol and the measured change rate) and usage entries."""
    out: dict[str, Any] = {}
    real_factor = None
    if fid_state is not None:
        try:
            mean, cov = fid_state.real.mean_cov()
            real_factor = sqrt_factor(cov)
            out["rfid"] = {"value": frechet_distance(mean, cov, *fid_state.fake.mean_cov(), real_factor),
                           "protocol": fid_state.protocol()}
        except ValueError as err:
            out["rfid"] = _unavailable(str(err))
    else:
        out["rfid"] = _unavailable(fid_reason)
    if usage is None:
        out["pfid"] = _unavailable(usage_reason)
        out["usage"] = _unavailable(usage_reason)
        return out
    sizes = [book.size for book in tok.codebooks]
    protocol = {
        "alpha": alpha, "delta": delta, "delta_effective": [min(delta, s) for s in sizes], "seed": seed,
        "scope": "every token of every image (beta = 1), seeded per image",
        "change_rate": float(changed[0] / changed[1]) if changed[1] > 0 else 0.0,
        "expected_change_rate": [expected_change_rate(alpha, delta, s) for s in sizes],
    }
    if real_factor is not None:
        try:
            value = frechet_distance(*fid_state.real.mean_cov(), *perturbed_stats.mean_cov(), real_factor)
            out["pfid"] = {"value": value, "protocol": {**fid_state.protocol(), **protocol}}
        except ValueError as err:
            out["pfid"] = {**_unavailable(str(err)), "protocol": protocol}
    else:
        out["pfid"] = {**_unavailable(out["rfid"].get("skipped", "")), "protocol": protocol}
    summary = usage.compute()
    out["usage"] = {"value": summary.pop("usage"), **summary}
    return out


def _audio_groups(shard: list, clips: dict[int, torch.Tensor], size: int) -> list[list[int]]:
    """Consecutive clips of equal length, up to `size` per group (batched encode without padding)."""
    groups: list[list[int]] = []
    for index, _ in shard:
        if groups and len(groups[-1]) < size and clips[groups[-1][0]].shape[-1] == clips[index].shape[-1]:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def _score_clip(name: str, fn: Callable[[], float], record: dict) -> None:
    """Store `fn()` under `name`, or None plus `<name>_skipped` with the reason when the clip cannot be scored."""
    try:
        record[name] = fn()
    except MetricUnavailable as err:
        record[name] = None
        record[f"{name}_skipped"] = str(err)


def _evaluate_audio(tok, shard, out_dir, accelerator, *, batch_size, seed, pesq_mode, audio_extras, num_examples,
                    progress, strict, skipped, over_full_scale, encode_kwargs, decode_kwargs, **_):
    from zoo.metrics import quality

    device = accelerator.device
    rate = tok.sample_rate
    unknown = [name for name in audio_extras if name not in AUDIO_EXTRAS]
    if unknown:
        raise ValueError(f"unknown audio extras {unknown}; choose from {AUDIO_EXTRAS}")
    clips = {}
    for index, path, (wav, file_rate) in _readable(shard, lambda p: read_audio(p, over_full_scale=over_full_scale),
                                                   strict, skipped):
        clip = resample(wav, file_rate, rate).clamp(-1, 1)
        if clip.shape[-1] < tok.min_samples:
            reason = (f"ValueError: {path} is {clip.shape[-1]} samples at {rate} Hz, shorter than the "
                      f"{tok.min_samples} samples {tok.name or tok.family} encodes")
            if strict:
                raise ValueError(reason.split(": ", 1)[1])
            skipped.append({"index": index, "file": str(path), "reason": reason})
            continue
        clips[index] = clip
    shard = [(index, path) for index, path in shard if index in clips]
    paths = dict(shard)
    usage, usage_reason = _codebook_state(tok, device)
    records, written = [], 0
    si_sdr, mel_distance, stft_distance = (METRICS.get(name) for name in ("si_sdr", "mel_distance", "stft_distance"))
    for group in _progress(accelerator, _audio_groups(shard, clips, batch_size), progress,
                           f"eval {tok.name or tok.family}"):
        x = torch.cat([clips[i] for i in group]).to(device)
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + group[0])
        with torch.inference_mode():
            tokens = tok.encode(x, sample_rate=rate, **encode_kwargs)
            y = tok.decode(tokens, **_decode_kwargs(tok, generator, decode_kwargs)).float()
            if usage is not None:
                usage.update(tokens)
        y = y[..., : x.shape[-1]]
        if y.shape[-1] < x.shape[-1]:
            y = torch.nn.functional.pad(y, (0, x.shape[-1] - y.shape[-1]))
        x, y = x.float().cpu(), y.cpu()
        for j, index in enumerate(group):
            ref, est = x[j], y[j]
            record = {"index": index, "file": str(paths[index]), "seconds": ref.shape[-1] / rate}
            record["si_sdr"] = float(si_sdr(ref, est, rate))
            _score_clip("mel_distance", lambda: float(mel_distance(ref, est, rate)[0]), record)
            _score_clip("stft_distance", lambda: float(stft_distance(ref, est, rate)[0]), record)
            _score_clip("stoi", lambda: stoi(ref, est, rate), record)
            _score_clip("pesq", lambda: pesq(ref, est, rate, mode=pesq_mode), record)
            if "distillmos" in audio_extras:
                _score_clip("distillmos", lambda: quality.distillmos(est, rate), record)
            if "visqol" in audio_extras:
                _score_clip("visqol", lambda: quality.visqol(ref, est, rate), record)
            records.append(record)
            if accelerator.is_main_process and written < num_examples:
                stem = f"{written:02d}_{Path(paths[index]).stem}"
                write_audio(ref, out_dir / "examples" / f"{stem}_original.wav", rate)
                write_audio(est, out_dir / "examples" / f"{stem}_reconstruction.wav", rate)
                write_spectrogram_png(ref, est, rate, out_dir / "examples" / f"{stem}_spectrogram.png")
                written += 1
    records = sorted(_gather(accelerator, records), key=lambda r: r["index"])
    metrics: dict[str, Any] = {}
    protocols = {
        "stoi": {"package": "pystoi", "extended": False, "sample_rate": rate},
        "pesq": {"package": "pesq (ITU-T P.862)", "mode": pesq_mode, "sample_rate": PESQ_RATES[pesq_mode],
                 "resampler": "torchaudio.functional.resample"},
        "mel_distance": {"definition": "DAC mel loss: sum over 7 scales of L1(log10 mel)", "sample_rate": rate},
        "stft_distance": {"definition": "Parallel WaveGAN multi-resolution STFT (SC + log-mag L1)"},
        "si_sdr": {"unit": "dB"},
        "distillmos": {"package": "distillmos", "reference": "none", "sample_rate": 16000},
        "visqol": {"package": "visqol-python", "mode": "speech", "mapper": quality.visqol_mapper(),
                   "sample_rate": 16000},
    }
    for name in ("stoi", "pesq", "mel_distance", "stft_distance", "si_sdr", *audio_extras):
        why = Counter(r[f"{name}_skipped"] for r in records if f"{name}_skipped" in r)
        metrics[name] = {**_summary([r.get(name) for r in records], why), "protocol": protocols[name]}
    if usage is not None:
        usage.reduce(_sum_across(accelerator))
        summary = usage.compute()
        metrics["usage"] = {"value": summary.pop("usage"), **summary}
    else:
        metrics["usage"] = _unavailable(usage_reason)
    return metrics, records
