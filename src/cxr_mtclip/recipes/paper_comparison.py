"""The paper's published Tables I-III beside our measured numbers: load `paper_results.json`, compare, render.

The paper (arXiv 2601.05399, cite it) has three tables, all in its own protocol (Algorithm 2: queries ranked
against fused image + report embeddings): Table I = Accuracy@k and mean similarity@k in both directions;
Table II = image->text label precision (Precision@k, similarity, F1, ROC AUC, mAP); Table III = the same for
text->image. No table reports the classification head. `paper_results.json` holds those tables in the paper's
layout (rows in the paper's order, the paper's row labels, one value per model column); `paper_row_key` maps each
row label to the metric key that reproduces it (docs/metrics.md: label metrics use the paper-compatible readings).

Our extra tables, each named as ours: Tables II-III with the standard definitions, Tables I-III in the cross-modal
protocol, the own-pair analysis and the head's classification metrics.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..evaluation.metrics import DIRECTIONS, PAPER_EXCLUDED
from ..evaluation.paper_metrics import PAPER_COMPATIBLE_KEYS
from ..evaluation.tables import OWN_PAIR_NOTE, format_number, metric_sort_key
from ..utils import read_json

__all__ = [
    "MODEL_KEYS",
    "PAPER_ARXIV_ID",
    "PAPER_TABLES",
    "build_comparison",
    "format_comparison_markdown",
    "load_paper_results",
    "paper_cells",
    "paper_row_key",
]

PAPER_ARXIV_ID = "2601.05399"
MODEL_KEYS = ("biomedclip_fine_tuned", "biomedclip_zero_shot", "clip")
"""The paper's model columns, in its order: fine-tuned BiomedCLIP, zero-shot BiomedCLIP, CLIP."""
PAPER_TABLES = (
    ("I", ("image_to_text", "text_to_image"), "Cross-modal retrieval accuracy"),
    ("II", ("image_to_text",), "Image-to-text retrieval precision by binary labels"),
    ("III", ("text_to_image",), "Text-to-image retrieval precision by binary labels"),
)
"""(number, directions, title) of each published table."""
DIRECTION_NAMES = {"image_to_text": "image-to-text retrieval", "text_to_image": "text-to-image retrieval"}
_ROW_KEYS = (
    (re.compile(r"Accuracy@(\d+)"), "accuracy@{k}"),
    (re.compile(r"(?:Mean similarity score|Similarity score)@(\d+)"), "mean_cosine@{k}"),
    (re.compile(r"Precision@(\d+)"), PAPER_COMPATIBLE_KEYS["precision@k"].replace("@k", "@{k}")),
    (re.compile(r"F1 score"), PAPER_COMPATIBLE_KEYS["f1"]),
    (re.compile(r"ROC AUC"), PAPER_COMPATIBLE_KEYS["roc_auc"]),
    (re.compile(r"mAP"), PAPER_COMPATIBLE_KEYS["map"]),
)
_STANDARD_ROWS = ("f1", "roc_auc", "map", "roc_auc_top10_mean_score", "map_top10_mean_score")
"""Our extra rows beside Tables II-III: the standard definitions and the alternative ROC AUC / mAP reading."""


def _is_standard(key: str) -> bool:
    metric = key.partition("/")[2]
    return metric.startswith("precision@") or metric in _STANDARD_ROWS


def paper_row_key(label: str) -> str:
    """Our metric key (without direction) for a row label of the paper's tables; ValueError for an unknown label.

    Label metrics map to the paper-compatible readings (docs/metrics.md): Precision@k -> ``label_hit_rate@k``,
    F1 score -> ``f1@1``, ROC AUC -> ``roc_auc_top1_score``, mAP -> ``map_top1_score``.

    Example:
        >>> paper_row_key("Mean similarity score@5"), paper_row_key("Precision@3")
        ('mean_cosine@5', 'label_hit_rate@3')
    """
    for pattern, key in _ROW_KEYS:
        match = pattern.fullmatch(label.strip())
        if match:
            return key.format(k=match.group(1)) if match.groups() else key
    raise ValueError(f"unknown row label {label!r} of the paper's tables; expected Accuracy@k, Similarity score@1, "
                     "Mean similarity score@k, Precision@k, F1 score, ROC AUC or mAP")


def load_paper_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``paper_results.json``: a citation and Tables I-III in the paper's layout (a number or null per cell).

    Raises FileNotFoundError or ValueError naming the file and the offending field.

    Example:
        >>> paper = load_paper_results("examples/paper_results.json")  # doctest: +SKIP
        >>> paper["tables"]["II"]["sections"][0]["rows"][0]["row"]  # doctest: +SKIP
        'Precision@1'
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
    columns = data.get("columns")
    if not isinstance(columns, dict) or set(columns) != set(MODEL_KEYS):
        raise ValueError(f"{path}: 'columns' must name the paper's column of each model {list(MODEL_KEYS)}")
    tables = data.get("tables")
    if not isinstance(tables, dict) or set(tables) != {number for number, _, _ in PAPER_TABLES}:
        raise ValueError(f"{path}: 'tables' must hold exactly Tables I, II and III")
    for number, directions, _ in PAPER_TABLES:
        sections = tables[number].get("sections") if isinstance(tables[number], dict) else None
        if not isinstance(sections, list) or [s.get("direction") for s in sections] != list(directions):
            raise ValueError(f"{path}: tables[{number!r}]['sections'] must be the directions {list(directions)}, in order")
        for section in sections:
            for i, row in enumerate(section.get("rows") or []):
                where = f"tables[{number!r}] {section['direction']} row {i}"
                try:
                    paper_row_key(str(row.get("row", "")))
                except ValueError as err:
                    raise ValueError(f"{path}: {where}: {err}") from err
                values = row.get("values")
                if not isinstance(values, dict) or set(values) != set(MODEL_KEYS):
                    raise ValueError(f"{path}: {where} ({row.get('row')}) must give a value (or null) for {list(MODEL_KEYS)}")
                for model, value in values.items():
                    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                              or not math.isfinite(value) or not 0.0 <= value <= 1.0):
                        raise ValueError(f"{path}: {where} ({row['row']}) {model}: must be null or a fraction in "
                                         f"[0, 1], got {value!r}")
            if not section.get("rows"):
                raise ValueError(f"{path}: tables[{number!r}] {section['direction']} has no rows")
    return data


# -- comparison tables --------------------------------------------------------------------------------


def _cell(entry: Mapping[str, Any], protocol: str, key: str) -> dict[str, Any]:
    """``{"ours": value, "ours_ci": [lo, hi] or None}`` of one model's metric in one protocol."""
    value = entry["metrics"].get(protocol, {}).get(key)
    ci = entry.get("bootstrap_ci", {}).get(protocol, {}).get(key)
    return {"ours": value, "ours_ci": list(ci[1:]) if ci else None}


def _fmt(cell: Mapping[str, Any], decimals: int = 3) -> str:
    return format_number(cell.get("ours"), decimals, missing="n/a", ci=cell.get("ours_ci"))


def build_comparison(results: Mapping[str, Any], paper: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Ours (paper protocol, with 95 % CIs) beside the published value for every cell of Tables I-III, plus our
    extra tables (standard definitions, cross-modal protocol, own-pair analysis, head), as plain data.

    Args:
        results: what `cxr_mtclip.evaluation.evaluate.evaluate_models` returned (protocol "both").
        paper: `load_paper_results`.
        names: our model name of each of `MODEL_KEYS`.
    """
    models = results["models"]
    missing = [names[key] for key in MODEL_KEYS if names[key] not in models]
    if missing:
        raise ValueError(f"evaluation results lack model(s) {missing}; have {sorted(models)}")
    entries = {key: models[names[key]] for key in MODEL_KEYS}
    tables: dict[str, Any] = {}
    for number, _, title in PAPER_TABLES:
        sections = []
        for section in paper["tables"][number]["sections"]:
            direction = section["direction"]
            rows = []
            for row in section["rows"]:
                key = f"{direction}/{paper_row_key(row['row'])}"
                cells = {model: {**_cell(entries[model], "paper", key), "paper": row["values"][model]} for model in MODEL_KEYS}
                rows.append({"row": row["row"], "key": key, "cells": cells})
            sections.append({"direction": direction, "rows": rows})
        tables[number] = {"title": title, "protocol": "paper", "sections": sections}

    standard: dict[str, Any] = {}
    for direction in DIRECTIONS:
        metrics = results["models"][names[MODEL_KEYS[0]]]["metrics"].get("paper", {})
        keys = sorted((k.partition("/")[2] for k in metrics if k.startswith(direction + "/") and _is_standard(k)),
                      key=metric_sort_key)
        standard[direction] = {key: {model: _cell(entries[model], "paper", f"{direction}/{key}") for model in MODEL_KEYS}
                               for key in keys}
    cross_modal = {
        number: [{"row": row["row"], "key": row["key"],
                  "cells": {model: _cell(entries[model], "cross-modal", row["key"]) for model in MODEL_KEYS}}
                 for section in table["sections"] for row in section["rows"]]
        for number, table in tables.items()
    }
    own_pair = {model: {direction: _own_pair_row(entries[model], direction) for direction in DIRECTIONS}
                for model in MODEL_KEYS}
    head = {model: dict(entries[model].get("classification", {})) for model in MODEL_KEYS}
    return {"models": {key: names[key] for key in MODEL_KEYS}, "tables": tables,
            "ours_extra": {"standard_definitions": standard, "cross_modal": cross_modal, "own_pair": own_pair,
                           "head": head}}


def _own_pair_row(entry: Mapping[str, Any], direction: str) -> dict[str, Any]:
    match = entry.get("self_match", {}).get(direction, {})
    own, cosine = match.get("own_pair_score", {}), match.get("pair_cosine", {})
    excluded = entry["metrics"].get(PAPER_EXCLUDED, {})
    return {
        "accuracy@1 paper": match.get("paper/accuracy@1"),
        "accuracy@1 cross-modal": match.get("cross-modal/accuracy@1"),
        "paper-only top-1": match.get("paper_only_top1_fraction"),
        "own-pair score min": own.get("min"),
        "own-pair score median": own.get("median"),
        "own-pair score max": own.get("max"),
        "image.report cosine min": cosine.get("min"),
        "image.report cosine mean": match.get("mean_pair_cosine"),
        "accuracy_dedup@1 own pair excluded": excluded.get(f"{direction}/accuracy_dedup@1"),
        "label_hit_rate@1 own pair excluded": excluded.get(f"{direction}/label_hit_rate@1"),
    }


def format_comparison_markdown(
    results: Mapping[str, Any], paper: Mapping[str, Any], comparison: Mapping[str, Any], *, banner: str
) -> str:
    """Tables I-III laid out as the paper's (ours [95 % CI] beside the published value), then our extra tables."""
    names = comparison["models"]
    citation = paper["citation"]
    counts = results["counts"]
    columns = paper["columns"]
    lines = [
        f"# Reproduction of arXiv {citation['arxiv']}: Tables I-III",
        "",
        f"> **{banner}**",
        "",
        f"Paper: {', '.join(citation.get('authors', []))}. *{citation['title']}*. arXiv:{citation['arxiv']} "
        f"({citation.get('year', '')}). Published values: `examples/paper_results.json` ({paper.get('status', '')}).",
        "",
        f"Data: {results['data_note']} ({counts['evaluated']} test studies: {counts['labels']['normal']} normal, "
        f"{counts['labels']['abnormal']} abnormal; {counts['unique_reports']} distinct normalised reports).",
        "",
        "Tables I-III use the paper's protocol (Algorithm 2: image and report queries ranked against the fused image + "
        "report embeddings) and its row labels; in brackets, our metric key. The paper does not define its label "
        "metrics; the keys are the readings that reproduce its numbers (docs/metrics.md): Precision@k = "
        "`label_hit_rate@k` (a same-label item in the top k), F1 = `f1@1` (top-1 label), ROC AUC / mAP = "
        "`roc_auc_top1_score` / `map_top1_score` (the top-1 similarity as a score for the query's label: not a "
        f"retrieval metric). Ours: value [95% bootstrap CI over test queries, {results['n_boot']} resamples].",
        "",
    ]
    header = "| Metric | " + " | ".join(f"{names[m]}: ours | {columns[m]}: paper" for m in MODEL_KEYS) + " |"
    align = "|---|" + "---:|---:|" * len(MODEL_KEYS)
    for number, table in comparison["tables"].items():
        # the paper's caption in quotes: its "cross-modal" is not this package's cross-modal protocol
        lines += [f"## Table {number} (the paper's \"{table['title']}\"), paper protocol", "", f"_{banner}_", "",
                  header, align]
        for section in table["sections"]:
            if len(table["sections"]) > 1:
                lines.append(f"| *{DIRECTION_NAMES[section['direction']]}* |" + " |" * (2 * len(MODEL_KEYS)))
            for row in section["rows"]:
                cells = []
                for model in MODEL_KEYS:
                    cell = row["cells"][model]
                    cells += [_fmt(cell), format_number(cell["paper"], 4, missing="not reported")]
                lines.append(f"| {row['row']} (`{row['key'].partition('/')[2]}`) | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _extra_tables(results, comparison, banner)
    lines += ["Full per-model results (every metric, CIs, FAISS check, t-SNE): `eval/results.md`, `eval/results.json`.", ""]
    return "\n".join(lines)


def _extra_tables(results: Mapping[str, Any], comparison: Mapping[str, Any], banner: str) -> list[str]:
    names = comparison["models"]
    extra = comparison["ours_extra"]
    header = "| Metric | " + " | ".join(names[m] for m in MODEL_KEYS) + " |"
    align = "|---|" + "---:|" * len(MODEL_KEYS)
    lines = ["## Ours: Tables II-III with the standard definitions (paper protocol)", "", f"_{banner}_", "",
             "Not in the paper. `precision@k` = fraction of the top k with the query's label; `f1` = binary F1 of the "
             "top-5 majority vote; `roc_auc` / `map` = per-query AUC / AP of the ranking for same-label items, averaged; "
             "`*_top10_mean_score` = the alternative reading of the paper's ROC AUC / mAP (mean of the top-10 "
             "similarities as the score).", ""]
    for direction, rows in extra["standard_definitions"].items():
        lines += [f"### {DIRECTION_NAMES[direction]}", "", header, align]
        lines += [f"| {key} | " + " | ".join(_fmt(row[m]) for m in MODEL_KEYS) + " |" for key, row in rows.items()]
        lines.append("")
    lines += ["## Ours: Tables I-III in the cross-modal protocol", "", f"_{banner}_", "",
              "Not in the paper. Image queries ranked against report embeddings and report queries against image "
              "embeddings: the query's own embedding is not in the gallery.", ""]
    for number, rows in extra["cross_modal"].items():
        lines += [f"### Table {number}, cross-modal", "", header, align]
        lines += [f"| {row['key']} | " + " | ".join(_fmt(row['cells'][m]) for m in MODEL_KEYS) + " |" for row in rows]
        lines.append("")
    lines += ["## Ours: how much of the paper-protocol Accuracy@1 comes from the query's own half", "", f"_{banner}_",
              "", OWN_PAIR_NOTE + " 'Paper-only top-1' = share of queries ranked first by the paper protocol but not "
              "by the cross-modal one; the 'own pair excluded' columns rank the other studies only.", ""]
    keys = list(next(iter(next(iter(extra["own_pair"].values())).values())))
    lines += ["| Model | Direction | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
    for model in MODEL_KEYS:
        for direction, row in extra["own_pair"][model].items():
            lines.append(f"| {names[model]} | {DIRECTION_NAMES[direction]} | "
                         + " | ".join(format_number(row[k], 3, missing="n/a") for k in keys) + " |")
    lines.append("")
    for model in MODEL_KEYS:
        row = extra["own_pair"][model]["text_to_image"]
        lines.append(
            f"- {names[model]}: report -> image Accuracy@1 is {format_number(row['accuracy@1 paper'], 3, missing='n/a')} "
            f"in the paper protocol vs {format_number(row['accuracy@1 cross-modal'], 3, missing='n/a')} cross-modally. "
            f"Its image.report cosines average {format_number(row['image.report cosine mean'], 3, missing='n/a')}, yet each "
            f"report still scores its own study at sqrt((1 + c) / 2) (median "
            f"{format_number(row['own-pair score median'], 3, missing='n/a')}, min "
            f"{format_number(row['own-pair score min'], 3, missing='n/a')}) through its own half of the fused vector, "
            "a share no other study gets.")
    lines += ["", "## Ours: the classification head (not reported by the paper)", "", f"_{banner}_", "",
              "Fused-logit head on the same test split. An untrained head (CLIP, zero-shot) is a seeded random `Linear`: "
              "chance level by construction.", "", header, align]
    head = extra["head"]
    for key in sorted({k for values in head.values() for k in values}, key=lambda k: metric_sort_key(k.partition("/")[2])):
        lines.append(f"| {key} | " + " | ".join(format_number(head[m].get(key), 3, missing="n/a") for m in MODEL_KEYS) + " |")
    lines.append("")
    return lines


def paper_cells(paper: Mapping[str, Any]) -> dict[tuple[str, str, str], float | None]:
    """``{(table number, "<direction>/<row label>", model key): published value}`` for every cell of the tables.

    Example:
        >>> paper_cells(load_paper_results("examples/paper_results.json"))[("I", "text_to_image/Accuracy@1", "clip")]  # doctest: +SKIP
        0.94
    """
    return {(number, f"{section['direction']}/{row['row']}", model): row["values"][model]
            for number, table in paper["tables"].items() for section in table["sections"]
            for row in section["rows"] for model in MODEL_KEYS}
