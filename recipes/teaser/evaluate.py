"""Held-out numbers of a TEASER model on a face corpus, and the docs pictures.

Protocol (fixed before the bundled model was trained; the held-out split is used for nothing else):

* faces: every item of the corpus' `heldout` split, with video frames thinned to every 8th frame of each clip
  (sorted by frame number); crops at the official demo scale 1.4 of the MediaPipe box, no augmentation;
* reconstruction: `decode(encode(x, hull_points=MediaPipe points), image=x)` (the official chain: FLAME -> render
  -> the crop with the dilated face hull cut out -> generator), clamped to [0, 1]; PSNR and SSIM
  (`zoo.metrics`) over the whole 224 px crop, and PSNR over the face hull only (the pixels the generator has to
  paint: MediaPipe's hull, dilated by the model's 10 px);
* FSQ models also decode the *unrounded* FSQ values (the bounded projections before rounding): the difference is
  what rounding to discrete codes costs this model;
* geometry: the fitted face model's projected MediaPipe-105 points against the detected ones and its 51 inner 68-
  point landmarks (no contour) against dlib's, mean point-to-point distance over the detection's outer-eye-corner
  distance (NME, %), and in crop pixels;
* baseline: the crop with the hole filled by the face's true mean colour (`baseline_psnr`, `baseline_psnr_face`),
  what a generator that paints no face at all but knows its average colour would score;
* where the error sits (added in session 11, after the protocol's numbers above): PSNR outside the hole
  (`psnr_outside`, the background the generator copies), the mean absolute error of the painted face's mean colour
  (`colour_error_face`, in [0, 1] units) and the face PSNR once its mean colour is replaced by the true one
  (`psnr_face_true_mean`: what is left is shape, shading and texture);
* model: the final (EMA) weights, no choice among checkpoints.

Writes `<out>.json` and, with `--pictures DIR`, a reconstruction grid, an expression-transfer and a token-swap
picture (held-out faces).

    python recipes/teaser/evaluate.py teaser-fsq-tiny --corpus runs/teaser-faces --out runs/teaser-eval/tiny \
        --pictures docs/assets/teaser
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import torch

EVERY = 8
SCALE = 1.4
FAN_INNER = list(range(17, 68))


def heldout_items(corpus: str | Path, split: str = "heldout") -> list[dict]:
    """The evaluation items of the protocol (module docstring), in a fixed order."""
    from zoo.face.data import read_corpus

    items = read_corpus(corpus, split)
    clips: dict[str, list[dict]] = {}
    stills = []
    for item in items:
        source = item.get("source", "")
        if source.startswith("video:"):
            clips.setdefault(source.split("/")[0], []).append(item)
        else:
            stills.append(item)
    chosen = []
    for clip in sorted(clips):
        frames = sorted(clips[clip], key=lambda m: int(re.findall(r"\d+", m["source"].split("/")[-1])[-1]))
        chosen += frames[::EVERY]
    return chosen + sorted(stills, key=lambda m: (m["source"], m.get("face", 0)))


def load_faces(items: list[dict], size: int = 224) -> dict[str, torch.Tensor]:
    """The protocol's crops and landmarks, stacked."""
    from zoo.face.data import FaceLandmarks

    dataset = FaceLandmarks(items=items, image_size=size, scale=SCALE, augment=False)
    batch = [dataset[i] for i in range(len(items))]
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


def _hull_region(tok, hull_points: torch.Tensor) -> torch.Tensor:
    """1 on the face hull dilated by the model's radius (the generator's hole), `[B, 1, S, S]`."""
    import torch.nn.functional as F

    from zoo.face.render import face_hull_mask

    hull = face_hull_mask(hull_points, tok.image_size)
    radius = tok.mask_dilation
    return F.max_pool2d(1 - hull, 2 * radius + 1, stride=1, padding=radius)


def _masked_mean(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean colour `[B, 3]` of `image` `[B, 3, S, S]` over `mask` `[B, 1, S, S]`."""
    return (image * mask).flatten(2).sum(2) / mask.flatten(2).sum(2)


def _masked_psnr(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR `[B]` (peak 1) of `image` against `target` over the pixels of `mask` (all three channels)."""
    mse = ((image - target) ** 2 * mask).flatten(1).sum(1) / (3 * mask.flatten(1).sum(1)).clamp_min(1)
    return 10 * torch.log10(1 / mse)


def _nme(pred: torch.Tensor, target: torch.Tensor, eyes: torch.Tensor) -> tuple[list[float], list[float]]:
    dist = (pred - target).norm(dim=-1).mean(-1)
    return (dist / eyes * 100).tolist(), dist.tolist()


def _unrounded(tok, tokens_cont: torch.Tensor) -> torch.Tensor:
    q = tok.quantizer
    outs = []
    for s, fsq in enumerate(q.quantizers):
        groups = q._groups(tokens_cont, s)
        soft = fsq.bound(groups.float()) / (fsq._levels // 2).to(groups.device)
        outs.append(q.up[s](soft.flatten(1).to(tokens_cont.dtype)))
    return torch.stack(outs, 1)


@torch.inference_mode()
def evaluate(tok, faces: dict[str, torch.Tensor], batch_size: int = 8) -> dict:
    from zoo.face.render import orthographic_project
    from zoo.metrics import psnr, ssim

    size = tok.image_size
    face = tok.load_face_model()
    rows: dict[str, list[float]] = {}
    outputs, renders = [], []
    for start in range(0, len(faces["image"]), batch_size):
        x = faces["image"][start:start + batch_size]
        hull = faces["hull_points"][start:start + batch_size]
        tokens = tok.encode(x, hull_points=hull)
        y = tok.decode(tokens, image=x).clamp(0, 1)
        drawn = tok.render(tokens)
        outputs.append(y)
        renders.append(drawn["image"])
        region = _hull_region(tok, hull)
        rows.setdefault("psnr", []).extend(psnr(y, x).tolist())
        rows.setdefault("ssim", []).extend(ssim(y, x).tolist())
        rows.setdefault("psnr_face", []).extend(_masked_psnr(y, x, region).tolist())
        # the baseline a generator has to beat: the crop with its hole filled by the face's true mean colour
        mean = _masked_mean(x, region)
        fill = x * (1 - region) + mean[..., None, None] * region
        rows.setdefault("baseline_psnr", []).extend(psnr(fill, x).tolist())
        rows.setdefault("baseline_psnr_face", []).extend(_masked_psnr(fill, x, region).tolist())
        # where the error sits: the background the generator copies, the face's mean colour, and the face with its
        # mean colour replaced by the true one (what is left is shape and shading)
        rows.setdefault("psnr_outside", []).extend(_masked_psnr(y, x, 1 - region).tolist())
        mean_out = _masked_mean(y, region)
        rows.setdefault("colour_error_face", []).extend((mean_out - mean).abs().mean(1).tolist())
        recoloured = (y + (mean - mean_out)[..., None, None]).clamp(0, 1)
        rows.setdefault("psnr_face_true_mean", []).extend(_masked_psnr(recoloured, x, region).tolist())
        if tok.quantizer is not None:
            params = tok.encoder(x)
            # the same geometry (`drawn`), only the tokens change
            masked, _ = tok.masked_input(x, drawn["image"], hull, drawn["transformed_vertices"])
            soft = tok.generator(torch.cat([drawn["image"], masked], 1), _unrounded(tok, params["tokens"]))
            soft = soft.clamp(0, 1)
            rows.setdefault("psnr_unrounded", []).extend(psnr(soft, x).tolist())
            rows.setdefault("psnr_face_unrounded", []).extend(_masked_psnr(soft, x, region).tolist())
        target_mp = (faces["landmarks_mp"][start:start + batch_size] + 1) * size / 2
        geometry = tok.flame(tokens)
        cam = tokens.meta["cam"]
        pred_mp = (orthographic_project(geometry["landmarks_mp"], cam)[..., :2] + 1) * size / 2
        eyes = (target_mp[:, 33] - target_mp[:, 263]).norm(dim=-1)
        idx = face.mp_indices if face.mp_indices is not None else torch.arange(pred_mp.shape[1])
        nme, px = _nme(pred_mp, target_mp[:, idx], eyes)
        rows.setdefault("nme_mp105", []).extend(nme)
        rows.setdefault("px_mp105", []).extend(px)
        valid = faces["fan_valid"][start:start + batch_size].bool()
        if valid.any():
            target_fan = (faces["landmarks_fan"][start:start + batch_size] + 1) * size / 2
            pred_fan = (orthographic_project(geometry["landmarks_fan"], cam)[..., :2] + 1) * size / 2
            nme, px = _nme(pred_fan[valid][:, FAN_INNER], target_fan[valid][:, FAN_INNER], eyes[valid])
            rows.setdefault("nme_fan51", []).extend(nme)
            rows.setdefault("px_fan51", []).extend(px)
    summary = {k: float(np.mean(v)) for k, v in rows.items()}
    summary["num_faces"] = len(faces["image"])
    return {"summary": summary, "per_face": rows, "outputs": torch.cat(outputs), "renders": torch.cat(renders)}


def _grid(rows: list[torch.Tensor], path: Path, labels: list[str] | None = None) -> None:
    from PIL import Image, ImageDraw

    images = torch.cat([torch.cat(list(r.clamp(0, 1)), dim=2) for r in rows], dim=1)
    array = (images.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    if labels:
        draw = ImageDraw.Draw(picture)
        height = array.shape[0] // len(rows)
        for i, text in enumerate(labels):
            draw.rectangle([0, i * height, 8 + 7 * len(text), i * height + 14], fill=(0, 0, 0))
            draw.text((4, i * height + 1), text, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


@torch.inference_mode()
def pictures(tok, faces: dict[str, torch.Tensor], result: dict, folder: Path, picks: list[int]) -> list[Path]:
    from zoo.face.teaser import swap_appearance, transfer_expression

    x = faces["image"][picks]
    hull = faces["hull_points"][picks]
    out = []
    path = folder / "heldout_reconstructions.png"
    _grid([x, result["renders"][picks], result["outputs"][picks]], path, ["held-out crop", "fitted face model",
                                                                          "decoded (16 ids + geometry)"])
    out.append(path)
    tokens = tok.encode(x, hull_points=hull)
    n = len(picks)
    order = [(i + 1) % n for i in range(n)]  # each face takes the next one's expression / appearance
    source = tok.encode(x[order], hull_points=hull[order])
    transferred = tok.decode(transfer_expression(tokens, source), image=x)
    path = folder / "expression_transfer.png"
    _grid([x, x[order], tok.render(transfer_expression(tokens, source))["image"], transferred.clamp(0, 1)], path,
          ["target", "expression source", "target geometry, source expression", "decoded"])
    out.append(path)
    swapped = tok.decode(swap_appearance(tokens, source), image=x)
    path = folder / "token_swap.png"
    _grid([x, x[order], swapped.clamp(0, 1)], path, ["geometry + background", "appearance-token source",
                                                     "decoded with the source's 16 ids"])
    out.append(path)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="registered name or save_pretrained folder")
    parser.add_argument("--corpus", required=True, help="face corpus folder (manifest.json)")
    parser.add_argument("--split", default="heldout")
    parser.add_argument("--weights", default="default", help="weights tag or .safetensors ('default': bundled)")
    parser.add_argument("--out", required=True, help="output path prefix (<out>.json)")
    parser.add_argument("--pictures", default=None, help="folder for the docs pictures")
    parser.add_argument("--picks", default="0,9,18,27,29,30", help="face indices shown in the pictures")
    args = parser.parse_args(argv)
    import zoo

    path = Path(args.model)
    tok = zoo.load(path) if path.is_dir() else zoo.load(args.model, weights=args.weights)
    tok.eval()
    items = heldout_items(args.corpus, args.split)
    faces = load_faces(items, tok.image_size)
    result = evaluate(tok, faces)
    record = {"model": args.model, "weights": args.weights, "protocol": __doc__.split("\n\n")[1],
              "faces": [m["source"] for m in items], **result["summary"],
              "per_face": {k: [round(v, 4) for v in vals] for k, vals in result["per_face"].items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    if args.pictures:
        picks = [int(p) for p in args.picks.split(",") if int(p) < len(items)]
        for p in pictures(tok, faces, result, Path(args.pictures), picks):
            print(f"wrote {p}")
    if not all(math.isfinite(v) for v in result["summary"].values()):
        raise SystemExit("non-finite metrics")


if __name__ == "__main__":
    main()
