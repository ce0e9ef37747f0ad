"""Reconstruction metrics of a registered tokenizer over an image or audio folder, on one or many processes.

    python recipes/eval_recon.py NAME --data DIR --out DIR
    accelerate launch --num_processes 8 --multi_gpu recipes/eval_recon.py NAME --data DIR --out DIR
    accelerate launch --multi_gpu --num_processes 2 recipes/eval_recon.py NAME --data DIR --out DIR --cpu

The last line runs two CPU processes (gloo): accelerate's own `--cpu` launch flag starts a single process unless
MPI is installed, so use the torchrun launcher (`--multi_gpu`) and let the script's `--cpu` pick the CPU. Same options
as `zoo eval` (see `zoo eval --help` and docs/metrics.md).
"""

from zoo.metrics.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
