"""Markdown tables of metrics: one number format, one metric order, the paper's Tables I-III layout, results.md.

Every table the package writes (evaluation results, model cards, ablations, the paper comparison) formats its
numbers with `format_number` and orders metrics with `metric_sort_key`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .metrics import PAPER_EXCLUDED

__all__ = [
    "METRIC_FAMILIES",
    "OWN_PAIR_NOTE",
    "escape_cell",
    "format_number",
    "format_paper_tables",
    "metric_sort_key",
    "results_markdown",
]

METRIC_FAMILIES = (
    "accuracy", "accuracy_dedup", "mean_cosine", "precision", "label_hit_rate", "f1", "roc_auc", "map",
    "roc_auc_top1_score", "map_top1_score", "roc_auc_top10_mean_score", "map_top10_mean_score",
)
OWN_PAIR_NOTE = (
    "In the paper protocol a query's own embedding is half of its study's fused vector, so the query scores its own "
    "study at sqrt((1 + c) / 2), c = cos(image, report) of the pair (the own-pair score): at least c, 1 for an aligned "
    "pair, 0 for an anti-aligned one; measured values below. Other studies get no such share, so the paper protocol "
    "can rank the pair first where the cross-modal protocol (image against report embeddings) does not."
)
"""How the query's own half lifts its pair in the paper protocol (no fixed floor: it depends on the pair cosine)."""
TABLE_TITLES = {
    "image_to_text": "Image -> report retrieval",
    "text_to_image": "Report -> image retrieval",
    "classification": "Normal/abnormal classification (fused logit)",
    "": "Metrics",
}


def metric_sort_key(metric: str) -> tuple[int, int, str]:
    """Order of metrics in every table: by family (`METRIC_FAMILIES`), then cut-off k, then name.

    Example:
        >>> sorted(["map", "accuracy@10", "accuracy@1", "precision@5"], key=metric_sort_key)
        ['accuracy@1', 'accuracy@10', 'precision@5', 'map']
    """
    name, _, k = metric.partition("@")
    k = k.split()[0] if k.split() else ""
    family = METRIC_FAMILIES.index(name) if name in METRIC_FAMILIES else len(METRIC_FAMILIES)
    return family, int(k) if k.isdigit() else 0, metric


def format_number(value: Any, decimals: int = 4, *, missing: str = "-", ci: Sequence[Any] | None = None) -> str:
    """A table cell: `value` with `decimals` decimals, ``n/a`` for NaN, `missing` for None, `` [lo, hi]`` with a CI.

    Example:
        >>> format_number(0.12345), format_number(None), format_number(float("nan")), format_number(0.5, 2, ci=(0.4, 0.6))
        ('0.1235', '-', 'n/a', '0.50 [0.40, 0.60]')
    """
    if value is None:
        return missing
    number = float(value)
    if math.isnan(number):
        return "n/a"
    text = f"{number:.{decimals}f}"
    if ci is not None and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
        text += f" [{float(ci[0]):.{decimals}f}, {float(ci[1]):.{decimals}f}]"
    return text


def escape_cell(text: str) -> str:
    """Text safe inside a markdown table cell (pipes escaped, newlines folded)."""
    return text.replace("|", "\\|").replace("\n", " ")


def format_paper_tables(
    results: Mapping[str, Mapping[str, float]], *, title_note: str, decimals: int = 4, missing: str = "-",
    intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> str:
    """Markdown tables, one per direction (rows metrics, columns models), the paper's row labels and order.

    Args:
        results: ``{model name: flat metrics dict}`` with keys such as ``image_to_text/accuracy@1``
            or ``classification/roc_auc``; keys without a ``/`` go to a table titled "Metrics".
        title_note: data provenance (e.g. "synthetic phantom images"), printed above every table.
        missing: the cell of a metric a model lacks (or holds as None); NaN prints as ``n/a``.
        intervals: ``{model name: {key: (low, high)}}`` (e.g. `evaluate_models`' ``bootstrap_ci``): a cell with
            one prints ``value [low, high]``.

    Example:
        >>> print(format_paper_tables({"zero-shot": {"image_to_text/map": 0.5}}, title_note="phantom"))
        ### Image -> report retrieval
        <BLANKLINE>
        _Data: phantom_
        <BLANKLINE>
        | Metric | zero-shot |
        |---|---:|
        | map | 0.5000 |
        <BLANKLINE>
    """
    if not isinstance(title_note, str) or not title_note.strip():
        raise ValueError("title_note must be a non-empty string saying where the data came from")
    if not results:
        raise ValueError("results is empty; expected {model name: metrics dict}")
    groups: dict[str, set[str]] = {}
    for model, metrics in results.items():
        if not isinstance(metrics, Mapping):
            raise ValueError(f"results[{model!r}] must be a dict of metric name -> float, got {type(metrics).__name__}")
        for key in metrics:
            group, _, metric = key.rpartition("/")
            groups.setdefault(group, set()).add(metric)
    models = list(results)
    known = [g for g in TABLE_TITLES if g in groups]
    ordered_groups = known + sorted(g for g in groups if g not in TABLE_TITLES)
    header = "| Metric | " + " | ".join(escape_cell(str(m)) for m in models) + " |"
    align = "|---|" + "---:|" * len(models)
    blocks = []
    for group in ordered_groups:
        title = TABLE_TITLES.get(group, group)
        lines = [f"### {title}", "", f"_Data: {title_note.strip()}_", "", header, align]
        for metric in sorted(groups[group], key=metric_sort_key):
            key = f"{group}/{metric}" if group else metric
            cells = [format_number(results[m].get(key), decimals, missing=missing,
                                   ci=((intervals or {}).get(m) or {}).get(key)) for m in models]
            lines.append(f"| {escape_cell(metric)} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def results_markdown(results: Mapping[str, Any]) -> str:
    """``results.md`` of `cxr_mtclip.evaluation.evaluate.evaluate_models`: its results.json content as tables.

    Example:
        >>> print(results_markdown(json.load(open("out/results.json"))))  # doctest: +SKIP
    """
    note = results["data_note"]
    counts = results["counts"]
    models = results["models"]
    lines = [
        "# Retrieval evaluation",
        "",
        f"_Data: {note}_",
        "",
        f"{counts['evaluated']} studies evaluated ({counts['labels']['normal']} normal, "
        f"{counts['labels']['abnormal']} abnormal, {counts['unique_reports']} distinct normalised reports); "
        f"left out: {counts['left_out_no_image']} without image, {counts['left_out_no_report']} without report. "
        f"Metric definitions: docs/metrics.md. Cut-offs k = {', '.join(map(str, results['ks']))}; seed {results['seed']}.",
        "",
    ]
    for protocol in results["protocols"]:
        if protocol == "cross-modal":
            lines += ["## Protocol: cross-modal", "",
                      "Image queries ranked against report embeddings; report queries against image embeddings.", ""]
            table = {name: entry["metrics"]["cross-modal"] for name, entry in models.items()}
            cis = {name: entry.get("bootstrap_ci", {}).get("cross-modal", {}) for name, entry in models.items()}
        else:
            lines += ["## Protocol: paper (Algorithm 2)", "",
                      "Image and report queries ranked against the fused (image + report) embeddings. The query's own "
                      "embedding is half of its pair's fused vector; the '(own pair excluded)' columns remove that row "
                      "(Accuracy@k is then undefined: n/a).", ""]
            table, cis = {}, {}
            for name, entry in models.items():
                table[name] = entry["metrics"]["paper"]
                table[f"{name} (own pair excluded)"] = entry["metrics"][PAPER_EXCLUDED]
                cis[name] = entry.get("bootstrap_ci", {}).get("paper", {})
                cis[f"{name} (own pair excluded)"] = entry.get("bootstrap_ci", {}).get(PAPER_EXCLUDED, {})
        # bootstrap_ci holds (estimate, low, high): the cells print the value and [low, high]
        cis = {name: {key: ci[-2:] for key, ci in values.items()} for name, values in cis.items()}
        if any(cis.values()):
            lines += ["Cells: value [95% bootstrap interval over queries] (`bootstrap_ci` in results.json).", ""]
        lines += [format_paper_tables(table, title_note=note, missing="n/a", intervals=cis), ""]
    lines += ["## Classification head (fused logit)", "",
              "A model whose head was not trained (e.g. the zero-shot backbone) has a random head: chance-level numbers.", ""]
    lines += [format_paper_tables({name: entry["classification"] for name, entry in models.items()},
                                  title_note=note, missing="n/a"), ""]
    if "paper" in results["protocols"]:
        lines += ["## Paper protocol: how much comes from the query's own half", "", OWN_PAIR_NOTE, "",
                  "| Model | Direction | Accuracy@1 paper | Accuracy@1 cross-modal | Difference | Paper-only top-1 | "
                  "Own-pair score min | median | max | Image.report cosine min | mean |",
                  "|---|---|" + "---:|" * 9]
        for name, entry in models.items():
            for direction, values in entry["self_match"].items():
                own, cosine = values.get("own_pair_score", {}), values.get("pair_cosine", {})
                cells = [values.get(key) for key in ("paper/accuracy@1", "cross-modal/accuracy@1", "difference/accuracy@1",
                                                     "paper_only_top1_fraction")]
                cells += [own.get("min"), own.get("median"), own.get("max"), cosine.get("min"), values.get("mean_pair_cosine")]
                lines.append(f"| {name} | {direction} | " + " | ".join(format_number(c, missing="n/a") for c in cells) + " |")
        lines.append("")
    lines += ["## FAISS check", "",
              "Fraction of queries whose top-1 score from a flat `datasets` FAISS index equals the numpy top-1 score.", ""]
    for name, entry in models.items():
        checks = ", ".join(f"{key}: {format_number(value, missing='n/a')}" for key, value in entry["index_check"].items())
        lines.append(f"- {name}: {checks}")
    lines.append("")
    pngs = [(name, entry["tsne_png"]) for name, entry in models.items() if entry.get("tsne_png")]
    if pngs:
        lines += ["## t-SNE of fused embeddings", ""]
        lines += [f"![{name}]({png})" for name, png in pngs]
        lines.append("")
    return "\n".join(lines)
