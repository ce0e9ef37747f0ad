"""Held-out quality of a TokenFlow model by number of scales decoded: PSNR, SSIM, rFID, semantic cosine to the teacher.

For every whole-scale prefix k = 1..K the images are encoded with `encode(x, num_tokens=N_k)` and decoded; the
semantic branch's output (`semantic_features`) is compared with the teacher's patch features (1 - cos, as in
training; reported as the mean cosine). Writes `<out>.json`, the curve `<out>.png` (PSNR and rFID against the number
of ids) and `<out>_grid.png` (rows: originals, then reconstructions from a few prefixes).

    python recipes/gigatok/heldout_crops.py --photos data/photos/heldout --out runs/tokenflow-eval/crops
    python recipes/tokenflow/eval_scales.py tokenflow-tiny --data runs/tokenflow-eval/crops \
        --photos data/photos/heldout --out docs/assets/tokenflow/tiny_scales
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

_EXT = (".png", ".jpg", ".jpeg")


def _load_folder(folder: Path, size: int, center: bool) -> torch.Tensor:
    """Images of `folder` (sorted) as `[N, 3, size, size]` in [0, 1]; `center`: resize the shorter side and crop."""
    from zoo.data.image import load_image
    from zoo.data.transforms import crop_image, to_tensor

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _EXT)
    if not files:
        raise FileNotFoundError(f"no images under {folder}")
    images = []
    for path in files:
        image = load_image(path)
        if center or image.size != (size, size):
            image = crop_image(image, size, "center")
        images.append(to_tensor(image))
    return torch.stack(images)


def _grid(rows: list[torch.Tensor], path: Path) -> None:
    from torchvision.utils import save_image

    save_image(torch.cat(rows), path, nrow=rows[0].shape[0], padding=2, pad_value=1.0)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="registered name or save_pretrained folder")
    parser.add_argument("--weights", default="default", help="weights tag or .safetensors file (default: the default)")
    parser.add_argument("--data", required=True, help="folder of evaluation images (already at the model's size)")
    parser.add_argument("--photos", default=None, help="folder of whole photos: also PSNR of their centre crops")
    parser.add_argument("--out", required=True, help="output path stem: <out>.json, <out>.png, <out>_grid.png")
    parser.add_argument("--teacher", default="efficientnet_lite0")
    parser.add_argument("--teacher-size", type=int, default=128)
    parser.add_argument("--teacher-layer", type=int, default=3)
    parser.add_argument("--no-fid", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--examples", type=int, default=6)
    args = parser.parse_args(argv)

    import zoo
    from zoo.losses.semantic import build_teacher
    from zoo.metrics import psnr, ssim
    from zoo.quant.multiscale import scale_offsets

    ref = Path(args.model) if Path(args.model).exists() else args.model
    tok = zoo.load(ref) if isinstance(ref, Path) else zoo.load(ref, weights=args.weights)
    size = tok.image_size
    images = _load_folder(Path(args.data), size, center=False)
    counts = scale_offsets(tok.path(size)[1])[1:]
    teacher = build_teacher(args.teacher, input_size=args.teacher_size, layer=args.teacher_layer)
    fid_cls = None
    if not args.no_fid:
        from zoo.metrics.fid import FID

        fid_cls = FID
    points, grid_rows = [], [images[: args.examples]]
    show = {counts[0], counts[len(counts) // 2], counts[-2], counts[-1]}
    for n in counts:
        fid = fid_cls(reference=f"{len(images)} held-out crops") if fid_cls else None
        p, s, cos = [], [], []
        for start in range(0, len(images), args.batch_size):
            x = images[start:start + args.batch_size]
            tokens = tok.encode(x, num_tokens=n)
            y = tok.decode(tokens).clamp(0, 1)
            p.append(psnr(y, x))
            s.append(ssim(y, x))
            sem = tok.semantic_features(tokens)
            target = teacher(x)
            grid = math.isqrt(sem.shape[1])
            target = torch.nn.functional.interpolate(target, size=(grid, grid), mode="bilinear", align_corners=False)
            target = target.flatten(2).transpose(1, 2)
            cos.append(torch.nn.functional.cosine_similarity(sem.float(), target.float(), dim=-1).mean(1))
            if fid is not None:
                fid.update(x, real=True)
                fid.update(y, real=False)
            if start == 0 and n in show:
                grid_rows.append(y[: args.examples])
        point = {"num_ids": n, "num_scales": counts.index(n) + 1, "psnr": torch.cat(p).mean().item(),
                 "ssim": torch.cat(s).mean().item(), "semantic_cosine": torch.cat(cos).mean().item()}
        if fid is not None:
            point["rfid"] = fid.compute()
            point["fid_protocol"] = fid.protocol()
        points.append(point)
        print(json.dumps({k: v for k, v in point.items() if k != "fid_protocol"}))
    result = {"model": str(args.model), "weights": args.weights, "num_images": len(images), "image_size": size,
              "teacher": {"name": args.teacher, "size": args.teacher_size, "layer": args.teacher_layer},
              "points": points}
    if args.photos:
        photos = _load_folder(Path(args.photos), size, center=True)
        y = tok.decode(tok.encode(photos)).clamp(0, 1)
        result["photos_centre_crop"] = {"num_images": len(photos), "psnr": psnr(y, photos).mean().item(),
                                        "ssim": ssim(y, photos).mean().item()}
        print(json.dumps(result["photos_centre_crop"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    from zoo.plot import Panel, Series, draw_panels

    xs = [p["num_ids"] for p in points]
    draw_panels([Panel("PSNR (dB) vs ids decoded", "ids", "PSNR dB",
                       [Series("PSNR", xs, [p["psnr"] for p in points], colour=(40, 90, 200))], xlog=True),
                 Panel("rFID vs ids decoded", "ids", "rFID",
                       [Series("rFID", xs, [p.get("rfid", float("nan")) for p in points], colour=(200, 70, 40))],
                       xlog=True)],
                str(out.with_suffix(".png")), panel_size=(450, 380))
    _grid(grid_rows, out.with_name(out.name + "_grid.png"))
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.png')}, {out.with_name(out.name + '_grid.png')} "
          f"(grid rows: originals, then {sorted(show)} ids)")


if __name__ == "__main__":
    main()
