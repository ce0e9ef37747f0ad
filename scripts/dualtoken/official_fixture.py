"""Write a small official-format DualToken fixture by running the official code on a tiny random model.

DualToken (songweii/DualToken) releases no weights, so parity is shown against files this script makes: it builds
the official `RQVAESiglipModel` the way `inference.py` does (`RQVAESIGLIPTransformer._from_config(config)
.rqvaesiglip`, with `SiglipModel.from_pretrained(<local SigLIP folder>)` inside), shrunk to a tiny random
configuration, and saves

    siglip/                       the tiny random SigLIP the config's `pretrained_model` names (HF folder)
    config.json                   the official model config (the `model_config_*/config.json` format)
    epoch_1.pt                    {"epoch", "name", "state_dict"}: what `main.py` saves and `inference.py` loads
    io.safetensors                inputs, codes, reconstructions, pooled embeddings, prefix decodes, losses
    README.md                     what was run, with versions, sizes and the checkpoint's sha256

The official code is never copied into zoo: pass the folder of an official checkout. It needs transformers 4.x
(the official pin is 4.44, its configs say 4.50.3; transformers 5 changed the encoder-layer return type that the
official `encode_image` indexes), so run this script with a Python that has it, e.g. a separate venv:

    python -m venv venv && venv/bin/pip install torch timm safetensors "transformers==4.50.3"
    venv/bin/python scripts/dualtoken/official_fixture.py --official DualToken --out dualtoken-fixture

Everything runs in float32 on the CPU, seeded. The test (tests/test_dualtoken.py) reads the folder named by the
environment variable ZOO_DUALTOKEN_FIXTURE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

# The tiny configuration: every official code path runs (shortcut, bilinear resize of the code grid to the decoder
# grid, a patch size that does not divide the image like 14 into 384, separate pixel / semantic depths, attention
# in the decoder's deepest level, GroupNorm with the official 32 groups).
SIGLIP_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 5, "num_attention_heads": 4,
                 "image_size": 64, "patch_size": 9, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}
SIGLIP_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "vocab_size": 64, "max_position_embeddings": 16}
GRID = SIGLIP_VISION["image_size"] // SIGLIP_VISION["patch_size"]  # 7


def _vq(kind: str, depth: int) -> dict:
    return {"bottleneck_type": kind, "ckpt_path": None, "code_shape": [GRID, GRID, depth], "decay": 0.99,
            "embed_dim": 16, "latent_shape": [GRID, GRID, 16], "n_embed": 128, "restart_unused_codes": True,
            "shared_codebook": True}


CONFIG = {
    "_name_or_path": "",
    "architectures": ["RQVAESIGLIPTransformer"],
    "hidden_size": 64,
    "model_type": "rqvaesigliptransformer_model",
    "rqvaesiglip": {
        "architectures": ["RQVAESiglip"],
        "layer_recon": 2,
        "layer_sem": 4,
        "layer_shortcut": 1,
        "weight_shortcut": 0.6,
        "model_type": "rqvaesiglip_model",
        "hidden_size": 64,
        "ddconfig": {"attn_resolutions": [8], "ch": 32, "ch_mult": [1, 1, 2, 2], "decoder_in_channels": 32,
                     "double_z": False, "dropout": 0.0, "in_channels": 3, "num_res_blocks": 1, "out_ch": 3,
                     "resolution": 64},
        "decoder_latent_shape": [8, 8],
        "checkpointing": True,
        "ignore_keys": None,
        "vq_sem": _vq("rq_ema", 3),
        "vq_pix": _vq("rq", 4),
        "pretrained_model": "siglip",
        "torch_dtype": "float32",
        "transformers_version": "4.50.3",
    },
    "transformers_version": "4.50.3",
}


def _images(generator: torch.Generator, n: int, size: int) -> torch.Tensor:
    """Smooth random uint8 images (bilinear up-sampled noise), like photos rather than white noise."""
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=generator)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = x + 0.08 * torch.randn(n, 3, size, size, generator=generator)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Move every norm scale, bias and learnt attention bias off its constant init, so no path is a no-op."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_norm = any(k in name for k in ("norm", "layernorm", "layer_norm")) and leaf == "weight"
            if is_norm:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            elif leaf in ("bias", "q_bias", "v_bias") or name.endswith("in_proj_bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="official songweii/DualToken checkout")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    official = args.official.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(official))
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    import transformers
    from safetensors.torch import save_file
    from transformers import SiglipConfig, SiglipModel

    if int(transformers.__version__.split(".")[0]) >= 5:
        raise SystemExit(f"transformers {transformers.__version__}: the official encode_image indexes the 4.x "
                         "encoder-layer tuple; run with transformers 4.x (the configs name 4.50.3)")
    from modeling.rqvaesigliptransformer import RQVAESIGLIPTransformer, RQVAESIGLIPTransformerConfig

    # the local SigLIP folder that the config's `pretrained_model` names (HF from_pretrained layout)
    torch.manual_seed(args.seed)
    siglip = SiglipModel(SiglipConfig(vision_config=SIGLIP_VISION, text_config=SIGLIP_TEXT))
    siglip.save_pretrained(out / "siglip")
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")

    # the official build path (create_model -> RQVAESIGLIPTransformerVisionTower), pretrained_model made absolute
    # the way running from the fixture folder would resolve it
    config = RQVAESIGLIPTransformerConfig.from_pretrained(str(out))
    config.rqvaesiglip = dict(config.rqvaesiglip, pretrained_model=str(out / "siglip"))
    torch.manual_seed(args.seed + 1)
    model = RQVAESIGLIPTransformer._from_config(config, torch_dtype=torch.float32).rqvaesiglip
    gen = torch.Generator().manual_seed(args.seed + 2)
    _perturb(model, gen)

    # a few training-mode passes: the EMA codebooks move to the latents and unused codes restart from them
    model.train()
    with torch.no_grad():
        for _ in range(3):
            x_train = _images(gen, 4, SIGLIP_VISION["image_size"]).float() / 255
            model((x_train - 0.5) / 0.5, None)
    model.eval()

    ckpt = out / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "dualtoken-fixture", "state_dict": model.state_dict()}, ckpt)

    # evaluation: SigLIP preprocessing of uint8 images is x / 255, then (x - 0.5) / 0.5
    x_u8 = _images(gen, 2, SIGLIP_VISION["image_size"])
    image = (x_u8.float() / 255 - 0.5) / 0.5
    captured: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_pre_hook(
        lambda _m, inputs, name=name: captured.__setitem__(name, inputs[0].detach().clone()))
        for name in ("quantizer_pix", "quantizer_sem")]
    with torch.no_grad():
        _, zq_sem, hidden_states, pooler, img_recon, code_pix, code_sem, ql_pix, ql_sem = model(image, None)
    for hook in hooks:
        hook.remove()

    io = {"x_u8": x_u8, "image": image, "z_pix": captured["quantizer_pix"], "z_sem": captured["quantizer_sem"],
          "code_pix": code_pix, "code_sem": code_sem, "img_recon": img_recon, "pooler": pooler, "zq_sem": zq_sem,
          "quant_loss_pix": ql_pix.reshape(1), "quant_loss_sem": ql_sem.reshape(1),
          "hidden_last": hidden_states[-1]}
    vision = model.siglip_model.vision_model
    b, h, w, _ = code_pix.shape
    with torch.no_grad():
        # decoding a depth prefix: the per-depth code embeddings of the official quantiser, the first k summed, and
        # the official decode (postquant_pix, resize, post_quant_conv, decoder)
        per_depth = model.get_code_emb_with_depth(code_pix, mode="pix")  # [B, h, w, depth, C]
        for k in (1, 2):
            io[f"img_recon_depth{k}"] = model.decode(per_depth[..., :k, :].sum(-2).reshape(b, h * w, -1))
        io["img_recon_from_codes"] = model.decode(per_depth.sum(-2).reshape(b, h * w, -1))
        # the pooled embedding from semantic codes: the code sum replaces the layer-`layer_sem` hidden state as in
        # encode_image, then the remaining layers, post_layernorm and the attention-pooling head
        per_depth_sem = model.get_code_emb_with_depth(code_sem, mode="sem")
        for k in (1, code_sem.shape[-1]):
            hidden = model.postquant_sem(per_depth_sem[..., :k, :].sum(-2).reshape(b, h * w, -1))
            for layer in vision.encoder.layers[model.layer_sem:]:
                hidden = layer(hidden, None, output_attentions=None)[0]
            io[f"pooler_from_codes_depth{k}"] = vision.head(vision.post_layernorm(hidden))
    save_file({k: v.contiguous() for k, v in io.items()}, str(out / "io.safetensors"))

    commit = subprocess.run(["git", "-C", str(official), "log", "-1", "--format=%H %cs %s"], capture_output=True,
                            text=True, check=False).stdout.strip() or "unknown"
    n_params = sum(v.numel() for v in model.state_dict().values())
    readme = f"""# DualToken parity fixture (made by zoo's scripts/dualtoken/official_fixture.py)

The official code (songweii/DualToken, commit {commit}) run on a tiny random configuration; nothing here is a
trained model. Made with Python {platform.python_version()}, torch {torch.__version__}, transformers
{transformers.__version__}, float32, CPU, one thread, deterministic algorithms, seed {args.seed}.

| file | what |
|---|---|
| `config.json` | official model config (`model_config_*/config.json` layout): SigLIP 64 wide, 5 layers, 4 heads, patch 9 at 64 px (7 x 7 grid); shortcut layer 1 (weight 0.6), pixel layer 2, semantic layer 4; codebooks 128 x 16 shared across depths, pixel depth 4 (`rq`), semantic depth 3 (`rq_ema`); decoder ch 32, ch_mult [1, 1, 2, 2], 1 res-block, attention at 8, latent 32 channels, code grid resized 7 -> 8 |
| `siglip/` | the tiny random `SiglipModel` (vision + text) that `pretrained_model` ("siglip", relative to this folder) names |
| `epoch_1.pt` | `{{"epoch", "name", "state_dict"}}`, {len(model.state_dict())} tensors ({n_params} numbers), sha256 {_sha256(ckpt)} |
| `io.safetensors` | `x_u8` [2, 3, 64, 64] and the SigLIP-normalised `image`; quantiser inputs `z_pix`, `z_sem`; `code_pix` [2, 7, 7, 4], `code_sem` [2, 7, 7, 3]; `img_recon` (in [-1, 1]); `pooler`; `zq_sem` (postquant_sem output); eval-mode commitment losses `quant_loss_pix`, `quant_loss_sem`; `img_recon_depth1/2` and `img_recon_from_codes` (official `get_code_emb_with_depth` summed over the first k depths, then `decode`); `pooler_from_codes_depth1/3` (the semantic code sum through `postquant_sem`, the remaining SigLIP layers, `post_layernorm` and the head) |

Before saving, every norm scale, bias and learnt q / v bias was moved off its constant init, and three
training-mode passes on random images moved the EMA codebooks onto the latents (restarting unused codes).
"""
    (out / "README.md").write_text(readme)
    print(f"wrote {out}: {ckpt.name} {ckpt.stat().st_size} bytes, io.safetensors {len(io)} tensors")


if __name__ == "__main__":
    main()
