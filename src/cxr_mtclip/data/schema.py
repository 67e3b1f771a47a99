"""The study schema, declared once: columns (`OPENI_FEATURES`), the label and report rules, and data provenance.

Imports nothing from `cxr_mtclip` but `data.findings` (itself a bottom module, for the `finding_labels`
column type): every other data, training and evaluation module builds on it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import datasets
from datasets import ClassLabel, Features, Value

from .findings import finding_labels_feature

__all__ = [
    "LABEL_NAMES",
    "OPENI_FEATURES",
    "SPLIT_NAMES",
    "data_note",
    "data_provenance",
    "join_report",
    "label_from_mesh",
]

LABEL_NAMES = ["normal", "abnormal"]
SPLIT_NAMES = ("train", "validation", "test")

OPENI_FEATURES = Features(
    {
        "uid": Value("string"),
        "image": datasets.Image(),
        "findings": Value("string"),
        "impression": Value("string"),
        "report": Value("string"),
        "label": ClassLabel(names=LABEL_NAMES),
        "mesh": Value("string"),
        "view": Value("string"),
        "image_file": Value("string"),
        "source": Value("string"),
        # multi-label findings from the MeSH terms (`data.findings`); None = unknown (`No Indexing`), [] = none
        "finding_labels": finding_labels_feature(),
    }
)

_UNKNOWN_MESH = {"", "nan", "none", "null", "n/a", "na", "unknown", "?", "-"}


def label_from_mesh(mesh: str | None, *, source: str | None = None) -> int:
    """0 (normal) iff the MeSH string is exactly "normal" after strip/casefold, else 1 (abnormal).

    Raises ValueError (naming `source` when given) for an empty or placeholder MeSH value.

    Example:
        >>> label_from_mesh("normal"), label_from_mesh("Cardiomegaly/mild;Pleural Effusion/left")
        (0, 1)
    """
    text = "" if mesh is None else str(mesh).strip()
    where = f"{source}: " if source else ""
    if text.casefold() in _UNKNOWN_MESH or not re.search(r"[A-Za-z]", text):
        raise ValueError(
            f"{where}unknown label: MeSH value {mesh!r} is neither 'normal' nor a MeSH term list "
            "(e.g. 'Cardiomegaly/mild;Pleural Effusion/left' or 'No Indexing')"
        )
    return 0 if text.casefold() == "normal" else 1


def join_report(findings: str | None, impression: str | None) -> str:
    """Findings and impression (stripped) joined by one space, skipping an empty part.

    Example:
        >>> join_report("Heart size normal.", ""), join_report("A.", "B.")
        ('Heart size normal.', 'A. B.')
    """
    parts = [(part or "").strip() for part in (findings, impression)]
    return " ".join(part for part in parts if part)


def _source_counts(data: Any) -> Counter | None:
    """Counts of the ``source`` column over a Dataset or every split of a DatasetDict; None without the column."""
    splits = data.values() if isinstance(data, Mapping) else [data]
    counts: Counter = Counter()
    for split in splits:
        if "source" not in split.column_names:
            return None
        counts.update(split["source"])
    return counts


def data_provenance(data: Any) -> str:
    """"synthetic", "real", "mixed" or "unknown", from the ``source`` column of a Dataset or DatasetDict.

    Example:
        >>> from datasets import Dataset
        >>> data_provenance(Dataset.from_dict({"source": ["synthetic", "synthetic"]}))
        'synthetic'
    """
    counts = _source_counts(data)
    if not counts:
        return "unknown"
    if set(counts) == {"synthetic"}:
        return "synthetic"
    if set(counts) == {"real"}:
        return "real"
    return "mixed"


def data_note(dataset: Any, where: str = "data") -> str:
    """A one-line provenance note for tables and printouts: synthetic phantoms, real OpenI, or a mix, with counts.

    Example:
        >>> from datasets import Dataset
        >>> data_note(Dataset.from_dict({"source": ["synthetic"] * 3}))
        'data: 3 SYNTHETIC phantom studies (procedural images, not real X-rays)'
    """
    counts = _source_counts(dataset)
    n = len(dataset)
    if counts is None:
        return f"{where}: {n} studies of unknown provenance (no 'source' column)"
    synthetic = counts.get("synthetic", 0)
    if n and synthetic == n:
        return f"{where}: {n} SYNTHETIC phantom studies (procedural images, not real X-rays)"
    if synthetic == 0:
        if set(counts) == {"real"}:
            return f"{where}: {n} real OpenI studies"
        detail = ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
        return f"{where}: {n} studies (source: {detail})"
    return f"{where}: {n} studies, {synthetic} of them SYNTHETIC phantoms (procedural images, not real X-rays)"
