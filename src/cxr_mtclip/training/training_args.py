"""CxrMtClipTrainingArguments: transformers' `TrainingArguments` with the paper's recipe as defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

__all__ = ["EVAL_PROTOCOL", "MEAN_ACCURACY_KEY", "CxrMtClipTrainingArguments", "protocol_key"]

EVAL_PROTOCOL = "cross-modal"
"""The retrieval protocol of the Trainer's evaluation: image queries against report embeddings and back (not the
paper's fused gallery, whose own-pair share overstates retrieval; see `cxr_mtclip.evaluation.evaluate`)."""
MEAN_ACCURACY_KEY = f"{EVAL_PROTOCOL}/mean_accuracy@1"
"""The evaluation metric that selects the best checkpoint and is the HPO objective: mean image<->text accuracy@1 in
the cross-modal protocol (the key names its protocol)."""


def protocol_key(key: str) -> str:
    """A retrieval metric key of the Trainer's evaluation under the name of its protocol; other keys unchanged.

    Example:
        >>> protocol_key("image_to_text/accuracy@1"), protocol_key("classification/f1")
        ('cross-modal/image_to_text/accuracy@1', 'classification/f1')
    """
    return f"{EVAL_PROTOCOL}/{key}" if key.startswith(("image_to_text/", "text_to_image/")) else key


@dataclass
class CxrMtClipTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults plus a head learning rate and HPO options.

    Defaults: AdamW, `learning_rate=1e-5` (backbone), `head_learning_rate=1e-4` (classifier, and the CLIP
    logit scale when it trains), `warmup_steps=0.1` (transformers 5, which the package requires, reads a float
    below 1 as a ratio of the total steps: the paper's warm-up ratio 0.1; transformers 4 read it as 0.1 steps),
    cosine schedule, 20 epochs, 128 per device, evaluation and checkpoints every epoch, best checkpoint tracked by
    the mean image<->text accuracy@1 on validation in the cross-modal protocol (`MEAN_ACCURACY_KEY`; set
    `load_best_model_at_end` to reload it after training).

    Example:
        >>> args = CxrMtClipTrainingArguments(output_dir="runs/demo", num_train_epochs=1)
        >>> args.head_learning_rate, args.lr_scheduler_type.value
        (0.0001, 'cosine')
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the backbone towers."})
    head_learning_rate: float = field(
        default=1e-4,
        metadata={"help": "AdamW learning rate of the classifier head (and of the CLIP logit scale when the model "
                          "config's train_logit_scale is on)."},
    )
    weight_decay: float = field(
        default=0.01,
        metadata={"help": "AdamW weight decay; never applied to norms, biases or the logit scale."},
    )
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Warm-up steps; a float in [0, 1) is a ratio of the total steps."}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warm-up."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Training epochs."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch per process."})
    optim: str = field(default="adamw_torch", metadata={"help": "Optimizer (transformers OptimizerNames)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep image/report columns: the collator needs them."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on the validation split."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to write a checkpoint."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept in output_dir."})
    logging_steps: float = field(default=10, metadata={"help": "Log loss and its terms every N steps."})
    metric_for_best_model: str | None = field(
        default=MEAN_ACCURACY_KEY,
        metadata={"help": "Eval metric that selects the best checkpoint, e.g. 'cross-modal/image_to_text/accuracy@1'."},
    )
    gather_distributed: bool | None = field(
        default=None,
        metadata={
            "help": "Contrastive negatives from the global batch across processes (None: the model config's "
            "gather_distributed, True by default)."
        },
    )
    hpo_trials: int = field(
        default=0, metadata={"help": "Optuna trials over the loss weights before the final run (0: no search)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace an earlier run in output_dir (its checkpoints, model and results) instead of "
                  "refusing to start (transformers 4's flag; transformers 5 dropped it)."},
    )

    def __post_init__(self) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.use_cpu and not _has_accelerator():
            # Without use_cpu, accelerate sees no device to distribute over and every process would train
            # alone on the full data (and race on output_dir); with it, processes join a gloo group.
            self.use_cpu = True
        super().__post_init__()
        if not self.head_learning_rate > 0:
            raise ValueError(f"head_learning_rate must be > 0, got {self.head_learning_rate!r}")
        if self.hpo_trials < 0:
            raise ValueError(f"hpo_trials must be >= 0, got {self.hpo_trials!r}")


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())

