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
    captured = capsys.readouterr()
    printed, errors = captured.out, captured.err
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["improved"] == {"image_to_text/accuracy@5": True, "text_to_image/accuracy@5": True}
    assert "demo PASS" in printed
    # the terminal gets the headline; every table goes to results.md (with the check and the example queries)
    assert "### " not in printed and "[6/6] results" in printed
    report = (out / "results.md").read_text()
    assert "## The demo's check" in report and "## Every metric" in report and "### " in report
    assert "UserWarning" not in printed + errors and "warnings.warn(" not in printed + errors
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
    assert indexed["cross-modal/image_to_text/accuracy@5"] == pytest.approx(fine_tuned["image_to_text/accuracy@5"])
    assert card.data.license == "mit" and "synthetic-data" in card.data.tags
    assert "synthetic phantom images only" in card.text and "Not a medical device" in card.text


@pytest.mark.parametrize(("argv", "message"), [
    (["--n-studies", "300", "--epochs", "10"], r"gives 30 optimiser steps .*needs at least \d+: pass --epochs \d+ or more"),
    (["--n-studies", "100"], r"--n-studies 100: too few for the demo .*pass --n-studies \d+ or more"),
])
def test_sizes_too_small_are_refused_before_any_work(tmp_path, capsys, argv, message):
    import re
    import time

    start = time.perf_counter()
    assert main(["demo", "--output-dir", str(tmp_path / "demo"), *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "demo").exists() and time.perf_counter() - start < 10  # no data built, nothing trained


def test_the_openi_demo_needs_more_studies():
    """With --openi at 200 studies the check failed for one seed of three (newcomer report 2); 300 passed for all."""
    from cxr_mtclip.recipes.demo import MIN_DEMO_STUDIES_OPENI, check_demo_size

    check_demo_size(200, None)
    with pytest.raises(ValueError, match=r"--n-studies 200: too few for the demo with --openi .* pass --n-studies 300"):
        check_demo_size(200, None, openi=True)
    check_demo_size(MIN_DEMO_STUDIES_OPENI, None, openi=True)


def test_automatic_epochs_reach_the_minimum_steps():
    from cxr_mtclip.recipes.demo import (
        DEMO_STUDIES,
        MIN_DEMO_STEPS,
        MIN_DEMO_STUDIES,
        check_demo_size,
        default_demo_epochs,
        demo_steps,
        expected_train_size,
    )

    for n in (MIN_DEMO_STUDIES, 200, 300, 600, DEMO_STUDIES, 3000):
        epochs = default_demo_epochs(n)
        assert demo_steps(expected_train_size(n), epochs) >= MIN_DEMO_STEPS
        check_demo_size(n, epochs)  # accepted
        check_demo_size(n, None)
