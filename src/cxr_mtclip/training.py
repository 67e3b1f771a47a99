"""Fine-tuning: CxrMtClipTrainer (transformers Trainer under Accelerate), its arguments, collator and HPO.

The paper's recipe (arXiv 2601.05399): AdamW, backbone learning rate 1e-5, head learning rate 1e-4,
10 % linear warm-up then cosine decay, 20 epochs, batch 128, loss
``bce_weight * BCE + supcon_weight * SupCon + clip_weight * CLIP``.

Global-batch negatives: with N processes the model's :class:`~cxr_mtclip.losses.CompositeLoss`
gathers logits, labels and embeddings from every process (``CxrMtClipConfig.gather_distributed``,
overridable with ``CxrMtClipTrainingArguments.gather_distributed``), so the loss over N x B
examples equals the single-process loss over the same examples. Launch:
``accelerate launch --multi_gpu --num_processes N examples/train.py ...``; on a machine without GPUs
accelerate 1.x only starts N processes with ``--multi_gpu`` (``--cpu`` starts one), and
:class:`CxrMtClipTrainingArguments` then switches ``use_cpu`` on so that they join one gloo group.

Hyper-parameter search: the loss weights live in the model config, not in ``TrainingArguments``,
so :meth:`CxrMtClipTrainer.hyperparameter_search` hands each trial's parameters to ``model_init``
(a plain ``dict``) and only forwards to ``TrainingArguments`` the keys that are its fields. The
objective (:func:`default_objective`) is the mean of the image->text and text->image accuracy@1 on
the validation split, maximised with a seeded optuna TPE sampler.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import datasets
import torch
from PIL import ExifTags, Image, ImageOps
from torch import nn
from transformers import EvalPrediction, HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.trainer_pt_utils import get_parameter_names
from transformers.trainer_utils import BestRun, number_of_arguments

from .atomic import atomic_write_text
from .configuration_cxr_mtclip import BIOMEDCLIP_HUB_ID, CxrMtClipConfig
from .evaluation import bidirectional_retrieval_metrics, classification_metrics
from .modeling_cxr_mtclip import CxrMtClipModel
from .plots import plot_loss_curves
from .processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "HP_SEARCH_RANGES",
    "LOSS_TERMS",
    "CxrMtClipDataCollator",
    "CxrMtClipTrainer",
    "CxrMtClipTrainingArguments",
    "DataArguments",
    "ModelArguments",
    "TrainingRunResult",
    "build_model",
    "compute_retrieval_metrics",
    "default_hp_space",
    "default_objective",
    "last_complete_checkpoint",
    "make_model_init",
    "parameter_groups",
    "parse_training_args",
    "run_training",
]

LOSS_TERMS = ("bce_loss", "supcon_loss", "clip_loss")
HP_SEARCH_RANGES: dict[str, tuple[float, float]] = {
    "bce_weight": (0.1, 1.0),
    "supcon_weight": (0.2, 2.0),
    "clip_weight": (0.2, 2.0),
}
# CxrMtClipConfig fields that a trial (or --flag) may override without changing the architecture.
CONFIG_OVERRIDE_KEYS = (
    "bce_weight",
    "supcon_weight",
    "clip_weight",
    "supcon_temperature",
    "dropout",
    "trainable_image_blocks",
    "trainable_text_blocks",
    "gather_distributed",
)
MEAN_ACCURACY_KEY = "retrieval/mean_accuracy@1"
TINY_BACKBONE = "tiny"
RESULT_FILES = ("train_results.json", "eval_results.json", "test_results.json", "all_results.json")
LOSS_CURVES_NAME = "loss_curves.png"
TRIAL_TABLE_NAMES = ("hpo_trials.csv", "hpo_trials.json")
BEST_HP_NAME = "best_hyperparameters.json"
_HEAD_PARAMETER_NAMES = ("backbone.logit_scale",)
_HEAD_PARAMETER_PREFIXES = ("classifier.",)


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


@dataclass
class CxrMtClipTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults plus a head learning rate and HPO options.

    Defaults: AdamW, `learning_rate=1e-5` (backbone), `head_learning_rate=1e-4` (classifier and CLIP
    logit scale), `warmup_steps=0.1` (transformers 5 reads a float below 1 as a ratio of the total
    steps: the paper's warm-up ratio 0.1), cosine schedule, 20 epochs, 128 per device, evaluation and
    checkpoints every epoch, best checkpoint tracked by the mean image<->text accuracy@1 on validation
    (set `load_best_model_at_end` to reload it after training).

    Example:
        >>> args = CxrMtClipTrainingArguments(output_dir="runs/demo", num_train_epochs=1)
        >>> args.head_learning_rate, args.lr_scheduler_type.value
        (0.0001, 'cosine')
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the backbone towers."})
    head_learning_rate: float = field(
        default=1e-4, metadata={"help": "AdamW learning rate of the classifier head and the CLIP logit scale."}
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
        metadata={"help": "Eval metric that selects the best checkpoint, e.g. 'image_to_text/accuracy@1'."},
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


@dataclass
class ModelArguments:
    """Which model to fine-tune and its loss/freeze overrides."""

    backbone: str = field(
        default=BIOMEDCLIP_HUB_ID,
        metadata={"help": "open_clip backbone: an 'hf-hub:' id, a local open_clip folder, or 'tiny' (inline test model)."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved CxrMtClipModel folder (or Hub id) to continue from; wins over --backbone."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer folder or Hub id; default: the backbone's (for 'tiny': trained on the train reports)."},
    )
    bce_weight: float | None = field(default=None, metadata={"help": "BCE weight (default: config, 0.69)."})
    supcon_weight: float | None = field(default=None, metadata={"help": "SupCon weight (default: config, 1.97)."})
    clip_weight: float | None = field(default=None, metadata={"help": "CLIP weight (default: config, 0.46)."})
    supcon_temperature: float | None = field(default=None, metadata={"help": "SupCon temperature (default 0.07)."})
    dropout: float | None = field(default=None, metadata={"help": "Dropout before the classifier (default 0.1)."})
    trainable_image_blocks: int | None = field(default=None, metadata={"help": "Last ViT blocks trained (-1 all)."})
    trainable_text_blocks: int | None = field(default=None, metadata={"help": "Last BERT layers trained (-1 all)."})
    cache_dir: str | None = field(default=None, metadata={"help": "huggingface_hub cache folder."})

    def config_overrides(self) -> dict[str, Any]:
        """The CxrMtClipConfig fields given on the command line."""
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


def parse_training_args(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, CxrMtClipTrainingArguments]:
    """Parse `examples/train.py` flags (or one .json file) into the three argument dataclasses.

    Example:
        >>> m, d, t = parse_training_args(["--backbone", "tiny", "--phantoms", "64", "--output_dir", "out"])
        >>> m.backbone, d.phantoms
        ('tiny', 64)
    """
    parser = HfArgumentParser((ModelArguments, DataArguments, CxrMtClipTrainingArguments))
    argv = list(argv) if argv is not None else None
    if argv is not None and len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=argv[0])
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args


# ----------------------------------------------------------------------------------------------
# Collator
# ----------------------------------------------------------------------------------------------


@dataclass
class CxrMtClipDataCollator:
    """Turn a list of dataset rows (image, report, label) into `pixel_values`, `input_ids`, `attention_mask`, `labels`.

    Images may be PIL images, `{"bytes": ..., "path": ...}` dicts (an undecoded `datasets.Image`) or
    file paths. Rows without the label column give a batch without `labels`.

    Example:
        >>> collator = CxrMtClipDataCollator(processor)  # doctest: +SKIP
        >>> batch = collator([{"image": img, "report": "Normal chest.", "label": 0}])  # doctest: +SKIP
    """

    processor: CxrMtClipProcessor
    image_column: str = "image"
    text_column: str = "report"
    label_column: str = "label"

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("CxrMtClipDataCollator got an empty batch")
        for column in (self.image_column, self.text_column):
            if column not in rows[0]:
                raise ValueError(
                    f"dataset rows have no {column!r} column (columns: {sorted(rows[0])}); "
                    "set image_column/text_column to the right names"
                )
        images = [_as_pil(row[self.image_column], row, self.image_column) for row in rows]
        texts = [row[self.text_column] for row in rows]
        labels = None
        if self.label_column in rows[0]:
            labels = [_as_label(row[self.label_column], row, self.label_column) for row in rows]
        return dict(self.processor(images=images, text=texts, labels=labels))


def _row_name(row: Mapping[str, Any]) -> str:
    return f"row uid={row['uid']!r}" if "uid" in row else "a row"


def _as_pil(value: Any, row: Mapping[str, Any], column: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
        source: Any = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    elif isinstance(value, (str, os.PathLike)):
        source = value
    else:
        raise ValueError(f"{_row_name(row)} has no usable image in column {column!r} (got {type(value).__name__})")
    if not isinstance(source, io.BytesIO) and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: image of {_row_name(row)} not found")
    try:
        image = Image.open(source)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(
            f"{_row_name(row)}: column {column!r} holds an unreadable image, truncated or corrupt "
            f"({type(err).__name__}: {err})"
        ) from err
    # as datasets.Image decodes: honour an EXIF orientation
    return ImageOps.exif_transpose(image) if image.getexif().get(ExifTags.Base.Orientation) is not None else image


def _undecoded_images(dataset: Any, column: str) -> Any:
    """The dataset with its image column left as bytes: the collator decodes them and names a corrupt row."""
    import datasets

    if dataset is None or column not in dataset.column_names:
        return dataset
    feature = dataset.features[column]
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _as_label(value: Any, row: Mapping[str, Any], column: str) -> int:
    if isinstance(value, (bool, np.bool_)) or value not in (0, 1):
        raise ValueError(f"{_row_name(row)}: column {column!r} must be 0 (normal) or 1 (abnormal), got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# Optimiser parameter groups
# ----------------------------------------------------------------------------------------------


def is_head_parameter(name: str) -> bool:
    """Whether a parameter trains at `head_learning_rate`: the classifier and the CLIP logit scale."""
    name = name.removeprefix("module.")
    return name in _HEAD_PARAMETER_NAMES or name.startswith(_HEAD_PARAMETER_PREFIXES)


def _no_decay_names(model: nn.Module) -> set[str]:
    # transformers' rule (LayerNorm modules, names with bias/norm) plus every tensor of rank < 2
    # (norm weights, biases, the logit scale), as open_clip does.
    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [nn.LayerNorm], patterns))
    return {name for name, p in model.named_parameters() if name not in decay or p.ndim < 2}


def parameter_groups(
    model: nn.Module, learning_rate: float, head_learning_rate: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups: backbone vs head (classifier + logit scale), each with/without weight decay.

    Only trainable parameters are included; empty groups are dropped. Each group carries a `name`
    (`backbone`, `backbone_no_decay`, `head`, `head_no_decay`).

    Example:
        >>> groups = parameter_groups(CxrMtClipModel(CxrMtClipConfig.tiny()), 1e-5, 1e-4, 0.01)
        >>> [(g["name"], g["lr"]) for g in groups][-1]
        ('head_no_decay', 0.0001)
    """
    no_decay = _no_decay_names(model)
    buckets: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_no_decay": [], "head": [], "head_no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = "head" if is_head_parameter(name) else "backbone"
        buckets[key + ("_no_decay" if name in no_decay else "")].append(param)
    groups = []
    for key, params in buckets.items():
        if not params:
            continue
        groups.append(
            {
                "name": key,
                "params": params,
                "lr": head_learning_rate if key.startswith("head") else learning_rate,
                "weight_decay": 0.0 if key.endswith("no_decay") else weight_decay,
            }
        )
    return groups


# ----------------------------------------------------------------------------------------------
# Metrics, search space, objective
# ----------------------------------------------------------------------------------------------


def compute_retrieval_metrics(eval_pred: EvalPrediction, ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Image->text and text->image retrieval metrics, the head's classification metrics and the mean accuracy@1.

    `eval_pred.predictions` is `(logits, image_embeds, text_embeds)` as returned by
    `CxrMtClipTrainer.prediction_step`; cut-offs larger than the split are dropped.
    """
    predictions = eval_pred.predictions
    if not isinstance(predictions, (tuple, list)) or len(predictions) != 3:
        raise ValueError("expected predictions (logits, image_embeds, text_embeds) from CxrMtClipTrainer.prediction_step")
    logits, image_embeds, text_embeds = (np.asarray(p, dtype=np.float64) for p in predictions)
    labels = np.asarray(eval_pred.label_ids).reshape(-1)
    n = image_embeds.shape[0]
    usable = tuple(k for k in ks if k <= n) or (1,)
    metrics = bidirectional_retrieval_metrics(image_embeds, text_embeds, labels, ks=usable)
    metrics.update(classification_metrics(logits.reshape(-1), labels))
    metrics[MEAN_ACCURACY_KEY] = (metrics["image_to_text/accuracy@1"] + metrics["text_to_image/accuracy@1"]) / 2
    return metrics


def default_hp_space(trial: Any) -> dict[str, float]:
    """The paper's search space: bce_weight in [0.1, 1], supcon_weight in [0.2, 2], clip_weight in [0.2, 2] (uniform)."""
    return {name: trial.suggest_float(name, low, high) for name, (low, high) in HP_SEARCH_RANGES.items()}


def default_objective(metrics: Mapping[str, float]) -> float:
    """HPO objective (maximised): mean of image->text and text->image accuracy@1 on the validation split.

    Accepts evaluation metrics with or without the `eval_` prefix.

    Example:
        >>> default_objective({"eval_image_to_text/accuracy@1": 0.5, "eval_text_to_image/accuracy@1": 0.25})
        0.375
    """
    values = []
    for direction in ("image_to_text", "text_to_image"):
        key = f"{direction}/accuracy@1"
        value = metrics.get(f"eval_{key}", metrics.get(key))
        if value is None:
            raise ValueError(f"metrics have no 'eval_{key}'; got {sorted(metrics)} (is compute_metrics set?)")
        values.append(float(value))
    return sum(values) / 2


# ----------------------------------------------------------------------------------------------
# Model construction
# ----------------------------------------------------------------------------------------------


def _trial_params(trial: Any, hp_space: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """A trial's hyper-parameters: a dict as is; an optuna trial through `hp_space` (suggesting repeats the value)."""
    if trial is None:
        return {}
    if isinstance(trial, Mapping):
        return dict(trial)
    if hasattr(trial, "suggest_float"):
        return dict((hp_space or default_hp_space)(trial))
    raise ValueError(f"expected a dict of hyper-parameters or an optuna trial, got {type(trial).__name__}")


def build_model(
    *,
    model_name_or_path: str | os.PathLike | None = None,
    backbone: str | None = None,
    config: CxrMtClipConfig | None = None,
    cache_dir: str | None = None,
    seed: int | None = None,
    **overrides: Any,
) -> CxrMtClipModel:
    """A CxrMtClipModel from a saved folder, an open_clip backbone ('tiny' = inline test model) or a config.

    `overrides` set CxrMtClipConfig fields (loss weights, dropout, freeze policy) before the model is built;
    `seed` (when given) seeds the random initialisation of the head (and of a tiny model).

    Example:
        >>> build_model(backbone="tiny", bce_weight=0.5).config.bce_weight
        0.5
    """
    unknown = set(overrides) - set(CONFIG_OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"cannot override CxrMtClipConfig field(s) {sorted(unknown)}; allowed: {list(CONFIG_OVERRIDE_KEYS)}")
    if seed is not None:
        set_seed(seed)
    if model_name_or_path is not None:
        loaded = CxrMtClipConfig.from_pretrained(str(model_name_or_path), cache_dir=cache_dir)
        for key, value in overrides.items():
            setattr(loaded, key, value)
        loaded.validate_fields()
        return CxrMtClipModel.from_pretrained(str(model_name_or_path), config=loaded, cache_dir=cache_dir)
    if config is not None:
        params = config.to_dict()
        params.update(overrides)
        for key in ("model_type", "transformers_version", "architectures"):
            params.pop(key, None)
        return CxrMtClipModel(CxrMtClipConfig(**params))
    if backbone is None:
        raise ValueError("build_model needs model_name_or_path, backbone or config")
    if backbone == TINY_BACKBONE:
        return CxrMtClipModel(CxrMtClipConfig.tiny(**overrides))
    return CxrMtClipModel.from_backbone(backbone, cache_dir=cache_dir, **overrides)


def make_model_init(
    *,
    model_name_or_path: str | os.PathLike | None = None,
    backbone: str | None = None,
    config: CxrMtClipConfig | None = None,
    cache_dir: str | None = None,
    hp_space: Callable[[Any], dict[str, Any]] | None = None,
    **overrides: Any,
) -> Callable[[Any], CxrMtClipModel]:
    """A Trainer `model_init(params)` that builds a fresh model; `params` override config fields.

    `params` is a dict, or an optuna trial whose values are drawn with `hp_space` (default
    :func:`default_hp_space`). Keys that are not CxrMtClipConfig overrides (e.g. `learning_rate`) are
    ignored here: CxrMtClipTrainer applies them to its TrainingArguments.

    Example:
        >>> init = make_model_init(backbone="tiny")
        >>> init({"clip_weight": 1.5, "learning_rate": 3e-5}).config.clip_weight
        1.5
    """

    def model_init(trial: Any = None) -> CxrMtClipModel:
        params = dict(overrides)
        params.update({k: v for k, v in _trial_params(trial, hp_space).items() if k in CONFIG_OVERRIDE_KEYS})
        return build_model(
            model_name_or_path=model_name_or_path, backbone=backbone, config=config, cache_dir=cache_dir, **params
        )

    return model_init


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


class _TermMeter:
    """Weighted running sums of the loss terms, on device (no host sync per step)."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None

    def add(self, values: Sequence[torch.Tensor], weight: float) -> None:
        stacked = torch.stack([v.detach().float().reshape(()) for v in values] + [values[0].new_tensor(1.0).float()])
        stacked = stacked * weight
        self.sums = stacked if self.sums is None else self.sums + stacked

    def pop(self, gather: Callable[[torch.Tensor], torch.Tensor], has_data: bool) -> dict[str, float]:
        # Every process calls pop at the same points; `has_data` must agree across processes.
        if not has_data:
            return {}
        sums = self.sums if self.sums is not None else torch.zeros(len(LOSS_TERMS) + 1)
        totals = gather(sums.reshape(1, -1)).reshape(-1, len(LOSS_TERMS) + 1).sum(dim=0)
        self.sums = None
        weight = float(totals[-1])
        if weight <= 0:
            return {}
        return {name: float(totals[i]) / weight for i, name in enumerate(LOSS_TERMS)}

    @property
    def has_data(self) -> bool:
        return self.sums is not None


class CxrMtClipTrainer(Trainer):
    """Trainer with the paper's two learning rates, per-term loss logging and retrieval evaluation.

    - `create_optimizer`: :func:`parameter_groups` (backbone at `learning_rate`, classifier + logit
      scale at `head_learning_rate`, no decay on norms/biases/logit scale, trainable parameters only).
    - `compute_loss`: the model's composite loss; `bce_loss`, `supcon_loss`, `clip_loss` are logged as
      running means next to `loss` at every logging step and as `eval_bce_loss`... in evaluation.
    - evaluation: :func:`compute_retrieval_metrics` on the collected embeddings, keys like
      `eval_image_to_text/accuracy@1` (the default `compute_metrics`).
    - `hyperparameter_search`: optuna, seeded TPE, :func:`default_hp_space`, :func:`default_objective`;
      config fields of each trial go to `model_init`, TrainingArguments fields to the arguments.

    Example:
        >>> trainer = CxrMtClipTrainer(model=model, args=args, processing_class=processor,
        ...                            train_dataset=splits["train"], eval_dataset=splits["validation"])  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: CxrMtClipModel | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: CxrMtClipProcessor | None = None,
        model_init: Callable[..., CxrMtClipModel] | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = CxrMtClipTrainingArguments(output_dir="trainer_output")
        if args.remove_unused_columns:
            raise ValueError("CxrMtClipTrainer needs remove_unused_columns=False (the collator reads image/report columns)")
        if data_collator is None:
            if processing_class is None:
                raise ValueError("CxrMtClipTrainer needs a data_collator or a processing_class (CxrMtClipProcessor)")
            data_collator = CxrMtClipDataCollator(processing_class)
        self._meters = {"train": _TermMeter(), "train_total": _TermMeter(), "eval": _TermMeter()}
        self._model_hp_space: Callable[[Any], dict[str, Any]] | None = None
        self.hp_study: Any = None
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_retrieval_metrics if compute_metrics is None else compute_metrics,
            **kwargs,
        )
        self._apply_loss_options(self.model)

    # -- model ------------------------------------------------------------------------------------

    def _apply_loss_options(self, model: nn.Module) -> None:
        gather = getattr(self.args, "gather_distributed", None)
        if gather is None or not isinstance(model, CxrMtClipModel):
            return
        model.config.gather_distributed = bool(gather)
        model.loss_fn.gather_distributed = bool(gather)

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """Build a model with `model_init`, passing the trial's hyper-parameters as a plain dict."""
        params = None if trial is None else _trial_params(trial, self._model_hp_space)
        if self.model_init is None:
            raise RuntimeError("CxrMtClipTrainer.call_model_init needs a model_init")
        if number_of_arguments(self.model_init) == 0:
            model = self.model_init()
        else:
            model = self.model_init(params)
        if model is None:
            raise RuntimeError("model_init returned None")
        self._apply_loss_options(model)
        return model

    # -- optimiser ------------------------------------------------------------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW over :func:`parameter_groups` (two learning rates, no decay on norms/biases/logit scale)."""
        if self.optimizer is None:
            opt_model = self.accelerator.unwrap_model(self.model if model is None else model)
            head_lr = float(getattr(self.args, "head_learning_rate", self.args.learning_rate))
            groups = parameter_groups(opt_model, self.args.learning_rate, head_lr, self.args.weight_decay)
            if not groups:
                raise ValueError("the model has no trainable parameters (check trainable_image_blocks/text_blocks)")
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            special = {"params", "model", "optimizer_dict"} & set(optimizer_kwargs)
            if special:
                raise ValueError(f"optim={self.args.optim!r} builds its own parameter groups; use adamw_torch")
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # -- loss and its terms ---------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The model's composite loss; its three terms are accumulated for logging."""
        if inputs.get("labels") is None:
            raise ValueError("batches need `labels` (0 normal / 1 abnormal) to compute the composite loss")
        outputs = model(**inputs)
        loss = outputs["loss"]
        terms = [outputs[name] for name in LOSS_TERMS]
        if model.training:
            self._meters["train"].add(terms, 1.0)
            self._meters["train_total"].add(terms, 1.0)
        else:
            self._meters["eval"].add(terms, float(inputs["labels"].shape[0]))
        return (loss, outputs) if return_outputs else loss

    def _gather_sums(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.args.world_size <= 1:
            return tensor
        return self.accelerator.gather(tensor.to(self.args.device))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the running means of the loss terms to training logs (`bce_loss`... and `train_bce_loss`...)."""
        if "loss" in logs:
            logs.update(self._meters["train"].pop(self._gather_sums, self._meters["train"].has_data))
        if "train_loss" in logs:
            means = self._meters["train_total"].pop(self._gather_sums, self._meters["train_total"].has_data)
            logs.update({f"train_{k}": v for k, v in means.items()})
        super().log(logs, start_time)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        for meter in self._meters.values():
            meter.sums = None
        return super().train(*args, **kwargs)

    # -- evaluation -------------------------------------------------------------------------------

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None, torch.Tensor | None]:
        """Loss (when labels are given) and `(logits, image_embeds, text_embeds)` for the retrieval metrics."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            if labels is not None:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach().mean()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        predictions = tuple(outputs[name].detach() for name in ("logits", "image_embeds", "text_embeds"))
        return loss, predictions, labels

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        """Trainer's loop, plus `<prefix>_bce_loss`, `<prefix>_supcon_loss`, `<prefix>_clip_loss` (per-example means)."""
        self._meters["eval"].sums = None
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only=prediction_loss_only, ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        # Every process ran the same number of eval batches, so has_data agrees across processes.
        means = self._meters["eval"].pop(self._gather_sums, self._meters["eval"].has_data)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in means.items()})
        return output

    # -- hyper-parameter search -------------------------------------------------------------------

    def hyperparameter_search(
        self,
        hp_space: Callable[[Any], dict[str, Any]] | None = None,
        compute_objective: Callable[[dict[str, float]], float] | None = None,
        n_trials: int = 20,
        direction: str = "maximize",
        backend: str = "optuna",
        hp_name: Callable[[Any], str] | None = None,
        **kwargs: Any,
    ) -> BestRun | None:
        """Optuna search (seeded TPE unless `sampler` is given) over `hp_space` (default :func:`default_hp_space`).

        Returns the best run on the main process (None elsewhere); the study is kept in `self.hp_study`
        (main process) with every trial's evaluation metrics in `trial.user_attrs["metrics"]`.
        """
        if backend != "optuna":
            raise ValueError(f"CxrMtClipTrainer.hyperparameter_search supports backend='optuna', got {backend!r}")
        import optuna

        full_space = hp_space or default_hp_space
        objective = compute_objective or default_objective
        self._model_hp_space = full_space
        args_fields = {f.name for f in dataclasses.fields(self.args)}

        def args_space(trial: Any) -> dict[str, Any]:
            # Every parameter is suggested (so it is recorded); only TrainingArguments fields are returned.
            return {k: v for k, v in full_space(trial).items() if k in args_fields}

        def recorded_objective(metrics: dict[str, float]) -> float:
            value = objective(metrics)
            trial = getattr(self, "_trial", None)
            if hasattr(trial, "set_user_attr"):
                trial.set_user_attr("metrics", {k: _json_number(v) for k, v in metrics.items()})
            return value

        kwargs.setdefault("sampler", optuna.samplers.TPESampler(seed=self.args.seed))
        storage = kwargs.setdefault("storage", optuna.storages.InMemoryStorage())
        study_name = kwargs.setdefault("study_name", "cxr_mtclip_hpo")
        try:
            best = super().hyperparameter_search(
                hp_space=args_space,
                compute_objective=recorded_objective,
                n_trials=n_trials,
                direction=direction,
                backend=backend,
                hp_name=hp_name,
                **kwargs,
            )
        finally:
            self._model_hp_space = None
        if self.args.process_index == 0:
            self.hp_study = optuna.load_study(study_name=study_name, storage=storage)
        return best


# ----------------------------------------------------------------------------------------------
# Results, plots, HPO tables
# ----------------------------------------------------------------------------------------------


def _json_number(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_number) + "\n")


def trial_table(study: Any) -> list[dict[str, Any]]:
    """One row per optuna trial: number, state, objective, parameters and the main evaluation metrics."""
    rows = []
    keep = ("eval_loss", "eval_image_to_text/accuracy@1", "eval_text_to_image/accuracy@1") + tuple(
        f"eval_{t}" for t in LOSS_TERMS
    )
    for trial in study.trials:
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name, "objective": trial.value}
        row.update({k: trial.params.get(k) for k in sorted(trial.params)})
        metrics = trial.user_attrs.get("metrics", {})
        row.update({k: metrics.get(k) for k in keep})
        rows.append(row)
    return rows


def save_trial_table(rows: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike) -> list[Path]:
    """Write the trial table as `hpo_trials.csv` and `hpo_trials.json` in `output_dir`."""
    output_dir = Path(output_dir)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in columns})
    csv_path, json_path = (output_dir / name for name in TRIAL_TABLE_NAMES)
    atomic_write_text(csv_path, buffer.getvalue())
    _write_json(json_path, list(rows))
    return [csv_path, json_path]


def format_trial_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The trial table as aligned text, for the console."""
    if not rows:
        return "(no trials)"
    columns = ["trial", "state", "objective", *HP_SEARCH_RANGES]
    extra = [k for k in rows[0] if k not in columns]
    columns += [k for k in extra if k.startswith("eval_")]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return "" if value is None else str(value)

    table = [[c for c in columns]] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in table)


# ----------------------------------------------------------------------------------------------
# The training script
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainingRunResult:
    """What `run_training` produced: all metrics (as in all_results.json), HPO outcome and the files written."""

    output_dir: Path
    metrics: dict[str, float]
    best_hyperparameters: dict[str, float] | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    model_card_path: Path | None = None
    uploaded_files: list[str] | None = None


def _limit(dataset: Any, n: int | None) -> Any:
    if n is None or dataset is None:
        return dataset
    if n <= 0:
        raise ValueError(f"max_*_samples must be > 0, got {n}")
    return dataset.select(range(min(n, len(dataset))))


def load_training_data(data_args: DataArguments, *, seed: int, image_size: int = 224) -> Any:
    """The DatasetDict to train on: `--dataset` (folder or Hub id) or `--phantoms N` synthetic studies split by seed."""
    import datasets

    if data_args.dataset:
        path = Path(data_args.dataset).expanduser()
        if path.exists():
            if not (path / "dataset_dict.json").is_file():
                raise FileNotFoundError(f"{path}: not a DatasetDict folder (no dataset_dict.json; write it with save_to_disk)")
            splits = datasets.load_from_disk(str(path))
        else:
            splits = datasets.load_dataset(data_args.dataset, data_args.dataset_config)
        if not isinstance(splits, datasets.DatasetDict):
            raise ValueError(f"{data_args.dataset}: expected a DatasetDict with splits, got {type(splits).__name__}")
    elif data_args.phantoms:
        from .data import split_openi
        from .phantoms import make_phantom_openi

        studies = make_phantom_openi(data_args.phantoms, seed=seed, image_size=image_size)
        splits = split_openi(studies, seed=seed, test_per_class=data_args.test_per_class, val_fraction=data_args.val_fraction)
    else:
        raise ValueError("no data: pass --dataset (DatasetDict folder or Hub id) or --phantoms N")
    if data_args.train_split not in splits:
        raise ValueError(f"{data_args.dataset or 'phantoms'}: no split {data_args.train_split!r} (splits: {list(splits)})")
    for column in (data_args.image_column, data_args.text_column, data_args.label_column):
        if column not in splits[data_args.train_split].column_names:
            raise ValueError(
                f"split {data_args.train_split!r} has no column {column!r} (columns: {splits[data_args.train_split].column_names})"
            )
    _check_labels(splits, data_args.label_column, data_args.dataset or "phantoms")
    return splits


def _check_labels(splits: Any, column: str, where: str) -> None:
    """Every split's label column is 0 (normal) / 1 (abnormal), and a ClassLabel names them in that order."""
    import datasets

    for name, split in splits.items():
        if column not in split.column_names:
            continue
        feature = split.features[column]
        if isinstance(feature, datasets.ClassLabel) and list(feature.names) != ["normal", "abnormal"]:
            raise ValueError(
                f"{where} [{name}]: column {column!r} has class names {feature.names}; expected "
                "['normal', 'abnormal'] (0 = normal, 1 = abnormal)"
            )
        unknown = sorted({value for value in split.unique(column) if value not in (0, 1)}, key=repr)
        if unknown:
            raise ValueError(
                f"{where} [{name}]: column {column!r} holds {unknown[:5]}; expected only 0 (normal) and 1 (abnormal)"
            )


def _data_provenance(splits: Any) -> str:
    sources: set[str] = set()
    for split in splits.values():
        if "source" not in split.column_names:
            return "unknown"
        sources |= set(split["source"])
    if sources == {"synthetic"}:
        return "synthetic"
    if sources == {"real"}:
        return "real"
    return "mixed" if sources else "unknown"


def build_processor(model_args: ModelArguments, train_reports: Sequence[str], output_dir: Path,
                    training_args: TrainingArguments) -> CxrMtClipProcessor:
    """The processor of the model: a saved folder, the backbone's, or (tiny) a tokenizer trained on the reports."""
    if model_args.model_name_or_path is not None:
        if model_args.tokenizer:
            config = CxrMtClipConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
            return CxrMtClipProcessor.from_config(config, model_args.tokenizer)
        return CxrMtClipProcessor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    if model_args.backbone == TINY_BACKBONE:
        config = CxrMtClipConfig.tiny()
        if model_args.tokenizer:
            return CxrMtClipProcessor.from_config(config, model_args.tokenizer)
        folder = output_dir / "tokenizer"
        with training_args.main_process_first(desc="train a WordPiece tokenizer for the tiny model"):
            if not (folder / "tokenizer_config.json").is_file():
                vocab = int(config.text_config_dict["vocab_size"])
                build_wordpiece_tokenizer(train_reports, folder, vocab_size=vocab)
        return CxrMtClipProcessor.from_config(config, folder)
    processor = CxrMtClipProcessor.from_backbone(model_args.backbone, cache_dir=model_args.cache_dir)
    if model_args.tokenizer:
        from transformers import AutoTokenizer

        processor.tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer)
    return processor


def _image_size_for(model_args: ModelArguments) -> int:
    if model_args.model_name_or_path is not None:
        return CxrMtClipConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir).image_size
    if model_args.backbone == TINY_BACKBONE:
        return CxrMtClipConfig.tiny().image_size
    return 224


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest `checkpoint-N` folder the Trainer finished writing (its trainer_state.json, written last, parses).

    A run killed while saving leaves a partial newest checkpoint; transformers' `get_last_checkpoint` would pick it.

    Example:
        >>> last_complete_checkpoint("runs/tiny")  # doctest: +SKIP
        PosixPath('runs/tiny/checkpoint-20')
    """
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not (step.isdigit() and path.is_dir()):
            continue
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append((int(step), path))
    return max(found)[1] if found else None


def _resume_value(value: str | None, output_dir: str | os.PathLike | None = None) -> str | bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("true", "last", "latest"):
        last = last_complete_checkpoint(output_dir) if output_dir is not None else None
        return str(last) if last is not None else True
    if value.lower() in ("false", "none", "no"):
        return None
    if not Path(value).is_dir():
        raise FileNotFoundError(f"{value}: --resume_from_checkpoint must be a checkpoint folder or 'last'")
    return value


def _hyperparameter_summary(args: CxrMtClipTrainingArguments, config: CxrMtClipConfig) -> dict[str, Any]:
    return {
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "learning_rate (backbone)": args.learning_rate,
        "head_learning_rate (classifier, logit scale)": args.head_learning_rate,
        "weight_decay": args.weight_decay,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps (<1: ratio)": args.warmup_steps,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "processes": args.world_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "global batch (negatives)": args.per_device_train_batch_size * args.world_size
        if config.gather_distributed
        else args.per_device_train_batch_size,
        "seed": args.seed,
        "bce_weight": config.bce_weight,
        "supcon_weight": config.supcon_weight,
        "clip_weight": config.clip_weight,
        "supcon_temperature": config.supcon_temperature,
        "dropout": config.dropout,
        "trainable_image_blocks": config.trainable_image_blocks,
        "trainable_text_blocks": config.trainable_text_blocks,
    }


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: CxrMtClipTrainingArguments
) -> TrainingRunResult:
    """Optional HPO, then train, evaluate (validation, test), save model + processor, results, loss curves, model card.

    Writes into `output_dir`: checkpoints, the final model and processor, `train/eval/test/all_results.json`,
    `trainer_state.json`, `loss_curves.png`, `model_card.md`, and with HPO `hpo_trials.csv/json` and
    `best_hyperparameters.json`. With `--push_to_hub` the result is uploaded by
    :func:`cxr_mtclip.model_card.push_to_hub` (the Trainer's own checkpoint pushes are disabled).

    Example:
        >>> run_training(*parse_training_args(["--backbone", "tiny", "--phantoms", "64", "--output_dir", "out",
        ...                                    "--num_train_epochs", "1"]))  # doctest: +SKIP
    """
    from .model_card import DataDescription, push_to_hub, render_model_card, write_model_card

    push = bool(training_args.push_to_hub)
    if push:
        training_args = dataclasses.replace(training_args, push_to_hub=False)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(
            f"launched as {launched} processes but TrainingArguments sees world_size={training_args.world_size}: "
            "on a machine without GPUs pass --use_cpu true so the processes join one gloo group"
        )
    seed = training_args.seed
    set_seed(seed)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    with training_args.main_process_first(desc="load the dataset"):
        splits = load_training_data(data_args, seed=seed, image_size=_image_size_for(model_args))
    train_dataset = _limit(splits[data_args.train_split], data_args.max_train_samples)
    eval_dataset = None
    if data_args.eval_split and data_args.eval_split in splits:
        eval_dataset = _limit(splits[data_args.eval_split], data_args.max_eval_samples)
    test_dataset = None
    if data_args.test_split and data_args.test_split in splits:
        test_dataset = _limit(splits[data_args.test_split], data_args.max_eval_samples)
    train_dataset, eval_dataset, test_dataset = (
        _undecoded_images(ds, data_args.image_column) for ds in (train_dataset, eval_dataset, test_dataset)
    )
    if eval_dataset is None and training_args.eval_strategy != "no":
        logger.warning("no validation split %r: evaluation during training is turned off", data_args.eval_split)
        training_args = dataclasses.replace(training_args, eval_strategy="no", load_best_model_at_end=False)

    processor = build_processor(model_args, train_dataset[data_args.text_column], output_dir, training_args)
    collator = CxrMtClipDataCollator(processor, data_args.image_column, data_args.text_column, data_args.label_column)
    overrides = model_args.config_overrides()
    source = dict(model_name_or_path=model_args.model_name_or_path, backbone=model_args.backbone,
                  cache_dir=model_args.cache_dir)
    resume = _resume_value(training_args.resume_from_checkpoint, output_dir)

    # -- hyper-parameter search ------------------------------------------------------------------
    best_hp: dict[str, float] | None = None
    trials: list[dict[str, Any]] = []
    best_file = output_dir / BEST_HP_NAME
    if training_args.hpo_trials > 0 and resume is not None and best_file.is_file():
        best_hp = json.loads(best_file.read_text())["hyperparameters"]
        logger.info("resuming: reusing the searched loss weights of %s", best_file)
    elif training_args.hpo_trials > 0:
        if eval_dataset is None:
            raise ValueError("--hpo_trials needs a validation split (the objective is validation accuracy@1)")
        hpo_args = dataclasses.replace(
            training_args,
            output_dir=str(output_dir / "hpo"),
            save_strategy="no",
            load_best_model_at_end=False,
            eval_strategy="epoch" if training_args.eval_strategy == "no" else training_args.eval_strategy,
            resume_from_checkpoint=None,
        )
        hpo_trainer = CxrMtClipTrainer(
            args=hpo_args,
            model_init=make_model_init(**source, **overrides),
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
        )
        best_run = hpo_trainer.hyperparameter_search(n_trials=training_args.hpo_trials)
        payload = [best_run.hyperparameters if best_run is not None else None]
        if training_args.world_size > 1:
            torch.distributed.broadcast_object_list(payload, src=0)
        best_hp = {k: v for k, v in payload[0].items() if k in CONFIG_OVERRIDE_KEYS}
        if hpo_trainer.is_world_process_zero():
            trials = trial_table(hpo_trainer.hp_study)
            save_trial_table(trials, output_dir)
            _write_json(best_file, {"objective": best_run.objective, "trial": int(best_run.run_id),
                                    "hyperparameters": best_hp,
                                    "objective_definition": "mean of validation image->text and text->image accuracy@1"})
            print(f"Hyper-parameter search ({len(trials)} trials, objective = mean validation accuracy@1):")
            print(format_trial_table(trials))
            print(f"Best trial {best_run.run_id}: objective {best_run.objective:.4f}, {best_hp}")
        del hpo_trainer
    if best_hp:
        overrides.update(best_hp)

    # -- final run ---------------------------------------------------------------------------------
    model = build_model(**source, seed=seed, **overrides)  # seeded as the Trainer seeds a search trial's model_init
    if data_args.feature_cache:
        from .feature_cache import prepare_cached_training

        with training_args.main_process_first(desc="frozen-trunk feature cache"):
            decoded = [None if ds is None else ds.cast_column(data_args.image_column, datasets.Image())
                       for ds in (train_dataset, eval_dataset)]
            cached = prepare_cached_training(
                model, processor, decoded[0], data_args.feature_cache, eval_dataset=decoded[1],
                rebuild_stale=True, image_column=data_args.image_column, text_column=data_args.text_column,
                label_column=data_args.label_column, batch_size=training_args.per_device_eval_batch_size,
            )
        trainer = CxrMtClipTrainer(
            model=cached.model, args=training_args, data_collator=cached.data_collator,
            train_dataset=cached.train_dataset, eval_dataset=cached.eval_dataset, processing_class=processor,
        )
    else:
        trainer = CxrMtClipTrainer(
            model=model,
            args=training_args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
        )
    train_output = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output_dir))
    trainer.save_state()
    metrics: dict[str, float] = dict(train_output.metrics)
    eval_metrics: dict[str, float] = {}
    test_metrics: dict[str, float] = {}
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate(metric_key_prefix="eval")
    if test_dataset is not None:
        # the test split is never cached: evaluate it through the plain model (parameters shared with the trainer's)
        tester = trainer if not data_args.feature_cache else CxrMtClipTrainer(
            model=model, args=training_args, data_collator=collator, processing_class=processor)
        test_metrics = tester.evaluate(eval_dataset=test_dataset, metric_key_prefix="test")
    all_results = {**metrics, **eval_metrics, **test_metrics}
    all_results = {k: _json_number(v) for k, v in all_results.items()}

    card_path = None
    uploaded = None
    if trainer.is_world_process_zero():
        for name, values in zip(RESULT_FILES, (metrics, eval_metrics, test_metrics, all_results)):
            if values:
                _write_json(output_dir / name, {k: _json_number(v) for k, v in values.items()})
        if any("loss" in entry for entry in trainer.state.log_history):  # a run too short to log has no curve
            plot_loss_curves(trainer.state.log_history, output_dir / LOSS_CURVES_NAME)
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        data = DataDescription(
            provenance=_data_provenance(splits),
            name=data_args.dataset or f"synthetic phantoms (make_phantom_openi, n={data_args.phantoms}, seed={seed})",
            hub_id=data_args.dataset if data_args.dataset and not Path(data_args.dataset).exists() else None,
            split_sizes={
                name: len(ds) for name, ds in (("train", train_dataset), ("validation", eval_dataset), ("test", test_dataset))
                if ds is not None
            },
        )
        hpo_info = None
        if best_hp:
            hpo_info = {"trials": training_args.hpo_trials, "best": best_hp,
                        "objective": "mean of validation image->text and text->image accuracy@1",
                        "ranges": HP_SEARCH_RANGES}
        card = render_model_card(
            all_results,
            config=unwrapped.config,
            hyperparameters=_hyperparameter_summary(training_args, unwrapped.config),
            data=data,
            model_name=training_args.hub_model_id or output_dir.name,
            repo_id=training_args.hub_model_id,
            hpo=hpo_info,
        )
        card_path = write_model_card(output_dir, card)
        if push:
            repo_id = training_args.hub_model_id or output_dir.name
            uploaded = push_to_hub(output_dir, repo_id, token=training_args.hub_token,
                                   private=training_args.hub_private_repo)
    trainer.accelerator.wait_for_everyone()
    return TrainingRunResult(
        output_dir=output_dir,
        metrics=all_results,
        best_hyperparameters=best_hp,
        trials=trials,
        model_card_path=card_path,
        uploaded_files=uploaded,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`cxr-mtclip train`: parse the flags of `examples/train.py`, call :func:`run_training`, return exit code 0."""
    run_training(*parse_training_args(argv))
    return 0
