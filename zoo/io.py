"""The one image reader and the one audio reader of zoo (CLI, datasets, evaluation, tokenize), and the writers.

Images: `open_image` decodes any common picture to an 8-bit RGB PIL image with its EXIF orientation applied;
`read_image` -> float `[1, 3, H, W]` RGB in [0, 1] (optionally resized and center-cropped to a tokenizer's size with
PIL on uint8, as official preprocessing does); `write_image` clamps to [0, 1] and writes 8-bit.

    mode (PIL)             what the reader does
    RGB, L, 1, YCbCr, HSV  converted to RGB
    I;16* (16-bit grey)    v / 257 rounded to 8 bits (16-bit PNG / TIFF)
    I (32-bit integer)     16-bit PNGs as above; other 32-bit integer pictures are refused by name
    F (32-bit float)       values in [0, 1] scaled to 8 bits; other ranges are refused with the range found
    16-bit RGB(A) PNG      PIL keeps the high byte of each sample (an exact v / 257 up to rounding)
    P / PA (palette)       expanded through the palette (its transparency becomes alpha)
    RGBA, LA, PA, RGBa     alpha composited over `background` (white by default), not dropped
    CMYK                   PIL's CMYK -> RGB (embedded ICC profiles are not applied; Adobe CMYK JPEGs are
                           un-inverted by PIL's decoder)
    LAB and other modes    refused by name
    EXIF orientation       applied (a portrait photo stored sideways comes out upright)
    animations, pages      the first frame

Audio: `read_audio` -> float `[1, T]` mono in [-1, 1] plus its sample rate; `load_audio` the same as `[T]` for any
source (path, tar member, open file), optionally a window of it. Integer PCM (8-bit unsigned, 16, 24, 32-bit) is
scaled by libsndfile to [-1, 1); float files and lossy codecs are checked: NaN/Inf is refused, and a peak above
full scale (1.0, with a 1e-3 tolerance) follows `over_full_scale` (see `FULL_SCALE_POLICIES`). Channels are averaged
to mono. Sample rates outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] are refused before any sample is decoded.
`resample` changes the rate with bounded memory for any pair of rates; `write_audio` clamps to [-1, 1] and writes
16-bit PCM (WAV/FLAC) or Vorbis (OGG).

Every writer writes a temporary file beside the target and renames it (`zoo.atomic`): a reader, or a run killed
mid-write, sees the previous file or the complete new one, never a partial file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from zoo.atomic import TMP_PREFIX, atomic_path
from zoo.checks import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_sample_rate

__all__ = [
    "AUDIO_EXTENSIONS",
    "AUDIO_WRITE_EXTENSIONS",
    "FULL_SCALE_POLICIES",
    "IMAGE_EXTENSIONS",
    "IMAGE_WRITE_EXTENSIONS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "find_files",
    "load_audio",
    "modality_of",
    "open_image",
    "read_audio",
    "read_image",
    "resample",
    "write_audio",
    "write_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".gif")
IMAGE_WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
AUDIO_WRITE_EXTENSIONS = (".wav", ".flac", ".ogg")
RESIZE_MODES = ("crop", "stretch", "none")
WHITE = (255, 255, 255)

# What a float file above full scale does (a PCM integer file cannot exceed it):
#   "error"     (default) refuse the file, naming its peak, because clipping distorts the signal and rescaling
#               changes its level, which level-dependent metrics (mel distance, PESQ) and the user's pipeline see;
#               only the user knows which is right for their data.
#   "normalize" divide by the peak (a warning names the file and the gain).
#   "clip"      clamp to [-1, 1] (a warning names the file and the peak).
FULL_SCALE_POLICIES = ("error", "normalize", "clip")
FULL_SCALE_TOLERANCE = 1e-3
# torchaudio's windowed-sinc kernel holds new/g x (old/g + 2 * width) values for rates with gcd g; beyond this many
# (64 MiB of float32) the polyphase resampler of scipy runs instead (44101 -> 24000 Hz would need 4 GiB and minutes)
_SINC_KERNEL_LIMIT = 1 << 24


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


def _describe(source: Any) -> str:
    """How a source is named in messages: a path, `shard.tar::member`, or an open file's name."""
    if isinstance(source, (str, Path)):
        return str(source)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return str(name) if isinstance(name, (str, Path)) else "<stream>"
    return str(source)


def _source(source: Any) -> tuple[str | BinaryIO, str]:
    """(what the decoders open, its name). Tar members (`zoo.data.TarMember`) are read into memory."""
    name = _describe(source)
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no file at {path}")
        return str(path), name
    if hasattr(source, "read"):
        return source, name
    from zoo.data.common import open_item  # a TarMember

    return open_item(source), name


# -- images -----------------------------------------------------------------------------------------------------------


def _composite(image: Any, background: tuple[int, int, int]) -> Any:
    from PIL import Image

    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _from_array(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(array, mode="L").convert("RGB")


def _sixteen_bit(image: Any) -> bool:
    """Whether a mode-"I" picture holds 16-bit samples (PNG greyscale, or a TIFF with 16 bits per sample)."""
    if image.format == "PNG":
        return True
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, (tuple, list)):
        bits = bits[0] if bits else None
    return bits == 16


def _to_rgb8(image: Any, name: str, background: tuple[int, int, int]) -> Any:
    """Any PIL mode -> "RGB" (8 bits per channel), or a ValueError naming the file and the mode."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("L", "1", "YCbCr", "HSV", "RGBX"):
        return image.convert("RGB")
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.float64)
        return _from_array(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))
    if mode == "I":
        values = np.asarray(image)
        if _sixteen_bit(image) and (values.size == 0 or (values.min() >= 0 and values.max() <= 65535)):
            return _from_array(np.round(values.astype(np.float64) / 257.0).astype(np.uint8))
        raise ValueError(f"{name} has 32-bit integer pixels (PIL mode I), which have no agreed range; save it as an "
                         "8- or 16-bit image")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{name} has NaN or infinite float pixels")
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} has float pixels (PIL mode F) in [{lo:.4g}, {hi:.4g}]; zoo reads float images in "
                             "[0, 1]: rescale it, or save it as an 8- or 16-bit image")
        return _from_array(np.round(values * 255.0).astype(np.uint8))
    if mode == "P":
        if "transparency" in image.info:
            return _composite(image, background)
        return image.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        return _composite(image, background)
    if mode == "La":  # premultiplied grey + alpha: PIL converts it through LA only
        return _composite(image.convert("LA"), background)
    if mode == "CMYK":
        return image.convert("RGB")
    raise ValueError(f"{name}: pictures in colour mode {mode!r} are not supported (zoo reads RGB, greyscale, "
                     "palette, alpha, CMYK, 16-bit and float images); convert it to RGB first")


def open_image(source: str | Path | BinaryIO | Any, *, draft: float | Callable[[int, int], float] | None = None,
               background: tuple[int, int, int] = WHITE) -> Any:
    """Decode one picture to an 8-bit RGB `PIL.Image` with its EXIF orientation applied (see the module table).

    Args:
        source: a path, an open binary file, or a `zoo.data.TarMember`.
        draft: JPEGs may decode at 1/2, 1/4 or 1/8 scale (PIL `draft`, several times faster on large photos): the
            largest reduction not above this factor, or above `draft(width, height)` of the upright full-size
            picture when a callable (which may record the size it is given).
        background: RGB the alpha channel is composited over.

    Raises FileNotFoundError for a missing path and ValueError naming the file for anything that cannot be decoded.
    """
    from PIL import Image, ImageOps

    opened, name = _source(source)
    try:
        with Image.open(opened) as handle:
            orientation = handle.getexif().get(0x0112, 1) if hasattr(handle, "getexif") else 1
            width, height = handle.size
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if draft is not None:
                factor = draft(width, height) if callable(draft) else float(draft)
                if handle.format == "JPEG" and factor >= 2:
                    handle.draft(None, (math.ceil(handle.width / factor), math.ceil(handle.height / factor)))
            handle.load()
            image = ImageOps.exif_transpose(handle) if orientation not in (0, 1) else handle.copy()
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name} is too large to decode safely ({err}); raise PIL.Image.MAX_IMAGE_PIXELS if the "
                         "file is trusted") from None
    except (ValueError, TypeError) as err:
        if str(err).startswith(name):
            raise
        raise ValueError(f"cannot read {name} as an image ({type(err).__name__}: {err})") from None
    except Exception as err:  # PIL raises OSError, SyntaxError, EOFError, struct.error ... for damaged files
        if isinstance(err, MemoryError):
            raise
        raise ValueError(f"cannot read {name} as an image ({type(err).__name__}: {err})") from None
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{name} has no pixels ({image.width}x{image.height})")
    return _to_rgb8(image, name, background)


def read_image(path: str | Path | BinaryIO | Any, size: int | tuple[int, int] | None = None, mode: str = "crop",
               *, background: tuple[int, int, int] = WHITE) -> torch.Tensor:
    """Load an image file as float `[1, 3, H, W]` RGB in [0, 1] (decoded by `open_image`).

    Args:
        path: PNG, JPEG, BMP, WebP, TIFF, PPM or GIF file (or an open file / tar member).
        size: target `(height, width)` or an int for a square; None keeps the file's size.
        mode: with a size, `"crop"` resizes the shorter side (bicubic) and center-crops, `"stretch"` resizes to the
            exact size ignoring the aspect ratio, `"none"` requires the file to have that size already.
        background: RGB that transparent pixels are composited over.
    """
    from PIL import Image

    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    target = _size_pair(size) if size is not None else None
    img = open_image(path, background=background)
    if target is not None:
        h, w = target
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
            raise ValueError(f"{_describe(path)} is {img.height}x{img.width}, expected {h}x{w}; use mode='crop' to "
                             "resize")
    array = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0


def write_image(x: torch.Tensor, path: str | Path) -> Path:
    """Write one image `[3, H, W]` or `[1, 3, H, W]` (float, [0, 1] convention, clamped; NaN refused) to PNG/JPEG/...
    by suffix, atomically."""
    from PIL import Image

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"write_image expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"write_image writes one image; got a batch of {x.shape[0]} (index it first)")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"write_image expects [3, H, W] or [1, 3, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"write_image got an image with no pixels (shape {tuple(x.shape)})")
    path = Path(path)
    if path.suffix.lower() not in IMAGE_WRITE_EXTENSIONS:
        raise ValueError(f"image output {path} must end in one of {', '.join(IMAGE_WRITE_EXTENSIONS)}")
    values = x.detach().float().cpu()
    if values.is_complex() or not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"the image for {path} has {bad} NaN/Inf values (a diverged decoder?); not writing it")
    array = (values.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
    return path


# -- audio ------------------------------------------------------------------------------------------------------------


def _apply_full_scale(data: np.ndarray, name: str, subtype: str, policy: str) -> np.ndarray:
    if policy not in FULL_SCALE_POLICIES:
        raise ValueError(f"over_full_scale must be one of {FULL_SCALE_POLICIES}, got {policy!r}")
    if not np.isfinite(data).all():
        raise ValueError(f"{name} holds NaN or infinite samples ({subtype}); it cannot be read as audio")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak <= 1.0 + FULL_SCALE_TOLERANCE:
        return np.clip(data, -1.0, 1.0) if peak > 1.0 else data
    db = 20 * math.log10(peak)
    if policy == "error":
        raise ValueError(
            f"{name} is {subtype} audio with a peak of {peak:.4g} ({db:+.2f} dBFS), above full scale (1.0); zoo does "
            "not clip or rescale it silently. Read it with over_full_scale='normalize' (CLI: --over-full-scale "
            "normalize) to divide it by its peak, or 'clip' to clamp it to [-1, 1]"
        )
    if policy == "normalize":
        warnings.warn(f"{name}: peak {peak:.4g} ({db:+.2f} dBFS) above full scale; scaled by 1/{peak:.4g}",
                      stacklevel=3)
        return data / peak
    warnings.warn(f"{name}: peak {peak:.4g} ({db:+.2f} dBFS) above full scale; clipped to [-1, 1]", stacklevel=3)
    return np.clip(data, -1.0, 1.0)


def load_audio(source: str | Path | BinaryIO | Any, *, start: int = 0, frames: int = -1,
               over_full_scale: str = "error") -> tuple[torch.Tensor, int]:
    """Decode (a window of) an audio file to mono float32 `[T]` in [-1, 1] and its sample rate.

    Args:
        source: a path, an open binary file or a `zoo.data.TarMember` (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF).
        start, frames: the window in samples at the file's rate (`frames=-1`: to the end); only it is decoded.
        over_full_scale: what a float file whose peak exceeds 1.0 does: "error", "normalize" or "clip" (see
            `FULL_SCALE_POLICIES`).

    Raises FileNotFoundError for a missing path and ValueError naming the file for an unreadable file, a sample rate
    outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE], no samples, NaN/Inf samples or a peak above full scale.
    """
    import soundfile as sf

    if over_full_scale not in FULL_SCALE_POLICIES:
        raise ValueError(f"over_full_scale must be one of {FULL_SCALE_POLICIES}, got {over_full_scale!r}")
    opened, name = _source(source)
    try:
        info = sf.info(opened)
        if hasattr(opened, "seek"):
            opened.seek(0)
        check_sample_rate(int(info.samplerate), what=f"{name}'s sample rate")
        data, rate = sf.read(opened, start=int(start), frames=int(frames), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise
    except ValueError as err:
        if str(err).startswith(name):
            raise
        raise ValueError(f"cannot read {name} as audio (ValueError: {err})") from None
    except Exception as err:  # soundfile's LibsndfileError (a RuntimeError), TypeError for odd streams, OSError
        if isinstance(err, MemoryError):
            raise
        raise ValueError(f"cannot read {name} as audio ({type(err).__name__}: {err})") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"{name} contains no audio samples" + (f" from sample {start}" if start else ""))
    data = _apply_full_scale(data, name, str(info.subtype), over_full_scale)  # integer PCM always passes
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono)), int(rate)


def read_audio(path: str | Path | BinaryIO | Any, *, over_full_scale: str = "error") -> tuple[torch.Tensor, int]:
    """Load an audio file as float `[1, T]` mono in [-1, 1] and its sample rate (channels averaged); see
    `load_audio` for the formats and the checks."""
    wav, rate = load_audio(path, over_full_scale=over_full_scale)
    return wav[None], rate


def _sinc_kernel_size(orig: int, new: int) -> int:
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    width = math.ceil(6 * o / (min(o, n) * 0.99))
    return n * (o + 2 * width)


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last dim, in memory bounded for any pair of rates.

    torchaudio's windowed sinc (its defaults) wherever its kernel is small (every pair of common rates); otherwise
    (rates with a tiny common divisor, e.g. 44101 -> 24000 Hz) scipy's polyphase filter, whose memory grows with
    the rates, not with their product. Rates must lie in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE].
    """
    orig_rate = check_sample_rate(orig_rate, what="the source sample rate")
    new_rate = check_sample_rate(new_rate, what="the target sample rate")
    if orig_rate == new_rate:
        return wav
    if _sinc_kernel_size(orig_rate, new_rate) <= _SINC_KERNEL_LIMIT:
        import torchaudio.functional as AF

        dtype = wav.dtype if wav.dtype in (torch.float32, torch.float64) else torch.float32
        return AF.resample(wav.to(dtype), orig_rate, new_rate).to(wav.dtype if wav.is_floating_point() else dtype)
    from scipy.signal import resample_poly

    g = math.gcd(orig_rate, new_rate)
    array = wav.detach().to("cpu", torch.float64).numpy()
    out = resample_poly(array, new_rate // g, orig_rate // g, axis=-1)
    expected = math.ceil(wav.shape[-1] * new_rate / orig_rate)
    out = torch.from_numpy(np.ascontiguousarray(out[..., :expected]))
    return out.to(device=wav.device, dtype=wav.dtype if wav.is_floating_point() else torch.float32)


def write_audio(x: torch.Tensor, path: str | Path, sample_rate: int) -> Path:
    """Write mono audio `[T]`, `[1, T]` or `[1, 1, T]` (float, clamped to [-1, 1]; NaN refused) as 16-bit PCM
    (WAV/FLAC) or Vorbis (OGG) by suffix, atomically."""
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
    if x.shape[0] == 0:
        raise ValueError("write_audio got a clip with no samples")
    path = Path(path)
    if path.suffix.lower() not in AUDIO_WRITE_EXTENSIONS:
        raise ValueError(f"audio output {path} must end in one of {', '.join(AUDIO_WRITE_EXTENSIONS)}")
    sample_rate = check_sample_rate(sample_rate)
    values = x.detach().float().cpu()
    if not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"the audio for {path} has {bad} NaN/Inf samples (a diverged decoder?); not writing it")
    data = values.clamp(-1, 1).numpy()
    kind = path.suffix.lower()
    subtype = "VORBIS" if kind == ".ogg" else "PCM_16"
    file_format = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[kind]
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype=subtype, format=file_format)
    return path


def find_files(root: str | Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under `root` (recursively) whose suffix is in `extensions`, sorted; `root` itself if it is a file.
    Temporary files of interrupted zoo writers (`.zoo-tmp-*`) are never listed."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no file or folder at {root}")
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(TMP_PREFIX))
