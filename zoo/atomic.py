"""Atomic file writes: a file zoo writes is either absent, the previous version, or complete — never partial.

    with atomic_path("out/tokens.safetensors") as tmp:     # a hidden temporary name in the same folder
        save_file(tensors, str(tmp))                       # write it any way you like
    # on success: flushed to disk (fsync), renamed over the target, folder entry synced; on error: removed

    atomic_write_text("metrics.json", text)
    atomic_write_bytes("shard-000001.tar", data)

The temporary file lives in the target's folder (a rename never crosses file systems) and keeps the target's
suffix, so libraries that pick a format by extension (PIL, soundfile, safetensors) write the right one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TMP_PREFIX", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]

TMP_PREFIX = ".zoo-tmp-"


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block ends without an exception.

    Args:
        path: the final file.
        durable: fsync the file and its folder before and after the rename (the rename itself is atomic either
            way; `durable` also survives a power cut).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_text(text)
    return Path(path)
