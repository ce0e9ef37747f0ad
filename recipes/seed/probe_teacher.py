#!/usr/bin/env python
"""How much of seed-tiny's teacher embedding any read-out of the frozen trunk can recover on photos it never saw.

seed-tiny's stage 2 regresses the teacher's 1280-d pooled EfficientNet-Lite0 features from 32 quantised tokens of
the same frozen trunk. This script asks what the best possible read-out gets without the tokens in the way: it fits
read-outs of the *unquantised* trunk tokens (16 x 320 at 112 px) on the crops of some training photos and reports
the embedding cosine on crops of the other training photos (whole photos held apart, never crops of the fitted
ones). The held-out photos of the corpus are not read.

Read-outs: the training-mean constant; ridge regression from the mean token and from all 16 tokens; and a
per-position MLP averaged over positions (`mean_p W2 relu(W1 x_p)`, the very form of the teacher, which is
`mean_p relu6(bn(conv_head(x_p)))`) trained on the pooled targets.

    python recipes/seed/probe_teacher.py --photos data/photos-extra/train --test-photos 8 --out runs/seed-probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=1).mean())


def ridge(features: torch.Tensor, targets: torch.Tensor, lam: float):
    """Ridge regression with an intercept; solved in the dual when there are fewer samples than features."""
    a = torch.cat([features, torch.ones(len(features), 1)], 1)
    if len(a) < a.shape[1]:
        w = a.T @ torch.linalg.solve(a @ a.T + lam * torch.eye(len(a)), targets)
    else:
        w = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1]), a.T @ targets)
    return lambda z: torch.cat([z, torch.ones(len(z), 1)], 1) @ w


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="folder of training photos (the fit / test split is by photo)")
    parser.add_argument("--test-photos", type=int, default=8, help="photos (last by file name) kept for testing")
    parser.add_argument("--crops", type=int, default=16, help="seeded crops per photo (seed-tiny's stage-2 crops)")
    parser.add_argument("--steps", type=int, default=1500, help="steps of the per-position MLP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers here as JSON")
    args = parser.parse_args(argv)

    from zoo.data.image import ImageFolder
    from zoo.losses.semantic import build_teacher

    teacher = build_teacher("efficientnet_lite0", input_size=112)
    net = teacher.model.eval()
    photos = ImageFolder(args.photos, image_size=112, crop="multiscale", scale=(0.3, 1.0), hflip=True, seed=args.seed)
    order = sorted(range(len(photos)), key=lambda i: str(photos.items[i]))
    if not 0 < args.test_photos < len(order):
        raise SystemExit(f"--test-photos must be between 1 and {len(order) - 1} (the folder has {len(order)} photos)")
    tokens, embeddings, photo = [], [], []
    with torch.no_grad():
        for epoch in range(args.crops):
            photos.set_epoch(epoch)
            x = (torch.stack([photos[i] for i in order]) - teacher.mean) / teacher.std
            trunk = net.blocks(net.bn1(net.conv_stem(x)))  # [B, 320, 4, 4]: what seed-tiny's Q-Former reads
            tokens.append(trunk.flatten(2).transpose(1, 2))
            embeddings.append(net.forward_head(net.forward_features(x), pre_logits=True))  # the stage-2 teacher
            photo.append(torch.arange(len(order)))
    tokens, embeddings, photo = torch.cat(tokens), torch.cat(embeddings), torch.cat(photo)
    fit, test = photo < len(order) - args.test_photos, photo >= len(order) - args.test_photos
    result = {"photos_fit": len(order) - args.test_photos, "photos_test": args.test_photos,
              "crops_per_photo": args.crops,
              "constant": cosine(embeddings[fit].mean(0, keepdim=True).expand(int(test.sum()), -1), embeddings[test])}
    for name, feats in (("ridge_mean_token", tokens.mean(1)), ("ridge_all_tokens", tokens.flatten(1))):
        best = max((cosine(ridge(feats[fit], embeddings[fit], lam)(feats[test]), embeddings[test]), lam)
                   for lam in (0.1, 1.0, 10.0, 100.0))
        result[name] = {"test_cosine": best[0], "lambda": best[1]}  # the best lambda on the test photos: an upper bound
    torch.manual_seed(args.seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(320, 1280), torch.nn.ReLU(), torch.nn.Linear(1280, 1280))
    opt = torch.optim.AdamW(mlp.parameters(), lr=1e-3, weight_decay=0.05)
    x_fit, y_fit = tokens[fit], embeddings[fit]
    for step in range(args.steps):
        idx = torch.randint(len(x_fit), (64,))
        pred = mlp(x_fit[idx]).mean(1)
        loss = (1 - F.cosine_similarity(pred, y_fit[idx], dim=1)).mean() + 0.1 * (pred - y_fit[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 500 == 0:
            print(f"per-position MLP step {step + 1}: loss {loss.item():.4f}", flush=True)
    with torch.no_grad():
        result["per_position_mlp"] = {"test_cosine": cosine(mlp(tokens[test]).mean(1), embeddings[test]),
                                      "fit_cosine": cosine(mlp(x_fit).mean(1), y_fit)}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
