"""Atomic writes: a writer killed with SIGKILL mid-write leaves the previous file or the complete new one.

Each case starts a process that writes two versions (A, B) of one large file over and over with a zoo writer, kills
it with SIGKILL while a write is under way (0, 20 and 100 ms after its temporary file appears), and checks that the
file on disk is then exactly A or exactly B. A writer that wrote in place would leave a truncated file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.atomic import TMP_PREFIX, atomic_path, atomic_write_text

REPO = Path(__file__).resolve().parents[1]

# `make(kind, seed)` builds version `seed` of a large file deterministically, `write(kind, version, target)` writes it
# with the zoo writer under test; the parent uses the same two functions for the reference versions.
WRITERS = textwrap.dedent(
    """
    import numpy as np
    import torch

    def make(kind, seed):
        g = np.random.default_rng(seed)
        if kind == "tokens":
            from zoo.tokens import Tokens
            return Tokens(torch.from_numpy(g.integers(0, 4096, size=(4, 600_000))), layout=(600_000,),
                          meta={"version": seed})
        if kind == "image":
            return torch.from_numpy(g.random((1, 3, 1024, 1024), dtype=np.float32))
        if kind == "audio":
            return torch.from_numpy(g.uniform(-1, 1, size=(1, 4_000_000)).astype(np.float32))
        if kind == "text":
            return "".join(f'{{"row": {i}, "seed": {seed}, "value": {g.random()!r}}}\\n' for i in range(200_000))
        if kind == "pretrained":
            from zoo.audio.wavtokenizer import WavTokenizer  # imports one family only: a quick child
            torch.manual_seed(seed)
            return WavTokenizer(n_filters=8, latent_dim=64, codebook_size=4096, dim=256, intermediate_dim=768,
                                num_layers=8)
        if kind == "tree":
            return {"state": {i: {"exp_avg": torch.from_numpy(g.random(500_000, dtype=np.float32))}
                              for i in range(8)}, "seed": seed}
        raise SystemExit(f"unknown kind {kind}")

    def write(kind, version, path):
        if kind == "tokens":
            version.save(path)
        elif kind == "image":
            from zoo.io import write_image
            write_image(version, path)
        elif kind == "audio":
            from zoo.io import write_audio
            write_audio(version, path, 24000)
        elif kind == "text":
            from zoo.atomic import atomic_write_text
            atomic_write_text(path, version)
        elif kind == "pretrained":
            version.save_pretrained(path)
        elif kind == "tree":
            from zoo.train.checkpoint import save_tree
            save_tree(path, version)
    """
)
# The child writes A, prints READY, then writes B, A, B, ... until it is killed.
CHILD = WRITERS + textwrap.dedent(
    """
    import sys

    kind, target = sys.argv[1], sys.argv[2]
    versions = [make(kind, 0), make(kind, 1)]
    write(kind, versions[0], target)
    print("READY", flush=True)
    i = 1
    while True:
        write(kind, versions[i % 2], target)
        i += 1
    """
)

CASES = {
    "tokens": "tokens.safetensors",
    "image": "image.png",
    "audio": "audio.wav",
    "text": "metrics.json",
    "pretrained": "model",
    "tree": "optimizer.safetensors",
}


def _read(kind: str, path: Path):
    """What a reader gets from the file, as something comparable (raises if the file is partial)."""
    if kind == "tokens":
        from zoo.tokens import Tokens

        tokens = Tokens.load(path)
        return tokens.meta["version"], tokens.ids.sum().item()
    if kind == "image":
        from zoo.io import read_image

        return read_image(path).sum().item()
    if kind == "audio":
        import soundfile as sf

        data, rate = sf.read(str(path), dtype="int16")
        return rate, data.shape, int(np.abs(data.astype(np.int64)).sum())
    if kind == "text":
        text = path.read_text()
        assert text.endswith("\n") and text.count("\n") == 200_000
        return text.splitlines()[0], text.splitlines()[-1]
    if kind == "pretrained":
        import zoo

        model = zoo.load(path)
        return sum(float(p.double().sum()) for p in model.state_dict().values())
    if kind == "tree":
        from zoo.train.checkpoint import load_tree

        tree = load_tree(path)
        return tree["seed"], sum(float(v["exp_avg"].sum()) for v in tree["state"].values())
    raise AssertionError(kind)


def _run_child(kind: str, target: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, kind, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(target.parent))


@pytest.mark.parametrize("kind", sorted(CASES))
def test_sigkill_mid_write_leaves_the_old_or_the_new_file(kind, tmp_path):
    functions: dict = {}
    exec(WRITERS, functions)  # the reference versions, written here by the same code
    versions = []
    for seed in (0, 1):
        reference = tmp_path / f"ref{seed}" / CASES[kind]
        reference.parent.mkdir()
        functions["write"](kind, functions["make"](kind, seed), reference)
        versions.append(_read(kind, reference))
    assert versions[0] != versions[1]

    target = tmp_path / "run" / CASES[kind]
    target.parent.mkdir()
    interrupted = 0
    for delay in (0.0, 0.02, 0.1):
        child = _run_child(kind, target)
        try:
            line = child.stdout.readline()
            assert line.strip() == "READY", child.stderr.read()[-2000:]
            deadline = time.monotonic() + 30
            # wait until a write is under way (its temporary file exists), then kill it `delay` s into it
            while not any(n.startswith(TMP_PREFIX) for _, _, names in os.walk(target.parent) for n in names):
                assert child.poll() is None, child.stderr.read()[-2000:]
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
            time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
        leftovers = [p for p in target.parent.rglob(TMP_PREFIX + "*")]
        interrupted += bool(leftovers)
        for p in leftovers:  # what a kill leaves: hidden temporary files, never the target itself
            p.unlink()
        assert _read(kind, target) in versions  # a partial file raises here or reads as a third value
    from zoo.io import IMAGE_EXTENSIONS, find_files

    assert interrupted, "no kill landed during a write; the check tested nothing"
    assert not any(p.name.startswith(TMP_PREFIX) for p in find_files(tmp_path, IMAGE_EXTENSIONS + (".wav",)))


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # the temporary file is removed
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "never.json"):
            pass
    assert not (tmp_path / "never.json").exists()


def test_writers_refuse_non_finite_signals_instead_of_writing_black(tmp_path):
    from zoo.io import write_audio, write_image

    image = torch.full((1, 3, 4, 4), float("nan"))
    with pytest.raises(ValueError, match="48 NaN/Inf values"):
        write_image(image, tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN/Inf samples"):
        write_audio(torch.tensor([0.0, float("inf")]), tmp_path / "x.wav", 16000)
    assert not list(tmp_path.iterdir())
