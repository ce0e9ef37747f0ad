"""`Tokens`: the one container every tokenizer's `encode` returns and every `decode` takes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from safetensors.torch import load_file, save_file

from zoo.atomic import atomic_path

_FORMAT = "zoo.tokens/1"


def _layout_to_json(layout: Any) -> Any:
    if isinstance(layout, (list, tuple)):
        return [_layout_to_json(v) for v in layout]
    return layout


def _layout_from_json(value: Any) -> Any:
    """A grid or 1D layout comes back as a tuple, a multi-scale layout as a list of tuples."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return [tuple(v) for v in value]
    if isinstance(value, list):
        return tuple(value)
    return value


@dataclass
class Tokens:
    """Discrete tokens of a batch.

    Attributes:
        ids: LongTensor `[B, N]`, or `[B, N, K]` for K parallel codebooks or residual depths.
        lengths: LongTensor `[B]` with the valid prefix length of each row (variable-length tokenizers), or None
            when every row is full.
        layout: how N maps to the signal: `(H, W)` for a grid, `(N,)` for a 1D sequence or audio frames, a list of
            `(h, w)` for multi-scale tokens.
        meta: what `decode` needs besides the ids. Tensor values are per sample (first dim B) and follow batch
            indexing; other values (JSON-able) are shared by the whole batch.
    """

    ids: torch.Tensor
    lengths: torch.Tensor | None = None
    layout: Any = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.ids, torch.Tensor):
            raise TypeError(f"Tokens.ids must be a torch.Tensor, got {type(self.ids).__name__}")
        if self.ids.is_floating_point() or self.ids.dtype == torch.bool or self.ids.is_complex():
            raise TypeError(f"Tokens.ids must be an integer tensor, got dtype {self.ids.dtype}")
        if self.ids.dtype != torch.long:
            self.ids = self.ids.long()
        if self.ids.dim() not in (2, 3):
            raise ValueError(f"Tokens.ids must be [B, N] or [B, N, K], got shape {tuple(self.ids.shape)}")
        if self.lengths is not None:
            self.lengths = torch.as_tensor(self.lengths, dtype=torch.long, device=self.ids.device)
            if self.lengths.shape != (self.ids.shape[0],):
                raise ValueError(
                    f"Tokens.lengths must have shape [B]=({self.ids.shape[0]},), got {tuple(self.lengths.shape)}"
                )
            if len(self.lengths) and (self.lengths.min() < 0 or self.lengths.max() > self.ids.shape[1]):
                raise ValueError(
                    f"Tokens.lengths must lie in [0, N={self.ids.shape[1]}], got {self.lengths.tolist()}"
                )
        for key, value in self.meta.items():
            if isinstance(value, torch.Tensor) and (value.dim() == 0 or value.shape[0] != self.ids.shape[0]):
                raise ValueError(
                    f"Tokens.meta[{key!r}] is a tensor, so it must be per sample with first dim B="
                    f"{self.ids.shape[0]}; got shape {tuple(value.shape)}. Store batch-wide values as Python numbers."
                )

    # -- shape ---------------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    @property
    def num_tokens(self) -> int:
        """N, the padded sequence length."""
        return self.ids.shape[1]

    @property
    def device(self) -> torch.device:
        return self.ids.device

    def __len__(self) -> int:
        return self.batch_size

    def valid_mask(self) -> torch.Tensor:
        """Bool `[B, N]`: True where a token is part of the valid prefix."""
        positions = torch.arange(self.num_tokens, device=self.ids.device)
        if self.lengths is None:
            return torch.ones(self.ids.shape[:2], dtype=torch.bool, device=self.ids.device)
        return positions[None, :] < self.lengths[:, None]

    # -- batch ops -----------------------------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> "Tokens":
        meta = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.meta.items()}
        lengths = None if self.lengths is None else self.lengths.to(device)
        return Tokens(self.ids.to(device), lengths, self.layout, meta)

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> "Tokens":
        if isinstance(index, int):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"batch index {index} out of range for {self.batch_size} samples")
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=self.ids.device)
        meta = {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in self.meta.items()}
        lengths = None if self.lengths is None else self.lengths[index]
        return Tokens(self.ids[index], lengths, self.layout, meta)

    def unbatch(self) -> list["Tokens"]:
        """One `Tokens` of batch size 1 per sample."""
        return [self[i] for i in range(self.batch_size)]

    @staticmethod
    def cat(items: Iterable["Tokens"]) -> "Tokens":
        """Concatenate along the batch. Rows are right-padded with id 0 to the longest N (lengths record it)."""
        items = list(items)
        if not items:
            raise ValueError("Tokens.cat needs at least one Tokens")
        first = items[0]
        for other in items[1:]:
            if other.ids.shape[2:] != first.ids.shape[2:]:
                raise ValueError(f"cannot cat Tokens with K={other.ids.shape[2:]} and K={first.ids.shape[2:]}")
            if other.layout != first.layout and other.lengths is None:
                raise ValueError(f"cannot cat Tokens with layouts {first.layout} and {other.layout}")
            shared = {k: v for k, v in other.meta.items() if not isinstance(v, torch.Tensor)}
            first_shared = {k: v for k, v in first.meta.items() if not isinstance(v, torch.Tensor)}
            if shared != first_shared:
                raise ValueError(f"cannot cat Tokens with different batch-wide meta: {first_shared} vs {shared}")
        width = max(t.num_tokens for t in items)
        ragged = any(t.num_tokens != width or t.lengths is not None for t in items)
        ids, lengths = [], []
        for t in items:
            pad = width - t.num_tokens
            padded = t.ids
            if pad:
                padded = torch.nn.functional.pad(t.ids, (0, 0, 0, pad) if t.ids.dim() == 3 else (0, pad))
            ids.append(padded)
            lengths.append(t.lengths if t.lengths is not None else torch.full((t.batch_size,), t.num_tokens))
        meta = dict(first.meta)
        for key, value in first.meta.items():
            if isinstance(value, torch.Tensor):
                meta[key] = torch.cat([t.meta[key] for t in items])
        layout = first.layout
        return Tokens(
            torch.cat(ids), torch.cat([l.to(ids[0].device) for l in lengths]) if ragged else None, layout, meta
        )

    # -- files ---------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write a safetensors file: ids, lengths and tensor meta as tensors, the rest as JSON metadata."""
        tensors = {"ids": self.ids.detach().cpu().contiguous()}
        if self.lengths is not None:
            tensors["lengths"] = self.lengths.detach().cpu().contiguous()
        shared = {}
        for key, value in self.meta.items():
            if isinstance(value, torch.Tensor):
                tensors[f"meta.{key}"] = value.detach().cpu().contiguous()
            else:
                shared[key] = value
        try:
            meta_json = json.dumps(shared)
        except TypeError as err:
            raise TypeError(f"Tokens.meta values must be tensors or JSON-able to save: {err}") from None
        try:
            layout_json = json.dumps(_layout_to_json(self.layout))
        except TypeError as err:
            raise TypeError(f"Tokens.layout must be JSON-able (ints, tuples, lists) to save: {err}") from None
        metadata = {"format": _FORMAT, "layout": layout_json, "meta": meta_json}
        with atomic_path(path) as tmp:  # a temporary name, renamed when complete: never a partial tokens file
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Tokens":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokens file at {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as err:  # safetensors raises SafetensorError (truncated, corrupt header) or OSError
            raise ValueError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); it is "
                             "truncated or corrupt: encode it again") from None
        if metadata.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a zoo tokens file (written by Tokens.save / `zoo encode`)")
        try:
            tensors = load_file(str(path), device=str(device))
            meta: dict[str, Any] = json.loads(metadata.get("meta", "{}"))
            layout = _layout_from_json(json.loads(metadata.get("layout", "[]")))
        except Exception as err:  # a damaged body or damaged JSON metadata
            raise ValueError(f"{path} is a damaged tokens file ({type(err).__name__}: {err}); encode it again") \
                from None
        if not isinstance(meta, dict) or "ids" not in tensors:
            raise ValueError(f"{path} is a damaged tokens file (no ids tensor or no meta mapping); encode it again")
        for key, value in tensors.items():
            if key.startswith("meta."):
                meta[key[len("meta."):]] = value
        try:
            return cls(tensors["ids"], tensors.get("lengths"), layout, meta)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} holds inconsistent tokens: {err}") from None
