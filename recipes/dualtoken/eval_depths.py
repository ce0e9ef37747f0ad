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
from PIL import Image, ImageDraw

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


def plot_curves(panels: list[tuple[str, str, list[tuple[str, list[float], tuple[int, int, int]]]]], path: Path) -> None:
    """Side-by-side line plots drawn with PIL: each panel is (title, x label, [(legend, ys, colour)]), x = 1..n."""
    width, height, pad = 460 * len(panels), 400, 64
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, xlabel, series) in enumerate(panels):
        x0, x1, y0, y1 = i * 460 + pad, (i + 1) * 460 - 20, 44, height - pad
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 14), title, fill="black")
        values = [v for _, ys, _ in series for v in ys]
        lo, hi = min(values), max(values)
        lo, hi = (lo - 1, hi + 1) if hi - lo < 1e-6 else (lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo))
        n = max(len(ys) for _, ys, _ in series)

        def at(k: int, v: float) -> tuple[float, float]:
            return x0 + 14 + (k - 1) / max(n - 1, 1) * (x1 - x0 - 28), y1 - (v - lo) / (hi - lo) * (y1 - y0)

        for t in range(5):
            value = lo + (hi - lo) * t / 4
            _, ty = at(1, value)
            draw.line([x0 - 4, ty, x0, ty], fill="black")
            draw.text((x0 - 50, ty - 6), f"{value:.3g}", fill="black")
        for k in range(1, n + 1):
            tx, _ = at(k, lo)
            draw.line([tx, y1, tx, y1 + 4], fill="black")
            draw.text((tx - 3, y1 + 8), str(k), fill="black")
        draw.text((x0 + (x1 - x0) // 2 - 30, height - 24), xlabel, fill="black")
        for j, (legend, ys, colour) in enumerate(series):
            points = [at(k + 1, v) for k, v in enumerate(ys)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=3)
            for px, py in points:
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
            draw.line([x1 - 150, y1 - 20 - 16 * j, x1 - 130, y1 - 20 - 16 * j], fill=colour, width=3)
            draw.text((x1 - 125, y1 - 26 - 16 * j), legend, fill="black")
    canvas.save(path)


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
    plot_curves([
        ("PSNR (dB) by pixel depth decoded", "pixel depth",
         [(f"{n} ({result[n]['num_images']})", [p["psnr"] for p in result[n]["by_pixel_depth"]], colours[n])
          for n in sets]),
        ("pooled embedding: cosine to the teacher", "semantic depth",
         [(f"{n} ({result[n]['num_images']})", [p["cosine"] for p in result[n]["semantic_cosine_by_depth"]],
           colours[n]) for n in sets]),
    ], out.with_suffix(".png"))
    from torchvision.utils import save_image

    save_image(torch.cat(grid_rows), out.with_name(out.name + "_grid.png"), nrow=grid_rows[0].shape[0], padding=2,
               pad_value=1.0)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.png')}, {out.with_name(out.name + '_grid.png')}")


if __name__ == "__main__":
    main()
