"""`zoo.train.warm_start`: a model that only gained transformer blocks computes what its source did."""

from __future__ import annotations

import pytest
import torch

from zoo.train.warm_start import warm_start


def _gigatok(**over):
    from zoo.image.gigatok import GigaTok

    kwargs = dict(image_size=32, num_latent_tokens=16, codebook_size=32, codebook_dim=4, z_channels=8,
                  cnn_channels=8, encoder_ch_mult=[1, 1, 2], decoder_ch_mult=[1, 1, 2], num_res_blocks=1,
                  norm_groups=2, encoder_width=16, encoder_depth=1, encoder_heads=2, decoder_width=16,
                  decoder_depth=1, decoder_heads=2, semantic_depth=1, semantic_dim=8)
    kwargs.update(over)
    return GigaTok(**kwargs).eval()


def test_added_blocks_start_as_identity():
    torch.manual_seed(0)
    source = _gigatok()
    target = _gigatok(encoder_depth=3, decoder_depth=2)
    report = warm_start(source, target)
    assert len(report.copied) == len(source.state_dict())
    assert report.zeroed and all(".blocks.1." in n or ".blocks.2." in n for n in report.zeroed)
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        a, b = source.encode(x), target.encode(x)
        assert torch.equal(a.ids, b.ids)
        torch.testing.assert_close(target.decode(b), source.decode(a), rtol=0, atol=1e-6)
    # the zeroed projections still learn: a training step moves them
    target.train()
    out = target(x)
    (out.reconstruction.square().mean() + sum(out.losses.values())).backward()
    grad = dict(target.named_parameters())[report.zeroed[0]].grad
    assert grad is not None and grad.abs().sum() > 0


def test_changed_shapes_stay_fresh():
    torch.manual_seed(0)
    source = _gigatok()
    target = _gigatok(encoder_width=24)
    report = warm_start(source, target)
    assert "encoder_vit.embed.weight" in report.fresh and "encoder.conv_in.weight" in report.copied
    assert not any(n.startswith("encoder_vit.blocks.0.") for n in report.zeroed)  # same block, new width: not zeroed


def test_unrelated_models_are_refused():
    with pytest.raises(ValueError, match="same family"):
        warm_start(torch.nn.Linear(2, 2), _gigatok())
