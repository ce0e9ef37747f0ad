"""GigaTok: official-fixture parity, the converter's key handling, and the tiny 1D / 2D variants."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from conftest import fixture_path, official_fixture

import zoo
from zoo.api import ForwardOutput

FIXTURE = fixture_path("gigatok")


def _small(layout: str = "1d", **over) -> zoo.Tokenizer:
    """A GigaTok small enough for unit tests (64 px, f8 -> 8 x 8 grid; 32 GroupNorm groups as the official code)."""
    kwargs = dict(image_size=64, token_layout=layout, num_latent_tokens=32, codebook_size=64, codebook_dim=8,
                  z_channels=16, cnn_channels=32, encoder_ch_mult=[1, 1, 1, 1], decoder_ch_mult=[1, 1, 1, 1],
                  num_res_blocks=1, encoder_width=32, encoder_depth=2, encoder_heads=2,
                  decoder_width=32, decoder_depth=2, decoder_heads=2, semantic_depth=1, semantic_dim=24)
    kwargs.update(over)
    torch.manual_seed(0)
    from zoo.image.gigatok import GigaTok

    return GigaTok(**kwargs).eval()


def _to_official(model) -> dict[str, torch.Tensor]:
    """Our state dict in the official layout (the inverse of the converter's key map), for round trips."""
    layout = model.token_layout
    enc, dec = ("s2to1encoder.", "s1to2decoder.") if layout == "1d" else ("s2dencoder.", "s2ddecoder.")
    block = [("attn.qkv.weight", "self_attn.in_proj_weight"), ("attn.qkv.bias", "self_attn.in_proj_bias"),
             ("attn.proj.", "self_attn.out_proj."), ("cross_attn.qkv.weight", "multihead_attn.in_proj_weight"),
             ("cross_attn.qkv.bias", "multihead_attn.in_proj_bias"), ("cross_attn.proj.", "multihead_attn.out_proj."),
             ("mlp.fc1.", "linear1."), ("mlp.fc2.", "linear2."), ("norm", "norm")]
    vit = {"norm_in.": "ln_pre.", "norm_out.": "ln_post.", "query_proj.": "global_proj.", "proj_out.": "conv_out.",
           "conv_out.": "conv_out.", "semantic_head.fc1.": "distill_mlp.0.", "semantic_head.fc2.": "distill_mlp.2.",
           "semantic_head.fc3.": "distill_mlp.4."}
    out = {}
    for key, value in model.state_dict().items():
        new = None
        if key.startswith(("encoder.", "decoder.")):
            new = re.sub(r"\.stages\.(\d+)\.blocks\.", r".conv_blocks.\1.res.", key)
            new = re.sub(r"\.stages\.(\d+)\.(downsample|upsample)\.", r".conv_blocks.\1.\2.", new)
            new = re.sub(r"decoder\.stages\.(\d+)\.norm\.", r"decoder.adaptive.\1.", new)
        elif key.startswith(("encoder_vit.", "decoder_vit.")):
            prefix = enc if key.startswith("encoder_vit.") else dec
            rest = key.split(".", 1)[1]
            if rest.startswith("blocks."):
                index, tail = rest[len("blocks."):].split(".", 1)
                tail = next(new + tail[len(old):] for old, new in block if tail.startswith(old))
                new = f"{prefix}transformer.{index}.{tail}"
            elif rest in ("pos_embed", "query_pos_embed", "latent_pos_embed"):
                name = "positional_embedding" if rest == "pos_embed" else "latent_token_positional_embedding"
                new, value = prefix + name, value.permute(1, 0, 2)
            elif rest.startswith("embed."):
                new = prefix + ("encoder_embed." if prefix == enc else "decoder_embed.") + rest[len("embed."):]
            else:
                old = next(o for o in vit if rest.startswith(o))
                new = prefix + vit[old] + rest[len(old):]
                if old == "proj_out." and rest.endswith("weight"):
                    value = value[:, :, None, None]
        elif key.startswith(("quant_proj.", "post_quant_proj.")):
            new = key.replace("quant_proj", "quant_conv")
            value = value[:, :, None, None] if key.endswith("weight") else value
        elif key == "quantizer.embed":
            new = "quantize.embedding.weight"
        assert new is not None, key
        out[new] = value.clone()
    out["quantize.codebook_used"] = torch.zeros(65536)
    return out


def _official_config(model, **init_args) -> dict:
    c = model.config
    args = dict(codebook_size=c["codebook_size"], codebook_embed_dim=c["codebook_dim"], codebook_l2_norm=True,
                encoder_ch_mult=list(c["encoder_ch_mult"]), decoder_ch_mult=list(c["decoder_ch_mult"]),
                model_size=None, encoder_size="test", decoder_size="test", z_channels=c["z_channels"],
                adaptive_gn=True, d2s_up=True, rot=True, use_attn=False, distill_depth=c["semantic_depth"],
                out_inner_dim=c["semantic_dim"])
    if c["token_layout"] == "1d":
        args.update(num_latent_tokens=c["num_latent_tokens"], multi_level_query_init=True)
    else:
        args.update(transformer_layer_type="TransformerLayer")
    args.update(init_args)
    width, depth, heads = c["encoder_width"], c["encoder_depth"], c["encoder_heads"]
    return {
        "model": {"model_cls": "VQVitModelPlus" if c["token_layout"] == "1d" else "VQVitModel2DPlus",
                  "init_args": args},
        "trainer": {"distill_loss": True},
        "fixture_overrides": {"image_size": c["image_size"],
                              "vit_sizes": {"test": {"width": width, "num_layers": depth, "num_heads": heads}}},
    }


# -- official fixture ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture():
    names = ("VQ_fixture256.pt", "VQ_fixture256.yaml", "io.safetensors")
    files = [official_fixture("gigatok", *names) / n for n in names]
    from safetensors.torch import load_file

    torch.set_num_threads(min(2, torch.get_num_threads()))
    tok = zoo.from_official("gigatok", files[0], config=files[1])
    return tok, load_file(str(files[2]))


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """Official fake-2D latents `[B, C, 1, N]` -> our `[B, N, C]`."""
    return t[:, :, 0].transpose(1, 2)


def test_fixture_encode_decode_and_semantic_features(fixture):
    tok, ref = fixture
    assert tok.config["encoder_width"] == 64 and tok.config["cnn_channels"] == 32 and tok.config["num_res_blocks"] == 1
    x = (ref["x"] + 1) / 2
    with torch.inference_mode():
        grid, latents = tok.encode_features(ref["x"])
        tokens = tok.encode(x)
        pixels, rec_grid, hidden = tok.decode_codes(tok.quantizer.lookup(tokens.ids), return_hidden=True)
        y = tok.decode(tokens)
        feats = tok.decoder_features(tokens)
        codes = tok.embed(tokens)
    torch.testing.assert_close(grid, ref["enc_cnn_out"], atol=5e-5, rtol=0)
    # the CPU inference path runs the CNN channels-last (another oneDNN algorithm: the grid moves by ~1e-5, which the
    # ViT amplifies to 0.6-1.04e-4 in the pre-quantisation latents, depending on the thread count); ids stay exact
    torch.testing.assert_close(latents, _channels_last(ref["pre_quant"]), atol=2e-4, rtol=0)
    assert torch.equal(tokens.ids, ref["indices"].reshape(2, -1)), "token ids differ from the official ones"
    assert tokens.layout == (64,)
    torch.testing.assert_close(codes, _channels_last(ref["quant_from_code"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(rec_grid, ref["dec_vit_out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(hidden, ref["dec_vit_layer_feat"], atol=1e-4, rtol=0)
    torch.testing.assert_close(feats, ref["sem_inner_feat"], atol=1e-4, rtol=0)
    torch.testing.assert_close(y * 2 - 1, ref["dec_from_code"], atol=2e-4, rtol=0)
    torch.testing.assert_close(pixels, ref["dec_from_code"], atol=2e-4, rtol=0)


def test_fixture_training_losses_and_rotation_gradient(fixture):
    tok, ref = fixture
    tok.train()
    try:
        with torch.no_grad():
            out = tok((ref["x"] + 1) / 2, direct_reconstruction=True)
    finally:
        tok.eval()
    assert isinstance(out, ForwardOutput)
    losses = {k: v.item() for k, v in out.losses.items()}
    assert losses["codebook"] == pytest.approx(ref["train_vq_loss"].item(), rel=1e-4)
    assert 0.25 * losses["commitment"] == pytest.approx(ref["train_commit_loss"].item(), rel=1e-4)
    assert 0.005 * losses["entropy"] == pytest.approx(ref["train_entropy_loss"].item(), rel=1e-4)
    assert losses["feature_reconstruction"] == pytest.approx(ref["train_fea_rec_loss"].item(), rel=1e-4)
    torch.testing.assert_close(out.reconstruction * 2 - 1, ref["dec_from_code"], atol=2e-4, rtol=0)
    direct = out.extras["direct_reconstruction"][..., :32, :32] * 2 - 1
    torch.testing.assert_close(direct, ref["train_dir_dec_crop32"], atol=2e-4, rtol=0)
    sem = out.extras["decoder_features"]
    proj = -torch.nn.functional.cosine_similarity(sem, ref["sem_feat_standin"], dim=-1).mean()
    assert proj.item() == pytest.approx(ref["train_proj_loss_vs_standin"].item(), rel=1e-3)

    h = _channels_last(ref["pre_quant"]).clone().requires_grad_()
    (tok.quantizer(h).quantized * _channels_last(ref["rot_grad_G"])).sum().backward()
    torch.testing.assert_close(h.grad, _channels_last(ref["grad_pre_quant_rot"]), atol=1e-5, rtol=0)


def test_fixture_checkpoint_container_and_unknown_keys(fixture, tmp_path):
    tok, ref = fixture
    state = torch.load(FIXTURE / "VQ_fixture256.pt", map_location="cpu", weights_only=True)["model"]
    path = tmp_path / "ema.pt"
    torch.save({"ema": state, "model": {"broken": torch.zeros(1)}, "steps": 3}, path)
    again = zoo.from_official("gigatok", path, config=FIXTURE / "VQ_fixture256.yaml")  # "ema" wins over "model"
    for (k, a), b in zip(tok.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    bad = dict(state, **{"s1to2decoder.mystery.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="does not know.*mystery"):
        zoo.from_official("gigatok", bad, FIXTURE / "VQ_fixture256.yaml")


# -- converter without the fixture -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["1d", "2d"])
def test_converter_round_trip(layout):
    model = _small(layout)
    official = _to_official(model)
    for config in (_official_config(model), None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # config=None: head count assumed from the width
            back = zoo.from_official("gigatok", official, config)
        if config is None:  # shapes alone cannot give the head count: width // 64 (one head here)
            assert back.config["encoder_heads"] == 1
            continue
        ignored = {"num_latent_tokens"} if layout == "2d" else set()  # 2D: one token per grid cell
        assert {k: v for k, v in back.config.items() if k not in ignored} == \
            {k: v for k, v in model.config.items() if k not in ignored}
        x = model.example_input(2, torch.Generator().manual_seed(0))
        with torch.inference_mode():
            t1, t2 = model.encode(x), back.encode(x)
            assert torch.equal(t1.ids, t2.ids)
            assert torch.equal(model.decode(t1), back.decode(t2))


def test_converter_refuses_unknown_keys_and_unsupported_options():
    model = _small("1d")
    official = _to_official(model)
    config = _official_config(model)
    with pytest.raises(ValueError, match="does not know"):
        zoo.from_official("gigatok", dict(official, **{"prior_model.head.weight": torch.zeros(3)}), config)
    with pytest.raises(ValueError, match="use_rope=True"):
        zoo.from_official("gigatok", official, _official_config(model, use_rope=True))
    with pytest.raises(ValueError, match="unknown GigaTok config options"):
        zoo.from_official("gigatok", official, _official_config(model, flux_capacitor=1))
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        zoo.from_official("gigatok", official, _official_config(model, codebook_size=128))
    missing = {k: v for k, v in official.items() if not k.startswith("s1to2decoder.ln_post")}
    with pytest.raises(ValueError, match="ln_post"):
        zoo.from_official("gigatok", missing, config)


def test_converter_drops_the_distillation_mlp_only_when_unused():
    model = _small("1d")
    official = _to_official(model)
    config = _official_config(model)
    del config["model"]["init_args"]["distill_depth"]  # as the official loader: distill_mlp keys are unexpected
    with pytest.warns(UserWarning, match="semantic-distillation"):
        tok = zoo.from_official("gigatok", official, config)
    assert tok.semantic_head is None and tok.config["semantic_depth"] is None
    with pytest.raises(ValueError, match="no semantic head|no feature hook"):
        tok.decoder_features(tok.encode(model.example_input(1)))


# -- tiny variants -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,layout", [("gigatok-tiny-1d", (256,)), ("gigatok-tiny", (16, 16))])
def test_tiny_variants_tokens_and_features(name, layout):
    torch.manual_seed(0)
    tok = zoo.load(name, weights=None)
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = tok.encode(x)
        y = tok.decode(tokens)
        feats = tok.decoder_features(tokens)
        hidden = tok.decoder_features(tokens, project=False)
    assert tokens.ids.shape == (2, 256) and tokens.layout == layout and tokens.meta["image_size"] == 128
    assert y.shape == x.shape
    assert feats.shape == (2, 256, tok.config["semantic_dim"])
    assert hidden.shape == (2, 256, tok.config["decoder_width"])
    out = tok.train()(x)
    assert out.extras["decoder_features"].shape == feats.shape
    expected = {"commitment", "codebook", "feature_reconstruction"}
    expected |= {"entropy"} if tok.config["entropy_loss"] else set()
    assert set(out.losses) == expected
    with pytest.raises(ValueError, match=r"decodes ids of shape \[B, 256\]"):
        tok.decode(zoo.Tokens(tokens.ids[:, :100], layout=(100,)))


def test_semantic_head_gets_gradient_from_decoder_features():
    tok = _small("1d").train()
    out = tok(tok.example_input(2))
    out.extras["decoder_features"].square().mean().backward()
    assert tok.semantic_head.fc1.weight.grad is not None


def test_latent_perturbation_changes_only_the_decoder_input():
    tok = _small("1d").train()
    x = tok.example_input(4, torch.Generator().manual_seed(0))
    clean = tok(x)
    noisy = tok(x, perturbation={"alpha": 1.0, "beta": 0.5, "delta": 8}, generator=torch.Generator().manual_seed(0))
    assert torch.equal(clean.losses["commitment"], noisy.losses["commitment"])  # VQ losses before perturbation
    changed = (clean.tokens.ids != noisy.tokens.ids).any(-1)
    assert changed[:2].all() and not changed[2:].any()  # only the first beta * B samples
    with pytest.raises(ValueError, match="unknown keys"):
        tok(x, perturbation={"gamma": 1})


def test_wrong_image_size_and_bad_config_are_clear_errors():
    tok = _small("1d")
    with pytest.raises(ValueError, match="64x64 pixels"):
        tok.encode(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        _small("1d", num_latent_tokens=48)
    with pytest.raises(ValueError, match="token_layout"):
        _small("3d")
