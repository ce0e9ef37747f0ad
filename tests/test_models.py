"""Every registered model, parametrised over the registry: tiny variants run, every variant builds."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import torch
from conftest import load_script

import zoo
from zoo.api import AudioTokenizer, ForwardOutput, ImageTokenizer

REPO = Path(__file__).resolve().parents[1]
TINY = zoo.list_models("*-tiny*")
ALL = zoo.list_models()


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tiny(name: str) -> zoo.Tokenizer:
    torch.manual_seed(0)
    return zoo.load(name, weights=None)


def _decode_kwargs(tok: zoo.Tokenizer) -> dict:
    """Stochastic decoders get a seeded generator and few steps so the check stays cheap and repeatable."""
    import inspect

    params = inspect.signature(tok.decode).parameters
    kwargs = {}
    if "generator" in params:
        kwargs["generator"] = _generator(1)
    if "steps" in params:
        kwargs["steps"] = 2
    return kwargs


def test_registry_is_not_empty_and_every_family_has_a_tiny_variant():
    assert ALL, "no model registered"
    own = [f for f in zoo.list_families() if zoo.registry.get_family(f).__module__.startswith("zoo.")]
    for family in own:
        names = zoo.list_models(family=family)
        assert names, f"family {family} registers no variant"
        assert f"{family}-tiny" in names, f"family {family} has no {family}-tiny variant"


@pytest.mark.parametrize("name", ALL)
def test_every_variant_builds_on_meta_device(name):
    with torch.device("meta"):
        tok = zoo.create(name)
    assert tok.num_parameters() > 0
    assert tok.codebook.size > 0


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_reaches_every_parameter(name):
    tok = _tiny(name).train()
    out = tok(tok.example_input(2, _generator()))
    assert isinstance(out, ForwardOutput)
    loss = sum(v for v in out.losses.values())
    if out.reconstruction is not None:
        loss = loss + out.reconstruction.float().square().mean()
    assert torch.isfinite(loss)
    loss.backward()
    missing = [
        n for n, p in tok.named_parameters()
        if p.requires_grad and p.grad is None and not any(fnmatch.fnmatchcase(n, pat) for pat in tok.unused_in_forward)
    ]
    assert not missing, f"parameters without gradient: {missing[:20]}"


@pytest.mark.parametrize("name", TINY)
def test_encode_decode_shapes_and_determinism(name):
    tok = _tiny(name)
    x = tok.example_input(2, _generator())
    with torch.inference_mode():
        tokens = tok.encode(x)
        again = tok.encode(x)
        y = tok.decode(tokens, **_decode_kwargs(tok))
        y2 = tok.decode(tokens, **_decode_kwargs(tok))
    assert tokens.ids.dtype == torch.long and tokens.ids.shape[0] == 2
    assert torch.equal(tokens.ids, again.ids), "encode is not deterministic"
    assert torch.equal(y, y2), "decode with the same seed differs"
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    if isinstance(tok, ImageTokenizer):
        assert y.shape == x.shape
    if isinstance(tok, AudioTokenizer):
        assert y.shape == (2, x.shape[-1])
    emb = tok.embed(tokens)
    assert emb.shape[:2] == tokens.ids.shape[:2]


@pytest.mark.parametrize("name", TINY)
def test_tokens_and_model_round_trip_through_files(name, tmp_path):
    tok = _tiny(name)
    x = tok.example_input(1, _generator())
    with torch.inference_mode():
        tokens = tok.encode(x)
    tokens.save(tmp_path / "t.safetensors")
    back = zoo.Tokens.load(tmp_path / "t.safetensors")
    assert torch.equal(back.ids, tokens.ids) and back.layout == tokens.layout
    tok.save_pretrained(tmp_path / "model")
    loaded = zoo.load(tmp_path / "model")
    for (k, a), (_, b) in zip(tok.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x).ids, tokens.ids)
        assert torch.equal(loaded.decode(back, **_decode_kwargs(tok)), tok.decode(tokens, **_decode_kwargs(tok)))


@pytest.mark.parametrize("name", TINY)
def test_torch_hub_local_load(name):
    tok = torch.hub.load(str(REPO), name, source="local", weights=None, trust_repo=True)
    assert isinstance(tok, zoo.Tokenizer) and tok.name == name
    alias = name.replace("-", "_").replace(".", "_")
    assert isinstance(torch.hub.load(str(REPO), alias, source="local", weights=None), zoo.Tokenizer)


def test_hubconf_lists_every_registered_model():
    hubconf = load_script(REPO / "hubconf.py")
    # what torch.hub.list shows: the public callables of hubconf.py
    entries = {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")}
    assert entries == set(ALL) | {n.replace("-", "_").replace(".", "_") for n in ALL}
    assert all(getattr(hubconf, name).__doc__ for name in entries)


@pytest.mark.parametrize("name", TINY)
def test_bad_inputs_are_rejected_with_clear_errors(name):
    tok = _tiny(name)
    x = tok.example_input(1, _generator())
    with pytest.raises(TypeError, match="floating-point"):
        tok.encode((x * 100).long())
    bad = x.clone()
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(bad)
    with pytest.raises(ValueError, match=r"\[-1, 1\]|\[0, 1\]"):
        tok.encode(x * 5 + 3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        tok.encode(x.numpy())
    if isinstance(tok, ImageTokenizer):
        with pytest.raises(ValueError, match="pixels"):
            tok.encode(torch.nn.functional.interpolate(x, scale_factor=0.5))
        with pytest.raises(ValueError, match="3 RGB channels"):
            tok.encode(x[:, :1])
    with torch.no_grad():
        tokens = tok.encode(x)
    tokens.ids = tokens.ids.clone()
    tokens.ids.view(-1)[0] = tok.codebooks[0].size + 7
    with pytest.raises(ValueError, match="token ids must lie in"):
        tok.decode(tokens, **_decode_kwargs(tok))
    with pytest.raises(TypeError, match="Tokens"):
        tok.decode(tokens.ids)
