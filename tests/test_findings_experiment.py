"""The findings experiment (issue 18, part 4): its summary against hand-made runs, one small offline run end to end,
and the GPU command's code path (a pretrained open_clip backbone on a saved OpenI-shaped DatasetDict) on the
simulated Hub."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from cxr_mtclip.data import make_phantom_openi, split_openi
from cxr_mtclip.data.findings import FINDING_NAMES
from cxr_mtclip.recipes.findings_experiment import (
    BINARY,
    FINDING_ARMS,
    FindingArm,
    FindingRun,
    format_findings_experiment,
    run_findings_experiment,
    summarise_finding_runs,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(arm: str, seed: int, precision: np.ndarray, accuracy: np.ndarray) -> FindingRun:
    """A run whose image->report finding_precision@1 per (query, finding) and accuracy@1 per query are given."""
    n = accuracy.shape[0]
    nan = np.full((n, len(FINDING_NAMES)), np.nan)
    per_query = {f"{d}/{m}@1": nan.copy() for d in ("image_to_text", "text_to_image")
                 for m in ("finding_precision", "finding_hit_rate")}
    per_query["image_to_text/finding_precision@1"] = precision
    for d in ("image_to_text", "text_to_image"):
        per_query[f"{d}/finding_jaccard@1"] = np.zeros(n)
        per_query[f"{d}/accuracy@1"] = accuracy if d == "image_to_text" else np.zeros(n)
    labels = np.arange(n) % 2
    return FindingRun(arm, seed, per_query, {}, labels, labels + 0.1 * seed, None,
                      np.zeros((n, len(FINDING_NAMES)), bool), np.ones(n, bool))


def test_summary_means_and_paired_differences_by_hand():
    # 4 queries; finding 0 carried by queries 0-1, finding 1 by queries 2-3 (NaN elsewhere)
    def precision(a, b, c, d):
        values = np.full((4, len(FINDING_NAMES)), np.nan)
        values[[0, 1], 0] = a, b
        values[[2, 3], 1] = c, d
        return values

    runs = [
        _run(BINARY, 0, precision(1, 0, 0, 0), np.array([1.0, 0, 0, 0])),  # macro = (0.5 + 0) / 2 = 0.25
        _run(BINARY, 1, precision(1, 1, 0, 0), np.array([1.0, 1, 0, 0])),  # macro 0.5
        _run("multi-label", 0, precision(1, 1, 1, 0), np.array([0.0, 0, 0, 0])),  # macro (1 + 0.5) / 2 = 0.75
        _run("multi-label", 1, precision(1, 1, 1, 1), np.array([1.0, 0, 0, 0])),  # macro 1.0
    ]
    summary = summarise_finding_runs(runs, (1,), n_boot=200, seed=0)
    row = summary["image_to_text/finding_precision@1/macro"]
    assert row[BINARY]["per_seed"] == pytest.approx([0.25, 0.5]) and row[BINARY]["mean"] == pytest.approx(0.375)
    assert row["multi-label"]["mean"] == pytest.approx(0.875)
    difference = row[f"multi-label - {BINARY}"]
    assert difference["per_seed"] == pytest.approx([0.5, 0.5]) and difference["mean"] == pytest.approx(0.5)
    assert difference["ci_low"] <= difference["ci_high"]
    micro = summary["image_to_text/finding_precision@1/micro"]
    assert micro[BINARY]["per_seed"] == pytest.approx([0.25, 0.5])  # 1/4 and 2/4 of the (query, finding) pairs
    accuracy = summary["image_to_text/accuracy@1"]
    assert accuracy[f"multi-label - {BINARY}"]["per_seed"] == pytest.approx([-0.25, -0.25])
    # no arm has a finding head here: that row is empty, and the binary head's AUC is there for every arm
    assert summary["classification/finding_roc_auc/macro"] == {}
    assert summary["classification/roc_auc"][BINARY]["mean"] == pytest.approx(1.0)


def test_arms_map_to_config_overrides():
    base = {"bce_weight": 0.2, "supcon_weight": 0.3, "clip_weight": 1.0}
    arms = {a.name: a for a in FINDING_ARMS}
    assert arms[BINARY].config_overrides(base) == base  # no head: the paper model's state dict
    multi = arms["multi-label"].config_overrides(base)
    assert multi["bce_weight"] == 0 and multi["supcon_weight"] == 0 and multi["clip_weight"] == 1.0
    assert multi["finding_bce_weight"] == 0.2 and multi["multilabel_supcon_weight"] == 0.3
    assert multi["finding_names"] == FINDING_NAMES


def test_small_offline_run_writes_the_table(tmp_path, capsys):
    arms = (FINDING_ARMS[0], FindingArm("multi-label", bce=0.0, supcon=0.0, finding_bce=1.0, multilabel_supcon=1.0))
    results = run_findings_experiment(tmp_path / "out", arms=arms, seeds=(0, 1), n_studies=96, epochs=1,
                                      batch_size=16, ks=(1, 5), n_boot=20, verbose=False)
    on_disk = json.loads((tmp_path / "out" / "findings_experiment.json").read_text())
    assert on_disk == results
    metrics = results["metrics"]
    for key in ("image_to_text/finding_precision@5/macro", "text_to_image/finding_hit_rate@1/macro",
                "image_to_text/finding_jaccard@5", "finding_query_to_image/precision@5/macro",
                "image_to_text/accuracy@1", "classification/roc_auc"):
        assert set(metrics[key]) == {BINARY, "multi-label", f"multi-label - {BINARY}"}, key
        cell = metrics[key]["multi-label"]
        assert len(cell["per_seed"]) == 2 and cell["mean"] == pytest.approx(np.nanmean(cell["per_seed"]))
        diff = metrics[key][f"multi-label - {BINARY}"]["per_seed"]
        expected = np.subtract(metrics[key]["multi-label"]["per_seed"], metrics[key][BINARY]["per_seed"])
        assert diff == pytest.approx(list(expected), nan_ok=True)
    assert set(metrics["classification/finding_roc_auc/macro"]) == {"multi-label"}  # only the arm with the head
    assert results["data"]["test_drawn_share"]["cardiomegaly"] is None or 0 <= results["data"]["test_drawn_share"]["cardiomegaly"] <= 1
    table = (tmp_path / "out" / "findings_experiment.md").read_text()
    assert table == format_findings_experiment(results)
    assert "| image->report/finding precision@5/macro |" in table and "SYNTHETIC" in table
    # one epoch of a few studies is far too short for the random towers: the table says so first
    assert results["warning"].startswith("4 optimiser steps") and f"**Warning: {results['warning']}**" in table
    # the example wrapper runs the same recipe
    script = runpy.run_path(str(REPO_ROOT / "examples" / "findings_experiment.py"))
    with pytest.raises(SystemExit):
        script["main"](["--arms", "no such arm"])
    assert "unknown arm" in capsys.readouterr().err


def test_gpu_command_path_runs_with_a_pretrained_backbone_on_a_saved_build(tmp_path):
    """`--backbone <open_clip> --openi <saved DatasetDict>`: the paper's recipe around a (simulated) BiomedCLIP."""
    from cxr_mtclip.testing import hub as sim

    data = split_openi(make_phantom_openi(64, seed=3, image_size=64), seed=0, test_per_class=8)
    data.save_to_disk(str(tmp_path / "openi"))
    simulated = sim.write_simulated_hub(tmp_path / "hub", variant="tiny", texts=list(data["train"]["report"]))
    with sim.hub_cache(simulated.cache_dir):
        results = run_findings_experiment(
            tmp_path / "out", arms=FINDING_ARMS[:2], seeds=(0,), openi=tmp_path / "openi",
            backbone=f"hf-hub:{simulated.biomedclip_repo}", epochs=1, batch_size=16, ks=(1, 3), n_boot=10,
            verbose=False,
        )
    assert results["data"]["note"].startswith("real OpenI studies from")  # a saved build is read as is
    assert results["base_weights"] == {"bce_weight": 0.69, "supcon_weight": 1.97, "clip_weight": 0.46}
    assert results["recipe"]["learning_rate"] == "paper"
    assert "binary + finding head" in results["metrics"]["classification/finding_roc_auc/macro"]
