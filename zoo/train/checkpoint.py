"""Run checkpoints without pickles: every state a run needs to resume exactly, as safetensors files and JSON.

A checkpoint folder `checkpoints/step_NNNNNNNN/` holds

    model.safetensors, model_1.safetensors      the generator and (GAN objectives) the discriminator weights
    optimizer.safetensors, optimizer_1...       optimiser states (`state_dict()` as a tree, see below)
    scheduler.safetensors, scheduler_1...       learning-rate schedulers
    ema.safetensors                             the EMA shadow weights, decay and update count (when EMA is on)
    scaler.safetensors                          the fp16 GradScaler (when there is one)
    rng_state_<rank>.safetensors                Python, NumPy, torch (CPU and CUDA) RNG states and the
                                                accelerator's micro-step counter, one file per process
    trainer_state.json                          step and data position; written last, it marks the folder complete

A "tree" file stores any nesting of dicts, lists, tuples, numbers, strings, None, NumPy arrays and tensors: the
tensors as safetensors tensors, the structure as JSON in the safetensors metadata. Reading one never executes code,
and `load_checkpoint` reads only such files: before loading anything it checks that every file of the folder is a
JSON file or a well-formed safetensors file and refuses the folder, naming the file, otherwise (a pickle planted in a
checkpoint, or one written by Accelerate's `save_state`, is never opened by an unpickler).

Sharded runs (FSDP, DeepSpeed) keep Accelerate's `save_state` format, whose shards are those backends' own files;
zoo reads them through Accelerate, which loads with `torch.load(weights_only=True)`, and still refuses
`custom_checkpoint_*.pkl` files, the one kind Accelerate unpickles with `weights_only=False`.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.atomic import TMP_PREFIX, atomic_path, atomic_write_text

__all__ = [
    "STATE_FILE",
    "CheckpointError",
    "load_checkpoint",
    "load_tree",
    "read_trainer_state",
    "refuse_unsafe_files",
    "save_checkpoint",
    "save_tree",
]

STATE_FILE = "trainer_state.json"
_TREE_FORMAT = "zoo.state-tree/1"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class CheckpointError(ValueError):
    """A checkpoint folder that zoo will not load; the message names the file and what to do."""


# -- trees -------------------------------------------------------------------------------------------------------------


def _encode(obj: Any, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        else:
            storage = tensor.untyped_storage()
            shared = storage.data_ptr() in seen or storage.nbytes() != tensor.numel() * tensor.element_size()
            tensor = tensor.clone() if shared else tensor
        seen.add(tensor.untyped_storage().data_ptr())
        key = f"t{len(tensors)}"
        tensors[key] = tensor.contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, seen) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, seen) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, seen) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, seen), _encode(v, tensors, seen)] for k, v in obj.items()]}
    raise TypeError(f"a checkpoint cannot store a {type(obj).__name__} ({obj!r:.80}); state_dicts must hold tensors, "
                    "numbers, strings, lists, tuples and dicts")


def _decode(node: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors, where) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        key = node["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"{where} is damaged: its structure names tensor {key!r}, which it does not hold")
        return tensors[key]
    if "__ndarray__" in node:
        return np.asarray(node["__ndarray__"], dtype=np.dtype(node["dtype"])).reshape(node["shape"])
    if "__tuple__" in node:
        return tuple(_decode(v, tensors, where) for v in node["__tuple__"])
    if "__items__" in node:
        return {_hashable(_decode(k, tensors, where)): _decode(v, tensors, where) for k, v in node["__items__"]}
    return {k: _decode(v, tensors, where) for k, v in node.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def save_tree(path: str | Path, obj: Any) -> Path:
    """Write `obj` (a state_dict or any nesting of plain values and tensors) as one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(obj, tensors, set())
    metadata = {"format": _TREE_FORMAT, "tree": json.dumps(tree)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_tree(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """Read a file written by `save_tree` (no code runs: safetensors tensors and a JSON structure)."""
    from safetensors import safe_open

    path = Path(path)
    check_safetensors_file(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        if metadata.get("format") != _TREE_FORMAT:
            raise CheckpointError(f"{path} is a safetensors file but not a zoo state file (format "
                                  f"{metadata.get('format')!r}, expected {_TREE_FORMAT!r})")
        tree = json.loads(metadata["tree"])
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path} is damaged ({type(err).__name__}: {err}); resume from another checkpoint") \
            from None
    return _decode(tree, tensors, path)


# -- folder checks -----------------------------------------------------------------------------------------------------


def _looks_like_pickle(head: bytes) -> str | None:
    if head[:4] == b"PK\x03\x04":
        return "a zip archive, the format of torch.save (a pickle inside)"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]})"
    if head[:1] in (b"(", b"c", b"]", b"}") and b"." in head:
        return "probably a protocol-0/1 pickle"
    return None


def check_safetensors_file(path: Path) -> None:
    """Raise CheckpointError unless `path` starts with a well-formed safetensors header (length + JSON object) and
    is as long as that header says."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a safetensors file ({size} bytes; truncated)")
            (length,) = struct.unpack("<Q", head)
            if length < 2 or length > min(_MAX_HEADER, size - 8):
                kind = _looks_like_pickle(head)
                raise CheckpointError(
                    f"{path} is not a safetensors file" + (f": it is {kind}" if kind else " (bad header)")
                    + "; zoo checkpoints hold only safetensors and JSON, and zoo never unpickles a checkpoint file. "
                    "Delete this checkpoint folder (or the run) and resume from another one."
                )
            header = json.loads(handle.read(length))
    except CheckpointError:
        raise
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not a JSON object)")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
               and "data_offsets" in v), default=0)
    if 8 + length + end > size:
        raise CheckpointError(f"{path} is truncated ({size} bytes, its header needs {8 + length + end}); the save was "
                              "interrupted: resume from another checkpoint")


def refuse_unsafe_files(folder: Path, allowed_extra: Iterable[str] = ()) -> None:
    """Raise CheckpointError naming the first file of `folder` (recursively) that is not a JSON file or a
    well-formed safetensors file (names in `allowed_extra` are skipped: a sharded backend's own files)."""
    extra = set(allowed_extra)
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or path.name in extra or path.name.startswith(TMP_PREFIX):
            continue
        if path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as err:
                with open(path, "rb") as handle:
                    kind = _looks_like_pickle(handle.read(16))
                raise CheckpointError(
                    f"{path} is not JSON" + (f" (it is {kind})" if kind else f" ({type(err).__name__}: {err})")
                    + "; the checkpoint is damaged or was tampered with: resume from another one"
                ) from None
        elif path.suffix == ".safetensors":
            check_safetensors_file(path)
        else:
            with open(path, "rb") as handle:
                kind = _looks_like_pickle(handle.read(16))
            what = f"it is {kind}" if kind else "an unknown kind of file"
            raise CheckpointError(
                f"{path}: {what}. zoo checkpoints hold only .safetensors and .json files, and zoo never unpickles a "
                "checkpoint file (Accelerate's save_state pickles, e.g. from an older zoo, are not read). Delete the "
                "file if you did not put it there on purpose, or resume from another checkpoint."
            )


def read_trainer_state(folder: Path) -> dict[str, int]:
    """`trainer_state.json` of a checkpoint as {"step", "micro_batches"}, or a CheckpointError naming it."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
        step, micro = int(state["step"]), int(state["micro_batches"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err}); the checkpoint is damaged or was "
                              "tampered with: delete the folder to resume from an older checkpoint") from None
    return {"step": step, "micro_batches": micro}


# -- save / load -------------------------------------------------------------------------------------------------------


def _name(base: str, index: int) -> str:
    return f"{base}.safetensors" if index == 0 else f"{base}_{index}.safetensors"


def _rng_state(accelerator: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "accelerator_step": int(accelerator.step),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], accelerator: Any, where: Path) -> None:
    try:
        random.setstate(state["python"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
        torch.set_rng_state(state["torch"].to(torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])
        accelerator.step = int(state["accelerator_step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{where} does not hold the RNG states of a zoo run ({type(err).__name__}: {err})") \
            from None


def save_checkpoint(folder: Path, accelerator: Any, models: list[torch.nn.Module], optimizers: list[Any],
                    schedulers: list[Any], ema: Any, state: dict[str, int]) -> Path:
    """Write a complete checkpoint of an unsharded run (one process or DDP) into `folder` (collective: every process
    calls it; the main process writes the shared files, each process its RNG states); trainer_state.json last."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        for i, model in enumerate(models):
            with atomic_path(folder / _name("model", i)) as tmp:
                save_model(accelerator.unwrap_model(model), str(tmp))
        for i, optimizer in enumerate(optimizers):
            save_tree(folder / _name("optimizer", i), optimizer.state_dict())
        for i, scheduler in enumerate(schedulers):
            save_tree(folder / _name("scheduler", i), scheduler.state_dict())
        if ema is not None:
            save_tree(folder / "ema.safetensors", ema.state_dict())
        if accelerator.scaler is not None:
            save_tree(folder / "scaler.safetensors", accelerator.scaler.state_dict())
    save_tree(folder / f"rng_state_{accelerator.process_index}.safetensors", _rng_state(accelerator))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(folder / STATE_FILE, json.dumps(state) + "\n")
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(folder: Path, accelerator: Any, models: list[torch.nn.Module], optimizers: list[Any],
                    schedulers: list[Any], ema: Any) -> dict[str, int]:
    """Restore what `save_checkpoint` wrote; returns the trainer state. Refuses (CheckpointError, naming the file) a
    folder holding anything but JSON and well-formed safetensors files, before reading any state."""
    from safetensors.torch import load_model

    refuse_unsafe_files(folder)
    state = read_trainer_state(folder)
    expected = [_name("model", i) for i in range(len(models))] + [_name("optimizer", i) for i in range(len(optimizers))]
    expected += [_name("scheduler", i) for i in range(len(schedulers))]
    expected += [f"rng_state_{accelerator.process_index}.safetensors"]
    if ema is not None:
        expected.append("ema.safetensors")
    if accelerator.scaler is not None:
        expected.append("scaler.safetensors")
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} lacks {missing}; it was written by another configuration (EMA, "
                              "discriminator, precision or number of processes) or by an older zoo")
    device = str(accelerator.device)
    for i, model in enumerate(models):
        path = folder / _name("model", i)
        try:
            load_model(accelerator.unwrap_model(model), str(path), strict=True, device=device)
        except Exception as err:  # missing/unexpected keys, shapes
            raise CheckpointError(f"{path} does not fit the model of this recipe ({type(err).__name__}: "
                                  f"{str(err)[:500]})") from None
    for i, optimizer in enumerate(optimizers):
        path = folder / _name("optimizer", i)
        _load_into(optimizer, load_tree(path), path)
    for i, scheduler in enumerate(schedulers):
        path = folder / _name("scheduler", i)
        _load_into(scheduler, load_tree(path), path)
    if ema is not None:
        _load_into(ema, load_tree(folder / "ema.safetensors", device=device), folder / "ema.safetensors")
    if accelerator.scaler is not None:
        _load_into(accelerator.scaler, load_tree(folder / "scaler.safetensors"), folder / "scaler.safetensors")
    rng_path = folder / f"rng_state_{accelerator.process_index}.safetensors"
    _set_rng_state(load_tree(rng_path), accelerator, rng_path)
    return state


def _load_into(obj: Any, state: Any, path: Path) -> None:
    try:
        obj.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise CheckpointError(f"{path} does not fit this run's {type(obj).__name__} ({type(err).__name__}: "
                              f"{str(err)[:300]})") from None
