"""Reading the pickles of FLAME and its companion assets without executing anything.

The official FLAME 2020 `generic_model.pkl` is a Python-2 pickle of chumpy arrays (`chumpy.ch.Ch`), numpy arrays and
a scipy sparse matrix; the TEASER assets are pickles of numpy arrays, one of them (`landmark_embedding.npy`) holding
torch tensors pickled with plain `pickle`. `pickle.load` would import and call whatever the file names. Here a
restricted unpickler resolves only a fixed table of names, each to a constructor of plain data:

* numpy arrays, dtypes and scalars (numpy's own array reconstruction, which runs no user code);
* chumpy arrays -> `_ChumpyArray`, a stand-in that only records the pickled state (chumpy is never imported: its
  value is the `x` array of that state);
* scipy CSC/CSR matrices -> `_SparseMatrix`, a stand-in that records `data`/`indices`/`indptr`/shape (scipy is never
  imported);
* torch tensors inside a pickle -> rebuilt from bytes with `torch.load(weights_only=True)`;
* `_codecs.encode(text, "latin1")` (bytes in protocol-2 pickles written by Python 3).

Every other global is refused with an error naming it. `to_plain` then turns the stand-ins into numpy arrays.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "load_npy_object", "load_pickle", "to_plain"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside the table of plain-data constructors."""


class _ChumpyArray:
    """What a pickled `chumpy.ch.Ch` becomes: its pickled `__dict__` (the array is under "x")."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseMatrix:
    """What a pickled scipy CSC/CSR matrix becomes: its pickled attributes."""

    layout = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _CsrMatrix(_SparseMatrix):
    layout = "csr"


_STAND_INS = (_ChumpyArray, _SparseMatrix, _CsrMatrix)


def _reconstruct_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's `multiarray._reconstruct`, for plain ndarrays only."""
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild an array of type {subtype!r}; only numpy.ndarray is read")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    """numpy's `multiarray.scalar(dtype, bytes)` for non-object dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"refusing a numpy scalar of dtype {dtype!r}")
    raw = data.encode("latin1") if isinstance(data, str) else bytes(data or b"")
    return np.frombuffer(raw, dtype=dtype, count=1)[0]


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """`copyreg._reconstructor` (protocol 0/1 objects) for the stand-in classes only."""
    if cls not in _STAND_INS or base is not object:
        raise UnsafePickleError(f"refusing copyreg._reconstructor({cls!r}, {base!r})")
    return object.__new__(cls)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode(text, "latin1")`: how Python 3 writes bytes into protocol-2 pickles."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _torch_from_bytes(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _torch_rebuild_tensor(*args: Any) -> Any:
    from torch._utils import _rebuild_tensor_v2

    return _rebuild_tensor_v2(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,
    ("chumpy.ch", "Ch"): _ChumpyArray,
    ("torch._utils", "_rebuild_tensor_v2"): _torch_rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _torch_from_bytes,
}
for _module in ("builtins", "__builtin__"):  # Python-2 names are not translated for a custom find_class
    _ALLOWED[(_module, "set")] = set
    _ALLOWED[(_module, "frozenset")] = frozenset
    _ALLOWED[(_module, "object")] = object
for _module in ("copyreg", "copy_reg"):
    _ALLOWED[(_module, "_reconstructor")] = _copyreg_reconstructor
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _reconstruct_array
    _ALLOWED[(_module, "scalar")] = _numpy_scalar
for _module in ("scipy.sparse.csc", "scipy.sparse._csc"):
    _ALLOWED[(_module, "csc_matrix")] = _SparseMatrix
for _module in ("scipy.sparse.csr", "scipy.sparse._csr"):
    _ALLOWED[(_module, "csr_matrix")] = _CsrMatrix


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, what: str) -> None:
        super().__init__(file, encoding="latin1")  # Python-2 pickles: str -> latin1 text (numpy's convention)
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.what} names {module}.{name}; zoo reads only numpy arrays, chumpy arrays, scipy sparse "
                "matrices and tensors from pickles, and never runs pickled code. Is this the right file?"
            )
        return found


def load_pickle(path: str | Path, what: str | None = None) -> Any:
    """Unpickle `path` through the restricted table (stand-ins left in place; see `to_plain`)."""
    path = Path(path)
    with open(path, "rb") as handle:
        return _RestrictedUnpickler(handle, what or str(path)).load()


def load_npy_object(path: str | Path) -> Any:
    """An `.npy` file holding a pickled object array (what `np.save` writes for a dict): the object inside."""
    path = Path(path)
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        if not dtype.hasobject:
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
        array = _RestrictedUnpickler(handle, str(path)).load()
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise ValueError(f"{path} is not a numpy object array of shape {shape}")
    return array[()] if array.shape == () else array


def _dense_sparse(matrix: _SparseMatrix, where: str) -> np.ndarray:
    state = getattr(matrix, "state", None)
    if not isinstance(state, dict):
        raise ValueError(f"{where}: the sparse matrix has no readable state")
    shape = state.get("_shape", state.get("shape"))
    try:
        rows, cols = (int(v) for v in shape)
        data = np.asarray(to_plain(state["data"], where), dtype=np.float64).ravel()
        indices = np.asarray(to_plain(state["indices"], where), dtype=np.int64).ravel()
        indptr = np.asarray(to_plain(state["indptr"], where), dtype=np.int64).ravel()
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: the sparse matrix lacks data/indices/indptr/shape ({err})") from None
    major = cols if matrix.layout == "csc" else rows
    if indptr.shape != (major + 1,) or indices.shape != data.shape or int(indptr[-1]) != data.size:
        raise ValueError(f"{where}: inconsistent sparse matrix (indptr {indptr.shape}, {data.size} values)")
    dense = np.zeros((rows, cols), dtype=np.float64)
    lanes = np.repeat(np.arange(major), np.diff(indptr))
    if matrix.layout == "csc":
        np.add.at(dense, (indices, lanes), data)
    else:
        np.add.at(dense, (lanes, indices), data)
    return dense


def to_plain(obj: Any, where: str = "pickle") -> Any:
    """Replace the stand-ins (recursively through dicts, lists and tuples) by numpy arrays."""
    if isinstance(obj, _ChumpyArray):
        state = getattr(obj, "state", None)
        value = state.get("x") if isinstance(state, dict) else None
        if isinstance(value, _ChumpyArray):
            return to_plain(value, where)
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{where}: a chumpy array without a stored value (keys {sorted(state or {})})")
        return value
    if isinstance(obj, _SparseMatrix):
        return _dense_sparse(obj, where)
    if isinstance(obj, dict):
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, where) for v in obj)
    return obj
