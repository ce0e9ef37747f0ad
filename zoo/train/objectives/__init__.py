"""Training objectives, by name. Family objectives live beside these (`<family>.py`) and register themselves."""

from zoo.train.objectives.base import Objective, split_batch
from zoo.train.objectives.gan import GANObjective
from zoo.train.objectives.reconstruction import ReconstructionObjective, align_signals
from zoo.train.objectives.registry import build_objective, get_objective, list_objectives, register_objective

__all__ = [
    "GANObjective",
    "Objective",
    "ReconstructionObjective",
    "align_signals",
    "build_objective",
    "get_objective",
    "list_objectives",
    "register_objective",
    "split_batch",
]
