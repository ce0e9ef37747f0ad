"""`zoo tokenize`: pre-tokenise a dataset into token shards (`zoo.data.token_shards`), on Accelerate, resumable.

    zoo tokenize MODEL --data SRC --out DIR [--num-tokens k] [--target-error eps] [--batch-size n]
                 [--shard-size n] [--num-workers n] [--weights W] [--device D] [--strict]
    accelerate launch -m zoo.cli tokenize MODEL --data SRC --out DIR ...      # many processes / GPUs / nodes

SRC is an image or audio folder (recursive), uncompressed tar shards in the WebDataset layout (a .tar, a glob such
as `train-*.tar`, a brace range `train-{000..099}.tar`, or a folder of .tar files), or a list file (.txt/.lst, one
path per line, relative to the list file). Items are sorted by key (the path relative to SRC without extension; a
tar member's name without extension) and cut into shards of `--shard-size` consecutive items; shard i goes to
process i mod N, so any process count writes the same shards.

Safe to kill at any moment: a shard is written to a temporary name, fsynced and renamed, then its record
`shard-NNNNNN.json` is written the same way; a rerun of the same command skips the shards that have a record and
redoes the others; `manifest.json` comes last. Unreadable or unusable items are listed with their reason in the
shard records and `errors.jsonl`, skipped and counted (`--strict` stops at the first instead).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from zoo.atomic import TMP_PREFIX, atomic_path, atomic_write_text
from zoo.data.common import TarMember, list_tar_members
from zoo.data.token_shards import FORMAT, MANIFEST, ShardItem, ids_dtype_for, shard_bytes
from zoo.precision import check_precision

__all__ = ["SourceItem", "TokenizeJob", "list_source", "main"]

LIST_SUFFIXES = (".txt", ".lst")
JOB_FILE = "job.json"


class TokenizeError(Exception):
    """A problem with the job itself (not with one item): printed as one line by the command."""


@dataclass(frozen=True)
class SourceItem:
    key: str
    source: str
    ref: str | TarMember  # what `open_item` reads


# -- listing the source -------------------------------------------------------------------------------------------
def _expand_braces(pattern: str) -> list[str]:
    """`a-{000..003}.tar` -> four names (WebDataset brace ranges, zero padding kept); other text unchanged."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if m is None:
        return [pattern]
    first, last = m.group(1), m.group(2)
    width = len(first) if first.startswith("0") else 0
    out = []
    for n in range(int(first), int(last) + 1):
        out += _expand_braces(pattern[: m.start()] + str(n).zfill(width) + pattern[m.end():])
    return out


def _strip_ext(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return stem if ext else name


def _tar_paths(src: str) -> list[str] | None:
    """The tar shards SRC names, or None when SRC is not a tar source."""
    if src.endswith(".tar") or "{" in src or any(c in src for c in "*?["):
        paths = sorted({p for pattern in _expand_braces(os.path.expanduser(src)) for p in glob.glob(pattern)})
        if not paths:
            raise TokenizeError(f"--data {src!r} matches no files")
        if not all(p.endswith(".tar") for p in paths):
            raise TokenizeError(f"--data {src!r} matches files that are not .tar shards: "
                                f"{[p for p in paths if not p.endswith('.tar')][:3]}")
        return paths
    if os.path.isdir(src):
        entries = [e for e in os.listdir(src) if not e.startswith(".")]
        if entries and all(e.endswith(".tar") for e in entries):
            return sorted(os.path.join(src, e) for e in entries)
    return None


def list_source(src: str | Path, extensions: Sequence[str]) -> tuple[str, list[SourceItem]]:
    """`(kind, items sorted by key)` for a folder, tar shards or a list file; keys must be unique."""
    src = str(src)
    tars = _tar_paths(src)
    if tars is not None:
        kind = "tar"
        items = [SourceItem(_strip_ext(m.name), str(m), m) for m in list_tar_members(tars, extensions)]
    elif os.path.isfile(src) and src.lower().endswith(LIST_SUFFIXES):
        kind = "list"
        base = Path(src).resolve().parent
        items = []
        for n, line in enumerate(Path(src).read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path = (base / line).resolve() if not os.path.isabs(line) else Path(line)
            try:
                key = _strip_ext(str(path.relative_to(base)))
            except ValueError:
                key = _strip_ext(line.lstrip("/"))
            items.append(SourceItem(key, str(path), str(path)))
        if not items:
            raise TokenizeError(f"list file {src} names no files")
    elif os.path.isdir(src):
        from zoo.data.common import list_files

        kind = "folder"
        try:
            files = list_files(src, extensions)
        except FileNotFoundError as err:
            raise TokenizeError(str(err)) from None
        items = [SourceItem(_strip_ext(os.path.relpath(f, src)), f, f) for f in files]
    else:
        raise TokenizeError(f"--data {src!r} is neither a folder, tar shards nor a list file (.txt/.lst)")
    items.sort(key=lambda it: it.key)
    duplicates = sorted({a.key for a, b in zip(items, items[1:]) if a.key == b.key})
    if duplicates:
        raise TokenizeError(f"several source files share the keys {duplicates[:5]} (same path, other extension); "
                            "keys must be unique: rename or remove the duplicates")
    return kind, items


# -- reading one item ---------------------------------------------------------------------------------------------
class _Items(Dataset):
    """Decoded items of one shard for the DataLoader: `(index, tensor or None, error or None)`."""

    def __init__(self, items: Sequence[SourceItem], modality: str, image_size: tuple[int, int] | None,
                 sample_rate: int | None, min_samples: int, over_full_scale: str = "error") -> None:
        self.items, self.modality = list(items), modality
        self.image_size, self.sample_rate, self.min_samples = image_size, sample_rate, min_samples
        self.over_full_scale = over_full_scale

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, item: SourceItem) -> torch.Tensor:
        from zoo.io import load_audio, read_image, resample

        if self.modality == "audio":
            wav, rate = load_audio(item.ref, over_full_scale=self.over_full_scale)
            wav = resample(wav, rate, self.sample_rate)
            if wav.numel() < self.min_samples:
                raise ValueError(f"{wav.numel()} samples at {self.sample_rate} Hz, shorter than the model's "
                                 f"{self.min_samples}")
            return wav
        return read_image(item.ref, size=self.image_size, mode="crop")[0]

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self._read(self.items[index]), None
        except Exception as err:  # noqa: BLE001 - any decoding failure is this item's, reported and skipped
            return index, None, f"{type(err).__name__}: {err}"


def _as_list(batch: list) -> list:
    return batch


# -- the job ------------------------------------------------------------------------------------------------------
def _accepted(fn: Any, names: Sequence[str]) -> set[str]:
    params = inspect.signature(fn).parameters
    return {n for n in names if n in params}


class TokenizeJob:
    """One `zoo tokenize` run: the model, the source listing, the shard plan and the output folder."""

    def __init__(self, model: str, data: str, out: str | Path, *, weights: str = "default",
                 num_tokens: int | None = None, target_error: float | None = None, batch_size: int = 8,
                 shard_size: int = 1000, num_workers: int = 0, device: str = "auto", strict: bool = False,
                 over_full_scale: str = "error", quiet: bool = False, precision: str = "fp32") -> None:
        if batch_size < 1 or shard_size < 1 or num_workers < 0:
            raise TokenizeError("--batch-size and --shard-size must be >= 1 and --num-workers >= 0")
        self.model_ref, self.weights, self.data = model, weights, data
        self.out = Path(out)
        self.encode_options = {k: v for k, v in (("num_tokens", num_tokens), ("target_error", target_error))
                               if v is not None}
        self.batch_size, self.shard_size, self.num_workers = batch_size, shard_size, num_workers
        self.device, self.strict, self.quiet = device, strict, quiet
        self.over_full_scale = over_full_scale
        self.precision = check_precision(precision)

    # -- setup ----------------------------------------------------------------------------------------------------
    def _load(self, device: torch.device) -> None:
        import zoo

        weights = None if str(self.weights).lower() in ("none", "random") else self.weights
        self.tok = zoo.load(self.model_ref, weights=weights, precision=self.precision).to(device).eval()
        unknown = set(self.encode_options) - _accepted(self.tok.encode, list(self.encode_options))
        if unknown:
            raise TokenizeError(f"{self.model_ref} does not take {sorted(unknown)} (its encode options: "
                                f"{sorted(set(inspect.signature(self.tok.encode).parameters) - {'x'})})")
        self.weights_record = self._weights_record(weights)

    def _weights_record(self, weights: Any) -> dict[str, Any]:
        from zoo.registry import get_spec, resolve_ref
        from zoo.weights import cached_sha256

        if weights is None:
            return {"tag": None, "file": None, "sha256": None, "note": "random initialisation"}
        kind, ref = resolve_ref(self.model_ref)
        file: Path | None = None
        tag = None
        if kind == "path":
            file = Path(ref) / "model.safetensors" if weights == "default" else Path(weights)
        else:
            spec = get_spec(str(ref))
            tag = spec.default_weights if weights == "default" else weights
            file = spec.weights[tag].source.resolve() if tag in spec.weights else Path(weights)
        return {"tag": tag, "file": file.name, "sha256": cached_sha256(file)}

    def _plan(self) -> None:
        from zoo.io import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

        modality = "audio" if self.tok.modality == "audio" else "image"
        self.modality = modality
        self.kind, self.items = list_source(self.data, AUDIO_EXTENSIONS if modality == "audio" else IMAGE_EXTENSIONS)
        self.num_shards = (len(self.items) + self.shard_size - 1) // self.shard_size
        keys = hashlib.sha256("\n".join(f"{it.key}\t{it.source}" for it in self.items).encode()).hexdigest()
        from zoo import __version__

        self.job = {
            "format": FORMAT,
            "zoo_version": __version__,
            "model": self.model_ref if not Path(self.model_ref).exists() else str(Path(self.model_ref).resolve()),
            "family": self.tok.family,
            "weights": self.weights_record,
            "config": self.tok.config,
            "encode": self.encode_options,
            "over_full_scale": self.over_full_scale if self.tok.modality == "audio" else None,
            "shard_size": self.shard_size,
            "source": {"path": str(Path(self.data).resolve()) if Path(self.data).exists() else self.data,
                       "kind": self.kind, "num_items": len(self.items), "items_sha256": keys},
            "ids_dtype": str(ids_dtype_for([b.size for b in self.tok.codebooks])).replace("torch.", ""),
        }
        if self.precision != "fp32":  # reduced-precision ids can differ from fp32 ones: never mixed in one folder
            self.job["precision"] = self.precision

    def _check_or_write_job(self, is_main: bool) -> None:
        path = self.out / JOB_FILE
        if path.is_file():
            old = json.loads(path.read_text())
            changed = sorted(k for k in set(old) | set(self.job) if k != "zoo_version" and old.get(k) != self.job.get(k))
            if changed:
                raise TokenizeError(f"{self.out} holds shards of another job (it differs in {changed}); tokenize into "
                                    "another --out folder, or delete this one to start over")
        elif is_main:
            atomic_write_text(path, json.dumps(self.job, indent=2, default=str) + "\n")

    # -- shards ---------------------------------------------------------------------------------------------------
    def shard_name(self, s: int) -> str:
        return f"shard-{s:06d}"

    def _complete(self, s: int) -> bool:
        record = self.out / f"{self.shard_name(s)}.json"
        shard = self.out / f"{self.shard_name(s)}.safetensors"
        if not (record.is_file() and shard.is_file()):
            return False
        try:
            return json.loads(record.read_text()).get("bytes") == shard.stat().st_size
        except ValueError:
            return False

    def _encode(self, tensors: list[torch.Tensor]) -> list:
        """Tokens (batch 1) per input, in order; one at a time if the batch fails, to isolate a bad item."""
        tok, device = self.tok, self.tok.device
        with torch.inference_mode():
            if self.modality == "audio":
                lengths = torch.tensor([t.numel() for t in tensors])
                x = torch.zeros(len(tensors), int(lengths.max()))
                for i, t in enumerate(tensors):
                    x[i, : t.numel()] = t
                tokens = tok.encode(x.to(device), sample_rate=tok.sample_rate, lengths=lengths,
                                    **self.encode_options)
            else:
                tokens = tok.encode(torch.stack(tensors).to(device), **self.encode_options)
        out = []
        for t in tokens.unbatch():
            if t.lengths is not None:
                n = int(t.lengths[0])
                # audio lengths only mark the batch's padding: an item stands alone without them
                t = type(t)(t.ids[:, :n], None if self.modality == "audio" else t.lengths, t.layout, t.meta)
            out.append(t.to("cpu"))
        return out

    def _encode_robust(self, tensors: list[torch.Tensor]) -> list:
        try:
            return self._encode(tensors)
        except (ValueError, TypeError, RuntimeError) as err:
            if len(tensors) == 1:
                return [f"{type(err).__name__}: {err}"]
        results = []
        for t in tensors:
            try:
                results.append(self._encode([t])[0])
            except (ValueError, TypeError, RuntimeError) as err:
                results.append(f"{type(err).__name__}: {err}")
        return results

    def _run_shard(self, s: int, progress: Any) -> None:
        items = self.items[s * self.shard_size: (s + 1) * self.shard_size]
        image_size = None if self.modality == "audio" else tuple(self.tok.input_size)
        rate = getattr(self.tok, "sample_rate", None) if self.modality == "audio" else None
        dataset = _Items(items, self.modality, image_size, rate, int(getattr(self.tok, "min_samples", 1)),
                         self.over_full_scale)
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=_as_list)
        stored: dict[int, Any] = {}
        errors: list[dict[str, str]] = []
        for batch in loader:
            good = [(i, x) for i, x, err in batch if err is None]
            for i, _, err in batch:
                if err is not None:
                    errors.append({"key": items[i].key, "source": items[i].source, "reason": err})
            if good:
                for (i, _), result in zip(good, self._encode_robust([x for _, x in good])):
                    if isinstance(result, str):
                        errors.append({"key": items[i].key, "source": items[i].source, "reason": result})
                    else:
                        stored[i] = result
            if errors and self.strict:
                e = errors[0]
                raise TokenizeError(f"{e['source']}: {e['reason']} (--strict stops at the first bad item)")
            if progress is not None:
                progress.update(len(batch))
        kept = [ShardItem(items[i].key, items[i].source, stored[i]) for i in sorted(stored)]
        dtype = getattr(torch, self.job["ids_dtype"])
        tensors, header = shard_bytes(kept, dtype)
        from safetensors.torch import save_file

        from zoo.weights import sha256_file

        shard = self.out / f"{self.shard_name(s)}.safetensors"
        with atomic_path(shard) as tmp:
            save_file(tensors, str(tmp), metadata={"zoo": header})
        record = {"file": shard.name, "num_items": len(kept), "num_skipped": len(errors),
                  "bytes": shard.stat().st_size, "sha256": sha256_file(shard), "errors": errors}
        atomic_write_text(self.out / f"{self.shard_name(s)}.json", json.dumps(record, indent=1) + "\n")

    def _write_manifest(self, seconds: float) -> dict[str, Any]:
        shards, errors = [], []
        for s in range(self.num_shards):
            record_path = self.out / f"{self.shard_name(s)}.json"
            if not record_path.is_file():
                raise TokenizeError(f"{record_path} is missing: another process did not finish its shards; rerun "
                                    "the same command to complete them")
            record = json.loads(record_path.read_text())
            errors += record["errors"]
            shards.append({k: record[k] for k in ("file", "num_items", "num_skipped", "bytes", "sha256")})
        manifest = dict(self.job)
        manifest.update({
            "num_items": sum(s["num_items"] for s in shards),
            "num_skipped": sum(s["num_skipped"] for s in shards),
            "shards": shards,
            "seconds": round(seconds, 3),
        })
        atomic_write_text(self.out / "errors.jsonl", "".join(json.dumps(e) + "\n" for e in errors))
        atomic_write_text(self.out / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
        return manifest

    # -- run ------------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from accelerate import Accelerator

        acc = Accelerator(cpu=self.device == "cpu")
        device = acc.device if self.device in ("auto", "cpu") else torch.device(self.device)
        self._load(device)
        self._plan()
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(f"{TMP_PREFIX}*"):  # left by a writer killed mid-write
                stale.unlink()
        acc.wait_for_everyone()
        self._check_or_write_job(acc.is_main_process)
        acc.wait_for_everyone()
        mine = [s for s in range(acc.process_index, self.num_shards, acc.num_processes)]
        todo = [s for s in mine if not self._complete(s)]
        start = time.perf_counter()
        progress = None
        if acc.is_main_process and not self.quiet:
            from tqdm.auto import tqdm

            total = sum(len(self.items[s * self.shard_size: (s + 1) * self.shard_size]) for s in todo)
            progress = tqdm(total=total, desc=f"tokenize ({acc.num_processes} proc)", unit="item", file=sys.stderr)
        try:
            for s in todo:
                self._run_shard(s, progress)
        finally:
            if progress is not None:
                progress.close()
        acc.wait_for_everyone()
        manifest = None
        if acc.is_main_process:
            manifest = self._write_manifest(time.perf_counter() - start)
            if not self.quiet:
                done = len(mine) - len(todo)
                print(f"tokenized {manifest['num_items']} items into {self.num_shards} shards in {self.out} "
                      f"({manifest['num_skipped']} skipped, listed in errors.jsonl; {done} shards were already "
                      f"complete)", file=sys.stderr)
        acc.wait_for_everyone()
        return manifest if manifest is not None else json.loads((self.out / MANIFEST).read_text())


# -- command line -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoo tokenize",
        description="Pre-tokenise a dataset (image/audio folder, tar shards or list file) into token shards; run it "
        "under `accelerate launch -m zoo.cli tokenize ...` for many processes. Rerun the same command to resume.",
    )
    p.add_argument("model", help="registered model name, or a saved model folder (./dir)")
    p.add_argument("--data", required=True, help="image/audio folder, .tar shards (glob or {000..099}), or list file")
    p.add_argument("--out", required=True, help="output folder of token shards")
    p.add_argument("--weights", default="default", help="weights tag, .safetensors path, or 'none'")
    p.add_argument("--num-tokens", type=int, help="tokens per item (variable-length tokenizers)")
    p.add_argument("--target-error", type=float, help="adaptive tokenizers: target reconstruction error")
    p.add_argument("--batch-size", type=int, default=8, help="items per encode call (default 8)")
    p.add_argument("--shard-size", type=int, default=1000, help="items per shard (default 1000)")
    p.add_argument("--num-workers", type=int, default=0, help="decoding worker processes per process (default 0)")
    p.add_argument("--device", default="auto", help="auto (Accelerate's device), cpu, or a torch device")
    p.add_argument("--strict", action="store_true", help="stop at the first bad item instead of skipping it")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="fp32 (default), or bf16 / fp16 (GPU): faster, but some ids differ from fp32 "
                   "(docs/performance.md)")
    p.add_argument("--over-full-scale", choices=("error", "normalize", "clip"), default="error",
                   help="float audio above full scale: skip the item (error, default), normalize or clip it")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    job = TokenizeJob(args.model, args.data, args.out, weights=args.weights, num_tokens=args.num_tokens,
                      target_error=args.target_error, batch_size=args.batch_size, shard_size=args.shard_size,
                      num_workers=args.num_workers, device=args.device, strict=args.strict,
                      over_full_scale=args.over_full_scale, quiet=args.quiet, precision=args.precision)
    try:
        job.run()
    except (TokenizeError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        sys.stderr.write(f"zoo tokenize: error: {message}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
