"""The `finding_labels` column (issue 18) and the "No Indexing" option (issue 15, finding 10) in every build path.

NLM tarballs and a Kaggle folder are written here (content invented); the real copy (../shared/openi) is read at
run time only and never copied.
"""

from __future__ import annotations

import csv
import re
import runpy
from collections import Counter
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard
from test_data import REPO_ROOT, all_rows, frontal_png, lateral_png, nlm_png_source, quiet_load

from cxr_mtclip.data import (
    OPENI_FEATURES,
    build_openi_dataset,
    load_openi_reports,
    make_phantom_openi,
    openi_summary,
    phantom_dataset_card,
    split_openi,
)
from cxr_mtclip.data.findings import FINDING_NAMES, finding_counts, findings_from_mesh


def names_of(ids):
    return None if ids is None else [FINDING_NAMES[i] for i in ids]


def test_schema_declares_finding_labels_as_a_sequence_of_class_labels() -> None:
    feature = OPENI_FEATURES["finding_labels"]
    assert feature.feature.names == FINDING_NAMES
    assert "label" in OPENI_FEATURES and "findings" in OPENI_FEATURES  # the binary label and report section stay


def test_nlm_build_carries_findings_and_counts_no_indexing(tmp_path: Path) -> None:
    splits, summary = quiet_load(nlm_png_source(tmp_path / "nlm"), tmp_path, return_summary=True)
    rows = all_rows(splits)
    assert splits["train"].features == OPENI_FEATURES
    # uid 1 normal -> known, no finding; uid 2 two terms -> both, in FINDING_NAMES order; uid 3 No Indexing -> unknown
    assert names_of(rows["1"]["finding_labels"]) == []
    assert names_of(rows["2"]["finding_labels"]) == ["cardiomegaly", "pleural_effusion"]
    assert rows["3"]["finding_labels"] is None
    assert [rows[u]["label"] for u in ("1", "2", "3")] == [0, 1, 1]  # the paper's rule by default
    assert summary.no_indexing == 1 and not summary.drop_no_indexing
    assert summary.finding_counts["cardiomegaly"] == 1 and summary.finding_counts["opacity"] == 0
    assert (summary.finding_none, summary.finding_unknown) == (1, 1)
    assert "No Indexing studies: 1 (kept, labelled abnormal)" in summary.format()
    assert "cardiomegaly=1, pleural_effusion=1" in summary.format()


def test_drop_no_indexing_drops_and_reports_them(tmp_path: Path) -> None:
    source = nlm_png_source(tmp_path / "nlm")
    splits, summary = quiet_load(source, tmp_path, return_summary=True, drop_no_indexing=True)
    rows = all_rows(splits)
    assert set(rows) == {"1", "2"}
    assert summary.dropped == {"no_report_text": 1, "no_indexing": 1}
    assert summary.no_indexing == 1 and summary.drop_no_indexing and summary.finding_unknown == 0
    assert openi_summary(splits).no_indexing == 1  # stored with the data
    with pytest.warns(UserWarning, match="scaled down"):
        result = build_openi_dataset(source, tmp_path / "out", drop_no_indexing=True, cache_dir=tmp_path / "c",
                                     show_progress=False)
    card = DatasetCard.load(result.card_path).text
    assert "This build dropped the `No Indexing` studies" in card
    assert "`No Indexing` studies: 1 (dropped)" in card
    assert re.search(r"\| cardiomegaly \| 1 \|", card)


def test_kaggle_build_carries_findings(tmp_path: Path) -> None:
    folder = tmp_path / "kaggle"
    (folder / "images").mkdir(parents=True)
    reports = [
        [1, "normal", "normal", "Xray Chest PA and Lateral", "", "", "Clear lungs.", "Normal."],
        [2, "Lung/hypoinflation/mild;Opacity/lung/base/left;Cardiac Shadow/enlarged", "", "Chest PA", "", "",
         "Low volumes, left basilar opacity, large heart.", ""],
        [3, "No Indexing", "", "Chest PA", "", "", "No active disease.", ""],
        [4, "Pneumothorax/right", "", "Chest PA", "", "", "Small right pneumothorax.", ""],  # no listed finding
    ]
    with open(folder / "indiana_reports.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        writer.writerows(reports)
    with open(folder / "indiana_projections.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "filename", "projection"])
        for uid in (1, 2, 3, 4):
            writer.writerow([uid, f"{uid}_IM-000{uid}-1001.dcm.png", "Frontal"])
            writer.writerow([uid, f"{uid}_IM-000{uid}-2001.dcm.png", "Lateral"])
            (folder / "images" / f"{uid}_IM-000{uid}-1001.dcm.png").write_bytes(frontal_png(uid))
            (folder / "images" / f"{uid}_IM-000{uid}-2001.dcm.png").write_bytes(lateral_png())
    splits, summary = quiet_load(folder, tmp_path, return_summary=True)
    rows = all_rows(splits)
    assert names_of(rows["2"]["finding_labels"]) == ["opacity", "cardiomegaly", "hypoinflation"]
    assert names_of(rows["1"]["finding_labels"]) == [] and names_of(rows["4"]["finding_labels"]) == []
    assert rows["3"]["finding_labels"] is None and rows["3"]["label"] == 1
    assert rows["4"]["label"] == 1  # abnormal with no listed finding: the binary label is untouched
    assert (summary.no_indexing, summary.finding_none, summary.finding_unknown) == (1, 2, 1)


def test_phantoms_carry_findings_from_their_mesh() -> None:
    reports = [
        {"uid": "10", "findings": "Heart is enlarged.", "impression": "Cardiomegaly.", "mesh": "Cardiomegaly/mild",
         "label": 1},
        {"uid": "11", "findings": "Clear lungs.", "impression": "No active disease.", "mesh": "No Indexing",
         "label": 1},
        {"uid": "12", "findings": "Clear lungs.", "impression": "Normal.", "mesh": "normal", "label": 0},
    ]
    ds = make_phantom_openi(reports=reports, image_size=64)
    assert ds.features == OPENI_FEATURES
    assert [names_of(v) for v in ds["finding_labels"]] == [["cardiomegaly"], None, []]
    templated = make_phantom_openi(40, seed=1, image_size=64)
    assert all(v == [] for v, label in zip(templated["finding_labels"], templated["label"]) if label == 0)
    assert any(v for v in templated["finding_labels"])
    card = phantom_dataset_card(split_openi(templated, seed=0, test_per_class=4), seed=1).text
    counted = finding_counts([names_of(v) for v in templated["finding_labels"]])
    top = max(counted.per_finding, key=lambda name: counted.per_finding[name])
    assert f"| {top} | {counted.per_finding[top]} |" in card


# ------------------------------------------------------------------------------------------------
# The real copy (../shared/openi)
# ------------------------------------------------------------------------------------------------


def _direct_counts(openi_dir: Path) -> tuple[Counter, int, int, int]:
    """Per-finding study counts straight from reports.csv (csv module + the mapping), rows with report text."""
    per_finding: Counter = Counter()
    no_indexing = none = unknown = 0
    with open(openi_dir / "reports.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not (row["findings"].strip() or row["impression"].strip()):
                continue
            no_indexing += row["mesh"].strip().casefold() == "no indexing"
            found = findings_from_mesh(row["mesh"])
            if found is None:
                unknown += 1
            elif not found:
                none += 1
            per_finding.update(found or [])
    return per_finding, no_indexing, none, unknown


@pytest.mark.openi
def test_builder_counts_on_the_real_copy_match_a_direct_count(openi_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    per_finding, no_indexing, none, unknown = _direct_counts(openi_dir)
    assert no_indexing == 92 and unknown == 92  # the number
    script = runpy.run_path(str(REPO_ROOT / "dataset_scripts" / "build_openi.py"))
    code = script["main"]([str(openi_dir), "--out", str(tmp_path / "out"), "--reports-only", "--quiet",
                           "--cache-dir", str(tmp_path / "hf_cache")])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"No Indexing studies: {no_indexing} (kept, labelled abnormal)" in printed
    line = next(line for line in printed.splitlines() if line.startswith("findings (studies): "))
    listed, _, rest = line.removeprefix("findings (studies): ").partition("; ")
    printed_counts = {name: int(value) for name, value in (item.split("=") for item in listed.split(", "))}
    assert printed_counts == {name: per_finding[name] for name in FINDING_NAMES if per_finding[name]}
    assert rest == f"no listed finding={none}, unknown={unknown}"
    # the saved column and the dataset card say the same
    from datasets import load_from_disk

    saved = load_from_disk(str(tmp_path / "out"))
    column = [v for name in saved for v in saved[name]["finding_labels"]]
    counted = finding_counts([names_of(v) for v in column])
    assert counted.per_finding == {name: per_finding[name] for name in FINDING_NAMES}
    assert (counted.n_no_finding, counted.n_unknown) == (none, unknown)
    card = (tmp_path / "out" / "README.md").read_text()
    assert all(f"| {name} | {per_finding[name]} |" in card for name in FINDING_NAMES)
    assert f"`No Indexing` studies: {no_indexing} (kept, labelled abnormal)" in card


@pytest.mark.openi
def test_phantom_pairing_can_drop_no_indexing_reports(openi_dir: Path) -> None:
    rows, kept = load_openi_reports(openi_dir), load_openi_reports(openi_dir, drop_no_indexing=True)
    dropped = {r["uid"] for r in rows} - {r["uid"] for r in kept}
    assert len(dropped) == 92
    assert all(r["mesh"].strip() == "No Indexing" for r in rows if r["uid"] in dropped)
