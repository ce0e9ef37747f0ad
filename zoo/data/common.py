"""What every file-backed dataset shares: file listing, seeded per-item randomness, unreadable-file handling."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch.utils.data import Dataset

__all__ = [
    "SeededDataset", "TarMember", "UnreadableFileError", "default_rank", "item_seed", "list_files", "list_tar_members",
    "open_item",
]


class UnreadableFileError(RuntimeError):
    """A data file could not be decoded; the message names the file."""


@dataclass(frozen=True)
class TarMember:
    """One file stored uncompressed inside a tar shard: read by seeking, no extraction."""

    shard: str
    offset: int
    size: int
    name: str

    def __str__(self) -> str:
        return f"{self.shard}::{self.name}"


def open_item(item: str | Path | TarMember) -> BinaryIO | str:
    """A path (decoders open it themselves) or an in-memory copy of a tar member."""
    if isinstance(item, TarMember):
        with open(item.shard, "rb") as f:
            f.seek(item.offset)
            return io.BytesIO(f.read(item.size))
    return str(item)


def list_files(root: str | Path, extensions: Sequence[str], recursive: bool = True) -> list[str]:
    """Sorted files under `root` whose suffix (case-insensitive) is in `extensions`; hidden entries skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist or is not a folder")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    out = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out += [os.path.join(dirpath, f) for f in filenames
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
    else:
        out = [str(p) for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
               and p.suffix.lower() in exts]
    if not out:
        raise FileNotFoundError(f"no {sorted(exts)} files under {str(root)!r} (recursive={recursive})")
    return sorted(out)


def list_tar_members(shards: str | Path | Sequence[str | Path], extensions: Sequence[str]) -> list[TarMember]:
    """Index the members of uncompressed tar shards (a path, a glob pattern, a folder of .tar files, or a list)."""
    import glob

    patterns = [shards] if isinstance(shards, (str, Path)) else list(shards)
    paths: list[str] = []
    for p in patterns:
        p = os.path.expanduser(str(p))
        if os.path.isdir(p):
            paths += sorted(glob.glob(os.path.join(p, "*.tar")))
        elif any(c in p for c in "*?["):
            paths += sorted(glob.glob(p))
        else:
            if not os.path.exists(p):
                raise FileNotFoundError(f"tar shard {p!r} does not exist")
            paths.append(p)
    if not paths:
        raise FileNotFoundError(f"no tar shards match {patterns}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    members = []
    for path in paths:
        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    if m.isfile() and os.path.splitext(m.name)[1].lower() in exts:
                        members.append(TarMember(path, m.offset_data, m.size, m.name))
        except tarfile.ReadError as e:
            raise UnreadableFileError(
                f"cannot index tar shard {path!r}: {e}. Shards must be plain uncompressed .tar files (random access "
                f"by offset); recompress with `tar -cf`, or write them with zoo.data.write_tar_shards"
            ) from e
    if not members:
        raise FileNotFoundError(f"no {sorted(exts)} members in tar shards {paths[:3]}{'...' if len(paths) > 3 else ''}")
    return members


def item_seed(seed: int, rank: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends on all four numbers and on nothing else (no process or worker state)."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def default_rank() -> int:
    """This process's rank as torchrun / accelerate export it (`RANK`), else 0."""
    return int(os.environ.get("RANK", "0"))


class SeededDataset(Dataset):
    """Map-style dataset whose random augmentation of item i is a pure function of (seed, rank, epoch, i).

    That makes every item reproducible whatever the number of DataLoader workers, exact on resume, and different
    across ranks and epochs. Call `set_epoch(e)` at the start of each epoch (before the DataLoader forks workers).

    Subclasses set `self.items` (paths or tar members) and implement `load(item, generator) -> Tensor`, raising
    any exception for a file that cannot be decoded. Such a file raises `UnreadableFileError` naming it, or, with
    `skip_unreadable=True`, is skipped (the next item is returned instead) and counted in `num_skipped`.
    """

    def __init__(self, seed: int = 0, rank: int | None = None, skip_unreadable: bool = False) -> None:
        self.seed = int(seed)
        self.rank = default_rank() if rank is None else int(rank)
        self.epoch = 0
        self.skip_unreadable = skip_unreadable
        self.skipped: dict[str, str] = {}
        self.items: list[Any] = []

    def _set_items(
        self, root: str | Path | None, files: Sequence[Any] | None, extensions: Sequence[str], recursive: bool
    ) -> None:
        """`self.items` for a folder dataset: `files` as given, else the `extensions` files under `root`."""
        if files is not None:
            self.items = list(files)
        elif root is None:
            raise ValueError(f"{type(self).__name__} needs a root folder (or files=[...])")
        else:
            self.items = list_files(root, extensions, recursive)

    @property
    def num_skipped(self) -> int:
        """Unreadable files skipped so far in this process (each DataLoader worker counts its own)."""
        return len(self.skipped)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(item_seed(self.seed, self.rank, self.epoch, index))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, item: Any, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        index %= n
        for attempt in range(n):
            i = (index + attempt) % n
            item = self.items[i]
            if str(item) in self.skipped:
                continue
            try:
                return self.load(item, self.generator(index))
            except Exception as e:  # any decoder error; the file is named either way
                if isinstance(e, (KeyboardInterrupt, MemoryError)):
                    raise
                msg = f"cannot read {item}: {type(e).__name__}: {e}"
                if not self.skip_unreadable:
                    raise UnreadableFileError(
                        f"{msg}. Fix or remove the file, or pass skip_unreadable=True to skip unreadable files "
                        f"(they are counted in dataset.num_skipped)"
                    ) from e
                self.skipped[str(item)] = msg
                warnings.warn(f"skipping unreadable file ({self.num_skipped} so far): {msg}", stacklevel=2)
        raise UnreadableFileError(f"every one of the {n} files is unreadable; first: {next(iter(self.skipped.values()))}")

    def scan(self) -> dict[str, str]:
        """Try to load every item once; return {file: error} for those that fail (does not change `skipped`)."""
        bad = {}
        for item in self.items:
            try:
                self.load(item, self.generator(0))
            except Exception as e:  # noqa: BLE001 - reported, not handled
                bad[str(item)] = f"{type(e).__name__}: {e}"
        return bad
