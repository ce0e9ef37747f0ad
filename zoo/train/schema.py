"""The recipe schema: one structured OmegaConf config per training run.

A recipe YAML is merged over `Recipe` (unknown keys and wrong types are errors), then `key=value` overrides
from the command line are merged on top. Models, datasets and objectives are named by registry name; their own
keyword arguments live in open `kwargs` mappings that the named constructor checks.

    cfg = load_recipe("recipes/gigatok/tiny-1d.yaml", ["max_steps=200", "train.batch_size=4"])
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

__all__ = [
    "ALIASES",
    "DataConfig",
    "DatasetConfig",
    "EvalConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "OptimizerConfig",
    "Recipe",
    "RecipeError",
    "ScheduleConfig",
    "TrainConfig",
    "load_recipe",
]


@dataclass
class ModelConfig:
    name: str = MISSING  # a registered variant (`zoo.list_models()`) or a `save_pretrained` folder
    weights: str | None = None  # None: random init; "default", a weights tag or a .safetensors path
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor kwargs replacing the variant's


@dataclass
class DatasetConfig:
    type: str = MISSING  # a zoo.data type (image_folder, audio_folder, tar_shards, ...) or "synthetic"
    path: str | None = None  # data folder, file or shard pattern for types that read files
    kwargs: dict[str, Any] = field(default_factory=dict)  # dataset-specific arguments
    num_workers: int = 0


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=DatasetConfig)
    val: DatasetConfig | None = None


@dataclass
class ObjectiveConfig:
    name: str = "reconstruction"  # `zoo.train.list_objectives()`
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adam"] = "adamw"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0  # applied to weight matrices/kernels only (ndim >= 2), never to norms and biases
    eps: float = 1e-8


@dataclass
class OptimConfig:
    gen: OptimizerConfig = field(default_factory=OptimizerConfig)
    disc: OptimizerConfig = field(default_factory=OptimizerConfig)  # used only by objectives with a discriminator


@dataclass
class ScheduleConfig:
    max_steps: int = MISSING  # optimiser steps (each of `train.grad_accum` micro-batches)
    warmup: int = 0  # linear warm-up steps
    kind: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak (cosine and linear)


@dataclass
class TrainConfig:
    output_dir: str | None = None  # run folder; `load_recipe` defaults it to runs/<recipe folder>-<recipe name>
    resume: str | None = None  # None, "auto" (latest checkpoint in output_dir, if any) or a checkpoint folder
    batch_size: int = 8  # per process
    grad_accum: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    clip_grad: float | None = None  # max global grad norm, per optimiser
    ema_decay: float | None = None  # e.g. 0.999; None disables EMA
    seed: int = 0
    log_every: int = 10
    save_every: int = 1000  # 0: only at the end (and on SIGTERM)
    eval_every: int = 0  # 0: only at the end (when data.val is set)
    keep_checkpoints: int = 3  # newest checkpoints kept in output_dir/checkpoints
    stop_after: int | None = None  # save and stop after this step as if interrupted (time-sliced jobs, tests)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    # DDP: None decides from the model (True when it declares `unused_in_forward` parameters)
    find_unused_parameters: bool | None = None


@dataclass
class EvalConfig:
    batch_size: int | None = None  # per process; defaults to train.batch_size
    max_samples: int | None = 256  # validation items per evaluation (None: the whole set)
    metrics: list[str] = field(default_factory=list)  # extra metric names from zoo.metrics (e.g. psnr, ssim)
    num_samples: int = 8  # inputs/reconstructions written as PNG grids or WAV files
    use_ema: bool = True  # evaluate the EMA weights when EMA is on


@dataclass
class Recipe:
    description: str = ""
    imports: list[str] = field(default_factory=list)  # modules or .py files to import first (custom registrations)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# bare command-line keys accepted as shortcuts: `max_steps=100` means `schedule.max_steps=100`
ALIASES = {
    "max_steps": "schedule.max_steps",
    "output_dir": "train.output_dir",
    "resume": "train.resume",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "mixed_precision": "train.mixed_precision",
    "seed": "train.seed",
    "lr": "optim.gen.lr",
}


class RecipeError(ValueError):
    """A recipe or override that does not fit the schema; the message names the key and what is allowed."""


def _allowed_keys(schema: DictConfig, parent: str) -> list[str]:
    node = OmegaConf.select(schema, parent) if parent else schema
    if node is None:  # an optional section that is None in the schema (data.val)
        node = OmegaConf.structured(DatasetConfig)
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _explain(err: OmegaConfBaseException, schema: DictConfig, where: str) -> RecipeError:
    key = getattr(err, "full_key", "") or ""
    if isinstance(err, ConfigKeyError):
        parent, _, leaf = key.rpartition(".")
        allowed = _allowed_keys(schema, parent)
        close = difflib.get_close_matches(leaf, allowed, n=1)
        hint = f"; did you mean {'.'.join(filter(None, [parent, close[0]]))!r}?" if close else ""
        section = f"under {parent!r}" if parent else "at the top level"
        return RecipeError(f"{where}: unknown recipe key {key!r}{hint} Allowed {section}: {', '.join(allowed)}")
    if isinstance(err, ValidationError):
        return RecipeError(f"{where}: bad value for {key!r}: {err.msg}")
    return RecipeError(f"{where}: {err.msg if hasattr(err, 'msg') else err}")


def _expand_aliases(overrides: Sequence[str]) -> list[str]:
    out = []
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value (e.g. max_steps=100 or train.seed=1)")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+")
        out.append(f"{ALIASES.get(key, key)}={value}")
    return out


def _check_values(cfg: DictConfig, where: str) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise RecipeError(f"{where}: required recipe keys are not set: {', '.join(missing)}")
    positive = {
        "schedule.max_steps": cfg.schedule.max_steps,
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "train.log_every": cfg.train.log_every,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
    }
    for key, value in positive.items():
        if value < 1:
            raise RecipeError(f"{where}: {key} must be >= 1, got {value}")
    for key in ("train.save_every", "train.eval_every", "schedule.warmup", "eval.num_samples"):
        if OmegaConf.select(cfg, key) < 0:
            raise RecipeError(f"{where}: {key} must be >= 0, got {OmegaConf.select(cfg, key)}")
    decay = cfg.train.ema_decay
    if decay is not None and not 0.0 < decay < 1.0:
        raise RecipeError(f"{where}: train.ema_decay must lie in (0, 1) (e.g. 0.999) or be null, got {decay}")
    if cfg.train.clip_grad is not None and cfg.train.clip_grad <= 0:
        raise RecipeError(f"{where}: train.clip_grad must be > 0 or null, got {cfg.train.clip_grad}")
    for name in ("gen", "disc"):
        betas = cfg.optim[name].betas
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise RecipeError(f"{where}: optim.{name}.betas must be two numbers in [0, 1), got {list(betas)}")
        if cfg.optim[name].lr <= 0:
            raise RecipeError(f"{where}: optim.{name}.lr must be > 0, got {cfg.optim[name].lr}")
    if not 0.0 <= cfg.schedule.min_lr_ratio <= 1.0:
        raise RecipeError(f"{where}: schedule.min_lr_ratio must lie in [0, 1], got {cfg.schedule.min_lr_ratio}")


def load_recipe(
    recipe: str | Path | dict | DictConfig | None = None,
    overrides: Sequence[str] = (),
) -> DictConfig:
    """Read, validate and merge a recipe.

    Args:
        recipe: a YAML file, a mapping with the same structure, or None (overrides only).
        overrides: `key=value` strings (OmegaConf dotlist), e.g. `["max_steps=100", "train.seed=1"]`; the
            shortcuts in `ALIASES` (`max_steps`, `output_dir`, `resume`, ...) stand for their full keys.

    Returns:
        The merged config (a struct-mode `DictConfig` typed by `Recipe`).

    Raises:
        FileNotFoundError: the recipe file does not exist.
        RecipeError: unknown keys, wrong types, missing required keys or out-of-range values.
    """
    schema = OmegaConf.structured(Recipe)
    cfg = schema
    where = "recipe"
    if isinstance(recipe, (str, Path)):
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {str(path)!r} does not exist (see recipes/*/ for examples)")
        where = str(path)
        try:
            loaded = OmegaConf.load(path)
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(loaded, DictConfig):
            raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(loaded).__name__}")
    elif recipe is None:
        loaded = OmegaConf.create({})
    else:
        loaded = OmegaConf.create(recipe)
    try:
        cfg = OmegaConf.merge(cfg, loaded)
    except OmegaConfBaseException as err:
        raise _explain(err, schema, where) from None
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(_expand_aliases(overrides)))
    except OmegaConfBaseException as err:
        raise _explain(err, schema, "command-line override") from None
    if cfg.train.output_dir is None and isinstance(recipe, (str, Path)):
        path = Path(recipe)
        cfg.train.output_dir = str(Path("runs") / f"{path.parent.name}-{path.stem}")
    try:
        OmegaConf.resolve(cfg)
    except (MissingMandatoryValue, OmegaConfBaseException) as err:
        raise _explain(err, schema, where) from None
    _check_values(cfg, where)
    return cfg
