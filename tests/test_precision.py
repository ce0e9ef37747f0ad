"""Reduced precision (`zoo.precision`): every tiny model runs in bf16 with fp32 outputs, and every bundled model keeps
the fidelity measured for it (benchmarks/precision.py; docs/performance.md)."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.bench import precision_fidelity
from zoo.data import sample_audio, sample_image

TINY = zoo.list_models("*-tiny*")

# Measured on the bundled sample (photo.png at the model's size, speech.wav) with bf16 on this CPU (emulated bf16,
# no AVX512-BF16), then loosened by a few ids: (least share of ids equal to fp32, largest change of the metric:
# PSNR in dB for images, mel distance for audio). Residual / multi-scale quantisers (DualToken's 8 + 8 depths,
# TokenFlow's 9 scales) lose agreement in their late levels, where the residual is as small as bf16's rounding;
# their first level keeps 98.8-100 % and the reconstruction does not change (docs/performance.md).
BOUNDS = {
    "dualtoken-tiny": (0.60, 0.05),  # measured 0.648, +0.003 dB
    "flextok-tiny": (0.93, 0.05),  # 1.000 of 32 ids, +0.005 dB
    "gigatok-tiny": (0.95, 0.05),  # 0.981, -0.001 dB
    "gigatok-tiny-1d": (0.95, 0.05),  # 0.977, -0.002 dB
    "karl-vqgan-tiny": (0.94, 0.05),  # 0.969, -0.015 dB
    "tokenflow-tiny": (0.74, 0.10),  # 0.782, +0.044 dB
    "wavtokenizer-tiny": (0.90, 0.02),  # 0.930, mel distance -0.002
}


def test_every_bundled_model_has_a_measured_bound():
    bundled = {name for name in TINY if zoo.get_spec(name).bundled_weights is not None}
    assert bundled <= set(BOUNDS), f"measure bf16 fidelity for {sorted(bundled - set(BOUNDS))} and add its bound"


def test_precision_word_is_checked_everywhere():
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16', 'fp16'"):
        zoo.load("gigatok-tiny", weights=None, precision="int8")
    tok = zoo.load("gigatok-tiny", weights=None)
    assert tok.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        tok.precision = "half"
    assert tok.precision == "fp32"


@pytest.mark.parametrize("name", TINY)
def test_bf16_runs_and_returns_fp32(name):
    torch.manual_seed(0)
    tok = zoo.load(name, weights=None, precision="bf16")
    x = torch.rand(1, 4800) * 0.2 - 0.1 if tok.modality == "audio" else tok.example_input(1)
    kwargs = {"generator": torch.Generator().manual_seed(0)} if "generator" in _params(tok.decode) else {}
    with torch.inference_mode():
        tokens = tok.encode(x)
        y = tok.decode(tokens, **kwargs)
    assert tokens.ids.dtype == torch.long
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    for key, value in tokens.meta.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert value.dtype == torch.float32, key
    assert all(p.dtype == torch.float32 for p in tok.parameters())  # the weights stay fp32: autocast casts per op


def _params(fn) -> set[str]:
    import inspect

    return set(inspect.signature(fn).parameters)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_bundled_model_keeps_its_bf16_fidelity(name):
    if zoo.get_spec(name).bundled_weights is None:
        pytest.skip(f"{name} has no bundled weights")
    tok = zoo.load(name)
    if tok.modality == "audio":
        x, rate = sample_audio()
        metric = "mel_distance"
    else:
        x, rate = sample_image(tok.input_size[0]), None
        metric = "psnr"
    result = precision_fidelity(tok, x, "bf16", sample_rate=rate)
    min_agreement, max_change = BOUNDS[name]
    assert result["ids_agreement"] >= min_agreement, result
    assert abs(result[f"{metric}_bf16"] - result[f"{metric}_fp32"]) <= max_change, result
    assert result[f"{metric}_bf16"] != result[f"{metric}_fp32"], "bf16 changed nothing: is autocast applied?"
    assert tok.precision == "fp32"  # measuring leaves the tokenizer as it was


def test_cli_and_tokenize_take_the_precision(tmp_path):
    import json

    from zoo.cli import main
    from zoo.io import write_image
    from zoo.pretokenize import main as tokenize_main

    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(sample_image(64)[0], photos / "a.png")
    out = tmp_path / "a.tokens.safetensors"
    assert main(["encode", str(photos / "a.png"), str(out), "-m", "gigatok-tiny", "--weights", "none",
                 "--precision", "bf16", "-q"]) == 0
    assert zoo.Tokens.load(out).ids.shape[0] == 1
    assert tokenize_main(["gigatok-tiny", "--data", str(photos), "--out", str(tmp_path / "shards"), "--weights",
                          "none", "--precision", "bf16", "--quiet"]) == 0
    job = json.loads(next((tmp_path / "shards").glob("job*.json")).read_text())
    assert job["precision"] == "bf16"
    # an fp32 run refuses to continue the bf16 folder: its ids would be mixed with the bf16 ones
    assert tokenize_main(["gigatok-tiny", "--data", str(photos), "--out", str(tmp_path / "shards"), "--weights",
                          "none", "--quiet"]) == 1
