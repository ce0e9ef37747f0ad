"""Held-out quality of a DualToken model by residual depth: PSNR / SSIM by pixel depth, the pooled embedding's cosine
to the teacher by semantic depth.

For every pixel depth k = 1..K the images are decoded from the first k pixel depths (`decode(t, pixel_depth=k)`);
for every semantic depth j the pooled embedding (`semantic_embedding(t, semantic_depth=j)`) is compared with the
teacher's pooled features (cosine, the quantity the training loss's `-cos` term raises; EfficientNet-Lite0 at 224
px for the tiny model). Writes `<out>.json`, the curves `<out>.png` and `<out>_grid.png` (rows: originals, then
reconstructions from depths 1, 2, 4 and all).

    python recipes/gigatok/heldout_crops.py --photos data/photos/heldout --out runs/dualtoken-eval/crops
    python recipes/dualtoken/eval_depths.py dualtoken-tiny --data runs/dualtoken-eval/crops \
        --photos data/photos/heldout --out docs/assets/dualtoken/tiny_depths
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

_EXT = (".png", ".jpg", ".jpeg")


def load_folder(folder: Path, size: int) -> torch.Tensor:
    """Images of `folder` (sorted) as `[N, 3, size, size]` in [0, 1]; other sizes are resized and centre-cropped."""
    from zoo.data.image import load_image
    from zoo.data.transforms import crop_image, to_tensor

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _EXT)
    if not files:
        raise FileNotFoundError(f"no images under {folder}")
    images = []
    for path in files:
        image = load_image(path)
        images.append(to_tensor(image if image.size == (size, size) else crop_image(image, size, "center")))
    return torch.stack(images)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="registered name or save_pretrained folder")
    parser.add_argument("--weights", default="default", help="weights tag or .safetensors file (default: the default)")
    parser.add_argument("--data", required=True, help="folder of evaluation images (at the model's size)")
    parser.add_argument("--photos", default=None, help="folder of whole photos: also their centre crops, by depth")
    parser.add_argument("--out", required=True, help="output path stem: <out>.json, <out>.png, <out>_grid.png")
    parser.add_argument("--teacher", default="efficientnet_lite0")
    parser.add_argument("--teacher-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--examples", type=int, default=6)
    args = parser.parse_args(argv)

    import zoo
    from zoo.metrics import psnr, ssim
    from zoo.train.objectives.dualtoken import PooledTeacher

    ref = Path(args.model) if Path(args.model).exists() else args.model
    tok = zoo.load(ref) if isinstance(ref, Path) else zoo.load(ref, weights=args.weights)
    crops = load_folder(Path(args.data), tok.image_size)
    sets = {"crops": crops}
    if args.photos:
        sets["photos"] = load_folder(Path(args.photos), tok.image_size)
    teacher = PooledTeacher(args.teacher, input_size=args.teacher_size).eval()
    kp, ks = tok.pixel_depth, tok.semantic_depth
    result: dict = {"model": str(args.model), "weights": args.weights, "image_size": tok.image_size,
                    "teacher": {"name": args.teacher, "size": args.teacher_size}}
    grid_rows = [crops[: args.examples]]
    for name, images in sets.items():
        per_depth = {k: {"psnr": [], "ssim": []} for k in range(1, kp + 1)}
        cosine = {j: [] for j in range(1, ks + 1)}
        for start in range(0, len(images), args.batch_size):
            x = images[start:start + args.batch_size]
            tokens = tok.encode(x)
            for k in range(1, kp + 1):
                y = tok.decode(tokens, pixel_depth=k).clamp(0, 1)
                per_depth[k]["psnr"].append(psnr(y, x))
                per_depth[k]["ssim"].append(ssim(y, x))
                if name == "crops" and start == 0 and k in (1, 2, 4, kp):
                    grid_rows.append(y[: args.examples])
            _, target = teacher(x)
            for j in range(1, ks + 1):
                pooled = tok.semantic_embedding(tokens, semantic_depth=j)
                cosine[j].append(torch.nn.functional.cosine_similarity(pooled.float(), target.float(), dim=-1))
        result[name] = {
            "num_images": len(images),
            "by_pixel_depth": [{"depth": k, "psnr": torch.cat(v["psnr"]).mean().item(),
                                "ssim": torch.cat(v["ssim"]).mean().item()} for k, v in per_depth.items()],
            "semantic_cosine_by_depth": [{"depth": j, "cosine": torch.cat(v).mean().item()}
                                         for j, v in cosine.items()],
        }
        print(name, json.dumps(result[name]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    colours = {"crops": (40, 90, 200), "photos": (200, 70, 40)}
    from zoo.plot import Panel, Series, draw_panels

    def series(key: str, value: str) -> list[Series]:  # x = depth 1..n, one line per image set
        return [Series(f"{n} ({result[n]['num_images']})", list(range(1, len(result[n][key]) + 1)),
                       [p[value] for p in result[n][key]], colour=colours[n]) for n in sets]

    pixel, semantic = series("by_pixel_depth", "psnr"), series("semantic_cosine_by_depth", "cosine")
    draw_panels([Panel("PSNR (dB) by pixel depth decoded", "pixel depth", "PSNR dB", pixel, xticks=pixel[0].xs),
                 Panel("pooled embedding: cosine to the teacher", "semantic depth", "cosine", semantic,
                       xticks=semantic[0].xs)], str(out.with_suffix(".png")), panel_size=(460, 400))
    from torchvision.utils import save_image

    save_image(torch.cat(grid_rows), out.with_name(out.name + "_grid.png"), nrow=grid_rows[0].shape[0], padding=2,
               pad_value=1.0)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.png')}, {out.with_name(out.name + '_grid.png')}")


if __name__ == "__main__":
    main()
