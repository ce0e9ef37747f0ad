"""Decoding SEED image embeddings to pixels with Stable Diffusion 2.1 unCLIP (diffusers), from a local folder.

The official `ImageTokenizer.decode` feeds `get_codebook_entry(ids)` (a 1024-d OpenCLIP ViT-H image embedding) to
`StableUnCLIPImg2ImgPipeline` (`stabilityai/stable-diffusion-2-1-unclip`) with an empty prompt, `noise_level=0`,
20 steps and guidance 10, one image per call. Here the pipeline's latents are decoded by its VAE without the
pipeline's post-processing, so `decode` returns the raw VAE output mapped to [0, 1] (not clamped), as every zoo
decoder does. Seeded with `generator`, the result is reproducible (the official code draws its latents once with
the global RNG).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["UNCLIP_ENV", "UNCLIP_REPO", "load_unclip", "resolve_unclip_folder", "unclip_decode"]

UNCLIP_ENV = "ZOO_SEED_UNCLIP"
UNCLIP_REPO = "stabilityai/stable-diffusion-2-1-unclip"


def resolve_unclip_folder(folder: str | Path | None) -> Path:
    """The unCLIP pipeline folder: `folder`, else `$ZOO_SEED_UNCLIP`; a clear error naming what to provide."""
    how = (f"SEED decodes through Stable Diffusion 2.1 unCLIP: download {UNCLIP_REPO} (diffusers format, with "
           f"model_index.json) to a local folder and pass decode(tokens, unclip=FOLDER) or set {UNCLIP_ENV}=FOLDER")
    if folder is None:
        folder = os.environ.get(UNCLIP_ENV)
        if not folder:
            raise FileNotFoundError(f"no unCLIP pipeline folder given. {how}")
    path = Path(folder).expanduser()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json there). {how}")
    return path


def load_unclip(folder: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    """`StableUnCLIPImg2ImgPipeline.from_pretrained(folder)` without network access, moved to `device`."""
    try:
        from diffusers import StableUnCLIPImg2ImgPipeline
    except ImportError as err:  # diffusers is a zoo dependency; its unCLIP pipeline also needs transformers
        raise ImportError(f"the unCLIP decoder needs diffusers and transformers (pip install transformers): {err}"
                          ) from err
    try:
        # float32 is the default; other dtypes by the keyword every supported diffusers version knows
        options = {} if dtype == torch.float32 else {"torch_dtype": dtype}
        pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(folder), local_files_only=True, **options)
    except (OSError, ValueError, ImportError) as err:
        raise type(err)(f"cannot load the unCLIP pipeline from {folder}: {err}") from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.no_grad()
def unclip_decode(pipe: Any, embeddings: torch.Tensor, steps: int, guidance: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Image embeddings `[B, D]` -> images `[B, 3, H, W]` in [0, 1] (raw VAE output `(y + 1) / 2`, not clamped).

    One pipeline call per image (empty prompt, `noise_level=0`), as the official decoder.
    """
    expected = int(pipe.image_normalizer.mean.shape[-1])
    if embeddings.shape[-1] != expected:
        raise ValueError(f"the unCLIP pipeline takes {expected}-d image embeddings but this tokenizer makes "
                         f"{embeddings.shape[-1]}-d ones; use the pipeline the tokenizer was trained for "
                         f"({UNCLIP_REPO} for seed-tokenizer-2)")
    vae = pipe.vae
    images = []
    for row in embeddings:
        latents = pipe(image_embeds=row[None].to(device=pipe.device, dtype=pipe.unet.dtype), prompt="",
                       num_inference_steps=int(steps), guidance_scale=float(guidance), noise_level=0,
                       generator=generator, output_type="latent").images
        pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        images.append((pixels.float() + 1) / 2)
    return torch.cat(images).to(embeddings.device)
