"""Retrieval and classification metrics for paired image/report embeddings (numpy in, floats out).

Pure numpy: this module imports no model code and, from ``cxr_mtclip``, only its siblings
`cxr_mtclip.evaluation.statistics` (the one ROC AUC, AP, F1, mean and bootstrap) and
`cxr_mtclip.evaluation.paper_metrics` (the paper-compatible readings, computed beside the standard metrics under
their own keys). The exact definition of every number is written in ``docs/metrics.md``; the docstrings below
repeat the short form.

Conventions shared by every retrieval function:

* Pairing: query ``i`` is paired with gallery row ``i`` (so the gallery has at least as many rows
  as there are queries; extra gallery rows are distractors).
* Scores: rows are L2-normalised in float64 (already-normalised inputs are unchanged up to
  rounding), the score is the dot product (cosine similarity), rounded to :data:`SCORE_DECIMALS`
  decimals so that identical gallery vectors tie exactly whatever the BLAS summation order.
* Ranking: descending score; ties are broken by gallery index, lower index first (a stable sort),
  so every number is deterministic and independent of ``chunk_size``.
* Labels: binary, ``0`` = normal, ``1`` = abnormal (the positive class of every F1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .duplicates import duplicate_ids, normalise_report_text
from .paper_metrics import label_hit_rates, query_label_score_metrics, query_score_statistic, query_scores
from .statistics import binary_f1, bootstrap_ci, f1_rows, nanmean, roc_auc_rows

__all__ = [
    "DIRECTIONS",
    "PAPER_EXCLUDED",
    "SCORE_DECIMALS",
    "RetrievalResult",
    "bidirectional_retrieval_metrics",
    "bidirectional_retrieval_results",
    "classification_metrics",
    "compute_retrieval_result",
    "metric_module_path",
    "normalise_report_text",
    "retrieval_bootstrap_cis",
    "retrieval_metrics",
]

SCORE_DECIMALS = 9
"""Decimals kept in similarity scores; differences below 1e-9 are ties (far below float32 noise)."""

DIRECTIONS = ("image_to_text", "text_to_image")
PAPER_EXCLUDED = "paper (own pair excluded)"
"""Name of the paper protocol with each query's own fused row removed from its gallery (``exclude_self``)."""

# Elements of one (queries x gallery) block; about ten such float64/int64 blocks live at once.
_CHUNK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class RetrievalResult:
    """Aggregate metrics of one retrieval direction plus the per-query values behind them.

    ``per_query`` holds one float array of length ``n_queries`` per mean-decomposable metric
    (same keys as ``metrics`` except ``f1``, ``f1@1`` and the ``*_score`` keys; ``roc_auc`` and ``map`` hold
    NaN for skipped queries, ``accuracy@k`` holds NaN under ``exclude_self``). ``metrics[key]`` is the mean of
    the non-NaN entries of ``per_query[key]``. The others are one number over the queries: ``f1`` from
    ``query_labels`` and ``vote_labels``, ``f1@1`` from ``query_labels`` and ``top1_labels``, and
    ``roc_auc_<reading>_score`` / ``map_<reading>_score`` from ``query_labels`` and ``query_scores[reading]``.
    """

    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]
    query_labels: np.ndarray
    vote_labels: np.ndarray
    top1_labels: np.ndarray
    query_scores: dict[str, np.ndarray]
    paired_ranks: np.ndarray
    n_queries: int
    n_gallery: int
    n_skipped_map: int
    n_skipped_roc_auc: int
    f1_k: int
    exclude_self: bool


def compute_retrieval_result(
    query_embeds: Any,
    gallery_embeds: Any,
    query_labels: Any,
    gallery_labels: Any,
    ks: Iterable[int] = (1, 3, 5, 10),
    *,
    query_texts: Sequence[str] | None = None,
    gallery_texts: Sequence[str] | None = None,
    exclude_self: bool = False,
    f1_k: int | None = None,
    chunk_size: int | None = None,
) -> RetrievalResult:
    """Rank the gallery for every query and return aggregate and per-query retrieval metrics.

    Args:
        query_embeds: ``(n_queries, dim)`` array; query ``i`` is paired with gallery row ``i``.
        gallery_embeds: ``(n_gallery, dim)`` array with ``n_gallery >= n_queries``.
        query_labels, gallery_labels: 0 (normal) / 1 (abnormal) per row.
        ks: cut-offs for ``accuracy@k``, ``accuracy_dedup@k``, ``mean_cosine@k``, ``precision@k``.
        query_texts, gallery_texts: report text per row for the duplicate-aware accuracy. The
            target of query ``i`` is ``query_texts[i]`` when given, else ``gallery_texts[i]``
            (the paired item's report). Without ``gallery_texts`` no ``accuracy_dedup@k`` keys.
        exclude_self: drop gallery row ``i`` from query ``i``'s ranking (measures how much of a
            score comes from the query's own half of a fused gallery vector); ``accuracy@k``
            is then NaN because the paired item is gone.
        f1_k: neighbours whose majority label is the query's predicted label for ``f1``
            (default 5, or every candidate when the gallery ranks fewer than 5).
        chunk_size: queries scored per block (default: about 2M similarities per block).

    Metrics (per query, then averaged over queries; definitions in docs/metrics.md):
        ``accuracy@k``: 1 if the paired item is among the top k.
        ``accuracy_dedup@k``: 1 if the paired item, or any item whose normalised report equals
        the target report, is among the top k.
        ``mean_cosine@k``: mean score of the top k.
        ``precision@k``: fraction of the top k whose label equals the query's label.
        ``map``: average precision of the full ranking with relevant = same label; queries
        without a relevant item are skipped (counted in ``n_skipped_map``).
        ``roc_auc``: AUC of the scores for separating same-label from different-label gallery
        items (ties count one half); queries lacking either group are skipped (counted in
        ``n_skipped_roc_auc``).
        ``f1``: binary F1 (abnormal positive) over queries of the label vote (majority label of
        the top ``f1_k``; an even split takes the top-1 item's label) against the query label.

    Paper-compatible keys beside them (`cxr_mtclip.evaluation.paper_metrics`): ``label_hit_rate@k`` (a same-label
    item in the top k), ``f1@1`` (F1 of the top-1 label), ``roc_auc_top1_score`` / ``map_top1_score`` (the top-1
    similarity as a score for the query's label, abnormal positive) and, when each query ranks at least 10
    items, ``roc_auc_top10_mean_score`` / ``map_top10_mean_score``.

    Example:
        >>> import numpy as np
        >>> x = np.eye(4)
        >>> compute_retrieval_result(x, x, [0, 0, 1, 1], [0, 0, 1, 1], ks=(1,)).metrics["accuracy@1"]
        1.0
    """
    queries = _as_embeddings(query_embeds, "query_embeds")
    gallery = _as_embeddings(gallery_embeds, "gallery_embeds")
    n_queries, n_gallery = queries.shape[0], gallery.shape[0]
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_embeds has dimension {queries.shape[1]} but gallery_embeds has dimension "
            f"{gallery.shape[1]}; both must be embeddings of the same space"
        )
    if n_queries > n_gallery:
        raise ValueError(
            f"query_embeds has {n_queries} rows but gallery_embeds only {n_gallery}: query i is "
            "paired with gallery row i, so the gallery needs at least as many rows as the queries"
        )
    q_labels = _as_labels(query_labels, n_queries, "query_labels")
    g_labels = _as_labels(gallery_labels, n_gallery, "gallery_labels")
    exclude_self = bool(exclude_self)
    n_candidates = n_gallery - int(exclude_self)
    if n_candidates < 1:
        raise ValueError("exclude_self=True needs a gallery of at least 2 rows")
    ks = _as_ks(ks, n_candidates, "ks")
    f1_k = min(5, n_candidates) if f1_k is None else _as_ks((f1_k,), n_candidates, "f1_k")[0]
    gallery_ids, target_ids = duplicate_ids(query_texts, gallery_texts, n_queries, n_gallery)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // n_gallery)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")

    nan = np.full(n_queries, np.nan)
    accuracy = {k: nan.copy() for k in ks}
    dedup = {k: nan.copy() for k in ks} if gallery_ids is not None else {}
    mean_cosine = {k: nan.copy() for k in ks}
    precision = {k: nan.copy() for k in ks}
    average_precision = nan.copy()
    roc_auc = nan.copy()
    hit_rate = {k: nan.copy() for k in ks}
    votes = np.zeros(n_queries, dtype=np.int64)
    top1_labels = np.zeros(n_queries, dtype=np.int64)
    scores_by_reading = {name: nan.copy() for name in query_scores(np.zeros((1, n_candidates)), n_candidates)}
    paired_ranks = np.full(n_queries, -1, dtype=np.int64)
    kmax = max(ks[-1], f1_k)
    positions = np.arange(n_gallery)

    for start in range(0, n_queries, int(chunk_size)):
        rows = np.arange(start, min(start + int(chunk_size), n_queries))
        local = np.arange(rows.size)
        scores = np.round(queries[rows] @ gallery.T, SCORE_DECIMALS)
        if exclude_self:
            # -inf sorts the query's own pair last, beyond every k (k <= n_gallery - 1).
            scores[local, rows] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        sorted_scores = np.take_along_axis(scores, order, axis=1)
        valid = np.ones(order.shape, dtype=bool)
        if exclude_self:
            valid[:, -1] = False
        else:
            paired_ranks[rows] = np.argmax(order == rows[:, None], axis=1)
        relevant = (g_labels[order] == q_labels[rows, None]) & valid

        top = order[:, :kmax]
        is_duplicate = None
        if gallery_ids is not None:
            is_duplicate = (gallery_ids[top] == target_ids[rows, None]) | (top == rows[:, None])
        for k in ks:
            if not exclude_self:
                accuracy[k][rows] = paired_ranks[rows] < k
            if is_duplicate is not None:
                dedup[k][rows] = is_duplicate[:, :k].any(axis=1)
            mean_cosine[k][rows] = sorted_scores[:, :k].mean(axis=1)
            precision[k][rows] = relevant[:, :k].mean(axis=1)
        for k, hits_k in label_hit_rates(relevant, ks).items():
            hit_rate[k][rows] = hits_k
        top1_labels[rows] = g_labels[order[:, 0]]
        for name, values in query_scores(sorted_scores, n_candidates).items():
            scores_by_reading[name][rows] = values

        n_relevant = relevant.sum(axis=1)
        hits = np.cumsum(relevant, axis=1)
        ap_sums = (relevant * (hits / (positions + 1))).sum(axis=1)
        average_precision[rows] = np.where(n_relevant > 0, ap_sums / np.maximum(n_relevant, 1), np.nan)
        roc_auc[rows] = roc_auc_rows(relevant, sorted_scores, valid)

        top_labels = g_labels[order[:, :f1_k]]
        abnormal_votes = 2 * top_labels.sum(axis=1)
        votes[rows] = np.where(
            abnormal_votes > f1_k, 1, np.where(abnormal_votes < f1_k, 0, top_labels[:, 0])
        )

    per_query: dict[str, np.ndarray] = {}
    for k in ks:
        per_query[f"accuracy@{k}"] = accuracy[k]
    for k in dedup:
        per_query[f"accuracy_dedup@{k}"] = dedup[k]
    for k in ks:
        per_query[f"mean_cosine@{k}"] = mean_cosine[k]
    for k in ks:
        per_query[f"precision@{k}"] = precision[k]
    for k in ks:
        per_query[f"label_hit_rate@{k}"] = hit_rate[k]
    per_query["roc_auc"] = roc_auc
    per_query["map"] = average_precision

    metrics = {key: nanmean(values) for key, values in per_query.items() if key not in ("roc_auc", "map")}
    metrics["f1"] = binary_f1(q_labels, votes)
    metrics["roc_auc"] = nanmean(roc_auc)
    metrics["map"] = nanmean(average_precision)
    metrics["f1@1"] = binary_f1(q_labels, top1_labels)
    metrics.update(query_label_score_metrics(q_labels, scores_by_reading))
    return RetrievalResult(
        metrics=metrics,
        per_query=per_query,
        query_labels=q_labels,
        vote_labels=votes,
        top1_labels=top1_labels,
        query_scores=scores_by_reading,
        paired_ranks=paired_ranks,
        n_queries=n_queries,
        n_gallery=n_gallery,
        n_skipped_map=int(np.isnan(average_precision).sum()),
        n_skipped_roc_auc=int(np.isnan(roc_auc).sum()),
        f1_k=f1_k,
        exclude_self=exclude_self,
    )


def retrieval_metrics(
    query_embeds: Any,
    gallery_embeds: Any,
    query_labels: Any,
    gallery_labels: Any,
    ks: Iterable[int] = (1, 3, 5, 10),
    *,
    query_texts: Sequence[str] | None = None,
    gallery_texts: Sequence[str] | None = None,
    exclude_self: bool = False,
    f1_k: int | None = None,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Retrieval metrics of one direction as a flat dict (see :func:`compute_retrieval_result`).

    Keys: ``accuracy@k``, ``accuracy_dedup@k`` (only with ``gallery_texts``), ``mean_cosine@k``,
    ``precision@k``, ``label_hit_rate@k`` for each k, then ``f1``, ``roc_auc``, ``map`` and the paper-compatible
    ``f1@1``, ``roc_auc_top1_score``, ``map_top1_score`` (+ ``..._top10_mean_score`` with 10 or more candidates).

    Example:
        >>> import numpy as np
        >>> x = np.eye(3)
        >>> retrieval_metrics(x, x, [0, 1, 1], [0, 1, 1], ks=(1, 2))["precision@2"]  # ties: lower index first
        0.5
    """
    return compute_retrieval_result(
        query_embeds,
        gallery_embeds,
        query_labels,
        gallery_labels,
        ks,
        query_texts=query_texts,
        gallery_texts=gallery_texts,
        exclude_self=exclude_self,
        f1_k=f1_k,
        chunk_size=chunk_size,
    ).metrics


def bidirectional_retrieval_results(
    image_embeds: Any,
    text_embeds: Any,
    labels: Any,
    ks: Iterable[int] = (1, 3, 5, 10),
    texts: Sequence[str] | None = None,
    *,
    protocol: Literal["cross-modal", "paper"] = "cross-modal",
    fused_embeds: Any = None,
    image_gallery: Any = None,
    text_gallery: Any = None,
    exclude_self: bool = False,
    f1_k: int | None = None,
    chunk_size: int | None = None,
) -> dict[str, RetrievalResult]:
    """Run :func:`compute_retrieval_result` for both directions; keys are :data:`DIRECTIONS`.

    Row ``i`` of every array is study ``i`` (its image, its report, its label, its report text).

    Protocols (which gallery each query modality is ranked against):
        ``"cross-modal"`` (default): image queries vs the text embeddings, text queries vs the
        image embeddings. ``image_gallery`` / ``text_gallery`` replace these defaults when given
        (they must have one row per study).
        ``"paper"`` (the paper's Algorithm 2): both image and text queries vs ``fused_embeds``
        (required). Query ``i``'s own embedding is half of fused row ``i``; pass
        ``exclude_self=True`` to measure the metrics with that row removed.

    Example:
        >>> import numpy as np
        >>> x = np.eye(4)
        >>> out = bidirectional_retrieval_results(x, x, [0, 1, 0, 1], ks=(1,))
        >>> out["text_to_image"].metrics["accuracy@1"]
        1.0
    """
    images = _as_embeddings(image_embeds, "image_embeds")
    reports = _as_embeddings(text_embeds, "text_embeds")
    n = images.shape[0]
    if reports.shape[0] != n:
        raise ValueError(f"image_embeds has {n} rows but text_embeds has {reports.shape[0]}; expected one row per study")
    if protocol == "paper":
        if fused_embeds is None:
            raise ValueError("protocol='paper' ranks both modalities against fused_embeds; pass fused_embeds")
        if image_gallery is not None or text_gallery is not None:
            raise ValueError("protocol='paper' uses fused_embeds as both galleries; do not pass image_gallery/text_gallery")
        image_gallery = text_gallery = _as_embeddings(fused_embeds, "fused_embeds")
    elif protocol == "cross-modal":
        if fused_embeds is not None:
            raise ValueError("fused_embeds is only used by protocol='paper'; got protocol='cross-modal'")
        image_gallery = reports if image_gallery is None else _as_embeddings(image_gallery, "image_gallery")
        text_gallery = images if text_gallery is None else _as_embeddings(text_gallery, "text_gallery")
    else:
        raise ValueError(f"protocol must be 'cross-modal' or 'paper', got {protocol!r}")
    for name, gallery in (("image_gallery", image_gallery), ("text_gallery", text_gallery)):
        if gallery.shape[0] != n:
            raise ValueError(f"{name} has {gallery.shape[0]} rows; expected one row per study ({n})")
    study_labels = _as_labels(labels, n, "labels")
    common = dict(gallery_texts=texts, exclude_self=exclude_self, f1_k=f1_k, chunk_size=chunk_size)
    ks = tuple(ks)
    return {
        "image_to_text": compute_retrieval_result(images, image_gallery, study_labels, study_labels, ks, **common),
        "text_to_image": compute_retrieval_result(reports, text_gallery, study_labels, study_labels, ks, **common),
    }


def bidirectional_retrieval_metrics(
    image_embeds: Any,
    text_embeds: Any,
    labels: Any,
    ks: Iterable[int] = (1, 3, 5, 10),
    texts: Sequence[str] | None = None,
    *,
    protocol: Literal["cross-modal", "paper"] = "cross-modal",
    fused_embeds: Any = None,
    image_gallery: Any = None,
    text_gallery: Any = None,
    exclude_self: bool = False,
    f1_k: int | None = None,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Both directions as one flat dict, keys ``image_to_text/<metric>`` and ``text_to_image/<metric>``.

    Arguments and protocols as in :func:`bidirectional_retrieval_results`.

    Example:
        >>> import numpy as np
        >>> x = np.eye(4)
        >>> bidirectional_retrieval_metrics(x, x, [0, 1, 0, 1], ks=(1,))["image_to_text/accuracy@1"]
        1.0
    """
    results = bidirectional_retrieval_results(
        image_embeds,
        text_embeds,
        labels,
        ks,
        texts,
        protocol=protocol,
        fused_embeds=fused_embeds,
        image_gallery=image_gallery,
        text_gallery=text_gallery,
        exclude_self=exclude_self,
        f1_k=f1_k,
        chunk_size=chunk_size,
    )
    return {f"{direction}/{key}": value for direction, result in results.items() for key, value in result.metrics.items()}


def classification_metrics(logits_or_probs: Any, labels: Any, *, from_logits: bool = True) -> dict[str, float]:
    """ROC AUC, F1 and accuracy of the normal/abnormal head; positive class = abnormal = 1.

    Args:
        logits_or_probs: shape ``(n,)`` or ``(n, 1)``: the abnormal logit (or probability with
            ``from_logits=False``); shape ``(n, 2)``: [normal, abnormal] logits (or probabilities).
        labels: 0 (normal) / 1 (abnormal).
        from_logits: whether the values are logits (default, the model's ``logits``).

    The prediction is abnormal when the abnormal probability is >= 0.5 (sigmoid of the logit, or
    softmax of two logits). ROC AUC ranks the raw logit (the logit difference for two columns),
    which orders studies like the probability without sigmoid saturation creating ties; it is NaN
    when only one class is present. F1 is NaN when there is no abnormal label nor prediction.

    Example:
        >>> classification_metrics([-2.0, 3.0, 0.5, -0.1], [0, 1, 0, 1])["classification/accuracy"]
        0.5
    """
    try:
        values = np.asarray(logits_or_probs, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"logits_or_probs must be a numeric array; got {type(logits_or_probs).__name__}") from exc
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2 and values.shape[1] == 2:
        scores = values[:, 1] - values[:, 0] if from_logits else values[:, 1]
        threshold_on = scores if from_logits else values[:, 1]
    elif values.ndim == 1:
        scores = threshold_on = values
    else:
        raise ValueError(f"logits_or_probs must have shape (n,), (n, 1) or (n, 2); got {values.shape}")
    if values.shape[0] == 0:
        raise ValueError("logits_or_probs is empty; expected at least one study")
    if not np.isfinite(values).all():
        raise ValueError("logits_or_probs contains NaN or infinite values")
    if not from_logits and ((values < 0).any() or (values > 1).any()):
        raise ValueError("from_logits=False but logits_or_probs has values outside [0, 1]")
    y_true = _as_labels(labels, values.shape[0], "labels")
    y_pred = (threshold_on >= (0.0 if from_logits else 0.5)).astype(np.int64)
    return {
        "classification/roc_auc": float(roc_auc_rows(y_true, scores)[0]),
        "classification/f1": binary_f1(y_true, y_pred),
        "classification/accuracy": float(np.mean(y_true == y_pred)),
    }


def retrieval_bootstrap_cis(
    result: RetrievalResult, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Bootstrap CI (:func:`bootstrap_ci`) of every metric of ``result``, same keys as ``result.metrics``.

    Every metric uses the same seed, hence the same resampled query sets (a paired bootstrap).

    Example:
        >>> import numpy as np
        >>> x = np.eye(4)
        >>> cis = retrieval_bootstrap_cis(compute_retrieval_result(x, x, [0, 1, 0, 1], [0, 1, 0, 1], ks=(1,)))
        >>> cis["accuracy@1"]
        (1.0, 1.0, 1.0)
    """
    cis: dict[str, tuple[float, float, float]] = {}
    for key in result.metrics:
        reading = query_score_statistic(key)
        if key in ("f1", "f1@1"):
            pairs = np.column_stack([result.query_labels, result.vote_labels if key == "f1" else result.top1_labels])
            cis[key] = bootstrap_ci(pairs, n_boot, alpha, seed, statistic=f1_rows)
        elif reading is not None:
            pairs = np.column_stack([result.query_labels, result.query_scores[reading[0]]])
            cis[key] = bootstrap_ci(pairs, n_boot, alpha, seed, statistic=reading[1])
        else:
            cis[key] = bootstrap_ci(result.per_query[key], n_boot, alpha, seed)
    return cis


def metric_module_path() -> str:
    """Folder of the ``evaluate`` metric script, for ``evaluate.load(metric_module_path())``.

    Example:
        >>> Path(metric_module_path()).name
        'cxr_retrieval'
    """
    folder = Path(__file__).resolve().parent / "cxr_retrieval"
    if not (folder / "cxr_retrieval.py").is_file():
        raise FileNotFoundError(
            f"{folder / 'cxr_retrieval.py'} is missing; reinstall cxr_mtclip with its package data"
        )
    return str(folder)


def _as_embeddings(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (n, dim); got {type(values).__name__}") from exc
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, dim) with n >= 1 and dim >= 1; got shape {array.shape}")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)[:5].tolist()
        raise ValueError(f"{name} has NaN or infinite values in row(s) {bad}")
    norms = np.linalg.norm(array, axis=1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms == 0)[:5].tolist()
        raise ValueError(f"{name} has all-zero row(s) {bad}; a cosine similarity needs a non-zero vector")
    return array / norms[:, None]


def _as_labels(values: Any, n: int, name: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a 1-D array of 0/1 labels; got {type(values).__name__}") from exc
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one label per row); got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numeric 0 (normal) / 1 (abnormal) labels; got dtype {array.dtype}")
    if not np.isin(array, (0, 1)).all():
        bad = sorted({float(v) for v in array[~np.isin(array, (0, 1))][:5]})
        raise ValueError(f"{name} must contain only 0 (normal) and 1 (abnormal); found {bad}")
    return array.astype(np.int64)


def _as_ks(ks: Iterable[int], n_candidates: int, name: str) -> tuple[int, ...]:
    try:
        values = list(ks)
    except TypeError as exc:
        raise ValueError(f"{name} must be an iterable of positive ints, got {ks!r}") from exc
    if not values:
        raise ValueError(f"{name} is empty; expected at least one cut-off k")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must contain positive ints, got {k!r}")
        if k > n_candidates:
            raise ValueError(
                f"{name} contains k={k} but each query ranks only {n_candidates} gallery item(s); "
                "use smaller cut-offs or a larger gallery"
            )
    return tuple(sorted({int(k) for k in values}))
