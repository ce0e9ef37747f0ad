"""Weight sources: a bundled file in the package, a local path, or a hub repo+file (only when online).

Each `WeightsEntry` records where a file comes from, its sha256, licence, the recipe that made it and the docs section
with the exact commands (for ours) and the metrics it reached. Our own files are safetensors only; official pickled checkpoints are read
with `torch.load(weights_only=True)` by the converters.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "weights"


def zoo_home() -> Path:
    """Cache root: `$ZOO_HOME`, default `~/.cache/zoo`."""
    return Path(os.environ.get("ZOO_HOME", Path.home() / ".cache" / "zoo")).expanduser()


@dataclass
class Source:
    """Where one file can come from, tried in order: bundled file, local path, ZOO_HOME cache, hub."""

    file: str | None = None  # relative to zoo/data/weights (bundled in the package)
    path: str | None = None  # a local path (~ and $VARS expanded)
    hub: dict[str, str] | None = None  # {"repo": "org/name", "file": "ckpt.pt", "revision": optional}
    sha256: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Source | None":
        if data is None:
            return None
        unknown = set(data) - {"file", "path", "hub", "sha256"}
        if unknown:
            raise ValueError(f"unknown weight source keys {sorted(unknown)}; allowed: file, path, hub, sha256")
        return cls(**data)

    def describe(self) -> str:
        parts = []
        if self.file:
            parts.append(f"bundled zoo/data/weights/{self.file}")
        if self.path:
            parts.append(f"local {self.path}")
        if self.hub:
            parts.append(f"hub {self.hub['repo']}/{self.hub['file']}")
        return ", ".join(parts) or "no source"

    def cache_path(self) -> Path | None:
        if not self.hub:
            return None
        return zoo_home() / self.hub["repo"].replace("/", "--") / self.hub["file"]

    def resolve(self) -> Path:
        """Return a verified local file, or raise FileNotFoundError saying what was tried and where to put it."""
        tried = []
        candidates = []
        if self.file:
            candidates.append(BUNDLED_DIR / self.file)
        if self.path:
            candidates.append(Path(os.path.expandvars(self.path)).expanduser())
        cache = self.cache_path()
        if cache is not None:
            candidates.append(cache)
        for candidate in candidates:
            if candidate.exists():
                return self._verified(candidate)
            tried.append(str(candidate))
        if self.hub and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False"):
            try:
                return self._verified(self._download())
            except Exception as err:  # offline, missing repo, no huggingface_hub: all end in the same advice
                tried.append(f"hub {self.hub['repo']}/{self.hub['file']} ({type(err).__name__}: {err})"[:300])
        where = f"\n  put it at: {cache}" if cache is not None else ""
        raise FileNotFoundError(
            "weights file not found; tried:\n  " + "\n  ".join(tried) + where + "\n  or pass weights=PATH / set ZOO_HOME"
        )

    def _download(self) -> Path:
        from huggingface_hub import hf_hub_download

        cache = self.cache_path()
        assert cache is not None and self.hub is not None
        cache.parent.mkdir(parents=True, exist_ok=True)
        downloaded = hf_hub_download(
            self.hub["repo"], self.hub["file"], revision=self.hub.get("revision"), local_dir=str(cache.parent)
        )
        return Path(downloaded)

    def _verified(self, path: Path) -> Path:
        if self.sha256:
            actual = cached_sha256(path)
            if actual != self.sha256:
                raise ValueError(
                    f"sha256 mismatch for {path}: expected {self.sha256}, got {actual}; the file is corrupt or a "
                    "different release: delete it and fetch it again"
                )
        return path


@dataclass
class WeightsEntry:
    """One released set of weights for a registered variant."""

    tag: str
    format: str = "zoo"  # "zoo": our safetensors; "official": converted with zoo.from_official
    source: Source = field(default_factory=Source)
    official_config: Source | None = None  # companion config the official converter needs
    license: str | None = None
    recipe: str | None = None  # our recipe YAML that made it
    docs: str | None = None  # the docs section with how it was made (exact commands, history), e.g. "docs/x.md#..."
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str | None = None  # facts about the file itself (where to get it, its precision); never its history

    _KEYS = ("format", "file", "path", "hub", "sha256", "official_config", "license", "recipe", "docs", "metrics",
             "notes")

    @classmethod
    def from_dict(cls, tag: str, data: dict[str, Any]) -> "WeightsEntry":
        unknown = set(data) - set(cls._KEYS)
        if unknown:
            raise ValueError(f"weights entry {tag!r}: unknown keys {sorted(unknown)}; allowed: {list(cls._KEYS)}")
        if data.get("format", "zoo") not in ("zoo", "official"):
            raise ValueError(f"weights entry {tag!r}: format must be 'zoo' or 'official', got {data['format']!r}")
        source = Source(data.get("file"), data.get("path"), data.get("hub"), data.get("sha256"))
        return cls(
            tag=tag,
            format=data.get("format", "zoo"),
            source=source,
            official_config=Source.from_dict(data.get("official_config")),
            license=data.get("license"),
            recipe=data.get("recipe"),
            docs=data.get("docs"),
            metrics=dict(data.get("metrics") or {}),
            notes=data.get("notes"),
        )

    @property
    def bundled(self) -> bool:
        return bool(self.source.file) and (BUNDLED_DIR / self.source.file).exists()


_SHA_CACHE: dict[str, tuple[int, int, str]] = {}  # resolved path -> (size, mtime_ns, sha256), this process
_SHA_CACHE_FILE = "sha256-cache.json"  # the same, across processes, under zoo_home()


def _sha_cache_path() -> Path:
    return zoo_home() / _SHA_CACHE_FILE


def _read_sha_cache() -> dict[str, list]:
    import json

    try:
        data = json.loads(_sha_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_sha_cache(key: str, entry: tuple[int, int, str]) -> None:
    """Best effort (a read-only home only means hashing again next time); written atomically."""
    import json

    data = _read_sha_cache()
    data[key] = list(entry)
    from zoo.atomic import atomic_write_text

    try:
        atomic_write_text(_sha_cache_path(), json.dumps(data, indent=0, sort_keys=True), durable=False)
    except OSError:
        pass


def cached_sha256(path: str | Path) -> str:
    """`sha256_file`, computed once per file: remembered by resolved path, size and mtime (in this process and in
    `$ZOO_HOME/sha256-cache.json`), so a changed or replaced file is hashed again."""
    resolved = str(Path(path).resolve())
    stat = os.stat(resolved)
    key = (stat.st_size, stat.st_mtime_ns)
    for cache in (_SHA_CACHE, _read_sha_cache()):
        hit = cache.get(resolved)
        if hit is not None and (int(hit[0]), int(hit[1])) == key:
            _SHA_CACHE[resolved] = (key[0], key[1], str(hit[2]))
            return str(hit[2])
    digest = sha256_file(resolved)
    entry = (key[0], key[1], digest)
    _SHA_CACHE[resolved] = entry
    _write_sha_cache(resolved, entry)
    return digest


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_safetensors(path: str | Path) -> dict:
    """Our weight files: safetensors only (a folder written by `save_pretrained` is accepted too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: zoo weights are .safetensors files; an official release checkpoint goes through "
            "zoo.from_official(family, checkpoint)"
        )
    if not path.exists():
        raise FileNotFoundError(f"no weights file at {path}")
    return read_safetensors(path)


def read_safetensors(path: str | Path, device: str = "cpu") -> dict:
    """`safetensors.torch.load_file` with an error that names the file when it is truncated or corrupt."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except FileNotFoundError:
        raise
    except Exception as err:  # SafetensorError (header too large / incomplete / invalid JSON), OSError
        raise ValueError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); it is truncated "
                         "or corrupt: download or export it again") from None


def load_official_checkpoint(path: str | Path) -> dict:
    """Read an official pickled checkpoint without executing code (`weights_only=True`)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True): {type(err).__name__}: {err}. "
            "zoo never unpickles arbitrary code; re-save the state dict with plain tensors."
        ) from None
