"""MediaPipe's 478 face-mesh landmarks of one image, usable in-process or as a script in another environment.

mediapipe 0.10.21 (the last release that bundles its face models) pins numpy < 2; where that conflicts with zoo's
environment, install it in a separate one and point `ZOO_MEDIAPIPE_PYTHON` at that interpreter: zoo then runs this
file there (it imports only numpy, pillow and mediapipe) and reads the landmarks from its stdout.

    python _mediapipe_worker.py IMAGE [FACE_LANDMARKER_TASK]  ->  {"landmarks": [[x, y], ...] or null, "size": [W, H]}

Without a `.task` file the bundled legacy FaceMesh (refined, 478 points) runs; with TEASER's `face_landmarker.task`
the Tasks API runs as in the official `utils/mediapipe_utils.py` (one face, detection/presence confidence 0.1).
Coordinates are pixels of the image (x * width, y * height).
"""

from __future__ import annotations

import json
import sys

import numpy as np

MIN_CONFIDENCE = 0.1  # official min_face_detection_confidence / min_face_presence_confidence


def detect_478(rgb: np.ndarray, task: str | None = None) -> np.ndarray | None:
    """`[H, W, 3]` uint8 RGB -> `[478, 2]` landmark pixels of the first face, or None when there is no face."""
    import mediapipe as mp

    height, width = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if task:
        from mediapipe.tasks import python as mp_python
        from mediapipe.tasks.python import vision

        options = vision.FaceLandmarkerOptions(base_options=mp_python.BaseOptions(model_asset_path=task), num_faces=1,
                                               min_face_detection_confidence=MIN_CONFIDENCE,
                                               min_face_presence_confidence=MIN_CONFIDENCE)
        with vision.FaceLandmarker.create_from_options(options) as detector:
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not result.face_landmarks:
            return None
        points = result.face_landmarks[0]
    else:
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                             min_detection_confidence=0.5) as mesh:
            result = mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
    return np.array([[p.x * width, p.y * height] for p in points], dtype=np.float64)


def main(argv: list[str]) -> int:
    from PIL import Image

    if not argv:
        sys.stderr.write("usage: _mediapipe_worker.py IMAGE [FACE_LANDMARKER_TASK]\n")
        return 2
    with Image.open(argv[0]) as image:
        rgb = np.asarray(image.convert("RGB"))
    points = detect_478(rgb, argv[1] if len(argv) > 1 else None)
    sys.stdout.write(json.dumps({"landmarks": None if points is None else points.tolist(),
                                 "size": [int(rgb.shape[1]), int(rgb.shape[0])]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
