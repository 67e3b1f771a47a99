"""Tests for cxr_mtclip.data.findings: the MeSH -> findings mapping, the column type, multi-hot, counts.

Unit tests use MeSH strings composed here from the MeSH vocabulary in OpenI's format; the real
reports are read only from ../shared/openi at run time (tests marked ``openi``).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cxr_mtclip.data.findings import (
    DEFAULT_QUERY_TEMPLATE,
    FINDING_DESCRIPTIONS,
    FINDING_NAMES,
    MESH_RULES,
    MIN_SUPPORT,
    FindingCounts,
    MeshTerm,
    finding_counts,
    finding_labels_feature,
    finding_multi_hot,
    finding_queries,
    findings_from_mesh,
    parse_mesh,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "findings.md"


# ----------------------------------------------------------------------------------------------
# The table itself
# ----------------------------------------------------------------------------------------------


def test_table_is_consistent():
    assert len(FINDING_NAMES) == len(set(FINDING_NAMES))
    assert all(re.fullmatch(r"[a-z][a-z_]*", name) for name in FINDING_NAMES)
    assert {rule.finding for rule in MESH_RULES} == set(FINDING_NAMES)  # every finding reachable
    assert set(FINDING_DESCRIPTIONS) == set(FINDING_NAMES)
    for rule in MESH_RULES:  # heads/qualifiers are stored normalised, or they could never match
        assert rule.head == " ".join(rule.head.split()).casefold(), rule
        assert all(q == " ".join(q.split()).casefold() for q in rule.qualifiers), rule
    assert len(set((r.head, r.qualifiers) for r in MESH_RULES)) == len(MESH_RULES)


# ----------------------------------------------------------------------------------------------
# findings_from_mesh on written-out MeSH strings
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mesh,expected",
    [
        ("Cardiomegaly", ["cardiomegaly"]),
        ("Cardiomegaly/borderline", ["cardiomegaly"]),  # severity never changes the finding
        ("Cardiac Shadow/enlarged/mild", ["cardiomegaly"]),
        ("Cardiac Shadow/right/prominent", []),  # Cardiac Shadow without enlarged: dropped
        # Lung: the qualifier names the finding.
        ("Lung/hypoinflation", ["hypoinflation"]),
        ("Lung/hypoinflation/mild", ["hypoinflation"]),
        ("Lung/bilateral/hypoinflation", ["hypoinflation"]),
        ("Lung/hyperdistention", ["hyperinflation"]),
        ("Lung/azygos lobe", []),
        # Calcinosis: the aorta -> atherosclerosis, elsewhere -> calcification.
        ("Calcinosis/aorta", ["atherosclerosis"]),
        ("Calcinosis/aorta, thoracic", ["atherosclerosis"]),
        ("Calcinosis/lung/hilum/lymph nodes/right", ["calcification"]),
        ("Calcinosis", ["calcification"]),
        # Degenerative spine needs `degenerative` on anatomy heads, not on Spondylosis.
        ("Thoracic Vertebrae/degenerative/mild", ["spondylosis"]),
        ("Thoracic Vertebrae/scattered", []),
        ("Spine/degenerative", ["spondylosis"]),
        ("Spondylosis/thoracic vertebrae", ["spondylosis"]),
        ("Osteophyte/thoracic vertebrae/multiple", ["spondylosis"]),
        ("Osteophyte/shoulder", []),
        ("Arthritis/spine", ["spondylosis"]),
        ("Arthritis", []),
        ("Aorta/tortuous/mild", ["tortuous_aorta"]),
        ("Aorta, Thoracic/tortuous", ["tortuous_aorta"]),
        ("Aorta/obscured", []),
        ("Diaphragm/right/elevated", ["elevated_diaphragm"]),
        ("Diaphragmatic Eventration/right", ["elevated_diaphragm"]),
        ("Diaphragm/bilateral/flattened", ["flattened_diaphragm"]),
        ("Diaphragm/left/obscured", []),
        ("Density/lung/base/left", ["opacity"]),
        ("Density/breast", []),
        ("Infiltrate/lung/base/bilateral", ["opacity"]),
        ("Consolidation/lung/lower lobe/left", ["airspace_disease"]),
        ("Mass/lung/upper lobe/right", ["nodule"]),
        ("Emphysema", ["emphysema"]),
        ("Pulmonary Emphysema/severe", ["emphysema"]),
        ("Subcutaneous Emphysema/neck", []),  # a different head, not a substring match
        ("Thickening/pleura/apex/bilateral", ["pleural_thickening"]),
        ("Thickening/bronchi", []),
        ("Costophrenic Angle/left/blunted/mild", ["blunted_costophrenic_angle"]),
        ("Deformity/ribs/right", ["bone_deformity"]),
        ("Deformity/mediastinum", []),
        ("Catheters, Indwelling/right", ["support_devices"]),
        ("Bone Diseases, Metabolic", ["osteopenia"]),
        ("Pneumothorax/apex/right/small", []),  # below the support threshold
        ("Technical Quality of Image Unsatisfactory", []),
    ],
)
def test_single_terms(mesh, expected):
    assert findings_from_mesh(mesh) == expected


def test_multiple_terms_union_deduplicated_in_table_order():
    mesh = "Pleural Effusion/bilateral/small;Cardiomegaly/mild;Cardiac Shadow/enlarged;Lung/hypoinflation;Opacity/lung/base"
    expected = ["opacity", "cardiomegaly", "hypoinflation", "pleural_effusion"]
    assert findings_from_mesh(mesh) == expected
    assert [FINDING_NAMES.index(n) for n in expected] == sorted(FINDING_NAMES.index(n) for n in expected)
    # Term order does not matter.
    assert findings_from_mesh(";".join(reversed(mesh.split(";")))) == expected


def test_normalisation_of_case_and_whitespace():
    assert findings_from_mesh("thoracic vertebrae/degenerative/mild") == ["spondylosis"]
    assert findings_from_mesh(" Technical Quality of Image Unsatisfactory ;Cardiomegaly ") == ["cardiomegaly"]
    assert findings_from_mesh("Pulmonary   Atelectasis / base / left") == ["atelectasis"]
    assert findings_from_mesh("CARDIOMEGALY;;") == ["cardiomegaly"]


@pytest.mark.parametrize("mesh", ["normal", "Normal", " normal "])
def test_normal_is_known_and_negative(mesh):
    assert findings_from_mesh(mesh) == []


@pytest.mark.parametrize("mesh", ["No Indexing", "no indexing", "  No  Indexing ", "", "   ", None, float("nan"), "nan", "None", ";"])
def test_unindexed_or_missing_is_unknown(mesh):
    assert findings_from_mesh(mesh) is None


def test_normal_or_no_indexing_beside_real_terms_is_ignored():
    assert findings_from_mesh("normal;Cardiomegaly") == ["cardiomegaly"]
    assert findings_from_mesh("No Indexing;Pleural Effusion/left") == ["pleural_effusion"]


@pytest.mark.parametrize("bad", [3, 1.5, ["Cardiomegaly"], b"Cardiomegaly"])
def test_non_string_mesh_is_rejected(bad):
    with pytest.raises(ValueError, match="MeSH value must be a string"):
        findings_from_mesh(bad)


def test_parse_mesh_splits_head_and_qualifiers():
    assert parse_mesh("Opacity/lung/base/left;Cardiomegaly") == [
        MeshTerm("opacity", ("lung", "base", "left")),
        MeshTerm("cardiomegaly", ()),
    ]
    assert parse_mesh("No Indexing") is None
    assert parse_mesh("normal") == [MeshTerm("normal")]


# ----------------------------------------------------------------------------------------------
# Column type, multi-hot, counts, queries
# ----------------------------------------------------------------------------------------------


def test_feature_round_trips_through_a_dataset_with_unknown_rows():
    from datasets import ClassLabel, Dataset, Features, List, Value

    feature = finding_labels_feature()
    assert isinstance(feature, List) and isinstance(feature.feature, ClassLabel)
    assert feature.feature.names == FINDING_NAMES
    values = [findings_from_mesh(m) for m in ["Cardiomegaly;Lung/hypoinflation", "normal", "No Indexing"]]
    ds = Dataset.from_dict(
        {"uid": ["1", "2", "3"], "finding_labels": values},
        features=Features({"uid": Value("string"), "finding_labels": feature}),
    )
    stored = ds["finding_labels"]
    assert stored[0] == [FINDING_NAMES.index("cardiomegaly"), FINDING_NAMES.index("hypoinflation")]
    assert stored[1] == [] and stored[2] is None
    from_ids, known_ids = finding_multi_hot(stored)
    from_names, known_names = finding_multi_hot(values)
    np.testing.assert_array_equal(from_ids, from_names)
    np.testing.assert_array_equal(known_ids, known_names)
    assert known_ids.tolist() == [True, True, False]


def test_multi_hot_values_and_errors():
    names = ["a", "b", "c"]
    hot, known = finding_multi_hot([["a", "c"], [1], [], None, ["c", "c"]], names=names)
    assert hot.dtype == np.float32 and known.dtype == bool
    assert hot.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert known.tolist() == [True, True, True, False, True]
    with pytest.raises(ValueError, match="unknown finding 'd'"):
        finding_multi_hot([["d"]], names=names)
    with pytest.raises(ValueError, match=r"id in \[0, 3\)"):
        finding_multi_hot([[3]], names=names)
    with pytest.raises(ValueError, match="the string"):
        finding_multi_hot(["a"], names=names)
    with pytest.raises(ValueError, match=r"id in \[0, 3\)"):
        finding_multi_hot([[True]], names=names)
    assert finding_multi_hot([], names=names)[0].shape == (0, 3)


def test_counts_and_markdown():
    counts = finding_counts([["a"], ["a", "b"], [], None, [], ["b"]], names=["a", "b", "c"])
    assert counts == FindingCounts(per_finding={"a": 2, "b": 2, "c": 0}, n_studies=6, n_unknown=1, n_no_finding=2)
    table = counts.to_markdown()
    assert table.splitlines()[2:5] == ["| a | 2 |", "| b | 2 |", "| c | 0 |"]
    assert "| (unknown: not indexed) | 1 |" in table and "| **all studies** | 6 |" in table


def test_queries_one_per_finding():
    queries = finding_queries()
    assert list(queries) == FINDING_NAMES
    assert queries["cardiomegaly"] == "Findings consistent with cardiomegaly."
    assert len(set(queries.values())) == len(queries)
    assert all(q == DEFAULT_QUERY_TEMPLATE.format(FINDING_DESCRIPTIONS[n]) for n, q in queries.items())
    assert finding_queries("There is {}.", names=["pleural_effusion"]) == {"pleural_effusion": "There is pleural effusion."}
    with pytest.raises(ValueError, match="slot"):
        finding_queries("no slot")
    with pytest.raises(ValueError, match="no description"):
        finding_queries(names=["not_a_finding"])


# ----------------------------------------------------------------------------------------------
# The real reports (../shared/openi)
# ----------------------------------------------------------------------------------------------


def _real_mesh(openi_dir: Path) -> list[str]:
    with open(openi_dir / "reports.csv", newline="", encoding="utf-8") as handle:
        return [row["mesh"] for row in csv.DictReader(handle)]


def _direct_counts(meshes: list[str]) -> Counter:
    """Independent count: for each study, the findings whose rules match any raw term (string ops only)."""
    counts: Counter = Counter()
    for mesh in meshes:
        hit = set()
        for raw in mesh.split(";"):
            parts = [" ".join(p.split()).lower() for p in raw.split("/")]
            for rule in MESH_RULES:
                if parts[0] == rule.head and (not rule.qualifiers or set(parts[1:]) & rule.qualifiers):
                    hit.add(rule.finding)
                    break
        counts.update(hit)
    return counts


@pytest.mark.openi
def test_real_reports_map_and_unknown_counts(openi_dir: Path):
    meshes = _real_mesh(openi_dir)
    assert len(meshes) == 3826
    labels = [findings_from_mesh(m) for m in meshes]
    counts = finding_counts(labels)
    assert counts.n_studies == 3826
    assert counts.n_unknown == sum(m.strip() == "No Indexing" for m in meshes) == 92
    normals = [lab for m, lab in zip(meshes, labels) if m.strip() == "normal"]
    assert len(normals) == 1354 and all(lab == [] for lab in normals)
    assert counts.n_no_finding >= len(normals)
    # Every abnormal indexed study is either mapped or has only dropped terms: never None.
    assert all(lab is not None for m, lab in zip(meshes, labels) if m.strip() not in ("No Indexing", ""))
    assert dict(_direct_counts(meshes)) == {k: v for k, v in counts.per_finding.items() if v}


@pytest.mark.openi
def test_real_reports_every_finding_meets_the_support_threshold(openi_dir: Path):
    counts = finding_counts([findings_from_mesh(m) for m in _real_mesh(openi_dir)])
    assert min(counts.per_finding.values()) >= MIN_SUPPORT
    # FINDING_NAMES is ordered by support, largest first.
    values = [counts.per_finding[name] for name in FINDING_NAMES]
    assert values == sorted(values, reverse=True)


@pytest.mark.openi
def test_real_reports_no_frequent_head_is_silently_dropped(openi_dir: Path):
    """Every MeSH head with >= MIN_SUPPORT studies feeds a finding, except the documented exclusions."""
    heads: Counter = Counter()
    mapped: Counter = Counter()
    for mesh in _real_mesh(openi_dir):
        terms = parse_mesh(mesh) or []
        heads.update({t.head for t in terms})
        mapped.update({t.head for t in terms if _maps(t)})
    frequent = {h for h, n in heads.items() if n >= MIN_SUPPORT} - {"normal"}
    assert len(frequent) == 45  # the count, after case/whitespace normalisation
    assert {h for h in frequent if mapped[h] == 0} == {"technical quality of image unsatisfactory"}


def _maps(term: MeshTerm) -> bool:
    return any(rule.matches(term) for rule in MESH_RULES)


@pytest.mark.openi
def test_kaggle_table_gives_the_same_findings(openi_dir: Path):
    """The Kaggle-layout MeSH column (raw/indiana_reports.csv) maps like reports.csv, uid by uid."""
    with open(openi_dir / "reports.csv", newline="", encoding="utf-8") as handle:
        shared = {row["uid"]: row["mesh"] for row in csv.DictReader(handle)}
    with open(openi_dir / "raw" / "indiana_reports.csv", newline="", encoding="utf-8") as handle:
        kaggle = {row["uid"]: row["MeSH"] for row in csv.DictReader(handle)}
    common = sorted(set(shared) & set(kaggle))
    assert len(common) == len(shared)
    assert all(findings_from_mesh(kaggle[uid]) == findings_from_mesh(shared[uid]) for uid in common)


@pytest.mark.openi
def test_docs_counts_table_matches_the_real_reports(openi_dir: Path):
    counts = finding_counts([findings_from_mesh(m) for m in _real_mesh(openi_dir)])
    documented = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*\d+\s*\|\s*`([a-z_]+)`\s*\|\s*(\d+)\s*\|", line)
        if match:
            documented[match.group(1)] = int(match.group(2))
    assert documented == counts.per_finding
    text = DOCS.read_text(encoding="utf-8")
    assert f"{counts.n_unknown} unknown" in text and f"{counts.n_no_finding} with no listed finding" in text
