"""Paper-compatible label metrics: the readings of Tables II-III of arXiv 2601.05399 that reproduce its numbers.

The paper names its label metrics (Precision@k, F1 score, ROC AUC, mAP) without defining them. The standard
definitions (`cxr_mtclip.evaluation.metrics`: fraction of the top k, a top-5 vote, per-query AUC/AP of the
ranking) cannot produce the published pattern; these readings can, and are computed beside them under their own
keys (the evidence, and where it is weak: ``docs/metrics.md``). Every key is prefixed by its direction
(``image_to_text/label_hit_rate@5``) and computed in whatever protocol the ranking came from.

- ``label_hit_rate@k``: fraction of queries with at least one item of the query's label in the top k (the
  paper's "Precision@k"; strong evidence).
- ``f1@1``: binary F1, abnormal = 1 positive, of the top-1 item's label against the query's label (the paper's
  "F1 score"; strong evidence against class-averaged F1, good against a top-5 vote).
- ``roc_auc_top1_score`` / ``map_top1_score``: ROC AUC / average precision of each query's top-1 similarity as
  a score for the query's own label (abnormal positive), one number over the queries (the paper's "ROC AUC" and
  "mAP": the only family found that reproduces all six published columns; which score is used is not
  identifiable, hence the alternative below). Not a retrieval metric: 0.5 = abnormal and normal queries find
  equally close matches, < 0.5 = normal queries find closer ones.
- ``roc_auc_top10_mean_score`` / ``map_top10_mean_score``: the same with the mean of the top-10 similarities.

Pure numpy; imports only `cxr_mtclip.evaluation.statistics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from .statistics import average_precision_rows, roc_auc_rows

__all__ = [
    "PAPER_COMPATIBLE_KEYS",
    "QUERY_SCORE_READINGS",
    "label_hit_rates",
    "query_label_score_metrics",
    "query_score_statistic",
    "query_scores",
]

QUERY_SCORE_READINGS: dict[str, int] = {"top1": 1, "top10_mean": 10}
"""Per-query similarity scores tried as the paper's ROC AUC / mAP score: name -> number of top scores averaged."""

PAPER_COMPATIBLE_KEYS: dict[str, str] = {
    "precision@k": "label_hit_rate@k",
    "f1": "f1@1",
    "roc_auc": "roc_auc_top1_score",
    "map": "map_top1_score",
}
"""Standard metric -> the paper-compatible key that sits beside it (the best-supported reading of the paper)."""

_STATISTICS: dict[str, Callable[..., np.ndarray]] = {"roc_auc": roc_auc_rows, "map": average_precision_rows}


def label_hit_rates(relevant: np.ndarray, ks: Iterable[int]) -> dict[int, np.ndarray]:
    """Per query, 1.0 when at least one of its top k items is relevant (has the query's label), else 0.0.

    Args:
        relevant: (queries, ranked items) booleans in rank order.

    Example:
        >>> label_hit_rates(np.array([[True, False, False], [False, False, True]]), (1, 3))[3].tolist()
        [1.0, 1.0]
    """
    relevant = np.asarray(relevant, dtype=bool)
    return {int(k): relevant[:, :k].any(axis=1).astype(np.float64) for k in ks}


def query_scores(sorted_scores: np.ndarray, n_candidates: int) -> dict[str, np.ndarray]:
    """Each query's retrieval score of every reading of `QUERY_SCORE_READINGS` its ranking is long enough for.

    Args:
        sorted_scores: (queries, ranked items) similarities, descending.
        n_candidates: items each query really ranks (entries beyond it are excluded rows).

    Example:
        >>> sorted(query_scores(np.array([[0.9, 0.5]]), 2))
        ['top1']
    """
    return {name: np.asarray(sorted_scores[:, :depth], dtype=np.float64).mean(axis=1)
            for name, depth in QUERY_SCORE_READINGS.items() if depth <= n_candidates}


def query_score_statistic(key: str) -> tuple[str, Callable[..., np.ndarray]] | None:
    """``(reading, statistic)`` of a key such as ``roc_auc_top1_score``; None for any other key.

    Example:
        >>> query_score_statistic("map_top10_mean_score")[0]
        'top10_mean'
    """
    for family, statistic in _STATISTICS.items():
        for reading in QUERY_SCORE_READINGS:
            if key == f"{family}_{reading}_score":
                return reading, statistic
    return None


def query_label_score_metrics(query_labels: np.ndarray, scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    """ROC AUC and average precision of each score reading for the query labels (1 = abnormal positive).

    NaN when the queries hold one class only (AUC) or no abnormal query (AP).

    Example:
        >>> query_label_score_metrics(np.array([0, 1]), {"top1": np.array([0.9, 0.7])})["roc_auc_top1_score"]
        0.0
    """
    labels = np.asarray(query_labels)
    out: dict[str, float] = {}
    for reading, values in scores.items():
        for family, statistic in _STATISTICS.items():
            out[f"{family}_{reading}_score"] = float(statistic(labels, np.asarray(values, dtype=np.float64))[0])
    return out
