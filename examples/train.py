"""Fine-tune CxrMtClipModel with the paper's multi-task loss (optionally after an optuna search of the loss weights).

Single process:
    python examples/train.py --backbone tiny --phantoms 400 --output_dir runs/tiny --num_train_epochs 2

Two processes on CPU (gloo) or GPUs; negatives come from the global batch:
    accelerate launch --multi_gpu --num_processes 2 examples/train.py --backbone tiny --phantoms 400 --output_dir runs/tiny

(accelerate 1.x only starts several processes with --multi_gpu, even without a GPU; with --cpu it starts one.)

BiomedCLIP on a saved OpenI DatasetDict, with a 20-trial search of the loss weights:
    accelerate launch examples/train.py --dataset data/openi --output_dir runs/openi --hpo_trials 20

Flags: `python examples/train.py --help` (model, data and the main training flags), `--help-all` (every
CxrMtClipTrainingArguments field). `cxr-mtclip train` is the same command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxr_mtclip.recipes.train import TrainingRunResult


def main(argv: Sequence[str] | None = None) -> TrainingRunResult:
    """Parse the flags (or one .json file of them) and train; returns what was written and measured."""
    from cxr_mtclip.recipes.train import parse_training_args, run_training

    model_args, data_args, training_args = parse_training_args(sys.argv[1:] if argv is None else argv,
                                                               prog="examples/train.py")
    return run_training(model_args, data_args, training_args)


if __name__ == "__main__":
    # through the command's runner: a bad flag, input or environment is one line and exit code 2, warnings print
    # once without source lines (as `cxr-mtclip train`); the package is imported light (cxr_mtclip.ENTRY_POINT_ENV), so
    # --help does not wait for torch
    os.environ["CXR_MTCLIP_ENTRY_POINT"] = "1"
    from cxr_mtclip.cli import main as command

    sys.exit(command(["train", *sys.argv[1:]], prog="examples/train.py"))
