"""Quality of a FlexTok model against the number of tokens k: PSNR and rFID on held-out photos, as JSON and a PNG.

Held-out images: `--whole` takes every photo of `--photos` (whole photos never seen in training) as `zoo eval` reads
it (shorter side resized to the model's resolution, centre crop); otherwise `--crops` per photo, multiscale squares
resized to the model's resolution, seeded. For every k in 1, 2, 4, ..., num_registers the crops are encoded with
`num_tokens=k` and decoded with the given sampler settings and a fixed noise seed; PSNR is averaged per image,
rFID compares the decoded set with the crops (TF Inception-v3, `zoo.metrics.fid`).

    python recipes/flextok/eval_tiny.py --model flextok-tiny --photos /work/corpora/photos/heldout \
        --out docs/assets/flextok_tiny_k_curve
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

MIN_FID = 50  # fewest images an rFID is reported for


def heldout_crops(folder: Path, size: int, per_photo: int, seed: int) -> torch.Tensor:
    from zoo.data.image import load_image
    from zoo.data.transforms import crop_image, to_tensor

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no held-out photos under {folder}")
    g = torch.Generator().manual_seed(seed)
    crops = []
    for path in files:
        image = load_image(path)
        for _ in range(per_photo):
            crops.append(to_tensor(crop_image(image, size, "multiscale", g, (0.25, 1.0), False)))
    return torch.stack(crops)


def heldout_whole(folder: Path, size: int) -> torch.Tensor:
    """Every photo under `folder` as `zoo eval` reads it: shorter side resized to `size`, centre crop."""
    from zoo.io import IMAGE_EXTENSIONS, find_files, read_image

    files = find_files(folder, IMAGE_EXTENSIONS)  # the listing zoo eval uses
    if not files:
        raise FileNotFoundError(f"no held-out photos under {folder}")
    return torch.cat([read_image(path, size=size) for path in files])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="flextok-tiny", help="registered name or save_pretrained folder")
    parser.add_argument("--weights", default="default", help="weights tag, .safetensors file, or 'none' (random)")
    parser.add_argument("--photos", default="/work/corpora/photos/heldout")
    parser.add_argument("--crops", type=int, default=48, help="crops per held-out photo")
    parser.add_argument("--whole", action="store_true", help="the whole photos (as zoo eval reads them), not crops")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--apg", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/assets/flextok_tiny_k_curve")
    parser.add_argument("--examples", type=int, default=6, help="crops shown in the <out>_grid.png reconstructions")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import zoo
    from zoo.metrics.fid import FID
    from zoo.metrics.image import psnr

    tok = zoo.load(args.model, weights=None if args.weights == "none" else args.weights).eval()
    what = "whole photos" if args.whole else "crops"
    if args.whole:
        x = heldout_whole(Path(args.photos), tok.image_size)
    else:
        x = heldout_crops(Path(args.photos), tok.image_size, args.crops, args.seed)
    # a 2048-d Frechet distance from a handful of images is noise, not a measurement: rFID only from MIN_FID images
    fid_real = FID(reference=f"{len(x)} held-out {what} of {args.photos}") if len(x) >= MIN_FID else None
    if fid_real is not None:
        for i in range(0, len(x), args.batch):
            fid_real.update(x[i:i + args.batch], real=True)
    ks = [2**i for i in range(int(math.log2(tok.num_registers)) + 1)]
    rows = []
    shown = torch.linspace(0, len(x) - 1, min(args.examples, len(x))).round().long()  # spread over the photos
    examples = {"input": x[shown]}
    for k in ks:
        start = time.time()
        fid = None
        if fid_real is not None:
            fid = FID(extractor=fid_real.extractor, reference=fid_real.reference)
            fid.real = fid_real.real
        scores, decoded = [], []
        for i in range(0, len(x), args.batch):
            batch = x[i:i + args.batch]
            with torch.inference_mode():
                tokens = tok.encode(batch, num_tokens=k)
                noise = tok.initial_noise(len(batch), torch.Generator().manual_seed(args.seed + i))
                y = tok.decode(tokens, steps=args.steps, guidance=args.guidance, apg=args.apg, noise=noise).clamp(0, 1)
            scores.append(psnr(y, batch))
            if fid is not None:
                fid.update(y, real=False)
            decoded.append(y)
        examples[f"k={k}"] = torch.cat(decoded)[shown]
        row = {"k": k, "psnr": torch.cat([s.reshape(-1) for s in scores]).mean().item(),
               "rfid": fid.compute() if fid is not None else None}
        rows.append(row)
        print(json.dumps(row), f"{time.time() - start:.0f}s", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "weights": args.weights, "images": what, "n_images": len(x), "steps": args.steps,
              "guidance": args.guidance, "apg": args.apg, "seed": args.seed, "rows": rows,
              "fid_protocol": fid_real.protocol() if fid_real is not None
              else f"not computed: {len(x)} images < {MIN_FID}"}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")

    from zoo.plot import Panel, Series, draw_panels

    guide = f"{'APG' if args.apg else 'CFG'} {args.guidance}" if args.guidance != 1 else "no guidance"
    panels = [Panel(f"{args.model}: {len(x)} held-out {what}, {args.steps} steps, {guide}", "tokens k", "PSNR dB",
                    [Series("PSNR", ks, [r["psnr"] for r in rows])], xlog=True)]
    if fid_real is not None:
        panels.append(Panel(f"rFID over {len(x)} images", "tokens k", "rFID",
                            [Series("rFID", ks, [r["rfid"] for r in rows], colour=(214, 39, 40))], xlog=True))
    draw_panels(panels, str(out.with_suffix(".png")))
    # rows: the held-out images, then their reconstructions from k = 1, 2, 4, ... tokens
    from torchvision.utils import save_image

    grid_path = out.with_name(out.name + "_grid.png")
    save_image(torch.cat(list(examples.values())), grid_path, nrow=len(examples["input"]), padding=2, pad_value=1.0)
    print(f"wrote {out.with_suffix('.png')}, {grid_path} (rows: {', '.join(examples)}) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
