"""`zoo.convert.keymap`: converter key tables that work in both directions and refuse what they do not know."""

from __future__ import annotations

import pytest
import torch

from zoo.convert.keymap import KeyMap, Rule, check_complete, flatten_1x1, unflatten_1x1

TABLE = KeyMap([
    Rule("enc.blocks.{i}.{m:conv1|conv2}.{p}", "encoder.layers.{i}.{m}.{p}"),
    Rule("enc.proj.weight", "encoder.proj.weight", flatten_1x1, unflatten_1x1),
    Rule("enc.{rest:*}", "encoder.{rest}"),
    Rule("loss.{rest:*}", None),
])


def test_rules_map_both_ways_with_constrained_placeholders():
    official = {"enc.blocks.0.conv1.weight": torch.ones(2, 2), "enc.blocks.3.conv2.bias": torch.zeros(2),
                "enc.proj.weight": torch.ones(4, 3, 1, 1), "enc.norm.weight": torch.ones(4),
                "loss.disc.weight": torch.ones(1)}
    ours, dropped, unknown = TABLE.to_ours(official)
    assert set(ours) == {"encoder.layers.0.conv1.weight", "encoder.layers.3.conv2.bias", "encoder.proj.weight",
                         "encoder.norm.weight"}
    assert ours["encoder.proj.weight"].shape == (4, 3)
    assert dropped == ["loss.disc.weight"] and unknown == []
    back = TABLE.to_official(ours)
    assert set(back) == set(official) - {"loss.disc.weight"}
    assert back["enc.proj.weight"].shape == (4, 3, 1, 1)
    # the constraint applies in the inverse direction too: conv3 is not a block conv, so the catch-all maps it
    assert TABLE.to_official({"encoder.layers.1.conv3.weight": torch.ones(1)}) == {
        "enc.layers.1.conv3.weight": torch.ones(1)}


def test_unknown_keys_are_reported_and_collisions_refused():
    _, _, unknown = TABLE.to_ours({"text.weight": torch.ones(1)})
    assert unknown == ["text.weight"]
    with pytest.raises(ValueError, match="same placeholders"):
        Rule("a.{x}.{y}", "b.{x}")
    with pytest.raises(ValueError, match="two official tensors map to"):
        KeyMap([Rule("a", "b.w"), Rule("c", "b.w")]).to_ours({"a": torch.ones(1), "c": torch.ones(1)})
    with pytest.raises(KeyError, match="no rule maps our tensor"):
        TABLE.to_official({"decoder.weight": torch.ones(1)})


def test_check_complete_lists_every_problem():
    model = {"a": torch.ones(2), "b": torch.ones(3)}
    with pytest.raises(ValueError) as err:
        check_complete({"a": torch.ones(4), "c": torch.ones(1)}, model, "toy conversion")
    text = str(err.value)
    assert "unknown keys (1): ['c']" in text and "missing keys (1): ['b']" in text and "a: checkpoint (4,)" in text
