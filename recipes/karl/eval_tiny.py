"""KARL on held-out photos: PSNR and rFID against the token count, and the tokens it chooses at a few target errors
against image complexity (lossless PNG bits per pixel). Writes a JSON report, two PNG charts and a reconstruction
grid.

Images: the whole held-out photos (`--photos`, never seen in training), each resized to the model's size (shorter
side to the size, then the central square: `zoo.io.read_image`, the crop `zoo eval` uses). `--crops N` evaluates N
seeded multi-scale squares of each held-out photo instead (a larger sample for rFID; still only held-out photos).

Budget curve: every budget T of `--budgets` at `target_error=0` (the 0.005 bin: the halting keeps what it can), then
the largest budget at each `--errors` (the adaptive points). rFID: the offline TF-Inception FID (`zoo.metrics.fid`)
between the evaluated images and their reconstructions (clamped to [0, 1]); with 6 photos it is a coarse number,
comparable only between rows of one report. Complexity: `estimate_complexity` at each error against the PNG size
(PIL, compress level 9), with Spearman's rank correlation.

The target errors are either given (`--errors`) or set by the rule docs/karl.md fixes in advance (`--errors-from
TRAIN_PHOTOS`): the model's mean L1 error on the centre squares of the *training* photos at 256, 64 and 16 tokens
(`target_error=0`), each rounded up to its error bin.

    python recipes/karl/eval_tiny.py --model karl-tiny --photos PHOTOS/heldout --errors-from PHOTOS/train \
        --out docs/assets/karl
    python recipes/karl/eval_tiny.py --photos PHOTOS/heldout --write-crops DIR   # held-out crops for `zoo eval`
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import time
from pathlib import Path

import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def photo_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no photos (*.jpg, *.jpeg, *.png) under {folder}")
    return files


def whole_photos(folder: Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """Every photo resized to `size` (shorter side, then the central square) -> `[N, 3, size, size]`, names."""
    from zoo.io import read_image

    files = photo_files(folder)
    return torch.cat([read_image(p, size=size) for p in files]), [p.stem for p in files]


def photo_crops(folder: Path, size: int, per_photo: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Seeded multi-scale squares (0.25-1 of the shorter side) of every photo, resized to `size`."""
    from zoo.data.image import load_image
    from zoo.data.transforms import crop_image, to_tensor

    g = torch.Generator().manual_seed(seed)
    crops, names = [], []
    for path in photo_files(folder):
        image = load_image(path)
        for _ in range(per_photo):
            crops.append(to_tensor(crop_image(image, size, "multiscale", g, (0.25, 1.0), False)))
            names.append(path.stem)
    return torch.stack(crops), names


def png_bits_per_pixel(image: torch.Tensor) -> float:
    """Lossless PNG size (PIL, compress level 9) of a `[3, H, W]` [0, 1] image, in bits per pixel."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=9)
    return buffer.tell() * 8 / (image.shape[-1] * image.shape[-2])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""
    def ranks(v: torch.Tensor) -> torch.Tensor:
        v = v.double()
        r = torch.empty_like(v)
        r[v.argsort()] = torch.arange(len(v), dtype=torch.float64)
        for value in v.unique():
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 0.0


def reconstruct(tok, images: torch.Tensor, budget: int, error: float, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (reconstructions clamped to [0, 1], active tokens per image)."""
    outs, lengths = [], []
    for i in range(0, len(images), batch):
        with torch.inference_mode():
            tokens = tok.encode(images[i:i + batch], num_tokens=budget, target_error=error)
            outs.append(tok.decode(tokens).clamp(0, 1))
        lengths.append(tokens.lengths)
    return torch.cat(outs), torch.cat(lengths)


def calibrate_errors(tok, folder: Path, batch: int, budgets: tuple[int, ...] = (256, 64, 16)) -> list[dict]:
    """The rule of docs/karl.md: mean L1 on the training photos' centre squares at each budget (target_error=0),
    rounded up to its error bin."""
    from zoo.image.karl import ERROR_BINS, error_bin

    images, _ = whole_photos(folder, tok.image_size)
    rows = []
    for budget in budgets:
        y, _ = reconstruct(tok, images, min(budget, tok.max_tokens), 0.0, batch)
        l1 = float((y - images).abs().mean())
        rows.append({"budget": budget, "l1": l1, "target_error": ERROR_BINS[int(error_bin(torch.tensor([l1]))[0])]})
    return rows


def make_fid(images: torch.Tensor, reference: str):
    """An FID with the evaluated images as the real set, or (None, reason) when the Inception file is absent."""
    from zoo.metrics.fid import FID

    try:
        fid = FID(reference=reference)
    except FileNotFoundError as err:
        return None, f"skipped: {err}"
    fid.update(images, real=True)
    return fid, None


def fid_of(fid_real, fake: torch.Tensor) -> float:
    from zoo.metrics.fid import FID

    fid = FID(extractor=fid_real.extractor, reference=fid_real.reference)
    fid.real = fid_real.real
    fid.update(fake, real=False)
    return fid.compute()


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="karl-tiny", help="registered name or save_pretrained folder")
    parser.add_argument("--weights", default="default", help="weights tag or file for a registered name ('none': "
                        "random weights, only to check the script runs)")
    parser.add_argument("--photos", default="/work/corpora/photos/heldout", help="held-out photos")
    parser.add_argument("--crops", type=int, default=0, help="seeded crops per held-out photo (0: whole photos)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[16, 32, 64, 96, 128, 192, 256])
    parser.add_argument("--errors", type=float, nargs="+", default=None, help="target errors (2-3 values)")
    parser.add_argument("--errors-from", metavar="TRAIN_PHOTOS", help="set the errors by the rule of docs/karl.md")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-fid", action="store_true")
    parser.add_argument("--examples", type=int, default=6, help="images shown in the reconstruction grid")
    parser.add_argument("--out", default="docs/assets/karl")
    parser.add_argument("--name", default="karl_tiny", help="file stem of the outputs")
    parser.add_argument("--write-crops", metavar="DIR", help="only write the held-out crops as PNGs (for `zoo eval`)")
    parser.add_argument("--size", type=int, default=128, help="crop size for --write-crops")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.write_crops:
        from torchvision.utils import save_image

        crops, names = photo_crops(Path(args.photos), args.size, args.crops or 32, args.seed)
        folder = Path(args.write_crops)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (crop, name) in enumerate(zip(crops, names)):
            save_image(crop, folder / f"{name}_{i:04d}.png")
        print(f"wrote {len(crops)} crops to {folder}")
        return None
    if (args.errors is None) == (args.errors_from is None):
        parser.error("give exactly one of --errors EPS... and --errors-from TRAIN_PHOTOS")

    import zoo
    from zoo.metrics.image import psnr
    from zoo.plot import Panel, Series, draw_panels

    if args.model in zoo.list_models():
        weights = None if args.weights == "none" else args.weights
        tok = zoo.load(args.model, weights=weights)
    else:
        tok = zoo.load(Path(args.model))
    tok.eval()
    start = time.time()
    budgets = sorted(b for b in args.budgets if b <= tok.max_tokens)
    full = budgets[-1]
    calibration = None
    if args.errors_from:
        calibration = calibrate_errors(tok, Path(args.errors_from), args.batch)
        errors = sorted({row["target_error"] for row in calibration})
        print("errors from the training photos:", json.dumps(calibration), flush=True)
        if len(errors) < 2:
            print(f"warning: the rule gives only {errors}: the model's error does not change with the budget (an "
                  "untrained model?), so looser-vs-tighter cannot be compared", flush=True)
    else:
        errors = sorted(set(args.errors))

    if args.crops:
        x, names = photo_crops(Path(args.photos), tok.image_size, args.crops, args.seed)
        what = f"{args.crops} seeded multi-scale crops of each held-out photo (seed {args.seed})"
    else:
        x, names = whole_photos(Path(args.photos), tok.image_size)
        what = "whole held-out photos, shorter side resized and centre square"
    fid_real, fid_note = (None, "disabled (--no-fid)") if args.no_fid else make_fid(x, f"the {len(x)} {what}")

    shown = torch.linspace(0, len(x) - 1, min(args.examples, len(x))).round().long()
    grid = {"input": x[shown]}

    def row(budget: int, error: float) -> dict:
        y, lengths = reconstruct(tok, x, budget, error, args.batch)
        out = {"budget": budget, "target_error": error, "tokens": lengths.float().mean().item(),
               "tokens_per_image": lengths.tolist(), "psnr": psnr(y, x).mean().item(),
               "psnr_per_image": psnr(y, x).tolist(), "l1": (y - x).abs().mean().item()}
        if fid_real is not None:
            out["rfid"] = fid_of(fid_real, y)
        key = f"T={budget}" if error == 0 else f"eps={error}"
        if error != 0 or budget in (16, 64, full):
            grid[key] = y[shown]
        print(json.dumps({k: v for k, v in out.items() if not k.endswith("per_image")}),
              f"{time.time() - start:.0f}s", flush=True)
        return out

    fixed = [row(budget, 0.0) for budget in budgets]
    adaptive = [row(full, error) for error in errors]

    bpp = torch.tensor([png_bits_per_pixel(img) for img in x])
    complexity = {}
    for error in errors:
        with torch.inference_mode():
            counts = torch.cat([tok.estimate_complexity(x[i:i + args.batch], target_error=error, num_tokens=full)
                                for i in range(0, len(x), args.batch)])
        complexity[str(error)] = {"tokens": counts.tolist(), "mean_tokens": counts.float().mean().item(),
                                  "spearman_vs_png_bpp": spearman(bpp, counts.float())}
        print(f"eps {error}: mean tokens {counts.float().mean():.1f}, Spearman vs PNG bpp "
              f"{complexity[str(error)]['spearman_vs_png_bpp']:.3f}", flush=True)

    means = [complexity[str(e)]["mean_tokens"] for e in errors]
    per_image = torch.tensor([complexity[str(e)]["tokens"] for e in errors])  # [errors, images]
    targets = {
        "full_budget_psnr": fixed[-1]["psnr"],
        "full_budget_psnr_at_least_20db": fixed[-1]["psnr"] >= 20.0,
        # None: fewer than two distinct errors, nothing to compare
        "looser_error_fewer_tokens_on_average": all(a > b for a, b in itertools.pairwise(means)) if len(errors) > 1
        else None,
        "looser_error_never_more_tokens_per_image": bool((per_image[1:] <= per_image[:-1]).all()) if len(errors) > 1
        else None,
        "more_complex_more_tokens_spearman": [complexity[str(e)]["spearman_vs_png_bpp"] for e in errors],
        "more_complex_more_tokens": all(complexity[str(e)]["spearman_vs_png_bpp"] > 0 for e in errors),
    }

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": str(args.model), "weights": args.weights, "photos": args.photos, "images": what,
              "names": names, "n_images": len(x), "image_size": tok.image_size, "errors": errors,
              "errors_calibration": calibration, "fixed_budget": fixed, "adaptive": adaptive, "png_bpp": bpp.tolist(),
              "complexity": complexity, "targets": targets,
              "fid_protocol": fid_real.protocol() if fid_real is not None else fid_note,
              "seconds": round(time.time() - start, 1)}
    (out / f"{args.name}_eval.json").write_text(json.dumps(report, indent=2) + "\n")

    eps_label = "/".join(str(e) for e in errors)
    curve = [Panel(f"PSNR against tokens ({len(x)} held-out images)", "active tokens (mean)", "PSNR dB", [
        Series("budget T, eps 0", [r["tokens"] for r in fixed], [r["psnr"] for r in fixed]),
        Series(f"T={full}, eps {eps_label}", [r["tokens"] for r in adaptive], [r["psnr"] for r in adaptive],
               kind="scatter")])]
    if fid_real is not None:
        curve.append(Panel(f"rFID against tokens ({len(x)} held-out images)", "active tokens (mean)", "rFID", [
            Series("budget T, eps 0", [r["tokens"] for r in fixed], [r["rfid"] for r in fixed]),
            Series(f"T={full}, eps {eps_label}", [r["tokens"] for r in adaptive], [r["rfid"] for r in adaptive],
                   kind="scatter")]))
    draw_panels(curve, str(out / f"{args.name}_tokens_curve.png"))
    draw_panels([Panel(f"tokens chosen (T={full}) against PNG bits per pixel", "PNG bits per pixel", "tokens", [
        Series(f"eps {e} (rho {complexity[str(e)]['spearman_vs_png_bpp']:.2f})", bpp.tolist(),
               complexity[str(e)]["tokens"], kind="scatter") for e in errors])],
        str(out / f"{args.name}_complexity.png"), panel_size=(640, 420))
    from torchvision.utils import save_image

    save_image(torch.cat(list(grid.values())), out / f"{args.name}_recon_grid.png", nrow=len(shown), padding=2,
               pad_value=1.0)
    print(f"targets: {json.dumps(targets)}")
    print(f"wrote {out}/{args.name}_{{eval.json,tokens_curve.png,complexity.png,recon_grid.png}} (grid rows: "
          f"{', '.join(grid)}) in {time.time() - start:.0f}s")
    return report


if __name__ == "__main__":
    main()
