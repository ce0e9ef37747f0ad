"""SEED: official-fixture parity through `zoo.from_official`, the converter's explicit strict=False, the causal
Q-Former, the unCLIP decode path (a tiny random diffusers pipeline built from configs, offline), contract words,
bad inputs, and the training stages on tiny models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import fixture_path, load_script, official_fixture

import zoo
from zoo.image.seed import SEED

FIXTURE = fixture_path("seed")
FILES = ("seed_quantizer.pt", "eva_vit_g.pth", "io.safetensors")


def _load_fixture():
    folder = official_fixture("seed", *FILES)
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = zoo.from_official("seed", folder / "seed_quantizer.pt", config=folder)
    return tok, load_file(str(folder / "io.safetensors"))


@pytest.fixture(scope="module")
def fixture_model():
    return _load_fixture()


def _small(**over) -> SEED:
    """An EVA-backed SEED small enough for unit tests (fixture-like sizes, 32 causal queries)."""
    kwargs = {"image_size": 56, "patch_size": 14, "vit_width": 32, "vit_depth": 2, "vit_heads": 2,
              "qformer_width": 48, "qformer_depth": 2, "qformer_heads": 2, "qformer_intermediate": 64,
              "codebook_size": 64, "codebook_dim": 32, "decode_depth": 1, "decoder_heads": 12, "embedding_dim": 16}
    kwargs.update(over)
    torch.manual_seed(0)
    return SEED(**kwargs).eval()


# -- fixture parity -----------------------------------------------------------------------------------------------------
def test_fixture_ids_embeddings_and_codes_match_the_official_code(fixture_model):
    tok, io = fixture_model
    x = io["pixel_u8"].float() / 255
    with torch.inference_mode():
        tokens = tok.encode(x)
        assert tokens.layout == (32,) and tokens.ids.shape == (2, 32)
        assert torch.equal(tokens.ids, io["ids"])
        torch.testing.assert_close(tok.image_embedding(tokens), io["image_embeds"], atol=2e-5, rtol=0)
        torch.testing.assert_close(tok.embed(tokens), io["codes"], atol=1e-6, rtol=0)
        rand = zoo.Tokens(io["ids_rand"], layout=(32,))
        torch.testing.assert_close(tok.image_embedding(rand), io["image_embeds_from_ids_rand"], atol=2e-5, rtol=0)


def test_fixture_intermediates_match(fixture_model):
    tok, io = fixture_model
    x = io["pixel_u8"].float() / 255
    with torch.inference_mode():
        torch.testing.assert_close((x - tok.clip_mean) / tok.clip_std, io["pixel_values"], atol=1e-6, rtol=0)
        torch.testing.assert_close(tok.visual_encoder(io["pixel_values"]), io["vit_out"], atol=1e-4, rtol=0)
        torch.testing.assert_close(tok.vision_features(x), io["vit_ln_out"], atol=1e-4, rtol=0)
        out, hidden = tok.qformer(io["vit_ln_out"], return_hidden=True)
        torch.testing.assert_close(torch.stack(hidden), io["qformer_hidden_states"], atol=1e-4, rtol=0)
        torch.testing.assert_close(tok.encode_task_layer(out), io["z_pre_quant"], atol=1e-4, rtol=0)
        up = tok.decode_task_layer(io["codes"])
        torch.testing.assert_close(up, io["dec_task_out"], atol=1e-4, rtol=1e-4)
        h = up + tok.image_pos_embed
        for i, block in enumerate(tok.image_blocks):
            h = block(h)
            torch.testing.assert_close(h, io[f"blocks_image_{i}_out"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(tok.image_down(h), io["image_down_out"], atol=1e-4, rtol=1e-4)


def test_the_query_mask_is_causal_and_matters(fixture_model):
    tok, io = fixture_model
    memory = io["vit_ln_out"]
    with torch.inference_mode():
        base = tok.qformer(memory)
        # perturb the inputs of queries 16..31: queries 0..15 must not move
        layer = tok.qformer.layers[0]
        original = layer.forward_queries

        def perturbed(h, context, causal):
            h = h.clone()
            h[:, 16:] += 1.0
            return original(h, context, causal)

        layer.forward_queries = perturbed
        try:
            moved = tok.qformer(memory)
        finally:
            del layer.forward_queries
        assert torch.equal(moved[:, :16], base[:, :16])
        assert (moved[:, 16:] - base[:, 16:]).abs().max() > 1e-3
        tok.qformer.causal = False
        try:
            bidirectional = tok.qformer(memory)
        finally:
            tok.qformer.causal = True
        assert (bidirectional - base).abs().max() > 0.1


# -- the converter -------------------------------------------------------------------------------------------------------
def _raw_state() -> dict[str, torch.Tensor]:
    folder = official_fixture("seed", *FILES)
    return torch.load(folder / "seed_quantizer.pt", weights_only=True)


def test_ignored_tensors_are_listed_and_unknown_ones_refused():
    folder = official_fixture("seed", *FILES)
    with pytest.warns(UserWarning, match=r"ignoring 37 official tensors.*distill_text_proj.weight.*blocks\.2\."):
        zoo.from_official("seed", folder / "seed_quantizer.pt", config=folder)
    state = _raw_state()
    state["mystery.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"does not define: \['mystery.weight'\].*strict=False"):
        zoo.from_official("seed", state, config=folder)
    with pytest.warns(UserWarning, match="mystery.weight"):
        zoo.from_official("seed", state, config=folder, strict=False)


def test_missing_tensors_are_refused_with_their_names():
    folder = official_fixture("seed", *FILES)
    state = _raw_state()
    del state["blocks_image.1.mlp.fc2.bias"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"missing keys \(1\).*image_blocks.1.mlp.fc2.bias"):
            zoo.from_official("seed", state, config=folder)


def test_without_the_eva_file_the_error_names_it(tmp_path):
    folder = official_fixture("seed", *FILES)
    (tmp_path / "bert-base-uncased").mkdir()
    (tmp_path / "bert-base-uncased" / "config.json").write_text((folder / "bert-base-uncased" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"no ViT weights.*eva_vit_g\.pth"):
        zoo.from_official("seed", folder / "seed_quantizer.pt", config=tmp_path)


def test_config_disagreements_are_refused(tmp_path):
    folder = official_fixture("seed", *FILES)
    bert = json.loads((folder / "bert-base-uncased" / "config.json").read_text())
    bert["hidden_size"] = 128
    (tmp_path / "config.json").write_text(json.dumps(bert))
    for name in ("eva_vit_g.pth", "fixture_overrides.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(ValueError, match="hidden_size=128 but the weights have 96"):
        zoo.from_official("seed", folder / "seed_quantizer.pt", config=tmp_path)
    # without the overrides file the ViT is taken as the release's depth-39 ViT-g: its missing blocks are named
    with pytest.raises(ValueError, match="not the release's ViT-g"):
        zoo.from_official("seed", folder / "seed_quantizer.pt", config=folder / "bert-base-uncased" / "config.json",
                          vit=folder / "eva_vit_g.pth")


def test_fp16_files_are_cast_and_round_trip_through_the_key_table(fixture_model):
    folder = official_fixture("seed", *FILES)
    tok, _ = fixture_model
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in _raw_state().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cast = zoo.from_official("seed", half, config=folder)
    assert all(p.dtype == torch.float32 for p in cast.parameters())
    converter = zoo.registry.get_converter("seed")
    back = converter.to_official(tok)
    raw = converter.read(folder / "seed_quantizer.pt", folder)
    kept = {k for k in raw.state if not k.startswith(("Qformer.cls.", "pos_embed_text", "distill_text_proj",
                                                      "visual_encoder.blocks.2.")) and "intermediate." not in k
            and ".output." not in k.replace("attention.output.", "") and "word_embeddings" not in k
            and "position_embeddings" not in k and k != "Qformer.bert.embeddings.position_ids"}
    assert set(back) == kept
    assert all(torch.equal(back[k], raw.state[k]) for k in back)


def test_the_registered_release_matches_what_the_converter_infers():
    converter = zoo.registry.get_converter("seed")
    with torch.device("meta"):
        model = zoo.create("seed-tokenizer-2")
    inferred = converter.infer_kwargs(converter.read(converter.to_official(model)))
    assert inferred["vit_depth"] == 39 and inferred["vit_heads"] == 16 and inferred["causal_queries"] is True
    assert inferred["codebook_size"] == 8192 and inferred["embedding_dim"] == 1024


# -- unCLIP decoding (offline, a tiny random pipeline built from configs) -------------------------------------------------
def build_tiny_unclip(folder: Path, embedding_dim: int) -> Path:
    """A random `StableUnCLIPImg2ImgPipeline` with the SD-2.1-unCLIP wiring at toy size, saved to `folder`."""
    transformers = pytest.importorskip("transformers", reason="the unCLIP pipeline's text/image encoders need it")
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    torch.manual_seed(0)
    vocab = folder / "tokenizer_files"
    vocab.mkdir(parents=True)
    (vocab / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2, "a</w>": 3}))
    (vocab / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"), model_max_length=8)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=4, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=8, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    image = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16,
        projection_dim=embedding_dim))
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=(2, 4), norm_num_groups=4, class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * embedding_dim)
    vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=transformers.CLIPImageProcessor(crop_size=32, size=32), image_encoder=image,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embedding_dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), tokenizer=tokenizer,
        text_encoder=text, unet=unet, vae=vae,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1))
    pipe.save_pretrained(str(folder / "pipeline"))
    return folder / "pipeline"


@pytest.fixture(scope="module")
def tiny_unclip(tmp_path_factory):
    return build_tiny_unclip(tmp_path_factory.mktemp("unclip"), embedding_dim=16)


def test_decode_goes_through_a_local_unclip_pipeline(tiny_unclip, monkeypatch):
    tok = _small()
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = tok.encode(x)
        y = tok.decode(tokens, steps=2, guidance=10, generator=torch.Generator().manual_seed(3), unclip=tiny_unclip)
        again = tok.decode(tokens, steps=2, guidance=10, generator=torch.Generator().manual_seed(3),
                           unclip=str(tiny_unclip))
        other = tok.decode(tokens, steps=2, guidance=10, generator=torch.Generator().manual_seed(4),
                           unclip=tiny_unclip)
    assert y.shape == (2, 3, 16, 16) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.equal(y, again) and not torch.equal(y, other)
    monkeypatch.setenv("ZOO_SEED_UNCLIP", str(tiny_unclip))
    with torch.inference_mode():
        from_env = tok.decode(tokens, steps=2, guidance=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(from_env, y)


def test_decode_without_a_pipeline_names_the_folder_to_provide(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_SEED_UNCLIP", raising=False)
    tok = _small()
    tokens = zoo.Tokens(torch.zeros(1, 32, dtype=torch.long), layout=(32,))
    with pytest.raises(FileNotFoundError, match=r"stabilityai/stable-diffusion-2-1-unclip.*ZOO_SEED_UNCLIP"):
        tok.decode(tokens)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*model_index.json"):
        tok.decode(tokens, unclip=tmp_path)
    monkeypatch.setenv("ZOO_SEED_UNCLIP", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nowhere'} is not a diffusers pipeline folder"):
        tok.decode(tokens)


def test_an_unclip_pipeline_of_another_width_is_refused(tiny_unclip):
    tokens = zoo.Tokens(torch.zeros(1, 32, dtype=torch.long), layout=(32,))
    wrong = _small(embedding_dim=24)
    with pytest.raises(ValueError, match="takes 16-d image embeddings but this tokenizer makes 24-d"):
        wrong.decode(tokens, steps=1, unclip=tiny_unclip)


# -- contract words and bad inputs ------------------------------------------------------------------------------------
def test_contract_shapes_and_any_ids():
    tok = _small()
    x = tok.example_input(3, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        tokens = tok.encode(x)
        assert tokens.ids.shape == (3, 32) and tokens.layout == (32,) and tokens.meta["image_size"] == 56
        assert tok.embed(tokens).shape == (3, 32, 32)
        assert tok.image_embedding(tokens).shape == (3, 16)
        anything = zoo.Tokens(torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0)), layout=(32,))
        assert tok.image_embedding(anything).shape == (2, 16)
    # embed is differentiable w.r.t. the codebook; the embedding too
    tok.image_embedding(anything).sum().backward()
    assert tok.quantizer.embed.grad is not None and tok.quantizer.embed.grad.abs().sum() > 0


def test_bad_ids_and_images_get_clear_errors():
    tok = _small()
    with pytest.raises(ValueError, match=r"shape \[B, 32\]"):
        tok.image_embedding(zoo.Tokens(torch.zeros(2, 31, dtype=torch.long), layout=(31,)))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 64\)"):
        tok.embed(zoo.Tokens(torch.full((1, 32), 64), layout=(32,)))
    with pytest.raises(ValueError, match="pixels"):
        tok.encode(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="parts must be among"):
        tok(torch.rand(1, 3, 56, 56), parts=["pixelz"])
    with pytest.raises(ValueError, match="text side"):
        tok(torch.rand(1, 3, 56, 56), text_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of decoder_heads"):
        _small(qformer_width=40)
    with pytest.raises(ValueError, match="pixel_decoder got unknown keys"):
        _small(pixel_decoder={"wdith": 8})


# -- stage-1 data: image-text shards and WordPiece captions -----------------------------------------------------------
def _pairs(folder: Path, n: int = 8) -> tuple[Path, Path]:
    """`n` random PNG images with captions, as shards, and a vocabulary of the captions."""
    from PIL import Image

    from zoo.data.pairs import write_image_text_shards
    from zoo.image.seed.text import write_vocab

    words = ["red", "green", "blue", "cat", "dog", "tree", "sky", "sea"]
    g = torch.Generator().manual_seed(0)
    pairs = []
    for i in range(n):
        pixels = (torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        pairs.append((path, f"a {words[i % 8]} {words[(i + 3) % 8]}, photographed."))
    write_image_text_shards(pairs, folder / "shards", shard_size=5)
    return folder / "shards", write_vocab([c for _, c in pairs], folder / "vocab.txt")


def test_image_text_shards_and_wordpiece_captions(tmp_path):
    from zoo.data import build_dataset
    from zoo.image.seed.text import WordPieceTokenizer, basic_tokens

    shards, vocab = _pairs(tmp_path)
    data = build_dataset({"type": "image_text_shards", "image_size": 32, "crop": "center"}, path=shards)
    assert len(data) == 8 and len(list(shards.glob("*.tar"))) == 2
    item = data[3]
    assert item["image"].shape == (3, 32, 32) and item["text"] == "a cat sky, photographed."
    assert basic_tokens("Héllo, WORLD!") == ["hello", ",", "world", "!"]
    tok = WordPieceTokenizer(vocab, max_length=6)
    ids, mask = tok(["a red cat", "a zebra red tree sky sea blue"])
    v = tok.vocab
    assert ids[0].tolist() == [v["[CLS]"], v["a"], v["red"], v["cat"], v["[SEP]"], v["[PAD]"]]
    assert ids[1].tolist() == [v["[CLS]"], v["a"], v["[UNK]"], v["red"], v["tree"], v["[SEP]"]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert len(tok) == len(vocab.read_text().split()) + 1  # + [DEC]
    with pytest.raises(FileNotFoundError, match="vocab"):
        WordPieceTokenizer(tmp_path / "missing.txt")


# -- training stages on small models ------------------------------------------------------------------------------------
def _run(recipe: dict, tmp_path: Path, name: str) -> Path:
    from zoo.train import Trainer

    out = tmp_path / name
    recipe = {**recipe, "train": {**recipe.get("train", {}), "output_dir": str(out), "trackers": [], "log_every": 1,
                                  "save_every": 0}}
    Trainer(recipe).fit()
    return out


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after_dir: Path) -> set[str]:
    after = zoo.load(after_dir / "final").state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def random_efficientnet_teacher(folder: Path) -> Path:
    """Random `tf_efficientnet_lite0` weights (timm names) as a file: the `efficientnet_lite0` embedding teacher's
    shape (1280-d pooled features) without the pip package's ImageNet file."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = folder / "efficientnet_lite0.safetensors"
    save_file(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict(), str(path))
    return path


def test_the_three_stages_train_from_one_recipe_each(tmp_path):
    shards, vocab = _pairs(tmp_path)
    teacher = random_efficientnet_teacher(tmp_path)
    words = len(vocab.read_text().split()) + 1
    base = _small(text_vocab_size=words, max_text_len=16, dead_code_threshold=0.5, embedding_dim=1280,
                  pixel_decoder={"width": 16, "depth": 1, "num_heads": 2, "patch_size": 14, "steps": 2})
    base.save_pretrained(tmp_path / "init")
    common = {"model": {"name": str(tmp_path / "init"), "weights": "default"}, "schedule": {"max_steps": 2},
              "train": {"batch_size": 4}}
    images = {"train": {"type": "image_folder", "path": str(tmp_path),
                        "kwargs": {"image_size": 56, "crop": "random", "recursive": False}}}
    stage1 = _run({**common, "data": {"train": {"type": "image_text_shards", "path": str(shards),
                                                "kwargs": {"image_size": 56, "crop": "random"}}},
                   "objective": {"name": "seed_qformer", "kwargs": {"vocab": str(vocab), "max_text_len": 16}}},
                  tmp_path, "stage1")
    rows = [json.loads(line) for line in (stage1 / "metrics.jsonl").read_text().splitlines()]
    assert {"itc", "temp", "i2t_top1"} <= set(rows[-1])
    changed = _changed(_snapshot(base), stage1)
    assert any(k.startswith("qformer.layers.") for k in changed) and "temp" in changed
    assert not any(k.startswith(("visual_encoder.", "quantizer.", "image_", "pixel_decoder.")) for k in changed)

    after1 = _snapshot(zoo.load(stage1 / "final"))
    stage2 = _run({**common, "data": images, "objective": {"name": "seed_codebook", "kwargs": {
        "teacher": "efficientnet_lite0", "teacher_weights": str(teacher), "teacher_size": 56,
        "init_from": str(stage1)}}}, tmp_path, "stage2")
    row = json.loads((stage2 / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"vq", "commitment", "codebook", "feature_reconstruction", "embedding", "embedding_cos", "usage"} <= set(row)
    changed = _changed(after1, stage2)
    assert {"quantizer.embed", "image_proj.weight", "encode_task_layer.fc1.weight"} <= changed
    assert not any(k.startswith(("visual_encoder.", "ln_vision.", "qformer.", "pixel_decoder.")) for k in changed)

    after2 = _snapshot(zoo.load(stage2 / "final"))
    stage3 = _run({**common, "data": images, "objective": {"name": "seed_pixel_decoder", "kwargs": {
        "init_from": str(stage2)}}}, tmp_path, "stage3")
    changed = _changed(after2, stage3)
    assert changed and all(k.startswith("pixel_decoder.") for k in changed)


def test_stage2_refuses_a_start_without_the_frozen_parts(tmp_path):
    from zoo.train.objectives.seed import initialise

    target = _small()
    other = _small(qformer_width=24, qformer_intermediate=32)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="does not provide .* tensors this stage needs"):
        initialise(target, tmp_path / "other", required=("qformer.",))


def test_initialise_from_an_official_checkpoint_and_the_eva_file():
    from zoo.train.objectives.seed import initialise, load_vision_weights

    folder = official_fixture("seed", *FILES)
    tok, _ = _load_fixture()
    fresh = SEED(**{**tok.config, "text_vocab_size": 64})  # a stage-1 model of the fixture's size
    report = initialise(fresh, folder / "seed_quantizer.pt")
    assert torch.equal(fresh.qformer.layers[0].text_mlp.fc1.weight,
                       torch.load(folder / "seed_quantizer.pt", weights_only=True)[
                           "Qformer.bert.encoder.layer.0.intermediate.dense.weight"])
    assert any(k.startswith("vision_proj") for k in report["fresh"])
    load_vision_weights(fresh, str(folder / "eva_vit_g.pth"))
    for (name, a), b in zip(fresh.visual_encoder.state_dict().items(), tok.visual_encoder.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name", ["stage1", "stage2", "tiny-stage1", "tiny-stage2", "tiny-decoder"])
def test_recipes_parse_and_name_real_objective_arguments(name):
    from zoo.train import load_recipe
    from zoo.train.objectives import build_objective

    root = Path(__file__).resolve().parents[1] / "recipes" / "seed"
    cfg = load_recipe(root / f"{name}.yaml")
    objective = build_objective(cfg.objective.name, **dict(cfg.objective.kwargs))
    assert objective.objective_name.startswith("seed_")
    with torch.device("meta"):
        model = zoo.create(cfg.model.name, **dict(cfg.model.kwargs))
    assert isinstance(model, SEED)


def test_the_clip_vision_teacher_reads_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the clip_vision teacher (SEED's paper teacher) needs it")
    from zoo.losses.image_embedding import build_embedding_teacher

    transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16,
        projection_dim=16)).save_pretrained(str(tmp_path / "clip"))
    teacher = build_embedding_teacher("clip_vision", tmp_path / "clip")
    assert teacher.dim == 16 and teacher(torch.rand(2, 3, 56, 56)).shape == (2, 16)
    with pytest.raises(FileNotFoundError, match="CLIP-ViT-H-14"):
        build_embedding_teacher("clip_vision", tmp_path)


# -- held-out evaluation (recipes/seed/evaluate.py) -------------------------------------------------------------------
def _evaluate_module():

    path = Path(__file__).resolve().parents[1] / "recipes" / "seed" / "evaluate.py"
    return load_script(path)


def test_retrieval_counts_ties_as_the_expected_hit():
    ev = _evaluate_module()
    labels, gallery = torch.tensor([0, 1, 1]), torch.tensor([0, 1])
    # query 0: clear hit; query 1: tie between both -> 0.5; query 2: clear miss
    sim = torch.tensor([[3.0, 1.0], [2.0, 2.0], [5.0, 0.0]])
    assert ev.top1(sim, labels, gallery) == pytest.approx((1 + 0.5 + 0) / 3)
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0], [9, 9, 3, 4]])
    assert ev.id_agreement(ids, ids[:2]).tolist() == [[4, 2], [2, 4], [2, 0]]
    # leave-one-out never retrieves the query itself
    assert ev.leave_one_out_top1(torch.eye(3) + 0.1 * torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0.0]]),
                                 torch.tensor([0, 0, 1])) == pytest.approx(2 / 3)


def test_the_evaluation_runs_end_to_end_and_refuses_trained_on_photos(tmp_path):
    from PIL import Image

    from zoo.losses.image_embedding import build_embedding_teacher

    ev = _evaluate_module()
    g = torch.Generator().manual_seed(0)
    for folder, names in (("heldout", ("a", "b", "c")), ("train", ("d", "e"))):
        (tmp_path / folder).mkdir()
        for name in names:
            coarse = torch.rand(1, 3, 6, 8, generator=g)
            pixels = torch.nn.functional.interpolate(coarse, size=(72, 96), mode="bilinear")[0]
            Image.fromarray((pixels * 255).byte().permute(1, 2, 0).numpy()).save(tmp_path / folder / f"{name}.png")
    teacher = build_embedding_teacher("efficientnet_lite0", random_efficientnet_teacher(tmp_path), 56).eval()
    tok = _small(embedding_dim=1280, pixel_decoder={"width": 16, "depth": 1, "num_heads": 2, "patch_size": 14,
                                                    "steps": 2})
    out = tmp_path / "eval"
    results = ev.evaluate(tok, teacher, tmp_path / "heldout", out, train=[tmp_path / "train"], per_photo=2,
                          fid=False, figures=tmp_path / "figures")
    saved = json.loads((out / "seed_metrics.json").read_text())
    assert saved["views"] == 6 and saved["photos"] == ["a.png", "b.png", "c.png"]
    assert -1 <= saved["embedding_cos"]["all"]["mean"] <= 1
    assert 0 < saved["usage"]["heldout"]["usage"] <= 1 and saved["usage"]["heldout"]["num_tokens"] == 9 * 32
    assert saved["retrieval"]["chance"] == pytest.approx(1 / 3)
    for key in ("embedding", "ids", "teacher"):
        assert 0 <= saved["retrieval"][key] <= 1
    assert saved["reconstruction"]["psnr"]["views"]["mean"] > 0
    assert results["embedding_cos"]["per_original"].keys() == {"a.png", "b.png", "c.png"}
    assert (tmp_path / "figures" / "reconstructions.png").is_file()
    assert (out / "reconstructions_views.png").is_file()
    (tmp_path / "train" / "b.png").write_bytes((tmp_path / "heldout" / "b.png").read_bytes())
    with pytest.raises(ValueError, match=r"held-out photos \['b.png'\] also name files"):
        ev.evaluate(tok, teacher, tmp_path / "heldout", out, train=[tmp_path / "train"], per_photo=1, fid=False)


def test_the_export_block_is_a_valid_registry_entry_pointing_at_the_docs():

    import yaml

    from zoo.weights import WeightsEntry

    root = Path(__file__).resolve().parents[1]
    module = load_script(root / "recipes" / "seed" / "export_tiny.py")
    metrics = {"embedding_cos": 0.5, "usage": 0.25, "retrieval": 0.5, "psnr": 12.0}
    config = yaml.safe_load((root / "configs" / "seed" / "tiny.yaml").read_text() + "\n"
                            + module.weights_block("ab" * 32, metrics))
    entry = WeightsEntry.from_dict("ours", config["weights"]["ours"])
    assert config["weights"]["default"] == "ours" and entry.source.file == "seed-tiny.safetensors"
    assert entry.metrics["psnr"] == 12.0 and "held-out" in entry.metrics["protocol"]
    page, anchor = entry.docs.split("#")
    headings = [line.lstrip("#").strip().lower().replace(" ", "-") for line in (root / page).read_text().splitlines()
                if line.startswith("#")]
    assert anchor in headings


def test_pixel_decoder_x_prediction_lands_on_its_predicted_image_and_refuses_unknown_modes():
    """With prediction "x" the network's output is the clean image and the Euler sampler ends exactly on it (the last
    step from t = 1/steps divides by that t); a fresh AdaLN-zero head predicts 0, so samples are 0 in [-1, 1]."""
    from zoo.image.seed.pixel_decoder import EmbeddingFlowDecoder

    torch.manual_seed(0)
    decoder = EmbeddingFlowDecoder(28, 16, width=32, depth=1, num_heads=2, patch_size=14, prediction="x").eval()
    for steps in (1, 3, 8):
        assert decoder.sample(torch.randn(2, 16), steps=steps).abs().max().item() < 1e-6
    x_t, t = torch.randn(2, 3, 28, 28), torch.tensor([0.5, 0.01])
    v = decoder.velocity(x_t, t, torch.randn(2, 16))
    torch.testing.assert_close(v, x_t / torch.tensor([0.5, decoder.min_t])[:, None, None, None])  # (x_t - 0) / t
    loss = decoder.train().loss(torch.rand(2, 3, 28, 28), torch.randn(2, 16))
    loss.backward()
    assert torch.isfinite(loss) and decoder.head.proj.weight.grad is not None
    with pytest.raises(ValueError, match="prediction must be one of"):
        EmbeddingFlowDecoder(28, 16, width=32, depth=1, num_heads=2, patch_size=14, prediction="eps")


def test_teacher_probe_fits_on_some_photos_and_tests_on_others(tmp_path):
    from PIL import Image

    probe = load_script(Path(__file__).resolve().parents[1] / "recipes" / "seed" / "probe_teacher.py")
    g = torch.Generator().manual_seed(0)
    for name in "abcd":
        pixels = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 7, generator=g), size=(120, 160), mode="bilinear")
        Image.fromarray((pixels[0] * 255).byte().permute(1, 2, 0).numpy()).save(tmp_path / f"{name}.png")
    out = tmp_path / "probe.json"
    probe.main(["--photos", str(tmp_path), "--test-photos", "1", "--crops", "2", "--steps", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["photos_fit"] == 3 and result["photos_test"] == 1 and result["crops_per_photo"] == 2
    for key in ("ridge_mean_token", "ridge_all_tokens", "per_position_mlp"):
        assert -1 <= result[key]["test_cosine"] <= 1
    assert -1 <= result["constant"] <= 1
    with pytest.raises(SystemExit, match="--test-photos must be between 1 and 3"):
        probe.main(["--photos", str(tmp_path), "--test-photos", "4"])
