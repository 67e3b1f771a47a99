"""Experiments: loss ablation with intervals, the reproduce-the-paper script (offline end to end, online up to the
download), the two-level bootstrap, the CLIP baseline adapter and the paper-results data file."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_mtclip.recipes import reproduce
from cxr_mtclip.recipes.clip_baseline import tiny_open_clip_baseline
from cxr_mtclip.evaluation import bidirectional_retrieval_results, classification_metrics
from cxr_mtclip.evaluation.statistics import f1_rows, seed_query_bootstrap
from cxr_mtclip.evaluation.statistics import roc_auc_rows as auc_rows
from cxr_mtclip.recipes.ablation import ABLATION_VARIANTS, query_records
from cxr_mtclip.utils import torch_threads

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_RESULTS = REPO_ROOT / "examples" / "paper_results.json"
CELL = re.compile(r"^(-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]|n/a)$")


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- statistics ------------------------------------------------------------------------------------------


def test_two_level_bootstrap_reflects_seed_disagreement():
    # Two seeds that disagree completely: every query is 0 under seed 0 and 1 under seed 1.
    estimate, lo, hi, per_seed = seed_query_bootstrap([[np.zeros(40)], [np.ones(40)]], n_boot=400, seed=3)
    assert per_seed == [0.0, 1.0]
    assert estimate == 0.5
    assert (lo, hi) == (0.0, 1.0)  # resampling the seeds reaches both extremes
    # Resampling queries alone would have given a zero-width interval for each seed.
    assert seed_query_bootstrap([[np.ones(40)]], n_boot=200)[1:3] == (1.0, 1.0)


def test_two_level_bootstrap_draws_are_paired_across_variants():
    rng = np.random.default_rng(0)
    a = [[rng.random(30)], [rng.random(30)]]
    b = [[values[0] + 0.25] for values in a]
    est_a, lo_a, hi_a, _ = seed_query_bootstrap(a, n_boot=300, seed=7)
    est_b, lo_b, hi_b, _ = seed_query_bootstrap(b, n_boot=300, seed=7)
    assert est_b == pytest.approx(est_a + 0.25)
    assert (lo_b, hi_b) == pytest.approx((lo_a + 0.25, hi_a + 0.25))
    assert lo_a < est_a < hi_a


def test_two_level_bootstrap_rejects_ragged_input():
    with pytest.raises(ValueError, match="same length"):
        seed_query_bootstrap([[np.zeros(5)], [np.zeros(6)]])
    with pytest.raises(ValueError, match="n_boot"):
        seed_query_bootstrap([[np.zeros(5)]], n_boot=0)


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with torch_threads(0):
            pass


def test_row_statistics_match_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(6, 25))
    scores = np.round(rng.normal(size=(6, 25)), 1)  # rounding creates ties across classes
    predicted = rng.integers(0, 2, size=(6, 25))
    expected_auc = [roc_auc_score(y, s) for y, s in zip(labels, scores)]
    expected_f1 = [f1_score(y, p) for y, p in zip(labels, predicted)]
    np.testing.assert_allclose(auc_rows(labels, scores), expected_auc)
    np.testing.assert_allclose(f1_rows(labels, predicted), expected_f1)
    assert np.isnan(auc_rows(np.ones((1, 4), dtype=int), np.arange(4.0))[0])
    # The classification AUC of the package agrees with the row AUC on the same logits.
    assert auc_rows(labels[0], scores[0])[0] == pytest.approx(classification_metrics(scores[0], labels[0])["classification/roc_auc"])


def test_query_records_separate_the_own_half_from_cross_modal_hits():
    rng = np.random.default_rng(2)
    n = 30
    image = rng.normal(size=(n, 16))
    text = rng.normal(size=(n, 16))  # unrelated to the images: cross-modal retrieval is at chance
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    fused = (image + text) / np.linalg.norm(image + text, axis=1, keepdims=True)
    labels = np.arange(n) % 2
    texts = [f"report {i}" for i in range(n)]
    per_query, votes = query_records(image, text, fused, labels, texts, ks=(1, 5))

    paper = bidirectional_retrieval_results(image, text, labels, (1, 5), texts, protocol="paper", fused_embeds=fused)
    cross = bidirectional_retrieval_results(image, text, labels, (1, 5), texts)
    for direction in ("image_to_text", "text_to_image"):
        paper_hit = paper[direction].paired_ranks == 0
        cross_hit = cross[direction].paired_ranks == 0
        assert paper_hit.mean() > 0.9  # the query finds its own half
        np.testing.assert_array_equal(per_query[f"paper vs cross-modal/{direction}/paper-only top-1"], paper_hit & ~cross_hit)
        assert per_query[f"paper vs cross-modal/{direction}/accuracy@1 difference"].mean() == pytest.approx(
            paper[direction].metrics["accuracy@1"] - cross[direction].metrics["accuracy@1"])
        assert np.isnan(per_query[f"paper (own pair excluded)/{direction}/accuracy@1"]).all()
        np.testing.assert_array_equal(votes[f"cross-modal/{direction}"], cross[direction].vote_labels)


# -- the CLIP baseline adapter ---------------------------------------------------------------------------


def test_clip_baseline_features_are_open_clip_features():
    from PIL import Image

    model, processor = tiny_open_clip_baseline(seed=0)
    images = [Image.fromarray(np.full((80, 70), 40 * i, dtype=np.uint8)) for i in range(1, 4)]
    batch = processor(images=images, text=["no acute disease", "left pleural effusion", "heart size normal"])
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    assert batch["input_ids"].shape == (3, 77)
    with torch.no_grad():
        image = model.get_image_features(batch["pixel_values"])
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(image, torch.nn.functional.normalize(model.clip.encode_image(batch["pixel_values"]), dim=-1))
        torch.testing.assert_close(text, torch.nn.functional.normalize(model.clip.encode_text(batch["input_ids"]), dim=-1))
        out = model.head_and_loss(image, text)
        again, _ = tiny_open_clip_baseline(seed=0)
        torch.testing.assert_close(again.head_and_loss(image, text).logits, out.logits)
    torch.testing.assert_close(out.fused_embeds.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match="no loss"):
        model.head_and_loss(image, text, return_loss=True)


# -- the paper's numbers ---------------------------------------------------------------------------------


def test_paper_results_file_cites_the_paper_and_holds_the_published_tables(tmp_path):
    paper = reproduce.load_paper_results(PAPER_RESULTS)
    assert paper["citation"]["arxiv"] == "2601.05399"
    assert "Multi-task Cross-modal Learning" in paper["citation"]["title"]
    assert [s["direction"] for s in paper["tables"]["I"]["sections"]] == ["image_to_text", "text_to_image"]
    assert [s["direction"] for s in paper["tables"]["II"]["sections"]] == ["image_to_text"]
    assert [s["direction"] for s in paper["tables"]["III"]["sections"]] == ["text_to_image"]
    values = [v for table in paper["tables"].values() for section in table["sections"] for row in section["rows"]
              for v in row["values"].values()]
    assert len(values) == 3 * (8 + 8 + 11 + 11) and all(isinstance(v, float) for v in values)  # every cell copied

    bad = json.loads(PAPER_RESULTS.read_text())
    bad["tables"]["II"]["sections"][0]["rows"][0]["values"]["clip"] = "0.5"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.json.*Precision@1.*clip"):
        reproduce.load_paper_results(tmp_path / "bad.json")
    bad = json.loads(PAPER_RESULTS.read_text())
    bad["tables"]["III"]["sections"][0]["rows"][2]["row"] = "Recall@1"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"unknown row label 'Recall@1'"):
        reproduce.load_paper_results(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        reproduce.load_paper_results(tmp_path / "missing.json")


# -- network path, up to the download --------------------------------------------------------------------


def test_mode_is_never_chosen_automatically_and_the_hub_check_sees_an_unreachable_hub(monkeypatch):
    assert reproduce.resolve_mode() == "online"  # the paper's recipe, also under HF_HUB_OFFLINE=1 (conftest)
    assert reproduce.resolve_mode("offline") == "offline"
    for mode in ("auto", "sometimes"):  # no silent switch to the stand-in (issue 13)
        with pytest.raises(ValueError, match="mode"):
            reproduce.resolve_mode(mode)
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert reproduce.hub_available(timeout=2.0) is False


def test_download_file_writes_atomically_and_keeps_a_finished_file(tmp_path):
    source = tmp_path / "NLMCXR_reports.tgz"
    payload = np.random.default_rng(0).bytes(300_000)
    source.write_bytes(payload)
    dest = tmp_path / "cache" / "NLMCXR" / "NLMCXR_reports.tgz"
    assert reproduce.download_file(source.as_uri(), dest, show_progress=False) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["NLMCXR_reports.tgz"]  # no temp file left
    source.write_bytes(b"changed upstream")
    reproduce.download_file(source.as_uri(), dest, show_progress=False)
    assert dest.read_bytes() == payload  # an existing download is not fetched again
    missing = tmp_path / "cache" / "other.tgz"
    with pytest.raises(OSError, match="could not download"):
        reproduce.download_file((tmp_path / "absent.tgz").as_uri(), missing, show_progress=False)
    assert not missing.exists() and sorted(p.name for p in missing.parent.iterdir()) == ["NLMCXR"]


def test_network_path_downloads_the_nlm_tarballs_first(tmp_path, monkeypatch):
    calls = []

    class Stop(Exception):
        pass

    def fake_download(url, dest, **kwargs):
        calls.append((url, Path(dest)))
        return Path(dest)

    def stop_build(*args, **kwargs):
        raise Stop

    import cxr_mtclip.data

    monkeypatch.setattr(reproduce, "download_file", fake_download)
    monkeypatch.setattr(cxr_mtclip.data, "build_openi_dataset", stop_build)
    # the model files are checked first (tests/test_real_backbone_e2e.py); here only the download order matters
    monkeypatch.setattr(reproduce, "check_online_recipe", lambda *args: {"backbone": False, "clip": False})
    cache = tmp_path / "cache"
    with pytest.raises(Stop):
        _example("reproduce_paper").main(["--online", "--output_dir", str(tmp_path / "out"), "--cache_dir", str(cache), "--quiet"])
    assert calls == [
        ("https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz", cache / "NLMCXR" / "NLMCXR_reports.tgz"),
        ("https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz", cache / "NLMCXR" / "NLMCXR_png.tgz"),
    ]


# -- end to end ------------------------------------------------------------------------------------------


def test_reproduce_offline_runs_end_to_end_and_labels_every_table(tmp_path):
    out = tmp_path / "repro"
    # --offline is needed: the script never switches to the stand-in by itself (test_real_backbone_e2e.py)
    code = _example("reproduce_paper").main(["--offline", "--output_dir", str(out), "--n_studies", "120", "--epochs", "2",
                                             "--batch_size", "32", "--n_boot", "50", "--threads", "1", "--quiet"])
    assert code == 0
    comparison = json.loads((out / "paper_comparison.json").read_text())
    assert comparison["mode"] == "offline"
    assert set(comparison["tables"]) == {"I", "II", "III"}
    for table in comparison["tables"].values():
        assert table["protocol"] == "paper"
        for section in table["sections"]:
            for row in section["rows"]:
                assert set(row["cells"]) == {"clip", "biomedclip_zero_shot", "biomedclip_fine_tuned"}
                assert all(isinstance(cell["paper"], float) for cell in row["cells"].values())  # published values
    # the paper's layout: Table I both directions, II image->text label precision, III text->image
    first = comparison["tables"]["I"]["sections"][0]["rows"][0]
    assert first["row"] == "Accuracy@1" and first["key"] == "image_to_text/accuracy@1"
    assert isinstance(first["cells"]["biomedclip_fine_tuned"]["ours"], float)
    assert first["cells"]["biomedclip_fine_tuned"]["paper"] == 0.938
    table_three = {row["row"]: row["key"] for row in comparison["tables"]["III"]["sections"][0]["rows"]}
    assert table_three["Precision@3"] == "text_to_image/label_hit_rate@3" and table_three["ROC AUC"] == (
        "text_to_image/roc_auc_top1_score")

    markdown = (out / "paper_comparison.md").read_text()
    sections = markdown.split("\n## ")[1:]
    assert len(sections) >= 7
    for section in sections:
        assert "OFFLINE STAND-IN" in section, section.splitlines()[0]
    assert "Paper-only top-1" in markdown and "own pair excluded" in markdown
    for heading in ('Table I (the paper\'s "Cross-modal retrieval accuracy"), paper protocol',
                    'Table II (the paper\'s "Image-to-text retrieval precision by binary labels"), paper protocol',
                    'Table III (the paper\'s "Text-to-image retrieval precision by binary labels"), paper protocol',
                    "Ours: Tables II-III with the standard definitions", "Ours: Tables I-III in the cross-modal protocol",
                    "Ours: the classification head"):
        assert f"## {heading}" in markdown, heading
    assert "| Accuracy@1 (`accuracy@1`) | " in markdown and "| 0.9380 |" in markdown
    clip_line = next(line for line in markdown.splitlines() if line.startswith("- CLIP stand-in"))
    assert "report -> image Accuracy@1" in clip_line and "paper protocol" in clip_line and "own study" in clip_line

    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["data_note"].startswith("OFFLINE STAND-IN")
    fingerprints = {name: entry["fingerprint"] for name, entry in results["models"].items()}
    assert len(fingerprints) == 3 and len(set(fingerprints.values())) == 3  # fine-tuning changed the weights
    assert (out / "fine-tuned" / "config.json").is_file() and (out / "fine-tuned" / "processor_config.json").is_file()


def test_ablation_trains_every_loss_subset_with_two_seeds_and_reports_intervals(tmp_path):
    out = tmp_path / "ablation"
    code = _example("ablate").main(["--output_dir", str(out), "--seeds", "0", "1", "--n_studies", "160",
                                    "--epochs", "1", "--batch_size", "32", "--n_boot", "200", "--threads", "1",
                                    "--quiet"])
    assert code == 0
    results = json.loads((out / "ablation.json").read_text())
    names = [v.name for v in ABLATION_VARIANTS]
    assert [v["name"] for v in results["variants"]] == names
    assert sorted((r["variant"], r["seed"]) for r in results["runs"]) == sorted((n, s) for n in names for s in (0, 1))

    # Each run trained with its own weights: the logged loss is the weighted sum of the logged terms.
    weights = {v.name: v for v in ABLATION_VARIANTS}
    for run in results["runs"]:
        log, w = run["train_log"], weights[run["variant"]]
        expected = w.bce_weight * log["train_bce_loss"] + w.supcon_weight * log["train_supcon_loss"] + w.clip_weight * log["train_clip_loss"]
        assert log["train_loss"] == pytest.approx(expected, rel=1e-3), run["variant"]

    metrics = results["metrics"]
    for key in ("cross-modal/image_to_text/accuracy@1", "paper/text_to_image/precision@5", "paper (own pair excluded)/image_to_text/map",
                "classification/fused head/roc_auc", "paper vs cross-modal/image_to_text/paper-only top-1", "cross-modal/text_to_image/f1"):
        for name in names:
            cell = metrics[key][name]
            assert len(cell["per_seed"]) == 2 and cell["seeds"] == [0, 1]
            assert cell["mean"] == pytest.approx(np.mean(cell["per_seed"]))
            assert cell["ci_low"] <= cell["ci_high"]
    for name in names:  # a duplicate-aware hit includes every instance hit
        for k in (1, 5, 10):
            assert metrics[f"cross-modal/image_to_text/accuracy_dedup@{k}"][name]["mean"] >= metrics[f"cross-modal/image_to_text/accuracy@{k}"][name]["mean"]
    assert all(metrics["paper (own pair excluded)/text_to_image/accuracy@1"][n]["mean"] is None for n in names)

    markdown = (out / "ablation.md").read_text()
    header = "| Protocol | Direction | Metric | " + " | ".join(names) + " |"
    assert markdown.count("| Protocol | Direction | Metric |") == 1 and header in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Protocol")]
    assert len(rows) > 40
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 3 + len(names)
        assert all(CELL.match(c) for c in cells[3:]), line
    protocols = {line.split("|")[1].strip() for line in rows}
    assert protocols == {"cross-modal", "paper", "paper (own pair excluded)", "classification", "paper vs cross-modal"}
    assert "SYNTHETIC" in markdown and "synthetic (phantom images)" in markdown
    assert "test 40 (20 normal / 20 abnormal)" in markdown
    assert "instance accuracy" in markdown and "duplicate-aware" in markdown and "95% CI" in markdown
