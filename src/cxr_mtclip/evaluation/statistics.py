"""The statistics every metric and interval is built from, each written once: ROC AUC, F1, NaN-aware means, bootstrap.

Pure numpy; imports nothing from `cxr_mtclip`. Every function works row-wise on 2-D arrays (one row per query,
or per bootstrap resample), so the same code scores one query, a block of queries and a thousand resamples.
Binary labels: 0 = normal / irrelevant, 1 = abnormal / relevant (the positive class). Definitions:
``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "average_precision_rows",
    "binary_f1",
    "bootstrap_ci",
    "f1_rows",
    "nanmean",
    "nanmean_rows",
    "roc_auc_rows",
    "seed_query_bootstrap",
]


def nanmean(values: Any) -> float:
    """Mean of the non-NaN entries; NaN when there are none.

    Example:
        >>> nanmean([1.0, float("nan"), 3.0])
        2.0
    """
    array = np.asarray(values, dtype=np.float64)
    kept = array[~np.isnan(array)]
    return float(kept.mean()) if kept.size else math.nan


def nanmean_rows(values: Any) -> np.ndarray:
    """Mean of the non-NaN entries of each row; NaN for a row with none.

    Example:
        >>> nanmean_rows([[1.0, float("nan")], [float("nan"), float("nan")]]).tolist()
        [1.0, nan]
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    present = ~np.isnan(values)
    counts = present.sum(axis=1)
    sums = np.where(present, values, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def f1_rows(labels: Any, predicted: Any) -> np.ndarray:
    """Binary F1 (positive = 1) of each row; NaN where there is no positive label and no positive prediction.

    Example:
        >>> f1_rows([1, 1, 0, 0], [1, 0, 1, 0]).tolist()
        [0.5]
    """
    labels, predicted = np.atleast_2d(labels), np.atleast_2d(predicted)
    true_pos = ((labels == 1) & (predicted == 1)).sum(axis=1)
    false_pos = ((labels == 0) & (predicted == 1)).sum(axis=1)
    false_neg = ((labels == 1) & (predicted == 0)).sum(axis=1)
    denominator = 2 * true_pos + false_pos + false_neg
    return np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), np.nan)


def binary_f1(labels: Any, predicted: Any) -> float:
    """Binary F1 of one set of predictions (see `f1_rows`).

    Example:
        >>> binary_f1([1, 1, 0], [1, 1, 1])
        0.8
    """
    return float(f1_rows(np.ravel(labels), np.ravel(predicted))[0])


def roc_auc_rows(labels: Any, scores: Any, valid: Any = None) -> np.ndarray:
    """ROC AUC of each row: P(score of a 1 > score of a 0) + 0.5 P(tie); NaN for a row without both labels.

    Args:
        labels: (rows, n) or (n,) 0/1 labels.
        scores: the same shape; higher means "more likely 1".
        valid: optional boolean mask of the same shape; entries where it is False take no part.

    Scores are sorted once per row (descending, stable: rows that arrive sorted cost a linear pass) and
    each tie group of equal scores counts one half per (positive, negative) pair inside it, as the
    trapezoidal ROC curve does.

    Example:
        >>> float(roc_auc_rows([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])[0])
        0.75
    """
    labels = np.atleast_2d(np.asarray(labels))
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if labels.shape != scores.shape:
        raise ValueError(f"labels have shape {labels.shape} but scores have shape {scores.shape}")
    positive, negative = labels == 1, labels == 0
    if valid is not None:
        valid = np.atleast_2d(np.asarray(valid, dtype=bool))
        positive, negative = positive & valid, negative & valid
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    positive = np.take_along_axis(positive, order, axis=1)
    negative = np.take_along_axis(negative, order, axis=1)
    n = sorted_scores.shape[1]
    positions = np.arange(n)
    new_group = np.ones(sorted_scores.shape, dtype=bool)
    new_group[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    group_start = np.maximum.accumulate(np.where(new_group, positions, 0), axis=1)
    group_last = np.ones(sorted_scores.shape, dtype=bool)
    group_last[:, :-1] = new_group[:, 1:]
    group_end = np.minimum.accumulate(np.where(group_last, positions, n)[:, ::-1], axis=1)[:, ::-1]
    negatives_so_far = np.cumsum(negative, axis=1)
    at_least = np.take_along_axis(negatives_so_far, group_end, axis=1)  # negatives scoring >= this item
    above = np.where(group_start > 0, np.take_along_axis(negatives_so_far, np.maximum(group_start - 1, 0), axis=1), 0)
    n_pos, n_neg = positive.sum(axis=1), negative.sum(axis=1)
    wins = (n_neg[:, None] - at_least) + 0.5 * (at_least - above)
    total = (wins * positive).sum(axis=1)
    defined = (n_pos > 0) & (n_neg > 0)
    return np.where(defined, total / np.maximum(n_pos * n_neg, 1), np.nan)


def average_precision_rows(labels: Any, scores: Any) -> np.ndarray:
    """Average precision of each row, scikit-learn's step-wise definition; NaN for a row without a 1.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, descending (no interpolation), as
    ``sklearn.metrics.average_precision_score``: items of one tie group enter the ranking together, so each
    positive counts the precision at the end of its tie group.

    Example:
        >>> round(float(average_precision_rows([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])[0]), 4)
        0.8333
    """
    labels = np.atleast_2d(np.asarray(labels))
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if labels.shape != scores.shape:
        raise ValueError(f"labels have shape {labels.shape} but scores have shape {scores.shape}")
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    positive = np.take_along_axis(labels == 1, order, axis=1)
    n = sorted_scores.shape[1]
    positions = np.arange(n)
    group_last = np.ones(sorted_scores.shape, dtype=bool)
    group_last[:, :-1] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    group_end = np.minimum.accumulate(np.where(group_last, positions, n)[:, ::-1], axis=1)[:, ::-1]
    true_so_far = np.cumsum(positive, axis=1)
    precision_at_group_end = np.take_along_axis(true_so_far, group_end, axis=1) / (group_end + 1)
    n_pos = positive.sum(axis=1)
    total = (precision_at_group_end * positive).sum(axis=1)
    return np.where(n_pos > 0, total / np.maximum(n_pos, 1), np.nan)


def seed_query_bootstrap(
    per_seed: Sequence[Sequence[Any]],
    statistic: Callable[..., np.ndarray] = nanmean_rows,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float, list[float]]:
    """Mean over seeds of a per-query statistic, with a two-level percentile bootstrap interval.

    Args:
        per_seed: for each training seed, the per-query arrays the statistic reads (all of length Q; query
            ``i`` is the same test study for every seed).
        statistic: maps arrays of shape (B, Q), one per input column, to B values (default: mean of the
            non-NaN entries, i.e. the metric's own aggregation; `f1_rows`, `roc_auc_rows` fit as they are).

    Each of the `n_boot` resamples draws the seeds with replacement and, independently, the Q queries with
    replacement (one draw shared by the drawn seeds: they were evaluated on the same test set), and averages
    the statistic over the drawn seeds. The same `seed` gives the same draws for every metric and variant, so
    intervals of different variants come from paired resamples. Returns ``(estimate, lo, hi, per_seed_values)``;
    ``estimate`` is the mean over seeds of the full-sample statistic; resamples whose statistic is NaN are
    dropped. With one seed this is the usual percentile bootstrap over queries (`bootstrap_ci`).

    Example:
        >>> est, lo, hi, values = seed_query_bootstrap([[np.zeros(50)], [np.ones(50)]], n_boot=200)
        >>> est, values
        (0.5, [0.0, 1.0])
    """
    if not per_seed:
        raise ValueError("per_seed is empty; expected one tuple of per-query arrays per seed")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    alpha = float(alpha)
    columns = [[np.asarray(a) for a in arrays] for arrays in per_seed]
    n_queries = {a.shape[0] for arrays in columns for a in arrays}
    if len(n_queries) != 1 or any(a.ndim != 1 for arrays in columns for a in arrays):
        raise ValueError(f"every per-query array must be 1-D with the same length; got lengths {sorted(n_queries)}")
    q = n_queries.pop()
    if q == 0:
        raise ValueError("per-query arrays are empty")
    per_seed_values = [float(statistic(*[a[None, :] for a in arrays])[0]) for arrays in columns]
    finite = [v for v in per_seed_values if not math.isnan(v)]
    estimate = float(np.mean(finite)) if finite else math.nan
    rng = np.random.default_rng(seed)
    query_draws = rng.integers(0, q, size=(n_boot, q))
    seed_draws = rng.integers(0, len(columns), size=(n_boot, len(columns)))
    by_seed = np.column_stack([statistic(*[a[query_draws] for a in arrays]) for arrays in columns])
    boot = nanmean_rows(np.take_along_axis(by_seed, seed_draws, axis=1))
    boot = boot[~np.isnan(boot)]
    if boot.size == 0:
        return estimate, math.nan, math.nan, per_seed_values
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return estimate, float(lo), float(hi), per_seed_values


def bootstrap_ci(
    per_query_values: Any,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    statistic: Callable[..., np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """Percentile bootstrap over queries: ``(estimate, lo, hi)`` with a ``1 - alpha`` interval.

    The one-seed case of `seed_query_bootstrap`.

    Args:
        per_query_values: 1-D array of per-query values (NaN entries = skipped queries), or a 2-D array
            (queries x columns) whose rows are resampled together, for a ``statistic`` such as `f1_rows`
            that needs several columns per query.
        statistic: maps the columns, each of shape (resamples, queries), to one value per resample;
            default the mean of the non-NaN values (`nanmean_rows`).

    Example:
        >>> bootstrap_ci([1.0, 1.0, 1.0], n_boot=10)
        (1.0, 1.0, 1.0)
    """
    try:
        values = np.asarray(per_query_values, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"per_query_values must be numeric; got {type(per_query_values).__name__}") from exc
    if values.ndim not in (1, 2) or values.shape[0] == 0:
        raise ValueError(f"per_query_values must be a non-empty 1-D or 2-D array; got shape {values.shape}")
    if statistic is None and values.ndim != 1:
        raise ValueError("2-D per_query_values need a statistic that reduces a resample to a float")
    columns = [values] if values.ndim == 1 else [values[:, j] for j in range(values.shape[1])]
    estimate, lo, hi, _ = seed_query_bootstrap([columns], statistic or nanmean_rows, n_boot=n_boot, alpha=alpha,
                                               seed=seed)
    return estimate, lo, hi
