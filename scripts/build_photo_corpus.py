#!/usr/bin/env python
"""Collect the offline photo corpus used to train the bundled tiny image tokenizers.

Sources (all from packages, no network at run time):

* scikit-image's bundled photos (``skimage/data``; CC0 / public domain, see the skimage data docstrings);
* Debian ``mate-backgrounds``: ``/usr/share/backgrounds/mate/nature/*.jpg`` (GPL-2+, see its copyright file);
* Debian ``plasma-workspace-wallpapers``: the photographic wallpapers, i.e. those shipped as ``2560x1600.jpg``
  (LGPL/CC-BY-SA per ``/usr/share/doc/plasma-workspace-wallpapers/copyright``);
* Debian ``lomiri-wallpapers-16.04`` and ``lomiri-wallpapers-20.04`` (Ubuntu wallpaper contest entries): the 15 that
  are photographs (``LOMIRI_PHOTOS``; the drawings and renders left out), CC-BY-4.0 / CC-BY-SA-4.0 / CC0 per file
  (their copyright files), with ``--extra``. Training only: they were added after the held-out set was fixed, and
  drawing held-out photos from them would change that set and every number measured on it. Without ``--extra`` the
  corpus is the one the bundled weights were trained on (33 training photos, 6 held out).

Whole photos are held out (a seeded choice, at least one per source but the training-only ones) into
``OUT/heldout``; the rest go to ``OUT/train``. Files are copied byte for byte (JPEG stays JPEG); grey or RGBA PNGs
are converted to RGB PNG, and photos longer than ``MAX_SIDE`` pixels are resized to it (JPEG quality 95): the
training crops decode the whole file, and a 24-megapixel JPEG takes ~0.2 s to decode on one core.
``OUT/manifest.json`` lists every file with its source, licence file, size and split. Training code takes random
multi-scale crops from these (``zoo.data.ImageFolder(crop="multiscale")``).

Example::

    python scripts/build_photo_corpus.py --out /work/corpora/photos --seed 0
    python scripts/build_photo_corpus.py --out /work/corpora/photos-extra --seed 0 --extra
    python scripts/build_photo_corpus.py --sample-out zoo/data/samples/photo.png
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

# skimage files that are real photographs (drawings, text pages, tiny test patterns and masks left out)
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
                  "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
                  "retina.jpg", "rocket.jpg")
MATE_DIR = Path("/usr/share/backgrounds/mate/nature")
PLASMA_DIR = Path("/usr/share/wallpapers")
LOMIRI_DIR = Path("/usr/share/backgrounds")
LOMIRI_PHOTOS = {
    "lomiri-wallpapers-16.04": (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg"),
    "lomiri-wallpapers-20.04": ("Kleiber_by_Lukas_Baubkus.jpg",),
}
TRAIN_ONLY = frozenset(LOMIRI_PHOTOS)  # sources added after the held-out set was fixed
MAX_SIDE = 2560
LICENCES = {
    "skimage": "CC0 / public domain (scikit-image data docstrings)",
    "mate-backgrounds": "/usr/share/doc/mate-backgrounds/copyright",
    "plasma-workspace-wallpapers": "/usr/share/doc/plasma-workspace-wallpapers/copyright",
    "lomiri-wallpapers-16.04": "/usr/share/doc/lomiri-wallpapers-16.04/copyright",
    "lomiri-wallpapers-20.04": "/usr/share/doc/lomiri-wallpapers-20.04/copyright",
}


def skimage_dir() -> Path | None:
    try:
        import skimage
    except ImportError:
        return None
    return Path(skimage.__file__).parent / "data"


def find_photos(extra: bool = False) -> list[tuple[str, Path]]:
    """(source, path) for every photo found on this machine, in a stable order; `extra`: the training-only sources
    too."""
    found = []
    sk = skimage_dir()
    if sk is not None:
        found += [("skimage", sk / n) for n in SKIMAGE_PHOTOS if (sk / n).exists()]
    if MATE_DIR.is_dir():
        found += [("mate-backgrounds", p) for p in sorted(MATE_DIR.glob("*.jpg"))]
    if PLASMA_DIR.is_dir():
        found += [("plasma-workspace-wallpapers", p)
                  for p in sorted(PLASMA_DIR.glob("*/contents/images/2560x1600.jpg"))]
    for source, names in LOMIRI_PHOTOS.items() if extra else ():
        missing = [n for n in names if not (LOMIRI_DIR / n).exists()]
        if missing:
            raise SystemExit(f"--extra needs {source} ({len(missing)} of its photos are missing from {LOMIRI_DIR}): "
                             f"apt-get install {source}")
        found += [(source, LOMIRI_DIR / n) for n in names]
    return found


def _name(source: str, path: Path) -> str:
    stem = path.parts[-4] if source == "plasma-workspace-wallpapers" else path.stem
    return f"{source.split('-')[0]}_{stem}"


def build(out: Path, seed: int, heldout_per_source: int, extra: bool = False) -> dict:
    from PIL import Image

    photos = find_photos(extra)
    if not photos:
        raise SystemExit("no photos found: pip install scikit-image; apt-get install mate-backgrounds "
                         "plasma-workspace-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04")
    rng = random.Random(seed)
    held = set()
    for source in sorted({s for s, _ in photos} - TRAIN_ONLY):
        paths = [p for s, p in photos if s == source]
        held |= set(rng.sample(paths, min(heldout_per_source, len(paths) - 1)))
    rows = []
    for split in ("train", "heldout"):
        (out / split).mkdir(parents=True, exist_ok=True)
    for source, path in photos:
        split = "heldout" if path in held else "train"
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            resized = {}
            if max(size) > MAX_SIDE:
                scale = MAX_SIDE / max(size)
                dest = out / split / f"{_name(source, path)}.jpg"
                resized = {"original_size": list(size)}
                size = (round(size[0] * scale), round(size[1] * scale))
                im.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(dest, quality=95)
            elif path.suffix.lower() == ".jpg" and mode == "RGB":
                dest = out / split / f"{_name(source, path)}.jpg"
                shutil.copyfile(path, dest)
            else:
                dest = out / split / f"{_name(source, path)}.png"
                im.convert("RGB").save(dest)
        rows.append({"path": str(dest.relative_to(out)), "split": split, "source": source, "original": str(path),
                     "width": size[0], "height": size[1], "licence": LICENCES[source], **resized})
    manifest = {"seed": seed, "heldout_per_source": heldout_per_source, "extra": extra, "photos": rows}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for split in ("train", "heldout"):
        pix = sum(r["width"] * r["height"] for r in rows if r["split"] == split)
        print(f"{split}: {sum(r['split'] == split for r in rows)} photos, {pix / 1e6:.1f} Mpx")
    return manifest


def write_sample(path: Path, size: int = 256) -> None:
    """The skimage ``coffee`` photo (CC0, Rachel Michetti), shorter side resized to `size`, centre-cropped."""
    from PIL import Image

    sk = skimage_dir()
    if sk is None:
        raise SystemExit("pip install scikit-image (it ships the coffee photo)")
    with Image.open(sk / "coffee.png") as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        im.crop((left, top, left + size, top + size)).save(path, optimize=True)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="output folder (train/, heldout/, manifest.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout-per-source", type=int, default=2, help="whole photos held out from each source")
    ap.add_argument("--extra", action="store_true",
                    help="add the 15 lomiri-wallpapers photos to the training side (apt-get install "
                         "lomiri-wallpapers-16.04 lomiri-wallpapers-20.04)")
    ap.add_argument("--sample-out", type=Path, help="only write the 256x256 bundled sample PNG here")
    args = ap.parse_args(argv)
    if args.sample_out:
        write_sample(args.sample_out)
        return
    if args.out is None:
        ap.error("--out is required (or --sample-out)")
    build(args.out, args.seed, args.heldout_per_source, args.extra)


if __name__ == "__main__":
    main()
