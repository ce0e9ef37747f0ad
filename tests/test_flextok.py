"""FlexTok: official parity on the shared fixture, the converter's refusals, and the exactness of the fast paths
(variable-length padded batches, collapsed mask/null tokens, batched CFG branches)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fixture_path, needs_official_fixture

import zoo
from zoo.convert.flextok import OfficialWiringError, interpret, read_official_config
from zoo.image.flextok import FlexTok
from zoo.image.flextok.sampling import apg

FIXTURE = fixture_path("flextok")
needs_fixture = needs_official_fixture("flextok", "io.safetensors")
RUNS = ("k16_apg", "k4_apg", "k16_cfg", "k4_cfg", "mixed11_2_apg", "k16_noguid")


@pytest.fixture(scope="module")
def official():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return zoo.from_official("flextok", FIXTURE)


@pytest.fixture(scope="module")
def io():
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(FIXTURE / "io.safetensors"), "pt") as handle:
        runs = json.loads(handle.metadata()["runs"])
    return load_file(str(FIXTURE / "io.safetensors")), runs


def _randomized(name: str = "flextok-tiny", seed: int = 0, **kwargs) -> FlexTok:
    """A tiny model with every weight random (adaLN-zero init would make the decoder output exactly zero)."""
    tok = zoo.load(name, weights=None, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in tok.parameters():
            fan_in = param.shape[1] if param.dim() > 1 else param.numel()
            param.copy_(torch.randn(param.shape, generator=g) * fan_in**-0.5)
    return tok.eval()


# -- official parity ------------------------------------------------------------------------------------------------
@needs_fixture
def test_tokens_are_exact(official, io):
    tensors, _ = io
    x = (tensors["input_images"] + 1) / 2
    with torch.no_grad():
        latents = official.vae_encode(x * 2 - 1)
        tokens = official.encode(x)
        short = official.encode(x, num_tokens=[5, 11])
    torch.testing.assert_close(latents, tensors["vae_latents"], atol=1e-4, rtol=1e-4)
    assert torch.equal(tokens.ids, tensors["tokens"])
    assert tokens.lengths.tolist() == [16, 16] and tokens.layout == (16,)
    assert short.lengths.tolist() == [5, 11]
    assert torch.equal(short.ids[0, :5], tensors["tokens"][0, :5]) and (short.ids[0, 5:] == 0).all()
    assert torch.equal(short.ids[1], tensors["tokens"][1, :11])
    assert torch.equal(official.embed(tokens), tensors["fsq_codes_from_tokens"])


@needs_fixture
@pytest.mark.parametrize("collapse", [True, False])
def test_single_decoder_forward_velocities(official, io, collapse):
    tensors, _ = io
    keep = tensors["single_keep_k"].tolist()
    with torch.no_grad():
        regs = official.decoder.register_tokens(tensors["single_quants_padded"])
        x_t, t = tensors["single_x_t"], tensors["single_timesteps"]
        v_cond = official.decoder(x_t, t, regs, keep, [False, False], collapse)
        v_uncond = official.decoder(x_t, t, regs, keep, [True, True], collapse)
    torch.testing.assert_close(v_cond, tensors["single_v_cond"], atol=1e-4, rtol=0)
    torch.testing.assert_close(v_uncond, tensors["single_v_uncond"], atol=1e-4, rtol=0)


@needs_fixture
@pytest.mark.parametrize("run", RUNS)
def test_sampler_runs_match_official(official, io, run):
    tensors, runs = io
    cfg = runs[run]
    tokens = zoo.Tokens(tensors["tokens"].clone(), torch.tensor(cfg["keep_k"]), (16,))
    steps = []
    kwargs = {"steps": cfg["timesteps"], "guidance": cfg["guidance_scale"], "apg": cfg["perform_norm_guidance"]}
    with torch.no_grad():
        latents = official.decode(tokens, noise=tensors[f"run_{run}_noise"], callback=steps.append,
                                  return_latents=True, **kwargs)
        images = official.decode(tokens, generator=torch.Generator().manual_seed(cfg["seed"]), **kwargs)
    assert torch.equal(official.initial_noise(2, torch.Generator().manual_seed(cfg["seed"])),
                       tensors[f"run_{run}_noise"])
    for i, step in enumerate(steps):
        assert torch.allclose(step["t"], tensors[f"run_{run}_t"][i])
        torch.testing.assert_close(step["x_t"], tensors[f"run_{run}_x_t"][i], atol=2e-4, rtol=0)
        torch.testing.assert_close(step["v_cond"], tensors[f"run_{run}_v_cond"][i], atol=2e-4, rtol=0)
        if f"run_{run}_v_guided" in tensors:
            torch.testing.assert_close(step["v_uncond"], tensors[f"run_{run}_v_uncond"][i], atol=2e-4, rtol=0)
            torch.testing.assert_close(step["v"], tensors[f"run_{run}_v_guided"][i], atol=2e-4, rtol=0)
    torch.testing.assert_close(latents, tensors[f"run_{run}_final_latents"], atol=2e-4, rtol=0)
    torch.testing.assert_close(images * 2 - 1, tensors[f"run_{run}_images"], atol=2e-4, rtol=0)


# -- the converter ----------------------------------------------------------------------------------------------------
@needs_fixture
def test_config_order_is_kept_and_a_sorted_config_is_refused(tmp_path):
    text = (FIXTURE / "config.json").read_text()
    order = list(json.loads(text)["decoder"]["module_dict"])
    assert order[0] == "dec_from_latents" and order != sorted(order)
    _, from_meta, origin = read_official_config(FIXTURE / "model.safetensors")
    assert "metadata" in origin and list(from_meta["decoder"]["module_dict"]) == order
    _, from_json, _ = read_official_config(FIXTURE / "model.safetensors", FIXTURE / "config.json")
    assert list(from_json["encoder"]["module_dict"]) == list(from_meta["encoder"]["module_dict"])
    sorted_cfg = json.loads(json.dumps(json.loads(text), sort_keys=True))
    with pytest.raises(OfficialWiringError, match="sort_keys"):
        zoo.from_official("flextok", FIXTURE / "model.safetensors", config=sorted_cfg)


@needs_fixture
def test_unknown_wiring_and_tensors_are_refused_with_a_list(tmp_path):
    from safetensors.torch import load_file, save_file

    _, cfg, _ = read_official_config(FIXTURE / "model.safetensors")
    cfg = json.loads(json.dumps(cfg))
    cfg["decoder"]["module_dict"]["dec_latent_dropout"]["replace_with_single_token"] = True
    cfg["encoder"]["module_dict"]["enc_transformer"]["rope_forward_read_key"] = "rope"
    cfg["encoder"]["module_dict"]["enc_extra"] = {"_target_": "flextok.model.utils.dict_ops.DictKeyFilter"}
    problems = interpret(cfg).problems
    assert any("replace_with_single_token" in p for p in problems)
    assert any("rope_forward_read_key" in p for p in problems)
    assert any("DictKeyFilter" in p for p in problems)

    state = load_file(str(FIXTURE / "model.safetensors"))
    state["decoder.module_dict.dec_extra.weight"] = torch.zeros(3)
    del state["encoder.module_dict.enc_register_module.registers"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(OfficialWiringError) as err:
        zoo.from_official("flextok", tmp_path / "model.safetensors", config=FIXTURE / "config.json",
                          vae=FIXTURE / "flextok_vae_tiny")
    assert "dec_extra.weight" in str(err.value) and "enc_register_module.registers" in str(err.value)


# -- fast paths are exact ---------------------------------------------------------------------------------------------
def test_variable_lengths_in_one_padded_batch_equal_one_at_a_time():
    tok = _randomized()
    x = tok.example_input(3, torch.Generator().manual_seed(1))
    lengths = [3, 32, 1]
    with torch.no_grad():
        tokens = tok.encode(x, num_tokens=lengths)
        full = tok.encode(x)
        noise = tok.initial_noise(3, torch.Generator().manual_seed(2))
        kw = {"steps": 2, "return_latents": True}  # the VAE decoder is per image anyway
        batch = tok.decode(tokens, noise=noise, **kw)
        alone = torch.cat([tok.decode(tokens[i], noise=noise[i:i + 1], **kw) for i in range(3)])
        cfg = tok.decode(tokens, noise=noise, apg=False, **kw)
    assert tokens.ids.shape == (3, 32) and tokens.lengths.tolist() == lengths
    for i, k in enumerate(lengths):
        assert torch.equal(tokens.ids[i, :k], full.ids[i, :k]) and (tokens.ids[i, k:] == 0).all()
    torch.testing.assert_close(batch, alone, atol=1e-4, rtol=0)
    assert not torch.allclose(batch, cfg)


@pytest.mark.parametrize("apg_on", [True, False])
def test_collapsed_tokens_and_batched_branches_are_exact(apg_on):
    tok = _randomized(seed=3)
    x = tok.example_input(2, torch.Generator().manual_seed(4))
    with torch.no_grad():
        tokens = tok.encode(x, num_tokens=[2, 7])
        noise = tok.initial_noise(2, torch.Generator().manual_seed(5))
        kw = {"steps": 2, "noise": noise, "apg": apg_on, "return_latents": True}
        ref = tok.decode(tokens, collapse=False, batch_uncond=False, **kw)
        for collapse in (True, False):
            for batch_uncond in (True, False):
                out = tok.decode(tokens, collapse=collapse, batch_uncond=batch_uncond, **kw)
                torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)  # CFG 7.5 amplifies rounding


def test_apg_momentum_and_clipping():
    g = torch.Generator().manual_seed(0)
    vc, vu = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    _out, running = apg(vc, vu, 3.0, None)
    assert torch.equal(running, vc - vu)
    out2, running2 = apg(vc, vu, 3.0, running)
    torch.testing.assert_close(running2, (vc - vu) * 0.5)
    diff = running2 * torch.clamp(2.5 / running2.flatten(1).norm(dim=1), max=1.0).view(-1, 1, 1, 1)
    unit = vc / vc.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    orth = diff - (diff * unit).flatten(1).sum(1).view(-1, 1, 1, 1) * unit
    torch.testing.assert_close(out2, vc + 2.0 * orth, atol=1e-5, rtol=0)


def test_training_forward_samples_tokens_time_and_repa_features():
    tok = zoo.load("flextok-tiny", weights=None).train()
    g = torch.Generator().manual_seed(0)
    out = tok(tok.example_input(4, g), generator=g)
    assert set(out.losses) >= {"flow"} and torch.isfinite(out.losses["flow"])
    feats = out.extras["decoder_features"]
    assert feats.shape == (4, 64, tok.config["repa_dim"])
    ks = tok.sample_keep_k(200, torch.Generator().manual_seed(1))
    assert set(ks) <= {1, 2, 4, 8, 16, 32} and len(set(ks)) == 6
    t = tok.sample_time(1000, torch.device("cpu"), torch.Generator().manual_seed(2))
    assert 0 < t.min() and t.max() < 1 and abs(t.mean().item() - 0.5) < 0.03
    fixed = tok(tok.example_input(2, g), num_tokens=[1, 32], generator=g)
    assert fixed.extras["keep_k"].tolist() == [1, 32]


def test_bad_decode_arguments_are_clear():
    tok = zoo.load("flextok-tiny", weights=None)
    tokens = zoo.Tokens(torch.zeros(2, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="at most 32 tokens"):
        tok.decode(tokens, steps=1)
    with pytest.raises(ValueError, match="noise must have shape"):
        tok.decode(zoo.Tokens(torch.zeros(2, 4, dtype=torch.long)), steps=1, noise=torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="num_tokens must lie in"):
        tok.encode(tok.example_input(1), num_tokens=0)


def test_eval_tiny_on_whole_photos_writes_the_k_curve(tmp_path):
    """recipes/flextok/eval_tiny.py --whole on two generated photos: a PSNR per k, no rFID from 2 images, a PNG."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, (w, h) in enumerate([(96, 80), (70, 120)]):
        pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    script = Path(__file__).resolve().parents[1] / "recipes" / "flextok" / "eval_tiny.py"
    spec = importlib.util.spec_from_file_location("flextok_eval_tiny", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "curve"
    module.main(["--weights", "none", "--photos", str(photos), "--whole", "--steps", "2", "--threads", "1",
                 "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["images"] == "whole photos" and report["n_images"] == 2
    assert [r["k"] for r in report["rows"]] == [1, 2, 4, 8, 16, 32]
    assert all(r["rfid"] is None and 0 < r["psnr"] < 60 for r in report["rows"])
    assert report["fid_protocol"].startswith("not computed")
    assert out.with_suffix(".png").stat().st_size > 0 and (tmp_path / "curve_grid.png").stat().st_size > 0
