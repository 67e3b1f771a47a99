"""Synthetic chest radiograph phantoms whose image shows what their report says (offline demos, benchmarks).

Every row carries ``source="synthetic"``; the schema is `cxr_mtclip.data.OPENI_FEATURES`. Reports are either
templated (`template_report`) or real report rows (e.g. from `cxr_mtclip.data.load_openi_reports`); the
findings drawn are read from the text (`parse_findings`), falling back to the MeSH terms, and rendered as
distinct, fairly large signs (`render_phantom`; the table of signs is in `cxr_mtclip.data.phantoms.render`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from .. import findings as mesh_findings
from ..schema import OPENI_FEATURES, join_report, label_from_mesh
from .findings import FINDING_KINDS, PhantomFinding, findings_from_mesh, parse_findings
from .render import _Renderer, render_phantom
from .reports import template_report

__all__ = [
    "FINDING_KINDS",
    "PhantomFinding",
    "findings_for_row",
    "findings_from_mesh",
    "make_phantom_openi",
    "parse_findings",
    "render_phantom",
    "template_report",
]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def findings_for_row(row: dict[str, Any], label: int) -> list[PhantomFinding]:
    """What to draw for a real report row: its text's findings, else its MeSH terms; none when normal.

    An abnormal row whose text and MeSH name nothing drawable gets one small granuloma-like density, so the
    image still carries the label (documented limitation: that sign is not in the text).
    """
    if label == 0:
        return []
    text = row.get("report") or " ".join(str(row.get(k) or "") for k in ("findings", "impression"))
    found = parse_findings(text)
    if not found:
        found = findings_from_mesh(row.get("mesh"))
    if not found:
        found = [PhantomFinding("granuloma")]
    return found


def make_phantom_openi(
    n: int | None = None,
    seed: int = 0,
    reports: Sequence[dict[str, Any]] | None = None,
    image_size: int = 224,
    *,
    normal_fraction: float = 0.5,
    show_progress: bool = False,
) -> Any:
    """A `datasets.Dataset` of `n` synthetic studies (schema `OPENI_FEATURES`, ``source="synthetic"``).

    Args:
        n: number of studies; defaults to ``len(reports)`` when reports are given (row i uses
            ``reports[i % len(reports)]``).
        reports: real report rows (dicts with report / findings / impression / label / mesh / uid), e.g.
            `load_openi_reports`; None uses built-in templates with `normal_fraction` normal studies.

    Example:
        >>> ds = make_phantom_openi(8, seed=0)
        >>> ds.num_rows, ds[0]["source"]
        (8, 'synthetic')
    """
    from datasets import Dataset

    if n is None:
        if reports is None:
            raise ValueError("pass n, or reports to take n from")
        n = len(reports)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if reports is not None and len(reports) == 0:
        raise ValueError("reports is empty")
    if not 0.0 <= normal_fraction <= 1.0:
        raise ValueError(f"normal_fraction must be in [0, 1], got {normal_fraction}")
    renderer = _Renderer(image_size)
    columns: dict[str, list[Any]] = {name: [] for name in OPENI_FEATURES}
    iterator: Any = range(n)
    if show_progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="rendering phantoms", unit="study")
    for i in iterator:
        rng = np.random.default_rng([seed, i])
        if reports is None:
            abnormal = bool(rng.random() >= normal_fraction)
            row, findings = template_report(abnormal, rng)
            label = int(abnormal)
            uid, image_file = f"phantom-{i:05d}", f"phantom-{i:05d}.png"
        else:
            source_row = reports[i % len(reports)]
            findings_text = str(source_row.get("findings") or "").strip()
            impression_text = str(source_row.get("impression") or "").strip()
            report = str(source_row.get("report") or join_report(findings_text, impression_text)).strip()
            if not report:
                raise ValueError(f"reports[{i % len(reports)}] (uid {source_row.get('uid')!r}) has no report text")
            mesh = str(source_row.get("mesh") or "").strip()
            if source_row.get("label") is not None and str(source_row.get("label")).strip() != "":
                label = int(source_row["label"])
                if label not in (0, 1):
                    raise ValueError(f"reports[{i % len(reports)}]: label must be 0 or 1, got {label}")
            elif mesh:
                label = label_from_mesh(mesh, source=f"reports[{i % len(reports)}]")
            else:
                label = int(bool(parse_findings(report)))
            row = {"findings": findings_text, "impression": impression_text, "report": report,
                   "mesh": mesh or ("normal" if label == 0 else "")}
            findings = findings_for_row({**source_row, "report": report}, label)
            real_uid = str(source_row.get("uid") or i)
            uid, image_file = f"phantom-{i:05d}", f"phantom-{i:05d}_openi-{real_uid}.png"
        image = renderer.render(findings, rng)
        values = {**row, "uid": uid, "image": {"bytes": _png_bytes(image), "path": image_file}, "label": label,
                  "view": "PA", "image_file": image_file, "source": "synthetic",
                  # from the MeSH terms, as for a real build (what is drawn is read from the text)
                  "finding_labels": mesh_findings.findings_from_mesh(row["mesh"]) if row["mesh"] else None}
        for name in OPENI_FEATURES:
            columns[name].append(values[name])
    return Dataset.from_dict(columns, features=OPENI_FEATURES)

