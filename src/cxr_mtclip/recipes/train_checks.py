"""The training recipe's checks and reports: what `run_training` verifies before it loads a model, the warnings about
how it was launched, the resume check, and the summary printed at the end of a run.

Every check fails with one line naming the problem and the fix (a `ValueError` / `FileNotFoundError` that the CLI
prints as ``cxr-mtclip train: error: ...``); a condition the run can live with is a warning, printed once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from ..preflight import check_dataset_source, check_fresh_run_dir, check_hub_push, check_output_dir

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_EVAL_STUDIES",
    "TRAINABLE_PARAMETERS_NAME",
    "TrainableParametersCallback",
    "check_resume",
    "check_backbone",
    "check_metric_for_best_model",
    "evaluation_metric_names",
    "check_splits",
    "preflight_run",
    "requested_processes",
    "warn_about_launch",
    "write_run_summary",
]

MIN_EVAL_STUDIES = 2
"""Fewer validation studies than this and retrieval metrics mean nothing (one study always retrieves itself)."""
TRAINABLE_PARAMETERS_NAME = "trainable_parameters.json"


def preflight_run(model_args: Any, data_args: Any, training_args: Any, *, push: bool) -> None:
    """Before anything loads: the data source exists, the output folder is writable, the Hub accepts a push."""
    if data_args.dataset:
        check_dataset_source(data_args.dataset)
    elif not data_args.phantoms:
        raise ValueError("no data: pass --dataset FOLDER (from `cxr-mtclip build-dataset`) or a Hub dataset id, "
                         "or --phantoms N for synthetic studies")
    check_output_dir(training_args.output_dir)
    check_backbone(model_args)
    check_metric_for_best_model(training_args)
    resume = training_args.resume_from_checkpoint
    resuming = bool(resume) and str(resume).lower() not in ("false", "none", "no")
    if resuming and training_args.overwrite_output_dir:
        raise ValueError("--resume_from_checkpoint and --overwrite_output_dir contradict each other: resume the "
                         "earlier run, or replace it, not both")
    if resuming and str(resume).lower() in ("true", "last", "latest") and not _checkpoints(training_args.output_dir):
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: {training_args.output_dir} holds no checkpoint-N "
                                "folder to resume; drop the flag to start a new run, or give the --output_dir of the run")
    check_fresh_run_dir(training_args.output_dir, resume=resume, overwrite=training_args.overwrite_output_dir)
    if resume and str(resume).lower() not in ("true", "last", "latest", "false", "none", "no") and not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no such checkpoint folder; give a checkpoint-N "
                                "folder of an earlier run, or 'last' for the newest one in --output_dir")
    if push and training_args.process_index == 0:
        check_hub_push(training_args.hub_model_id or Path(training_args.output_dir).name, token=training_args.hub_token)


def _checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    folder = Path(output_dir)
    return [p for p in folder.glob("checkpoint-*") if p.is_dir()] if folder.is_dir() else []


def check_backbone(model_args: Any) -> None:
    """`--backbone` names something `build_model` can build (a registered architecture, an open_clip folder, an
    ``hf-hub:`` id), or a one-line error listing the registered names, before any data is rendered or loaded."""
    from ..registry import is_registered, list_configs

    backbone = getattr(model_args, "backbone", None)
    if getattr(model_args, "model_name_or_path", None) or not backbone:
        return  # a saved model wins over --backbone
    if is_registered(backbone) or Path(backbone).expanduser().is_dir() or backbone.startswith("hf-hub:"):
        return
    raise ValueError(f"--backbone {backbone}: not a registered architecture ({', '.join(list_configs())}), an "
                     "existing open_clip folder, or an open_clip Hub id (hf-hub:ORG/NAME, e.g. "
                     "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224)")


def evaluation_metric_names(ks: Sequence[int] = (1, 3, 5, 10)) -> list[str]:
    """The metric names the Trainer's evaluation reports (without ``eval_``): every key of
    `compute_retrieval_metrics` on a small synthetic prediction, the loss and its terms. Finding metrics (beyond
    the paper) are not listed: they depend on the model's finding head."""
    from transformers import EvalPrediction

    from ..losses import LOSS_TERMS, MULTILABEL_LOSS_TERMS
    from ..training.trainer import compute_retrieval_metrics

    rng = np.random.default_rng(0)
    n = max(ks) + 2
    image, text = rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
    metrics = compute_retrieval_metrics(EvalPrediction(predictions=(rng.standard_normal(n), image, text),
                                                       label_ids=np.arange(n) % 2), ks=ks)
    return sorted([*metrics, "loss", *LOSS_TERMS, *MULTILABEL_LOSS_TERMS])


def check_metric_for_best_model(training_args: Any) -> None:
    """A `--metric_for_best_model` the evaluation will report, or a one-line error with the closest names, before
    the first epoch (transformers finds out only after it, with a KeyError listing ~100 names)."""
    import difflib

    name = getattr(training_args, "metric_for_best_model", None)
    if not name or getattr(training_args, "eval_strategy", "no") == "no":
        return
    key = name.removeprefix("eval_")
    if "finding" in key:  # the multi-label head's metrics: named by the model's findings
        return
    known = evaluation_metric_names()
    if key in known:
        return
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "e.g. cross-modal/mean_accuracy@1 (the default), loss"
    raise ValueError(f"--metric_for_best_model {name}: not a metric the evaluation reports; {hint} (retrieval "
                     "metrics name their protocol: cross-modal/image_to_text/accuracy@1, ...)")


def check_splits(train: Any, eval_: Any, test: Any, training_args: Any, data_args: Any) -> tuple[Any, Any, Any, Any]:
    """Refuse a train split too small for one batch; turn evaluation off (with a warning) for a missing, empty or
    too small validation split and drop an empty test split. Returns (train, eval, test, training_args)."""
    name = data_args.dataset or "phantoms"
    for split_name, split in ((data_args.train_split, train), (data_args.eval_split, eval_), (data_args.test_split, test)):
        _check_pairs(split, split_name, name, data_args)
    if len(train) == 0:
        raise ValueError(f"{name}: the {data_args.train_split!r} split is empty; build the dataset with more studies "
                         "(`cxr-mtclip build-dataset` prints what it kept and dropped)")
    batch = training_args.per_device_train_batch_size * max(1, training_args.world_size)
    if training_args.dataloader_drop_last and len(train) < batch:
        raise ValueError(
            f"{name}: the {data_args.train_split!r} split has {len(train)} studies, fewer than one batch of {batch} "
            f"({training_args.per_device_train_batch_size} per process x {max(1, training_args.world_size)}) with "
            f"dataloader_drop_last: no training step would run; use a batch of at most {len(train)} "
            "(--per_device_train_batch_size) or more studies"
        )
    if len(train) < 2:
        raise ValueError(f"{name}: the {data_args.train_split!r} split has 1 study; the contrastive losses need at "
                         "least 2 per batch: use more studies")
    if eval_ is not None and len(eval_) < MIN_EVAL_STUDIES:
        if training_args.hpo_trials > 0:
            raise ValueError(f"{name}: --hpo_trials needs a validation split of at least {MIN_EVAL_STUDIES} studies "
                             f"(the {data_args.eval_split!r} split has {len(eval_)}); use more studies, a larger "
                             "--val_fraction, or no search")
        _warn(f"the {data_args.eval_split!r} split has {len(eval_)} studies (fewer than {MIN_EVAL_STUDIES}): "
              "evaluation during training is turned off; build the dataset with more studies to evaluate")
        eval_ = None
    elif eval_ is None and training_args.eval_strategy != "no":
        if training_args.hpo_trials > 0:
            raise ValueError(f"{name}: --hpo_trials needs a validation split (the objective is validation accuracy@1) "
                             f"and there is no {data_args.eval_split!r} split")
        _warn(f"no validation split {data_args.eval_split!r}: evaluation during training is turned off")
    if eval_ is None and (training_args.eval_strategy != "no" or training_args.load_best_model_at_end):
        training_args = dataclasses.replace(training_args, eval_strategy="no", load_best_model_at_end=False,
                                            metric_for_best_model=None)
    if test is not None and len(test) == 0:
        _warn(f"the {data_args.test_split!r} split is empty: no test evaluation at the end")
        test = None
    return train, eval_, test, training_args


def missing_rows(dataset: Any, column: str) -> np.ndarray:
    """Positions of the rows whose `column` is null, read from Arrow's validity bitmaps (no image is decoded)."""
    import pyarrow as pa

    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    nulls = np.asarray(pa.chunked_array(table.column(column)).is_null(), dtype=bool)
    indices = getattr(dataset, "_indices", None)
    if indices is not None:  # a select / shuffle / shard view of the table
        nulls = nulls[np.asarray(indices.column(0).to_numpy(), dtype=np.int64)]
    return np.flatnonzero(nulls)


def _check_pairs(split: Any, split_name: str, name: str, data_args: Any) -> None:
    """Training and evaluation need an image and a report per study: refuse a split with rows that lack either
    (a ``--reports-only`` build, say) before any model or tokenizer is built."""
    if split is None or len(split) == 0 or not hasattr(split, "column_names"):
        return  # (a sized stand-in, as the size checks' tests pass, has no columns to check)
    for column, what in ((data_args.image_column, "image"), (data_args.text_column, "report")):
        if column not in split.column_names:
            flag = "--image_column" if what == "image" else "--text_column"
            raise ValueError(f"{name}: the {split_name!r} split has no {column!r} column (it has {split.column_names}); "
                             f"pass {flag} NAME")
        missing = missing_rows(split, column)
        if len(missing):
            first = int(missing[0])
            uid = f"uid {split.select_columns(['uid'])[first]['uid']}" if "uid" in split.column_names else f"row {first}"
            hint = (" (a `build-dataset --reports-only` build keeps studies without images: rebuild without it)"
                    if what == "image" else "")
            raise ValueError(f"{name}: {len(missing)} of {len(split)} studies in the {split_name!r} split have no "
                             f"{what} (first: {uid}); training needs an image and a report per study{hint}")


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


# -- how the run was launched ---------------------------------------------------------------------


def requested_processes(cmdline: Sequence[str] | None = None) -> int | None:
    """The ``--num_processes`` an ``accelerate launch`` parent process asked for (None when not launched by it).

    Example:
        >>> requested_processes(["python", "-m", "accelerate.commands.launch", "--num_processes", "2", "train.py"])
        2
    """
    if cmdline is None:
        try:
            raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        except OSError:
            return None
        cmdline = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    if not any("accelerate" in part for part in cmdline[:3]) or "launch" not in " ".join(cmdline[:4]):
        return None
    for i, part in enumerate(cmdline):
        for flag in ("--num_processes", "--num-processes"):
            if part == flag and i + 1 < len(cmdline):
                return int(cmdline[i + 1]) if cmdline[i + 1].isdigit() else None
            if part.startswith(flag + "="):
                value = part.split("=", 1)[1]
                return int(value) if value.isdigit() else None
    return None


def warn_about_launch(training_args: Any, *, cmdline: Sequence[str] | None = None) -> None:
    """Warn when `accelerate launch --num_processes N>1` started one process, and when gradient accumulation
    shrinks the contrastive batch (each SupCon/CLIP term sees one micro-batch, not the accumulated batch)."""
    world = max(1, int(training_args.world_size))
    asked = requested_processes(cmdline)
    if asked is not None and asked > 1 and world == 1:
        _warn(f"`accelerate launch` was asked for {asked} processes but started 1: without GPUs accelerate starts "
              f"several processes only with --multi_gpu (accelerate launch --multi_gpu --num_processes {asked} ...); "
              "this run trains in one process")
    steps = int(training_args.gradient_accumulation_steps)
    if steps > 1:
        micro = training_args.per_device_train_batch_size * world
        _warn(f"gradient_accumulation_steps={steps}: the optimiser sees {micro * steps} studies per step, but the "
              f"contrastive terms (SupCon, CLIP) compare only the {micro} of one micro-batch; raise "
              "--per_device_train_batch_size (or add processes) to give them more negatives")


# -- resume ---------------------------------------------------------------------------------------


def trainable_parameter_names(model: Any) -> list[str]:
    return sorted(name for name, parameter in model.named_parameters() if parameter.requires_grad)


class TrainableParametersCallback(TrainerCallback):
    """Writes the trained parameters' names into each checkpoint, so a resume can compare them with its own."""

    def __init__(self, model: Any) -> None:
        self.names = trainable_parameter_names(model)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            from ..atomic import write_json

            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                write_json(folder / TRAINABLE_PARAMETERS_NAME, {"trainable_parameters": self.names})


def _config_fields(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _short(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_resume(checkpoint: str | os.PathLike | None, model: Any, training_args: Any = None) -> None:
    """Refuse to resume from a checkpoint whose trained parameters or batch differ from this run's, naming the
    difference.

    The checkpoint's set is its ``trainable_parameters.json`` (written by `TrainableParametersCallback`); for an
    older checkpoint without it, the freeze fields of its config.json are compared with the model's config. The
    batch (per device, processes, accumulation) is compared with the checkpoint's ``trainer_state.json``: transformers
    resumes at the checkpoint's step, which with another batch is another point in the data and the schedule
    (a finished 20-epoch run resumed with a batch 8x smaller trained 19 more epochs).
    """
    if not checkpoint or checkpoint is True:
        return
    folder = Path(checkpoint)
    state_file = folder / "trainer_state.json"
    if training_args is not None and state_file.is_file():
        saved_batch = json.loads(state_file.read_text(encoding="utf-8")).get("train_batch_size")
        ours = int(training_args.per_device_train_batch_size)
        if saved_batch is not None and int(saved_batch) != ours:
            raise ValueError(f"--resume_from_checkpoint {folder}: the checkpoint trained with a batch of {saved_batch} "
                             f"per device, this run asks for {ours}; its step count would not line up with this run's "
                             f"epochs and schedule: resume with --per_device_train_batch_size {saved_batch}, or start a "
                             "new run in another --output_dir")
    ours = trainable_parameter_names(model)
    fix = ("resume with the checkpoint's freeze flags (its config.json: trainable_image_blocks, "
           "trainable_text_blocks) or start a new run in another --output_dir")
    saved_file = folder / TRAINABLE_PARAMETERS_NAME
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text(encoding="utf-8")).get("trainable_parameters", [])
        only_saved = sorted(set(saved) - set(ours))
        only_ours = sorted(set(ours) - set(saved))
        if only_saved or only_ours:
            parts = []
            if only_saved:
                parts.append(f"the checkpoint trained {len(only_saved)} tensor(s) this run freezes ({_short(only_saved)})")
            if only_ours:
                parts.append(f"this run trains {len(only_ours)} tensor(s) the checkpoint froze ({_short(only_ours)})")
            raise ValueError(f"--resume_from_checkpoint {folder}: " + "; ".join(parts) + f"; {fix}")
        return
    config = _config_fields(folder)
    keys = ("trainable_image_blocks", "trainable_text_blocks")
    differing = [f"{key} {config[key]} in the checkpoint, {getattr(model.config, key)} in this run"
                 for key in keys if key in config and config[key] != getattr(model.config, key, None)]
    if differing:
        raise ValueError(f"--resume_from_checkpoint {folder}: the trained parameters differ (" + "; ".join(differing)
                         + f"); {fix}")


# -- the end of a run -----------------------------------------------------------------------------


def write_run_summary(output_dir: Path, results: Mapping[str, Any], *, files: Sequence[str], data_note: str,
                      uploaded_to: str | None = None) -> str:
    """The text printed at the end of a run: where everything was saved and the final metrics as a table."""
    from ..training.progress import metrics_table

    columns = {}
    for prefix, title in (("eval", "validation"), ("test", "test")):
        values = {key[len(prefix) + 1:]: value for key, value in results.items() if key.startswith(prefix + "_")}
        if values:
            columns[title] = values
    lines = [f"Training finished ({data_note}).", f"Saved in {output_dir}:"]
    lines += [f"  {name}" for name in files if (output_dir / name).exists()]
    if "train_loss" in results:
        lines.append(f"Final training loss {results['train_loss']:.4g} after {results.get('epoch', '?')} epoch(s), "
                     f"{results.get('train_runtime', 0):.0f} s.")
    table = metrics_table(columns)
    if table:
        lines += ["", table, "", f"All metrics: {output_dir / 'all_results.json'}"]
    if uploaded_to:
        lines.append(f"Pushed to https://huggingface.co/{uploaded_to}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text

