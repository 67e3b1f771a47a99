"""The flags of `cxr-mtclip train` / `examples/train.py`, importable without torch or transformers.

`ModelArguments` and `DataArguments` are the recipe's own flags; `TRAINING_FLAGS` are the
`CxrMtClipTrainingArguments` flags a user sets most (the paper's recipe as defaults), with the same defaults
(tests/test_cli.py compares them). `short_help_parser` lists these three groups for ``--help``, which answers at
once; ``--help-all`` adds every other `transformers.TrainingArguments` flag (it loads transformers, a few seconds).
`preflight` checks the data source, the output folder and Hub access from the flags alone, before anything loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..argparsing import CliParser

__all__ = ["TRAINING_FLAGS", "DataArguments", "ModelArguments", "preflight", "short_help_parser"]

BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"  # = registry.BIOMEDCLIP_HUB_ID


@dataclass
class ModelArguments:
    """Which model to fine-tune and its loss/freeze overrides."""

    backbone: str = field(
        default=BIOMEDCLIP,
        metadata={"help": "open_clip backbone: an 'hf-hub:' id, a local open_clip folder, or a registered architecture "
                  "(cxr_mtclip.registry: 'biomedclip', 'tiny', 'demo', ...)."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved CxrMtClipModel folder (or Hub id) to continue from; wins over --backbone."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer folder or Hub id (default: the backbone's; for a randomly initialised architecture "
                  "such as 'tiny', one trained on the train reports)."},
    )
    bce_weight: float | None = field(
        default=None, metadata={"help": "BCE weight (default: the architecture's config; paper 0.69)."})
    supcon_weight: float | None = field(
        default=None, metadata={"help": "SupCon weight (default: the architecture's config; paper 1.97)."})
    clip_weight: float | None = field(
        default=None, metadata={"help": "CLIP weight (default: the architecture's config; paper 0.46)."})
    supcon_temperature: float | None = field(
        default=None, metadata={"help": "SupCon temperature (default: the architecture's config; 0.07)."})
    dropout: float | None = field(default=None, metadata={"help": "Dropout before the classifier (default: config, 0.1)."})
    trainable_image_blocks: int | None = field(
        default=None, metadata={"help": "Last ViT blocks trained, -1 all (default: config, 1)."})
    trainable_text_blocks: int | None = field(
        default=None, metadata={"help": "Last BERT layers trained, -1 all (default: config, 1)."})
    train_logit_scale: bool | None = field(
        default=None, metadata={"help": "Train the CLIP logit scale, clamped to [0, ln 100] (default: frozen, as the paper)."})
    cache_dir: str | None = field(default=None, metadata={"help": "huggingface_hub cache folder (default: HF_HOME's)."})

    def config_overrides(self) -> dict[str, Any]:
        """The CxrMtClipConfig fields given on the command line."""
        from ..training.trainer import CONFIG_OVERRIDE_KEYS

        return {k: getattr(self, k) for k in CONFIG_OVERRIDE_KEYS if getattr(self, k, None) is not None}


@dataclass
class DataArguments:
    """Where the image/report pairs come from."""

    dataset: str | None = field(
        default=None, metadata={"help": "A DatasetDict folder (save_to_disk) or a Hub dataset id."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    phantoms: int | None = field(
        default=None, metadata={"help": "Without --dataset: generate N synthetic phantom studies and split them."}
    )
    train_split: str = field(default="train", metadata={"help": "Training split name."})
    eval_split: str | None = field(default="validation", metadata={"help": "Validation split name (empty: none)."})
    test_split: str | None = field(default="test", metadata={"help": "Test split, evaluated once at the end if present."})
    image_column: str = field(default="image", metadata={"help": "Image column."})
    text_column: str = field(default="report", metadata={"help": "Report column."})
    label_column: str = field(default="label", metadata={"help": "0 normal / 1 abnormal label column."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation/test rows."})
    feature_cache: str | None = field(
        default=None,
        metadata={"help": "Folder of the frozen-trunk feature cache: run the frozen blocks once per study, then train "
                  "only the trainable blocks + head from it (built or reused; a stale cache is rebuilt)."},
    )
    test_per_class: int = field(default=200, metadata={"help": "Phantoms: test studies per class (paper: 200)."})
    val_fraction: float = field(default=0.1, metadata={"help": "Phantoms: validation share of the non-test studies."})


# name -> (type, default, help): the CxrMtClipTrainingArguments flags --help lists (defaults checked by the tests)
TRAINING_FLAGS: dict[str, tuple[type, Any, str]] = {
    "output_dir": (str, None, "Where the model, processor, results, loss curves and model card are written."),
    "num_train_epochs": (float, 20.0, "Training epochs."),
    "max_steps": (int, -1, "Total optimiser steps; > 0 overrides --num_train_epochs."),
    "per_device_train_batch_size": (int, 128, "Training batch per process (the contrastive negatives)."),
    "per_device_eval_batch_size": (int, 128, "Evaluation batch per process."),
    "gradient_accumulation_steps": (int, 1, "Micro-batches per optimiser step (the contrastive terms see one "
                                            "micro-batch: fewer negatives)."),
    "learning_rate": (float, 1e-5, "AdamW learning rate of the backbone towers."),
    "head_learning_rate": (float, 1e-4, "AdamW learning rate of the classifier head and the CLIP logit scale."),
    "weight_decay": (float, 0.01, "AdamW weight decay; never applied to norms, biases or the logit scale."),
    "warmup_steps": (float, 0.1, "Warm-up steps; a float in [0, 1) is a ratio of the total steps."),
    "lr_scheduler_type": (str, "cosine", "Learning-rate schedule after warm-up."),
    "optim": (str, "adamw_torch", "Optimizer (transformers OptimizerNames)."),
    "eval_strategy": (str, "epoch", "When to evaluate on the validation split: no, steps, epoch."),
    "save_strategy": (str, "epoch", "When to write a checkpoint: no, steps, epoch."),
    "save_total_limit": (int, 2, "Checkpoints kept in output_dir."),
    "logging_steps": (float, 10, "Log the loss and its terms every N steps."),
    "metric_for_best_model": (str, "cross-modal/mean_accuracy@1", "Eval metric that selects the best checkpoint."),
    "load_best_model_at_end": (bool, False, "Reload the best checkpoint after training."),
    "gather_distributed": (bool, None, "Contrastive negatives from the global batch across processes "
                                       "(default: the model config's, True)."),
    "hpo_trials": (int, 0, "Optuna trials over the loss weights before the final run (0: no search)."),
    "seed": (int, 42, "Seed of the model initialisation, data order and phantoms."),
    "resume_from_checkpoint": (str, None, "A checkpoint folder, or 'last' for the newest complete one in output_dir."),
    "overwrite_output_dir": (bool, False, "Replace an earlier run in output_dir (its checkpoints, model and results) "
                                          "instead of refusing to start."),
    "use_cpu": (bool, False, "Train on the CPU even when a GPU is present."),
    "dataloader_num_workers": (int, 0, "DataLoader worker processes decoding images."),
    "report_to": (str, "none", "Experiment trackers (tensorboard, wandb, ...)."),
    "push_to_hub": (bool, False, "Upload the model, processor and card to --hub_model_id at the end "
                                 "(Hub access is checked first)."),
    "hub_model_id": (str, None, "Hub repository 'user/name' (default: the output folder's name)."),
    "hub_token": (str, None, "Hub token (default: the one saved by `hf auth login`, or HF_TOKEN)."),
    "hub_private_repo": (bool, None, "Create the Hub repository private."),
}


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "t"):
        return True
    if value.lower() in ("0", "false", "no", "n", "f"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _add(group: Any, name: str, kind: Any, default: Any, help_text: str) -> None:
    if kind is bool:
        group.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default, metavar="{true,false}",
                           help=help_text)
    else:
        group.add_argument(f"--{name}", type=kind if kind in (int, float) else str, default=default, help=help_text)


def _field_type(f: dataclasses.Field) -> Any:
    text = str(f.type)
    return bool if "bool" in text else int if text.startswith("int") else float if text.startswith("float") else str


def short_help_parser(prog: str = "cxr-mtclip train") -> CliParser:
    """The parser behind ``train --help``: model, data and the main training flags, with their defaults once."""
    parser = CliParser(
        prog=prog,
        description="Fine-tune CxrMtClipModel with the composite loss (BCE + SupCon + CLIP) under transformers' "
                    "Trainer; one process, or several with `accelerate launch`.",
        epilog="Every other transformers.TrainingArguments flag (--bf16, --eval_steps, --dataloader_drop_last, ...) "
               f"is accepted too: `{prog} --help-all` lists them all. A single .json file of flags also works.",
    )
    parser.add_argument("--help-all", action="store_true", help="List every flag, transformers' included.")
    for title, cls in (("model", ModelArguments), ("data", DataArguments)):
        group = parser.add_argument_group(title)
        for f in dataclasses.fields(cls):
            _add(group, f.name, _field_type(f), f.default, f.metadata.get("help", ""))
    group = parser.add_argument_group("training (the paper's recipe as defaults)")
    for name, (kind, default, help_text) in TRAINING_FLAGS.items():
        _add(group, name, kind, default, help_text)
    return parser


def preflight(argv: Sequence[str], *, prog: str = "cxr-mtclip train") -> None:
    """Check what the flags alone can tell before anything loads: the data source, the output folder, Hub access
    with --push_to_hub. Raises ValueError / FileNotFoundError with the fix. Flags this light parser does not list
    (every other TrainingArguments flag, or a misspelt one) are left to transformers' parser.

    Example:
        >>> preflight(["--dataset", "data/nope", "--output_dir", "runs/x"])  # doctest: +SKIP
        FileNotFoundError: --dataset data/nope: no such local folder; build it with `cxr-mtclip build-dataset ...`
    """
    from ..preflight import check_dataset_source, check_fresh_run_dir, check_hub_push, check_output_dir

    argv = list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return  # flags from a file: checked by run_training once parsed
    parser = short_help_parser(prog)
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit:  # a bad value for a known flag: transformers' parser reports it with its own message
        return
    if args.dataset:
        check_dataset_source(args.dataset)
    elif not args.phantoms and not any(token.startswith("-") for token in unknown):
        # (a flag this parser does not list may be a misspelt --dataset: transformers' parser names it first)
        raise ValueError("no data: pass --dataset FOLDER (from `cxr-mtclip build-dataset`) or a Hub dataset id, "
                         "or --phantoms N for synthetic studies")
    output_dir = args.output_dir or "trainer_output"  # transformers' default
    check_output_dir(output_dir)
    if not any(token.startswith("-") for token in unknown):
        # (with a flag this parser does not know, transformers' parser speaks first: `--resume last` is a misspelling
        # to name, not a run to refuse; the full check runs again once every flag is parsed)
        check_fresh_run_dir(output_dir, resume=args.resume_from_checkpoint, overwrite=args.overwrite_output_dir)
    if args.push_to_hub:
        from pathlib import Path

        check_hub_push(args.hub_model_id or Path(output_dir).name, token=args.hub_token)
