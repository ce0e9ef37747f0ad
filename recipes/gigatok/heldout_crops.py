"""Write seeded multi-scale 128 px crops of the held-out photos as PNGs, the evaluation set of gigatok-tiny.

The held-out split of scripts/build_photo_corpus.py has only a few whole photos; rFID/pFID need more images, so
each photo gives `--per-photo` crops drawn like the training crops (log-uniform scale of the shorter side).

    python recipes/gigatok/heldout_crops.py --photos data/photos/heldout --out runs/gigatok-eval/crops
    python -m zoo.cli eval gigatok-tiny --data runs/gigatok-eval/crops --out runs/gigatok-eval/metrics
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from zoo.data.image import ImageFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="folder of held-out photos")
    parser.add_argument("--out", required=True, help="folder for the PNG crops")
    parser.add_argument("--per-photo", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scale", type=float, nargs=2, default=(0.15, 1.0))
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    data = ImageFolder(args.photos, image_size=args.size, crop="multiscale", scale=args.scale, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(args.per_photo):
        data.set_epoch(epoch)
        for i in range(len(data)):
            image = (data[i] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(image).save(out / f"{Path(str(data.items[i])).stem}_{epoch:02d}.png")
    print(f"wrote {args.per_photo * len(data)} crops to {out}")


if __name__ == "__main__":
    main()
