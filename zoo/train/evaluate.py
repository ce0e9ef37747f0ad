"""Validation during training: reconstruction metrics over the validation set and sample files in the run dir.

Each process encodes and decodes its share of the set (`encode` -> `decode`, the path users run), per-item metric
values are gathered with `gather_for_metrics` (padding duplicates dropped) and averaged on every process. The main
process writes the first `num_samples` inputs and reconstructions as a PNG grid (images) or WAV files (audio).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.metrics.codebook import CodebookUsage
from zoo.metrics.table import DEFAULT_METRICS, metrics_for
from zoo.train.objectives.base import split_batch
from zoo.train.objectives.reconstruction import align_signals

__all__ = ["DEFAULT_METRICS", "metric_functions", "validate", "write_samples"]


def metric_functions(modality: str, names: list[str] | tuple[str, ...] | None = None) -> dict[str, Callable]:
    """The per-item metric functions `fn(reference, estimate, sample_rate) -> [B]` for a modality, from the table of
    `zoo.metrics.table` (its defaults, `DEFAULT_METRICS`, when `names` is empty or None)."""
    table = metrics_for(modality)
    names = list(names) if names else list(DEFAULT_METRICS.get(modality, ()))
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"eval.metrics {unknown} are not available for {modality} models; choose from {sorted(table)}")
    return {n: table[n] for n in names}


def write_samples(directory: Path, step: int, inputs: torch.Tensor, outputs: torch.Tensor, modality: str,
                  sample_rate: int | None = None) -> list[Path]:
    """Images: one PNG grid (inputs on the top row, reconstructions below). Audio: `NN_input.wav`/`NN_recon.wav`."""
    from zoo.atomic import atomic_path

    directory.mkdir(parents=True, exist_ok=True)
    if modality == "audio":
        import soundfile

        folder = directory / f"step_{step:08d}"
        folder.mkdir(exist_ok=True)
        paths = []
        for i, (x, y) in enumerate(zip(inputs, outputs)):
            for tag, wav in (("input", x), ("recon", y)):
                path = folder / f"{i:02d}_{tag}.wav"
                with atomic_path(path) as tmp:
                    soundfile.write(str(tmp), wav.reshape(-1).clamp(-1, 1).float().cpu().numpy(), sample_rate,
                                    subtype="PCM_16", format="WAV")
                paths.append(path)
        return paths
    from torchvision.utils import save_image

    path = directory / f"step_{step:08d}.png"
    grid = torch.cat([inputs, outputs]).clamp(0, 1).float().cpu()
    with atomic_path(path) as tmp:
        save_image(grid, tmp, nrow=inputs.shape[0], padding=2, format="PNG")
    return [path]


@torch.no_grad()
def validate(
    accelerator: Any,
    model: torch.nn.Module,
    loader: Any,
    *,
    step: int,
    metrics: list[str] | None = None,
    num_samples: int = 8,
    sample_dir: Path | None = None,
) -> dict[str, float]:
    """Mean metrics over the validation loader; writes samples on the main process.

    Args:
        accelerator: the run's `Accelerator`.
        model: the bare tokenizer (not the DDP wrapper), already in eval mode and carrying the weights to score.
        loader: the prepared validation loader.
        step: the optimiser step, for file names.
        metrics: per-item metric names (see `metric_functions`); the modality's defaults when empty.
        num_samples: inputs/reconstructions written to `sample_dir` (0: none).
        sample_dir: where sample files go.
    """
    modality = getattr(model, "modality", "image")
    sample_rate = getattr(model, "sample_rate", None)
    functions = metric_functions(modality, metrics)
    try:
        usage = CodebookUsage(model.codebooks, device=accelerator.device)
    except NotImplementedError:  # a model without codebooks
        usage = None
    values: dict[str, list[torch.Tensor]] = {}
    kept_in, kept_out = [], []
    for batch in loader:
        x, _ = split_batch(batch)
        x = x.float()
        tokens = model.encode(x)
        y = model.decode(tokens).float()
        if modality != "audio":
            y = y.clamp(0, 1)
        y, ref = align_signals(y, x)
        if usage is not None:
            usage.update(tokens)
        diff = (y - ref).flatten(1)
        items = {"l1": diff.abs().mean(1), "mse": diff.pow(2).mean(1)}
        for name, fn in functions.items():
            try:
                items[name] = fn(ref, y, sample_rate)
            except (RuntimeError, ValueError) as err:
                raise ValueError(
                    f"validation metric {name!r} failed on items of shape {tuple(ref.shape)}: {err}. Use longer or "
                    f"larger validation items, or choose other eval.metrics"
                ) from err
        stacked = torch.stack([items[n].double().reshape(-1) for n in items], dim=1)
        gathered = accelerator.gather_for_metrics(stacked)
        for column, name in enumerate(items):
            values.setdefault(name, []).append(gathered[:, column].cpu())
        if accelerator.is_main_process and sum(len(t) for t in kept_in) < num_samples:
            take = num_samples - sum(len(t) for t in kept_in)
            kept_in.append(ref[:take].cpu())
            kept_out.append(y[:take].cpu())
    if not values:
        raise ValueError("the validation set yielded no batches; check data.val and eval.batch_size")
    results = {name: float(torch.cat(chunks).mean()) for name, chunks in values.items()}
    results["num_items"] = float(sum(len(c) for c in values["l1"]))
    if usage is not None:
        summary = usage.reduce(lambda t: accelerator.reduce(t, reduction="sum")).compute()
        results["codebook_usage"] = summary["usage"]
        results["codebook_perplexity"] = summary["perplexity"]
    if accelerator.is_main_process and sample_dir is not None and kept_in:
        write_samples(sample_dir, step, torch.cat(kept_in), torch.cat(kept_out), modality, sample_rate)
    return results
