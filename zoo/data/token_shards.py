"""Token shards: datasets of tokens as an LLM trainer reads them (`zoo tokenize` writes them).

Format `zoo.token-shards/1`, a folder:

    manifest.json            written last: model, weights tag + sha256, zoo version, model config, encode options,
                             item and skipped counts, every shard's file name, item count, bytes and sha256
    shard-000000.safetensors one safetensors file per shard (below)
    shard-000000.json        the shard's record (counts, sha256, the items it skipped and why): marks it complete
    errors.jsonl             every skipped item with its source and reason

A shard holds its items' valid ids concatenated in one flat tensor (`ids`, the smallest integer dtype that holds
the codebook) with `ids.offsets` `[n + 1]` and `ids.shapes` `[n, r]` (`[N]` or `[N, K]` per item), and each
per-item tensor of `Tokens.meta` the same way (`meta.<name>`, `.offsets`, `.shapes`). Keys, sources, layouts, which
items had `lengths`, and the batch-wide meta are JSON in the one safetensors metadata entry `zoo`. Why
safetensors and not WebDataset tar: one memory-mappable file per shard, O(1) access to any item without
decoding a container, no per-item headers, no pickles, and readable from any framework with `safetensors`.

    from zoo.data import TokenShards
    data = TokenShards("tokens/")                  # IterableDataset of (key, Tokens), shuffled by shard
    loader = DataLoader(data, batch_size=8, num_workers=2, collate_fn=TokenShards.collate)
    key, tokens = data.as_map()[0]                 # map-style view
"""

from __future__ import annotations

import bisect
import json
import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from zoo.tokens import Tokens, _layout_from_json, _layout_to_json

__all__ = ["FORMAT", "ShardItem", "TokenShards", "TokenShardsMap", "ids_dtype_for", "read_manifest", "read_shard",
           "shard_bytes"]

FORMAT = "zoo.token-shards/1"
MANIFEST = "manifest.json"


def ids_dtype_for(codebook_sizes: Sequence[int]) -> torch.dtype:
    """The smallest signed integer dtype that holds every id (int16 up to 32767 codes, then int32, int64)."""
    largest = max(int(s) for s in codebook_sizes)
    for dtype in (torch.int16, torch.int32):
        if largest - 1 <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


@dataclass
class ShardItem:
    """One item to store: its key, where it came from and its tokens (batch size 1)."""

    key: str
    source: str
    tokens: Tokens


def _pack(values: list[torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    shapes = [tuple(v.shape) for v in values]
    rank = max((len(s) for s in shapes), default=1)
    if any(len(s) != rank for s in shapes):
        raise ValueError(f"items have tensors of different ranks {sorted({len(s) for s in shapes})}; cannot pack")
    flat = [v.reshape(-1) for v in values]
    sizes = torch.tensor([0] + [f.numel() for f in flat], dtype=torch.int64)
    data = torch.cat(flat) if flat else torch.zeros(0, dtype=dtype or torch.int64)
    return {"": data.to(dtype) if dtype is not None else data, "offsets": sizes.cumsum(0),
            "shapes": torch.tensor(shapes, dtype=torch.int64).reshape(len(values), rank)}


def shard_bytes(items: Sequence[ShardItem], ids_dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors and the metadata JSON of a shard (deterministic: the same items give the same bytes)."""
    ids, has_lengths, layouts, shared, meta_tensors = [], [], [], [], {}
    layout_index: dict[str, int] = {}
    shared_index: dict[str, int] = {}
    tensor_names = sorted({k for it in items for k, v in it.tokens.meta.items() if isinstance(v, torch.Tensor)})
    for it in items:
        t = it.tokens
        if t.batch_size != 1:
            raise ValueError(f"item {it.key!r}: a shard item holds one sample, got a batch of {t.batch_size}")
        n = int(t.lengths[0]) if t.lengths is not None else t.num_tokens
        ids.append(t.ids[0, :n].detach().cpu())
        has_lengths.append(t.lengths is not None)
        layout = json.dumps(_layout_to_json(t.layout))
        layouts.append(layout_index.setdefault(layout, len(layout_index)))
        batch_wide = json.dumps({k: v for k, v in t.meta.items() if not isinstance(v, torch.Tensor)}, sort_keys=True)
        shared.append(shared_index.setdefault(batch_wide, len(shared_index)))
        for name in tensor_names:
            value = t.meta.get(name)
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"item {it.key!r} lacks the per-sample meta tensor {name!r} the other items have")
            meta_tensors.setdefault(name, []).append(value[0].detach().cpu())
    tensors: dict[str, torch.Tensor] = {}
    for suffix, value in _pack(ids, ids_dtype).items():
        tensors["ids" + (f".{suffix}" if suffix else "")] = value
    for name, values in meta_tensors.items():
        dtypes = {v.dtype for v in values}
        if len(dtypes) != 1:
            raise ValueError(f"meta tensor {name!r} has several dtypes across items: {sorted(map(str, dtypes))}")
        for suffix, value in _pack(values).items():
            tensors[f"meta.{name}" + (f".{suffix}" if suffix else "")] = value
    header = {
        "format": FORMAT,
        "keys": [it.key for it in items],
        "sources": [it.source for it in items],
        "has_lengths": has_lengths,
        "layouts": list(layout_index),
        "layout_of": layouts,
        "shared_meta": list(shared_index),
        "shared_meta_of": shared,
        "meta_tensors": tensor_names,
    }
    return {k: v.contiguous() for k, v in tensors.items()}, json.dumps(header)


class _Shard:
    """A read shard: item i -> (key, Tokens) without copying the whole file (safetensors slices)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                self.tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for a damaged file
            raise ValueError(f"cannot read token shard {path} ({type(err).__name__}: {err}); it is truncated or not "
                             "a zoo token shard: rerun `zoo tokenize` with the same command to rewrite it") from None
        try:
            self.header = json.loads(metadata["zoo"])
        except (KeyError, ValueError):
            raise ValueError(f"{path} is not a zoo token shard (no 'zoo' metadata entry)") from None
        if self.header.get("format") != FORMAT:
            raise ValueError(f"{path} has format {self.header.get('format')!r}; this zoo reads {FORMAT}")
        self.keys: list[str] = self.header["keys"]
        self.layouts = [_layout_from_json(json.loads(s)) for s in self.header["layouts"]]
        self.shared = [json.loads(s) for s in self.header["shared_meta"]]

    def __len__(self) -> int:
        return len(self.keys)

    def _slice(self, name: str, i: int) -> torch.Tensor:
        offsets, shapes = self.tensors[f"{name}.offsets"], self.tensors[f"{name}.shapes"]
        start, end = int(offsets[i]), int(offsets[i + 1])
        return self.tensors[name][start:end].reshape(tuple(shapes[i].tolist()))

    def item(self, i: int) -> tuple[str, Tokens]:
        h = self.header
        ids = self._slice("ids", i).long()[None]
        lengths = torch.tensor([ids.shape[1]]) if h["has_lengths"][i] else None
        meta: dict[str, Any] = dict(self.shared[h["shared_meta_of"][i]])
        for name in h["meta_tensors"]:
            meta[name] = self._slice(f"meta.{name}", i)[None]
        return self.keys[i], Tokens(ids, lengths, self.layouts[h["layout_of"][i]], meta)

    def source(self, i: int) -> str:
        return self.header["sources"][i]


def read_shard(path: str | Path) -> list[tuple[str, Tokens]]:
    """Every `(key, Tokens)` of one shard file, in stored order."""
    shard = _Shard(Path(path))
    return [shard.item(i) for i in range(len(shard))]


def read_manifest(directory: str | Path, verify: bool = False) -> dict[str, Any]:
    """The manifest of a token-shards folder, after checking that every shard it lists is there with its size
    (and, with `verify`, its sha256)."""
    from zoo.weights import sha256_file

    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        partial = sorted(directory.glob("shard-*.safetensors")) if directory.is_dir() else []
        hint = (f"; {len(partial)} shards are there without one: the run did not finish, rerun the same `zoo "
                "tokenize` command to complete it") if partial else ""
        raise FileNotFoundError(f"no {MANIFEST} in {directory}{hint}")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}; this zoo reads {FORMAT}")
    for entry in manifest["shards"]:
        file = directory / entry["file"]
        if not file.is_file():
            raise FileNotFoundError(f"{file}, listed in {path}, is missing")
        if file.stat().st_size != entry["bytes"]:
            raise ValueError(f"{file} has {file.stat().st_size} bytes, the manifest says {entry['bytes']}: it was "
                             "changed after tokenizing")
        if verify and sha256_file(file) != entry["sha256"]:
            raise ValueError(f"{file} does not match the sha256 in {path}: it was changed after tokenizing")
    return manifest


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TokenShards(IterableDataset):
    """Stream `(key, Tokens)` from a token-shards folder (`zoo tokenize` output).

    Each epoch visits the shards in a seeded order (`shuffle`), split over distributed ranks and DataLoader
    workers by shard, then the items of each shard (in a seeded order too with `shuffle`). With
    `drop_uneven=False` (default) every item is seen once per epoch, even when the shard count does not divide
    among ranks; with `drop_uneven=True` each rank gets the same number of shards (some dropped) for lock-step
    distributed training.

    Args:
        directory: the folder with `manifest.json`.
        shuffle: shuffle shards and the items inside each shard (seeded by `seed` and the epoch).
        seed: base seed.
        rank, world_size: distributed position (default: torch.distributed when initialised, else 0 of 1).
        verify: check every shard's sha256 against the manifest when opening the folder.
    """

    def __init__(self, directory: str | Path, *, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, drop_uneven: bool = False, verify: bool = False) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory, verify=verify)
        self.shuffle, self.seed, self.drop_uneven = shuffle, seed, drop_uneven
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.epoch = 0

    @property
    def shard_files(self) -> list[Path]:
        return [self.directory / entry["file"] for entry in self.manifest["shards"]]

    def __len__(self) -> int:
        """Items in the whole folder (not per rank)."""
        return int(self.manifest["num_items"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _my_shards(self) -> list[Path]:
        files = self.shard_files
        order = list(range(len(files)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        if self.drop_uneven:
            order = order[: len(order) // self.world_size * self.world_size]
        order = order[self.rank::self.world_size]
        worker = get_worker_info()
        if worker is not None:
            order = order[worker.id::worker.num_workers]
        return [files[i] for i in order]

    def __iter__(self) -> Iterator[tuple[str, Tokens]]:
        for path in self._my_shards():
            shard = _Shard(path)
            index = list(range(len(shard)))
            if self.shuffle:
                salt = zlib.crc32(path.name.encode())
                random.Random(self.seed * 1_000_003 + self.epoch * 7919 + salt).shuffle(index)
            for i in index:
                yield shard.item(i)

    def as_map(self) -> TokenShardsMap:
        """The same folder as a map-style dataset (`len`, `[i]`, `.get(key)`)."""
        return TokenShardsMap(self.directory, manifest=self.manifest)

    @staticmethod
    def collate(batch: Sequence[tuple[str, Tokens]]) -> tuple[list[str], Tokens]:
        """DataLoader `collate_fn`: keys and one padded `Tokens` batch (`Tokens.cat`)."""
        return [key for key, _ in batch], Tokens.cat([tokens for _, tokens in batch])


@dataclass
class TokenShardsMap(Dataset):
    """Map-style view of a token-shards folder: item i in manifest order; `get(key)` by key."""

    directory: Path
    manifest: dict[str, Any] | None = None
    _cache: dict[int, _Shard] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.manifest is None:
            self.manifest = read_manifest(self.directory)
        counts = [int(entry["num_items"]) for entry in self.manifest["shards"]]
        self._starts = [0]
        for count in counts:
            self._starts.append(self._starts[-1] + count)
        self._keys: dict[str, int] | None = None

    def __len__(self) -> int:
        return self._starts[-1]

    def _shard(self, s: int) -> _Shard:
        if s not in self._cache:
            if len(self._cache) >= 4:  # keep a few shards open
                self._cache.pop(next(iter(self._cache)))
            self._cache[s] = _Shard(self.directory / self.manifest["shards"][s]["file"])
        return self._cache[s]

    def __getitem__(self, index: int) -> tuple[str, Tokens]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        index %= len(self)
        s = bisect.bisect_right(self._starts, index) - 1
        return self._shard(s).item(index - self._starts[s])

    def get(self, key: str) -> Tokens:
        """The tokens of one item by key (the source path relative to the tokenized folder, no extension)."""
        if self._keys is None:
            self._keys = {}
            for s in range(len(self.manifest["shards"])):
                for i, k in enumerate(self._shard(s).keys):
                    self._keys[k] = self._starts[s] + i
        if key not in self._keys:
            import difflib

            close = difflib.get_close_matches(key, list(self._keys), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"no item {key!r} in {self.directory}{hint}")
        return self[self._keys[key]][1]
