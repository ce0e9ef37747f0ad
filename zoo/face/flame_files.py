"""FLAME-format face models on disk: the official files, or one safetensors file.

A face model is a flat dict of numpy arrays under fixed names (the layout of the TEASER fixture's synthetic model):

| key | shape | from the official files |
|---|---|---|
| `model.f`, `model.v_template`, `model.shapedirs`, `model.posedirs`, `model.J_regressor`, `model.kintree_table`, `model.weights` | (F,3), (V,3), (V,3,S+E), (V,3,9(J-1)), (J,V), (2,J), (V,J) | FLAME 2020 `generic_model.pkl` |
| `lmk.static_lmk_faces_idx`, `lmk.static_lmk_bary_coords`, `lmk.dynamic_lmk_faces_idx`, `lmk.dynamic_lmk_bary_coords`, `lmk.full_lmk_faces_idx`, `lmk.full_lmk_bary_coords` | (51,), (51,3), (R,17), (R,17,3), (1,68), (1,68,3) | `landmark_embedding.npy` |
| `mp.lmk_face_idx`, `mp.lmk_b_coords`, `mp.landmark_indices` (optional) | (105,), (105,3), (105,) | `mediapipe_landmark_embedding.npz` |
| `l_eyelid`, `r_eyelid` | (V,3) | `l_eyelid.npy`, `r_eyelid.npy` |
| `face_mask` | (K,) | `FLAME_masks.pkl["face"]` (the rendered face region) |
| optional: `masks.<region>`, `render.faces`, `lmk203.<key>` | | the other FLAME masks, `head_template.obj` faces, the 203-point embedding |
| optional: `templates.expression` | (N, E) | expression coefficient vectors for the training cycle path's template injection (FLAME: the FaMoS templates; zoo's offline model: coefficients of training frames) |

`S` shape components come first in `shapedirs` (300 for FLAME 2020, stated by the metadata `shape_components`), then
the expression components. The official files are licensed (FLAME: https://flame.is.tue.mpg.de, registration
required; the assets: https://github.com/Pixel-Talk/TEASER/tree/main/assets) and zoo never ships them:
`read_face_model` reads them from the user's disk, `save_face_model` writes the one-file form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.face.safe_pickle import load_npy_object, load_pickle, to_plain

__all__ = [
    "FLAME_URL",
    "TEASER_ASSETS_URL",
    "FaceModelFileError",
    "check_face_model",
    "read_face_model",
    "save_face_model",
]

FLAME_URL = "https://flame.is.tue.mpg.de"
TEASER_ASSETS_URL = "https://github.com/Pixel-Talk/TEASER/tree/main/assets"
FORMAT = "zoo.face-model/1"
FLAME_SHAPE_COMPONENTS = 300

MODEL_KEYS = ("f", "v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
LMK_KEYS = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
            "full_lmk_faces_idx", "full_lmk_bary_coords")
REQUIRED = (tuple(f"model.{k}" for k in MODEL_KEYS) + tuple(f"lmk.{k}" for k in LMK_KEYS)
            + ("mp.lmk_face_idx", "mp.lmk_b_coords", "l_eyelid", "r_eyelid", "face_mask"))
OPTIONAL_PREFIXES = ("mp.", "masks.", "render.", "lmk203.", "templates.")

# the official files, relative to TEASER's assets/ folder
_PKL = ("FLAME2020/generic_model.pkl", "generic_model.pkl")
_ASSETS = {
    "landmark_embedding.npy": "landmark_embedding.npy",
    "l_eyelid.npy": "l_eyelid.npy",
    "r_eyelid.npy": "r_eyelid.npy",
    "mediapipe_landmark_embedding.npz": "mediapipe_landmark_embedding/mediapipe_landmark_embedding.npz",
    "FLAME_masks.pkl": "FLAME_masks/FLAME_masks.pkl",
}


class FaceModelFileError(FileNotFoundError):
    """A face-model file is missing or is not what it should be; the message says where to get it."""


def _flame_missing(where: str) -> FaceModelFileError:
    return FaceModelFileError(
        f"the FLAME 2020 model (generic_model.pkl) was not found: {where}. FLAME is licensed and cannot be "
        f"shipped: register at {FLAME_URL}, download FLAME2020.zip and unzip it into TEASER's assets/ folder "
        "(assets/FLAME2020/generic_model.pkl, as the official quick_install.sh does); then pass that assets folder, "
        "or the .pkl with assets=<the assets folder>. A FLAME-format .safetensors file (zoo.face.flame_files."
        "save_face_model) works too."
    )


def _asset_missing(name: str, folder: Path) -> FaceModelFileError:
    return FaceModelFileError(
        f"{name} was not found in {folder}: it is one of the FLAME assets of the TEASER repository "
        f"({TEASER_ASSETS_URL}/{_ASSETS[name]}); clone or download that assets/ folder and pass it as the face "
        "model folder (or assets=<folder> next to generic_model.pkl)"
    )


# -- official files ------------------------------------------------------------------------------------------------
def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors inside landmark_embedding.npy
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _read_obj_faces(path: Path) -> np.ndarray:
    """The vertex indices of the `f` lines of an OBJ file (0-based; `v/vt/vn` corners and polygons of 3 only)."""
    faces = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.startswith("f "):
                continue
            corners = line.split()[1:]
            if len(corners) != 3:
                raise ValueError(f"{path}:{number}: only triangles are supported, got {len(corners)} corners")
            faces.append([int(corner.split("/")[0]) - 1 for corner in corners])
    if not faces:
        raise ValueError(f"{path} has no faces")
    return np.asarray(faces, dtype=np.int64)


def _official_pkl(path: Path) -> Path:
    if path.is_dir():
        for name in _PKL:
            if (path / name).is_file():
                return path / name
        raise _flame_missing(f"looked for {', '.join(str(path / n) for n in _PKL)}")
    if not path.is_file():
        raise _flame_missing(f"no file at {path}")
    return path


def _assets_folder(pkl: Path, assets: Path | None) -> Path:
    if assets is not None:
        if not assets.is_dir():
            raise FaceModelFileError(f"the FLAME assets folder {assets} does not exist (TEASER's assets/: "
                                     f"{TEASER_ASSETS_URL})")
        return assets
    for folder in (pkl.parent, pkl.parent.parent):
        if (folder / "landmark_embedding.npy").is_file():
            return folder
    raise _asset_missing("landmark_embedding.npy", pkl.parent.parent)


def _read_official(pkl: Path, assets: Path | None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    folder = _assets_folder(pkl, assets)
    files = {name: folder / rel for name, rel in _ASSETS.items()}
    for name, file in files.items():
        if not file.is_file() and not (folder / name).is_file():
            raise _asset_missing(name, folder)
        if not file.is_file():
            files[name] = folder / name
    raw = to_plain(load_pickle(pkl, f"the FLAME model {pkl}"), str(pkl))
    if not isinstance(raw, dict):
        raise ValueError(f"{pkl} does not hold a FLAME model (a dict of arrays), got {type(raw).__name__}")
    missing = [k for k in MODEL_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{pkl} lacks {missing}; is it FLAME 2020's generic_model.pkl?")
    arrays = {f"model.{k}": np.asarray(raw[k]) for k in MODEL_KEYS}
    lmk = load_npy_object(files["landmark_embedding.npy"])
    if not isinstance(lmk, dict) or any(k not in lmk for k in LMK_KEYS):
        raise ValueError(f"{files['landmark_embedding.npy']} is not the FLAME landmark embedding (needs {LMK_KEYS})")
    arrays.update({f"lmk.{k}": _as_numpy(lmk[k]) for k in LMK_KEYS})
    for side in ("l", "r"):
        arrays[f"{side}_eyelid"] = np.asarray(load_npy_object(files[f"{side}_eyelid.npy"]))
    with np.load(files["mediapipe_landmark_embedding.npz"], allow_pickle=False) as mp:
        arrays["mp.lmk_face_idx"] = mp["lmk_face_idx"]
        arrays["mp.lmk_b_coords"] = mp["lmk_b_coords"]
        if "landmark_indices" in mp.files:
            arrays["mp.landmark_indices"] = mp["landmark_indices"]
    masks = to_plain(load_pickle(files["FLAME_masks.pkl"]), str(files["FLAME_masks.pkl"]))
    if not isinstance(masks, dict) or "face" not in masks:
        raise ValueError(f"{files['FLAME_masks.pkl']} has no 'face' region")
    arrays["face_mask"] = np.asarray(masks["face"])
    arrays.update({f"masks.{k}": np.asarray(v) for k, v in masks.items() if k != "face"})
    template = folder / "head_template.obj"
    if template.is_file():
        arrays["render.faces"] = _read_obj_faces(template)
    extra = folder / "203_landmark_embeding_new.npz"  # the official spelling; training only
    if extra.is_file():
        with np.load(extra, allow_pickle=False) as emb:
            arrays.update({f"lmk203.{k}": emb[k] for k in emb.files})
    meta = {"format": FORMAT, "source": "FLAME 2020 generic_model.pkl + TEASER assets",
            "shape_components": str(FLAME_SHAPE_COMPONENTS), "license": f"FLAME licence ({FLAME_URL})"}
    return arrays, meta


# -- the one-file form ---------------------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = dict(handle.metadata() or {})
            keys = [k for k in handle.keys() if k in REQUIRED or k.startswith(OPTIONAL_PREFIXES)]
            arrays = {k: handle.get_tensor(k) for k in keys}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for damaged files
        raise ValueError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    if "format" in meta and meta["format"] != FORMAT:
        raise ValueError(f"{path} is a {meta['format']!r} file, not a FLAME-format face model ({FORMAT})")
    return arrays, meta


def check_face_model(arrays: dict[str, np.ndarray], where: str = "face model") -> None:
    """Raise a ValueError listing every missing array and every shape that does not fit the others."""
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{where} lacks {missing}; a FLAME-format face model needs {list(REQUIRED)}")
    a = {k: np.asarray(v) for k, v in arrays.items()}
    verts = a["model.v_template"].shape[0]
    faces = a["model.f"].shape[0]
    joints = a["model.J_regressor"].shape[0]
    expect = {
        "model.v_template": (verts, 3), "model.f": (faces, 3), "model.J_regressor": (joints, verts),
        "model.kintree_table": (2, joints), "model.weights": (verts, joints),
        "model.posedirs": (verts, 3, 9 * (joints - 1)), "l_eyelid": (verts, 3), "r_eyelid": (verts, 3),
        "lmk.static_lmk_bary_coords": (a["lmk.static_lmk_faces_idx"].shape[0], 3),
        "lmk.dynamic_lmk_bary_coords": a["lmk.dynamic_lmk_faces_idx"].shape + (3,),
        "lmk.full_lmk_bary_coords": a["lmk.full_lmk_faces_idx"].shape + (3,),
        "mp.lmk_b_coords": (a["mp.lmk_face_idx"].shape[0], 3),
    }
    problems = [f"{k} has shape {a[k].shape}, expected {shape}" for k, shape in expect.items()
                if tuple(a[k].shape) != tuple(shape)]
    if a["model.shapedirs"].ndim != 3 or a["model.shapedirs"].shape[:2] != (verts, 3):
        problems.append(f"model.shapedirs has shape {a['model.shapedirs'].shape}, expected ({verts}, 3, S+E)")
    if a["lmk.full_lmk_faces_idx"].ndim != 2 or a["lmk.dynamic_lmk_faces_idx"].ndim != 2:
        problems.append("lmk.full_lmk_faces_idx must be (1, 68) and lmk.dynamic_lmk_faces_idx (rows, 17)")
    for key in ("model.f", "face_mask") + (("render.faces",) if "render.faces" in a else ()):
        if a[key].size and (a[key].min() < 0 or a[key].max() >= verts):
            problems.append(f"{key} indexes vertices outside [0, {verts})")
    for key in ("lmk.static_lmk_faces_idx", "lmk.dynamic_lmk_faces_idx", "lmk.full_lmk_faces_idx",
                "mp.lmk_face_idx"):
        if a[key].size and (a[key].min() < 0 or a[key].max() >= faces):
            problems.append(f"{key} indexes faces outside [0, {faces})")
    if problems:
        raise ValueError(f"{where} is inconsistent:\n  " + "\n  ".join(problems))


def read_face_model(path: str | Path, assets: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a face model: `(arrays, metadata)` with the keys of the module docstring.

    Args:
        path: a FLAME-format `.safetensors` file; FLAME 2020's `generic_model.pkl`; or TEASER's `assets/` folder
            holding `FLAME2020/generic_model.pkl` and the landmark/eyelid/mask files.
        assets: the folder of those companion files when `path` is a `.pkl` stored elsewhere (default: the
            `.pkl`'s folder, then its parent, i.e. the official `assets/FLAME2020/` layout).
    """
    path = Path(path).expanduser()
    assets_path = None if assets is None else Path(assets).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FaceModelFileError(f"no FLAME-format face model at {path} (written by zoo.face.flame_files."
                                     f"save_face_model from the official FLAME files; FLAME: {FLAME_URL})")
        arrays, meta = _read_safetensors(path)
    elif path.suffix == ".pkl" or path.is_dir():
        arrays, meta = _read_official(_official_pkl(path), assets_path)
    elif not path.exists():
        raise _flame_missing(f"no file or folder at {path}")
    else:
        raise ValueError(f"{path} is neither a FLAME-format .safetensors file, a FLAME .pkl nor a folder")
    check_face_model(arrays, str(path))
    meta.setdefault("shape_components", str(FLAME_SHAPE_COMPONENTS))
    return arrays, meta


def save_face_model(arrays: dict[str, np.ndarray], path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write a face model as one safetensors file (checked first). Keep it private when it holds FLAME data: the
    FLAME licence does not allow redistribution."""
    from safetensors.numpy import save_file

    from zoo.atomic import atomic_path

    check_face_model(arrays, "the face model to save")
    keep = {k: np.ascontiguousarray(v) for k, v in arrays.items() if k in REQUIRED or k.startswith(OPTIONAL_PREFIXES)}
    meta = {"format": FORMAT, "shape_components": str(FLAME_SHAPE_COMPONENTS)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(keep, str(tmp), metadata=meta)
    return path
