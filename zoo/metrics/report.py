"""Human-readable outputs of an evaluation: the markdown table and spectrogram pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

__all__ = ["markdown_table", "spectrogram_image", "write_markdown", "write_spectrogram_png"]

# A dark-to-bright colour ramp (black, purple, red, orange, pale yellow) for spectrograms.
_RAMP = torch.tensor(
    [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=torch.float32
)


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _note(entry: dict[str, Any]) -> str:
    if entry.get("value") is None:
        return f"skipped: {entry.get('skipped', 'unknown reason')}"
    parts = []
    if "n" in entry:
        parts.append(f"n={entry['n']}")
    if "std" in entry:
        parts.append(f"std={_format(entry['std'])}")
    protocol = entry.get("protocol", {})
    for key in ("extractor", "n_real", "alpha", "delta", "seed", "change_rate", "mode", "net"):
        if key in protocol:
            parts.append(f"{key}={_format(protocol[key])}")
    if "perplexity" in entry:
        parts.append(f"perplexity={_format(entry['perplexity'])}")
    if entry.get("skipped_items"):
        parts.append("some items skipped: " + "; ".join(f"{n}x {why}" for why, n in entry["skipped_items"].items()))
    return ", ".join(parts)


def markdown_table(report: dict[str, Any], lower_is_better: Iterable[str] = ()) -> str:
    """A markdown page: the run header and one row per metric (value, direction, notes or skip reason)."""
    lower = set(lower_is_better)
    lines = [
        f"# Reconstruction metrics: {report.get('model')}",
        "",
        f"- data: `{report.get('data')}` ({report.get('num_items')} items, {report.get('modality')}"
        + (f"; {report['num_skipped']} unreadable files skipped, listed in metrics.json" if report.get("num_skipped")
           else "") + ")",
        f"- weights: {report.get('weights')}; processes: {report.get('num_processes')}; seed: {report.get('seed')}",
        "",
        "| metric | value | better | notes |",
        "|---|---|---|---|",
    ]
    for name, entry in report.get("metrics", {}).items():
        better = "lower" if name in lower else "higher"
        notes = _note(entry).replace("|", "\\|")
        lines.append(f"| {name} | {_format(entry.get('value'))} | {better} | {notes} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: str | Path, lower_is_better: Iterable[str] = ()) -> Path:
    from zoo.atomic import atomic_write_text

    return atomic_write_text(Path(path), markdown_table(report, lower_is_better))


def _magnitude(wav: torch.Tensor, n_fft: int) -> torch.Tensor:
    wav = wav.reshape(-1).float().cpu()
    if wav.numel() < n_fft:
        wav = torch.nn.functional.pad(wav, (0, n_fft - wav.numel()))
    return torch.stft(wav, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()


def spectrogram_image(magnitude: torch.Tensor, peak: float, floor_db: float = -80.0) -> torch.Tensor:
    """Colour a magnitude spectrogram `[F, frames]` as uint8 `[F, frames, 3]`, low frequencies at the bottom.

    Levels are dB relative to `peak`, clipped at `floor_db`.
    """
    db = 20 * torch.log10(magnitude.clamp(min=1e-10) / max(peak, 1e-10))
    level = ((db - floor_db) / -floor_db).clamp(0, 1).flip(0)
    position = level * (len(_RAMP) - 1)
    low = position.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (position - low).unsqueeze(-1)
    rgb = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac
    return rgb.round().to(torch.uint8)


def write_spectrogram_png(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int,
                          path: str | Path) -> Path:
    """PNG with the reference spectrogram above the estimate's, both in dB against the reference's peak."""
    from PIL import Image

    n_fft = 1024 if sample_rate >= 16000 else 512
    ref, est = _magnitude(reference, n_fft), _magnitude(estimate, n_fft)
    peak = float(ref.max())
    width = max(ref.shape[1], est.shape[1])
    rows = [torch.nn.functional.pad(spectrogram_image(m, peak), (0, 0, 0, width - m.shape[1])) for m in (ref, est)]
    divider = torch.full((4, width, 3), 255, dtype=torch.uint8)
    from zoo.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(torch.cat([rows[0], divider, rows[1]]).numpy()).save(tmp, format="PNG")
    return path
