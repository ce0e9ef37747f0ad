"""The `zoo` command line, run in-process on toy tokenizers registered here and on the registry's tiny variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from torch import nn
from toys import ToyTable

import zoo
from zoo.api import AudioTokenizer, ImageTokenizer
from zoo.cli import main
from zoo.docs import DOCS_BEGIN, DOCS_END, render_docs
from zoo.io import read_audio, read_image, write_audio, write_image
from zoo.registry import register_family, register_model, unregister_model


@register_family("clitoy-image")
class _ToyImage(ImageTokenizer):
    """Per-pixel colour VQ on a 2x-downsampled image; decode takes `steps`/`generator` like a sampler."""

    def __init__(self, *, image_size: int = 16, size: int = 32) -> None:
        super().__init__()
        self.image_size = image_size
        self.table = ToyTable(torch.rand(size, 3))

    @property
    def codebooks(self):
        return [zoo.Codebook(self.table, "colour")]

    def encode(self, x, num_tokens: int | None = None):
        x = self.check_input(x)
        small = nn.functional.avg_pool2d(x, 2)
        ids = self.table.nearest(small.flatten(2).transpose(1, 2))
        lengths = None
        if num_tokens is not None:
            lengths = torch.full((len(x),), num_tokens)
        return zoo.Tokens(ids, lengths, layout=tuple(small.shape[-2:]), meta={"image_size": self.image_size})

    def decode(self, tokens, steps: int | None = None, generator: torch.Generator | None = None):
        self.check_tokens(tokens)
        h, w = tokens.layout
        y = self.table.weight[tokens.ids].transpose(1, 2).reshape(tokens.batch_size, 3, h, w)
        return nn.functional.interpolate(y, scale_factor=2.0, mode="nearest") * 1.2 - 0.1  # unclamped


@register_family("clitoy-audio")
class _ToyAudio(AudioTokenizer):
    """Scalar-quantised frame means at 8 kHz."""

    def __init__(self, *, hop: int = 80, levels: int = 16) -> None:
        super().__init__()
        self.sample_rate = 8000
        self.hop = hop
        self.table = ToyTable(torch.rand(levels, 1))
        with torch.no_grad():
            self.table.weight.copy_(torch.linspace(-1, 1, levels)[:, None])

    @property
    def codebooks(self):
        return [zoo.Codebook(self.table, "level")]

    def encode(self, x, sample_rate: int | None = None, lengths=None):
        wav, lengths = self.prepare_audio(x, sample_rate=sample_rate, lengths=lengths)
        pad = (-wav.shape[-1]) % self.hop
        frames = nn.functional.pad(wav, (0, pad)).view(len(wav), -1, self.hop).mean(-1, keepdim=True)
        return zoo.Tokens(self.table.nearest(frames), layout=(frames.shape[1],), meta={"num_samples": lengths})

    def decode(self, tokens, sample_rate: int | None = None):
        self.check_tokens(tokens)
        audio = self.table.weight[tokens.ids][..., 0].repeat_interleave(self.hop, dim=-1)
        return self.finish_audio(audio, tokens, sample_rate)


@pytest.fixture(scope="module", autouse=True)
def toy_models():
    names = ["clitoy-image-tiny", "clitoy-audio-tiny"]
    register_model(names[0], "clitoy-image", {"size": 24}, description="toy colour VQ")
    register_model(names[1], "clitoy-audio", {"levels": 16}, description="toy audio levels")
    yield names
    for name in names:
        unregister_model(name)


def _png(path: Path, h: int = 20, w: int = 28, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _wav(path: Path, rate: int = 16000, seconds: float = 0.1, channels: int = 1) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 220 * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    sf.write(str(path), data, rate)
    return path


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def _assert_one_line_error(capsys, code: int, expected: int, *needles: str) -> str:
    err = _err(capsys)
    assert code == expected, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# -- io --------------------------------------------------------------------------------------------------------------


def test_read_image_resize_modes(tmp_path):
    src = _png(tmp_path / "a.png", 20, 28)
    full = read_image(src)
    assert full.shape == (1, 3, 20, 28) and full.dtype == torch.float32 and 0 <= full.min() and full.max() <= 1
    assert read_image(src, size=16).shape == (1, 3, 16, 16)
    assert read_image(src, size=(10, 12), mode="stretch").shape == (1, 3, 10, 12)
    exact = read_image(src, size=(20, 28), mode="none")
    assert torch.equal(exact, full)
    # center crop without resize when only the width is too large
    crop = read_image(src, size=(20, 20))
    torch.testing.assert_close(crop, full[..., 4:24])
    with pytest.raises(ValueError, match="expected 16x16"):
        read_image(src, size=16, mode="none")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(bad)


def test_write_image_clamps_and_round_trips(tmp_path):
    x = torch.rand(1, 3, 5, 6)
    x[0, 0, 0, 0] = 1.7
    x[0, 1, 0, 0] = -0.3
    out = write_image(x, tmp_path / "sub" / "x.png")
    back = read_image(out)
    assert back[0, 0, 0, 0] == 1.0 and back[0, 1, 0, 0] == 0.0
    torch.testing.assert_close(back, x.clamp(0, 1), atol=0.5 / 255 + 1e-6, rtol=0)
    with pytest.raises(ValueError, match="batch of 2"):
        write_image(torch.rand(2, 3, 4, 4), tmp_path / "y.png")
    with pytest.raises(ValueError, match="must end in"):
        write_image(torch.rand(3, 4, 4), tmp_path / "y.txt")


def test_audio_io_any_rate_and_stereo(tmp_path):
    src = _wav(tmp_path / "s.flac", rate=11025, channels=2)
    wav, rate = read_audio(src)
    assert rate == 11025 and wav.shape == (1, 1102) and wav.abs().max() <= 1
    out = write_audio(wav * 3, tmp_path / "o.wav", 11025)
    back, rate2 = read_audio(out)
    assert rate2 == 11025 and back.abs().max() <= 1.0
    torch.testing.assert_close(back, (wav * 3).clamp(-1, 1), atol=1 / 32768 + 1e-6, rtol=0)


# -- list / info / errors ---------------------------------------------------------------------------------------------


def test_help_everywhere(capsys):
    assert main(["--help"]) == 0
    for command in ("list", "info", "encode", "decode", "reconstruct", "docs", "bench"):
        assert main([command, "--help"]) == 0, command
        assert "usage: zoo " + command in capsys.readouterr().out


def test_list_and_filters(capsys):
    assert main(["list", "clitoy-*"]) == 0
    out = capsys.readouterr().out
    assert "clitoy-image-tiny" in out and "clitoy-audio-tiny" in out and "toy colour VQ" in out
    assert main(["list", "clitoy-*", "--modality", "audio", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["clitoy-audio-tiny"] and rows[0]["weights"] == "-"
    _assert_one_line_error(capsys, main(["list", "nothing-like-this*"]), 1, "no registered model matches")


def test_info(capsys):
    assert main(["info", "clitoy-image-tiny"]) == 0
    out = capsys.readouterr().out
    assert "family:      clitoy-image (image)" in out and "parameters:  72" in out and "colour 24 x 3" in out
    assert "none published yet" in out
    assert main(["info", "clitoy-image-tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 72 and info["kwargs"] == {"size": 24} and info["codebooks"][0]["size"] == 24


def test_info_shows_weights_entries(capsys, tmp_path):
    name = "clitoy-image-weighted"
    register_model(name, "clitoy-image", {}, weights={
        "ours": {"path": str(tmp_path / "w.safetensors"), "sha256": "ab" * 32, "license": "MIT",
                 "recipe": "recipes/x.yaml", "docs": "docs/x.md#how", "metrics": {"psnr": 21.5}},
    })
    try:
        assert main(["info", name]) == 0
        out = capsys.readouterr().out
        for needle in ("ours (default)", "license: MIT", "sha256: " + "ab" * 32, "metric psnr: 21.5",
                       "available offline: no", "docs: docs/x.md#how"):
            assert needle in out, needle
        # default weights are missing on disk: a clear one-line error, no traceback
        code = main(["encode", str(_png(tmp_path / "a.png")), str(tmp_path / "t.safetensors"), "-m", name])
        _assert_one_line_error(capsys, code, 1, "weights file not found")
    finally:
        unregister_model(name)


def test_unknown_model_and_usage_errors(capsys, tmp_path):
    _assert_one_line_error(capsys, main(["info", "clitoy-imag-tiny"]), 1, "unknown model", "did you mean")
    _assert_one_line_error(capsys, main(["encode", "a.png"]), 2, "required")
    _assert_one_line_error(capsys, main(["bench", "clitoy-image-tiny", "--precision", "int4"]), 2, "invalid choice")
    _assert_one_line_error(capsys, main(["frobnicate"]), 2, "invalid choice")
    src = _png(tmp_path / "a.png")
    code = main(["encode", str(tmp_path / "missing.png"), str(tmp_path / "t.safetensors"), "-m", "clitoy-image-tiny"])
    _assert_one_line_error(capsys, code, 1, "no file or folder")
    code = main(["encode", str(src), str(tmp_path / "t.safetensors"), "-m", "clitoy-image-tiny"])
    _assert_one_line_error(capsys, code, 1, "no published weights", "--weights none")
    code = main(["encode", str(src), str(tmp_path / "t.bin"), "-m", "clitoy-image-tiny", "--weights", "none"])
    _assert_one_line_error(capsys, code, 1, "must end in .safetensors")
    code = main(["encode", str(src), str(tmp_path / "t.safetensors"), "-m", "clitoy-audio-tiny", "--weights", "none"])
    _assert_one_line_error(capsys, code, 1, "is not audio")
    code = main(["encode", str(src), str(tmp_path / "t.safetensors"), "-m", "clitoy-audio-tiny", "--weights", "none",
                 "--num-tokens", "3"])
    _assert_one_line_error(capsys, code, 1)  # the toy audio encoder takes no num_tokens
    code = main(["decode", str(tmp_path / "none.safetensors"), str(tmp_path / "x.png")])
    _assert_one_line_error(capsys, code, 1, "no tokens file")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    _assert_one_line_error(capsys, main(["decode", str(junk), str(tmp_path / "x.png")]), 1)


# -- encode / decode / reconstruct -----------------------------------------------------------------------------------


def test_encode_decode_image_file(tmp_path, capsys):
    src = _png(tmp_path / "a.png", 20, 28)
    tok_file = tmp_path / "a.safetensors"
    args = ["-m", "clitoy-image-tiny", "--weights", "none", "--device", "cpu"]
    assert main(["encode", str(src), str(tok_file), *args, "--num-tokens", "40"]) == 0
    tokens = zoo.Tokens.load(tok_file)
    assert tokens.ids.shape == (1, 64) and tokens.layout == (8, 8) and tokens.lengths.tolist() == [40]
    assert tokens.meta["zoo_model"] == "clitoy-image-tiny" and tokens.meta["zoo_source"] == "a.png"
    out = tmp_path / "out.png"
    # decode finds the model (and weights=none) recorded in the tokens file
    assert main(["decode", str(tok_file), str(out), "--steps", "2"]) == 0
    assert read_image(out).shape == (1, 3, 16, 16)
    capsys.readouterr()
    code = main(["decode", str(tok_file), str(tmp_path / "x.wav")])
    _assert_one_line_error(capsys, code, 1, "must end in one of .png")


def test_reconstruct_matches_python_api_and_clamps(tmp_path):
    src = _png(tmp_path / "a.png", 16, 16)
    model_dir = tmp_path / "model"
    torch.manual_seed(3)
    tok = zoo.load("clitoy-image-tiny", weights=None)
    tok.save_pretrained(model_dir)
    out = tmp_path / "r.png"
    assert main(["reconstruct", str(src), str(out), "-m", str(model_dir), "--device", "cpu"]) == 0
    expected = tok.reconstruct(read_image(src))
    torch.testing.assert_close(read_image(out), expected, atol=0.5 / 255 + 1e-6, rtol=0)
    # the saved-folder model is also what `encode` records, so decode works without --model
    assert main(["encode", str(src), str(tmp_path / "t.safetensors"), "-m", str(model_dir)]) == 0
    assert main(["decode", str(tmp_path / "t.safetensors"), str(tmp_path / "d.png")]) == 0
    torch.testing.assert_close(read_image(tmp_path / "d.png"), expected, atol=0.5 / 255 + 1e-6, rtol=0)
    # a registered name with --weights FILE: the file's absolute path is recorded for decode
    weights = model_dir / "model.safetensors"
    assert main(["encode", str(src), str(tmp_path / "w.safetensors"), "-m", "clitoy-image-tiny", "--weights",
                 str(weights)]) == 0
    assert zoo.Tokens.load(tmp_path / "w.safetensors").meta["zoo_weights"] == str(weights.resolve())
    assert main(["decode", str(tmp_path / "w.safetensors"), str(tmp_path / "w.png")]) == 0
    torch.testing.assert_close(read_image(tmp_path / "w.png"), expected, atol=0.5 / 255 + 1e-6, rtol=0)


def test_folders_with_progress(tmp_path):
    src = tmp_path / "imgs"
    (src / "sub").mkdir(parents=True)
    for i, rel in enumerate(["a.png", "b.jpg", "sub/c.png"]):
        _png(src / rel, 18, 22, seed=i)
    (src / "notes.txt").write_text("ignored")
    model_dir = tmp_path / "model"
    zoo.load("clitoy-image-tiny", weights=None).save_pretrained(model_dir)
    tokens_dir = tmp_path / "tokens"
    assert main(["encode", str(src), str(tokens_dir), "-m", str(model_dir)]) == 0
    made = sorted(p.relative_to(tokens_dir).as_posix() for p in tokens_dir.rglob("*.safetensors"))
    assert made == ["a.safetensors", "b.safetensors", "sub/c.safetensors"]
    assert main(["decode", str(tokens_dir), str(tmp_path / "dec"), "--format", "jpg"]) == 0
    assert sorted(p.name for p in (tmp_path / "dec").rglob("*.jpg")) == ["a.jpg", "b.jpg", "c.jpg"]
    assert main(["reconstruct", str(src), str(tmp_path / "rec"), "-m", str(model_dir)]) == 0
    assert sorted(p.relative_to(tmp_path / "rec").as_posix() for p in (tmp_path / "rec").rglob("*")
                  if p.is_file()) == ["a.png", "b.png", "sub/c.png"]


def test_audio_round_trip_keeps_the_input_rate(tmp_path, capsys):
    src = _wav(tmp_path / "a.wav", rate=16000, seconds=0.1)
    tok_file = tmp_path / "a.safetensors"
    model_dir = tmp_path / "model"
    zoo.load("clitoy-audio-tiny", weights=None).save_pretrained(model_dir)
    assert main(["encode", str(src), str(tok_file), "-m", str(model_dir)]) == 0
    tokens = zoo.Tokens.load(tok_file)
    assert tokens.ids.shape == (1, 10) and tokens.meta["zoo_sample_rate"] == 16000
    assert main(["decode", str(tok_file), str(tmp_path / "d.wav")]) == 0
    wav, rate = read_audio(tmp_path / "d.wav")
    assert rate == 16000 and wav.shape == (1, 1600)
    assert main(["decode", str(tok_file), str(tmp_path / "d8.flac"), "--sample-rate", "8000"]) == 0
    wav8, rate8 = read_audio(tmp_path / "d8.flac")
    assert rate8 == 8000 and wav8.shape == (1, 800)
    assert main(["reconstruct", str(src), str(tmp_path / "r.wav"), "-m", str(model_dir)]) == 0
    rec, rec_rate = read_audio(tmp_path / "r.wav")
    assert rec_rate == 16000 and rec.shape == (1, 1600)
    torch.testing.assert_close(rec, wav, atol=2 / 32768, rtol=0)
    capsys.readouterr()
    code = main(["reconstruct", str(src), str(tmp_path / "r.wav"), "-m", str(model_dir), "--steps", "3"])
    _assert_one_line_error(capsys, code, 1, "deterministic decoder")


# -- docs / bench / delegated commands -------------------------------------------------------------------------------


def test_docs_write_check_and_preserve_other_text(tmp_path, capsys, monkeypatch):
    toys = zoo.list_models("clitoy-*")
    monkeypatch.setattr(zoo, "list_models", lambda *a, **k: toys)  # the toy rows only: keeps the test fast
    page = tmp_path / "index.md"
    page.write_text("# My page\n\nIntro text.\n")
    assert main(["docs", "--path", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# My page\n\nIntro text.\n") and DOCS_BEGIN in text and DOCS_END in text
    assert "| `clitoy-audio-tiny` | [clitoy-audio](clitoy-audio.md) | audio | 16 | 16x1 | none yet |" in text
    assert main(["docs", "--path", str(page), "--check"]) == 0
    page.write_text(text.replace("toy colour VQ", "stale description"))
    capsys.readouterr()
    _assert_one_line_error(capsys, main(["docs", "--path", str(page), "--check"]), 1, "stale", "zoo docs")
    assert main(["docs", "--path", str(page)]) == 0
    assert page.read_text() == text
    assert render_docs(text, "| x |\n").count(DOCS_BEGIN) == 1


def test_bench_image_and_audio(capsys):
    assert main(["bench", "clitoy-image-tiny", "--iters", "1", "--warmup", "0", "--batch-size", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens_shape"] == [2, 64] and result["encode_items_per_s"] > 0 and result["decode_ms_per_batch"] > 0
    assert main(["bench", "clitoy-audio-tiny", "--iters", "1", "--seconds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "x realtime" in out and "tokens (1, 20)" in out
    capsys.readouterr()
    _assert_one_line_error(capsys, main(["bench", "clitoy-audio-tiny", "--iters", "0"]), 1, "--iters")


def test_train_and_eval_are_delegated(monkeypatch, capsys):
    import sys
    import types

    seen = {}
    for command, module in (("train", "zoo.train.cli"), ("eval", "zoo.metrics.cli")):
        fake = types.ModuleType(module)
        fake.main = lambda argv, c=command: seen.setdefault(c, list(argv)) and 0
        monkeypatch.setitem(sys.modules, module, fake)
    assert main(["train", "recipes/x.yaml", "lr=1e-3"]) == 0
    assert main(["eval", "--model", "m"]) == 0
    assert seen == {"train": ["recipes/x.yaml", "lr=1e-3"], "eval": ["--model", "m"]}
    monkeypatch.setitem(sys.modules, "zoo.metrics.cli", None)  # import fails as if the module were missing
    _assert_one_line_error(capsys, main(["eval"]), 1, "no `eval` command")


# -- the registry's tiny variants through the CLI ---------------------------------------------------------------------

TINY = [n for n in zoo.list_models("*-tiny") if not n.startswith("clitoy-")]


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_reconstruct_through_cli(name, tmp_path):
    from zoo.registry import get_family, get_spec

    modality = get_family(get_spec(name).family).modality
    torch.manual_seed(0)
    if modality == "audio":
        src, out = _wav(tmp_path / "in.wav", rate=22050, seconds=0.25), tmp_path / "out.wav"
    elif modality == "face":  # a photo with a face, found by whichever detector is installed
        from PIL import Image
        from skimage import data

        from zoo.face.crop import _choose

        try:
            _choose("auto")
        except RuntimeError as err:
            pytest.skip(f"{name}: {err}")
        src, out = tmp_path / "in.png", tmp_path / "out.png"
        Image.fromarray(data.astronaut()).save(src)
    else:
        src, out = _png(tmp_path / "in.png", 40, 48), tmp_path / "out.png"
    args = ["-m", name, "--weights", "none", "--device", "cpu", "-q"]
    tok = zoo.create(name)
    if "steps" in __import__("inspect").signature(tok.decode).parameters:
        args += ["--steps", "2"]
    assert main(["reconstruct", str(src), str(out), *args]) == 0
    assert out.exists() and out.stat().st_size > 0


# -- folder runs: a bad file is skipped with its reason ----------------------------------------------------------------


def test_folder_runs_skip_bad_files_with_a_reason_and_strict_stops_at_the_first(tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        _png(src / f"ok{i}.png", 18, 22, seed=i)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a picture")
    (src / "empty.jpg").write_bytes(b"")
    model_dir = tmp_path / "model"
    zoo.load("clitoy-image-tiny", weights=None).save_pretrained(model_dir)
    tokens_dir = tmp_path / "tokens"
    capsys.readouterr()
    assert main(["encode", str(src), str(tokens_dir), "-m", str(model_dir), "-q"]) == 3
    err = capsys.readouterr().err
    assert f"skipped {src / 'broken.png'}: ValueError: cannot read" in err
    assert f"skipped {src / 'empty.jpg'}: ValueError: cannot read" in err
    assert "encoded 3 of 5 file(s)" in err and "skipped 2" in err
    assert sorted(p.name for p in tokens_dir.iterdir()) == [f"ok{i}.safetensors" for i in range(3)]
    _assert_one_line_error(capsys, main(["encode", str(src), str(tmp_path / "t2"), "-m", str(model_dir), "-q",
                                         "--strict"]), 1, "broken.png", "cannot read")

    # decode: a truncated tokens file and tokens of another model are skipped, the rest decoded
    (tokens_dir / "zz_truncated.safetensors").write_bytes((tokens_dir / "ok0.safetensors").read_bytes()[:40])
    audio_model = tmp_path / "audio-model"
    zoo.load("clitoy-audio-tiny", weights=None).save_pretrained(audio_model)
    assert main(["encode", str(_wav(tmp_path / "a.wav")), str(tokens_dir / "other.safetensors"), "-m",
                 str(audio_model), "-q"]) == 0
    capsys.readouterr()
    assert main(["decode", str(tokens_dir), str(tmp_path / "dec"), "-q"]) == 3
    err = capsys.readouterr().err
    assert "other.safetensors: ValueError: made by" in err and "zz_truncated.safetensors: ValueError:" in err
    assert "truncated or corrupt" in err and "decoded 3 of 5 file(s)" in err
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == [f"ok{i}.png" for i in range(3)]

    # reconstruct goes on past the bad files too; a folder where every file fails is an error
    assert main(["reconstruct", str(src), str(tmp_path / "rec"), "-m", str(model_dir), "-q"]) == 3
    assert len(list((tmp_path / "rec").iterdir())) == 3
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"junk")
    capsys.readouterr()
    code = main(["reconstruct", str(bad), str(tmp_path / "rec2"), "-m", str(model_dir), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "the first 3 files all failed" in err


def test_audio_over_full_scale_and_sample_rate_bounds_through_the_cli(tmp_path, capsys):
    model_dir = tmp_path / "model"
    zoo.load("clitoy-audio-tiny", weights=None).save_pretrained(model_dir)
    t = np.arange(1600) / 16000
    sf.write(str(tmp_path / "loud.wav"), (1.6 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000,
             subtype="FLOAT")
    capsys.readouterr()
    code = main(["encode", str(tmp_path / "loud.wav"), str(tmp_path / "t.safetensors"), "-m", str(model_dir)])
    _assert_one_line_error(capsys, code, 1, "loud.wav", "peak of 1.6", "above full scale", "--over-full-scale")
    assert main(["encode", str(tmp_path / "loud.wav"), str(tmp_path / "t.safetensors"), "-m", str(model_dir),
                 "--over-full-scale", "normalize", "-q"]) == 0
    sf.write(str(tmp_path / "slow.wav"), np.zeros(100, dtype=np.float32), 1, subtype="FLOAT")
    code = main(["encode", str(tmp_path / "slow.wav"), str(tmp_path / "s.safetensors"), "-m", str(model_dir)])
    _assert_one_line_error(capsys, code, 1, "slow.wav's sample rate must lie in [1000, 768000] Hz, got 1")


def test_face_tokenizer_reads_its_own_crop_and_paints_into_it(tmp_path, monkeypatch):
    """`zoo encode` / `reconstruct` with a face tokenizer: the input comes from its `read_input` (the detector's crop
    and hull points; here a stand-in for the detector), and `reconstruct` decodes into that crop."""
    import numpy as np

    from zoo.face import crop as face_crop

    face = zoo.data.sample_path("face.png")
    points = torch.tensor(json.loads(zoo.data.sample_path("face.json").read_text())["hull_points"])[None]
    seen = []

    def fake_read_face(path):
        seen.append(Path(path).name)
        return face_crop.FaceCrop(read_image(face), points, points[:, :68], np.eye(3), "test")

    monkeypatch.setattr(face_crop, "read_face", fake_read_face)
    tok_file, out = tmp_path / "f.tokens.safetensors", tmp_path / "f.png"
    assert main(["encode", str(face), str(tok_file), "-m", "teaser-fsq-tiny", "--weights", "none", "-q"]) == 0
    tokens = zoo.Tokens.load(tok_file)
    assert tokens.ids.shape == (1, 16) and torch.equal(tokens.meta["hull_points"], points)
    assert main(["reconstruct", str(face), str(out), "-m", "teaser-fsq-tiny", "--weights", "none", "-q"]) == 0
    assert seen == ["face.png", "face.png"] and read_image(out).shape == (1, 3, 224, 224)
