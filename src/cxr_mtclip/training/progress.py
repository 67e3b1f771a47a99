"""What a training run prints: labelled progress bars, one short line per log, a summary table at the end.

transformers' `ProgressCallback` draws unlabelled bars and prints every log as a dict (40 keys after an
evaluation). `LabelledProgressCallback` keeps its bars, labels them ("training", "evaluating") and writes each log
as one line with the loss terms or the headline metrics; the full metrics go to the result JSONs.
`metrics_table` formats final metrics as a table (rows metrics, columns splits) for the end of a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import has_length

__all__ = ["HEADLINE_METRICS", "LabelledProgressCallback", "format_log_line", "metrics_table"]

HEADLINE_METRICS = (
    ("loss", "loss"),
    ("cross-modal/image_to_text/accuracy@1", "image->text Accuracy@1 (cross-modal)"),
    ("cross-modal/image_to_text/accuracy@5", "image->text Accuracy@5 (cross-modal)"),
    ("cross-modal/text_to_image/accuracy@1", "text->image Accuracy@1 (cross-modal)"),
    ("cross-modal/text_to_image/accuracy@5", "text->image Accuracy@5 (cross-modal)"),
    ("classification/roc_auc", "classification ROC AUC"),
    ("classification/f1", "classification F1"),
)
_SHORT = {"cross-modal/image_to_text/accuracy@1": "i2t@1", "cross-modal/image_to_text/accuracy@5": "i2t@5",
          "cross-modal/text_to_image/accuracy@1": "t2i@1", "cross-modal/text_to_image/accuracy@5": "t2i@5", "classification/roc_auc": "AUC", "classification/f1": "F1"}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def format_log_line(logs: Mapping[str, Any], step: int, max_steps: int) -> str | None:
    """One line for a Trainer log: the loss and its terms during training, headline metrics after an evaluation.

    Example:
        >>> format_log_line({"loss": 1.5, "bce_loss": 0.7, "learning_rate": 1e-5, "epoch": 1.0}, 10, 40)
        'step 10/40 (epoch 1): loss 1.5 | bce 0.7 | lr 1e-05'
    """
    where = f"step {step}/{max_steps}" + (f" (epoch {logs['epoch']:.3g})" if isinstance(logs.get("epoch"), float) else "")
    if "loss" in logs:
        terms = " ".join(f"{name.removesuffix('_loss')} {_number(logs[name])}"
                         for name in ("bce_loss", "supcon_loss", "clip_loss", "multilabel_loss") if name in logs)
        parts = [f"{where}: loss {_number(logs['loss'])}"] + ([terms] if terms else [])
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.3g}")
        return " | ".join(parts)
    prefix = next((p for p in ("eval", "test") if f"{p}_loss" in logs or any(k.startswith(f"{p}_") for k in logs)), None)
    if prefix is None or "train_runtime" in logs:
        return None  # the end-of-training log: the run's summary table says it better
    shown = [f"{_SHORT.get(key, key)} {_number(logs[f'{prefix}_{key}'])}"
             for key, _ in HEADLINE_METRICS if f"{prefix}_{key}" in logs]
    return f"{prefix} at {where}: " + ", ".join(shown) if shown else None


class LabelledProgressCallback(ProgressCallback):
    """transformers' progress bars with labels, and one line per log instead of its dict."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True)
        self.current_step = 0

    def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and has_length(eval_dataloader):
            if self.prediction_bar is None:
                self.prediction_bar = tqdm(total=len(eval_dataloader), desc="evaluating", unit="batch",
                                           leave=self.training_bar is None, dynamic_ncols=True)
            self.prediction_bar.update(1)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        line = format_log_line(logs, state.global_step, state.max_steps)
        if line is not None:
            (self.training_bar or tqdm).write(line)


def metrics_table(columns: Mapping[str, Mapping[str, Any]], rows: Sequence[tuple[str, str]] = HEADLINE_METRICS) -> str:
    """A plain-text table: one row per metric present in any column, one column per split.

    `columns` maps a split name to its metrics without prefix (``{"validation": {"loss": 0.3, ...}}``).

    Example:
        >>> print(metrics_table({"test": {"loss": 0.5}}))
        metric  test
        loss    0.5
    """
    present = [(key, label) for key, label in rows if any(key in values for values in columns.values())]
    if not present:
        return ""
    header = ["metric", *columns]
    body = [[label, *(_number(values[key]) if key in values else "-" for values in columns.values())]
            for key, label in present]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *body])
