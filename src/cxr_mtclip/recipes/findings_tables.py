"""The findings experiment's results as markdown (`format_findings_experiment`): the question, the data, the arms,
one table of means [95% CI] with each arm's difference from the binary arm, and a per-finding table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..evaluation.tables import escape_cell, format_number

__all__ = ["BINARY", "format_findings_experiment"]

BINARY = "binary (paper)"
"""The arm with the paper's objective: every other arm's difference is taken from it."""


def format_findings_experiment(results: Mapping[str, Any], decimals: int = 3) -> str:
    """The experiment as markdown: question, data, arms, one table of means [95% CI] and differences, per finding."""
    arms = [a["name"] for a in results["arms"]]
    diffs = [f"{a} - {BINARY}" for a in arms if a != BINARY]
    data = results["data"]
    lines = [
        "# Multi-label findings vs the paper's binary objective", "",
        f"_Question: {results['question']}_", "",
        *([f"**Warning: {results['warning']}**", ""] if results.get("warning") else []),
        f"- **Data**: {data['note']}; split seed {data['split_seed']}: "
        + ", ".join(f"{k} {v}" for k, v in data["splits"].items())
        + f"; test: {data['test_known']} studies with known findings ({data['test_no_finding']} with none).",
        f"- **Model**: `{results['backbone']}`; base loss weights " + ", ".join(f"{k}={v:g}" for k, v in results["base_weights"].items())
        + f"; {results['recipe']['epochs']} epochs, batch {results['recipe']['batch_size']}, learning rate "
        f"{results['recipe']['learning_rate']}; seeds {', '.join(map(str, results['seeds']))}.",
        "- **Arms**: " + "; ".join(f"`{a['name']}`: {a['description']}" for a in results["arms"]) + ".",
        f"- **Protocol**: {results['recipe']['protocol']}. Cells: mean over seeds [95% CI: {results['interval']['method']}, "
        f"{results['interval']['n_boot']} resamples]; the last columns are each arm minus `{BINARY}` (paired draws).",
        "",
        "| Metric | " + " | ".join(escape_cell(a) for a in arms + diffs) + " |",
        "|---|" + "---:|" * (len(arms) + len(diffs)),
    ]
    for key, row in results["metrics"].items():
        cells = []
        for name in arms + diffs:
            cell = row.get(name)
            cells.append("-" if cell is None else format_number(cell["mean"], decimals, missing="n/a",
                                                                ci=(cell["ci_low"], cell["ci_high"])))
        lines.append(f"| {key.replace('_', ' ').replace('image to text', 'image->report').replace('text to image', 'report->image')} | "
                     + " | ".join(cells) + " |")
    k = max(results["ks"])
    share = data.get("test_drawn_share") or {}
    lines += ["", f"Per finding: image->report finding_precision@{k}, mean over seeds (few test queries each: no interval)"
              + ("; `drawn` = share of the test studies with the finding whose phantom shows a sign of it" if share else "")
              + ".", "",
              "| Finding | test studies | " + ("drawn | " if share else "") + " | ".join(escape_cell(a) for a in arms) + " |",
              "|---|---:|" + ("---:|" if share else "") + "---:|" * len(arms)]
    for name, row in results["per_finding"].items():
        drawn = [format_number(share.get(name), 2, missing="n/a")] if share else []
        lines.append(f"| {name} | {data['test_per_finding'][name]} | " + " | ".join(
            drawn + [format_number(row.get(a), decimals, missing="n/a") for a in arms]) + " |")
    lines += ["", f"_Data: {data['note']}_", ""]
    return "\n".join(lines)
