"""Synthetic phantoms: schema, determinism, report <-> image consistency, and non-learned probes."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxr_mtclip import data
from cxr_mtclip.data import OPENI_FEATURES, label_from_mesh, load_openi_reports
from cxr_mtclip.data.phantoms import (
    PhantomFinding,
    findings_from_mesh,
    make_phantom_openi,
    parse_findings,
    render_phantom,
    template_report,
)

S = 224


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


# Non-learned probes: fixed regions of the 224 x 224 frame, no fitting to labels.
def heart_width(a: np.ndarray) -> int:
    """Bright columns across the heart band (between the lung fields)."""
    band = a[int(0.55 * S):int(0.68 * S), int(0.15 * S):int(0.85 * S)].mean(axis=0)
    low, high = np.percentile(band, 10), np.percentile(band, 90)
    return int((band > (low + high) / 2).sum())


def lower_zone(a: np.ndarray, side: str) -> float:
    """Mean of the lower zone of the patient's `side` (patient's left = image right)."""
    x0, x1 = (int(0.55 * S), int(0.85 * S)) if side == "left" else (int(0.15 * S), int(0.45 * S))
    return float(a[int(0.55 * S):int(0.75 * S), x0:x1].mean())


def lung_brightness(a: np.ndarray) -> float:
    """Both lung windows' mean, relative to the abdomen below them (cancels exposure)."""
    right = a[int(0.3 * S):int(0.7 * S), int(0.22 * S):int(0.4 * S)].mean()
    left = a[int(0.3 * S):int(0.7 * S), int(0.6 * S):int(0.78 * S)].mean()
    abdomen = a[int(0.85 * S):int(0.95 * S), int(0.3 * S):int(0.7 * S)].mean()
    return float((right + left) / abdomen)


def test_schema_labels_and_source() -> None:
    ds = make_phantom_openi(24, seed=0)
    assert ds.features == OPENI_FEATURES
    assert ds.num_rows == 24 and len(set(ds["uid"])) == 24
    assert set(ds["source"]) == {"synthetic"} and set(ds["view"]) == {"PA"}
    for row in ds:
        assert isinstance(row["image"], Image.Image) and row["image"].size == (S, S) and row["image"].mode == "L"
        assert label_from_mesh(row["mesh"]) == row["label"]
        assert row["report"] == data.join_report(row["findings"], row["impression"])
        assert bool(parse_findings(row["report"])) == bool(row["label"])  # normal text <-> label 0
    assert set(ds["label"]) == {0, 1}


def test_deterministic_given_seed() -> None:
    first, again, other = make_phantom_openi(6, seed=5), make_phantom_openi(6, seed=5), make_phantom_openi(6, seed=6)
    assert list(first["report"]) == list(again["report"])
    assert [r["image"].tobytes() for r in first] == [r["image"].tobytes() for r in again]
    assert [r["image"].tobytes() for r in first] != [r["image"].tobytes() for r in other]
    # row i does not depend on n
    longer = make_phantom_openi(8, seed=5)
    assert longer[3]["image"].tobytes() == first[3]["image"].tobytes()


def test_template_text_names_what_is_drawn() -> None:
    for i in range(300):
        rng = np.random.default_rng([11, i])
        row, drawn = template_report(i % 2 == 0, rng)
        parsed = parse_findings(row["report"])
        assert {f.kind for f in parsed} == {f.kind for f in drawn}, row["report"]
        assert {(f.kind, f.side) for f in drawn if f.side} <= {(f.kind, f.side) for f in parsed}, row["report"]
        assert {f.kind for f in findings_from_mesh(row["mesh"])} == {f.kind for f in drawn}, row["mesh"]
        assert label_from_mesh(row["mesh"]) == int(bool(drawn))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No pleural effusion or pneumothorax.", []),
        ("There is no focal consolidation, pleural effusion, or pneumothorax.", []),
        ("Heart is not enlarged. Lungs are clear.", []),
        ("Pleural effusion has resolved.", []),
        ("Trachea is midline.", []),
        ("Mild cardiomegaly. Left lower lobe opacity.", [("cardiomegaly", None, None), ("opacity", "left", "lower")]),
        ("No pneumothorax, but there is a small right effusion.", [("effusion", "right", None)]),
        ("No interval change in the left pleural effusion.", [("effusion", "left", None)]),
        ("Calcified granuloma in the right upper lobe.", [("granuloma", "right", "upper")]),
        ("Bibasilar atelectasis.", [("atelectasis", "bilateral", "lower")]),
        ("Bilateral pleural effusions.", [("effusion", "bilateral", None)]),
    ],
)
def test_parse_findings(text: str, expected: list) -> None:
    assert [(f.kind, f.side, f.zone) for f in parse_findings(text)] == expected


def test_findings_from_mesh() -> None:
    found = findings_from_mesh("Opacity/lung/base/left;Cardiomegaly/mild;Thoracic Vertebrae/degenerative")
    assert [(f.kind, f.side) for f in found] == [("opacity", "left"), ("cardiomegaly", None), ("degenerative", None)]
    assert findings_from_mesh("normal") == [] and findings_from_mesh("No Indexing") == []


def test_probe_heart_width_separates_cardiomegaly() -> None:
    normal = [heart_width(pixels(render_phantom([], seed=s))) for s in range(40)]
    enlarged = [heart_width(pixels(render_phantom([PhantomFinding("cardiomegaly")], seed=500 + s))) for s in range(40)]
    assert roc_auc_score([0] * 40 + [1] * 40, normal + enlarged) > 0.9


def test_probe_effusion_side_is_visible() -> None:
    for side, other in (("left", "right"), ("right", "left")):
        hits = 0
        for s in range(30):
            a = pixels(render_phantom([PhantomFinding("effusion", side=side)], seed=700 + s))
            hits += lower_zone(a, side) > lower_zone(a, other)
        assert hits >= 27  # the fluid is on the side the report names (patient's side, mirrored on screen)


def test_probe_pacemaker_is_visible() -> None:
    def upper_left_chest(a: np.ndarray) -> float:
        return float(np.percentile(a[int(0.08 * S):int(0.35 * S), int(0.6 * S):int(0.9 * S)], 99.5) - np.median(a))

    normal = [upper_left_chest(pixels(render_phantom([], seed=s))) for s in range(30)]
    paced = [upper_left_chest(pixels(render_phantom([PhantomFinding("pacemaker")], seed=900 + s))) for s in range(30)]
    assert roc_auc_score([0] * 30 + [1] * 30, normal + paced) > 0.9


def test_probe_separates_normal_from_abnormal_dataset() -> None:
    ds = make_phantom_openi(200, seed=3)
    labels = np.asarray(ds["label"])
    scores = [lung_brightness(pixels(row["image"])) for row in ds]
    assert 40 < labels.sum() < 160
    assert roc_auc_score(labels, scores) > 0.6  # chance is 0.5


def test_real_report_rows_are_drawn_and_kept() -> None:
    reports = [
        {"uid": "a", "findings": "Large left pleural effusion.", "impression": "Left effusion.", "label": 1,
         "mesh": "Pleural Effusion/left"},
        {"uid": "b", "report": "Normal chest. No effusion.", "label": 0, "mesh": "normal"},
        {"uid": "c", "report": "Large right pleural effusion.", "mesh": "Pleural Effusion/right"},
    ]
    ds = make_phantom_openi(30, seed=1, reports=reports)
    assert list(ds["label"]) == [1, 0, 1] * 10
    assert ds[0]["report"] == "Large left pleural effusion. Left effusion." and ds[1]["report"] == "Normal chest. No effusion."
    assert ds[0]["image_file"].endswith("openi-a.png") and set(ds["source"]) == {"synthetic"}
    for i, row in enumerate(ds):
        a = pixels(row["image"])
        if i % 3 == 0:
            assert lower_zone(a, "left") > lower_zone(a, "right")
        elif i % 3 == 2:
            assert lower_zone(a, "right") > lower_zone(a, "left")
    assert make_phantom_openi(seed=1, reports=reports).num_rows == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n must be"):
        make_phantom_openi(-1)
    with pytest.raises(ValueError, match="reports is empty"):
        make_phantom_openi(3, reports=[])
    with pytest.raises(ValueError, match="no report text"):
        make_phantom_openi(1, reports=[{"uid": "x", "report": "  ", "label": 0}])
    with pytest.raises(ValueError, match="unknown finding kind"):
        render_phantom([PhantomFinding("tumour")])
    with pytest.raises(ValueError, match="image_size"):
        make_phantom_openi(1, image_size=32)


def test_image_size_and_reexport() -> None:
    assert make_phantom_openi(2, seed=0, image_size=128)[0]["image"].size == (128, 128)
    assert data.make_phantom_openi is make_phantom_openi
    png = io.BytesIO()
    render_phantom([], seed=0).save(png, format="PNG")
    assert png.tell() > 0


@pytest.mark.openi
def test_pairing_with_real_reports(openi_dir: Path) -> None:
    rows = load_openi_reports(openi_dir)
    expected: Counter = Counter()
    with open(openi_dir / "reports.csv", newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            expected[int(record["label"])] += 1
    assert Counter(r["label"] for r in rows) == expected
    subset = rows[:40]
    ds = make_phantom_openi(seed=0, reports=subset)
    assert list(ds["label"]) == [r["label"] for r in subset]
    assert list(ds["report"]) == [r["report"] for r in subset]
    assert set(ds["source"]) == {"synthetic"}
