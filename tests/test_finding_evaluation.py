"""Finding-aware evaluation (issue 18, part 3): evaluate_models / `cxr-mtclip evaluate` on a split with finding_labels,
checked against naive loops over the same model's embeddings; the trainer's eval metrics; the results.md section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from cxr_mtclip import CxrMtClipModel
from cxr_mtclip.data.findings import FINDING_NAMES, finding_labels_feature, finding_queries
from cxr_mtclip.evaluation.evaluate import PAPER_EXCLUDED, evaluate_models, main
from cxr_mtclip.evaluation.finding_results import evaluate_findings, finding_columns, findings_markdown
from cxr_mtclip.retrieval.embedding import embed_dataset, embed_reports

FINDINGS = ["cardiomegaly", "pleural_effusion", "opacity", "nodule"]
WORDS = {"cardiomegaly": "cardiomegaly", "pleural_effusion": "effusion", "opacity": "opacity", "nodule": "nodule"}


def finding_split(n: int = 30, seed: int = 0) -> Dataset:
    """OpenI-shaped rows with finding_labels: 0-2 findings each, every 7th study unknown (No Indexing)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("uid", "image", "report", "label", "source", "finding_labels")}
    for i in range(n):
        found = sorted(rng.choice(FINDINGS, size=int(rng.integers(0, 3)), replace=False).tolist(),
                       key=FINDING_NAMES.index)
        unknown = i % 7 == 3
        pixels = rng.normal(90, 20, (64, 64))
        for j, name in enumerate(FINDINGS):
            if name in found:
                pixels[8 + 12 * j : 18 + 12 * j, 10:50] += 100
        rows["uid"].append(f"S{i:03d}")
        rows["image"].append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        rows["report"].append(" ".join(WORDS[f] for f in found) or "heart lungs clear")
        rows["label"].append(int(bool(found) or unknown))
        rows["source"].append("synthetic")
        rows["finding_labels"].append(None if unknown else found)
    features = Features({"uid": Value("string"), "image": ImageFeature(), "report": Value("string"),
                         "label": ClassLabel(names=["normal", "abnormal"]), "source": Value("string"),
                         "finding_labels": finding_labels_feature()})
    return Dataset.from_dict(rows, features=features)


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return CxrMtClipModel(tiny_config).eval()


def _arrays(model, processor, split):
    embedded = embed_dataset(model, processor, split, show_progress=False)
    return {c: np.asarray(embedded[c], dtype=np.float64) for c in ("image_embeds", "text_embeds", "fused_embeds")}


def _naive_precision(scores, hot, known, k, f, exclude_self=False):
    """Mean over known queries carrying f of the fraction of the top k known items carrying f (a plain loop)."""
    values = []
    for q in range(scores.shape[0]):
        if not known[q] or not hot[q, f]:
            continue
        order = [j for j in np.argsort(-scores[q], kind="stable") if known[j] and not (exclude_self and j == q)]
        values.append(np.mean([hot[j, f] for j in order[:k]]))
    return float(np.mean(values)) if values else float("nan")


def test_evaluate_models_adds_finding_metrics_that_agree_with_naive_loops(tiny_model, tiny_processor, tmp_path):
    split = finding_split()
    results = evaluate_models({"tiny": (tiny_model, tiny_processor)}, split, tmp_path / "out", data_note="synthetic",
                              ks=(1, 5), n_boot=30, tsne=False, show_progress=False)
    entry = results["models"]["tiny"]["findings"]
    hot, known, names = finding_columns(split)
    assert names == FINDING_NAMES
    assert entry["counts"]["unknown"] == int((~known).sum()) == 4
    assert entry["counts"]["per_finding"]["cardiomegaly"] == int(hot[known, FINDING_NAMES.index("cardiomegaly")].sum())
    assert set(entry["retrieval"]) == {"cross-modal", PAPER_EXCLUDED}
    arrays = _arrays(tiny_model, tiny_processor, split)
    f = FINDING_NAMES.index("opacity")
    cross = arrays["image_embeds"] @ arrays["text_embeds"].T
    assert entry["retrieval"]["cross-modal"]["image_to_text/finding_precision@5/opacity"] == pytest.approx(
        _naive_precision(cross, hot, known, 5, f), abs=1e-6)
    assert entry["retrieval"]["cross-modal"]["text_to_image/finding_precision@5/opacity"] == pytest.approx(
        _naive_precision(cross.T, hot, known, 5, f), abs=1e-6)
    paper = arrays["image_embeds"] @ arrays["fused_embeds"].T
    assert entry["retrieval"][PAPER_EXCLUDED]["image_to_text/finding_precision@5/opacity"] == pytest.approx(
        _naive_precision(paper, hot, known, 5, f, exclude_self=True), abs=1e-6)
    # the templated text queries, ranked against the images
    queries = embed_reports(tiny_model, tiny_processor, [finding_queries()[name] for name in FINDING_NAMES])
    scores = queries.astype(np.float64) @ arrays["image_embeds"].T
    top = [j for j in np.argsort(-scores[f], kind="stable") if known[j]][:5]
    assert entry["text_queries"]["cross-modal"]["finding_query_to_image/precision@5/opacity"] == pytest.approx(
        np.mean(hot[top, f]))
    # macro / micro carry bootstrap intervals around the estimate; no head -> no classification entry
    ci = entry["bootstrap_ci"]["retrieval/cross-modal"]["image_to_text/finding_hit_rate@5/macro"]
    assert ci[0] == pytest.approx(entry["retrieval"]["cross-modal"]["image_to_text/finding_hit_rate@5/macro"])
    assert ci[1] <= ci[0] <= ci[2]
    assert "classification" not in entry
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "## Findings (multi-label; beyond the paper)" in markdown
    assert "| tiny | cross-modal | image to text | finding_jaccard@5 |" in markdown
    assert "| opacity |" in markdown


def test_a_split_without_finding_labels_is_evaluated_as_before(tiny_model, tiny_processor, tmp_path):
    split = finding_split().remove_columns("finding_labels")
    results = evaluate_models({"tiny": (tiny_model, tiny_processor)}, split, tmp_path / "out", data_note="synthetic",
                              ks=(1, 5), n_boot=0, tsne=False, show_progress=False)
    assert "findings" not in results["models"]["tiny"]
    assert "Findings" not in (tmp_path / "out" / "results.md").read_text()


def test_evaluate_cli_prints_finding_averages(tiny_model, tiny_processor, tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    DatasetDict({"test": finding_split()}).save_to_disk(str(tmp_path / "data"))
    code = main(["--dataset", str(tmp_path / "data"), "--model", f"tiny={folder}", "--output-dir", str(tmp_path / "out"),
                 "--ks", "1", "5", "--n-boot", "20", "--no-tsne", "--quiet", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "tiny [findings, cross-modal]: image_to_text/finding_precision@1/macro=" in printed
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["models"]["tiny"]["findings"]["ks"] == [1, 5]


def test_findings_markdown_of_a_hand_made_entry():
    e = np.eye(4)
    hot = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=bool)
    entry = evaluate_findings({"image_embeds": e, "text_embeds": e, "fused_embeds": e}, hot, np.ones(4, bool),
                              ["a", "b"], ks=(1,), n_boot=0)
    # own report first: precision 1 for every finding (a: queries 0 and 1; b: query 2); paper without the own
    # study: query 0's best other is 1 (ties broken by index), query 1's is 0 -> a=1; query 2 gets 0 -> b=0
    assert entry["retrieval"]["cross-modal"]["image_to_text/finding_precision@1/macro"] == 1.0
    assert entry["retrieval"][PAPER_EXCLUDED]["image_to_text/finding_precision@1/a"] == 1.0
    assert entry["retrieval"][PAPER_EXCLUDED]["image_to_text/finding_precision@1/b"] == 0.0
    assert entry["retrieval"][PAPER_EXCLUDED]["image_to_text/finding_precision@1/macro"] == 0.5
    # Jaccard: query 3 (no finding) retrieves study 0 ({a}) -> 0; queries 0, 1 -> 1; query 2 -> study 0: 0
    assert entry["retrieval"][PAPER_EXCLUDED]["image_to_text/finding_jaccard@1"] == 0.5
    text = findings_markdown({"models": {"m": {"findings": entry}}})
    assert "| m | paper (own pair excluded) | image to text | finding_precision@1/macro | 0.500 |" in text
