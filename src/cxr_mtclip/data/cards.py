"""Dataset cards (``README.md`` beside the data) through huggingface_hub's `DatasetCard`: OpenI builds and phantoms.

A card's metadata lists the splits' files (``configs``), so ``load_dataset(<folder>)`` reads a saved folder;
its text states the source, licence, rules and counts. Phantom cards say, first, that the images are synthetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from huggingface_hub import DatasetCard, DatasetCardData

from .findings import FINDING_NAMES, FindingCounts, finding_counts
from .schema import LABEL_NAMES, SPLIT_NAMES

__all__ = ["OUTPUT_FORMATS", "openi_dataset_card", "phantom_dataset_card", "split_finding_counts", "split_label_counts"]

OUTPUT_FORMATS = {"arrow": "{split}/data-*.arrow", "parquet": "data/{split}-*.parquet"}
_OPENI_LICENCE = "cc-by-nc-nd-4.0"
_TAGS = ["medical", "chest-x-ray", "radiology-reports", "cxr_mtclip"]
_TASKS = ["zero-shot-image-classification", "image-to-text"]
_CITATION = ('Demner-Fushman D. et al., "Preparing a collection of radiology examinations for distribution and '
             'retrieval", JAMIA 23(2):304-310, 2016')

_RULES = """- **report**: findings and impression, each stripped, joined by one space; an empty part is skipped.
  Studies with both empty are dropped.
- **label**: `normal` iff the MeSH string is exactly `normal` (case-insensitive); every other MeSH
  string, `No Indexing` included, is `abnormal`. Studies with an empty MeSH are skipped.{% if drop_no_indexing %}
  This build dropped the `No Indexing` studies (`drop_no_indexing`).{% endif %}
- **finding_labels**: the findings among `cxr_mtclip.data.findings.FINDING_NAMES` (32 radiological findings
  mapped from the MeSH terms; rules in the package's docs/findings.md); `[]` = none of them (every normal
  study), null = unknown (`No Indexing`: never indexed, not negative). The binary `label` does not use it.
- **splits**: test = {{ test_per_class }} normal + {{ test_per_class }} abnormal studies; the rest
  {{ val_percent }}% validation / the remainder train, stratified by label (scikit-learn `train_test_split`);
  deterministic given the seed; no study in two splits."""

_COUNTS = """| split | studies | normal | abnormal |
|---|---|---|---|
{% for split, c in split_counts.items() %}| {{ split }} | {{ c.values() | sum }} | {{ c.get('normal', 0) }} | {{ c.get('abnormal', 0) }} |
{% endfor %}"""

_LOADING = """```python
from datasets import load_from_disk, load_dataset
{% if output_format == "arrow" %}splits = load_from_disk("<this folder>")  # save_to_disk layout
{% endif %}splits = load_dataset("<this folder>")    # through the data_files above
```"""

OPENI_TEMPLATE = """---
{{ card_data }}
---

# OpenI chest X-ray studies (Indiana University collection)

Built by `cxr_mtclip` (`dataset_scripts/build_openi.py`) from `{{ summary.source }}` (layout `{{ summary.layout }}`,
seed {{ summary.seed }}, reports_only={{ summary.reports_only }}, strict={{ summary.strict }}).

## Source and licence

The radiographs and reports are the Indiana University chest X-ray collection distributed by
**Open-i, U.S. National Library of Medicine**, de-identified by its authors: {{ citation }}.
Licence: **CC BY-NC-ND 4.0** (attribution, non-commercial, no derivatives). Keep this card
with the data; do not use it commercially; check the Open-i terms before redistributing.

## Columns

`uid` (Open-i study number), `image` (one frontal radiograph; None for report-only rows), `findings`,
`impression`, `report`, `label` (`normal` / `abnormal`), `mesh`, `view`, `image_file`, `source`
(`real` here; synthetic phantoms from `make_phantom_openi` carry `synthetic`), `finding_labels` (a list of
finding names as `ClassLabel` ids; null when unknown).

## Rules

""" + _RULES + """
- **view**: one frontal image per study, PA preferred over AP over an unspecified frontal (projection
  table, DICOM ViewPosition, NLM caption, else an image heuristic).

## Counts

""" + _COUNTS + """
Studies seen: {{ summary.studies_seen }}; kept: {{ summary.kept }} ({{ summary.kept_with_image }} with image).
`No Indexing` studies: {{ summary.no_indexing }} ({{ "dropped" if summary.drop_no_indexing else "kept, labelled abnormal" }}).

Studies per finding (kept studies, all splits):

{{ finding_table }}

Dropped:
{% for reason, count in summary.dropped | dictsort %}- `{{ reason }}`: {{ count }}
{% else %}- none
{% endfor %}
Kept without image (reports_only):
{% for reason, count in summary.images_missing_kept | dictsort %}- `{{ reason }}`: {{ count }}
{% else %}- none
{% endfor %}
## Loading

""" + _LOADING + "\n"

PHANTOM_TEMPLATE = """---
{{ card_data }}
---

# Synthetic chest X-ray phantoms (cxr_mtclip)

**These are not real X-rays.** Every image is a procedural phantom drawn by `cxr_mtclip.data.phantoms`
(`make_phantom_openi`, seed {{ seed }}, {{ image_size }} px) so that it shows what its report says: a model's
numbers on this data show that a pipeline learns, not how it performs on radiographs of patients. Every row
carries `source = "synthetic"`.

## Reports

{% if real_reports %}The reports are **real OpenI reports** ({{ real_reports }}), paired with phantoms drawn from
their findings. OpenI is distributed by Open-i, U.S. National Library of Medicine, under **CC BY-NC-ND 4.0**
({{ citation }}): these rows carry that licence; keep this card with the data and do not use it commercially.
{% else %}The reports are templated sentences written by the generator (several phrasings per finding); no patient
data was used. Licence: MIT, like `cxr_mtclip`.
{% endif %}
## Columns

The OpenI schema (`cxr_mtclip.data.OPENI_FEATURES`): `uid`, `image`, `findings`, `impression`, `report`, `label`
(`normal` / `abnormal`), `mesh`, `view` (`PA`), `image_file`, `source` (`synthetic`), `finding_labels` (from the
MeSH terms; what the phantom draws is read from the report text, see `cxr_mtclip.data.phantoms`).

## Rules

""" + _RULES + """

## Counts

""" + _COUNTS + """{% if finding_table %}
Studies per finding (all splits):

{{ finding_table }}{% endif %}
## Loading

""" + _LOADING + "\n"


def split_label_counts(splits: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """{split: {"normal": n, "abnormal": n}} counted from the label column.

    Example:
        >>> from datasets import Dataset
        >>> split_label_counts({"test": Dataset.from_dict({"label": [0, 1, 1]})})
        {'test': {'normal': 1, 'abnormal': 2}}
    """
    counts = {}
    for name, split in splits.items():
        labels = np.asarray(split["label"], dtype=np.int64)
        counts[name] = {label: int((labels == k).sum()) for k, label in enumerate(LABEL_NAMES)}
    return counts


def split_finding_counts(splits: Mapping[str, Any]) -> FindingCounts | None:
    """Studies per finding over every split's ``finding_labels`` column; None when a split lacks the column.

    Example:
        >>> from datasets import Dataset
        >>> counts = split_finding_counts({"test": Dataset.from_dict({"finding_labels": [["opacity"], [], None]})})
        >>> counts.per_finding["opacity"], counts.n_no_finding, counts.n_unknown
        (1, 1, 1)
    """
    columns = []
    for split in splits.values():
        if "finding_labels" not in split.column_names:
            return None
        columns.extend(split["finding_labels"])
    return finding_counts(columns)


def _card_data(split_counts: Mapping[str, Mapping[str, int]], output_format: str, *, licence: str,
               pretty_name: str, tags: list[str]) -> DatasetCardData:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {sorted(OUTPUT_FORMATS)}, got {output_format!r}")
    present = [split for split in SPLIT_NAMES if sum(split_counts.get(split, {}).values()) > 0]
    total = sum(sum(counts.values()) for counts in split_counts.values())
    files = [{"split": split, "path": OUTPUT_FORMATS[output_format].format(split=split)} for split in present]
    return DatasetCardData(
        license=licence,
        language=["en"],
        pretty_name=pretty_name,
        task_categories=list(_TASKS),
        tags=tags,
        size_categories=[_size_category(total)],
        configs=[{"config_name": "default", "data_files": files}],
    )


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return name
    return "100K<n<1M"


def openi_dataset_card(summary: Any, *, output_format: str = "arrow") -> DatasetCard:
    """The dataset card (README.md) of a built OpenI dataset, from its `OpenISummary`.

    Example:
        >>> openi_dataset_card(result.summary).save("openi_hf/README.md")  # doctest: +SKIP
    """
    data = _card_data(summary.splits, output_format, licence=_OPENI_LICENCE,
                      pretty_name="OpenI chest X-rays (Indiana University), built by cxr_mtclip", tags=list(_TAGS))
    counts = FindingCounts(
        per_finding={name: int(summary.finding_counts.get(name, 0)) for name in FINDING_NAMES},
        n_studies=summary.kept, n_unknown=summary.finding_unknown, n_no_finding=summary.finding_none,
    )
    return DatasetCard.from_template(
        data, template_str=OPENI_TEMPLATE, summary=summary, citation=_CITATION, split_counts=summary.splits,
        finding_table=counts.to_markdown(), drop_no_indexing=summary.drop_no_indexing,
        test_per_class=summary.test_per_class, val_percent=_val_percent(summary.splits), output_format=output_format,
    )


def phantom_dataset_card(
    splits: Mapping[str, Any],
    *,
    seed: int,
    image_size: int | None = None,
    test_per_class: int | None = None,
    real_reports: str | None = None,
    output_format: str = "arrow",
) -> DatasetCard:
    """The dataset card of saved phantom splits: synthetic images, templated or real OpenI reports, counts.

    Args:
        real_reports: where the paired real OpenI reports came from (e.g. ``../shared/openi``); None for
            templated reports. Real reports make the card's licence CC BY-NC-ND 4.0.

    Example:
        >>> phantom_dataset_card(split_openi(make_phantom_openi(100), seed=0), seed=0).save("phantoms/README.md")  # doctest: +SKIP
    """
    counts = split_label_counts(splits)
    if test_per_class is None:
        test_per_class = min(counts.get("test", {}).values(), default=0)
    if image_size is None:
        first = next((split for split in splits.values() if len(split)), None)
        image_size = first[0]["image"].width if first is not None and "image" in first.column_names else 0
    data = _card_data(counts, output_format, licence=_OPENI_LICENCE if real_reports else "mit",
                      pretty_name="Synthetic chest X-ray phantoms (cxr_mtclip)",
                      tags=[*_TAGS, "synthetic"])
    findings = split_finding_counts(splits)
    return DatasetCard.from_template(
        data, template_str=PHANTOM_TEMPLATE, finding_table=findings.to_markdown() if findings else "",
        drop_no_indexing=False, seed=seed, image_size=image_size, real_reports=real_reports,
        citation=_CITATION, split_counts=counts, test_per_class=test_per_class, val_percent=_val_percent(counts),
        output_format=output_format,
    )


def _val_percent(split_counts: Mapping[str, Mapping[str, int]]) -> int:
    """The validation share of the non-test studies, in percent, as built."""
    train = sum(split_counts.get("train", {}).values())
    validation = sum(split_counts.get("validation", {}).values())
    return round(100 * validation / (train + validation)) if train + validation else 0
