#!/usr/bin/env python
"""Draw zoo's bundled offline face model (`face_model: mediapipe-pca`) with the TEASER renderer: the template, the
first identity and expression components at -2 / +2 standard deviations, the jaw opened, the eyelids closed and
the head turned. Writes one PNG row (docs/assets/teaser/face_model.png).

    python scripts/teaser/face_model_figure.py --out docs/assets/teaser/face_model.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "assets" / "teaser" / "face_model.png"))
    parser.add_argument("--scale", type=float, default=7.0, help="orthographic camera scale")
    args = parser.parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    import zoo

    tok = zoo.load("teaser-fsq-tiny", weights=None)  # only its face model is used
    n_shape, n_exp = tok.n_shape, tok.n_exp
    columns = [("template", {}), ("identity 1: -2", {"shape": (0, -2.0)}), ("identity 1: +2", {"shape": (0, 2.0)}),
               ("expression 1: -2", {"exp": (0, -2.0)}), ("expression 1: +2", {"exp": (0, 2.0)}),
               ("jaw 0.25 rad", {"jaw": 0.25}), ("eyelids closed", {"lids": 1.0}), ("yaw 0.5 rad", {"yaw": 0.5})]
    count = len(columns)
    params = {"shape_params": torch.zeros(count, n_shape), "expression_params": torch.zeros(count, n_exp),
              "pose_params": torch.zeros(count, 3), "jaw_params": torch.zeros(count, 3),
              "eyelid_params": torch.zeros(count, 2), "cam": torch.tensor([[args.scale, 0.0, 0.0]]).repeat(count, 1)}
    for i, (_, change) in enumerate(columns):
        if "shape" in change:
            params["shape_params"][i, change["shape"][0]] = change["shape"][1]
        if "exp" in change:
            params["expression_params"][i, change["exp"][0]] = change["exp"][1]
        if "jaw" in change:
            params["jaw_params"][i, 0] = change["jaw"]
        if "lids" in change:
            params["eyelid_params"][i] = change["lids"]
        if "yaw" in change:
            params["pose_params"][i, 1] = change["yaw"]
    with torch.inference_mode():
        images = tok.render(params)["image"].clamp(0, 1)
    row = torch.cat(list(images), dim=2).permute(1, 2, 0).numpy()
    picture = Image.fromarray((row * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for i, (label, _) in enumerate(columns):
        draw.text((i * tok.image_size + 4, 4), label, fill=(255, 255, 255))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
