"""`zoo train` and `recipes/train.py`: the same entry point, `main(argv)`.

    accelerate launch [--num_processes N ...] recipes/train.py RECIPE.yaml [key=value ...]
    zoo train RECIPE.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from zoo.train.schema import ALIASES, RecipeError, load_recipe

__all__ = ["main"]

_EPILOG = (
    "overrides are OmegaConf dotlist entries, e.g. train.batch_size=16 optim.gen.lr=2e-4 data.train.path=/data; "
    "shortcuts: " + ", ".join(f"{k}= ({v})" for k, v in ALIASES.items())
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo train",
        description="Train a tokenizer from a recipe YAML (run under `accelerate launch` for several devices).",
        epilog=_EPILOG,
    )
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/gigatok/tiny-1d.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument(
        "--export-only",
        metavar="DIR",
        nargs="?",
        const="",
        help="export the checkpoint chosen by resume=auto|PATH as a save_pretrained folder (default "
        "<output_dir>/final) and exit without training",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `RECIPE.yaml key=value ...`, train, return the exit code (2 for a bad recipe or missing file)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.print_config:
            print(OmegaConf.to_yaml(load_recipe(args.recipe, args.overrides)), end="")
            return 0
        from zoo.train.engine import Trainer

        trainer = Trainer(args.recipe, args.overrides)
        if args.export_only is not None:
            exported = trainer.export_checkpoint(args.export_only or None)
        else:
            exported = trainer.fit()
    except (RecipeError, FileNotFoundError, FileExistsError) as err:
        print(f"zoo train: error: {err}", file=sys.stderr)
        return 2
    if exported is not None and trainer.accelerator.is_main_process:
        print(f"final weights: {exported} (load with zoo.load({str(exported)!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
