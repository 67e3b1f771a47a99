"""What an OpenI build reads and reports: study records, the reasons a study is dropped, the build summary."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .schema import join_report

__all__ = ["ImageCandidate", "OpenIStudy", "OpenISummary", "progress"]

_SUMMARY_KEY = "cxr_mtclip_openi_summary"

# Drop / problem reasons, as counted in OpenISummary.
NO_REPORT_TEXT = "no_report_text"
UNKNOWN_LABEL = "unknown_label"
LABEL_MISMATCH = "label_mismatch"
MALFORMED_XML = "malformed_xml"
DUPLICATE_UID = "duplicate_uid"
NO_FRONTAL_IMAGE = "no_frontal_image"
IMAGE_NOT_HELD = "image_not_held"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
NO_INDEXING = "no_indexing"  # dropped only with drop_no_indexing=True (issue 15, finding 10)


@dataclass
class ImageCandidate:
    """One image a study lists; `path` None means the source does not hold it (not an error)."""

    name: str
    path: Path | None
    view: str | None = None  # "PA", "AP", "frontal", "LATERAL" or None (unknown)
    order: int = 0
    dicom_path: Path | None = None  # a DICOM twin of a PNG, read for its ViewPosition only


@dataclass
class OpenIStudy:
    """One parsed study before image selection."""

    uid: str
    findings: str
    impression: str
    mesh: str
    origin: str  # the file (and row) it came from, for error messages
    candidates: list[ImageCandidate] = field(default_factory=list)
    exam: str = ""
    label: int | None = None

    @property
    def report(self) -> str:
        return join_report(self.findings, self.impression)


@dataclass
class OpenISummary:
    """What a build kept and dropped, per reason; stored as JSON in every split's `info.description`."""

    layout: str
    source: str
    reports_only: bool
    strict: bool
    seed: int
    studies_seen: int = 0
    kept: int = 0
    kept_with_image: int = 0
    kept_without_image: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    images_missing_kept: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    test_per_class: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # "No Indexing" studies (MeSH never indexed: label abnormal by the paper's rule, findings unknown) met
    # while labelling; dropped too when drop_no_indexing (then also counted in `dropped`).
    no_indexing: int = 0
    drop_no_indexing: bool = False
    # kept studies per finding (`data.findings`), and those with no listed finding / unknown findings
    finding_counts: dict[str, int] = field(default_factory=dict)
    finding_none: int = 0
    finding_unknown: int = 0

    def to_json(self) -> str:
        return json.dumps({_SUMMARY_KEY: asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OpenISummary:
        try:
            payload = json.loads(text)[_SUMMARY_KEY]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("description does not hold an OpenI build summary") from exc
        return cls(**payload)

    def format(self) -> str:
        """A human-readable multi-line summary (printed by dataset_scripts/build_openi.py)."""
        lines = [
            f"OpenI source: {self.source} (layout {self.layout}, reports_only={self.reports_only}, "
            f"strict={self.strict}, seed={self.seed})",
            f"studies seen: {self.studies_seen}; kept: {self.kept} "
            f"({self.kept_with_image} with image, {self.kept_without_image} without)",
            "labels: " + ", ".join(f"{k}={v}" for k, v in self.label_counts.items()),
        ]
        if self.views:
            lines.append("views: " + ", ".join(f"{k}={v}" for k, v in sorted(self.views.items())))
        lines.append("dropped: " + (", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"))
        if self.images_missing_kept:
            lines.append(
                "kept without image: " + ", ".join(f"{k}={v}" for k, v in sorted(self.images_missing_kept.items()))
            )
        lines.append(f"No Indexing studies: {self.no_indexing} ("
                     + ("dropped" if self.drop_no_indexing else "kept, labelled abnormal") + ")")
        if self.finding_counts:
            listed = ", ".join(f"{k}={v}" for k, v in self.finding_counts.items() if v) or "none"
            lines.append(f"findings (studies): {listed}; no listed finding={self.finding_none}, "
                         f"unknown={self.finding_unknown}")
        for split, counts in self.splits.items():
            total = sum(counts.values())
            lines.append(f"  {split:<10} {total:>6}  " + "  ".join(f"{k}={v}" for k, v in counts.items()))
        for reason, message in sorted(self.examples.items()):
            lines.append(f"e.g. {reason}: {message}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


class _Recorder:
    """Counts skips per reason, or raises at once when strict."""

    def __init__(self, summary: OpenISummary, strict: bool) -> None:
        self.summary = summary
        self.strict = strict

    def problem(self, reason: str, message: str, error: type[Exception] = ValueError) -> None:
        if self.strict:
            raise error(message)
        self.summary.examples.setdefault(reason, message)

    def drop(self, reason: str) -> None:
        self.summary.dropped[reason] = self.summary.dropped.get(reason, 0) + 1


def progress(iterable: Iterable, show: bool, **kwargs: Any) -> Iterable:
    """`iterable` wrapped in a tqdm progress bar when `show`."""
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)

