"""Inputs checked at the door: one dtype policy for every family, empty batches, sample-rate bounds, finite
guidance, tokens of another model, unreadable weights / tokens / config files named with their path."""

from __future__ import annotations

import inspect
import json
import tempfile
import time
from pathlib import Path

import pytest
import torch

import zoo
from zoo.registry import get_family
from zoo.tokens import Tokens

TINY = zoo.list_models("*-tiny*")
IMAGE = [n for n in TINY if zoo.get_spec(n).modality in ("image", "face")]
AUDIO = [n for n in TINY if zoo.get_spec(n).modality == "audio"]


def _model(name: str):
    torch.manual_seed(0)
    return zoo.load(name, weights=None)


def _input(tok) -> torch.Tensor:
    x = tok.example_input(1, generator=torch.Generator().manual_seed(0))
    return x[..., :8000] if tok.modality == "audio" else x


@pytest.mark.parametrize("name", TINY)
def test_one_dtype_policy_for_every_family(name):
    """Any float dtype is converted to the model's (float64 gives exactly the float32 ids); integer tensors are
    refused with the conversion to use; a float64 model takes float32 input."""
    tok = _model(name)
    x = _input(tok)
    with torch.inference_mode():
        try:
            reference = tok.encode(x)
        except ValueError as err:  # e.g. a face model that finds no face in a random picture
            pytest.skip(f"{name} does not encode its example input: {err}")
        assert torch.equal(tok.encode(x.double()).ids, reference.ids)
        for dtype in (torch.float16, torch.bfloat16):
            assert isinstance(tok.encode(x.to(dtype)), Tokens)
        if tok.modality == "audio":
            with pytest.raises(TypeError, match=r"x.float\(\) / 32768"):
                tok.encode((x * 32767).to(torch.int16))
        else:
            with pytest.raises(TypeError, match=r"x.float\(\) / 255"):
                tok.encode((x * 255).to(torch.uint8))
        with pytest.raises(TypeError, match="floating-point tensor"):
            tok.encode(x.long())
        wide = zoo.load(name, weights=None, dtype=torch.float64)  # loaded under inference_mode too
        assert isinstance(wide.encode(x), Tokens)


@pytest.mark.parametrize("name", TINY)
def test_empty_batches_and_zero_length_ids_are_refused(name):
    tok = _model(name)
    x = _input(tok)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="is empty"):
            tok.encode(x[:0])
        try:
            tokens = tok.encode(x)
        except ValueError as err:
            pytest.skip(f"{name} does not encode its example input: {err}")
        with pytest.raises(ValueError, match="empty batch|hold no ids"):
            tok.decode(tokens[0:0])
        with pytest.raises(ValueError, match="empty batch|hold no ids"):
            tok.embed(tokens[0:0])
        bare = Tokens(tokens.ids[:, :0], None, tokens.layout, dict(tokens.meta))
        with pytest.raises(ValueError, match="hold no ids"):
            tok.decode(bare)


@pytest.mark.parametrize("name", AUDIO)
def test_sample_rate_bounds_fail_fast(name):
    tok = _model(name)
    x = _input(tok)
    with torch.inference_mode():
        for rate in (1, 999, 768_001, -16000):
            start = time.perf_counter()
            with pytest.raises(ValueError, match=r"sample_rate must lie in \[1000, 768000\] Hz"):
                tok.encode(x, sample_rate=rate)
            assert time.perf_counter() - start < 1
        for rate in ("16000", 16000.5, None.__class__):
            with pytest.raises((TypeError, ValueError), match="sample_rate"):
                tok.encode(x, sample_rate=rate)
        tokens = tok.encode(x, sample_rate=1000)
        with pytest.raises(ValueError, match="sample_rate must lie in"):
            tok.decode(tokens, sample_rate=1)
        assert tok.decode(tokens, sample_rate=44101).shape[-1] > 0  # an odd rate resamples in bounded memory


SAMPLERS = [n for n in IMAGE if "guidance" in inspect.signature(get_family(zoo.get_spec(n).family).decode).parameters]


@pytest.mark.parametrize("name", SAMPLERS)
def test_guidance_steps_and_generator_are_checked(name):
    tok = _model(name)
    tokens = tok.encode(_input(tok))
    with torch.inference_mode():
        for bad in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(ValueError, match="guidance must be a finite number"):
                tok.decode(tokens, steps=1, guidance=bad)
        with pytest.raises(TypeError, match="guidance must be a number"):
            tok.decode(tokens, steps=1, guidance="7.5")
        with pytest.raises(ValueError, match="steps must be at least 1"):
            tok.decode(tokens, steps=0)
        with pytest.raises(TypeError, match="steps must be a positive int"):
            tok.decode(tokens, steps=2.5)
        with pytest.raises(TypeError, match="generator must be a torch.Generator"):
            tok.decode(tokens, steps=1, generator=0)


def test_tokens_of_another_model_are_refused_by_name():
    if len(IMAGE) < 2:
        pytest.skip("needs two tiny image models")
    maker, other = _model(IMAGE[0]), _model(IMAGE[1])
    with torch.inference_mode():
        tokens = maker.encode(_input(maker))
        assert tokens.meta["tokenizer"] == IMAGE[0]
        with pytest.raises(ValueError, match=rf"made by {IMAGE[0]}, not by {IMAGE[1]}"):
            other.decode(tokens)
        with pytest.raises(ValueError, match=rf"made by {IMAGE[0]}"):
            other.embed(tokens)
    path = Path(tempfile.mkdtemp()) / "t.safetensors"
    tokens.save(path)
    assert Tokens.load(path).meta["tokenizer"] == IMAGE[0]  # the mark survives files


def test_unreadable_weights_tokens_and_configs_name_their_path(tmp_path):
    tok = _model(TINY[0])
    folder = tok.save_pretrained(tmp_path / "model")
    weights = folder / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"{weights}.*truncated or corrupt"):
        zoo.load(folder)
    with pytest.raises(ValueError, match=rf"{weights}.*truncated or corrupt"):
        zoo.load(TINY[0], weights=weights)
    weights.write_bytes(b"\x80\x04garbage that is no safetensors header")
    with pytest.raises(ValueError, match=rf"{weights}"):
        zoo.load(folder)
    weights.write_bytes(whole)
    assert isinstance(zoo.load(folder), zoo.Tokenizer)

    config = folder / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{config} cannot be read as JSON"):
        zoo.load(folder)
    broken = json.loads(text)
    del broken["kwargs"]
    config.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=rf"{config} lacks its 'family' name or its 'kwargs'"):
        zoo.load(folder)
    broken = json.loads(text)
    broken["kwargs"]["no_such_argument"] = 1
    config.write_text(json.dumps(broken))
    with pytest.raises(TypeError, match=rf"{config}: cannot build"):
        zoo.load(folder)
    broken["family"] = "no-such-family"
    config.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=rf"{config} names family 'no-such-family'"):
        zoo.load(folder)

    tokens = Tokens(torch.arange(12).view(2, 6), layout=(6,), meta={"image_size": 8})
    path = tmp_path / "t.safetensors"
    tokens.save(path)
    data = path.read_bytes()
    for cut in (0, 7, 40, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"{path}"):
            Tokens.load(path)
    from safetensors.torch import save_file

    save_file({"ids": tokens.ids}, str(path), metadata={"format": "zoo.tokens/1", "layout": "[6", "meta": "{}"})
    with pytest.raises(ValueError, match=rf"{path} is a damaged tokens file"):
        Tokens.load(path)
    save_file({"lengths": tokens.ids[:, 0].contiguous()}, str(path), metadata={"format": "zoo.tokens/1"})
    with pytest.raises(ValueError, match=rf"{path} is a damaged tokens file \(no ids"):
        Tokens.load(path)
    from zoo.weights import load_official_checkpoint

    path.write_bytes(data[:50])
    with pytest.raises(ValueError, match=rf"{path}"):
        load_official_checkpoint(path)
