#!/usr/bin/env python
"""Image-text pairs for seed-tiny's stage 1, offline: crops of the training photos captioned with ImageNet labels.

No captioned photos exist offline, so the captions are the offline EfficientNet-Lite0 classifier's top labels of
each crop ("a photo of a daisy, a bee and a pot"): the stand-in for CC3M's alt-texts. For every photo,
`--crops` seeded multi-scale crops (side fraction in [0.3, 1]) are saved at `--size` px with their caption, packed
as WebDataset shards (`NNNNNNNN.png` + `NNNNNNNN.txt`), plus `vocab.txt` (a whole-word WordPiece vocabulary of
the captions, for `seed_qformer`'s `vocab`).

    python recipes/seed/make_tiny_pairs.py --photos data/photos/train --out data/seed-pairs --crops 12 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision.utils import save_image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="folder of training photos")
    parser.add_argument("--out", required=True, help="output folder (shards, vocab.txt, pairs.json)")
    parser.add_argument("--crops", type=int, default=12, help="crops per photo")
    parser.add_argument("--size", type=int, default=160, help="side of the saved crops")
    parser.add_argument("--labels", type=int, default=3, help="ImageNet labels per caption")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from timm.data import ImageNetInfo

    from zoo.data.image import ImageFolder
    from zoo.data.pairs import write_image_text_shards
    from zoo.image.seed.text import write_vocab
    from zoo.losses.semantic import build_teacher

    out = Path(args.out)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    photos = ImageFolder(args.photos, image_size=args.size, crop="multiscale", scale=(0.3, 1.0), seed=args.seed)
    teacher = build_teacher("efficientnet_lite0")  # features + the ImageNet classifier of the same file
    classifier = teacher.model
    info = ImageNetInfo()
    pairs, records = [], []
    for epoch in range(args.crops):
        photos.set_epoch(epoch)
        for index in range(len(photos)):
            crop = photos[index]
            with torch.no_grad():
                x = torch.nn.functional.interpolate(crop[None], size=(224, 224), mode="bicubic", antialias=True,
                                                    align_corners=False)
                logits = classifier((x - teacher.mean) / teacher.std)
            top = logits[0].topk(args.labels).indices.tolist()
            names = [info.index_to_description(i).split(",")[0].strip() for i in top]
            caption = "a photo of " + ", ".join(f"a {n}" for n in names[:-1]) + f" and a {names[-1]}"
            path = out / "crops" / f"{Path(str(photos.items[index])).stem}-{epoch:02d}.png"
            save_image(crop, path)
            pairs.append((path, caption))
            records.append({"crop": path.name, "photo": str(photos.items[index]), "caption": caption})
    shards = write_image_text_shards(pairs, out, shard_size=200)
    vocab = write_vocab([caption for _, caption in pairs], out / "vocab.txt")
    (out / "pairs.json").write_text(json.dumps(records, indent=1) + "\n")
    words = len(vocab.read_text().split())
    print(f"{len(pairs)} pairs in {len(shards)} shards under {out}; vocab {words} tokens "
          f"(text_vocab_size {words + 1} with [DEC])")


if __name__ == "__main__":
    main()
