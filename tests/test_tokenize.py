"""`zoo tokenize` and `zoo.data.TokenShards`: the same tokens as one-at-a-time encoding, from any process count,
after any kill; bad items reported and skipped; shards read back by iteration, index and key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.data.token_shards import TokenShards, read_manifest, read_shard
from zoo.pretokenize import TokenizeJob, list_source, main

IMAGE_MODEL = "gigatok-tiny"


def _images(folder: Path, count: int = 7, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(100, 200)), int(rng.integers(100, 200))
        base = rng.random((h // 16 + 1, w // 16 + 1, 3))
        array = np.kron(base, np.ones((16, 16, 1)))[:h, :w]
        path = folder / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((array * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _tokenize(data: Path, out: Path, *extra: str) -> int:
    return main([IMAGE_MODEL, "--data", str(data), "--out", str(out), "--quiet", *extra])


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.safetensors"))}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    _images(folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = folder / "img01.png"
    (folder / "truncated.png").write_bytes(good.read_bytes()[:200])
    return folder


@pytest.fixture(scope="module")
def tokenized(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokens")
    assert _tokenize(photos, out, "--shard-size", "3", "--batch-size", "2") == 0
    return out


def test_tokens_equal_one_at_a_time_encoding(photos, tokenized):
    from zoo.io import read_image

    tok = zoo.load(IMAGE_MODEL)
    items = dict(TokenShards(tokenized, shuffle=False))
    assert sorted(items) == ["img01", "img02", "img04", "img05", "sub/img00", "sub/img03", "sub/img06"]
    for key, tokens in items.items():
        path = next(photos.glob(key + ".*"))
        with torch.inference_mode():
            expected = tok.encode(read_image(path, size=tok.input_size, mode="crop"))
        assert torch.equal(tokens.ids, expected.ids), key
        assert tokens.layout == expected.layout and tokens.meta == expected.meta


def test_bad_items_are_listed_skipped_and_counted(tokenized):
    manifest = read_manifest(tokenized, verify=True)
    assert manifest["num_items"] == 7 and manifest["num_skipped"] == 2
    errors = [json.loads(line) for line in (tokenized / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["key"] for e in errors) == ["broken", "truncated"]
    assert all(e["reason"] and e["source"].endswith(".png") for e in errors)
    assert manifest["weights"]["sha256"] == zoo.get_spec(IMAGE_MODEL).weights["ours"].source.sha256
    assert manifest["ids_dtype"] == "int16" and len(manifest["shards"]) == 3


def test_strict_stops_at_the_first_bad_item(photos, tmp_path, capsys):
    assert _tokenize(photos, tmp_path / "out", "--strict", "--shard-size", "3") == 1
    assert "broken.png" in capsys.readouterr().err


def test_token_shards_iterate_index_and_split_over_workers_and_ranks(tokenized):
    data = TokenShards(tokenized, seed=3)
    keys = [k for k, _ in data]
    assert sorted(keys) == sorted(k for k, _ in TokenShards(tokenized, shuffle=False)) and len(data) == 7
    data.set_epoch(1)
    assert sorted(k for k, _ in data) == sorted(keys)
    ranks = [[k for k, _ in TokenShards(tokenized, rank=r, world_size=2)] for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(keys) and not set(ranks[0]) & set(ranks[1])
    loader = torch.utils.data.DataLoader(TokenShards(tokenized), batch_size=3, num_workers=2,
                                         collate_fn=TokenShards.collate)
    batches = list(loader)
    assert sorted(k for keys_, _ in batches for k in keys_) == sorted(keys)
    assert all(isinstance(t, zoo.Tokens) and t.ids.shape[0] == len(ks) for ks, t in batches)
    view = data.as_map()
    assert len(view) == 7 and view[0][0] == read_shard(tokenized / "shard-000000.safetensors")[0][0]
    assert torch.equal(view.get("sub/img03").ids, dict(TokenShards(tokenized))["sub/img03"].ids)
    with pytest.raises(KeyError, match="did you mean"):
        view.get("sub/img3")


def test_a_changed_shard_or_another_job_is_refused(tokenized, photos, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tokenized.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    shard = copy / "shard-000001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    read_manifest(copy)  # same size: only the sha256 check sees it
    with pytest.raises(ValueError, match="sha256"):
        read_manifest(copy, verify=True)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match="bytes"):
        TokenShards(copy)
    assert _tokenize(photos, tokenized, "--shard-size", "2") == 1  # another shard size into the same folder


def test_tar_shards_give_the_tokens_of_the_folder(photos, tokenized, tmp_path):
    from zoo.data import write_tar_shards

    files = sorted(p for p in photos.rglob("*.png"))
    shards = write_tar_shards(files, tmp_path / "tars", shard_size=4, root=photos)
    assert len(shards) == 3
    out = tmp_path / "from_tar"
    assert _tokenize(tmp_path / "tars" / "shard-{000000..000002}.tar", out, "--shard-size", "3") == 0
    from_tar, from_folder = dict(TokenShards(out)), dict(TokenShards(tokenized))
    assert sorted(from_tar) == sorted(from_folder)
    assert all(torch.equal(from_tar[k].ids, from_folder[k].ids) for k in from_folder)
    assert read_manifest(out)["source"]["kind"] == "tar" and read_manifest(out)["num_skipped"] == 2


def test_decode_takes_a_shard_item_back_to_an_image(tokenized, tmp_path):
    from zoo.cli import main as cli

    out = tmp_path / "img02.png"
    assert cli(["decode", str(tokenized), str(out), "--key", "img02", "--quiet"]) == 0
    tok = zoo.load(IMAGE_MODEL)
    with torch.inference_mode():
        expected = tok.decode(TokenShards(tokenized).as_map().get("img02")).clamp(0, 1)
    written = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1).float() / 255
    assert (written - expected[0]).abs().max() <= 1 / 255 + 1e-6


def test_list_files_and_keys(photos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{photos / 'img01.png'}\n\n{photos / 'sub' / 'img03.png'}\n")
    kind, items = list_source(listing, (".png",))
    assert kind == "list" and [it.source for it in items] == [str(photos / "img01.png"), str(photos / "sub/img03.png")]
    (photos / "img01.jpg").write_bytes(b"")
    try:
        with pytest.raises(Exception, match="share the keys"):
            list_source(photos, (".png", ".jpg"))
    finally:
        (photos / "img01.jpg").unlink()


def test_audio_batches_with_padding_equal_one_at_a_time(tmp_path):
    import soundfile as sf

    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, seconds in enumerate((0.31, 0.5, 0.17, 0.44)):
        t = np.arange(int(24000 * seconds)) / 24000
        sf.write(folder / f"clip{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(
            t.size), 24000)
    sf.write(folder / "empty.wav", np.zeros(0), 24000)
    out = tmp_path / "tokens"
    assert main(["wavtokenizer-tiny", "--data", str(folder), "--out", str(out), "--batch-size", "3", "-q"]) == 0
    tok = zoo.load("wavtokenizer-tiny")
    items = dict(TokenShards(out, shuffle=False))
    assert sorted(items) == ["clip0", "clip1", "clip2", "clip3"]
    for key, tokens in items.items():
        wav, rate = sf.read(folder / f"{key}.wav", dtype="float32")
        with torch.inference_mode():
            expected = tok.encode(torch.from_numpy(wav)[None], sample_rate=rate)
        assert torch.equal(tokens.ids, expected.ids) and tokens.lengths is None, key
        assert torch.equal(tokens.meta["num_samples"], expected.meta["num_samples"])
    assert read_manifest(out)["num_skipped"] == 1


def _job_command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "zoo.cli", "tokenize", IMAGE_MODEL, "--data", str(data), "--out", str(out),
            "--shard-size", "1", "--batch-size", "1", "--quiet"]


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_shards_of_an_uninterrupted_run(photos, tokenized, tmp_path):
    reference = tmp_path / "reference"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert subprocess.run(_job_command(photos, reference), env=env, timeout=300).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(_job_command(photos, out), env=env)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("shard-*.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    for record in out.glob("shard-*.json"):  # what a killed run leaves is complete or absent
        shard = out / record.name.replace(".json", ".safetensors")
        assert shard.stat().st_size == json.loads(record.read_text())["bytes"]
    assert subprocess.run(_job_command(photos, out), env=env, timeout=300).returncode == 0
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert not list(out.glob(".zoo-tmp-*"))


@pytest.mark.multiprocess
def test_two_cpu_processes_write_the_same_shards_as_one(photos, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    job = TokenizeJob(IMAGE_MODEL, str(photos), one, shard_size=2, batch_size=2, device="cpu", quiet=True)
    job.run()
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zoo.cli",
               "tokenize", IMAGE_MODEL, "--data", str(photos), "--out", str(two), "--shard-size", "2",
               "--batch-size", "2", "--device", "cpu", "--quiet"]
    result = subprocess.run(command, env=env, timeout=600, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _shard_bytes(one) == _shard_bytes(two) and len(_shard_bytes(one)) == 5
    assert read_manifest(one)["shards"] == read_manifest(two)["shards"]
