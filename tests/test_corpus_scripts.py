"""`scripts/build_real_speech.py`: unpacking, decoding, cutting and the speaker split, on a fake cached sdist (no
network: the cache already holds the archive)."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_speech():
    return load_script(ROOT / "scripts" / "build_real_speech.py")


def _wav_bytes(seconds: float, rate: int, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.2 * np.sin(2 * np.pi * 220 * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    buffer = io.BytesIO()
    soundfile.write(buffer, data, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _sdist(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_to_clips_resamples_cuts_and_normalises(real_speech):
    samples = 0.1 * np.sin(np.linspace(0, 3000, 16000 * 25)).astype(np.float32)  # 25 s at 16 kHz
    clips = real_speech.to_clips(samples, 16000, max_seconds=10.0)
    assert len(clips) == 3 and all(len(c) <= 10 * 24000 for c in clips)
    assert sum(len(c) for c in clips) == 25 * 24000
    assert all(abs(np.abs(c).max() - real_speech.PEAK) < 1e-6 for c in clips)
    assert real_speech.to_clips(np.zeros(800, np.float32), 8000, 10.0) == []  # under 1 s
    assert real_speech.to_clips(np.zeros(0, np.float32), 8000, 10.0) == []  # empty files exist in packages
    assert real_speech.to_clips(np.zeros(24000 * 2, np.float32), 24000, 10.0) == []  # silence


def test_read_audio_wav_stereo_and_codec2_raw(real_speech):
    mono, rate = real_speech.read_audio("a.wav", _wav_bytes(1.5, 22050, channels=2))
    assert rate == 22050 and mono.ndim == 1 and mono.shape[0] == int(1.5 * 22050)
    raw = (np.full(8000, 1000, dtype="<i2")).tobytes()
    samples, rate = real_speech.read_audio("b.raw", raw)
    assert rate == 8000 and samples.shape == (8000,) and np.allclose(samples, 1000 / 32768)


def test_build_splits_by_source_and_is_resumable(real_speech, tmp_path, monkeypatch):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _sdist(downloads / "fake_pkg-1.0.tar.gz", {
        "fake_pkg-1.0/data/spk1/a.wav": _wav_bytes(2.0, 16000),
        "fake_pkg-1.0/data/spk1/noise.wav": _wav_bytes(2.0, 16000),
        "fake_pkg-1.0/data/short.wav": _wav_bytes(0.5, 16000),
        "fake_pkg-1.0/other/b.wav": _wav_bytes(2.0, 16000),
    })
    _sdist(downloads / "held_pkg-2.0.tar.gz", {"held_pkg-2.0/x/c.wav": _wav_bytes(12.0, 8000)})
    sources = (
        real_speech.Source("fake", "sdist", "fake-pkg==1.0", ("*/data/*/*.wav", "*/data/*.wav"), "train", "spk",
                           "MIT", exclude=("*/noise.wav",)),
        real_speech.Source("held", "sdist", "held-pkg==2.0", ("*/x/*.wav",), "heldout", "other", "MIT",
                           group="real-narrowband"),
    )
    monkeypatch.setattr(real_speech, "SOURCES", sources)
    out = tmp_path / "out"
    real_speech.build(out, downloads, None, max_seconds=10.0)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["split"], r["source"]) for r in rows] == [("train", "fake"), ("heldout", "held"), ("heldout", "held")]
    assert rows[1]["sample_rate"] == 8000 and rows[1]["group"] == "real-narrowband"
    for row in rows:
        audio, rate = soundfile.read(out / row["path"])
        assert rate == 24000 and abs(len(audio) / rate - row["seconds"]) < 1e-3
    real_speech.build(out, downloads, None, max_seconds=10.0)  # again: nothing new
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3


# ------------------------------------------------------------------------------------------ photo corpus

def _photos(folder: Path, names: list[str], size: tuple[int, int] = (40, 30)) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        Image.new("RGB", size, (10 * i, 80, 160)).save(path, quality=95)
        paths.append(path)
    return paths


def test_photo_corpus_adds_training_only_sources_without_changing_the_heldout_set(tmp_path, monkeypatch):
    corpus = load_script(ROOT / "scripts" / "build_photo_corpus.py")
    old = [("mate-backgrounds", p) for p in _photos(tmp_path / "mate", [f"m{i}.jpg" for i in range(5)])]
    old += [("skimage", p) for p in _photos(tmp_path / "sk", [f"s{i}.png" for i in range(4)])]
    monkeypatch.setattr(corpus, "find_photos", lambda extra=False: list(old))
    before = corpus.build(tmp_path / "before", seed=0, heldout_per_source=2)
    big = _photos(tmp_path / "lomiri", ["big.jpg", "small.jpg"], size=(300, 120))
    monkeypatch.setattr(corpus, "MAX_SIDE", 200)
    monkeypatch.setattr(corpus, "find_photos", lambda extra=False: old + [("lomiri-wallpapers-16.04", p) for p in big])
    after = corpus.build(tmp_path / "after", seed=0, heldout_per_source=2)

    def held(manifest):
        return sorted(r["path"] for r in manifest["photos"] if r["split"] == "heldout")

    assert held(before) == held(after) and len(held(after)) == 4  # two per held-out source, the same ones
    assert before["extra"] is False  # the flag, as build() was called
    new = [r for r in after["photos"] if r["source"] == "lomiri-wallpapers-16.04"]
    assert [r["split"] for r in new] == ["train", "train"]  # training only
    assert new[0]["original_size"] == [300, 120] and (new[0]["width"], new[0]["height"]) == (200, 80)
    from PIL import Image

    with Image.open(tmp_path / "after" / new[0]["path"]) as im:
        assert im.size == (200, 80)  # resized to MAX_SIDE on its long side
    for r in before["photos"]:  # the files of the earlier sources are the same bytes
        assert (tmp_path / "before" / r["path"]).read_bytes() == (tmp_path / "after" / r["path"]).read_bytes()


def test_photo_corpus_extra_says_which_package_is_missing(tmp_path, monkeypatch):
    corpus = load_script(ROOT / "scripts" / "build_photo_corpus.py")
    monkeypatch.setattr(corpus, "LOMIRI_DIR", tmp_path)
    assert all(source not in corpus.TRAIN_ONLY for source, _ in corpus.find_photos())  # the default corpus
    with pytest.raises(SystemExit, match="apt-get install lomiri-wallpapers-16.04"):
        corpus.find_photos(extra=True)
