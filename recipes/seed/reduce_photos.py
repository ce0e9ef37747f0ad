#!/usr/bin/env python
"""Copies of the training photos with the shorter side reduced to `--side` px (PNG), for seed-tiny's stages 2-3.

The 112 px crops the tiny recipes draw (side fraction >= 0.3 of the shorter side) never need more than 373 px of
the source, and decoding 2560 x 1600 JPEGs for every crop costs more CPU than the training step itself.

    python recipes/seed/reduce_photos.py --photos data/photos/train --out data/seed-photos --side 384
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--side", type=int, default=384)
    args = parser.parse_args()
    from zoo.data.common import list_files
    from zoo.data.image import IMAGE_EXTENSIONS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = list_files(args.photos, IMAGE_EXTENSIONS)
    for path in files:
        with Image.open(path) as im:
            image = im.convert("RGB")
        scale = args.side / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        image.save(out / (Path(path).stem + ".png"))
    print(f"wrote {len(files)} photos to {out}")


if __name__ == "__main__":
    main()
