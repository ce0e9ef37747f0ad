"""One build path: official YAMLs agree with what their converters infer, official weights are filtered into the
registered architecture, ids come from one side-effect-free assignment, names are never shadowed by folders, and
loads stay cheap (one converter imported, each file hashed once)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from conftest import fixture_path, official_fixture
from zoo.registry import get_converter, get_family, get_spec, kwargs_diff, register_model, unregister_model

OFFICIAL = [n for n in zoo.list_models() if any(w.format == "official" for w in get_spec(n).weights.values())]
TINY = zoo.list_models("*-tiny*")


# -- official YAMLs vs their converters -------------------------------------------------------------------------
def _flextok_stand_in(spec) -> tuple[dict, dict]:
    """The fixture's official hydra config (written by the official code) resized to the variant: the same wiring,
    the released widths, depths and register count. FlexTok's converter infers from the config, not from shapes."""
    from zoo.image.flextok.model import DEFAULT_VAE

    k = spec.kwargs
    config = json.loads((official_fixture("flextok", "config.json") / "config.json").read_text())
    config = copy.deepcopy(config)
    grid = k["image_size"] // 8 // k["patch_size"]
    sides = {"encoder": (k["encoder_dim"], k["encoder_depth"], k["encoder_head_dim"]),
             "decoder": (k["decoder_dim"], k["decoder_depth"], k["decoder_head_dim"])}
    for side, (dim, depth, head_dim) in sides.items():
        for name, module in config[side]["module_dict"].items():
            if "dim" in module and module["dim"] is not None:
                module["dim"] = dim
            if name.endswith("transformer"):
                module["depth"], module["head_dim"] = depth, head_dim
            if "n_max" in module:
                module["n_max"] = k["num_registers"]
            if "max_sizes" in module:
                module["max_sizes"] = [k["num_registers"]] if len(module["max_sizes"]) == 1 else [grid, grid]
    config["vae"]["hf_hub_path"] = None
    return config, dict(DEFAULT_VAE)


def _stand_in(name: str):
    """(converter, raw) for a shape-only stand-in of variant `name`'s official release."""
    spec = get_spec(name)
    converter = get_converter(spec.family)
    if spec.family == "flextok":
        config, vae = _flextok_stand_in(spec)
        return converter, converter.read({}, config, vae=vae)
    with torch.device("meta"):
        model = zoo.create(name)
    return converter, converter.read(converter.to_official(model))


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_yaml_matches_what_its_converter_infers(name):
    spec = get_spec(name)
    converter, raw = _stand_in(name)
    inferred = converter.infer_kwargs(raw)
    registered = dict(spec.kwargs)
    for key in converter.release_kwargs:
        if registered.get(key) is None:
            registered.pop(key, None)
            inferred.pop(key, None)
    diff = kwargs_diff(get_family(spec.family), registered, inferred, ignore=converter.training_kwargs)
    assert not diff, f"{spec.config_path} disagrees with the official layout:\n" + "\n".join(diff)


@pytest.mark.parametrize("name", [n for n in OFFICIAL if get_spec(n).family != "flextok"])
def test_stand_in_tensors_fill_the_registered_architecture(name):
    converter, raw = _stand_in(name)
    with torch.device("meta"):
        model = zoo.create(name)
    state = converter.convert_state_dict(raw, model)
    own = model.state_dict()
    assert set(state) == set(own)
    assert all(tuple(state[k].shape) == tuple(own[k].shape) for k in own)


# -- official weights through the registry ------------------------------------------------------------------------
@pytest.fixture
def gigatok_fixture_variant():
    folder = official_fixture("gigatok", "VQ_fixture256.pt", "VQ_fixture256.yaml")
    ckpt, yaml_file = folder / "VQ_fixture256.pt", folder / "VQ_fixture256.yaml"
    reference = zoo.from_official("gigatok", ckpt, config=yaml_file)
    kwargs = dict(reference.config)
    weights = {"default": "fx", "fx": {"format": "official", "path": str(ckpt), "official_config": {"path": str(yaml_file)}}}
    names = []

    def register(name: str, **changes):
        register_model(name, "gigatok", {**kwargs, **changes}, weights=weights)
        names.append(name)
        return name

    yield reference, register
    for name in names:
        unregister_model(name)


def test_official_weights_load_into_the_registered_architecture(gigatok_fixture_variant):
    reference, register = gigatok_fixture_variant
    tok = zoo.load(register("test-gigatok-fixture"))
    x = reference.example_input(2, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(tok.encode(x).ids, reference.encode(x).ids)
        assert torch.equal(tok.decode(reference.encode(x)), reference.decode(reference.encode(x)))
    assert tok.weights_tag == "fx" and tok.name == "test-gigatok-fixture"


def test_official_weights_refuse_a_registered_architecture_that_disagrees(gigatok_fixture_variant):
    reference, register = gigatok_fixture_variant
    heads = reference.config["decoder_heads"]
    name = register("test-gigatok-wrong", decoder_heads=heads * 2)
    with pytest.raises(ValueError, match=rf"decoder_heads: registered {heads * 2}, official files {heads}"):
        zoo.load(name)


def test_overrides_reach_the_official_path(gigatok_fixture_variant):
    reference, register = gigatok_fixture_variant
    name = register("test-gigatok-overrides")
    assert zoo.load(name, dropout=0.25).config["dropout"] == 0.25  # a training-only kwarg: kept, not dropped
    with pytest.raises(ValueError, match="codebook_size: registered"):
        zoo.load(name, codebook_size=reference.config["codebook_size"] * 2)


def test_from_official_is_infer_build_filter():
    folder = official_fixture("wavtokenizer", "wavtokenizer_fixture.ckpt")
    converter = get_converter("wavtokenizer")
    raw = converter.read(folder / "wavtokenizer_fixture.ckpt")
    model = get_family("wavtokenizer")(**converter.infer_kwargs(raw))
    model.load_state_dict(converter.convert_state_dict(raw, model), strict=True)
    direct = zoo.from_official("wavtokenizer", folder / "wavtokenizer_fixture.ckpt")
    for (k, a), (_, b) in zip(model.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b), k


# -- ids: one side-effect-free assignment -------------------------------------------------------------------------
def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", TINY)
def test_encode_in_train_mode_changes_no_parameter_or_buffer(name):
    torch.manual_seed(0)
    tok = zoo.load(name, weights=None).train()
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    before = _state_copy(tok)
    ids_train = tok.encode(x).ids
    after = tok.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"encode in train mode changed {changed}"
    with torch.inference_mode():
        assert torch.equal(tok.eval().encode(x).ids, ids_train)


# -- names ---------------------------------------------------------------------------------------------------------
def test_a_folder_named_like_a_model_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    zoo.load("wavtokenizer-tiny", weights=None).save_pretrained(tmp_path / "gigatok-tiny")
    assert zoo.load("gigatok-tiny", weights=None).family == "gigatok"  # bare name: the registry
    for ref in ("./gigatok-tiny", Path("gigatok-tiny"), "local-dir:gigatok-tiny", str(tmp_path / "gigatok-tiny")):
        assert zoo.load(ref).family == "wavtokenizer", ref


def test_an_unregistered_name_that_is_also_a_folder_names_both_readings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zoo.load("wavtokenizer-tiny", weights=None).save_pretrained(tmp_path / "my-tokenizer")
    with pytest.raises(KeyError) as err:
        zoo.load("my-tokenizer")
    message = str(err.value)
    assert "registry name" in message and "./my-tokenizer" in message and "local-dir:my-tokenizer" in message
    with pytest.raises(FileNotFoundError, match="no model folder"):
        zoo.load("./not-there")
    with pytest.raises(ValueError, match="is a file"):
        zoo.load(str(tmp_path / "my-tokenizer" / "config.json"))


def test_cli_uses_the_same_name_rule(tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    monkeypatch.chdir(tmp_path)
    zoo.load("wavtokenizer-tiny", weights=None).save_pretrained(tmp_path / "gigatok-tiny")
    assert main(["info", "gigatok-tiny"]) == 0
    assert "gigatok" in capsys.readouterr().out
    assert main(["info", "./gigatok-tiny"]) == 0
    assert "wavtokenizer" in capsys.readouterr().out


# -- cheap loads -----------------------------------------------------------------------------------------------------
def test_loading_a_model_imports_no_converter_and_one_converter_when_asked():
    code = (
        "import sys, zoo\n"
        "zoo.load('gigatok-tiny')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('zoo.convert.'))\n"
        "assert loaded in ([], ['zoo.convert.base', 'zoo.convert.keymap']), loaded\n"
        "zoo.registry.get_converter('wavtokenizer')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('zoo.convert.'))\n"
        "assert loaded == ['zoo.convert.base', 'zoo.convert.keymap', 'zoo.convert.wavtokenizer'], loaded\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_sha256_is_computed_once_per_file_and_again_when_it_changes(tmp_path, monkeypatch):
    from zoo import weights

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(weights, "_SHA_CACHE", {})
    calls = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda path, *a: calls.append(path) or real(path, *a))
    file = tmp_path / "w.safetensors"
    file.write_bytes(b"x" * 1000)
    source = weights.Source(path=str(file), sha256=real(file))
    source.resolve()
    source.resolve()
    assert len(calls) == 1
    weights._SHA_CACHE.clear()  # a new process: the on-disk cache answers
    source.resolve()
    assert len(calls) == 1
    file.write_bytes(b"y" * 1000)  # same size, new content and mtime
    os.utime(file, ns=(1, 1))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        source.resolve()
    assert len(calls) == 2


def test_converter_table_round_trips_the_fixture_keys():
    folder = fixture_path("gigatok")
    if not (folder / "VQ_fixture256.pt").exists():
        pytest.skip(f"official gigatok fixture not found at {folder} (set ZOO_SHARED to the shared/ folder)")
    converter = get_converter("gigatok")
    raw = converter.read(folder / "VQ_fixture256.pt", folder / "VQ_fixture256.yaml")
    model = zoo.from_official("gigatok", folder / "VQ_fixture256.pt", config=folder / "VQ_fixture256.yaml")
    back = converter.to_official(model)
    expected = {k for k in raw.state if k != "quantize.codebook_used" and "distill_mlp" not in k
                or k.startswith("s1to2decoder.distill_mlp")}
    assert set(back) == expected
    assert all(torch.equal(back[k], raw.state[k].float()) for k in back)
