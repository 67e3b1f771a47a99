"""Evaluation: retrieval and classification metrics, their statistics, tables, plots and the whole evaluation run.

- `statistics`: the one ROC AUC, F1, NaN-aware mean and (seed x query) bootstrap; pure numpy.
- `metrics`: retrieval metrics both ways, classification metrics, bootstrap CIs of a result; pure numpy.
- `finding_metrics`, `finding_results`: multi-label finding metrics (beyond the paper) and the findings entry of
  `evaluate_models`; numpy.
- `tables`: markdown tables (the paper's Tables I-III layout), one number format and metric order.
- `plots`: t-SNE and loss-curve PNGs.
- `evaluate`: `evaluate_models` (embed, index, every metric, results.json/.md, t-SNE) and `cxr-mtclip evaluate`.
- ``cxr_retrieval/``: the same metrics as an `evaluate` module, ``evaluate.load(metric_module_path())``.

`evaluate_models` loads on first use (it imports the retrieval stack); the rest is numpy only.
"""

from typing import Any

from .finding_metrics import (
    bidirectional_finding_retrieval_metrics,
    finding_bootstrap_cis,
    finding_classification_bootstrap_cis,
    finding_classification_metrics,
    finding_query_result,
    finding_retrieval_result,
)
from .finding_results import evaluate_findings, finding_columns, findings_markdown
from .metrics import (
    DIRECTIONS,
    PAPER_EXCLUDED,
    SCORE_DECIMALS,
    RetrievalResult,
    bidirectional_retrieval_metrics,
    bidirectional_retrieval_results,
    classification_metrics,
    compute_retrieval_result,
    metric_module_path,
    normalise_report_text,
    retrieval_bootstrap_cis,
    retrieval_metrics,
)
from .statistics import (
    binary_f1,
    bootstrap_ci,
    f1_rows,
    nanmean,
    nanmean_rows,
    roc_auc_rows,
    seed_query_bootstrap,
)
from .tables import format_number, format_paper_tables, metric_sort_key

__all__ = [
    "DIRECTIONS",
    "PAPER_EXCLUDED",
    "SCORE_DECIMALS",
    "RetrievalResult",
    "bidirectional_finding_retrieval_metrics",
    "bidirectional_retrieval_metrics",
    "bidirectional_retrieval_results",
    "binary_f1",
    "bootstrap_ci",
    "classification_metrics",
    "compute_retrieval_result",
    "evaluate_findings",
    "evaluate_models",
    "f1_rows",
    "finding_bootstrap_cis",
    "finding_classification_bootstrap_cis",
    "finding_classification_metrics",
    "finding_columns",
    "finding_query_result",
    "finding_retrieval_result",
    "findings_markdown",
    "format_number",
    "format_paper_tables",
    "metric_module_path",
    "metric_sort_key",
    "nanmean",
    "nanmean_rows",
    "normalise_report_text",
    "retrieval_bootstrap_cis",
    "retrieval_metrics",
    "roc_auc_rows",
    "seed_query_bootstrap",
]


def __getattr__(name: str) -> Any:
    if name == "evaluate_models":
        from .evaluate import evaluate_models

        return evaluate_models
    raise AttributeError(f"module 'cxr_mtclip.evaluation' has no attribute {name!r}")
