"""Read and write images and audio in the tokenizers' conventions.

Images: `read_image` -> float `[1, 3, H, W]` RGB in [0, 1] (optionally resized and center-cropped to a tokenizer's
size with PIL on uint8, as official preprocessing does); `write_image` clamps to [0, 1] and writes 8-bit.
Audio: `read_audio` -> float `[1, T]` mono in [-1, 1] plus its sample rate (soundfile: WAV, FLAC, OGG, any rate);
`write_audio` clamps to [-1, 1] and writes 16-bit PCM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
RESIZE_MODES = ("crop", "stretch", "none")


def _size_pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        pair = (size, size)
    else:
        pair = tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def modality_of(path: str | Path) -> str | None:
    """`"image"`, `"audio"` or None, from the file extension."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    return None


def read_image(path: str | Path, size: int | tuple[int, int] | None = None, mode: str = "crop") -> torch.Tensor:
    """Load an image file as float `[1, 3, H, W]` RGB in [0, 1].

    Args:
        path: PNG, JPEG, BMP, WebP or TIFF file (alpha is dropped, greyscale expanded to RGB).
        size: target `(height, width)` or an int for a square; None keeps the file's size.
        mode: with a size, `"crop"` resizes the shorter side (bicubic) and center-crops, `"stretch"` resizes to the
            exact size ignoring the aspect ratio, `"none"` requires the file to have that size already.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    try:
        with Image.open(path) as handle:
            img = handle.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # PIL: UnidentifiedImageError (an OSError), truncated files
        raise ValueError(f"cannot read {path} as an image ({type(err).__name__}: {err})") from None
    if size is not None:
        h, w = _size_pair(size)
        if mode == "stretch":
            img = img.resize((w, h), Image.BICUBIC)
        elif mode == "crop":
            scale = max(h / img.height, w / img.width)
            new_w, new_h = max(w, round(img.width * scale)), max(h, round(img.height * scale))
            if (new_w, new_h) != img.size:
                img = img.resize((new_w, new_h), Image.BICUBIC)
            left, top = (new_w - w) // 2, (new_h - h) // 2
            img = img.crop((left, top, left + w, top + h))
        elif img.size != (w, h):
            raise ValueError(f"{path} is {img.height}x{img.width}, expected {h}x{w}; use mode='crop' to resize")
    array = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0


def write_image(x: torch.Tensor, path: str | Path) -> Path:
    """Write one image `[3, H, W]` or `[1, 3, H, W]` (float, [0, 1] convention, clamped) to PNG/JPEG/... by suffix."""
    from PIL import Image

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"write_image expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"write_image writes one image; got a batch of {x.shape[0]} (index it first)")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"write_image expects [3, H, W] or [1, 3, H, W], got shape {tuple(x.shape)}")
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"image output {path} must end in one of {', '.join(IMAGE_EXTENSIONS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Load an audio file as float `[1, T]` mono in [-1, 1] and its sample rate (channels are averaged)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read {path} as audio ({type(err).__name__}: {err})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path} contains no audio samples")
    wav = torch.from_numpy(data.mean(axis=1))[None]
    return wav.clamp(-1, 1), int(rate)


def write_audio(x: torch.Tensor, path: str | Path, sample_rate: int) -> Path:
    """Write mono audio `[T]` or `[1, T]` (float, clamped to [-1, 1]) as 16-bit PCM (WAV/FLAC/OGG by suffix)."""
    import soundfile as sf

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"write_audio expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() == 2:
        if x.shape[0] != 1:
            raise ValueError(f"write_audio writes one clip; got a batch of {x.shape[0]} (index it first)")
        x = x[0]
    if x.dim() != 1:
        raise ValueError(f"write_audio expects [T] or [1, T], got shape {tuple(x.shape)}")
    path = Path(path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise ValueError(f"audio output {path} must end in one of {', '.join(AUDIO_EXTENSIONS)}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = x.detach().float().cpu().clamp(-1, 1).numpy()
    subtype = "VORBIS" if path.suffix.lower() == ".ogg" else "PCM_16"
    sf.write(str(path), data, sample_rate, subtype=subtype)
    return path


def find_files(root: str | Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under `root` (recursively) whose suffix is in `extensions`, sorted; `root` itself if it is a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no file or folder at {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
