"""Face crops with their detector landmarks, for TEASER training (dataset type `face_landmarks`).

A face corpus is a folder with `manifest.json` and the files it names (`scripts/teaser/build_face_corpus.py`
writes one; any detector's output in this format works):

    {"items": [{"picture": "a.jpg", "landmarks": "a_face0.npz", "split": "train", "identity": "anna"}, ...]}

Pictures and npz files live in `items/` (or beside the manifest). Each npz holds, in the picture's pixels:

* `mediapipe` `[478, 2 or 3]`: MediaPipe's face mesh; its box sets the crop (the official `crop_face`), its hull the
  face region cut out of the generator's background, 105 of its points the MediaPipe landmark loss, and (for zoo's
  offline face model) all 468 the dense pose-dependent loss;
* `fan68` `[68, 2]`: FAN / dlib 68 iBUG points (the contour loss, the mouth and eye boxes of the region loss);
  missing -> `fan_valid` False and the boxes come from MediaPipe's lips and eyes;
* `lmk203` `[K, 2]` (optional): the points of TEASER's 203-point detector (precomputed files, e.g. by the official
  `apply_203_to_dataset.py`), used with FLAME's 203-point embedding (`dense="file"`).

At least one of `mediapipe` and `fan68` is needed (a dlib-only corpus works). Without `mediapipe` the crop comes from
the 68-point box mapped onto MediaPipe's (`zoo.face.crop`, as `read_face` with dlib), `mp_valid` is False (the
MediaPipe and, for zoo's face model, dense losses skip the face), and `hull_points` is NaN: the model then cuts the
hull of its rendered face region out of the background, as at inference without MediaPipe.

Training items follow the official augmentation (`datasets/base_dataset.py`): a crop of U(1.2, 1.8) x the
MediaPipe box, then a random similarity (shift +-5 %, scale +-10 %, rotation +-10 degrees, p 0.9; black outside)
and colour changes (brightness/contrast, gamma, hue/saturation jitter, Gaussian noise, blur). Geometry is one
similarity warp, so every landmark is moved exactly. Everything random is a function of (seed, rank, epoch, index)
(`zoo.data.SeededDataset`).

Each item is a dict: `image` `[3, S, S]` in [0, 1]; `landmarks_fan` `[68, 2]` and `landmarks_mp` `[478, 2]` in
the crop's [-1, 1] coordinates (`pixel / S * 2 - 1`, x right, y down, as TEASER; 468-point files are padded to 478
rows by repeating point 0); `fan_valid`; `hull_points`
`[478, 2]` crop pixels (NaN without MediaPipe); `mp_valid`; `region_mask` `[1, S, S]` (mouth box + eye boxes, the official region-loss mask); with
`dense="file"` also `landmarks_203` `[K, 2]` and `dense_valid`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.common import SeededDataset
from zoo.data.factory import register_dataset
from zoo.face import mediapipe_topology as mpt
from zoo.face.crop import crop_transform

__all__ = ["FaceLandmarks", "read_corpus", "region_mask", "warp_image"]

MP_POINTS = 478  # MediaPipe's refined face mesh (468 vertices + 10 iris points): the row count of missing entries
FAN_MOUTH = tuple(range(48, 61))  # official kp_mouth_indices
FAN_EYES = tuple(range(36, 48))  # official kp_eyes_indicis
MP_EYES = mpt.RIGHT_EYE_UPPER + mpt.RIGHT_EYE_LOWER + mpt.LEFT_EYE_UPPER + mpt.LEFT_EYE_LOWER + (33, 133, 263, 362)


def read_corpus(root: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The manifest items of a face corpus (those of `split` when given), with absolute `picture` / `landmarks`."""
    root = Path(root).expanduser()
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"no face corpus at {root}: it needs manifest.json (scripts/teaser/"
                                "build_face_corpus.py writes one; the format is in zoo/face/data.py)")
    items = json.loads(manifest.read_text())
    items = items["items"] if isinstance(items, dict) else items
    out = []
    for item in items:
        if split is not None and item.get("split", "train") != split:
            continue
        entry = dict(item)
        for key in ("picture", "landmarks"):
            for folder in (root / "items", root):
                if (folder / item[key]).is_file():
                    entry[key] = str(folder / item[key])
                    break
            else:
                raise FileNotFoundError(f"{manifest} names {item[key]!r}, which is neither in {root / 'items'} nor "
                                        f"in {root}")
        out.append(entry)
    if not out:
        raise ValueError(f"{manifest} has no items" + (f" in split {split!r}" if split else ""))
    return out


def warp_image(image: torch.Tensor, transform: np.ndarray, size: int) -> torch.Tensor:
    """`[3, H, W]` image, 3 x 3 similarity (picture pixels -> crop pixels, pixel centres at integers) -> the
    `[3, size, size]` crop (bilinear, black outside; the official skimage `warp`)."""
    height, width = image.shape[-2:]
    inverse = np.linalg.inv(transform)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="xy"), -1).reshape(-1, 2)
    source = grid @ inverse[:2, :2].T + inverse[:2, 2]
    norm = np.stack([source[:, 0] * 2 / max(width - 1, 1) - 1, source[:, 1] * 2 / max(height - 1, 1) - 1], -1)
    norm = torch.from_numpy(norm).to(image.dtype).view(1, size, size, 2)
    return F.grid_sample(image[None], norm, mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points[:, :2] @ transform[:2, :2].T + transform[:2, 2]


def _box(points: np.ndarray, margin: float, size: int) -> tuple[int, int, int, int]:
    """The official region box: the points' box (truncated to ints) grown by `margin` x its size on each side."""
    x0, y0 = (int(v) for v in points.min(0))
    x1, y1 = (int(v) for v in points.max(0))
    w, h = x1 - x0, y1 - y0
    return (max(0, x0 - int(w * margin)), max(0, y0 - int(h * margin)), min(size, x1 + int(w * margin)),
            min(size, y1 + int(h * margin)))


def region_mask(fan68: np.ndarray | None, mediapipe: np.ndarray | None, size: int) -> torch.Tensor:
    """`[1, S, S]`: 1 inside the mouth box (+50 %), 1 inside the eyes box (+20 %), 2 where they overlap
    (official `1 - mask_mouth + 1 - mask_eyes`); from the 68 points, else from MediaPipe's lips and eyes."""
    mask = torch.zeros(1, size, size)
    mouth = fan68[list(FAN_MOUTH)] if fan68 is not None else mediapipe[list(mpt.MOUTH_REGION)]
    eyes = fan68[list(FAN_EYES)] if fan68 is not None else mediapipe[list(MP_EYES)]
    for points, margin in ((mouth, 0.5), (eyes, 0.2)):
        x0, y0, x1, y1 = _box(points, margin, size)
        if x1 >= x0 and y1 >= y0:
            mask[:, max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] += 1.0
    return mask


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _chance(g: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=g)) < p


def _check_gain_spread(name: str, spread: float) -> float:
    if not 0.0 <= float(spread) < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (gains drawn from U(1 - {name[0]}, 1 + {name[0]})), got {spread}")
    return float(spread)


def _channel_gains(g: torch.Generator, spread: float) -> torch.Tensor:
    """R, G, B gains from U(1 - spread, 1 + spread), `[3, 1, 1]`."""
    return torch.tensor([_uniform(g, 1 - spread, 1 + spread) for _ in range(3)])[:, None, None]


def _augment_colour(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness/contrast (p 0.5), gamma (p 0.5), hue-free saturation/brightness jitter (p 0.25), blur (p 0.1),
    Gaussian noise (p 0.5): the official albumentations list without CLAHE and RGB shift."""
    if _chance(g, 0.5):
        image = (image - 0.5) * _uniform(g, 0.8, 1.2) + 0.5 + _uniform(g, -0.2, 0.2)
    image = image.clamp(0, 1)
    if _chance(g, 0.5):
        image = image.pow(_uniform(g, 0.8, 1.2))
    if _chance(g, 0.25):
        grey = image.mean(0, keepdim=True)
        image = (grey + (image - grey) * _uniform(g, 0.95, 1.05)) * _uniform(g, 0.95, 1.05)
    if _chance(g, 0.1):
        kernel = torch.ones(3, 1, 3, 3) / 9
        image = F.conv2d(F.pad(image[None], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)[0]
    if _chance(g, 0.5):
        image = image + torch.randn(image.shape, generator=g) * _uniform(g, 0.01, 0.04)
    return image.clamp(0, 1)


@register_dataset("face_landmarks", path_arg="root")
class FaceLandmarks(SeededDataset):
    """Face crops and landmarks of a face corpus (see the module docstring).

    Args:
        root: the corpus folder (manifest.json).
        split: which items ("train", "heldout", ...; None: all).
        image_size: crop side (TEASER: 224).
        scale: crop size as a multiple of the MediaPipe box: a (low, high) range drawn per item, or one number.
        augment: the random similarity and colour changes (training); False gives the plain crop.
        white_balance: with `augment`, every crop's R, G and B are scaled by gains drawn from U(1 - w, 1 + w) (0:
            off, the official list). A trick for few identities: the skin colours the generator can memorise vary,
            so the appearance tokens must carry each face's colour (session 11, docs/teaser.md).
        background_balance: with `augment`, R, G and B gains from U(1 - b, 1 + b) applied outside the face's hull
            only (the seam softened over ~9 px; 0: off). Decouples the face's colour from its surroundings, so the
            generator cannot guess the face colour from the background it is shown (session 11, docs/teaser.md).
        repeat_single: repeat identities with a single face this many times (they are otherwise drowned by video
            frames of one person).
        dense: "mediapipe" (dense targets are MediaPipe points, zoo's offline face model) or "file" (the npz's
            `lmk203`, FLAME's 203-point embedding).
        items: manifest items (`read_corpus`) instead of `root` / `split`.
        seed, rank, skip_unreadable: see `zoo.data.SeededDataset`.
    """

    def __init__(self, root: str | Path | None = None, split: str | None = "train", image_size: int = 224,
                 scale: float | tuple[float, float] | list[float] = (1.2, 1.8), augment: bool = True,
                 repeat_single: int = 1, dense: str = "mediapipe", white_balance: float = 0.0,
                 background_balance: float = 0.0, seed: int = 0, rank: int | None = None,
                 skip_unreadable: bool = False, items: list[dict[str, Any]] | None = None) -> None:
        super().__init__(seed, rank, skip_unreadable)
        if dense not in ("mediapipe", "file"):
            raise ValueError(f"dense must be 'mediapipe' or 'file', got {dense!r}")
        scale = (float(scale), float(scale)) if isinstance(scale, (int, float)) else tuple(float(s) for s in scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be a positive number or a (low, high) range, got {scale}")
        if int(repeat_single) < 1:
            raise ValueError(f"repeat_single must be >= 1, got {repeat_single}")
        self.white_balance = _check_gain_spread("white_balance", white_balance)
        self.background_balance = _check_gain_spread("background_balance", background_balance)
        self.image_size, self.scale, self.augment, self.dense = int(image_size), scale, bool(augment), dense
        if items is None:
            if root is None:
                raise ValueError("FaceLandmarks needs the corpus folder (root) or its items (read_corpus)")
            items = read_corpus(root, split)
        counts: dict[str, int] = {}
        for item in items:
            counts[item.get("identity", item["picture"])] = counts.get(item.get("identity", item["picture"]), 0) + 1
        self.items = []
        for item in items:
            times = int(repeat_single) if counts[item.get("identity", item["picture"])] == 1 else 1
            self.items += [item] * times
        self.identities = sorted(counts)

    def _recolour_background(self, image: torch.Tensor, points_px: np.ndarray,
                             generator: torch.Generator) -> torch.Tensor:
        """`background_balance`: gains outside the hull of the face's crop-pixel points, the seam blurred (9 px box)."""
        from zoo.face.render import face_hull_mask

        gains = _channel_gains(generator, self.background_balance)
        outside = face_hull_mask(torch.from_numpy(points_px).float()[None], self.image_size)[0]
        outside = F.avg_pool2d(F.pad(outside[None], (4, 4, 4, 4), mode="replicate"), 9, stride=1)[0]
        return (image * (1 + outside * (gains - 1))).clamp(0, 1)

    def load(self, item: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        from zoo.data.transforms import to_tensor
        from zoo.io import open_image

        size = self.image_size
        picture = to_tensor(open_image(item["picture"]))
        with np.load(item["landmarks"]) as data:
            mediapipe = np.asarray(data["mediapipe"], dtype=np.float64)[:, :2] if "mediapipe" in data.files else None
            fan68 = np.asarray(data["fan68"], dtype=np.float64)[:, :2] if "fan68" in data.files else None
            dense = np.asarray(data["lmk203"], dtype=np.float64)[:, :2] if "lmk203" in data.files else None
        if mediapipe is None and fan68 is None:
            raise ValueError(f"{item['landmarks']} holds neither 'mediapipe' (MediaPipe's 478 points) nor 'fan68' "
                             "(dlib / FAN 68 points); a face needs at least one of them")
        if mediapipe is not None and mediapipe.shape[0] < mpt.NUM_MESH_VERTICES:
            raise ValueError(f"{item['landmarks']}: 'mediapipe' must hold MediaPipe's 478 (or 468) points, got "
                             f"{mediapipe.shape}")
        if mediapipe is not None and mediapipe.shape[0] < MP_POINTS:  # 468 mesh points: the hull is the same with
            mediapipe = np.concatenate([mediapipe, np.repeat(mediapipe[:1], MP_POINTS - len(mediapipe), 0)])  # repeats
        if fan68 is not None and fan68.shape[0] != 68:
            raise ValueError(f"{item['landmarks']}: 'fan68' must hold the 68 iBUG points, got {fan68.shape}")
        scale = _uniform(generator, *self.scale) if self.augment else self.scale[0]
        transform = crop_transform(mediapipe, scale, size) if mediapipe is not None else \
            crop_transform(fan68, scale, size, detector="dlib")
        if self.augment and _chance(generator, 0.9):
            angle = math.radians(_uniform(generator, -10, 10))
            zoom = 1 + _uniform(generator, -0.1, 0.1)
            shift = np.array([_uniform(generator, -0.05, 0.05), _uniform(generator, -0.05, 0.05)]) * size
            centre = np.array([(size - 1) / 2, (size - 1) / 2])
            rot = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            extra = np.eye(3)
            extra[:2, :2] = rot
            extra[:2, 2] = centre - rot @ centre + shift
            transform = extra @ transform
        image = warp_image(picture, transform, size)
        image = torch.floor(image * 255 + 1e-4).clamp(0, 255) / 255  # uint8 pixels, as the official crop
        mp_px = _apply(transform, mediapipe) if mediapipe is not None else None
        fan_px = _apply(transform, fan68) if fan68 is not None else None
        if self.augment:
            image = _augment_colour(image, generator)
            if self.white_balance > 0:
                image = (image * _channel_gains(generator, self.white_balance)).clamp(0, 1)
            if self.background_balance > 0:
                image = self._recolour_background(image, mp_px if mp_px is not None else fan_px, generator)
        out = {
            "image": image.float(),
            "landmarks_mp": torch.from_numpy(mp_px / size * 2 - 1).float() if mp_px is not None
            else torch.zeros(MP_POINTS, 2),
            "mp_valid": torch.tensor(mp_px is not None),
            "landmarks_fan": torch.from_numpy(fan_px / size * 2 - 1).float() if fan_px is not None
            else torch.zeros(68, 2),
            "fan_valid": torch.tensor(fan_px is not None),
            "hull_points": torch.from_numpy(mp_px).float() if mp_px is not None
            else torch.full((MP_POINTS, 2), float("nan")),
            "region_mask": region_mask(fan_px, mp_px, size),
        }
        if self.dense == "file":
            out["landmarks_203"] = torch.from_numpy(_apply(transform, dense) / size * 2 - 1).float() \
                if dense is not None else torch.zeros(203, 2)
            out["dense_valid"] = torch.tensor(dense is not None)
        return out
