"""Train a tokenizer from a recipe (the same as `zoo train`).

    accelerate launch recipes/train.py recipes/<family>/tiny.yaml max_steps=100 output_dir=runs/x
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/train.py RECIPE.yaml
    python recipes/train.py RECIPE.yaml resume=auto
"""

import sys
from pathlib import Path

try:
    from zoo.train.cli import main
except ImportError:  # a source checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from zoo.train.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
