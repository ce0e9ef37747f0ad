"""Training: one Accelerate engine for every family, driven by a recipe YAML.

    accelerate launch recipes/train.py recipes/<family>/tiny.yaml max_steps=100 output_dir=runs/x
    zoo train recipes/<family>/tiny.yaml max_steps=100

See `docs/training.md`.
"""

from zoo.train.checkpoint import CheckpointError
from zoo.train.ema import EMA
from zoo.train.engine import Trainer, TrainState, find_checkpoint
from zoo.train.objectives import (
    GANObjective,
    Objective,
    ReconstructionObjective,
    build_objective,
    get_objective,
    list_objectives,
    register_objective,
    split_batch,
)
from zoo.train.schema import Recipe, RecipeError, load_recipe

__all__ = [
    "CheckpointError",
    "EMA",
    "GANObjective",
    "Objective",
    "Recipe",
    "RecipeError",
    "ReconstructionObjective",
    "TrainState",
    "Trainer",
    "build_objective",
    "find_checkpoint",
    "get_objective",
    "list_objectives",
    "load_recipe",
    "register_objective",
    "split_batch",
]
