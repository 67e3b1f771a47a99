"""Finding-level retrieval and classification metrics (numpy in, floats out).

Companion of :mod:`cxr_mtclip.data.findings` (multi-label study labels). This module imports only
`cxr_mtclip.evaluation.statistics` (the package's one bootstrap, AUC and NaN-mean; pure numpy). Definitions, with the conventions below, are repeated in
``docs/findings.md``.

Inputs are score (similarity) matrices or ranked gallery indices, multi-hot finding matrices
(``(n, n_findings)``, 0/1 or bool) and "known" masks (``(n,)`` bool; False = the study's findings
are unknown, e.g. OpenI's ``No Indexing``).

Conventions:

* **Unknown gallery items** are removed from every ranking before the top k is taken (they are
  neither hits nor misses); **unknown queries** are skipped (NaN per-query values).
* **Queries with no finding** (known, empty set; e.g. normal studies) enter no per-finding value and
  no macro/micro average (there is no finding to retrieve), but they do enter ``finding_jaccard@k``:
  the Jaccard similarity of two empty sets is 1, so a normal query scores 1 for each retrieved item
  with no finding and 0 for each item with one.
* **Ranking**: descending score; ties broken by gallery index, lower first (stable sort). With
  ``exclude_self`` the query's own gallery row (same index) is removed too.
* **Per finding f**: averages over the known queries carrying f; NaN when no query carries f.
  **macro** = unweighted mean over the findings that have at least one query; **micro** = mean over
  all (query, finding) pairs with the query carrying the finding (frequent findings weigh more).
* **Bootstrap**: percentile intervals by :func:`cxr_mtclip.evaluation.statistics.bootstrap_ci`, resampling
  queries (studies for the classification metrics) with one seed for every key (a paired
  bootstrap); a key with fewer than 2 contributing queries gets ``(estimate, nan, nan)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .statistics import bootstrap_ci, nanmean, nanmean_rows, roc_auc_rows

__all__ = [
    "FindingRetrievalResult",
    "bidirectional_finding_retrieval_metrics",
    "finding_bootstrap_cis",
    "finding_classification_bootstrap_cis",
    "finding_classification_metrics",
    "finding_query_result",
    "finding_retrieval_result",
    "macro_rows",
    "micro_rows",
]

_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class FindingRetrievalResult:
    """Aggregate finding metrics of one direction plus the per-query values behind them.

    ``per_query_finding[stem]`` is an ``(n_queries, n_findings)`` float array (NaN where the query is
    unknown or does not carry the finding); ``metrics[f"{stem}/{name}"]`` is the mean of its column,
    ``metrics[f"{stem}/macro"]`` the mean of those column means, ``metrics[f"{stem}/micro"]`` (when
    present) the mean of all its non-NaN entries. ``per_query[key]`` is a 1-D per-query array whose
    NaN-skipping mean is ``metrics[key]`` (``finding_jaccard@k``).
    """

    metrics: dict[str, float]
    per_query_finding: dict[str, np.ndarray]
    per_query: dict[str, np.ndarray]
    names: tuple[str, ...]
    ks: tuple[int, ...]
    n_queries: int
    n_gallery: int
    n_unknown_queries: int
    n_no_finding_queries: int


# ----------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------


def finding_retrieval_result(
    query_findings: Any,
    gallery_findings: Any,
    *,
    names: Sequence[str],
    scores: Any = None,
    ranked: Any = None,
    query_known: Any = None,
    gallery_known: Any = None,
    ks: Iterable[int] = (1, 5, 10),
    direction: str = "image_to_text",
    exclude_self: bool = False,
) -> FindingRetrievalResult:
    """Finding precision@k, hit rate@k and finding-set Jaccard@k of one retrieval direction.

    Args:
        query_findings: ``(n_queries, n_findings)`` multi-hot findings of the queries.
        gallery_findings: ``(n_gallery, n_findings)`` multi-hot findings of the gallery items.
        names: the ``n_findings`` finding names (the last part of each per-finding key).
        scores: ``(n_queries, n_gallery)`` similarity matrix (higher = more similar); or
        ranked: ``(n_queries, m)`` gallery indices in rank order (e.g. FAISS ``I``; entries outside
            ``[0, n_gallery)`` such as FAISS's -1 are skipped). Exactly one of the two.
        query_known, gallery_known: ``(n,)`` bool masks (default: all known).
        ks: cut-offs; each must be at most the number of known candidates of every query.
        direction: key prefix, e.g. ``"image_to_text"``.
        exclude_self: drop gallery row ``i`` from query ``i``'s ranking (same-modality search).

    Per query ``q`` (known) with findings ``Y_q`` and top-k items ``T``:
        ``finding_precision@k/f`` = ``|{j in T : f in Y_j}| / k`` for ``f in Y_q``;
        ``finding_hit_rate@k/f`` = 1 if some ``j in T`` carries ``f`` (``f in Y_q``);
        ``finding_jaccard@k`` = mean over ``j in T`` of ``|Y_q & Y_j| / |Y_q | Y_j|`` (1 for two empty sets).

    Keys: ``{direction}/finding_precision@k/{name|macro|micro}``,
    ``{direction}/finding_hit_rate@k/{name|macro|micro}``, ``{direction}/finding_jaccard@k``.

    Raises:
        ValueError: bad shapes or values, both or neither of ``scores``/``ranked``, a ``k`` larger
            than a query's known candidates, a ranked row with fewer than ``max(ks)`` usable items.

    Example:
        >>> import numpy as np
        >>> y = np.array([[1, 0], [1, 0], [0, 1]])
        >>> r = finding_retrieval_result(y, y, names=["a", "b"], scores=np.eye(3), ks=(1,))
        >>> r.metrics["image_to_text/finding_precision@1/a"], r.metrics["image_to_text/finding_jaccard@1"]
        (1.0, 1.0)
    """
    names = _as_names(names)
    q_hot = _as_multi_hot(query_findings, "query_findings", n_findings=len(names))
    g_hot = _as_multi_hot(gallery_findings, "gallery_findings", n_findings=len(names))
    n_queries, n_gallery = q_hot.shape[0], g_hot.shape[0]
    q_known = _as_known(query_known, n_queries, "query_known")
    g_known = _as_known(gallery_known, n_gallery, "gallery_known")
    ks = _as_ks(ks)
    top = _top_indices(scores, ranked, g_known, n_queries, n_gallery, max(ks), bool(exclude_self))

    precision: dict[int, np.ndarray] = {}
    hit: dict[int, np.ndarray] = {}
    jaccard: dict[int, np.ndarray] = {}
    carries = q_hot & q_known[:, None]
    q_sizes = q_hot.sum(axis=1)
    for k in ks:
        retrieved = g_hot[top[:, :k]]  # (n_queries, k, n_findings)
        precision[k] = np.where(carries, retrieved.mean(axis=1), np.nan)
        hit[k] = np.where(carries, retrieved.any(axis=1).astype(np.float64), np.nan)
        intersection = (retrieved & q_hot[:, None, :]).sum(axis=2)
        union = q_sizes[:, None] + retrieved.sum(axis=2) - intersection
        pair_jaccard = np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
        jaccard[k] = np.where(q_known, pair_jaccard.mean(axis=1), np.nan)

    per_query_finding: dict[str, np.ndarray] = {}
    per_query: dict[str, np.ndarray] = {}
    metrics: dict[str, float] = {}
    for family, values in (("finding_precision", precision), ("finding_hit_rate", hit)):
        for k in ks:
            stem = f"{direction}/{family}@{k}"
            per_query_finding[stem] = values[k]
            metrics.update(_finding_aggregates(stem, values[k], names, micro=True))
    for k in ks:
        key = f"{direction}/finding_jaccard@{k}"
        per_query[key] = jaccard[k]
        metrics[key] = nanmean(jaccard[k])
    return FindingRetrievalResult(
        metrics=metrics,
        per_query_finding=per_query_finding,
        per_query=per_query,
        names=names,
        ks=ks,
        n_queries=n_queries,
        n_gallery=n_gallery,
        n_unknown_queries=int((~q_known).sum()),
        n_no_finding_queries=int((q_known & (q_sizes == 0)).sum()),
    )


def bidirectional_finding_retrieval_metrics(
    similarity: Any,
    finding_labels: Any,
    *,
    names: Sequence[str],
    known: Any = None,
    ks: Iterable[int] = (1, 5, 10),
) -> dict[str, float]:
    """Finding retrieval metrics in both directions for paired images and reports.

    ``similarity[i, j]`` is the score of image ``i`` against report ``j`` (``n x n``, row ``i`` and
    column ``i`` are the same study, whose findings are ``finding_labels[i]``): image->text ranks the
    rows, text->image the columns. Keys as :func:`finding_retrieval_result`, prefixed
    ``image_to_text/`` and ``text_to_image/``.

    Example:
        >>> import numpy as np
        >>> m = bidirectional_finding_retrieval_metrics(np.eye(2), [[1], [0]], names=["a"], ks=(1,))
        >>> m["text_to_image/finding_hit_rate@1/a"]
        1.0
    """
    scores = _as_scores(similarity, "similarity")
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"similarity must be square (n images x n reports of the same studies); got {scores.shape}")
    metrics: dict[str, float] = {}
    for direction, matrix in (("image_to_text", scores), ("text_to_image", scores.T)):
        result = finding_retrieval_result(
            finding_labels, finding_labels, names=names, scores=matrix, query_known=known,
            gallery_known=known, ks=ks, direction=direction,
        )
        metrics.update(result.metrics)
    return metrics


def finding_query_result(
    scores: Any,
    image_findings: Any,
    *,
    names: Sequence[str],
    image_known: Any = None,
    ks: Iterable[int] = (1, 5, 10),
    direction: str = "finding_query_to_image",
) -> FindingRetrievalResult:
    """Evaluate "find images with X" text queries, one per finding (row ``f`` of ``scores`` = finding ``f``).

    Args:
        scores: ``(n_findings, n_images)`` similarity of each finding's query text (for example
            :func:`cxr_mtclip.data.findings.finding_queries`, embedded) to every image.
        image_findings: ``(n_images, n_findings)`` multi-hot findings; image_known: ``(n_images,)``.
        names: finding names, in the row order of ``scores``.

    Per finding ``f`` (known images only): ``precision@k/f`` = fraction of the top k carrying ``f``;
    ``hit_rate@k/f`` = 1 if any does; ``roc_auc/f`` = ROC AUC of the scores for separating images
    with ``f`` from those without (NaN if either group is empty). ``macro`` averages over findings
    (skipping NaN). There is no micro average: one query per finding and a fixed k make it equal to
    macro. Keys: ``{direction}/precision@k/{name|macro}``, ``{direction}/hit_rate@k/{name|macro}``,
    ``{direction}/roc_auc/{name|macro}``. Bootstrap intervals (:func:`finding_bootstrap_cis`)
    resample the findings, so only the macro keys get one.

    Example:
        >>> import numpy as np
        >>> r = finding_query_result(np.array([[0.9, 0.1, 0.5]]), [[1], [0], [0]], names=["a"], ks=(1,))
        >>> r.metrics["finding_query_to_image/precision@1/a"], r.metrics["finding_query_to_image/roc_auc/a"]
        (1.0, 1.0)
    """
    names = _as_names(names)
    matrix = _as_scores(scores, "scores")
    if matrix.shape[0] != len(names):
        raise ValueError(f"scores has {matrix.shape[0]} rows; expected one per finding ({len(names)})")
    image_hot = _as_multi_hot(image_findings, "image_findings", n_findings=len(names))
    known = _as_known(image_known, image_hot.shape[0], "image_known")
    queries = np.eye(len(names), dtype=bool)
    base = finding_retrieval_result(
        queries, image_hot, names=names, scores=matrix, gallery_known=known, ks=ks, direction=direction
    )
    per_query_finding: dict[str, np.ndarray] = {}
    metrics: dict[str, float] = {}
    for k in base.ks:
        for family in ("precision", "hit_rate"):
            stem = f"{direction}/{family}@{k}"
            per_query_finding[stem] = base.per_query_finding[f"{direction}/finding_{family}@{k}"]
            metrics.update(_finding_aggregates(stem, per_query_finding[stem], names, micro=False))
    auc = _column_auc(image_hot[known], matrix.T[known])
    stem = f"{direction}/roc_auc"
    per_query_finding[stem] = np.where(queries, auc[None, :], np.nan)
    metrics.update(_finding_aggregates(stem, per_query_finding[stem], names, micro=False))
    # One query per finding: the macro average is a mean over queries, bootstrapped as such.
    per_query = {f"{stem}/macro": np.diagonal(values).copy() for stem, values in per_query_finding.items()}
    return FindingRetrievalResult(
        metrics=metrics,
        per_query_finding=per_query_finding,
        per_query=per_query,
        names=names,
        ks=base.ks,
        n_queries=len(names),
        n_gallery=image_hot.shape[0],
        n_unknown_queries=0,
        n_no_finding_queries=0,
    )


def finding_bootstrap_cis(
    result: FindingRetrievalResult, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Percentile bootstrap interval ``(estimate, lo, hi)`` of every key of ``result.metrics``.

    Queries are resampled (for :func:`finding_query_result`, the findings' queries); per-finding keys
    use that finding's column, ``macro``/``micro`` recompute the average on each resample, Jaccard
    uses its per-query values. Keys with fewer than 2 contributing queries get NaN bounds.

    Example:
        >>> import numpy as np
        >>> y = np.array([[1], [1], [0]])
        >>> cis = finding_bootstrap_cis(finding_retrieval_result(y, y, names=["a"], scores=np.eye(3), ks=(1,)))
        >>> cis["image_to_text/finding_precision@1/a"]
        (1.0, 1.0, 1.0)
    """
    cis: dict[str, tuple[float, float, float]] = {}
    for key, estimate in result.metrics.items():
        stem, _, tail = key.rpartition("/")
        if key in result.per_query:
            values = result.per_query[key]
            cis[key] = _ci_or_nan(values, ~np.isnan(values), n_boot, alpha, seed, estimate)
        elif stem in result.per_query_finding:
            matrix = result.per_query_finding[stem]
            contributing = ~np.isnan(matrix).all(axis=1)
            if tail == "macro":
                cis[key] = _ci_or_nan(matrix, contributing, n_boot, alpha, seed, estimate, macro_rows)
            elif tail == "micro":
                cis[key] = _ci_or_nan(matrix, contributing, n_boot, alpha, seed, estimate, micro_rows)
            else:
                column = matrix[:, result.names.index(tail)]
                cis[key] = _ci_or_nan(column, ~np.isnan(column), n_boot, alpha, seed, estimate)
        else:  # pragma: no cover - every key comes from one of the two dicts
            raise ValueError(f"metric {key!r} has no per-query values in the result")
    return cis


# ----------------------------------------------------------------------------------------------
# Classification (the multi-label head)
# ----------------------------------------------------------------------------------------------


def finding_classification_metrics(
    logits: Any, finding_labels: Any, *, names: Sequence[str], known: Any = None
) -> dict[str, float]:
    """Per-finding ROC AUC of the multi-label head, with macro and micro averages.

    Args:
        logits: ``(n_studies, n_findings)`` scores (logits or probabilities; only their order matters).
        finding_labels: ``(n_studies, n_findings)`` multi-hot labels; known: ``(n_studies,)`` mask.
        names: the finding names.

    Over the known studies: ``classification/finding_roc_auc/{name}`` is the ROC AUC of column ``f``
    (ties count one half; equal to ``sklearn.metrics.roc_auc_score``), NaN when the column has only
    one class; ``.../macro`` is the mean of the defined per-finding values; ``.../micro`` is the AUC
    of all (study, finding) pairs pooled, sklearn's ``average="micro"``.

    Example:
        >>> finding_classification_metrics([[2.0], [0.5], [-1.0]], [[1], [0], [1]], names=["a"])
        {'classification/finding_roc_auc/a': 0.5, 'classification/finding_roc_auc/macro': 0.5, 'classification/finding_roc_auc/micro': 0.5}
    """
    names, labels, values = _classification_inputs(logits, finding_labels, names, known)
    return _classification_from_rows(np.column_stack([labels, values]), names)


def finding_classification_bootstrap_cis(
    logits: Any,
    finding_labels: Any,
    *,
    names: Sequence[str],
    known: Any = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Bootstrap intervals of :func:`finding_classification_metrics`, resampling the known studies.

    Resamples in which a finding has a single class give NaN for it and are dropped from its interval.

    Example:
        >>> cis = finding_classification_bootstrap_cis([[2.0], [0.5], [-1.0], [1.0]], [[1], [0], [0], [1]], names=["a"], n_boot=50)
        >>> cis["classification/finding_roc_auc/a"][0]
        1.0
    """
    names, labels, values = _classification_inputs(logits, finding_labels, names, known)
    rows = np.column_stack([labels, values])
    estimates = _classification_from_rows(rows, names)
    everyone = np.ones(rows.shape[0], dtype=bool)
    n_findings = len(names)
    cis = {}
    for key, estimate in estimates.items():
        tail = key.rpartition("/")[2]
        if tail in ("macro", "micro"):
            cis[key] = _ci_or_nan(rows, everyone, n_boot, alpha, seed, estimate, _auc_rows_statistic(tail))
        else:  # one finding: only its two columns are resampled (same draws: they depend on the row count only)
            f = names.index(tail)
            cis[key] = _ci_or_nan(rows[:, [f, n_findings + f]], everyone, n_boot, alpha, seed, estimate,
                                  _auc_rows_statistic("one"))
    return cis


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _finding_aggregates(stem: str, matrix: np.ndarray, names: Sequence[str], *, micro: bool) -> dict[str, float]:
    out = {f"{stem}/{name}": nanmean(matrix[:, f]) for f, name in enumerate(names)}
    out[f"{stem}/macro"] = _macro(matrix)
    if micro:
        out[f"{stem}/micro"] = _micro(matrix)
    return out


def _macro(matrix: np.ndarray) -> float:
    present = ~np.isnan(matrix)
    counts = present.sum(axis=0)
    if not (counts > 0).any():
        return math.nan
    means = np.where(present, matrix, 0.0).sum(axis=0)[counts > 0] / counts[counts > 0]
    return float(means.mean())


def _micro(matrix: np.ndarray) -> float:
    return nanmean(matrix.ravel())


def _ci_or_nan(values, contributing, n_boot, alpha, seed, estimate, statistic=None) -> tuple[float, float, float]:
    """`bootstrap_ci` of `values` (``statistic``: `bootstrap_ci`'s, one (resamples, queries) array per column ->
    one value per resample), or NaN bounds when fewer than 2 queries contribute."""
    if int(np.count_nonzero(contributing)) < 2:
        return float(estimate), math.nan, math.nan
    est, lo, hi = bootstrap_ci(values, n_boot, alpha, seed, statistic=statistic)
    return float(est), lo, hi


def macro_rows(*columns: np.ndarray) -> np.ndarray:
    """The macro average of every row at once: ``columns`` are (rows, queries) arrays, one per finding, NaN where a
    query does not carry the finding; per row, the mean over findings of each finding's mean over its queries
    (findings without a query are skipped). A statistic for `cxr_mtclip.evaluation.statistics.seed_query_bootstrap`.

    Example:
        >>> float(macro_rows(np.array([[1.0, 0.0, np.nan]]), np.array([[np.nan, np.nan, 1.0]]))[0])
        0.75
    """
    samples = np.stack(columns, axis=-1)  # (resamples, queries, findings)
    present = ~np.isnan(samples)
    counts = present.sum(axis=1)
    means = np.where(present, samples, 0.0).sum(axis=1) / np.maximum(counts, 1)
    return nanmean_rows(np.where(counts > 0, means, np.nan))


def micro_rows(*columns: np.ndarray) -> np.ndarray:
    """The micro average of every row at once: the mean of all non-NaN (query, finding) values of the row.

    Example:
        >>> float(micro_rows(np.array([[1.0, 0.0, np.nan]]), np.array([[np.nan, np.nan, 1.0]]))[0])
        0.6666666666666666
    """
    samples = np.stack(columns, axis=-1)
    return nanmean_rows(samples.reshape(samples.shape[0], -1))


def _top_indices(
    scores: Any, ranked: Any, g_known: np.ndarray, n_queries: int, n_gallery: int, kmax: int, exclude_self: bool
) -> np.ndarray:
    """(n_queries, kmax) gallery indices of each query's top items among the known candidates."""
    if (scores is None) == (ranked is None):
        raise ValueError("pass exactly one of `scores` (n_queries, n_gallery) or `ranked` (n_queries, m)")
    rows = np.arange(n_queries)
    if scores is not None:
        matrix = _as_scores(scores, "scores")
        if matrix.shape != (n_queries, n_gallery):
            raise ValueError(f"scores must have shape (n_queries, n_gallery) = {(n_queries, n_gallery)}; got {matrix.shape}")
        candidates = np.broadcast_to(g_known, (n_queries, n_gallery)).copy()
        if exclude_self:
            own = rows[rows < n_gallery]
            candidates[own, own] = False
        fewest = int(candidates.sum(axis=1).min()) if n_queries else 0
        if kmax > fewest:
            raise ValueError(
                f"k={kmax} but a query has only {fewest} known candidate(s) in the gallery; use smaller ks"
            )
        top = np.empty((n_queries, kmax), dtype=np.int64)
        chunk = max(1, _CHUNK_ELEMENTS // max(n_gallery, 1))
        for start in range(0, n_queries, chunk):
            block = slice(start, min(start + chunk, n_queries))
            masked = np.where(candidates[block], matrix[block], -np.inf)
            top[block] = np.argsort(-masked, axis=1, kind="stable")[:, :kmax]
        return top
    order = np.asarray(ranked)
    if order.ndim != 2 or order.shape[0] != n_queries or not np.issubdtype(order.dtype, np.integer):
        raise ValueError(f"ranked must be an integer array of shape ({n_queries}, m); got {order.dtype} {order.shape}")
    inside = (order >= 0) & (order < n_gallery)
    usable = inside & g_known[np.clip(order, 0, max(n_gallery - 1, 0))]
    if exclude_self:
        usable &= order != rows[:, None]
    counts = usable.sum(axis=1)
    if (counts < kmax).any():
        row = int(np.flatnonzero(counts < kmax)[0])
        raise ValueError(
            f"ranked row {row} has {int(counts[row])} usable gallery item(s) (known, in range"
            f"{', not itself' if exclude_self else ''}); k={kmax} needs at least {kmax}: retrieve more"
        )
    first = np.argsort(~usable, axis=1, kind="stable")[:, :kmax]
    return np.take_along_axis(order, first, axis=1).astype(np.int64)


def _column_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each column (ties count one half); NaN without both classes."""
    return roc_auc_rows(np.asarray(labels).T, np.asarray(scores).T)


def _classification_inputs(logits, finding_labels, names, known):
    names = _as_names(names)
    values = _as_scores(logits, "logits")
    labels = _as_multi_hot(finding_labels, "finding_labels", n_findings=len(names))
    if values.shape != labels.shape:
        raise ValueError(f"logits has shape {values.shape} but finding_labels has shape {labels.shape}")
    mask = _as_known(known, labels.shape[0], "known")
    if not mask.any():
        raise ValueError("no study with known findings; the classification metrics need at least one")
    return names, labels[mask], values[mask]


def _classification_from_rows(rows: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    n_findings = len(names)
    labels, values = rows[:, :n_findings] > 0.5, rows[:, n_findings:]
    per_finding = _column_auc(labels, values)
    out = {f"classification/finding_roc_auc/{name}": float(v) for name, v in zip(names, per_finding)}
    out["classification/finding_roc_auc/macro"] = nanmean(per_finding)
    out["classification/finding_roc_auc/micro"] = float(_column_auc(labels.reshape(-1, 1), values.reshape(-1, 1))[0])
    return out


def _auc_rows_statistic(tail: str):
    """`bootstrap_ci`'s statistic for one classification key on resamples of ``[labels | scores]`` columns.

    ``tail`` "one": the two columns of one finding; "macro" / "micro": all ``2 F`` columns.
    """

    def statistic(*columns: np.ndarray) -> np.ndarray:
        n_findings = len(columns) // 2
        labels = np.stack(columns[:n_findings], axis=1) > 0.5  # (resamples, findings, queries)
        scores = np.stack(columns[n_findings:], axis=1)
        resamples = labels.shape[0]
        if tail == "one":
            return roc_auc_rows(labels[:, 0], scores[:, 0])
        if tail == "micro":
            return roc_auc_rows(labels.reshape(resamples, -1), scores.reshape(resamples, -1))
        per_finding = roc_auc_rows(labels.reshape(resamples * n_findings, -1), scores.reshape(resamples * n_findings, -1))
        return nanmean_rows(per_finding.reshape(resamples, n_findings))

    return statistic


def _as_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"names must be a sequence of non-empty finding names, got {names!r}")
    names = tuple(names)
    if len(set(names)) != len(names) or {"macro", "micro"} & set(names):
        raise ValueError(f"names must be unique and not 'macro'/'micro', got {names}")
    return names


def _as_multi_hot(values: Any, name: str, *, n_findings: int) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a 0/1 array of shape (n, {n_findings})") from exc
    if array.ndim != 2 or array.shape[1] != n_findings:
        raise ValueError(f"{name} must have shape (n, {n_findings}) (one column per finding); got {array.shape}")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must contain only 0/1 (or bool) values")
        array = array.astype(bool)
    return array


def _as_known(values: Any, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.ones(n, dtype=bool)
    array = np.asarray(values)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one flag per study); got {array.shape}")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be a bool mask")
        array = array.astype(bool)
    return array


def _as_scores(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a numeric 2-D array") from exc
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _as_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = list(ks)
    if not values or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in values):
        raise ValueError(f"ks must be a non-empty iterable of positive ints, got {ks!r}")
    return tuple(sorted({int(k) for k in values}))
