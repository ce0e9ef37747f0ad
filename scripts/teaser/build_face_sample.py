"""Write the bundled face sample for `make demo` (`zoo/data/samples/face.png` + `face.json`).

The face is scikit-image's `astronaut` (Eileen Collins, NASA portrait, public domain): the only face photo among the
offline sources with a clear licence. It is a *training* face of the bundled teaser-fsq-tiny (its held-out numbers
are in docs/teaser.md). The crop is the evaluation protocol's (`recipes/teaser/evaluate.py`: scale 1.4 of the
MediaPipe box, 224 px); `face.json` keeps MediaPipe's 478 points in crop pixels, the `hull_points` of `encode`.

    python scripts/teaser/build_face_sample.py --corpus runs/teaser-faces
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="face corpus of scripts/teaser/build_face_corpus.py")
    parser.add_argument("--out", type=Path, default=REPO / "zoo" / "data" / "samples")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "recipes" / "teaser"))
    from evaluate import load_faces

    from zoo.face.data import read_corpus
    from zoo.io import write_image

    items = [i for i in read_corpus(args.corpus, "train") if i.get("source") == "skimage/astronaut.png"]
    if len(items) != 1:
        sys.exit(f"expected one astronaut face in {args.corpus}, found {len(items)}")
    faces = load_faces(items)
    write_image(faces["image"][0], args.out / "face.png")
    points = [[round(float(x), 2), round(float(y), 2)] for x, y in faces["hull_points"][0].tolist()]
    record = {"source": "skimage.data.astronaut() (NASA, public domain)", "crop": "scale 1.4 of the MediaPipe box, "
              "224 px", "hull_points": points}
    (args.out / "face.json").write_text(json.dumps(record) + "\n")
    print(f"wrote {args.out / 'face.png'} and face.json ({len(points)} MediaPipe points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
