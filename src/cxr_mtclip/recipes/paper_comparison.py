"""The paper's published Tables I-III beside our measured numbers: load `paper_results.json`, compare, render.

Used by `cxr_mtclip.recipes.reproduce`; the numbers come from arXiv 2601.05399 (cite the paper).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..evaluation.tables import format_number, metric_sort_key
from ..utils import read_json

PAPER_ARXIV_ID = "2601.05399"
MODEL_KEYS = ("clip", "biomedclip_zero_shot", "biomedclip_fine_tuned")
PAPER_TABLES = (
    ("I", "image_to_text", "Image -> report retrieval"),
    ("II", "text_to_image", "Report -> image retrieval"),
    ("III", "classification", "Normal/abnormal classification (fused head)"),
)


def load_paper_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``paper_results.json``: a citation, the table layout and one value (or null) per cell.

    Example:
        >>> paper = load_paper_results("examples/paper_results.json")  # doctest: +SKIP
        >>> paper["citation"]["arxiv"]  # doctest: +SKIP
        '2601.05399'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: paper results file not found (examples/paper_results.json)")
    data = read_json(path)
    citation = data.get("citation")
    if not isinstance(citation, dict) or citation.get("arxiv") != PAPER_ARXIV_ID or not citation.get("title"):
        raise ValueError(f"{path}: 'citation' must name the paper (title, arxiv '{PAPER_ARXIV_ID}')")
    if not isinstance(data.get("note"), str) or not data["note"].strip():
        raise ValueError(f"{path}: 'note' must say where the values come from")
    values = data.get("values")
    if not isinstance(values, dict) or set(values) != set(MODEL_KEYS):
        raise ValueError(f"{path}: 'values' must have exactly the models {list(MODEL_KEYS)}")
    groups = {group for _, group, _ in PAPER_TABLES}
    for model, metrics in values.items():
        if not isinstance(metrics, dict):
            raise ValueError(f"{path}: values[{model!r}] must map metric keys to numbers or null")
        for key, value in metrics.items():
            if key.partition("/")[0] not in groups:
                raise ValueError(f"{path}: values[{model!r}] key {key!r} must start with one of {sorted(groups)}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or not -1.0 <= value <= 1.0):
                raise ValueError(f"{path}: values[{model!r}][{key!r}] must be null or a fraction in [-1, 1], got {value!r}")
    return data


# -- comparison tables --------------------------------------------------------------------------------


def _ours(entry: Mapping[str, Any], protocol: str, group: str) -> dict[str, tuple[float | None, list | None]]:
    """``{metric: (value, [estimate, lo, hi] or None)}`` of one model for a table group."""
    if group == "classification":
        return {key.partition("/")[2]: (value, None) for key, value in entry["classification"].items()}
    metrics = entry["metrics"].get(protocol, {})
    cis = entry.get("bootstrap_ci", {}).get(protocol, {})
    return {key.partition("/")[2]: (value, cis.get(key)) for key, value in metrics.items() if key.startswith(group + "/")}


def _fmt(value: Any, ci: Sequence[Any] | None = None) -> str:
    """A cell: the value, with its interval when `ci` is ``(estimate, lo, hi)``."""
    return format_number(value, missing="n/a", ci=ci[1:] if ci and len(ci) == 3 else None)


def build_comparison(results: Mapping[str, Any], paper: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Measured (paper protocol, with CIs) and published values per table, metric and model, as plain data."""
    models = results["models"]
    missing = [names[key] for key in MODEL_KEYS if names[key] not in models]
    if missing:
        raise ValueError(f"evaluation results lack model(s) {missing}; have {sorted(models)}")
    tables: dict[str, Any] = {}
    for number, group, title in PAPER_TABLES:
        rows: dict[str, dict[str, Any]] = {}
        ours = {key: _ours(models[names[key]], "paper", group) for key in MODEL_KEYS}
        metrics = sorted({m for per_model in ours.values() for m in per_model}, key=metric_sort_key)
        for metric in metrics:
            rows[metric] = {}
            for key in MODEL_KEYS:
                value, ci = ours[key].get(metric, (None, None))
                rows[metric][key] = {"ours": value, "ours_ci": ci[1:] if ci else None,
                                     "paper": paper["values"][key].get(f"{group}/{metric}")}
        tables[number] = {"group": group, "title": title, "protocol": "paper" if group != "classification" else "head",
                          "rows": rows}
    return {"models": {key: names[key] for key in MODEL_KEYS}, "tables": tables}


def format_comparison_markdown(
    results: Mapping[str, Any], paper: Mapping[str, Any], comparison: Mapping[str, Any], *, banner: str
) -> str:
    """Tables I-III (ours vs paper), the cross-modal tables and the own-half analysis; `banner` heads every table."""
    names = comparison["models"]
    models = results["models"]
    citation = paper["citation"]
    counts = results["counts"]
    data_line = (f"Data: {results['data_note']} ({counts['evaluated']} test studies: {counts['labels']['normal']} normal, "
                 f"{counts['labels']['abnormal']} abnormal; {counts['unique_reports']} distinct normalised reports).")
    lines = [
        f"# Reproduction of arXiv {citation['arxiv']}: Tables I-III",
        "",
        f"> **{banner}**",
        "",
        f"Paper: {', '.join(citation.get('authors', []))}. *{citation['title']}*. arXiv:{citation['arxiv']} "
        f"({citation.get('year', '')}). Published values: `examples/paper_results.json` ({paper.get('status', 'unknown status')}).",
        "",
        data_line,
        "",
        "Protocols: `paper` = Algorithm 2 (image and report queries ranked against the fused image + report "
        "embeddings); `cross-modal` = image queries against report embeddings and report queries against image "
        "embeddings. `accuracy@k` is instance accuracy (the paired study in the top k); `accuracy_dedup@k` is "
        "duplicate-aware (a study whose normalised report equals the pair's also counts). Ours: value "
        f"[95% bootstrap CI over test queries, {results['n_boot']} resamples]; 'not copied' = the paper's value is "
        "not in paper_results.json yet. Definitions: docs/metrics.md.",
        "",
    ]
    header_models = [names[key] for key in MODEL_KEYS]
    for number, table in comparison["tables"].items():
        protocol = "paper (Algorithm 2)" if table["group"] != "classification" else "fused-logit head"
        lines += [f"## Table {number}: {table['title']} - protocol: {protocol}", "", f"_{banner}_", ""]
        if table["group"] == "classification":
            lines += ["The CLIP and zero-shot heads are untrained (seeded random `Linear`): chance-level by construction.", ""]
        lines.append("| Metric | " + " | ".join(f"{m}: ours | {m}: paper" for m in header_models) + " |")
        lines.append("|---|" + "---:|---:|" * len(header_models))
        for metric, row in table["rows"].items():
            cells = []
            for key in MODEL_KEYS:
                cell = row[key]
                ci = [cell["ours"], *cell["ours_ci"]] if cell["ours_ci"] else None
                cells += [_fmt(cell["ours"], ci), "not copied" if cell["paper"] is None else _fmt(cell["paper"])]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    for number, group, title in PAPER_TABLES[:2]:
        lines += [f"## Table {number} again, protocol: cross-modal (ours only; the paper reports the paper protocol)", "",
                  f"_{banner}_", "", "| Metric | " + " | ".join(header_models) + " |", "|---|" + "---:|" * len(header_models)]
        ours = {key: _ours(models[names[key]], "cross-modal", group) for key in MODEL_KEYS}
        for metric in sorted({m for v in ours.values() for m in v}, key=metric_sort_key):
            cells = []
            for key in MODEL_KEYS:
                value, ci = ours[key].get(metric, (None, None))
                cells.append(_fmt(value, ci))
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## How much of the paper-protocol Accuracy@1 comes from the query's own half", "", f"_{banner}_", "",
        "In the paper protocol the query's own embedding is half of its pair's fused vector (own-pair score >= "
        "sqrt(1/2) whatever the model learned). 'Paper-only top-1' = share of queries ranked first by the paper "
        "protocol but not by the cross-modal one. The '(own pair excluded)' columns rank the other studies only "
        "(accuracy@k is then undefined; the duplicate-aware and label metrics remain).", "",
        "| Model | Direction | Accuracy@1 paper | Accuracy@1 cross-modal | Difference | Paper-only top-1 | "
        "accuracy_dedup@1 paper | accuracy_dedup@1 own pair excluded | precision@5 paper | precision@5 own pair excluded |",
        "|---|---|" + "---:|" * 8,
    ]
    for key in MODEL_KEYS:
        entry = models[names[key]]
        for direction, values in entry.get("self_match", {}).items():
            paper_metrics = entry["metrics"].get("paper", {})
            excluded = entry["metrics"].get("paper (own pair excluded)", {})
            cells = [values.get("paper/accuracy@1"), values.get("cross-modal/accuracy@1"), values.get("difference/accuracy@1"),
                     values.get("paper_only_top1_fraction"), paper_metrics.get(f"{direction}/accuracy_dedup@1"),
                     excluded.get(f"{direction}/accuracy_dedup@1"), paper_metrics.get(f"{direction}/precision@5"),
                     excluded.get(f"{direction}/precision@5")]
            lines.append(f"| {names[key]} | {direction.replace('_', ' ')} | " + " | ".join(_fmt(c) for c in cells) + " |")
    lines += ["", "Full per-model results (every metric, CIs, FAISS check, t-SNE): `eval/results.md`, `eval/results.json`.", ""]
    return "\n".join(lines)


# -- the pipeline -----------------------------------------------------------------------------------------
