"""The embedded default: `cxr-mtclip demo` at its default sizes must beat the untrained model on Accuracy@5."""

import json

import numpy as np
import pytest
from PIL import Image

from cxr_mtclip.cli import main


@pytest.mark.slow
def test_demo_default_run_beats_untrained_and_labels_everything_synthetic(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["improved"] == {"image_to_text/accuracy@5": True, "text_to_image/accuracy@5": True}
    assert "demo PASS" in printed
    # every table says what produced it
    tables = (out / "eval" / "results.md").read_text()
    headers = [line for line in tables.splitlines() if line.startswith("### ")]
    assert headers and tables.count("SYNTHETIC") >= len(headers)
    results = json.loads((out / "eval" / "results.json").read_text())
    assert "SYNTHETIC" in results["data_note"]
    # top-3 of one image and one text query are printed
    assert printed.count("image query:") == 1 and printed.count("text query:") == 1
    assert "    3. study" in printed
    for name in ("untrained", "fine-tuned"):
        png = np.asarray(Image.open(out / "eval" / f"tsne_{name}.png").convert("L"))
        assert png.shape[0] > 200 and png.std() > 10
    assert (out / "fine-tuned" / "model.safetensors").is_file() and (out / "loss_curves.png").is_file()
    # the fine-tuned folder carries its model card: metadata with the test numbers, synthetic data stated
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "fine-tuned" / "README.md")
    fine_tuned = results["models"]["fine-tuned"]["metrics"]["cross-modal"]
    indexed = {entry.metric_name: entry.metric_value for entry in card.data.eval_results}
    assert indexed["image_to_text/accuracy@5"] == pytest.approx(fine_tuned["image_to_text/accuracy@5"])
    assert card.data.license == "mit" and "synthetic-data" in card.data.tags
    assert "synthetic phantom images only" in card.text and "Not a medical device" in card.text
