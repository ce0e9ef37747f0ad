"""Held-out evaluation of a SEED tokenizer with an offline decoder (seed-tiny): JSON numbers and a PNG grid.

Selection rule (fixed before any held-out number was looked at): the evaluated weights are the exported final EMA
weights of each stage's full schedule; decoding uses the pixel decoder's recorded defaults (20 Euler steps,
guidance 1.5) with seed 0; nothing is chosen on held-out photos.

Held-out set (`--heldout`, photos never trained on; `--train` folders are checked for name clashes):
  * originals: each photo resized (shorter side) and centre-cropped to the tokenizer's size;
  * views: `--per-photo` seeded augmentations per photo (a square of log-uniform side in `--scale` x the shorter
    side, resized, flipped with probability 0.5).

Reported (`seed_metrics.json`):
  * `embedding_cos`: cos(image_embedding(encode(x)), teacher(x)) over views and originals (the target is >= 0.9),
    the teacher being stage 2's (EfficientNet-Lite0 pooled features at 112 px for seed-tiny). References: the
    embedding of the unquantised vectors (what quantisation costs), and, with `--train`, the training crops' mean
    teacher embedding used as a constant prediction (what a model that ignores the image gets).
  * `usage`: codebook usage / perplexity over the held-out views + originals (and training crops with `--train`).
  * `retrieval` (view -> original): for each augmented view, the nearest of the original photos must be its own.
    Similarity from the tokens, two ways: `embedding` = cosine of the image embeddings made from the ids;
    `ids` = number of the 32 positions holding the same id (ties count as the expected hit under random
    tie-breaking). `teacher` (cosine of the teacher embeddings of the pixels) is the reference; chance = 1 / photos.
    `view_to_view`: each view's nearest other view (leave-one-out) must come from the same photo.
  * `reconstruction`: PSNR / SSIM (`zoo.metrics`) of the decoded views and originals (clamped to [0, 1]), and rFID
    (TF-Inception FID between all held-out images and their decodes; with ~100 images it is biased high and only
    comparable between rows of one table).
  * `reconstructions.png`: the originals over their decodes; `reconstructions_views.png`: 8 views over theirs.

    python recipes/seed/evaluate.py --model seed-tiny --heldout data/photos/heldout --train data/photos/train \
        --out runs/seed-tiny-eval --figures docs/assets/seed
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------------- the data


def originals(folder: str | Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """Each photo resized (shorter side) and centre-cropped: `[P, 3, size, size]` and the photo names."""
    from zoo.data.image import ImageFolder

    data = ImageFolder(str(folder), image_size=size, crop="center")
    names = [Path(str(item)).name for item in data.items]
    return torch.stack([data[i] for i in range(len(data))]), names


def views(folder: str | Path, size: int, per_photo: int, seed: int, scale: tuple[float, float] = (0.5, 1.0)
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_photo` seeded augmented views of every photo: images `[P * per_photo, 3, size, size]` and photo
    labels `[P * per_photo]` (the index of the photo in `originals` order)."""
    from zoo.data.image import ImageFolder

    data = ImageFolder(str(folder), image_size=size, crop="multiscale", scale=scale, hflip=True, seed=seed)
    images, labels = [], []
    for epoch in range(per_photo):
        data.set_epoch(epoch)
        for i in range(len(data)):
            images.append(data[i])
            labels.append(i)
    return torch.stack(images), torch.tensor(labels)


def name_clashes(heldout: list[str], train_folders: list[str | Path]) -> list[str]:
    """Held-out photo stems that also name a file in a training folder (a sign that they were trained on)."""
    from zoo.data.common import list_files
    from zoo.data.image import IMAGE_EXTENSIONS

    stems = {Path(str(p)).stem for folder in train_folders for p in list_files(str(folder), IMAGE_EXTENSIONS)}
    return sorted(name for name in heldout if Path(name).stem in stems)


# ---------------------------------------------------------------------------------------------------------- metrics


def top1(similarity: torch.Tensor, query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> float:
    """Top-1 accuracy of retrieval by `similarity` `[Q, G]`; a tie between several best items counts as the
    expected hit of a random pick among them (so id-agreement scores, which tie often, are not flattered)."""
    best = similarity.max(dim=1, keepdim=True).values
    tied = similarity >= best
    hit = tied & (gallery_labels[None, :] == query_labels[:, None])
    return float((hit.sum(1).double() / tied.sum(1).double()).mean())


def id_agreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ids `[Q, N]`, `[G, N]` -> `[Q, G]` number of positions holding the same id."""
    return (a[:, None, :] == b[None, :, :]).sum(-1).double()


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a.double(), dim=-1) @ F.normalize(b.double(), dim=-1).t()


def leave_one_out_top1(similarity: torch.Tensor, labels: torch.Tensor) -> float:
    similarity = similarity.clone()
    similarity.fill_diagonal_(float("-inf"))
    return top1(similarity, labels, labels)


def summary(values: torch.Tensor) -> dict[str, float]:
    values = values.double()
    return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}


@torch.no_grad()
def tokens_and_embeddings(tok: Any, x: torch.Tensor, batch: int = 32) -> dict[str, torch.Tensor]:
    """ids, the image embedding from the ids, and the embedding of the unquantised vectors."""
    ids, emb, raw = [], [], []
    for chunk in x.split(batch):
        t = tok.encode(chunk)
        ids.append(t.ids)
        emb.append(tok.image_embedding(t).float())
        raw.append(tok.embedding_from_codes(tok.encode_task_layer(tok.query_features(chunk))).float())
    return {"ids": torch.cat(ids), "embedding": torch.cat(emb), "unquantised": torch.cat(raw)}


@torch.no_grad()
def teacher_embeddings(teacher: Any, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([teacher(chunk).float() for chunk in x.split(batch)])


@torch.no_grad()
def decode_all(tok: Any, ids: torch.Tensor, seed: int, batch: int = 16, **decode_kwargs: Any) -> torch.Tensor:
    """Decodes of `ids` (one generator seeded once, fixed batch size: reproducible), clamped to [0, 1]."""
    from zoo.tokens import Tokens

    generator = torch.Generator().manual_seed(seed)
    out = [tok.decode(Tokens(chunk, layout=tok.layout), generator=generator, **decode_kwargs).float().clamp(0, 1)
           for chunk in ids.split(batch)]
    return torch.cat(out)


def rfid(real: torch.Tensor, fake: torch.Tensor, weights: str | None) -> dict[str, Any]:
    """TF-Inception FID between `real` and `fake` ([0, 1] images), or the reason it could not be computed."""
    from zoo.metrics import FID

    try:
        fid = FID(weights=weights, reference="the held-out originals and views")
    except (FileNotFoundError, ImportError, RuntimeError) as err:
        return {"value": None, "unavailable": f"{type(err).__name__}: {err}"}
    for chunk in real.split(32):
        fid.update(chunk, real=True)
    for chunk in fake.split(32):
        fid.update(chunk, real=False)
    return {"value": fid.compute(), "protocol": fid.protocol()}


# ------------------------------------------------------------------------------------------------------------- main


def evaluate(tok: Any, teacher: Any, heldout: str | Path, out: str | Path, *, train: list[str | Path] = (),
             per_photo: int = 16, seed: int = 1234, scale: tuple[float, float] = (0.5, 1.0), decode_seed: int = 0,
             fid: bool = True, fid_weights: str | None = None, figures: str | Path | None = None,
             decode_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every number of the module docstring for `tok` (eval mode) on the photos in `heldout`; writes
    `out/seed_metrics.json` and the two grids (copied to `figures` too when given)."""
    from zoo.metrics import psnr, ssim, usage_from_counts

    size = int(tok.image_size)
    whole, names = originals(heldout, size)
    if len(names) < 2:
        raise ValueError(f"{heldout} holds {len(names)} photos; retrieval needs at least 2")
    clashes = name_clashes(names, list(train))
    if clashes:
        raise ValueError(f"held-out photos {clashes} also name files in the training folders {list(train)}: "
                         "they may have been trained on; evaluate on photos the runs never saw")
    aug, labels = views(heldout, size, per_photo, seed, scale)
    photo_labels = torch.arange(len(names))
    results: dict[str, Any] = {
        "photos": names, "views_per_photo": per_photo, "views": len(aug), "image_size": size,
        "view_scale": list(scale), "view_seed": seed, "decode_seed": decode_seed,
        "training_folders_checked": [str(p) for p in train],
    }

    enc_v, enc_o = tokens_and_embeddings(tok, aug), tokens_and_embeddings(tok, whole)
    tea_v, tea_o = teacher_embeddings(teacher, aug), teacher_embeddings(teacher, whole)
    if tea_v.shape[-1] != enc_v["embedding"].shape[-1]:
        raise ValueError(f"the teacher makes {tea_v.shape[-1]}-d embeddings but the tokenizer "
                         f"{enc_v['embedding'].shape[-1]}-d; use the teacher of its stage 2")
    cos_v = F.cosine_similarity(enc_v["embedding"], tea_v, dim=-1)
    cos_o = F.cosine_similarity(enc_o["embedding"], tea_o, dim=-1)
    results["embedding_cos"] = {
        "views": summary(cos_v), "originals": summary(cos_o),
        "all": summary(torch.cat([cos_v, cos_o])),
        "per_original": dict(zip(names, cos_o.tolist())),
        "unquantised_all": summary(torch.cat([F.cosine_similarity(enc_v["unquantised"], tea_v, dim=-1),
                                              F.cosine_similarity(enc_o["unquantised"], tea_o, dim=-1)])),
    }

    size_k = tok.codebook.size
    ids_all = torch.cat([enc_v["ids"], enc_o["ids"]])
    results["usage"] = {"heldout": usage_from_counts(torch.bincount(ids_all.flatten(), minlength=size_k))}
    if train:
        train_imgs = torch.cat([views(folder, size, max(1, math.ceil(len(aug) / 33)), seed + 1, scale)[0]
                                for folder in train])
        enc_t = tokens_and_embeddings(tok, train_imgs)
        results["usage"]["train"] = usage_from_counts(torch.bincount(enc_t["ids"].flatten(), minlength=size_k))
        mean_target = teacher_embeddings(teacher, train_imgs).mean(0, keepdim=True)
        results["embedding_cos"]["train_mean_baseline_all"] = summary(
            F.cosine_similarity(mean_target.expand(len(ids_all), -1), torch.cat([tea_v, tea_o]), dim=-1))
        results["train_crops"] = len(train_imgs)

    results["retrieval"] = {
        "definition": "view -> original: top-1 over the held-out originals of each augmented view's nearest original",
        "chance": 1 / len(names),
        "embedding": top1(cosine_matrix(enc_v["embedding"], enc_o["embedding"]), labels, photo_labels),
        "ids": top1(id_agreement(enc_v["ids"], enc_o["ids"]), labels, photo_labels),
        "teacher": top1(cosine_matrix(tea_v, tea_o), labels, photo_labels),
        "view_to_view": {
            "chance": (per_photo - 1) / (len(aug) - 1),
            "embedding": leave_one_out_top1(cosine_matrix(enc_v["embedding"], enc_v["embedding"]), labels),
            "ids": leave_one_out_top1(id_agreement(enc_v["ids"], enc_v["ids"]), labels),
            "teacher": leave_one_out_top1(cosine_matrix(tea_v, tea_v), labels),
        },
    }

    decode_kwargs = dict(decode_kwargs or {})
    rec_v = decode_all(tok, enc_v["ids"], decode_seed, **decode_kwargs)
    rec_o = decode_all(tok, enc_o["ids"], decode_seed + 1, **decode_kwargs)
    if rec_v.shape[-2:] != aug.shape[-2:]:  # unCLIP decodes at its own size
        rec_v = F.interpolate(rec_v, size=aug.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
        rec_o = F.interpolate(rec_o, size=whole.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
    results["reconstruction"] = {
        "psnr": {"views": summary(psnr(aug, rec_v)), "originals": summary(psnr(whole, rec_o))},
        "ssim": {"views": summary(ssim(aug, rec_v)), "originals": summary(ssim(whole, rec_o))},
        "decode": {k: v for k, v in decode_kwargs.items() if isinstance(v, (int, float, str))}
        or "the decoder's recorded defaults",
    }
    if fid:
        results["reconstruction"]["rfid"] = rfid(torch.cat([aug, whole]), torch.cat([rec_v, rec_o]), fid_weights)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seed_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    from torchvision.utils import save_image

    picks = torch.linspace(0, len(aug) - 1, min(8, len(aug))).round().long()
    grids = {"reconstructions.png": (torch.cat([whole, rec_o]), len(whole)),
             "reconstructions_views.png": (torch.cat([aug[picks], rec_v[picks]]), len(picks))}
    for name, (images, nrow) in grids.items():
        save_image(images, out / name, nrow=nrow, padding=2, pad_value=1.0)
        if figures is not None:
            Path(figures).mkdir(parents=True, exist_ok=True)
            (Path(figures) / name).write_bytes((out / name).read_bytes())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="seed-tiny", help="registered name, or a save_pretrained folder (a path)")
    parser.add_argument("--weights", default="default", help="weights tag or .safetensors file ('none': random)")
    parser.add_argument("--heldout", required=True, help="folder of held-out photos (never trained on)")
    parser.add_argument("--train", action="append", default=[],
                        help="training photo folder(s): checked for name clashes; training-crop usage and the "
                             "mean-embedding baseline (repeatable)")
    parser.add_argument("--out", required=True, help="folder for seed_metrics.json and reconstructions.png")
    parser.add_argument("--figures", default=None, help="also copy the grids here (docs/assets/seed)")
    parser.add_argument("--per-photo", type=int, default=16)
    parser.add_argument("--scale", type=float, nargs=2, default=(0.5, 1.0))
    parser.add_argument("--seed", type=int, default=1234, help="seed of the augmented views")
    parser.add_argument("--decode-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="decoder steps (default: the decoder's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the decoder's)")
    parser.add_argument("--unclip", default=None, help="decode through this diffusers unCLIP folder instead")
    parser.add_argument("--teacher", default="efficientnet_lite0", help="stage 2's embedding teacher")
    parser.add_argument("--teacher-weights", default=None)
    parser.add_argument("--teacher-size", type=int, default=112, help="image side the teacher sees (stage 2's)")
    parser.add_argument("--no-fid", action="store_true")
    parser.add_argument("--fid-weights", default=None, help="TF-Inception TorchScript file (default: searched)")
    args = parser.parse_args(argv)

    import zoo
    from zoo.losses.image_embedding import build_embedding_teacher

    ref: Any = Path(args.model) if Path(args.model).is_dir() else args.model
    weights = None if args.weights == "none" else args.weights
    tok = zoo.load(ref, weights=weights).eval()
    teacher = build_embedding_teacher(args.teacher, weights=args.teacher_weights,
                                      input_size=args.teacher_size).eval()
    decode_kwargs = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance), ("unclip", args.unclip))
                     if v is not None}
    results = evaluate(tok, teacher, args.heldout, args.out, train=args.train, per_photo=args.per_photo,
                       seed=args.seed, scale=tuple(args.scale), decode_seed=args.decode_seed, fid=not args.no_fid,
                       fid_weights=args.fid_weights, figures=args.figures, decode_kwargs=decode_kwargs)
    results["model"], results["weights"] = str(args.model), str(args.weights)
    (Path(args.out) / "seed_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    short = {"embedding_cos_all": results["embedding_cos"]["all"]["mean"],
             "usage_heldout": results["usage"]["heldout"]["usage"],
             "retrieval_embedding": results["retrieval"]["embedding"], "retrieval_ids": results["retrieval"]["ids"],
             "psnr_views": results["reconstruction"]["psnr"]["views"]["mean"],
             "rfid": (results["reconstruction"].get("rfid") or {}).get("value")}
    print(json.dumps(short, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
