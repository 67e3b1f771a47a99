"""The trainer's side of the multi-label findings (beyond the paper): data checks, class weights, eval metrics.

`CxrMtClipTrainer` calls these; they are kept apart so the trainer reads as the paper's recipe. The column is
``finding_labels`` (`cxr_mtclip.data.findings`); the model's findings are ``config.finding_names``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.findings import FINDING_NAMES, finding_multi_hot
from ..evaluation.finding_metrics import finding_classification_metrics, finding_retrieval_result

__all__ = ["FINDING_COLUMN", "apply_finding_class_weights", "check_finding_data", "finding_eval_metrics"]

FINDING_COLUMN = "finding_labels"


def _column_names(dataset: Any) -> list[str] | None:
    """The ``ClassLabel`` names of a dataset's finding column; None without the column or names."""
    features = getattr(dataset, "features", None)
    if not features or FINDING_COLUMN not in features:
        return None
    return list(getattr(getattr(features[FINDING_COLUMN], "feature", None), "names", None) or []) or None


def check_finding_data(model: Any, datasets: Sequence[Any]) -> None:
    """Raise ValueError when the data cannot feed the model's multi-label head or terms.

    A training run whose config switches a multi-label term on needs a ``finding_labels`` column, and a column
    stored as ``ClassLabel`` ids must use the model's ``finding_names`` in the same order (ids would else name
    other findings).
    """
    config = getattr(model, "config", None)
    names = getattr(config, "finding_names", None)
    if config is None or names is None:
        return
    active = config.finding_bce_weight > 0 or config.multilabel_supcon_weight > 0
    for dataset in datasets:
        if dataset is None or not hasattr(dataset, "column_names"):
            continue
        if FINDING_COLUMN not in dataset.column_names:
            if active:
                raise ValueError(
                    f"the model's multi-label terms are on (finding_bce_weight={config.finding_bce_weight}, "
                    f"multilabel_supcon_weight={config.multilabel_supcon_weight}) but the data has no "
                    f"'{FINDING_COLUMN}' column; rebuild it with this version (dataset_scripts/build_openi.py)"
                )
            continue
        stored = _column_names(dataset)
        if stored is not None and stored != list(names):
            raise ValueError(
                f"the data's '{FINDING_COLUMN}' ClassLabel names differ from the model's config.finding_names "
                f"({len(stored)} vs {len(names)} findings, first difference at "
                f"{next((i for i, (a, b) in enumerate(zip(stored, names)) if a != b), min(len(stored), len(names)))})"
            )


def apply_finding_class_weights(model: Any, dataset: Any) -> None:
    """Give the model its finding-BCE class weights from `dataset` (the training split), when its config asks."""
    config = getattr(model, "config", None)
    if getattr(config, "finding_class_balance", None) is None or not hasattr(model, "set_finding_class_weights"):
        return
    if dataset is None or FINDING_COLUMN not in getattr(dataset, "column_names", ()):
        raise ValueError(f"config.finding_class_balance={config.finding_class_balance!r} needs a training split "
                         f"with a '{FINDING_COLUMN}' column")
    hot, known = finding_multi_hot(dataset[FINDING_COLUMN], config.finding_names)
    model.set_finding_class_weights(torch.from_numpy(hot), torch.from_numpy(known))


def finding_eval_metrics(
    image_embeds: np.ndarray,
    text_embeds: np.ndarray,
    finding_labels: np.ndarray,
    finding_known: np.ndarray,
    finding_logits: np.ndarray | None = None,
    ks: Sequence[int] = (1, 3, 5, 10),
) -> dict[str, float]:
    """The trainer's finding metrics of one evaluation: cross-modal macro/micro averages, Jaccard, head AUC.

    Per-finding values are left out of the training logs (`cxr-mtclip evaluate` reports them, with intervals).
    Keys as `cxr_mtclip.evaluation.finding_metrics` (``image_to_text/finding_precision@5/macro``, ...).

    Example:
        >>> e = np.eye(3)
        >>> m = finding_eval_metrics(e, e, np.array([[1, 0], [0, 1], [1, 1]]), np.ones(3, bool), ks=(1,))
        >>> m["image_to_text/finding_precision@1/macro"]
        1.0
    """
    hot = np.asarray(finding_labels) > 0.5
    known = np.asarray(finding_known).reshape(-1) > 0.5
    names = list(FINDING_NAMES) if hot.shape[1] == len(FINDING_NAMES) else [f"finding_{i}" for i in range(hot.shape[1])]
    usable = tuple(k for k in ks if k <= int(known.sum()))
    metrics: dict[str, float] = {}
    if not usable:
        return metrics
    scores = np.asarray(image_embeds, dtype=np.float64) @ np.asarray(text_embeds, dtype=np.float64).T
    for direction, matrix in (("image_to_text", scores), ("text_to_image", scores.T)):
        result = finding_retrieval_result(hot, hot, names=names, scores=matrix, query_known=known, gallery_known=known,
                                          ks=usable, direction=direction)
        metrics.update({k: v for k, v in result.metrics.items() if k.endswith(("/macro", "/micro")) or "jaccard" in k})
    if finding_logits is not None and known.any():
        head = finding_classification_metrics(finding_logits, hot, names=names, known=known)
        metrics.update({k: v for k, v in head.items() if k.endswith(("/macro", "/micro"))})
    return metrics
