"""The face model a TEASER tokenizer draws with: FLAME + the face-region renderer, found from one setting.

`face_model` (a constructor kwarg of `Teaser`) says where it comes from:

* a path: a FLAME-format `.safetensors` file, FLAME 2020's `generic_model.pkl` (companion files from
  `face_model_assets`, else beside it / one folder up, the official `assets/FLAME2020/` layout), or TEASER's
  `assets/` folder holding `FLAME2020/generic_model.pkl`;
* `"stand-in"`: the procedural ellipsoid of `zoo.face.standin` (tests and smoke runs; not a face);
* `"mediapipe-pca"`: zoo's bundled offline face model (`zoo/data/face/mediapipe_pca.safetensors`, built by
  `scripts/teaser/build_face_model.py`, see `zoo.face.mesh_model`): FLAME's file layout, MediaPipe's mesh, not FLAME;
* None: the default place, `$ZOO_FLAME` (a path as above), else `$ZOO_HOME/flame/` (default `~/.cache/zoo/flame/`)
  holding `face_model.safetensors` or the TEASER `assets/` content.

It is loaded on first use (encoding and `generate` never need it) and is not part of the tokenizer's weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from zoo.face.flame import FLAME
from zoo.face.flame_files import (
    FLAME_SHAPE_COMPONENTS,
    FLAME_URL,
    TEASER_ASSETS_URL,
    FaceModelFileError,
    read_face_model,
)
from zoo.face.render import FaceRenderer

__all__ = ["BUNDLED", "STAND_IN", "FaceModel", "default_face_model_path", "load_face_model"]

STAND_IN = "stand-in"
DEFAULT_FILE = "face_model.safetensors"
BUNDLED = {"mediapipe-pca": Path(__file__).resolve().parents[2] / "data" / "face" / "mediapipe_pca.safetensors"}


def default_face_model_path() -> Path:
    """`$ZOO_FLAME`, else `$ZOO_HOME/flame/face_model.safetensors` when present, else `$ZOO_HOME/flame/`."""
    from zoo.weights import zoo_home

    env = os.environ.get("ZOO_FLAME")
    if env:
        return Path(env).expanduser()
    folder = zoo_home() / "flame"
    return folder / DEFAULT_FILE if (folder / DEFAULT_FILE).is_file() else folder


# training-side tables of a face model, kept as non-persistent buffers: (array key, buffer name)
_TABLES = (("mp.landmark_indices", "mp_indices"), ("lmk203.landmark_indices", "dense_indices"),
           ("lmk203.landmark_front_indices", "dense_front"), ("lmk203.landmark_left_indices", "dense_left"),
           ("lmk203.landmark_right_indices", "dense_right"), ("templates.expression", "expression_templates"))


class FaceModel(nn.Module):
    """FLAME and the renderer of its face region (non-persistent buffers only), plus what training reads from the
    face-model file: `mp_indices` (the detector ids of the 105 MediaPipe points), the dense (203-point) set's
    `dense_indices` and its `dense_front` / `dense_left` / `dense_right` subsets, `expression_templates`, each None
    when the file lacks it, and `meta` (the file's metadata; `meta["dense_landmarks"]` says where the dense targets
    come from: "mediapipe" points or a 203-point detector's "file")."""

    def __init__(self, flame: FLAME, renderer: FaceRenderer, source: str, arrays: dict | None = None,
                 meta: dict | None = None) -> None:
        super().__init__()
        self.flame = flame
        self.renderer = renderer
        self.source = source
        self.meta = dict(meta or {})
        for key, name in _TABLES:
            value = None if arrays is None or key not in arrays else torch.as_tensor(arrays[key])
            if value is not None:
                value = value.float() if value.is_floating_point() else value.long()
            self.register_buffer(name, value, persistent=False)


def load_face_model(face_model: str | None, assets: str | None = None, n_shape: int = 300, n_exp: int = 50,
                    image_size: int = 224) -> FaceModel:
    """Build the `FaceModel` that `face_model` names (see the module docstring)."""
    if face_model == STAND_IN:
        from zoo.face.standin import stand_in_face_model

        arrays, meta, source = stand_in_face_model(), {}, "the procedural stand-in (zoo.face.standin)"
    elif face_model in BUNDLED:
        path = BUNDLED[face_model]
        if not path.is_file():
            raise FaceModelFileError(f"the bundled face model {face_model!r} is missing from {path}; rebuild it with "
                                     "scripts/teaser/build_face_model.py (docs/teaser.md)")
        arrays, meta = read_face_model(path)
        source = f"{face_model} ({path})"
    else:
        path = Path(face_model).expanduser() if face_model else default_face_model_path()
        if face_model is None and not path.exists():
            raise FaceModelFileError(
                f"this TEASER tokenizer has no face model: FLAME, rendering and decoding need one. None was given "
                f"and the default place {path} is empty. FLAME 2020 is licensed and not shipped with zoo: register "
                f"at {FLAME_URL}, download FLAME2020.zip, put generic_model.pkl at {path}/FLAME2020/ together with "
                f"the TEASER assets ({TEASER_ASSETS_URL}) in {path}/, or set ZOO_FLAME, or pass "
                "face_model=<file or folder> to zoo.load / zoo.from_official(..., flame=...)"
            )
        arrays, meta = read_face_model(path, assets)
        source = str(path)
    flame = FLAME(arrays, n_shape, n_exp, int(meta.get("shape_components", FLAME_SHAPE_COMPONENTS)))
    faces = torch.as_tensor(arrays.get("render.faces", arrays["model.f"])).long()
    renderer = FaceRenderer(faces, torch.as_tensor(arrays["face_mask"]).long(), image_size)
    return FaceModel(flame, renderer, source, arrays, meta)
