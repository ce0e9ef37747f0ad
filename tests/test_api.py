"""The core contract: Tokens, input checks, config recording, registry, weights sources."""

from __future__ import annotations

import json

import pytest
import torch
from toys import ToyTable

import zoo
from zoo.api import ImageTokenizer
from zoo.checks import check_audio, check_image
from zoo.registry import register_family, register_model, unregister_model
from zoo.weights import Source, WeightsEntry, sha256_file


@register_family("toy")
class Toy(ImageTokenizer):
    def __init__(self, *, image_size: int = 8, size: int = 16, scale: float = 1.0) -> None:
        super().__init__()
        self.image_size = image_size
        self.table = ToyTable(torch.randn(size, 3))
        self.scale = scale

    @property
    def codebooks(self):
        return [zoo.Codebook(self.table, "toy")]

    def encode(self, x):
        x = self.check_input(x)
        ids = self.table.nearest(x.flatten(2).transpose(1, 2))
        return zoo.Tokens(ids, layout=(self.image_size, self.image_size))

    def decode(self, tokens):
        self.check_tokens(tokens)
        b = tokens.batch_size
        return self.table.weight[tokens.ids].transpose(1, 2).reshape(b, 3, *tokens.layout) * self.scale


@pytest.fixture
def toy_name():
    name = "toy-test"
    register_model(name, "toy", {"size": 12}, description="toy for tests")
    yield name
    unregister_model(name)


def test_config_records_constructor_kwargs_with_defaults():
    tok = Toy(size=5)
    assert tok.config == {"image_size": 8, "size": 5, "scale": 1.0}


def test_tokens_batch_ops_and_file_round_trip(tmp_path):
    ids = torch.arange(24).view(2, 4, 3)
    t = zoo.Tokens(ids, torch.tensor([4, 2]), layout=[(1, 1), (1, 3)], meta={"n": torch.tensor([5, 6]), "sr": 24000})
    assert t[1].ids.shape == (1, 4, 3) and t[1].meta["n"].tolist() == [6] and t[1].meta["sr"] == 24000
    assert [u.batch_size for u in t.unbatch()] == [1, 1]
    both = zoo.Tokens.cat([t[0], t[1]])
    assert torch.equal(both.ids, ids) and both.lengths.tolist() == [4, 2]
    t.save(tmp_path / "t.safetensors")
    back = zoo.Tokens.load(tmp_path / "t.safetensors")
    assert torch.equal(back.ids, ids) and back.layout == [(1, 1), (1, 3)] and back.meta["sr"] == 24000
    assert back.valid_mask().sum().item() == 6


def test_tokens_cat_pads_ragged_rows():
    a = zoo.Tokens(torch.ones(1, 3, dtype=torch.long), layout=(3,))
    b = zoo.Tokens(torch.ones(1, 5, dtype=torch.long), layout=(5,), )
    with pytest.raises(ValueError, match="layouts"):
        zoo.Tokens.cat([a, b])
    b = zoo.Tokens(torch.ones(1, 5, dtype=torch.long), torch.tensor([5]), layout=(5,))
    both = zoo.Tokens.cat([a, b])
    assert both.ids.shape == (2, 5) and both.lengths.tolist() == [3, 5]


@pytest.mark.parametrize(
    "ids, lengths, error",
    [
        (torch.zeros(2, 3), None, TypeError),
        (torch.zeros(2, dtype=torch.long), None, ValueError),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([1, 4]), ValueError),
    ],
)
def test_tokens_reject_bad_fields(ids, lengths, error):
    with pytest.raises(error):
        zoo.Tokens(ids, lengths)


def test_tokens_load_rejects_foreign_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a zoo tokens file"):
        zoo.Tokens.load(tmp_path / "x.safetensors")


def test_image_checks_explain_the_problem():
    good = torch.rand(1, 3, 8, 8)
    assert check_image(good, (8, 8)) is good
    with pytest.raises(ValueError, match=r"looks like \[-1, 1\]"):
        check_image(good * 2 - 1, (8, 8))
    with pytest.raises(ValueError, match=r"looks like \[0, 255\]"):
        check_image(good * 255, (8, 8))
    with pytest.raises(ValueError, match="unsqueeze"):
        check_image(good[0], (8, 8))
    with pytest.raises(ValueError, match="channels-last"):
        check_image(good.permute(0, 2, 3, 1), None)
    with pytest.raises(ValueError, match="empty"):
        check_image(torch.rand(0, 3, 8, 8), None)


def test_audio_checks_explain_the_problem():
    assert check_audio(torch.zeros(2, 1, 10)).shape == (2, 10)
    with pytest.raises(ValueError, match="mono"):
        check_audio(torch.zeros(2, 2, 10))
    with pytest.raises(ValueError, match="int16"):
        check_audio(torch.full((1, 10), 3000.0))


def test_registry_load_save_and_unknown_names(toy_name, tmp_path):
    assert toy_name in zoo.list_models("toy-*")
    tok = zoo.load(toy_name, weights=None)
    assert tok.name == toy_name and tok.table.weight.shape == (12, 3) and not tok.training
    with pytest.raises(KeyError, match="did you mean toy-test"):
        zoo.load("toy-tset", weights=None)
    with pytest.raises(ValueError, match="no published weights"):
        zoo.load(toy_name)
    folder = tok.save_pretrained(tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["kwargs"]["size"] == 12
    again = zoo.load(folder)
    assert torch.equal(again.table.weight, tok.table.weight)
    file = folder / "model.safetensors"
    same = zoo.load(toy_name, weights=file)
    assert torch.equal(same.table.weight, tok.table.weight)
    assert same.weights_tag == str(file.resolve()) and tok.weights_tag is None  # what reports say was loaded
    with pytest.raises(ValueError, match=r"shape mismatch for table.weight: model \(13, 3\), file \(12, 3\)"):
        zoo.load("toy-test", weights=file, size=13)
    with pytest.raises(FileNotFoundError):
        zoo.load(toy_name, weights=tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="from_official"):
        torch.save({}, tmp_path / "x.pt")
        zoo.load(toy_name, weights=tmp_path / "x.pt")


def test_decode_rejects_out_of_range_ids(toy_name):
    tok = zoo.load(toy_name, weights=None)
    tokens = tok.encode(torch.rand(2, 3, 8, 8))
    tokens.ids[1, 5] = 12
    with pytest.raises(ValueError, match=r"\[0, 12\).*\(1, 5\)"):
        tok.decode(tokens)


def test_weights_sources_verify_sha256_and_explain_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"abc")
    digest = sha256_file(f)
    assert Source(path=str(f), sha256=digest).resolve() == f
    with pytest.raises(ValueError, match="sha256 mismatch"):
        Source(path=str(f), sha256="0" * 64).resolve()
    with pytest.raises(FileNotFoundError, match="put it at: .*home/org--repo/ckpt.pt"):
        Source(hub={"repo": "org/repo", "file": "ckpt.pt"}).resolve()
    cached = tmp_path / "home" / "org--repo" / "ckpt.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert Source(hub={"repo": "org/repo", "file": "ckpt.pt"}).resolve() == cached
    with pytest.raises(ValueError, match="unknown keys"):
        WeightsEntry.from_dict("x", {"flie": "a"})


def test_from_official_unknown_family():
    with pytest.raises(KeyError, match="no official converter"):
        zoo.from_official("nope", "x.pt")
