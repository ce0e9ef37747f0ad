"""Audio folders: every sound file under a folder (recursively), as mono [T] float tensors in [-1, 1].

Files are decoded by `zoo.io.load_audio`, the one audio reader of zoo (PCM 8/16/24/32-bit, float, any channel count,
sample-rate bounds, the full-scale rule for float files) and resampled by `zoo.io.resample`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from zoo.data.common import SeededDataset, TarMember, open_item
from zoo.data.factory import register_dataset
from zoo.data.transforms import fit_length, peak_normalize, random_segment
from zoo.io import AUDIO_EXTENSIONS, resample
from zoo.io import load_audio as _decode_audio

__all__ = ["AUDIO_EXTENSIONS", "AudioFolder", "load_audio", "resample"]


def load_audio(item: str | Path | TarMember | BinaryIO, sample_rate: int | None = None, start: float = 0.0,
               seconds: float | None = None, over_full_scale: str = "error") -> tuple[torch.Tensor, int]:
    """Read (part of) a file as mono float32 [T] (`zoo.io.load_audio`), resampled to `sample_rate` when given.

    `item` is a path, a tar member or an open binary file. `start`/`seconds` select a window in seconds; only
    those frames are read from disk. `over_full_scale`: see `zoo.io.FULL_SCALE_POLICIES`.
    """
    import soundfile as sf

    src = item if hasattr(item, "read") else open_item(item)
    first, frames = 0, -1
    if start or seconds is not None:
        info = sf.info(src)
        if hasattr(src, "seek"):
            src.seek(0)
        first = round(start * info.samplerate)
        frames = -1 if seconds is None else math.ceil(seconds * info.samplerate)
    wav, sr = _decode_audio(src, start=first, frames=frames, over_full_scale=over_full_scale)
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


@register_dataset("audio_folder", path_arg="root")
class AudioFolder(SeededDataset):
    """Sound files under `root` (recursive), decoded with soundfile, resampled, cut and gain-normalised.

    Args:
        root: folder to search (ignored when `files` is given).
        sample_rate: output rate; files at other rates are resampled with torchaudio.
        num_samples: segment length in output samples; None returns whole files (variable length: batch them
            with a padding collate or batch_size=1).
        random_segment: random window (training); False takes the first `num_samples` (evaluation, WavTokenizer).
        pad: how clips shorter than `num_samples` are extended: "repeat" (WavTokenizer / Vocos) or "zeros".
        gain_db: peak normalisation target in dBFS: a (lo, hi) range drawn per item (WavTokenizer trains at
            U(-6, -1) dB), a number (its validation uses -3), or None to keep the file's level.
        recursive: search sub-folders.
        extensions: file suffixes to keep.
        seed: base seed; item i's window and gain depend only on (seed, rank, epoch, i).
        rank: process rank (default: env RANK or 0).
        skip_unreadable: skip and count files that fail to decode instead of raising (see `SeededDataset`).
        files: explicit list of paths or tar members instead of a folder.
        over_full_scale: float files above full scale with `gain_db=None`: "error" (the file is unreadable),
            "normalize" or "clip" (`zoo.io.FULL_SCALE_POLICIES`). With a `gain_db` the level is set anyway, so they
            are normalised.

    Items are float tensors [num_samples] (or [T]) in [-1, 1].
    """

    def __init__(
        self,
        root: str | Path | None = None,
        sample_rate: int = 24000,
        num_samples: int | None = 72000,
        random_segment: bool = True,
        pad: str = "repeat",
        gain_db: float | Sequence[float] | None = (-6.0, -1.0),
        recursive: bool = True,
        extensions: Sequence[str] = AUDIO_EXTENSIONS,
        seed: int = 0,
        rank: int | None = None,
        skip_unreadable: bool = False,
        files: Sequence[Any] | None = None,
        over_full_scale: str = "error",
    ) -> None:
        from zoo.checks import check_sample_rate
        from zoo.io import FULL_SCALE_POLICIES

        super().__init__(seed=seed, rank=rank, skip_unreadable=skip_unreadable)
        sample_rate = check_sample_rate(sample_rate)
        if over_full_scale not in FULL_SCALE_POLICIES:
            raise ValueError(f"over_full_scale must be one of {FULL_SCALE_POLICIES}, got {over_full_scale!r}")
        self.over_full_scale = over_full_scale if gain_db is None else "normalize"
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be positive or None, got {num_samples}")
        if pad not in ("repeat", "zeros"):
            raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")
        if gain_db is not None and not isinstance(gain_db, (int, float)):
            gain_db = tuple(float(v) for v in gain_db)
            if len(gain_db) != 2 or gain_db[0] > gain_db[1]:
                raise ValueError(f"gain_db range must be (lo, hi) with lo <= hi, got {gain_db}")
        self.sample_rate, self.num_samples, self.random_segment = int(sample_rate), num_samples, random_segment
        self.pad, self.gain_db = pad, gain_db
        self._set_items(root, files, extensions, recursive)

    def load(self, item: Any, generator: torch.Generator) -> torch.Tensor:
        if self.gain_db is None:
            return self._load(item, generator)
        with warnings.catch_warnings():  # the gain is set below anyway: normalising a hot file is not news
            warnings.filterwarnings("ignore", message=".*above full scale; scaled by", category=UserWarning)
            return self._load(item, generator)

    def _load(self, item: Any, generator: torch.Generator) -> torch.Tensor:
        import soundfile as sf

        if self.num_samples is None:
            wav, _ = load_audio(item, self.sample_rate, over_full_scale=self.over_full_scale)
        else:
            src = open_item(item)
            info = sf.info(src)
            if info.frames <= 0:
                raise ValueError("the file holds no audio frames")
            # the window in the file's own rate, a few samples longer so that resampling cannot fall short
            native = math.ceil(self.num_samples * info.samplerate / self.sample_rate) + 8
            first = random_segment(info.frames, native, generator if self.random_segment else None)
            if hasattr(src, "seek"):
                src.seek(0)
            wav, _ = load_audio(src, self.sample_rate, first / info.samplerate, native / info.samplerate,
                                over_full_scale=self.over_full_scale)
            wav = fit_length(wav, self.num_samples, self.pad)
        if isinstance(self.gain_db, tuple):
            lo, hi = self.gain_db
            wav = peak_normalize(wav, lo + (hi - lo) * float(torch.rand((), generator=generator)))
        elif self.gain_db is not None:
            wav = peak_normalize(wav, float(self.gain_db))
        return wav.clamp_(-1.0, 1.0)

    def __repr__(self) -> str:
        return (f"AudioFolder({len(self)} files, sample_rate={self.sample_rate}, num_samples={self.num_samples}, "
                f"seed={self.seed}, rank={self.rank})")
