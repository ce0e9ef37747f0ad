"""zoo.nn.onednn: the prepacked oneDNN linear of CPU fp32 inference equals the plain layer, follows weight changes,
and steps aside for training, autocast and the opt-out."""

from __future__ import annotations

import copy
import gc
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.onednn import linear_act, onednn_linear_available

PLAIN = {None: lambda x: x, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


@pytest.mark.parametrize("act", [None, "gelu", "gelu_tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_plain_layer(act, bias):
    torch.manual_seed(0)
    layer = nn.Linear(48, 96, bias=bias)
    for x in (torch.randn(5, 48), torch.randn(2, 7, 48), torch.randn(2, 48, 7).transpose(1, 2), torch.randn(1, 48)):
        with torch.no_grad():
            fast, plain = linear_act(layer, x, act), PLAIN[act](layer(x))
        assert fast.shape == plain.shape and fast.dtype == torch.float32
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_follows_in_place_weight_changes():
    layer, x = nn.Linear(16, 32), torch.randn(4, 16)
    with torch.no_grad():
        first = linear_act(layer, x, "gelu")
        layer.weight.mul_(-2.0)  # same storage, new version: the packed copy must be rebuilt
        second = linear_act(layer, x, "gelu")
        torch.testing.assert_close(second, F.gelu(layer(x)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first, second)
    with torch.inference_mode():  # weights made under inference_mode are used unpacked (no version counter)
        frozen = nn.Linear(16, 32)
        torch.testing.assert_close(linear_act(frozen, x), frozen(x), atol=1e-5, rtol=1e-5)


def test_training_autocast_and_opt_out_take_the_plain_path(monkeypatch):
    layer, x = nn.Linear(16, 32), torch.randn(4, 16, requires_grad=True)
    y = linear_act(layer, x, "gelu")  # autograd on: exactly the plain layer, and differentiable
    assert torch.equal(y, F.gelu(layer(x)))
    y.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):  # fp16 autocast: the plain layer
        assert torch.equal(linear_act(layer, x, "gelu"), F.gelu(layer(x)))
    monkeypatch.setenv("ZOO_ONEDNN_LINEAR", "0")
    with torch.no_grad():
        assert torch.equal(linear_act(layer, x, "gelu"), F.gelu(layer(x)))


@pytest.mark.skipif(not onednn_linear_available(), reason="this PyTorch build has no oneDNN linear")
def test_packed_weight_is_cached_and_the_module_still_copies_and_pickles():
    from zoo.nn import onednn

    layer, x = nn.Linear(16, 32), torch.randn(4, 16)
    with torch.no_grad():
        first = linear_act(layer, x, "gelu")
        packed = onednn._PACKED[layer][torch.float32][1]
        linear_act(layer, x)
        assert onednn._PACKED[layer][torch.float32][1] is packed  # reused, not re-packed
    assert set(layer.state_dict()) == {"weight", "bias"}
    # oneDNN's packed tensors cannot be copied or pickled: a used model must still deepcopy (EMA, export) and save
    buffer = io.BytesIO()
    torch.save(nn.Sequential(layer), buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(layer), torch.load(buffer, weights_only=False)[0]):
        with torch.no_grad():
            torch.testing.assert_close(linear_act(clone, x, "gelu"), first, atol=0, rtol=0)
    size = len(onednn._PACKED)
    del layer, clone
    gc.collect()
    assert len(onednn._PACKED) < size  # the entry goes with its module


@pytest.mark.parametrize("act", [None, "gelu"])
def test_bf16_autocast_matches_autocast(act):
    # bf16 autocast: the oneDNN path on a CPU with native bf16 (a cached bf16 weight), else autocast's own linear;
    # either way bf16 out, within bf16 rounding of the fp32 layer and of autocast's result
    torch.manual_seed(0)
    layer, x = nn.Linear(64, 128), torch.randn(3, 10, 64)
    with torch.no_grad():
        reference = PLAIN[act](layer(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, autocast = linear_act(layer, x, act), PLAIN[act](layer(x))
            again = linear_act(layer, fast[..., :64].contiguous(), act)  # a bf16 input is accepted too
    assert fast.dtype == autocast.dtype == again.dtype == torch.bfloat16
    scale = float(reference.abs().max())
    assert float((fast.float() - reference).abs().max()) < 0.02 * scale
    assert float((fast.float() - autocast.float()).abs().max()) < 0.02 * scale
    with torch.no_grad():  # the fp32 path afterwards still uses the fp32 weight
        torch.testing.assert_close(linear_act(layer, x, act), reference, atol=1e-5, rtol=1e-5)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="supports activations"):
        linear_act(nn.Linear(4, 4), torch.randn(1, 4), "relu6")
