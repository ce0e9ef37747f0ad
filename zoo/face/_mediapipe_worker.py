"""MediaPipe's 478 face-mesh landmarks of images, usable in-process or as a script in another environment.

mediapipe 0.10.21 (the last release that bundles its face models) pins numpy < 2; where that conflicts with zoo's
environment, install it in a separate one and point `ZOO_MEDIAPIPE_PYTHON` at that interpreter: zoo then runs this
file there (it imports only numpy, pillow, mediapipe and, for videos, the OpenCV that mediapipe depends on) and reads
the landmarks from its stdout.

    python _mediapipe_worker.py IMAGE [FACE_LANDMARKER_TASK]
        ->  {"landmarks": [[x, y], ...] or null, "size": [W, H]}
    python _mediapipe_worker.py --batch LIST_FILE [--max-faces N] [--depth] [--task FACE_LANDMARKER_TASK]
        ->  one line per image of LIST_FILE (one path a line): {"image": PATH, "size": [W, H], "faces": [[[x, y(, z)],
            ...], ...]}
    python _mediapipe_worker.py --frames VIDEO OUT_DIR [--every K]
        ->  writes every K-th frame of VIDEO as OUT_DIR/NNNNNN.png; one line {"frames": [...], "fps": F}

Without a `.task` file the bundled legacy FaceMesh (refined, 478 points) runs; with TEASER's `face_landmarker.task`
the Tasks API runs as in the official `utils/mediapipe_utils.py` (detection/presence confidence 0.1).
Coordinates are pixels of the image (x * width, y * height); with `--depth` a third value `z * width` (MediaPipe's
relative depth, same scale as x, smaller = nearer the camera).
"""

from __future__ import annotations

import json
import sys

import numpy as np

MIN_CONFIDENCE = 0.1  # official min_face_detection_confidence / min_face_presence_confidence


def detect_faces(rgb: np.ndarray, task: str | None = None, max_faces: int = 1, depth: bool = False
                 ) -> list[np.ndarray]:
    """`[H, W, 3]` uint8 RGB -> one `[478, 2]` (or `[478, 3]` with `depth`) pixel array per face found."""
    import mediapipe as mp

    height, width = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if task:
        from mediapipe.tasks import python as mp_python
        from mediapipe.tasks.python import vision

        options = vision.FaceLandmarkerOptions(base_options=mp_python.BaseOptions(model_asset_path=task),
                                               num_faces=max_faces, min_face_detection_confidence=MIN_CONFIDENCE,
                                               min_face_presence_confidence=MIN_CONFIDENCE)
        with vision.FaceLandmarker.create_from_options(options) as detector:
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        faces = result.face_landmarks or []
    else:
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                                             min_detection_confidence=0.5) as mesh:
            result = mesh.process(rgb)
        faces = [face.landmark for face in (result.multi_face_landmarks or [])]
    out = []
    for points in faces:
        rows = [[p.x * width, p.y * height] + ([p.z * width] if depth else []) for p in points]
        out.append(np.array(rows, dtype=np.float64))
    return out


def detect_478(rgb: np.ndarray, task: str | None = None) -> np.ndarray | None:
    """`[H, W, 3]` uint8 RGB -> `[478, 2]` landmark pixels of the first face, or None when there is no face."""
    faces = detect_faces(rgb, task)
    return faces[0] if faces else None


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _batch(list_file: str, task: str | None, max_faces: int, depth: bool) -> None:
    with open(list_file, encoding="utf-8") as handle:
        paths = [line.strip() for line in handle if line.strip()]
    for path in paths:
        rgb = _read_rgb(path)
        faces = detect_faces(rgb, task, max_faces, depth)
        sys.stdout.write(json.dumps({"image": path, "size": [int(rgb.shape[1]), int(rgb.shape[0])],
                                     "faces": [f.tolist() for f in faces]}) + "\n")
        sys.stdout.flush()


def _frames(video: str, out_dir: str, every: int) -> None:
    import os

    import cv2  # mediapipe's own dependency (opencv-contrib-python)

    os.makedirs(out_dir, exist_ok=True)
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise SystemExit(f"OpenCV cannot open the video {video}")
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    written, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            path = os.path.join(out_dir, f"{index:06d}.png")
            cv2.imwrite(path, frame)
            written.append(path)
        index += 1
    capture.release()
    sys.stdout.write(json.dumps({"frames": written, "fps": fps, "count": index}) + "\n")


def _option(argv: list[str], name: str, default: str | None = None) -> str | None:
    if name in argv:
        i = argv.index(name)
        if i + 1 >= len(argv):
            raise SystemExit(f"{name} needs a value")
        return argv[i + 1]
    return default


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    if argv[0] == "--batch":
        _batch(argv[1], _option(argv, "--task"), int(_option(argv, "--max-faces", "1")), "--depth" in argv)
        return 0
    if argv[0] == "--frames":
        _frames(argv[1], argv[2], int(_option(argv, "--every", "1")))
        return 0
    rgb = _read_rgb(argv[0])
    points = detect_478(rgb, argv[1] if len(argv) > 1 else None)
    sys.stdout.write(json.dumps({"landmarks": None if points is None else points.tolist(),
                                 "size": [int(rgb.shape[1]), int(rgb.shape[0])]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
