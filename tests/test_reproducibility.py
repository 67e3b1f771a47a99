"""The same `cxr-mtclip` commands twice give identical data, weights and metrics on CPU.

One `--seed` drives the phantoms and the splits (build-dataset), the initialisation and the dataloader
order (train) and the bootstrap (evaluate). The second run happens in a fresh interpreter with another
PYTHONHASHSEED, so nothing may depend on set/dict ordering of strings either. Resuming a killed run is
covered by tests/test_training.py::test_resume_from_checkpoint_continues_the_same_loss_curve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cxr_mtclip.cli import main

TIMING_KEYS = ("runtime", "per_second", "flos")


def pipeline(root: Path) -> list[list[str]]:
    data, run, evaluation = root / "data", root / "run", root / "eval"
    return [
        ["build-dataset", "--phantoms", "64", "--out", str(data), "--seed", "7"],
        ["train", "--backbone", "tiny", "--dataset", str(data), "--output_dir", str(run), "--seed", "7",
         "--max_steps", "6", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
         "--learning_rate", "1e-3", "--head_learning_rate", "1e-3", "--logging_steps", "1", "--eval_strategy", "no",
         "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true"],
        ["evaluate", "--dataset", str(data), "--split", "test", "--model", f"tuned={run}", "--output-dir",
         str(evaluation), "--seed", "7", "--n-boot", "50", "--ks", "1", "3", "--no-tsne", "--quiet",
         "--data-note", "synthetic phantoms"],
    ]


def outcome(root: Path) -> dict:
    from datasets import load_from_disk

    splits = load_from_disk(str(root / "data"))
    results = json.loads((root / "run" / "all_results.json").read_text())
    state = json.loads((root / "run" / "trainer_state.json").read_text())
    evaluation = json.loads((root / "eval" / "results.json").read_text())
    return {
        "splits": {name: split.data.table.to_pydict() for name, split in splits.items()},
        "weights": {k: v.tolist() for k, v in load_file(root / "run" / "model.safetensors").items()},
        "results": {k: v for k, v in results.items() if not any(t in k for t in TIMING_KEYS)},
        "losses": [(e["step"], e["loss"], e.get("bce_loss"), e.get("supcon_loss"), e.get("clip_loss"))
                   for e in state["log_history"] if "loss" in e],
        "metrics": evaluation["models"]["tuned"]["metrics"],
        "cis": evaluation["models"]["tuned"].get("cis"),
    }


def test_same_commands_twice_give_identical_results(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    with pytest.warns(UserWarning):
        for argv in pipeline(first):
            assert main(argv) == 0, argv
    script = "import json, sys\nfrom cxr_mtclip.cli import main\nfor argv in json.loads(sys.argv[1]):\n    assert main(argv) == 0, argv\n"
    env = dict(os.environ, PYTHONHASHSEED="12345", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(pipeline(second))], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = outcome(first), outcome(second)
    assert len(a["losses"]) == 6 and a["metrics"]
    for key in a:
        assert a[key] == b[key], f"{key} differs between two runs of the same commands"


def test_the_seed_changes_the_outcome(tmp_path, capsys):
    """The seed is really used: another seed gives other phantoms, splits and initial weights."""
    from datasets import load_from_disk

    with pytest.warns(UserWarning):
        assert main(["build-dataset", "--phantoms", "40", "--out", str(tmp_path / "s7"), "--seed", "7"]) == 0
        assert main(["build-dataset", "--phantoms", "40", "--out", str(tmp_path / "s8"), "--seed", "8"]) == 0
    a, b = load_from_disk(str(tmp_path / "s7")), load_from_disk(str(tmp_path / "s8"))
    assert a["test"]["report"] != b["test"]["report"]
    from cxr_mtclip.training import build_model

    first = build_model(backbone="tiny", seed=7).state_dict()
    again = build_model(backbone="tiny", seed=7).state_dict()
    other = build_model(backbone="tiny", seed=8).state_dict()
    assert all((first[k] == again[k]).all() for k in first)
    assert any((first[k] != other[k]).any() for k in first)
