"""cxr_mtclip.evaluation.evaluate and cxr_mtclip.evaluation.plots: results.json / results.md / t-SNE PNG on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from cxr_mtclip import CxrMtClipModel
from cxr_mtclip.evaluation.evaluate import PAPER_EXCLUDED, _evaluate_one, evaluate_models, main, model_slug
from cxr_mtclip.evaluation.plots import plot_loss_curves, plot_tsne, tsne_perplexity

REPO_ROOT = Path(__file__).resolve().parents[1]
WORDS = ["heart", "lungs", "clear", "effusion", "cardiomegaly", "opacity", "pneumothorax", "edema", "stable", "spine"]


def synthetic_split(n: int = 24, seed: int = 0, no_image: tuple[int, ...] = ()) -> Dataset:
    """Small OpenI-shaped rows; label 1 studies carry a bright blob, label 0 do not; reports from a word list."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("uid", "image", "report", "label", "source")}
    for i in range(n):
        label = int(i % 3 == 0)
        pixels = rng.normal(90, 20, (64, 64))
        if label:
            pixels[20:40, 10 + i % 20 : 30 + i % 20] += 120
        rows["uid"].append(f"S{i:03d}")
        rows["image"].append(None if i in no_image else Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        words = rng.choice(WORDS, size=4, replace=False)
        rows["report"].append("no acute disease" if (not label and i % 4 == 1) else " ".join(words))
        rows["label"].append(label)
        rows["source"].append("synthetic")
    features = Features({"uid": Value("string"), "image": ImageFeature(), "report": Value("string"),
                         "label": ClassLabel(names=["normal", "abnormal"]), "source": Value("string")})
    return Dataset.from_dict(rows, features=features)


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return CxrMtClipModel(tiny_config).eval()


def _assert_nontrivial_png(path: Path, min_side: int = 300) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20  # more than a blank or single-colour canvas
    background = (pixels == 255).all(axis=2).mean()
    assert 0.3 < background < 0.999  # mostly white page, but something is drawn


def test_evaluate_models_writes_json_markdown_and_tsne(tiny_model, tiny_processor, tmp_path):
    split = synthetic_split(25, no_image=(7,))
    note = "synthetic test studies (not real X-rays)"
    results = evaluate_models({"tiny zero-shot": (tiny_model, tiny_processor)}, split, tmp_path / "out",
                              protocol="both", data_note=note, n_boot=50, show_progress=False)

    on_disk = json.loads((tmp_path / "out" / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert on_disk == results
    assert results["data_note"] == note and results["protocol"] == "both"
    assert results["counts"]["rows"] == 25 and results["counts"]["evaluated"] == 24
    assert results["counts"]["left_out_no_image"] == 1 and results["counts"]["sources"] == {"synthetic": 24}
    assert results["counts"]["labels"] == {"normal": 15, "abnormal": 9}
    entry = results["models"]["tiny zero-shot"]
    assert set(entry["metrics"]) == {"cross-modal", "paper", PAPER_EXCLUDED}
    for protocol, metrics in entry["metrics"].items():
        for direction in ("image_to_text", "text_to_image"):
            for key in ("precision@5", "mean_cosine@10", "map", "roc_auc", "f1", "accuracy_dedup@1"):
                assert f"{direction}/{key}" in metrics, (protocol, direction, key)
    assert entry["metrics"][PAPER_EXCLUDED]["image_to_text/accuracy@1"] is None  # the pair is gone: undefined
    assert 0.0 <= entry["metrics"]["paper"]["image_to_text/accuracy@1"] <= 1.0
    estimate, low, high = entry["bootstrap_ci"]["cross-modal"]["image_to_text/precision@1"]
    assert low <= estimate <= high
    assert set(entry["classification"]) == {"classification/roc_auc", "classification/f1", "classification/accuracy"}
    assert entry["fingerprint"].startswith("sha256:")
    assert entry["index_check"] == {k: 1.0 for k in ("cross-modal/image_to_text", "cross-modal/text_to_image",
                                                      "paper/image_to_text", "paper/text_to_image")}
    self_match = entry["self_match"]["image_to_text"]
    assert self_match["difference/accuracy@1"] == pytest.approx(
        self_match["paper/accuracy@1"] - self_match["cross-modal/accuracy@1"])

    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown.count(f"_Data: {note}_") >= 6
    for heading in ("### Image -> report retrieval", "### Report -> image retrieval", "## Protocol: cross-modal",
                    "## Protocol: paper (Algorithm 2)", "own pair excluded", "### Normal/abnormal classification"):
        assert heading in markdown
    assert entry["tsne_png"] == "tsne_tiny_zero-shot.png"
    assert f"![tiny zero-shot]({entry['tsne_png']})" in markdown
    # every retrieval cell carries its 95% bootstrap interval, as results.json holds it
    low, high = entry["bootstrap_ci"]["cross-modal"]["image_to_text/precision@1"][1:]
    value = entry["metrics"]["cross-modal"]["image_to_text/precision@1"]
    assert f"| precision@1 | {value:.4f} [{low:.4f}, {high:.4f}] |" in markdown
    _assert_nontrivial_png(tmp_path / "out" / entry["tsne_png"])


def test_evaluate_models_cross_modal_only_and_two_models(tiny_model, tiny_processor, tiny_config, tmp_path):
    torch.manual_seed(5)
    other = CxrMtClipModel(tiny_config).eval()
    results = evaluate_models({"a": (tiny_model, tiny_processor), "b": (other, tiny_processor)}, synthetic_split(12),
                              tmp_path, protocol="cross-modal", data_note="synthetic", ks=(1, 5), n_boot=0,
                              tsne=False, show_progress=False)
    for name in ("a", "b"):
        entry = results["models"][name]
        assert set(entry["metrics"]) == {"cross-modal"} and "self_match" not in entry and entry["bootstrap_ci"] == {}
        assert "image_to_text/accuracy@5" in entry["metrics"]["cross-modal"]
    assert results["models"]["a"]["fingerprint"] != results["models"]["b"]["fingerprint"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| Metric | a | b |" in markdown and "Protocol: paper" not in markdown
    assert not list(tmp_path.glob("*.png"))


def test_evaluate_models_rejects_bad_arguments(tiny_model, tiny_processor, tmp_path):
    models = {"m": (tiny_model, tiny_processor)}
    with pytest.raises(ValueError, match="data_note"):
        evaluate_models(models, synthetic_split(12), tmp_path, data_note="  ")
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_models(models, synthetic_split(12), tmp_path, data_note="x", protocol="fused")
    with pytest.raises(ValueError, match=r"too few for ks=\(1, 3, 5, 10\)"):
        evaluate_models(models, synthetic_split(8), tmp_path, data_note="x")
    with pytest.raises(ValueError, match="collide"):
        evaluate_models({"a b": models["m"], "a_b": models["m"]}, synthetic_split(12), tmp_path, data_note="x")
    assert not (tmp_path / "results.json").exists()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_paper_protocol_self_match_is_measured():
    """Unrelated image and report embeddings: cross-modal is at chance, the paper protocol still finds the pair."""
    rng = np.random.default_rng(0)
    n, ks = 200, (1, 5)
    image, text = _unit(rng.normal(size=(n, 64))), _unit(rng.normal(size=(n, 64)))
    fused = _unit(image + text)
    labels = np.arange(n) % 2
    arrays = {"image_embeds": image, "text_embeds": text, "fused_embeds": fused,
              "logits": rng.normal(size=n).astype(np.float32)}
    entry = _evaluate_one(arrays, labels, [f"report {i}" for i in range(n)], ["cross-modal", "paper"], ks, 0, 0)
    match = entry["self_match"]["image_to_text"]
    assert match["cross-modal/accuracy@1"] < 0.05
    assert match["paper/accuracy@1"] > 0.95  # all of it from the query's own half
    assert match["paper_only_top1_fraction"] > 0.9
    assert match["mean_own_pair_score"] == pytest.approx(math.sqrt(0.5), abs=0.02)
    assert entry["metrics"][PAPER_EXCLUDED]["image_to_text/precision@1"] == pytest.approx(0.5, abs=0.1)

    identical = {**arrays, "text_embeds": image, "fused_embeds": image}
    same = _evaluate_one(identical, labels, [f"report {i}" for i in range(n)], ["cross-modal", "paper"], ks, 0, 0)
    assert same["metrics"]["cross-modal"]["image_to_text/accuracy@1"] == 1.0
    assert same["metrics"]["cross-modal"]["text_to_image/accuracy@1"] == 1.0
    assert same["self_match"]["image_to_text"]["difference/accuracy@1"] == 0.0


def test_main_runs_on_a_saved_split(tmp_path, tiny_tokenizer_dir, capsys):
    DatasetDict({"train": synthetic_split(6, seed=1), "test": synthetic_split(14)}).save_to_disk(str(tmp_path / "data"))
    code = main(["--dataset", str(tmp_path / "data"), "--split", "test", "--model", "tiny=tiny",
                 "--tokenizer", str(tiny_tokenizer_dir), "--output-dir", str(tmp_path / "out"),
                 "--protocol", "paper", "--n-boot", "20", "--ks", "1", "5", "--quiet", "--device", "cpu"])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "SYNTHETIC" in results["data_note"] and results["counts"]["evaluated"] == 14
    assert set(results["models"]["tiny"]["metrics"]) == {"paper", PAPER_EXCLUDED}
    assert (tmp_path / "out" / "tsne_tiny.png").is_file()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--dataset", str(tmp_path / "data"), "--split", "nope", "--model", "tiny", "--output-dir", str(tmp_path)])


def test_examples_evaluate_delegates_to_main(tmp_path, tiny_tokenizer_dir):
    import importlib.util

    synthetic_split(12).save_to_disk(str(tmp_path / "data"))
    spec = importlib.util.spec_from_file_location("example_evaluate", REPO_ROOT / "examples" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--dataset", str(tmp_path / "data"), "--model", "tiny", "--output-dir", str(tmp_path / "o"),
                        "--n-boot", "0", "--ks", "1", "--no-tsne", "--quiet", "--data-note", "phantom rows"]) == 0
    assert "_Data: phantom rows_" in (tmp_path / "o" / "results.md").read_text()


@pytest.mark.openi
def test_real_openi_studies_end_to_end(openi_dir, tiny_model, tiny_processor, tmp_path):
    from datasets import concatenate_datasets

    from cxr_mtclip.data import load_openi

    splits = load_openi(openi_dir, show_progress=False, test_per_class=1)
    studies = concatenate_datasets([split for split in splits.values() if len(split)])
    results = evaluate_models({"tiny": (tiny_model, tiny_processor)}, studies, tmp_path, ks=(1, 3), n_boot=20,
                              data_note="real OpenI studies from ../shared/openi (CC BY-NC-ND 4.0)", show_progress=False)
    assert results["counts"]["evaluated"] == len(studies) >= 4
    assert "synthetic" not in results["counts"].get("sources", {})
    assert results["models"]["tiny"]["index_check"]["cross-modal/image_to_text"] == 1.0
    _assert_nontrivial_png(tmp_path / "tsne_tiny.png")


# -- plots ----------------------------------------------------------------------------------------


def test_plot_tsne_colours_both_labels(tmp_path):
    rng = np.random.default_rng(0)
    embeds = np.concatenate([rng.normal(0, 1, (10, 8)) + 4, rng.normal(0, 1, (10, 8)) - 4])
    path = plot_tsne(embeds, [0] * 10 + [1] * 10, tmp_path / "t.png", "two clusters", seed=1)
    _assert_nontrivial_png(path)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    blue = ((pixels[:, 2] > 150) & (pixels[:, 0] < 100)).sum()
    red = ((pixels[:, 0] > 180) & (pixels[:, 1] < 90) & (pixels[:, 2] < 90)).sum()
    assert blue > 50 and red > 50  # both label colours are drawn
    assert tsne_perplexity(4) == 1.0 and tsne_perplexity(1000) == 30.0
    with pytest.raises(ValueError, match="at least 4 points"):
        plot_tsne(embeds[:3], [0, 1, 0], tmp_path / "x.png", "too few")
    with pytest.raises(ValueError, match="one per embedding"):
        plot_tsne(embeds, [0, 1], tmp_path / "x.png", "bad labels")


def test_plot_loss_curves_from_trainer_history(tmp_path):
    history = []
    for step in range(10, 110, 10):
        history.append({"step": step, "loss": 3 / step ** 0.5, "bce_loss": 0.7 - step / 400,
                        "supcon_loss": 2 / step ** 0.3, "clip_loss": 1.5 - step / 200, "learning_rate": 1e-4})
        if step % 50 == 0:
            history.append({"step": step, "eval_loss": 2.5 / step ** 0.5, "eval_clip_loss": 1.4 - step / 200})
    history.append({"step": 100, "train_runtime": 12.0})
    path = plot_loss_curves(history, tmp_path / "loss.png")
    _assert_nontrivial_png(path, min_side=400)
    with pytest.raises(ValueError, match="none of"):
        plot_loss_curves([{"step": 1, "learning_rate": 0.1}], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_model_slug():
    assert model_slug("fine-tuned (seed 1)") == "fine-tuned_seed_1"
    assert model_slug("///") == "model"
