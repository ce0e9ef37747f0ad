"""KARL: official-fixture parity through `zoo.from_official`, the converter's key and config handling, the adaptive
token contract (halting, compact ids, budgets and errors per image, batch = one at a time) and both training stages."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from conftest import fixture_path, load_script, official_fixture

import zoo
from zoo.image.karl import ERROR_BINS, KARL, KARLVQGAN, error_bin
from zoo.registry import get_converter

FIXTURE = fixture_path("karl")
CKPT = "karl_small_vqgan_fixture.pth"
BUDGETS = (32, 256)
ERRORS = {"eps0p05": 0.05, "eps0p11": 0.11}
SMALL_KWARGS = {"image_size": 64, "patch_size": 8, "encoder_width": 32, "encoder_depth": 1, "encoder_heads": 2,
                "decoder_width": 32, "decoder_depth": 1, "decoder_heads": 2, "codebook_size": 32, "codebook_dim": 4,
                "max_grid_tokens": 8, "max_latent_tokens": 64, "halting_hidden": 16, "full_budget": 48,
                "vqgan_channels": 8, "vqgan_ch_mult": [1, 1, 2, 2], "vqgan_num_res_blocks": 1, "vqgan_dim": 8,
                "vqgan_codebook_size": 16, "vqgan_norm_groups": 4}


def _small(**over) -> KARL:
    """A KARL small enough for unit tests (64 px, f8 -> 8 x 8 grid)."""
    kwargs = {**SMALL_KWARGS, **over}
    torch.manual_seed(0)
    return KARL(**kwargs).eval()


@pytest.fixture(scope="module")
def official():
    folder = official_fixture("karl", CKPT, "io.safetensors")
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fixture has no gan_losses: nothing to ignore
        tok = zoo.from_official("karl", folder / CKPT, config=folder)
    return tok, load_file(str(folder / "io.safetensors"))


@pytest.fixture(scope="module")
def single(official):
    """`single(img, budget, eps)` -> (Tokens, decoded image) of one fixture image encoded alone, computed once per
    module (the parity, batch and contract tests share them)."""
    tok, io = official
    done: dict = {}

    def run(img: str, budget: int, eps: float):
        if (img, budget, eps) not in done:
            with torch.inference_mode():
                t = tok.encode(io[f"{img}.x"], num_tokens=budget, target_error=eps)
                done[img, budget, eps] = (t, tok.decode(t))
        return done[img, budget, eps]

    return run


# -- parity ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("img", ["a", "b"])
@pytest.mark.parametrize("eps", sorted(ERRORS))
@pytest.mark.parametrize("budget", BUDGETS)
def test_fixture_encode_decode_parity(official, single, img, eps, budget):
    _, io = official
    p = f"{img}.{eps}.T{budget}."
    t, y = single(img, budget, ERRORS[eps])
    halted = io[p + "halt_mask"].bool()[0]
    assert t.lengths.tolist() == io[p + "num_active_tokens"].tolist()
    n = int(t.lengths[0])
    assert torch.equal(t.ids[0, :n], io[p + "latent_ids"][0][~halted])  # exact on the valid prefix, in token order
    assert torch.equal(t.meta["positions"][0, :n], (~halted).nonzero()[:, 0])
    torch.testing.assert_close(t.meta["halt_prob"], io[p + "halt_prob"][..., 0], atol=2e-5, rtol=0)
    if img == "a" and eps == "eps0p05" and budget == 256:
        torch.testing.assert_close(y, io[p + "recon"], atol=5e-4, rtol=0)
    else:
        torch.testing.assert_close(y[:, :, 96:160, 96:160], io[p + "recon_crop64"], atol=5e-4, rtol=0)


def test_fixture_intermediates(official):
    tok, io = official
    with torch.inference_mode():
        for img in "ab":
            z = tok.vqgan.encode_map(io[f"{img}.x"])
            torch.testing.assert_close(z, io[f"{img}.vqgan_z"], atol=2e-5, rtol=0)
            assert torch.equal(tok.vqgan.assign(z), io[f"{img}.vqgan_gt_indices"])
        t = tok.encode(io["a.x"], num_tokens=256, target_error=0.05)
        codes, positions, padding = tok._active_codes(t)
        logits = tok.decoder(codes, positions, tok.grid_size, padding)
        torch.testing.assert_close(logits, io["a.eps0p05.T256.logits"], atol=1e-4, rtol=0)
        code_map = tok.vqgan.codes_to_map(tok.soft_codes(logits), tok.grid_size)
        torch.testing.assert_close(code_map, io["a.eps0p05.T256.decoded_code"], atol=2e-5, rtol=0)
        # the decoder from the stored soft codes
        torch.testing.assert_close(tok.vqgan.decode_map(io["a.eps0p05.T256.decoded_code"]),
                                   io["a.eps0p05.T256.recon"], atol=1e-4, rtol=0)


def test_fixture_batch_equals_one_at_a_time(official, single):
    """Mixed budgets and errors in one batch give each image what it gets alone (the official masks would not)."""
    tok, io = official
    x = torch.cat([io["a.x"], io["b.x"]])
    with torch.inference_mode():
        for budget, errors, pixels in ((256, [0.05, 0.11], True), ([32, 256], [0.11, 0.05], False)):
            t = tok.encode(x, num_tokens=budget, target_error=errors)
            y = tok.decode(t) if pixels else None
            per = [budget] * 2 if isinstance(budget, int) else budget
            for i in range(2):
                s, alone = single("ab"[i], per[i], errors[i])
                n = int(s.lengths[0])
                assert int(t.lengths[i]) == n
                assert torch.equal(t.ids[i, :n], s.ids[0, :n])
                torch.testing.assert_close(t.meta["halt_prob"][i, :per[i]], s.meta["halt_prob"][0], atol=2e-6,
                                           rtol=0)
                assert (t.meta["halt_prob"][i, per[i]:] == 1).all()
                if pixels:
                    torch.testing.assert_close(y[i:i + 1], alone, atol=5e-4, rtol=0)
            counts = tok.estimate_complexity(x, target_error=errors, num_tokens=budget)
            assert torch.equal(counts, t.lengths)


def test_fixture_contract_words(official, single):
    tok, io = official
    x = io["a.x"]
    with torch.inference_mode():
        default = tok.encode(x, target_error=0.05)  # target_error alone: the official 256-token budget
        assert default.ids.shape == (1, 256) and int(default.lengths[0]) == 115
        assert default.meta["halt_prob"].shape == (1, 256)
        assert torch.equal(default.ids, single("a", 256, 0.05)[0].ids)
        tight, loose = single("a", 32, 0.05)[0], single("a", 32, 0.11)[0]
        assert int(loose.lengths[0]) < int(tight.lengths[0])  # 8 < 12 (fixture)
        cut = zoo.Tokens(default.ids[:, :int(default.lengths[0])], default.lengths, default.layout,
                         dict(default.meta))
        assert torch.equal(tok.decode(cut), single("a", 256, 0.05)[1])
        assert torch.equal(tok.estimate_complexity(x, target_error=0.05), default.lengths)


# -- binning -----------------------------------------------------------------------------------------------------------
def test_error_binning_matches_the_official_table():
    table = {0.0: 0, 0.004: 0, 0.005: 0, 0.0051: 1, 0.03: 3, 0.05: 5, 0.075: 8, 0.1: 9, 0.11: 10, 0.2: 14,
             0.38: 18, 0.39: 18, 1.0: 18}
    got = error_bin(torch.tensor(list(table))).tolist()
    assert got == list(table.values())
    assert len(ERROR_BINS) == 19 and 0.08 not in ERROR_BINS


@pytest.mark.skipif(not (FIXTURE / "io.safetensors").exists(), reason="official karl fixture not found")
def test_error_binning_matches_the_fixture_record():
    from safetensors import safe_open

    with safe_open(str(FIXTURE / "io.safetensors"), framework="pt") as f:
        record = json.loads(f.metadata()["fixture_meta"])["eps_binning"]
    eps = torch.tensor([r["eps"] for r in record])
    assert error_bin(eps).tolist() == [r["bin_index"] for r in record]


# -- converter ---------------------------------------------------------------------------------------------------------
def test_converter_round_trip_and_key_errors(official):
    tok, _ = official
    converter = get_converter("karl")
    raw = torch.load(FIXTURE / CKPT, weights_only=True)["ema"]
    back = converter.to_official(tok)
    assert set(back) == set(raw) and all(torch.equal(back[k], raw[k]) for k in raw)
    extra = dict(raw, **{"encoder.mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not know.*encoder.mystery.weight"):
        zoo.from_official("karl", extra, config=FIXTURE)
    missing = {k: v for k, v in raw.items() if k != "decoder.ffn.2.bias"}
    with pytest.raises(ValueError, match=r"missing keys \(1\).*decoder.head.fc2.bias"):
        zoo.from_official("karl", missing, config=FIXTURE)


def test_converter_ignores_stage_2_training_tensors_with_a_note(official):
    tok, _ = official
    raw = torch.load(FIXTURE / CKPT, weights_only=True)["ema"]
    with_gan = dict(raw, **{"gan_losses.0.discriminator.main.0.weight": torch.zeros(64, 3, 4, 4),
                            "gan_losses.3.perceptual_loss.lin0.model.1.weight": torch.zeros(1, 64, 1, 1)})
    with pytest.warns(UserWarning, match="ignoring 2 stage-2 training tensors"):
        again = zoo.from_official("karl", with_gan, config=FIXTURE)
    assert all(torch.equal(a, b) for a, b in zip(tok.state_dict().values(), again.state_dict().values()))


def test_converter_reads_the_container_and_refuses_pickles(tmp_path):
    import argparse

    raw = torch.load(FIXTURE / CKPT, weights_only=True) if (FIXTURE / CKPT).exists() else None
    if raw is None:
        pytest.skip("official karl fixture not found")
    torch.save({"model": raw["ema"], "ema": raw["ema"], "epoch": 3, "args": argparse.Namespace(lr=1e-4)},
               tmp_path / "train.pth")
    assert zoo.from_official("karl", tmp_path / "train.pth", config=FIXTURE).config["encoder_width"] == 64

    import datetime

    torch.save({"ema": raw["ema"], "when": datetime.date(2025, 7, 25)}, tmp_path / "evil.pth")  # not allow-listed
    with pytest.raises(ValueError, match="weights_only=True"):
        zoo.from_official("karl", tmp_path / "evil.pth", config=FIXTURE)
    with pytest.raises(FileNotFoundError, match="Dropbox"):
        zoo.from_official("karl", tmp_path / "absent.pth")


def test_converter_config_checks(official):
    raw = torch.load(FIXTURE / CKPT, weights_only=True)["ema"]
    converter = get_converter("karl")
    base = converter.read(raw, FIXTURE).config
    bad_vqgan = copy.deepcopy(base)
    bad_vqgan["vqgan"]["ddconfig"]["ch"] = 64
    with pytest.raises(ValueError, match="vqgan.yaml ch=64 but the checkpoint has 32"):
        converter.infer_kwargs(converter.read(raw, bad_vqgan))
    no_l2 = copy.deepcopy(base)
    no_l2["karl"]["vq_use_l2_norm"] = False
    with pytest.raises(ValueError, match="vq_use_l2_norm"):
        converter.infer_kwargs(converter.read(raw, no_l2))
    # without the override tables the shrunken widths do not fit the release preset
    with pytest.raises(ValueError, match="preset karl_small gives"):
        converter.infer_kwargs(converter.read(raw, None))
    with pytest.raises(ValueError, match="VAE-base"):
        converter.infer_kwargs(converter.read(dict(raw, **{"base_tokenizer.vae.x": torch.zeros(1)}), FIXTURE))
    continuous = {k: v for k, v in raw.items() if not k.startswith("quantize.")}
    with pytest.raises(ValueError, match="continuous-latent"):
        converter.infer_kwargs(converter.read(continuous, FIXTURE))
    with pytest.raises(FileNotFoundError, match="karl_vqgan.yaml"):
        converter.read(raw, FIXTURE / "io.safetensors")


def test_release_variants_match_the_official_layout():
    with torch.device("meta"):
        tok = zoo.create("karl-small-vqgan-in1k")
    assert tok.num_parameters() == 270_911_120 and len(tok.state_dict()) == 391  # the fixture README's count


# -- contract on a small random model ----------------------------------------------------------------------------------
def test_halted_tokens_are_scattered_and_compacted_in_order():
    tok = _small()
    with torch.no_grad():  # make about half the tokens halt, at scattered positions
        tok.encoder.halting_mlp.fc2.bias.fill_(1.1)
        tok.encoder.halting_mlp.fc2.weight.mul_(40)
    x = tok.example_input(3, torch.Generator().manual_seed(1))
    with torch.inference_mode():
        t = tok.encode(x, num_tokens=[40, 48, 20], target_error=[0.0, 0.05, 0.3])
    active = t.meta["halt_prob"] <= 0.75
    assert torch.equal(t.lengths, active.sum(1))
    assert (t.lengths > 0).all() and (t.lengths < torch.tensor([40, 48, 20])).all()
    for b in range(3):
        n = int(t.lengths[b])
        pos = active[b].nonzero()[:, 0]
        assert torch.equal(t.meta["positions"][b, :n], pos)
        assert not torch.equal(pos, torch.arange(n))  # scattered, not a prefix
        assert (t.ids[b, n:] == 0).all()
    assert (t.meta["halt_prob"][2, 20:] == 1).all() and t.ids.shape == (3, 48)


def test_decode_attends_only_to_active_tokens():
    tok = _small()
    x = tok.example_input(2, torch.Generator().manual_seed(2))
    with torch.inference_mode():
        t = tok.encode(x, num_tokens=[30, 48])
        y = tok.decode(t)
        t.ids[0, int(t.lengths[0]):] = 5  # padding content is never read
        assert torch.equal(tok.decode(t), y)
        hand = zoo.Tokens(t.ids[:1, :int(t.lengths[0])], None, t.layout)  # no positions: the first L positions
        assert tok.decode(hand).shape == (1, 3, 64, 64)


def test_bad_budgets_errors_and_positions_are_clear_errors():
    tok = _small()
    x = tok.example_input(2, torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match=r"num_tokens must lie in \[1, 64\]"):
        tok.encode(x, num_tokens=65)
    with pytest.raises(ValueError, match="one value per image"):
        tok.encode(x, num_tokens=[8, 8, 8])
    with pytest.raises(ValueError, match="target_error must be finite and >= 0"):
        tok.encode(x, target_error=-0.1)
    with pytest.raises(ValueError, match="one value per image"):
        tok.encode(x, target_error=[0.1])
    with pytest.raises(TypeError, match="num_tokens must be an int"):
        tok.encode(x, num_tokens=True)
    with torch.inference_mode():
        t = tok.encode(x, num_tokens=8)
    t.meta["positions"] = t.meta["positions"].clone()
    t.meta["positions"][0, 0] = 99
    with pytest.raises(ValueError, match=r"token positions must lie in \[0, 64\)"):
        tok.decode(t)
    good = t.meta["positions"]
    # positions that are not an integer [B, N] tensor: a clear error naming the expected shape and the fix
    for bad, error, words in ((torch.tensor([-5, 3]), ValueError, r"shape \[B, N\] = \[2, \d+\].*got \[2\]"),
                              (good[:1], ValueError, r"shape \[B, N\]"),
                              (good[:, :1], ValueError, r"shape \[B, N\]"),
                              (good.float(), TypeError, "integer token positions.*float32"),
                              ([[0, 1]], TypeError, "must be a tensor.*got list")):
        t.meta["positions"] = bad
        with pytest.raises(error, match=words) as info:
            tok.decode(t)
        assert "delete meta['positions']" in str(info.value)
    with pytest.raises(ValueError, match="VQGAN downsampling factor"):
        _small(patch_size=16)
    with pytest.raises(ValueError, match="must exceed the VQGAN latent width"):
        _small(encoder_width=8)


def test_base_vqgan_tokenizer():
    torch.manual_seed(0)
    vq = KARLVQGAN(image_size=64, channels=8, ch_mult=[1, 2], num_res_blocks=1, z_channels=8, codebook_size=16,
                   norm_groups=4).eval()
    x = vq.example_input(2, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        t = vq.encode(x)
    assert t.ids.shape == (2, 32 * 32) and t.layout == (32, 32)
    assert vq.decode(t).shape == x.shape
    with pytest.raises(ValueError, match="decodes ids of shape"):
        vq.decode(zoo.Tokens(t.ids[:, :10]))


def test_mage_resblock_shortcut_quirk():
    """A channel-changing block adds nin_shortcut(h) to h and discards its input (the official block)."""
    from zoo.image.karl.vqgan import ResBlock

    torch.manual_seed(0)
    block = ResBlock(4, 8, groups=2).eval()
    x = torch.randn(1, 4, 6, 6)
    h = block.conv2(torch.nn.functional.silu(block.norm2(block.conv1(torch.nn.functional.silu(block.norm1(x))))))
    torch.testing.assert_close(block(x), block.nin_shortcut(h) + h)
    assert block.nin_shortcut.weight.shape == (8, 8, 1, 1)


# -- training -----------------------------------------------------------------------------------------------------------


def test_bucket_index_and_error_prior():
    from zoo.image.karl import ERROR_BINS
    from zoo.train.objectives.karl import OFFICIAL_TOKEN_COUNTS, ErrorPrior, bucket_index

    assert OFFICIAL_TOKEN_COUNTS[0] == 16 and OFFICIAL_TOKEN_COUNTS[-1] == 368 and len(OFFICIAL_TOKEN_COUNTS) == 23
    assert [bucket_index(c) for c in (16, 32, 63, 64, 128, 255, 256, 368)] == [0, 0, 0, 1, 3, 6, 7, 7]
    prior = ErrorPrior(ERROR_BINS)
    assert torch.allclose(prior.prob[:5], torch.full((5,), 0.2)) and prior.prob[5:].sum() == 0
    prior.update(torch.tensor([0.2, 0.03]))  # bins >= the smallest achieved error decay
    assert prior.prob[3] < prior.prob[2] and torch.isclose(prior.prob.sum(), torch.tensor(1.0))
    assert set(prior.sample(100).tolist()) <= set(torch.tensor(ERROR_BINS[:5]).tolist())


def test_two_pass_forward_conditions_pass_two_on_the_achieved_error():
    tok = _small().train()
    seen = []
    tok.encoder.register_forward_pre_hook(lambda m, args: seen.append((args[1].clone(), args[2])))
    x = tok.example_input(2, torch.Generator().manual_seed(4))
    out = tok(x, num_tokens=16, target_error=torch.tensor([0.01, 0.02]), refine=True, reconstruct="no_grad")
    first, second = out.extras["passes"]
    assert (first["num_tokens"], second["num_tokens"]) == (16, 48) and second["active_targets"] == 16
    assert out.reconstruction.requires_grad is False and first["reconstruction"] is not None
    achieved = (x - first["reconstruction"]).abs().flatten(1).mean(1)
    torch.testing.assert_close(seen[1][0], achieved)
    assert torch.equal(seen[0][0], torch.tensor([0.01, 0.02])) and [s[1] for s in seen] == [16, 48]
    assert {"codebook", "commitment", "halt_active", "halt_stop"} <= set(out.losses)
    full = tok(x, num_tokens=48, refine=True, reconstruct="none")
    assert "halt_stop" not in full.losses and full.reconstruction is None  # no halted targets at the full budget
    assert out.extras["target_ids"].shape == (2, 64) and out.extras["target_codes"].shape == (2, 64, 8)


def test_continuous_warm_up_feeds_the_decoder_normalised_latents():
    tok = _small().train()
    fed = []
    tok.decoder.register_forward_pre_hook(lambda m, args: fed.append(args[0].detach().clone()))
    latents = []
    tok.quantizer.register_forward_pre_hook(lambda m, args: latents.append(args[0].detach().clone()))
    x = tok.example_input(2, torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    out = tok(x, num_tokens=48, refine=False, reconstruct="none", quantize=False)
    torch.testing.assert_close(fed[0], torch.nn.functional.normalize(latents[0], dim=-1))
    assert {"codebook", "commitment"} <= set(out.losses) and out.tokens.ids.shape[0] == 2  # the VQ still runs
    tok(x, num_tokens=48, refine=False, reconstruct="none")
    codes = tok.quantizer.lookup(tok.quantizer.assign(latents[1]))
    torch.testing.assert_close(fed[1], codes)  # by default the decoder reads the codes


def test_objective_warm_up_switches_on_vq_and_halting_at_their_steps():
    from zoo.train.objectives.karl import KARLDistillObjective

    tok = _small().train()
    obj = KARLDistillObjective(token_counts=[16], continuous_steps=2, halt_start=3)
    obj.setup(tok)
    calls = []
    original = tok.forward
    tok.forward = lambda *a, **k: calls.append(k["quantize"]) or original(*a, **k)
    x = tok.example_input(2, torch.Generator().manual_seed(1))
    losses = {}
    for step in range(4):
        torch.manual_seed(0)
        loss, terms = obj.generator_loss(tok, x, step)
        terms = {k: v.detach() for k, v in terms.items()}
        rest = terms["codebook"] + 0.25 * terms["commitment"] + terms["ce"] + terms["code"]
        losses[step] = (float(loss.detach()), float(rest), float(terms["halt_active"] + terms.get("halt_stop", 0.0)))
    assert calls == [False, False, True, True]
    for step in (0, 1, 2):  # no halting term before halt_start
        assert losses[step][0] == pytest.approx(losses[step][1], rel=1e-5)
    assert losses[3][0] == pytest.approx(losses[3][1] + losses[3][2], rel=1e-5)
    with pytest.raises(ValueError, match="continuous_steps and halt_start"):
        KARLDistillObjective(continuous_steps=-1)


@pytest.fixture
def small_variant():
    """A registered small KARL (list kwargs given through a recipe's model.kwargs stay OmegaConf lists, which
    save_pretrained cannot write: the engine does not convert them)."""
    from zoo.registry import register_model, unregister_model

    register_model("test-karl-small", "karl", dict(SMALL_KWARGS))
    yield "test-karl-small"
    unregister_model("test-karl-small")


def _trainer_recipe(tmp_path, objective: dict, **model) -> dict:
    return {
        "model": {"name": "test-karl-small", **model},
        "data": {"train": {"type": "synthetic", "kwargs": {"num_items": 4}}},
        "objective": objective,
        "schedule": {"max_steps": 2, "warmup": 1},
        "train": {"batch_size": 2, "log_every": 1, "save_every": 0, "output_dir": str(tmp_path / "run"),
                  "trackers": [], "ema_decay": 0.9},
    }


def _fit(cfg: dict):
    from accelerate.state import AcceleratorState, GradientState

    from zoo.train import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    return [json.loads(line) for line in (trainer.output_dir / "metrics.jsonl").read_text().splitlines()]


def test_stage_one_distils_a_frozen_vqgan(tmp_path, small_variant):
    base = KARLVQGAN(image_size=64, channels=8, ch_mult=[1, 1, 2, 2], num_res_blocks=1, z_channels=8,
                     codebook_size=16, norm_groups=4, dead_code_threshold=0.1)
    with torch.no_grad():
        base.vqgan.quantizer.embed.normal_()
    base.save_pretrained(tmp_path / "vqgan")
    cfg = _trainer_recipe(tmp_path, {"name": "karl-distill", "kwargs": {
        "vqgan": str(tmp_path / "vqgan"), "token_counts": [8, 16, 64]}})
    rows = _fit(cfg)
    assert [r["step"] for r in rows] == [1, 2]
    assert {"ce", "code", "halt_active", "codebook", "commitment", "achieved_error", "tokens"} <= set(rows[0])
    trained = zoo.load(tmp_path / "run" / "final")
    for k, v in base.vqgan.state_dict().items():
        if k in trained.vqgan.state_dict():
            assert torch.equal(trained.vqgan.state_dict()[k], v), k  # copied in, then frozen
    cfg["objective"]["kwargs"]["token_counts"] = [100]
    cfg["train"]["output_dir"] = str(tmp_path / "run2")
    with pytest.raises(ValueError, match="exceed the model's max_latent_tokens"):
        _fit(cfg)


def test_stage_two_trains_everything_with_bucketed_discriminators(tmp_path, small_variant):
    cfg = _trainer_recipe(tmp_path, {"name": "karl-finetune", "kwargs": {
        "perceptual_weight": 0.0, "token_counts": [8, 40], "gan_schedule": [[0, 0.0], [1, 0.2]],
        "discriminator_kwargs": {"channels": 8, "num_layers": 1, "norm": "batch"}}})
    torch.manual_seed(0)
    start = KARL(**SMALL_KWARGS)
    start.save_pretrained(tmp_path / "start")
    cfg["model"]["weights"] = str(tmp_path / "start" / "model.safetensors")
    rows = _fit(cfg)
    assert "gan_1" not in rows[0] and "disc_loss" not in rows[0]  # GAN weight 0 at step 0
    assert {"gan_1", "gan_2", "gan_weight_1", "disc_loss", "rec_1", "rec_2"} <= set(rows[1])
    trained = zoo.load(tmp_path / "run" / "final")
    key = "vqgan.decoder.conv_out.weight"
    assert not torch.equal(trained.state_dict()[key], start.state_dict()[key])  # the VQGAN is fine-tuned too


def test_mage_vqgan_converter_round_trip(tmp_path):
    """MAGE's vqgan.ckpt layout (a taming VQModel state dict, under "state_dict") -> karl-vqgan, and back."""
    converter = get_converter("karl-vqgan")
    torch.manual_seed(0)
    ours = KARLVQGAN(image_size=64, channels=8, ch_mult=[1, 2], num_res_blocks=2, z_channels=8, codebook_size=16,
                     norm_groups=4).eval()
    official = converter.to_official(ours)
    assert "encoder.down.1.block.0.nin_shortcut.weight" in official and "decoder.up.1.upsample.conv.weight" in official
    torch.save({"state_dict": official}, tmp_path / "vqgan.ckpt")
    yaml_cfg = {"model": {"params": {"n_embed": 16, "embed_dim": 8, "ddconfig": {
        "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 2, "z_channels": 8, "resolution": 64}}}}
    raw = converter.read(tmp_path / "vqgan.ckpt", yaml_cfg)
    assert {k: v for k, v in converter.infer_kwargs(raw).items()} == {
        "channels": 8, "ch_mult": [1, 2], "num_res_blocks": 2, "z_channels": 8, "codebook_size": 16, "norm_groups": 32,
        "image_size": 64}
    model = KARLVQGAN(image_size=64, channels=8, ch_mult=[1, 2], num_res_blocks=2, z_channels=8, codebook_size=16,
                      norm_groups=4)
    model.load_state_dict(converter.convert_state_dict(raw, model))
    x = ours.example_input(1, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(model.eval().encode(x).ids, ours.encode(x).ids)
    with pytest.raises(ValueError, match="does not know.*loss.discriminator"):
        converter.convert_state_dict(converter.read(dict(official, **{"loss.discriminator.w": torch.zeros(1)})), model)
    yaml_cfg["model"]["params"]["ddconfig"]["ch"] = 16
    with pytest.raises(ValueError, match="vqgan.yaml ch=16"):
        converter.infer_kwargs(converter.read(tmp_path / "vqgan.ckpt", yaml_cfg))


def test_heldout_evaluation_script_runs_end_to_end(tmp_path):
    """recipes/karl/eval_tiny.py on a small random model and two generated photos: JSON, plots and targets."""

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, (w, h) in enumerate(((96, 80), (70, 90))):  # whole photos of other sizes: resized, centre square
        pixels = (torch.rand(h, w, 3, generator=g) * (1 + 254 * i)).byte().numpy()  # a flat and a noisy one
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    _small().save_pretrained(tmp_path / "model")
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "recipes" / "karl" / "eval_tiny.py"
    module = load_script(script)
    report = module.main(["--model", str(tmp_path / "model"), "--photos", str(photos), "--budgets", "8", "48",
                          "--errors-from", str(photos), "--no-fid", "--threads", "1", "--out", str(tmp_path / "out"),
                          "--name", "small"])
    assert report["n_images"] == 2 and [r["budget"] for r in report["fixed_budget"]] == [8, 48]
    assert report["png_bpp"][0] < report["png_bpp"][1]  # the flat photo compresses better
    assert set(report["targets"]) >= {"full_budget_psnr_at_least_20db", "more_complex_more_tokens"}
    assert json.loads((tmp_path / "out" / "small_eval.json").read_text())["errors"] == report["errors"]
    for stem in ("tokens_curve", "complexity", "recon_grid"):
        assert (tmp_path / "out" / f"small_{stem}.png").stat().st_size > 0


def test_finetune_objective_has_the_same_warm_up_switches():
    from zoo.train.objectives.karl import KARLFinetuneObjective

    tok = _small().train()
    obj = KARLFinetuneObjective(token_counts=[16], perceptual_weight=0.0, gan_schedule=[[0, 0.0]],
                                discriminator_kwargs={"channels": 8, "num_layers": 1, "norm": "batch"},
                                continuous_steps=1, halt_start=2)
    obj.setup(tok)
    calls = []
    original = tok.forward
    tok.forward = lambda *a, **k: calls.append(k["quantize"]) or original(*a, **k)
    x = tok.example_input(2, torch.Generator().manual_seed(1))
    for step in range(2):
        loss, _ = obj.generator_loss(tok, x, step)
        assert torch.isfinite(loss)
    assert calls == [False, True]
    with pytest.raises(ValueError, match="continuous_steps and halt_start"):
        KARLFinetuneObjective(perceptual_weight=0.0, halt_start=-1)
