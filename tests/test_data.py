"""zoo.data: folders, crops, audio decoding, tar shards, seeding, unreadable files, synthetic data, factory."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from torch.utils.data import DataLoader

from zoo.data import (
    AudioFolder,
    ImageFolder,
    SyntheticAudio,
    SyntheticImage,
    UnreadableFileError,
    build_dataset,
    item_seed,
    sample_audio,
    sample_image,
    tar_shards,
    write_tar_shards,
)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "a" / "b").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "one.png")
    Image.fromarray(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)).save(root / "a" / "two.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(root / "a" / "b" / "three.png")  # grey
    (root / "a" / "notes.txt").write_text("not an image")
    return root


def _write_wav(path, seconds, sr, freq=440.0, amp=0.25):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    (root / "sub").mkdir()
    _write_wav(root / "a16k.wav", 1.0, 16000, 500.0)
    _write_wav(root / "sub" / "b44k.wav", 0.5, 44100, 1000.0)
    _write_wav(root / "short.wav", 0.05, 24000, 300.0)
    return root


# ------------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("crop", ["random", "center", "multiscale", "resize"])
def test_image_folder_recursive_shapes(image_dir, crop):
    ds = ImageFolder(image_dir, image_size=16, crop=crop, scale=(0.3, 1.0), hflip=True)
    assert len(ds) == 3  # the .txt file is not picked up, sub-folders are
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_image_folder_not_recursive(image_dir):
    assert len(ImageFolder(image_dir, image_size=8, recursive=False)) == 1


def test_center_crop_is_the_central_square(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x = ImageFolder(tmp_path, image_size=16, crop="center")[0]
    expected = torch.from_numpy(arr[:, 8:24].copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, expected, atol=1 / 255, rtol=0)


def test_random_crop_varies_and_stays_inside(tmp_path):
    # a horizontal ramp: a crop's mean tells its horizontal position
    arr = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (16, 1, 3))
    Image.fromarray(arr).save(tmp_path / "ramp.png")
    ds = ImageFolder(tmp_path, image_size=16, crop="random")
    means = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        means.add(round(float(ds[0].mean()), 3))
    assert len(means) > 3


def test_multiscale_crops_change_scale(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "noise.png")
    ds = ImageFolder(tmp_path, image_size=16, crop="multiscale", scale=(0.125, 1.0))
    stds = []
    for epoch in range(10):
        ds.set_epoch(epoch)
        stds.append(float(ds[0].std()))
    # small crops (little downscaling) keep pixel noise, large ones average it away
    assert max(stds) - min(stds) > 0.02


def test_mosaic_tiles_four_pictures(tmp_path):
    # four flat-coloured pictures: a mosaic's quadrants are each one picture's colour, a plain item is one colour
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, c in enumerate(colours):
        Image.new("RGB", (40, 30), c).save(tmp_path / f"{i}.png")
    plain = ImageFolder(tmp_path, image_size=16, crop="random", hflip=True)
    always = ImageFolder(tmp_path, image_size=16, crop="random", hflip=True, mosaic=1.0)
    palette = {tuple(float(v) / 255 for v in c) for c in colours}
    seen_mixed = False
    for epoch in range(4):
        plain.set_epoch(epoch), always.set_epoch(epoch)
        for i in range(4):
            x, m = plain[i], always[i]
            assert m.shape == (3, 16, 16)
            assert len({tuple(x[:, r, c].tolist()) for r in range(16) for c in range(16)}) == 1
            quads = [m[:, :8, :8], m[:, :8, 8:], m[:, 8:, :8], m[:, 8:, 8:]]
            firsts = [tuple(q[:, 0, 0].tolist()) for q in quads]
            assert all(f in palette for f in firsts)
            assert all(bool((q == q[:, :1, :1]).all()) for q in quads)  # each tile is one whole picture's crop
            assert firsts[0] == tuple(x[:, 0, 0].tolist())  # the item itself is the top-left tile
            seen_mixed |= len(set(firsts)) > 1
    assert seen_mixed
    # the mosaic draw is part of the item's seeded stream: the same (seed, epoch, index) gives the same picture
    torch.testing.assert_close(always[2], always[2], atol=0, rtol=0)
    half = ImageFolder(tmp_path, image_size=16, mosaic=0.5)
    flat = []
    for epoch in range(4):
        half.set_epoch(epoch)
        flat += [bool((x == x[:, :1, :1]).all()) for x in (half[i] for i in range(4))]
    assert 2 <= sum(flat) <= 14  # about half of 16 draws are single pictures (deterministic given the seeds)


def test_mosaic_errors(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="probability"):
        ImageFolder(tmp_path, mosaic=1.5)
    with pytest.raises(ValueError, match="even image_size"):
        ImageFolder(tmp_path, image_size=15, mosaic=0.5)


# ------------------------------------------------------------------------------------------------- seeding
def test_seeding_is_a_function_of_seed_rank_epoch_index(image_dir):
    a = ImageFolder(image_dir, image_size=16, crop="multiscale", seed=3, rank=0)
    b = ImageFolder(image_dir, image_size=16, crop="multiscale", seed=3, rank=0)
    assert torch.equal(a[1], b[1])
    other_rank = ImageFolder(image_dir, image_size=16, crop="multiscale", seed=3, rank=1)
    assert not torch.equal(a[1], other_rank[1])
    b.set_epoch(1)
    assert not torch.equal(a[1], b[1])
    b.set_epoch(0)
    assert torch.equal(a[1], b[1])
    assert item_seed(3, 0, 0, 1) != item_seed(3, 0, 0, 2) != item_seed(4, 0, 0, 2)


def test_rank_from_environment(image_dir, monkeypatch):
    monkeypatch.setenv("RANK", "5")
    assert ImageFolder(image_dir, image_size=8).rank == 5


def test_workers_do_not_change_items(image_dir):
    ds = ImageFolder(image_dir, image_size=16, crop="random", seed=1)
    ds.set_epoch(2)
    plain = torch.cat(list(DataLoader(ds, batch_size=2)))
    workers = torch.cat(list(DataLoader(ds, batch_size=2, num_workers=2)))
    assert torch.equal(plain, workers)


# ------------------------------------------------------------------------------------------------- unreadable
def test_unreadable_image_is_named_or_skipped(image_dir, tmp_path):
    for f in image_dir.rglob("*"):
        if f.is_file() and f.suffix != ".txt":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = ImageFolder(tmp_path, image_size=8)
    bad = next(i for i, p in enumerate(ds.items) if p.endswith("broken.png"))
    with pytest.raises(UnreadableFileError, match="broken.png") as info:
        ds[bad]
    assert "skip_unreadable" in str(info.value)
    skipping = ImageFolder(tmp_path, image_size=8, skip_unreadable=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [skipping[i] for i in range(len(skipping))]
    assert all(x.shape == (3, 8, 8) for x in items)
    assert skipping.num_skipped == 1 and any("broken.png" in k for k in skipping.skipped)
    assert any("broken.png" in str(w.message) for w in caught)
    assert list(skipping.scan()) == [str(tmp_path / "broken.png")]


def test_unreadable_audio_is_named_or_skipped(audio_dir, tmp_path):
    _write_wav(tmp_path / "good.wav", 0.2, 24000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    ds = AudioFolder(tmp_path, sample_rate=24000, num_samples=1000)
    with pytest.raises(UnreadableFileError, match="bad.wav"):
        ds[0]  # sorted: bad.wav first
    skipping = AudioFolder(tmp_path, sample_rate=24000, num_samples=1000, skip_unreadable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert skipping[0].shape == (1000,)
    assert skipping.num_skipped == 1


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no "):
        AudioFolder(tmp_path)


# ------------------------------------------------------------------------------------------------- audio
def test_audio_folder_resamples_and_segments(audio_dir):
    ds = AudioFolder(audio_dir, sample_rate=24000, num_samples=4800, gain_db=None, random_segment=True)
    assert len(ds) == 3
    by_name = {p.rsplit("/", 1)[-1]: i for i, p in enumerate(ds.items)}
    for name, freq in (("a16k.wav", 500.0), ("b44k.wav", 1000.0)):
        x = ds[by_name[name]]
        assert x.shape == (4800,)
        spectrum = torch.fft.rfft(x * torch.hann_window(4800)).abs()
        peak_hz = float(spectrum.argmax()) * 24000 / 4800
        assert abs(peak_hz - freq) <= 10, (name, peak_hz)
        assert abs(float(x.abs().max()) - 0.25) < 0.02  # level kept when gain_db=None


def test_audio_first_segment_and_repeat_padding(audio_dir):
    ds = AudioFolder(audio_dir, sample_rate=16000, num_samples=1600, random_segment=False, gain_db=None)
    i = next(k for k, p in enumerate(ds.items) if p.endswith("a16k.wav"))
    t = np.arange(1600) / 16000
    expected = torch.from_numpy(0.25 * np.sin(2 * np.pi * 500 * t)).float()
    torch.testing.assert_close(ds[i], expected, atol=2e-4, rtol=0)
    short = next(k for k, p in enumerate(ds.items) if p.endswith("short.wav"))
    x = ds[short]  # 0.05 s at 24 kHz -> ~800 samples at 16 kHz, repeated to 1600
    assert x.shape == (1600,)
    n = 800
    torch.testing.assert_close(x[n + 50: n + 100], x[50:100], atol=0.02, rtol=0)
    zeros = AudioFolder(audio_dir, sample_rate=16000, num_samples=1600, random_segment=False, gain_db=None,
                        pad="zeros")[short]
    assert float(zeros[-100:].abs().max()) == 0.0


def test_gain_normalisation(audio_dir):
    fixed = AudioFolder(audio_dir, sample_rate=24000, num_samples=2400, gain_db=-3.0)
    for i in range(len(fixed)):
        assert abs(float(fixed[i].abs().max()) - 10 ** (-3 / 20)) < 1e-4
    ranged = AudioFolder(audio_dir, sample_rate=24000, num_samples=2400, gain_db=(-6.0, -1.0))
    peaks = []
    for epoch in range(6):
        ranged.set_epoch(epoch)
        peaks.append(20 * math.log10(float(ranged[0].abs().max())))
    assert all(-6.001 <= p <= -0.999 for p in peaks) and max(peaks) - min(peaks) > 0.5


def test_whole_files_when_num_samples_is_none(audio_dir):
    ds = AudioFolder(audio_dir, sample_rate=24000, num_samples=None, gain_db=None)
    lengths = sorted(ds[i].shape[0] for i in range(len(ds)))
    assert lengths == [1200, 12000, 24000]


# ------------------------------------------------------------------------------------------------- shards
def test_tar_shards_match_folder_items(image_dir, audio_dir, tmp_path):
    folder = ImageFolder(image_dir, image_size=16, crop="random", seed=7)
    shards = write_tar_shards(folder.items, tmp_path / "img", shard_size=2)
    assert len(shards) == 2
    ds = tar_shards(str(tmp_path / "img" / "*.tar"), modality="image", image_size=16, crop="random", seed=7)
    assert len(ds) == len(folder)
    for i in range(len(ds)):
        assert torch.equal(ds[i], folder[i])
    audio = AudioFolder(audio_dir, sample_rate=24000, num_samples=2400, seed=2)
    write_tar_shards(audio.items, tmp_path / "aud", shard_size=10)
    ads = tar_shards(tmp_path / "aud", modality="audio", sample_rate=24000, num_samples=2400, seed=2)
    for i in range(len(ads)):
        assert torch.equal(ads[i], audio[i])
    assert "::" in str(ads.items[0])


def test_compressed_shards_are_refused(tmp_path):
    import tarfile

    src = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(src)
    with tarfile.open(tmp_path / "s.tar", "w:gz") as tf:
        tf.add(src, arcname="x.png")
    with pytest.raises(UnreadableFileError, match="uncompressed"):
        tar_shards(tmp_path / "s.tar", modality="image")


# ------------------------------------------------------------------------------------------------- synthetic
def test_synthetic_image_seeded_and_natural():
    ds = SyntheticImage(num_items=4, image_size=64, seed=1)
    a, b = ds[0], SyntheticImage(num_items=4, image_size=64, seed=1)[0]
    assert torch.equal(a, b) and a.shape == (3, 64, 64)
    assert not torch.equal(ds[0], ds[1])
    assert not torch.equal(a, SyntheticImage(num_items=4, image_size=64, seed=2)[0])
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and float(a.std()) > 0.02
    # natural-image statistics: most spectral energy at low frequencies
    spec = torch.fft.rfft2(a.mean(0) - a.mean()).abs().pow(2)
    radius = torch.sqrt(torch.fft.fftfreq(64).view(-1, 1) ** 2 + torch.fft.rfftfreq(64).view(1, -1) ** 2)
    assert float(spec[radius < 0.0625].sum()) > 0.5 * float(spec.sum())  # 1/8 of the band holds most energy


def test_synthetic_audio_seeded_and_bounded():
    ds = SyntheticAudio(num_items=3, sample_rate=16000, num_samples=8000, seed=0)
    x = ds[0]
    assert x.shape == (8000,) and torch.equal(x, ds[0]) and not torch.equal(ds[0], ds[1])
    for i in range(3):
        peak_db = 20 * math.log10(float(ds[i].abs().max()))
        assert -6.01 <= peak_db <= -0.99
    assert float(x.pow(2).mean().sqrt()) > 0.01


# ------------------------------------------------------------------------------------------------- factory
def test_build_dataset_types(image_dir, audio_dir, tmp_path):
    img = build_dataset({"type": "image_folder", "path": str(image_dir), "kwargs": {"crop": "center"}},
                        defaults={"image_size": 24, "modality": "image", "sample_rate": 1})
    assert isinstance(img, ImageFolder) and img[0].shape == (3, 24, 24)
    aud = build_dataset("audio_folder", path=audio_dir, defaults={"sample_rate": 16000}, num_samples=800)
    assert aud.sample_rate == 16000 and aud[0].shape == (800,)
    syn = build_dataset({"type": "synthetic_image", "num_items": 2, "image_size": 32})
    assert syn[1].shape == (3, 32, 32)
    syn_a = build_dataset({"type": "synthetic_audio", "num_items": 2, "num_samples": 400})
    assert syn_a[0].shape == (400,)
    write_tar_shards(img.items, tmp_path / "s")
    tar = build_dataset({"type": "tar_shards", "path": str(tmp_path / "s"), "image_size": 8},
                        defaults={"modality": "image"})
    assert len(tar) == 3 and tar[0].shape == (3, 8, 8)


def test_build_dataset_errors(image_dir):
    with pytest.raises(ValueError, match="must be one of"):
        build_dataset({"type": "imagenet"})
    with pytest.raises(TypeError, match="unknown arguments"):
        build_dataset({"type": "image_folder", "path": str(image_dir), "colour": "blue"})
    with pytest.raises(ValueError, match="needs a path"):
        build_dataset({"type": "audio_folder"})
    with pytest.raises(ValueError, match="reads no files"):
        build_dataset({"type": "synthetic_image", "path": str(image_dir)})


# ------------------------------------------------------------------------------------------------- samples
def test_bundled_samples():
    img = sample_image()
    assert img.shape == (1, 3, 256, 256) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert sample_image(64).shape == (1, 3, 64, 64)
    wav, sr = sample_audio()
    assert sr == 24000 and 3.0 <= wav.shape[1] / sr <= 4.0 and float(wav.abs().max()) > 0.5
    wav16, sr16 = sample_audio(16000)
    assert sr16 == 16000 and abs(wav16.shape[1] - wav.shape[1] * 2 / 3) <= 1
