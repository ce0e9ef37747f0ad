"""The training engine: one `Trainer` on Accelerate for every family.

    from zoo.train import Trainer
    Trainer("recipes/gigatok/tiny-1d.yaml", ["max_steps=100"]).fit()

What a run does, in order: build the model (`zoo.load`), the objective (by name), datasets, optimisers and
schedulers; `accelerator.prepare` them all in one call (generator first, then the discriminator when the objective
has one); resume from a checkpoint if asked; then loop over optimiser steps, each of `train.grad_accum`
micro-batches, with a generator update and (from `disc_start` on) a discriminator update. Every `log_every` steps
one row goes to `metrics.jsonl` and the trackers, every `eval_every` steps the validation set is scored and
samples are written, every `save_every` steps (and at the end, and on SIGTERM) `accelerator.save_state` writes a
checkpoint. At the end the (EMA) weights are exported with `save_pretrained` to `<output_dir>/final`.

Run-folder layout:
    recipe.yaml              the resolved recipe
    metrics.jsonl            one row per logged step: step, loss (total generator loss), every term, lr
    eval.jsonl               one row per evaluation
    samples/                 PNG grids / WAV files of validation reconstructions
    checkpoints/step_NNNNNNNN/   weights, optimiser/scheduler/EMA/RNG states as safetensors (no pickles, see
                             `zoo.train.checkpoint`) + trainer_state.json (written last: marks it complete)
    logs/                    TensorBoard
    final/                   config.json + model.safetensors (`zoo.load(".../final")`) + training.json
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset

from zoo.atomic import atomic_write_text
from zoo.train.checkpoint import (
    STATE_FILE,
    CheckpointError,
    load_checkpoint,
    read_trainer_state,
    save_checkpoint,
)
from zoo.train.data import build_dataset, check_path, model_defaults
from zoo.train.ema import EMA
from zoo.train.evaluate import metric_functions, validate
from zoo.train.objectives import Objective, build_objective
from zoo.train.optim import build_optimizer, build_scheduler
from zoo.train.schema import RecipeError, load_recipe

__all__ = ["CheckpointError", "TrainState", "Trainer", "find_checkpoint", "import_extras"]


@dataclass
class TrainState:
    step: int = 0  # optimiser steps done
    micro_batches: int = 0  # batches consumed per process (position in the data stream)


def import_extras(items: Sequence[str]) -> None:
    """Import the recipe's `imports`: dotted module names or `.py` files (which then register models,
    objectives or datasets)."""
    for item in items:
        if item.endswith(".py"):
            path = Path(item).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"recipe imports {item!r}, but there is no such file (cwd {Path.cwd()})")
            name = f"zoo_recipe_import_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(item)


def _complete_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step_*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: read_trainer_state(p)["step"])


def find_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """Resolve `train.resume`: None -> None; "auto" -> newest complete checkpoint of `output_dir` (None if there
    is none); a checkpoint folder -> itself; a run folder -> its newest checkpoint."""
    if resume is None:
        return None
    if resume == "auto":
        found = _complete_checkpoints(output_dir / "checkpoints")
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume={resume!r}: no such checkpoint or run folder")
    if (path / STATE_FILE).is_file():
        return path
    found = _complete_checkpoints(path / "checkpoints")
    if found:
        return found[-1]
    raise FileNotFoundError(
        f"resume={resume!r} is neither a checkpoint folder (with {STATE_FILE}) nor a run folder with complete "
        "checkpoints under checkpoints/"
    )


def _flat(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class Trainer:
    """Train a tokenizer from a recipe.

    Args:
        recipe: a recipe YAML path, a mapping, or a config from `zoo.train.load_recipe`.
        overrides: `key=value` strings merged on top (e.g. `["max_steps=100", "train.seed=1"]`).
    """

    def __init__(self, recipe: str | Path | dict | DictConfig, overrides: Sequence[str] = ()) -> None:
        if isinstance(recipe, DictConfig):
            recipe = OmegaConf.to_container(recipe)
        self.cfg = load_recipe(recipe, overrides)
        if self.cfg.train.output_dir is None:
            raise RecipeError("train.output_dir is not set (pass output_dir=PATH)")
        self.output_dir = Path(self.cfg.train.output_dir).expanduser()
        self.state = TrainState()
        self.interrupted = False
        self.last_log: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self._signal_received = False

    # -- setup --------------------------------------------------------------------------------------------------
    def _build_accelerator(self, model: torch.nn.Module) -> None:
        from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
        from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

        t = self.cfg.train
        trackers = [name for name in t.trackers if name != "none"]
        find_unused = t.find_unused_parameters
        if find_unused is None:  # the model declares parameters that its forward may leave without gradient
            find_unused = bool(getattr(model, "unused_in_forward", ()))
        self.accelerator = Accelerator(
            mixed_precision=t.mixed_precision,
            # a step is always grad_accum micro-batches, also across epoch ends
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=t.grad_accum, sync_with_dataloader=False),
            log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
            step_scheduler_with_optimizer=False,  # we step schedulers once per optimiser step ourselves
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=t.seed),
        )

    def _build_model(self) -> torch.nn.Module:
        import zoo

        m = self.cfg.model
        model = zoo.load(m.name, weights=m.weights, **dict(m.kwargs))
        return model.train()

    @staticmethod
    def _loader(dataset: Any, batch_size: int, train: bool, num_workers: int, generator: torch.Generator) -> DataLoader:
        # a loader-owned generator: creating an iterator draws its worker base seed from it, not from the global
        # RNG whose state a resumed run restores
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=num_workers,
                          generator=generator, pin_memory=torch.cuda.is_available())

    def _setup(self) -> None:
        """Build everything a run needs, in this order (the order fixes what the seeded RNG draws go to, so a resumed
        run rebuilds exactly what the interrupted one had)."""
        from accelerate.utils import set_seed

        import_extras(self.cfg.imports)
        self._check_run_folder()
        self._check_data_paths()  # fail before anything slow is built
        set_seed(self.cfg.train.seed)  # identical model/objective initialisation on every process
        objective = self._build_objective()
        model = self._build_model()
        self._build_accelerator(model)
        self._attach_objective(objective, model)
        train_set, val_set = self._build_datasets(model)
        train_dl = self._build_train_loader(train_set)
        self._prepare(model, self._build_optimizers(model), train_dl)
        self.val_dl = self._build_val_loader(val_set)
        self.ema = self._build_ema()
        self._restore_or_seed()
        self._write_run_header()

    def _check_run_folder(self) -> None:
        """Find the checkpoint to resume (`train.resume`); refuse to start a fresh run over a finished or started one."""
        resume = self.cfg.train.resume
        self.checkpoint = find_checkpoint(resume, self.output_dir)
        if self.checkpoint is None and resume is None:
            existing = _complete_checkpoints(self.output_dir / "checkpoints") or (self.output_dir / "final").exists()
            if existing:
                raise FileExistsError(
                    f"{self.output_dir} already holds a run; pass resume=auto to continue it or choose another "
                    "output_dir"
                )

    def _check_data_paths(self) -> None:
        check_path(self.cfg.data.train, "train")
        if self.cfg.data.val is not None:
            check_path(self.cfg.data.val, "val")

    def _build_objective(self) -> Objective:
        o = self.cfg.objective
        objective = build_objective(o.name, **dict(o.kwargs))
        if not isinstance(objective, Objective):
            raise TypeError(f"objective {o.name!r} must be a zoo.train.Objective")
        return objective

    def _attach_objective(self, objective: Objective, model: torch.nn.Module) -> None:
        """Let the objective build what depends on the model (heads, teachers, the discriminator) on the device."""
        objective.setup(model)
        objective.to(self.accelerator.device).train()
        self.objective = objective

    def _build_datasets(self, model: torch.nn.Module) -> tuple[Any, Any]:
        """The training and (optional) validation sets, with the defaults the model implies."""
        cfg, acc = self.cfg, self.accelerator
        defaults = model_defaults(model)
        with acc.main_process_first():
            train_set = build_dataset(cfg.data.train, defaults, "train")
            val_set = build_dataset(cfg.data.val, defaults, "val") if cfg.data.val is not None else None
        global_batch = cfg.train.batch_size * acc.num_processes
        if len(train_set) < global_batch:
            raise ValueError(
                f"the training set has {len(train_set)} items, fewer than one global batch "
                f"({cfg.train.batch_size} x {acc.num_processes} processes); lower train.batch_size or add data"
            )
        return train_set, val_set

    def _build_train_loader(self, train_set: Any) -> DataLoader:
        cfg = self.cfg
        self._data_generator = torch.Generator()  # reseeded per epoch by `_batches`
        return self._loader(train_set, cfg.train.batch_size, True, cfg.data.train.num_workers, self._data_generator)

    def _build_optimizers(self, model: torch.nn.Module) -> dict[str, Any]:
        """Optimisers and schedulers of the generator and, when the objective has one, the discriminator."""
        cfg = self.cfg
        disc = self.objective.discriminator
        # the discriminator parameters it trains (frozen ones, e.g. a pretrained backbone, stay frozen)
        self._disc_params = [p for p in disc.parameters() if p.requires_grad] if disc is not None else []
        opt_g = build_optimizer(model, cfg.optim.gen)
        opt_d = build_optimizer(disc, cfg.optim.disc) if disc is not None else None
        return {
            "disc": disc,
            "opt_g": opt_g,
            "opt_d": opt_d,
            "sch_g": build_scheduler(opt_g, cfg.schedule),
            "sch_d": build_scheduler(opt_d, cfg.schedule) if disc is not None else None,
        }

    def _prepare(self, model: torch.nn.Module, optim: dict[str, Any], train_dl: DataLoader) -> None:
        """One `accelerator.prepare` call for everything that trains; sets model, disc, optimisers, schedulers."""
        acc = self.accelerator
        # one prepare call, optimisers in the order of their models (what save_state/load_state pair up)
        objects = [model, optim["disc"], optim["opt_g"], optim["opt_d"], optim["sch_g"], optim["sch_d"], train_dl]
        present = [o for o in objects if o is not None]
        prepared = iter(acc.prepare(*present))
        model, disc, opt_g, opt_d, sch_g, sch_d, train_dl = [None if o is None else next(prepared) for o in objects]
        self.model, self.disc, self.opt_g, self.opt_d, self.sch_g, self.sch_d = model, disc, opt_g, opt_d, sch_g, sch_d
        self.train_dl = train_dl
        self.raw_model = acc.unwrap_model(model)
        if isinstance(disc, torch.nn.parallel.DistributedDataParallel):
            # a discriminator step calls D on real and on fake before one backward; re-broadcasting BatchNorm
            # buffers at the second call would change tensors the first call saved for backward. D only ever runs
            # in train mode (batch statistics), so per-process running statistics change nothing.
            disc.broadcast_buffers = False
        self.objective.attach_discriminator(disc)

    def _build_val_loader(self, val_set: Any) -> DataLoader | None:
        """The prepared validation loader (the first `eval.max_samples` items), or None without a validation set."""
        cfg = self.cfg
        if val_set is None:
            return None
        # unknown metric names fail now, not at the first evaluation
        metric_functions(getattr(self.raw_model, "modality", "image"), list(cfg.eval.metrics))
        if cfg.eval.max_samples is not None and len(val_set) > cfg.eval.max_samples:
            val_set = Subset(val_set, range(cfg.eval.max_samples))  # the same items at every evaluation
        batch = cfg.eval.batch_size or cfg.train.batch_size
        return self.accelerator.prepare(self._loader(val_set, batch, False, cfg.data.val.num_workers,
                                                     torch.Generator()))

    def _build_ema(self) -> EMA | None:
        acc, decay = self.accelerator, self.cfg.train.ema_decay
        if decay is None:
            return None
        if acc.distributed_type.name in ("FSDP", "DEEPSPEED"):
            raise ValueError(f"train.ema_decay is not supported with {acc.distributed_type.name}; use DDP")
        return EMA(self.raw_model, decay).to(acc.device)  # checkpointed by zoo.train.checkpoint (safetensors)

    def _restore_or_seed(self) -> None:
        """Load the checkpoint (weights, optimisers, RNG states, step) or, for a fresh run, seed each process."""
        from accelerate.utils import set_seed

        if self.checkpoint is not None:
            self._load(self.checkpoint)
        else:
            set_seed(self.cfg.train.seed, device_specific=True)  # from here on each process draws its own randomness

    def _write_run_header(self) -> None:
        """recipe.yaml, the logs trimmed to the resumed step, and the trackers."""
        acc, cfg = self.accelerator, self.cfg
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "recipe.yaml", OmegaConf.to_yaml(cfg))
            self._trim_log("metrics.jsonl")
            self._trim_log("eval.jsonl")
        if acc.log_with:
            acc.init_trackers(self.output_dir.name, config=_flat(OmegaConf.to_container(cfg)))
        acc.wait_for_everyone()

    def _trim_log(self, name: str) -> None:
        """Keep the rows up to the resumed step (a fresh run starts an empty file). A last row cut short by a kill
        during an append is dropped with the others past the checkpoint."""
        path = self.output_dir / name
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= self.state.step:
                kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    # -- data -------------------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[Any]:
        """Endless stream of training batches starting at `state.micro_batches` (epochs reshuffled by seed)."""
        per_epoch = len(self.train_dl)
        epoch, skip = divmod(self.state.micro_batches, per_epoch)
        rank = self.accelerator.process_index
        dataset = self.train_dl.dataset
        while True:
            self.train_dl.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):  # per-epoch augmentation seeds (zoo.data.SeededDataset)
                dataset.set_epoch(epoch)
            self._data_generator.manual_seed(self.cfg.train.seed * 1_000_003 + epoch * 1009 + rank)
            loader = self.accelerator.skip_first_batches(self.train_dl, skip) if skip else self.train_dl
            yield from loader
            skip, epoch = 0, epoch + 1

    # -- steps ------------------------------------------------------------------------------------------------
    def _micro_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        acc, objective = self.accelerator, self.objective
        clip = self.cfg.train.clip_grad
        models = [m for m in (self.model, self.disc) if m is not None]
        terms: dict[str, torch.Tensor] = {}
        with acc.accumulate(*models):
            for p in self._disc_params:  # the generator step must not touch the discriminator
                p.requires_grad_(False)
            try:
                with acc.autocast():
                    loss, gen_terms = objective.generator_loss(self.model, batch, step)
            finally:
                for p in self._disc_params:
                    p.requires_grad_(True)
            acc.backward(loss)
            if acc.sync_gradients and clip is not None:
                terms["grad_norm"] = acc.clip_grad_norm_(self.model.parameters(), clip)
            self.opt_g.step()
            self.opt_g.zero_grad(set_to_none=True)
            terms["loss"] = loss.detach()
            terms.update({k: v.detach() for k, v in gen_terms.items()})
            if objective.trains_discriminator(step):
                with acc.autocast():
                    d_loss, d_terms = objective.discriminator_loss(self.model, batch, step)
                acc.backward(d_loss)
                if acc.sync_gradients and clip is not None:
                    terms["disc_grad_norm"] = acc.clip_grad_norm_(self.disc.parameters(), clip)
                self.opt_d.step()
                self.opt_d.zero_grad(set_to_none=True)
                terms["disc_loss"] = d_loss.detach()
                terms.update({k: v.detach() for k, v in d_terms.items()})
        return terms

    def _log(self, sums: dict[str, torch.Tensor], counts: dict[str, int], lrs: dict[str, float]) -> None:
        acc = self.accelerator
        names = sorted(sums)
        local = torch.stack([sums[n].float().reshape(()) / counts[n] for n in names])
        values = acc.reduce(local, reduction="mean") if acc.num_processes > 1 else local
        reduced = dict(zip(names, values.tolist()))
        row: dict[str, float] = {"step": self.state.step, "loss": reduced.pop("loss")}
        row.update(reduced)
        row.update(lrs)
        if not math.isfinite(row["loss"]):
            bad = {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
            raise FloatingPointError(
                f"the loss is not finite at step {self.state.step} ({bad}); lower optim.gen.lr, set "
                "train.clip_grad, or use mixed_precision=bf16 instead of fp16"
            )
        self.last_log = row
        if acc.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        acc.log({k: v for k, v in row.items() if k != "step"}, step=self.state.step)

    def _evaluate(self) -> dict[str, float]:
        acc, cfg = self.accelerator, self.cfg
        model = self.raw_model
        model.eval()
        devices = [acc.device] if acc.device.type == "cuda" else []
        # evaluation draws its own randomness (seeded) and leaves the training RNG where it was
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.train.seed)
            if self.ema is not None and cfg.eval.use_ema:
                with self.ema.applied(model):
                    results = self._validate(model)
            else:
                results = self._validate(model)
        model.train()
        row = {"step": self.state.step, **results}
        self.last_eval = row
        if acc.is_main_process:
            with open(self.output_dir / "eval.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        acc.log({f"val/{k}": v for k, v in results.items()}, step=self.state.step)
        return results

    def _validate(self, model: torch.nn.Module) -> dict[str, float]:
        e = self.cfg.eval
        with self.accelerator.autocast():
            return validate(
                self.accelerator,
                model,
                self.val_dl,
                step=self.state.step,
                metrics=list(e.metrics),
                num_samples=e.num_samples,
                sample_dir=self.output_dir / "samples",
            )

    # -- checkpoints ------------------------------------------------------------------------------------------
    @property
    def _sharded(self) -> bool:
        return self.accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")

    def _checkpoint_parts(self) -> tuple[list, list, list]:
        models = [m for m in (self.model, self.disc) if m is not None]
        optimizers = [o for o in (self.opt_g, self.opt_d) if o is not None]
        schedulers = [s for s in (self.sch_g, self.sch_d) if s is not None]
        return models, optimizers, schedulers

    def _save(self) -> Path:
        acc = self.accelerator
        folder = self.output_dir / "checkpoints" / f"step_{self.state.step:08d}"
        if acc.is_main_process and folder.exists():
            shutil.rmtree(folder)  # an incomplete save of this step from an interrupted run
        acc.wait_for_everyone()
        if self._sharded:  # the backend's own sharded files, through Accelerate
            acc.save_state(str(folder))
            acc.wait_for_everyone()
            if acc.is_main_process:
                atomic_write_text(folder / STATE_FILE, json.dumps(asdict(self.state)) + "\n")
        else:
            save_checkpoint(folder, acc, *self._checkpoint_parts(), self.ema, asdict(self.state))
        if acc.is_main_process:
            for old in _complete_checkpoints(folder.parent)[: -self.cfg.train.keep_checkpoints]:
                (old / STATE_FILE).unlink()  # first: a deletion cut short leaves an incomplete folder, never used
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return folder

    def _load(self, folder: Path) -> None:
        if self._sharded:
            pickles = sorted(p.name for p in folder.glob("custom_checkpoint_*.pkl"))
            if pickles:
                raise CheckpointError(f"{folder} holds {pickles}, pickles that Accelerate would load with "
                                      "weights_only=False; zoo never writes them and does not read them")
            state = read_trainer_state(folder)
            self.accelerator.load_state(str(folder))
        else:
            state = load_checkpoint(folder, self.accelerator, *self._checkpoint_parts(), self.ema)
        self.state = TrainState(**state)
        self.accelerator.print(f"resumed from {folder} at step {self.state.step}")

    def export(self, directory: str | Path | None = None) -> Path:
        """Write the final weights (the EMA average when EMA is on) as a `save_pretrained` folder."""
        acc = self.accelerator
        directory = Path(directory) if directory is not None else self.output_dir / "final"
        acc.wait_for_everyone()
        sharded = acc.distributed_type.name in ("FSDP", "DEEPSPEED")
        full_state = acc.get_state_dict(self.model) if sharded else None  # collective: gathers the shards
        if acc.is_main_process:
            model = self.raw_model
            if sharded:  # rebuild an unsharded copy on the CPU from the gathered weights
                model = type(model)(**model.config)
                model.name = self.raw_model.name
                model.load_state_dict(full_state)
            if self.ema is not None:
                with self.ema.applied(model):
                    model.save_pretrained(directory)
            else:
                model.save_pretrained(directory)
            atomic_write_text(directory / "recipe.yaml", OmegaConf.to_yaml(self.cfg))
            info = {
                "steps": self.state.step,
                "ema": self.ema is not None,
                "command": " ".join(sys.argv),
                "last_train_log": self.last_log,
                "last_eval": self.last_eval,
            }
            atomic_write_text(directory / "training.json", json.dumps(info, indent=2) + "\n")
        acc.wait_for_everyone()
        return directory

    def export_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Export the weights of the checkpoint named by `train.resume` without training (e.g. a run stopped early)."""
        self._setup()
        if self.checkpoint is None:
            raise FileNotFoundError(
                f"no checkpoint to export under {self.output_dir}; pass resume=auto or resume=PATH to a step folder"
            )
        try:
            return self.export(directory)
        finally:
            self.accelerator.end_training()

    # -- signals ----------------------------------------------------------------------------------------------
    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._signal_received = True

    def _stop_requested(self) -> bool:
        stop_after = self.cfg.train.stop_after
        if stop_after is not None and self.state.step >= stop_after:
            return True
        flag = self._signal_received
        if self.accelerator.num_processes > 1:
            t = torch.tensor(float(flag), device=self.accelerator.device)
            flag = bool(self.accelerator.reduce(t, reduction="sum").item() > 0)
        return flag

    # -- main loop --------------------------------------------------------------------------------------------
    def fit(self) -> Path | None:
        """Train to `schedule.max_steps`; returns the export folder, or None when stopped early (SIGTERM or
        `train.stop_after`) after saving a checkpoint that `resume=auto` continues from."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._setup()
            return self._train()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if hasattr(self, "accelerator"):
                self.accelerator.end_training()

    def _train(self) -> Path | None:
        from tqdm.auto import tqdm

        acc, cfg = self.accelerator, self.cfg
        t, max_steps = cfg.train, cfg.schedule.max_steps
        batches = self._batches()
        bar = tqdm(total=max_steps, initial=self.state.step, disable=not acc.is_local_main_process,
                   desc="train", dynamic_ncols=True)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        start = time.perf_counter()
        while self.state.step < max_steps:
            for _ in range(t.grad_accum):
                terms = self._micro_step(next(batches), self.state.step)
                self.state.micro_batches += 1
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0) + value.float()
                    counts[name] = counts.get(name, 0) + 1
            lrs = {"lr": self.sch_g.get_last_lr()[0]}  # the rates this step used
            self.sch_g.step()
            if self.objective.trains_discriminator(self.state.step):  # its schedule counts its own updates
                lrs["disc_lr"] = self.sch_d.get_last_lr()[0]
                self.sch_d.step()
            if self.ema is not None:
                self.ema.update(self.raw_model)
            self.state.step += 1
            step, last = self.state.step, self.state.step == max_steps
            bar.update(1)
            if step % t.log_every == 0 or last:
                self._log(sums, counts, lrs)
                bar.set_postfix(loss=f"{self.last_log['loss']:.4g}")
            if step % t.log_every == 0:
                sums, counts = {}, {}
            if self.val_dl is not None and ((t.eval_every and step % t.eval_every == 0) or last):
                self._evaluate()
            stop = not last and self._stop_requested()
            if (t.save_every and step % t.save_every == 0) or last or stop:
                self._save()
            if stop:
                bar.close()
                self.interrupted = True
                reason = "SIGTERM" if self._signal_received else f"train.stop_after={t.stop_after}"
                acc.print(f"stopped at step {step} ({reason}); checkpoint saved, continue with resume=auto")
                return None
        bar.close()
        elapsed = time.perf_counter() - start
        acc.print(f"trained to step {self.state.step} in {elapsed:.1f} s")
        return self.export()
