"""Hyper-parameter search of the loss weights (the paper: 20 trials of Bayesian optimisation): space, objective, tables.

The loss weights live in the model config, not in ``TrainingArguments``, so
:meth:`cxr_mtclip.training.CxrMtClipTrainer.hyperparameter_search` hands each trial's parameters to ``model_init``
(a plain ``dict``) and only forwards to ``TrainingArguments`` the keys that are its fields. The objective
(:func:`default_objective`) is the mean of the image->text and text->image accuracy@1 on the validation split in
the cross-modal protocol (image queries against report embeddings and back: :data:`OBJECTIVE_PROTOCOL`, not the
paper's fused gallery), maximised with a seeded optuna TPE sampler over :data:`HP_SEARCH_RANGES`.
``best_hyperparameters.json`` (:func:`best_hyperparameters_record`) names that metric and protocol.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text, write_json
from ..losses import LOSS_TERMS

__all__ = [
    "BEST_HP_NAME",
    "HP_SEARCH_RANGES",
    "OBJECTIVE_DEFINITION",
    "OBJECTIVE_METRIC",
    "OBJECTIVE_PROTOCOL",
    "TRIAL_TABLE_NAMES",
    "best_hyperparameters_record",
    "default_hp_space",
    "default_objective",
    "format_trial_table",
    "save_trial_table",
    "trial_params",
    "trial_table",
]

HP_SEARCH_RANGES: dict[str, tuple[float, float]] = {
    "bce_weight": (0.1, 1.0),
    "supcon_weight": (0.2, 2.0),
    "clip_weight": (0.2, 2.0),
}
# CxrMtClipConfig fields that a trial (or --flag) may override without changing the architecture.
TRIAL_TABLE_NAMES = ("hpo_trials.csv", "hpo_trials.json")
BEST_HP_NAME = "best_hyperparameters.json"
OBJECTIVE_PROTOCOL = "cross-modal"
"""Protocol of the HPO objective (and of the Trainer's evaluation): image queries vs report embeddings and back."""
OBJECTIVE_METRIC = f"eval_{OBJECTIVE_PROTOCOL}/mean_accuracy@1"
"""The objective as the Trainer logs it (`CxrMtClipTrainingArguments`' ``MEAN_ACCURACY_KEY`` with the eval prefix)."""
OBJECTIVE_DEFINITION = (
    "mean of validation image->text and text->image accuracy@1, cross-modal protocol (image queries ranked against "
    "report embeddings and report queries against image embeddings; not the paper's fused gallery)"
)


def default_hp_space(trial: Any) -> dict[str, float]:
    """The paper's search space: bce_weight in [0.1, 1], supcon_weight in [0.2, 2], clip_weight in [0.2, 2] (uniform)."""
    return {name: trial.suggest_float(name, low, high) for name, (low, high) in HP_SEARCH_RANGES.items()}


def default_objective(metrics: Mapping[str, float]) -> float:
    """HPO objective (maximised): mean of image->text and text->image accuracy@1 on the validation split.

    The Trainer's evaluation ranks cross-modally (:data:`OBJECTIVE_PROTOCOL`) and its keys say so, so this is
    the cross-modal accuracy. Accepts evaluation metrics with or without the `eval_` prefix.

    Example:
        >>> default_objective({"eval_cross-modal/image_to_text/accuracy@1": 0.5,
        ...                    "eval_cross-modal/text_to_image/accuracy@1": 0.25})
        0.375
    """
    values = []
    for direction in ("image_to_text", "text_to_image"):
        key = f"{OBJECTIVE_PROTOCOL}/{direction}/accuracy@1"
        value = metrics.get(f"eval_{key}", metrics.get(key))
        if value is None:
            raise ValueError(f"metrics have no 'eval_{key}'; got {sorted(metrics)} (is compute_metrics set?)")
        values.append(float(value))
    return sum(values) / 2



def best_hyperparameters_record(objective: float, trial: int, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``best_hyperparameters.json``: the best trial's values and what its objective measured.

    Example:
        >>> best_hyperparameters_record(0.5, 3, {"clip_weight": 0.4})["protocol"]
        'cross-modal'
    """
    return {
        "objective": objective,
        "objective_metric": OBJECTIVE_METRIC,
        "protocol": OBJECTIVE_PROTOCOL,
        "objective_definition": OBJECTIVE_DEFINITION,
        "trial": int(trial),
        "hyperparameters": dict(hyperparameters),
    }


def trial_params(trial: Any, hp_space: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """A trial's hyper-parameters: a dict as is; an optuna trial through `hp_space` (suggesting repeats the value)."""
    if trial is None:
        return {}
    if isinstance(trial, Mapping):
        return dict(trial)
    if hasattr(trial, "suggest_float"):
        return dict((hp_space or default_hp_space)(trial))
    raise ValueError(f"expected a dict of hyper-parameters or an optuna trial, got {type(trial).__name__}")



def trial_table(study: Any) -> list[dict[str, Any]]:
    """One row per optuna trial: number, state, objective, parameters and the main evaluation metrics."""
    rows = []
    keep = ("eval_loss", f"eval_{OBJECTIVE_PROTOCOL}/image_to_text/accuracy@1",
            f"eval_{OBJECTIVE_PROTOCOL}/text_to_image/accuracy@1") + tuple(
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
    write_json(json_path, list(rows), allow_nan=True, sort_keys=True)
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

