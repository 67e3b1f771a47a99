"""Finding-level results of one model on one split: retrieval by protocol, "find images with X" queries, the head.

`evaluate_findings` turns embeddings (numpy) and a split's ``finding_labels`` into the ``findings`` entry that
`cxr_mtclip.evaluation.evaluate_models` writes into results.json; `findings_markdown` renders those entries for
results.md. The metric definitions are `cxr_mtclip.evaluation.finding_metrics`' (docs/findings.md).

Protocols, as for the binary metrics: ``cross-modal`` ranks image queries against report embeddings and report
queries against image embeddings; ``paper (own pair excluded)`` ranks both against the fused embeddings with
the query's own study removed. The paper protocol with the own study kept is not reported for findings: the
own study carries exactly the query's findings and sits at rank 1 (see docs/results.md), which would turn
every finding metric at k=1 into a self-match. The text queries (one per finding, ``finding_queries``) are
ranked against the image embeddings (cross-modal) and the fused embeddings (paper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .finding_metrics import (
    finding_bootstrap_cis,
    finding_classification_bootstrap_cis,
    finding_classification_metrics,
    finding_query_result,
    finding_retrieval_result,
)
from .metrics import DIRECTIONS, PAPER_EXCLUDED
from .tables import escape_cell, format_number

__all__ = [
    "FINDING_PROTOCOLS",
    "evaluate_findings",
    "finding_columns",
    "finding_query_texts",
    "findings_markdown",
]

FINDING_PROTOCOLS = ("cross-modal", PAPER_EXCLUDED)
_QUERY_DIRECTION = "finding_query_to_image"
_SUMMARY_STEMS = ("finding_precision@{k}/macro", "finding_precision@{k}/micro", "finding_hit_rate@{k}/macro",
                  "finding_hit_rate@{k}/micro", "finding_jaccard@{k}")


def finding_columns(dataset: Any, column: str = "finding_labels") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(multi_hot (n, F) bool, known (n,) bool, names)`` from a split's ``finding_labels`` column.

    The names are the column's own ``ClassLabel`` names (a dataset saved with another finding list keeps its
    list); a plain list-of-strings column uses `cxr_mtclip.data.findings.FINDING_NAMES`.

    Raises:
        ValueError: if the column is missing.

    Example:
        >>> from datasets import Dataset
        >>> hot, known, names = finding_columns(Dataset.from_dict({"finding_labels": [["opacity"], None]}))
        >>> hot[0, names.index("opacity")], known.tolist()
        (True, [True, False])
    """
    from ..data.findings import FINDING_NAMES, finding_multi_hot

    if column not in dataset.column_names:
        raise ValueError(f"dataset has no '{column}' column (multi-label findings); columns: {dataset.column_names}")
    feature = getattr(dataset.features[column], "feature", None)
    names = list(getattr(feature, "names", None) or FINDING_NAMES)
    multi_hot, known = finding_multi_hot(dataset[column], names)
    return multi_hot.astype(bool), known, names


def finding_query_texts(names: Sequence[str]) -> list[str] | None:
    """One "find images with X" query per finding (`finding_queries`), in ``names`` order; None when a name has
    no description (a dataset saved with its own finding list).

    Example:
        >>> finding_query_texts(["cardiomegaly"])
        ['Findings consistent with cardiomegaly.']
    """
    from ..data.findings import FINDING_DESCRIPTIONS, finding_queries

    if any(name not in FINDING_DESCRIPTIONS for name in names):
        return None
    return list(finding_queries(names=list(names)).values())


def evaluate_findings(
    arrays: Mapping[str, np.ndarray],
    multi_hot: np.ndarray,
    known: np.ndarray,
    names: Sequence[str],
    *,
    ks: Sequence[int] = (1, 5, 10),
    query_embeds: np.ndarray | None = None,
    finding_logits: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    protocols: Sequence[str] = FINDING_PROTOCOLS,
) -> dict[str, Any]:
    """Every finding metric of one model, with bootstrap intervals (``n_boot`` 0: none).

    Args:
        arrays: ``image_embeds``, ``text_embeds``, ``fused_embeds``: (n, dim) float L2-normalised rows of the
            same n studies (row i of each is study i).
        multi_hot, known: the studies' findings and the known mask (`finding_columns`).
        ks: cut-offs; those above the smallest number of known candidates of a query are dropped.
        query_embeds: (F, dim) embeddings of one text query per finding (row f = ``names[f]``); None skips them.
        finding_logits: (n, F) logits of the multi-label head; None skips the head's ROC AUC.

    Returns ``{"counts", "ks", "retrieval": {protocol: metrics}, "text_queries": {protocol: metrics},
    "classification": metrics, "bootstrap_ci": {section: {key: [estimate, lo, hi]}}}``; the keys are
    `finding_metrics`' (``image_to_text/finding_precision@5/cardiomegaly``, ...).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> e = rng.normal(size=(6, 4)); e /= np.linalg.norm(e, axis=1, keepdims=True)
        >>> y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], bool)
        >>> out = evaluate_findings({"image_embeds": e, "text_embeds": e, "fused_embeds": e}, y, np.ones(6, bool),
        ...                         ["a", "b"], ks=(1,), n_boot=0)
        >>> out["retrieval"]["cross-modal"]["image_to_text/finding_precision@1/macro"]
        1.0
    """
    names = list(names)
    multi_hot = np.asarray(multi_hot, dtype=bool)
    known = np.asarray(known, dtype=bool)
    image, text, fused = (np.asarray(arrays[c], dtype=np.float64) for c in ("image_embeds", "text_embeds", "fused_embeds"))
    n = image.shape[0]
    if multi_hot.shape != (n, len(names)) or known.shape != (n,):
        raise ValueError(f"finding labels of shape {multi_hot.shape} / known {known.shape} do not match {n} studies "
                         f"and {len(names)} findings")
    unknown = set(protocols) - set(FINDING_PROTOCOLS)
    if unknown:
        raise ValueError(f"protocols must be among {FINDING_PROTOCOLS}, got {sorted(unknown)}")
    n_known = int(known.sum())
    usable = tuple(sorted({int(k) for k in ks if 1 <= int(k) <= n_known - 1}))
    out: dict[str, Any] = {
        "counts": {
            "studies": n,
            "known": n_known,
            "unknown": n - n_known,
            "no_finding": int((known & ~multi_hot.any(axis=1)).sum()),
            "per_finding": {name: int(v) for name, v in zip(names, (multi_hot & known[:, None]).sum(axis=0))},
        },
        "ks": list(usable),
        "retrieval": {},
        "text_queries": {},
        "bootstrap_ci": {},
    }
    if not usable:
        return out
    galleries = {"cross-modal": {"image_to_text": text, "text_to_image": image},
                 PAPER_EXCLUDED: {"image_to_text": fused, "text_to_image": fused}}
    queries = {"image_to_text": image, "text_to_image": text}
    for protocol in protocols:
        metrics: dict[str, float] = {}
        cis: dict[str, Any] = {}
        for direction in DIRECTIONS:
            result = finding_retrieval_result(
                multi_hot, multi_hot, names=names, scores=queries[direction] @ galleries[protocol][direction].T,
                query_known=known, gallery_known=known, ks=usable, direction=direction,
                exclude_self=protocol == PAPER_EXCLUDED,
            )
            metrics.update(result.metrics)
            if n_boot:
                cis.update({key: list(ci) for key, ci in finding_bootstrap_cis(result, n_boot=n_boot, seed=seed).items()})
        out["retrieval"][protocol] = metrics
        if n_boot:
            out["bootstrap_ci"][f"retrieval/{protocol}"] = cis
    if query_embeds is not None:
        query_embeds = np.asarray(query_embeds, dtype=np.float64)
        if query_embeds.shape != (len(names), image.shape[1]):
            raise ValueError(f"query_embeds must have shape ({len(names)}, {image.shape[1]}) (one per finding), "
                             f"got {query_embeds.shape}")
        for protocol, gallery in (("cross-modal", image), (PAPER_EXCLUDED, fused)):
            if protocol not in protocols:
                continue
            result = finding_query_result(query_embeds @ gallery.T, multi_hot, names=names, image_known=known,
                                          ks=usable, direction=_QUERY_DIRECTION)
            out["text_queries"][protocol] = result.metrics
            if n_boot:
                out["bootstrap_ci"][f"text_queries/{protocol}"] = {
                    key: list(ci) for key, ci in finding_bootstrap_cis(result, n_boot=n_boot, seed=seed).items()
                    if key.endswith("/macro")
                }
    if finding_logits is not None and n_known:
        logits = np.asarray(finding_logits, dtype=np.float64)
        out["classification"] = finding_classification_metrics(logits, multi_hot, names=names, known=known)
        if n_boot:
            out["bootstrap_ci"]["classification"] = {
                key: list(ci) for key, ci in finding_classification_bootstrap_cis(
                    logits, multi_hot, names=names, known=known, n_boot=n_boot, seed=seed).items()
            }
    return out


def findings_markdown(results: Mapping[str, Any], decimals: int = 3) -> str:
    """The ``findings`` entries of results.json as markdown: averages per model and protocol, then per finding.

    Returns ``""`` when no model has a ``findings`` entry (a split without ``finding_labels``).
    """
    models = {name: entry["findings"] for name, entry in results.get("models", {}).items() if entry.get("findings")}
    if not models:
        return ""
    first = next(iter(models.values()))
    counts = first["counts"]
    lines = [
        "## Findings (multi-label; beyond the paper)",
        "",
        f"_{counts['known']} studies with known findings ({counts['no_finding']} with none of them, "
        f"{counts['unknown']} unknown and left out); definitions: docs/findings.md. Cells: value [95% CI] "
        "(bootstrap over queries)._",
        "",
        "| Model | Protocol | Direction | Metric | Value |",
        "|---|---|---|---|---:|",
    ]
    for model, entry in models.items():
        for protocol, metrics in entry["retrieval"].items():
            cis = entry.get("bootstrap_ci", {}).get(f"retrieval/{protocol}", {})
            for direction in DIRECTIONS:
                for k in entry["ks"]:
                    for stem in _SUMMARY_STEMS:
                        key = f"{direction}/{stem.format(k=k)}"
                        lines.append(_row(model, protocol, direction.replace("_", " "), stem.format(k=k), metrics.get(key),
                                          cis.get(key), decimals))
        for protocol, metrics in entry.get("text_queries", {}).items():
            cis = entry.get("bootstrap_ci", {}).get(f"text_queries/{protocol}", {})
            for key in sorted(k for k in metrics if k.endswith("/macro")):
                metric = key.removeprefix(f"{_QUERY_DIRECTION}/")
                lines.append(_row(model, protocol, "finding query to image", metric, metrics[key], cis.get(key), decimals))
        if entry.get("classification"):
            cis = entry.get("bootstrap_ci", {}).get("classification", {})
            for tail in ("macro", "micro"):
                key = f"classification/finding_roc_auc/{tail}"
                lines.append(_row(model, "finding head", "-", f"finding_roc_auc/{tail}", entry["classification"].get(key),
                                  cis.get(key), decimals))
    lines += ["", _per_finding_table(models, decimals), ""]
    return "\n".join(lines)


def _row(model: str, protocol: str, direction: str, metric: str, value: Any, ci: Any, decimals: int) -> str:
    cell = format_number(value, decimals, missing="n/a", ci=None if ci is None else ci[1:])
    return f"| {escape_cell(model)} | {protocol} | {direction} | {metric} | {cell} |"


def _per_finding_table(models: Mapping[str, Any], decimals: int) -> str:
    """Per finding (rows) and model (columns): cross-modal image->text precision@k, text-query precision@k, head AUC."""
    first = next(iter(models.values()))
    names = list(first["counts"]["per_finding"])
    k = max(first["ks"]) if first["ks"] else None
    if k is None:
        return ""
    columns: list[tuple[str, str, str]] = []
    for model, entry in models.items():
        columns.append((model, f"image->text finding_precision@{k}", f"image_to_text/finding_precision@{k}"))
        if entry.get("text_queries", {}).get("cross-modal"):
            columns.append((model, f"query precision@{k}", f"{_QUERY_DIRECTION}/precision@{k}"))
        if entry.get("classification"):
            columns.append((model, "head ROC AUC", "classification/finding_roc_auc"))
    header = "| Finding | studies | " + " | ".join(f"{escape_cell(m)}: {label}" for m, label, _ in columns) + " |"
    lines = [f"Per finding (cross-modal protocol; k = {k}):", "", header, "|---|---:|" + "---:|" * len(columns)]
    for name in names:
        cells = []
        for model, _, stem in columns:
            entry = models[model]
            if stem.startswith("classification"):
                value = entry["classification"].get(f"{stem}/{name}")
            elif stem.startswith(_QUERY_DIRECTION):
                value = entry["text_queries"]["cross-modal"].get(f"{stem}/{name}")
            else:
                value = entry["retrieval"].get("cross-modal", {}).get(f"{stem}/{name}")
            cells.append(format_number(value, decimals, missing="n/a"))
        lines.append(f"| {name} | {first['counts']['per_finding'][name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
