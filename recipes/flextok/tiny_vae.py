"""Stage 1 of the bundled `flextok-tiny`: train its small diffusers AutoencoderKL on the offline photo corpus.

FlexTok keeps a pretrained VAE frozen; no small one exists offline, so this trains one (L1 + a light KL term, f4,
4 latent channels; trained on 32 px crops for speed, used at 64 px) and writes everything stage 2
(`recipes/flextok/tiny.yaml` through the engine) needs:

* `OUT/photos/`: the training photos downscaled to a shorter side of `--side` px (fast to decode);
* `OUT/vae/`: the AutoencoderKL (`save_pretrained` layout), with `scaling_factor` = 1 / std of its latents;
* `OUT/flextok_init.safetensors`: a full `flextok-tiny` state dict with this VAE and seeded random FlexTok parts
  (stage 2 starts from it with `model.weights`).

    OMP_NUM_THREADS=1 python recipes/flextok/tiny_vae.py --photos /work/corpora/photos/train \
        --out runs/flextok-tiny-vae --steps 2000 --threads 1

The printed scaling factor must equal `vae.scaling_factor` in `configs/flextok/tiny.yaml`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image


def load_photos(folder: Path, side: int, out: Path) -> list[torch.Tensor]:
    """Every photo under `folder`, shorter side resized to `side` (saved as PNG under `out`), as uint8 [3, H, W]."""
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        image = Image.open(path).convert("RGB")
        scale = side / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        image.save(out / f"{path.stem}.png")
        photos.append(torch.from_numpy(__import__("numpy").asarray(image).copy()).permute(2, 0, 1))
    if not photos:
        raise FileNotFoundError(f"no photos under {folder}; build them with scripts/build_photo_corpus.py")
    return photos


def random_crops(photos: list[torch.Tensor], n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """`n` multiscale square crops (side log-uniform in [size, shorter side]) resized to `size`, random h-flip."""
    crops = []
    for _ in range(n):
        photo = photos[int(torch.randint(len(photos), (1,), generator=g))]
        h, w = photo.shape[1:]
        lo, hi = math.log(size), math.log(min(h, w))
        side = round(math.exp(lo + (hi - lo) * float(torch.rand(1, generator=g))))
        top = int(torch.randint(h - side + 1, (1,), generator=g))
        left = int(torch.randint(w - side + 1, (1,), generator=g))
        crop = photo[None, :, top:top + side, left:left + side].float() / 255
        crop = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        if float(torch.rand(1, generator=g)) < 0.5:
            crop = crop.flip(-1)
        crops.append(crop.clamp(0, 1))
    return torch.cat(crops)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", default="/work/corpora/photos/train")
    parser.add_argument("--out", default="runs/flextok-tiny-vae")
    parser.add_argument("--side", type=int, default=256, help="shorter side the photos are reduced to")
    parser.add_argument("--crop", type=int, default=32, help="training crop size (the VAE is fully convolutional)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl", type=float, default=1e-6, help="KL weight (per-element mean)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photos-only", action="store_true",
                        help="only write the reduced photos to OUT/photos (e.g. for a later stage on more photos)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    if args.photos_only:
        print(f"wrote {len(load_photos(Path(args.photos), args.side, out / 'photos'))} photos to {out / 'photos'}")
        return

    from diffusers import AutoencoderKL

    import zoo

    spec = zoo.get_spec("flextok-tiny")
    vae_cfg = {k: v for k, v in spec.kwargs["vae"].items() if k != "scaling_factor"}
    size = spec.kwargs["image_size"]
    photos = load_photos(Path(args.photos), args.side, out / "photos")
    vae = AutoencoderKL(**vae_cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for step in range(1, args.steps + 1):
        x = random_crops(photos, args.batch, args.crop, g) * 2 - 1
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)
        y = vae.decode(z).sample
        rec = (y - x).abs().mean()
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1 - dist.logvar).mean()
        loss = rec + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == 1:
            psnr = -10 * torch.log10(((y.detach() - x) / 2).pow(2).mean())
            print(f"step {step} l1 {rec.item():.4f} kl {kl.item():.2f} psnr {psnr.item():.2f} "
                  f"{time.time() - start:.0f}s", flush=True)

    vae.eval()
    with torch.no_grad():
        x = random_crops(photos, 256, size, torch.Generator().manual_seed(args.seed + 1)) * 2 - 1
        mean = torch.cat([vae.encode(x[i:i + 32]).latent_dist.mean for i in range(0, len(x), 32)])
    factor = round(1.0 / mean.std().item(), 4)
    vae.register_to_config(scaling_factor=factor)
    vae.save_pretrained(out / "vae")

    torch.manual_seed(args.seed)
    model = zoo.create("flextok-tiny", vae={**vae_cfg, "scaling_factor": factor})
    model.vae.load_state_dict(vae.state_dict())
    from safetensors.torch import save_model

    save_model(model, str(out / "flextok_init.safetensors"))
    (out / "vae_stats.json").write_text(json.dumps({"scaling_factor": factor, "latent_std": mean.std().item(),
                                                    "latent_mean": mean.mean().item()}, indent=2))
    print(f"scaling_factor {factor} (set vae.scaling_factor in configs/flextok/tiny.yaml to this value)")


if __name__ == "__main__":
    main()
