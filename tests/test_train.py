"""The training engine (`zoo.train`): recipes, exact resume, SIGTERM, export, evaluation, GAN step, 2 processes.

A tiny VQ image tokenizer (`train-toy`) and a tiny VQ audio tokenizer (`train-toy-audio`) are registered here so the
engine is tested independently of the families; the two-process test imports this file through the recipe's
`imports:` list to register them in the launched processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from zoo.api import AudioTokenizer, Codebook, ForwardOutput, ImageTokenizer, Tokens
from zoo.quant import VectorQuantizer
from zoo.registry import list_models, register_family, register_model, unregister_model

REPO = Path(__file__).resolve().parents[1]


@register_family("train_toy")
class TrainToy(ImageTokenizer):
    """4x4 patches -> 8-d codes (32 of them) -> 4x4 patches; dropout makes the forward draw random numbers."""

    def __init__(self, image_size: int = 16, dim: int = 8, codebook_size: int = 32, hidden: int = 16,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.image_size = image_size
        self.encoder = nn.Sequential(nn.Conv2d(3, hidden, 4, 4), nn.GELU(), nn.Dropout(dropout),
                                     nn.Conv2d(hidden, dim, 1))
        self.quantizer = VectorQuantizer(codebook_size, dim)
        self.decoder = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.ConvTranspose2d(hidden, 3, 4, 4))

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer)]

    def _quantize(self, x: torch.Tensor):
        z = self.encoder(x * 2 - 1).permute(0, 2, 3, 1)
        return self.quantizer(z)

    def _decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return (self.decoder(codes.permute(0, 3, 1, 2)) + 1) / 2

    def encode(self, x: torch.Tensor, **kwargs) -> Tokens:
        x = self.check_input(x)
        q = self._quantize(x)
        return Tokens(q.ids.flatten(1), layout=tuple(q.ids.shape[1:]))

    def decode(self, tokens: Tokens, **kwargs) -> torch.Tensor:
        self.check_tokens(tokens)
        h, w = tokens.layout
        codes = self.quantizer.lookup(tokens.ids).view(tokens.ids.shape[0], h, w, -1)
        return self._decode_codes(codes)

    def forward(self, x: torch.Tensor, **kwargs) -> ForwardOutput:
        x = self.check_input(x)
        q = self._quantize(x)
        tokens = Tokens(q.ids.flatten(1), layout=tuple(q.ids.shape[1:]))
        return ForwardOutput(self._decode_codes(q.quantized), tokens, dict(q.losses), dict(q.stats))


@register_family("train_toy_audio")
class TrainToyAudio(AudioTokenizer):
    """Frames of 16 samples -> 8-d codes -> frames."""

    def __init__(self, sample_rate: int = 8000, dim: int = 8, codebook_size: int = 32, hidden: int = 16) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.encoder = nn.Sequential(nn.Conv1d(1, hidden, 16, 16), nn.GELU(), nn.Conv1d(hidden, dim, 1))
        self.quantizer = VectorQuantizer(codebook_size, dim)
        self.decoder = nn.Sequential(nn.Conv1d(dim, hidden, 1), nn.GELU(), nn.ConvTranspose1d(hidden, 1, 16, 16))

    @property
    def codebooks(self) -> list[Codebook]:
        return [Codebook(self.quantizer)]

    def forward(self, x: torch.Tensor, **kwargs) -> ForwardOutput:
        wav, _ = self.prepare_audio(x)
        q = self.quantizer(self.encoder(wav[:, None]).transpose(1, 2))
        y = self.decoder(q.quantized.transpose(1, 2))[:, 0]
        return ForwardOutput(y, Tokens(q.ids, layout=(q.ids.shape[1],)), dict(q.losses), dict(q.stats))

    def encode(self, x: torch.Tensor, sample_rate: int | None = None, **kwargs) -> Tokens:
        wav, lengths = self.prepare_audio(x, sample_rate=sample_rate)
        q = self.quantizer(self.encoder(wav[:, None]).transpose(1, 2))
        return Tokens(q.ids, layout=(q.ids.shape[1],), meta={"num_samples": lengths})

    def decode(self, tokens: Tokens, **kwargs) -> torch.Tensor:
        self.check_tokens(tokens)
        codes = self.quantizer.lookup(tokens.ids)
        return self.finish_audio(self.decoder(codes.transpose(1, 2))[:, 0], tokens)


TOY_MODELS = {"train-toy": "train_toy", "train-toy-audio": "train_toy_audio"}


def register_toy_models() -> None:
    for name, family in TOY_MODELS.items():
        if name not in list_models(name):
            register_model(name, family, {}, description="engine test model")


if __name__.startswith("zoo_recipe_import_"):  # imported through a recipe's `imports:` in a launched process
    register_toy_models()



from accelerate.state import AcceleratorState, GradientState

from zoo.train import (
    RecipeError,
    ReconstructionObjective,
    Trainer,
    find_checkpoint,
    load_recipe,
    register_objective,
)
from zoo.train.cli import main as train_main


@register_objective("train_toy_sigterm")
class SigtermAtStep(ReconstructionObjective):
    """Reconstruction that sends this process SIGTERM during optimiser step `at` (a scheduler pre-empting the job)."""

    def __init__(self, at: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.at = at

    def generator_loss(self, model, batch, step):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().generator_loss(model, batch, step)


def _reset_accelerate() -> None:
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(autouse=True, scope="module")
def _toy_models():
    register_toy_models()
    yield
    for name in TOY_MODELS:
        unregister_model(name)


@pytest.fixture(autouse=True)
def _one_thread_and_fresh_state():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _reset_accelerate()


def _recipe(out: Path, **changes) -> dict:
    """A tiny image recipe: 20 synthetic training items (5 batches an epoch), 6 of 8 validation items scored."""
    cfg = {
        "model": {"name": "train-toy"},
        "data": {
            "train": {"type": "synthetic", "kwargs": {"num_items": 20}},
            "val": {"type": "synthetic", "kwargs": {"num_items": 8, "seed": 1}},
        },
        "schedule": {"max_steps": 8, "warmup": 2},
        "train": {"batch_size": 4, "log_every": 1, "save_every": 0, "eval_every": 4, "output_dir": str(out),
                  "trackers": []},
        "eval": {"num_samples": 4, "max_samples": 6},
    }
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def _fit(cfg: dict, *overrides: str) -> Trainer:
    trainer = Trainer(cfg, overrides)
    try:
        trainer.fit()
    finally:
        _reset_accelerate()
    return trainer


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- recipes -------------------------------------------------------------------------------------------------------
def test_recipe_schema_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: train-toy}\ndata: {train: {type: synthetic}}\nschedule: {max_steps: 2}\n"
                   "train: {bach_size: 4}\n")
    with pytest.raises(RecipeError, match=r"unknown recipe key 'train.bach_size'.*did you mean 'train.batch_size'"):
        load_recipe(bad)
    good = tmp_path / "good.yaml"
    good.write_text("model: {name: train-toy}\ndata: {train: {type: synthetic}}\nschedule: {max_steps: 2}\n")
    with pytest.raises(RecipeError, match=r"command-line override: unknown recipe key 'optim.gen.lrr'"):
        load_recipe(good, ["optim.gen.lrr=1e-3"])
    with pytest.raises(RecipeError, match=r"unknown recipe key 'moddel' at the top level|'moddel'.*'model'"):
        load_recipe(good, ["moddel.name=x"])
    with pytest.raises(RecipeError, match=r"bad value for 'train.batch_size'"):
        load_recipe(good, ["train.batch_size=many"])
    with pytest.raises(RecipeError, match=r"bad value for 'schedule.kind'.*cosine"):
        load_recipe(good, ["schedule.kind=cos"])
    with pytest.raises(RecipeError, match=r"train.ema_decay must lie in \(0, 1\)"):
        load_recipe(good, ["train.ema_decay=1.5"])
    with pytest.raises(RecipeError, match=r"must look like key=value"):
        load_recipe(good, ["max_steps"])
    with pytest.raises(RecipeError, match=r"required recipe keys are not set: model.name"):
        load_recipe({"data": {"train": {"type": "synthetic"}}, "schedule": {"max_steps": 2}})
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")

    cfg = load_recipe(good, ["max_steps=7", "output_dir=/tmp/x", "resume=auto", "lr=3e-4", "data.val.type=synthetic"])
    assert cfg.schedule.max_steps == 7 and cfg.train.output_dir == "/tmp/x" and cfg.train.resume == "auto"
    assert cfg.optim.gen.lr == 3e-4 and cfg.data.val.type == "synthetic"
    assert load_recipe(good).train.output_dir == str(Path("runs") / f"{tmp_path.name}-good")


def test_clear_errors_for_missing_data_and_bad_names(tmp_path):
    missing = str(tmp_path / "no-such-folder")
    cfg = _recipe(tmp_path / "run", data={"train": {"type": "image_folder", "path": missing}})
    with pytest.raises(FileNotFoundError, match="data.train.path .*no-such-folder.* does not exist"):
        _fit(cfg)
    with pytest.raises(TypeError, match=r"data.train: .*unknown arguments \['colour'\]"):
        _fit(_recipe(tmp_path / "run", data={"train": {"type": "synthetic", "kwargs": {"colour": 1}}}))
    with pytest.raises(KeyError, match="unknown objective 'reconstruct'.*did you mean reconstruction"):
        _fit(_recipe(tmp_path / "run", objective={"name": "reconstruct"}))
    with pytest.raises(TypeError, match=r"objective 'reconstruction' got unknown kwargs \['l3_weight'\]"):
        _fit(_recipe(tmp_path / "run", objective={"kwargs": {"l3_weight": 1.0}}))
    with pytest.raises(ValueError, match=r"loss_weights name \['commit'\].*commitment"):
        _fit(_recipe(tmp_path / "run", objective={"kwargs": {"loss_weights": {"commit": 0.25}}}))
    with pytest.raises(ValueError, match=r"eval.metrics \['psnrr'\] are not available for image models"):
        _fit(_recipe(tmp_path / "run", eval={"metrics": ["psnrr"]}))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _fit(_recipe(tmp_path / "run", train={"batch_size": 32}))


def test_cli_entry_point_errors_and_print_config(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: train-toy}\ndata: {train: {type: synthetic}}\nschedule: {max_steps: 2}\n")
    assert train_main([str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert train_main([str(recipe), "train.bogus=1"]) == 2
    assert "unknown recipe key 'train.bogus'" in capsys.readouterr().err
    assert train_main([str(recipe), "max_steps=5", "--print-config"]) == 0
    assert "max_steps: 5" in capsys.readouterr().out


# -- training ------------------------------------------------------------------------------------------------------
def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    """Stop after step 3 of 8 (mid-epoch, EMA, gradient accumulation, dropout), resume: identical losses, evals and
    final weights; the export loads with zoo.load and holds the EMA weights."""
    changes = {"train": {"grad_accum": 2, "ema_decay": 0.9, "keep_checkpoints": 2, "save_every": 2}}
    full = _fit(_recipe(tmp_path / "full", **changes))
    part = _fit(_recipe(tmp_path / "part", **changes), "train.stop_after=3")
    assert part.interrupted and part.state.step == 3
    assert [r["step"] for r in _rows(tmp_path / "part" / "metrics.jsonl")] == [1, 2, 3]
    assert not (tmp_path / "part" / "final").exists()
    _fit(_recipe(tmp_path / "part", **changes), "resume=auto")

    a, b = _rows(tmp_path / "full" / "metrics.jsonl"), _rows(tmp_path / "part" / "metrics.jsonl")
    assert [r["step"] for r in a] == list(range(1, 9))
    assert a == b  # every logged number, bit for bit
    assert {"loss", "l1", "commitment", "codebook", "usage", "lr"} <= set(a[0])
    assert len({r["loss"] for r in a}) == len(a)  # the losses really change from step to step
    evals_a, evals_b = _rows(tmp_path / "full" / "eval.jsonl"), _rows(tmp_path / "part" / "eval.jsonl")
    assert [r["step"] for r in evals_a] == [4, 8] and evals_a == evals_b
    assert {"psnr", "ssim", "l1", "mse", "codebook_usage"} <= set(evals_a[0]) and evals_a[0]["num_items"] == 6
    assert (tmp_path / "full" / "samples" / "step_00000004.png").is_file()
    kept = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert kept == ["step_00000006", "step_00000008"]

    final_a = zoo.load(tmp_path / "full" / "final")
    final_b = zoo.load(tmp_path / "part" / "final")
    for (name, pa), pb in zip(final_a.state_dict().items(), final_b.state_dict().values()):
        assert torch.equal(pa, pb), name
    for name, value in full.ema.shadow.items():
        assert torch.equal(final_a.state_dict()[name], value.cpu()), name
    live = full.raw_model.state_dict()
    assert not all(torch.equal(live[n], v) for n, v in full.ema.shadow.items())  # EMA differs from the live weights


def test_gan_step_starts_at_disc_start_and_resumes_exactly(tmp_path):
    changes = {
        "objective": {"name": "gan", "kwargs": {
            "discriminator": "patchgan", "discriminator_kwargs": {"channels": 8, "num_layers": 1},
            "disc_start": 2, "adaptive_weight": True, "gan_weight": 0.5, "disc_loss_weight": 0.5}},
        "train": {"clip_grad": 1.0, "eval_every": 0},
        "schedule": {"max_steps": 5},
    }
    _fit(_recipe(tmp_path / "full", **changes))
    _fit(_recipe(tmp_path / "part", **changes), "train.stop_after=3")
    _fit(_recipe(tmp_path / "part", **changes), "resume=auto")
    a, b = _rows(tmp_path / "full" / "metrics.jsonl"), _rows(tmp_path / "part" / "metrics.jsonl")
    assert a == b
    assert all("disc_loss" not in r and "gan" not in r for r in a[:2])
    for r in a[2:]:
        assert {"disc_loss", "gan", "gan_weight", "logits_real", "logits_fake", "disc_grad_norm", "disc_lr"} <= set(r)
        assert r["gan_weight"] != 0.5  # adaptive
    # the discriminator's schedule (warm-up included) starts at its first update
    assert (a[2]["disc_lr"], a[3]["disc_lr"]) == (a[0]["lr"], a[1]["lr"]) and a[0]["lr"] < a[1]["lr"]


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path):
    cfg = _recipe(tmp_path / "run", schedule={"max_steps": 5}, train={"eval_every": 0})
    interrupted = _fit({**cfg, "objective": {"name": "train_toy_sigterm", "kwargs": {"at": 2}}})
    assert interrupted.interrupted and interrupted.state.step == 3  # the step in flight completes, then it stops
    assert json.loads((tmp_path / "run" / "checkpoints" / "step_00000003" / "trainer_state.json").read_text()) == {
        "step": 3, "micro_batches": 3}
    with pytest.raises(FileExistsError, match="resume=auto"):
        _fit(cfg)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert find_checkpoint(str(checkpoints / "step_00000003"), tmp_path / "x") == checkpoints / "step_00000003"
    assert find_checkpoint(str(tmp_path / "run"), tmp_path / "x") == checkpoints / "step_00000003"
    assert find_checkpoint("auto", tmp_path / "empty") is None
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        find_checkpoint(str(tmp_path / "nowhere"), tmp_path / "run")
    resumed = _fit(cfg, "resume=auto")
    assert resumed.state.step == 5 and not resumed.interrupted
    assert [r["step"] for r in _rows(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert isinstance(zoo.load(tmp_path / "run" / "final"), TrainToy)


def test_export_only_writes_the_weights_of_a_stopped_run(tmp_path):
    cfg = _recipe(tmp_path / "run", train={"eval_every": 0})
    stopped = _fit(cfg, "train.stop_after=2")
    assert not (tmp_path / "run" / "final").exists()
    trainer = Trainer(cfg, ["resume=auto"])
    try:
        folder = trainer.export_checkpoint(tmp_path / "export")
    finally:
        _reset_accelerate()
    exported = zoo.load(folder)
    for name, value in stopped.raw_model.state_dict().items():
        assert torch.equal(exported.state_dict()[name], value), name
    assert json.loads((folder / "training.json").read_text())["steps"] == 2
    with pytest.raises(FileNotFoundError, match="no checkpoint to export"):
        Trainer(_recipe(tmp_path / "fresh"), ["resume=auto"]).export_checkpoint()
    _reset_accelerate()


class _Payload:
    """Unpickling this calls `open(marker, "w")`: it stands for any code a crafted pickle runs when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_checkpoints_hold_no_pickles_and_a_planted_pickle_never_runs(tmp_path):
    """A GAN run with EMA checkpoints only safetensors and JSON; a malicious pickle written over any file of the
    checkpoint, or added beside them under Accelerate's names, is refused by name on resume and on --export-only,
    and its code never runs."""
    import re
    import shutil

    from zoo.train import CheckpointError

    gan = {"name": "gan", "kwargs": {"discriminator": "patchgan", "discriminator_kwargs": {"channels": 8,
                                                                                          "num_layers": 1},
                                     "disc_start": 1}}
    cfg = _recipe(tmp_path / "run", objective=gan, schedule={"max_steps": 4}, train={"eval_every": 0,
                                                                                    "ema_decay": 0.9})
    _fit(cfg, "train.stop_after=2")
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000002"
    names = sorted(p.name for p in checkpoint.iterdir())
    assert {"model.safetensors", "model_1.safetensors", "optimizer.safetensors", "optimizer_1.safetensors",
            "scheduler.safetensors", "scheduler_1.safetensors", "ema.safetensors", "rng_state_0.safetensors",
            "trainer_state.json"} <= set(names), names
    for name in names:
        head = (checkpoint / name).read_bytes()[:2]
        assert name.endswith((".safetensors", ".json")) and head[:1] != b"\x80" and head != b"PK", name

    marker = tmp_path / "EXECUTED"
    probe = tmp_path / "probe.bin"
    torch.save(_Payload(marker), probe)
    torch.load(probe, weights_only=False)  # the payload is live: an unpickler that trusts it runs it
    assert marker.exists()
    marker.unlink()

    clean = tmp_path / "clean"
    shutil.copytree(checkpoint, clean)
    planted = names + ["custom_checkpoint_0.pkl", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                       "pytorch_model.bin"]
    for name in planted:
        shutil.rmtree(checkpoint)
        shutil.copytree(clean, checkpoint)
        torch.save(_Payload(marker), checkpoint / name)
        for action in ("resume", "export"):
            trainer = Trainer(cfg, ["resume=auto"])
            try:
                with pytest.raises(CheckpointError, match=re.escape(name)):
                    trainer.export_checkpoint(tmp_path / "export") if action == "export" else trainer.fit()
            finally:
                _reset_accelerate()
            assert not marker.exists(), f"{action} ran the code of a pickle planted as {name}"
    assert not (tmp_path / "export").exists() and not (tmp_path / "run" / "final").exists()

    shutil.rmtree(checkpoint)
    shutil.copytree(clean, checkpoint)
    resumed = _fit(cfg, "resume=auto")  # the untouched checkpoint still resumes
    assert resumed.state.step == 4


def test_audio_gan_with_paired_discriminator_writes_wav_samples(tmp_path):
    cfg = _recipe(
        tmp_path / "run",
        model={"name": "train-toy-audio"},
        data={"train": {"type": "synthetic", "kwargs": {"num_items": 8, "num_samples": 2048}},
              "val": {"type": "synthetic", "kwargs": {"num_items": 4, "num_samples": 2048, "seed": 1}}},
        objective={"name": "gan", "kwargs": {
            "discriminator": "mrd", "discriminator_kwargs": {"resolutions": [[128, 32, 128]], "channels": 4},
            "gan_loss": "lsgan", "feature_matching_weight": 1.0}},
        schedule={"max_steps": 2},
        train={"batch_size": 2, "eval_every": 0},
        eval={"num_samples": 2},
    )
    _fit(cfg)
    rows = _rows(tmp_path / "run" / "metrics.jsonl")
    assert {"gan", "feature_matching", "disc_loss"} <= set(rows[-1])
    evals = _rows(tmp_path / "run" / "eval.jsonl")
    assert {"si_sdr", "mel_distance", "l1"} <= set(evals[0]) and evals[0]["num_items"] == 4
    wavs = sorted(p.name for p in (tmp_path / "run" / "samples" / "step_00000002").iterdir())
    assert wavs == ["00_input.wav", "00_recon.wav", "01_input.wav", "01_recon.wav"]
    import soundfile

    audio, rate = soundfile.read(tmp_path / "run" / "samples" / "step_00000002" / "00_input.wav")
    assert rate == 8000 and audio.shape == (2048,)


def test_tiny_models_train_with_the_generic_objective(tmp_path):
    """Every registered `*-tiny` family model takes two optimiser steps of the reconstruction objective."""
    names = [n for n in zoo.list_models("*-tiny")]
    if not names:
        pytest.skip("no *-tiny family models are registered yet")
    for name in names:
        modality = zoo.get_spec(name).modality
        kwargs = {"num_items": 2} if modality != "audio" else {"num_items": 2, "num_samples": 8000}
        cfg = _recipe(tmp_path / name, model={"name": name},
                      data={"train": {"type": "synthetic", "kwargs": kwargs}},
                      schedule={"max_steps": 2}, train={"batch_size": 1, "eval_every": 0})
        cfg["data"].pop("val")
        _fit(cfg)
        rows = _rows(tmp_path / name / "metrics.jsonl")
        assert [r["step"] for r in rows] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows), name


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(REPO)) for p in REPO.glob("recipes/*/*.yaml")
                                          if p.parent.name != "accelerate"))
def test_repository_recipes_validate(recipe):
    cfg = load_recipe(REPO / recipe)
    assert cfg.model.name in zoo.list_models("*") or Path(cfg.model.name).is_dir(), cfg.model.name
    from zoo.train import list_objectives

    assert cfg.objective.name in list_objectives()


# -- two processes -------------------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_cpu_processes_train_evaluate_and_export(tmp_path):
    """`accelerate launch` with two gloo CPU processes: GAN training, validation gathered over both, export."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"imports: [{Path(__file__).resolve()}]\n"
        "model: {name: train-toy}\n"
        "data:\n"
        "  train: {type: synthetic, kwargs: {num_items: 16}}\n"
        "  val: {type: synthetic, kwargs: {num_items: 6, seed: 1}}\n"
        "objective: {name: gan, kwargs: {discriminator: patchgan, discriminator_kwargs: {channels: 8, num_layers: 1},"
        " disc_start: 1}}\n"
        "schedule: {max_steps: 3}\n"
        "train: {batch_size: 2, log_every: 1, save_every: 2, ema_decay: 0.9, trackers: [tensorboard]}\n"
        "eval: {batch_size: 2, num_samples: 2}\n"
    )
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate) if accelerate.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           str(REPO / "recipes" / "train.py"), str(recipe), f"output_dir={out}"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "disc_loss" in rows[-1] and "disc_loss" not in rows[0]
    evals = _rows(out / "eval.jsonl")
    assert evals[-1]["step"] == 3 and evals[-1]["num_items"] == 6  # 2 processes x 2 x 2 = 8 slots, padding dropped
    checkpoint = out / "checkpoints" / "step_00000002"
    assert (checkpoint / "rng_state_0.safetensors").is_file() and (checkpoint / "rng_state_1.safetensors").is_file()
    assert all(p.suffix in (".safetensors", ".json") for p in checkpoint.iterdir())  # no pickles, EMA included
    assert json.loads((checkpoint / "trainer_state.json").read_text())["micro_batches"] == 2
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert (out / "samples" / "step_00000003.png").is_file()
    model = zoo.load(out / "final")
    assert isinstance(model, TrainToy)
    assert model.reconstruct(model.example_input(1)).shape == (1, 3, 16, 16)
