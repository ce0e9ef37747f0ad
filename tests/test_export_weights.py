"""`recipes/export_weights.py`: a run's final weights become a registered variant's bundled file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_script

import zoo
from zoo.weights import sha256_file

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "export_weights.py"


def _script():
    return load_script(SCRIPT)


def test_export_is_reproducible_and_loads(tmp_path):
    torch.manual_seed(0)
    model = zoo.load("gigatok-tiny", weights=None)
    model.save_pretrained(tmp_path / "final")
    export = _script().main
    export([str(tmp_path / "final"), str(tmp_path / "a.safetensors"), "--model", "gigatok-tiny", "--fp16"])
    export([str(tmp_path / "final"), str(tmp_path / "b.safetensors"), "--model", "gigatok-tiny", "--fp16"])
    assert sha256_file(tmp_path / "a.safetensors") == sha256_file(tmp_path / "b.safetensors")
    loaded = zoo.load("gigatok-tiny", weights=tmp_path / "a.safetensors")
    x = model.example_input(1, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert loaded.encode(x).ids.shape == (1, 256)
    ref = model.state_dict()["quant_proj.weight"]
    assert torch.equal(loaded.state_dict()["quant_proj.weight"], ref.half().float())


def test_export_refuses_another_architecture(tmp_path):
    zoo.load("gigatok-tiny", weights=None).save_pretrained(tmp_path / "final")
    with pytest.raises(SystemExit, match="does not match the registered gigatok-tiny-1d"):
        _script().main([str(tmp_path / "final"), str(tmp_path / "x.safetensors"), "--model", "gigatok-tiny-1d"])
