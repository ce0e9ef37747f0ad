"""The small files bundled in the package (`zoo/data/samples/`), for demos, docs and tests. See its README.md."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["SAMPLES_DIR", "sample_audio", "sample_image", "sample_path"]

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def sample_path(name: str) -> Path:
    """Path of a bundled sample ("photo.png", "speech.wav")."""
    path = SAMPLES_DIR / name
    if not path.is_file():
        have = sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix != ".md") if SAMPLES_DIR.is_dir() else []
        raise FileNotFoundError(f"no bundled sample {name!r} in {SAMPLES_DIR}; available: {have}")
    return path


def sample_image(image_size: int | None = None) -> torch.Tensor:
    """The bundled 256x256 photo as [1, 3, H, W] in [0, 1], resized (antialiased bicubic) to `image_size`."""
    from zoo.data.image import load_image
    from zoo.data.transforms import crop_image, to_tensor

    image = load_image(sample_path("photo.png"))
    if image_size is not None and image_size != image.width:
        image = crop_image(image, image_size, "center")
    return to_tensor(image).unsqueeze(0)


def sample_audio(sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """The bundled speech clip as ([1, T] in [-1, 1], sample_rate), resampled when `sample_rate` is given."""
    from zoo.data.audio import load_audio

    wav, sr = load_audio(sample_path("speech.wav"), sample_rate)
    return wav.unsqueeze(0), sr
