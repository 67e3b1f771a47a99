"""A newcomer cannot break it (issue 16): each entry point fails early, clearly and cheaply, and says what it did.

One section per finding of the issue; the image-opening finding (12) is tests/test_images.py.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cxr_mtclip.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["build-dataset", "train", "embed", "index", "search", "evaluate", "demo", "serve"]


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def write_shared_source(root: Path, n_with_images: int = 12, n_missing: int = 3, header_only: bool = False) -> Path:
    """A ../shared/openi-style folder: reports.csv + images/ (invented rows, noise PNGs)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(0 if header_only else n_with_images + n_missing):
        normal = i % 2 == 0
        name = f"{i}.png"
        if i < n_with_images:
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 255, (72, 64), dtype=np.uint8)).save(root / "images" / name)
        rows.append({"uid": str(i), "image_file": name, "findings": "Heart size normal." if normal else "Effusion.",
                     "impression": "No acute disease." if normal else "Right effusion.",
                     "mesh": "normal" if normal else "Pleural Effusion/right", "label": int(not normal)})
    with open(root / "reports.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["uid", "image_file", "findings", "impression", "mesh", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root


# ------------------------------------------------------------------------------------------------
# Finding 4: --help of every subcommand at once, usage naming it, flags with help and one default,
# --version, suggestions for misspelt flags
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_loads_neither_torch_nor_transformers(command):
    probe = ("import sys, runpy\n"
             f"sys.argv = ['cxr-mtclip', {command!r}, '--help']\n"
             "try:\n    runpy.run_module('cxr_mtclip.cli', run_name='__main__')\n"
             "except SystemExit as exit_:\n    code = exit_.code\n"
             "heavy = sorted(m for m in ('torch', 'transformers', 'open_clip', 'timm', 'datasets') if m in sys.modules)\n"
             "print('HEAVY', heavy, 'CODE', code)\n")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"usage: cxr-mtclip {command}" in result.stdout
    assert "HEAVY [] CODE 0" in result.stdout, result.stdout[-500:]
    assert seconds < 20  # generous: the measured figure (well under 1 s) is benchmarks/bench_cli_help.py's


def test_the_console_script_entry_defers_the_heavy_imports():
    """`python -m cxr_mtclip.cli --version` is the console script's path: the package init stays light there."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "cxr_mtclip.cli", "--version"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0 and result.stdout.strip() == "cxr-mtclip 0.1.0"
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "torch" not in imported and "transformers" not in imported


@pytest.mark.parametrize("script", ["dataset_scripts/build_openi.py", "examples/train.py"])
def test_the_scripts_help_defers_the_heavy_imports(script):
    """The scripts that run through the command's runner answer --help without torch or transformers."""
    result = subprocess.run([sys.executable, "-X", "importtime", script, "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {script}") or result.stdout.startswith("usage: "), result.stdout[:200]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "torch" not in imported and "transformers" not in imported


def _all_actions():
    import argparse

    from cxr_mtclip.evaluation.evaluate_args import build_parser as evaluate_parser
    from cxr_mtclip.recipes.train_args import short_help_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {name: p for name, p in sub.choices.items() if name not in ("train", "evaluate")}
    parsers.update(train=short_help_parser(), evaluate=evaluate_parser(), top=parser)
    for name, p in parsers.items():
        for action in p._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            yield name, p, action


def test_every_flag_has_help_text_and_its_default_at_most_once(capsys):
    for name, parser, action in _all_actions():
        flag = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{name} {flag}: no help text"
    for command in SUBCOMMANDS:
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and out.startswith(f"usage: cxr-mtclip {command}"), out[:200]
        entries = re.split(r"\n  (?=-)", out)
        doubled = [entry.split()[0] for entry in entries if len(re.findall(r"\(default", entry)) > 1]
        assert doubled == [], f"{command}: default shown twice for {doubled}"
    code, out, _ = run(["search", "--help"], capsys)
    assert "number of results (default: 5)" in " ".join(out.split())


def test_train_help_all_states_each_default_once(capsys):
    code, out, _ = run(["train", "--help-all"], capsys)
    assert code == 0 and out.startswith("usage: cxr-mtclip train")
    entries = re.split(r"\n  (?=--)", out)
    assert len(entries) > 100  # every TrainingArguments flag is there
    doubled = [entry.split()[0] for entry in entries if len(re.findall(r"\(default", " ".join(entry.split()))) > 1]
    assert doubled == []
    bce = next(entry for entry in entries if entry.startswith("--bce_weight"))
    assert "(default: None)" not in bce and "paper 0.69" in " ".join(bce.split())


def test_version(capsys):
    from cxr_mtclip import __version__

    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"cxr-mtclip {__version__}"


@pytest.mark.parametrize(("argv", "expected"), [
    (["search", "--model", ".", "--index", ".", "--text", "x", "--k", "3"], "unrecognized argument --k: did you mean -k?"),
    (["search", "--modle", ".", "--index", ".", "--text", "x"], "unrecognized argument --modle: did you mean --model?"),
    (["embed", "--model", ".", "--dataset", ".", "--out", "x", "--batch_size", "4"],
     "unrecognized argument --batch_size: did you mean --batch-size?"),
    (["evaluate", "--dataset", ".", "--model", "a=b", "--output_dir", "x"],
     "unrecognized argument --output_dir: did you mean --output-dir?"),
    (["train", "--backbone", "tiny", "--phantoms", "8", "--output_dir", "x", "--lerning_rate", "1"],
     "unrecognized argument --lerning_rate: did you mean --learning_rate?"),
    (["train", "--backbone", "tiny", "--phantoms", "8", "--output_dir", "x", "--num_train_epochs", "1", "--bf17"],
     "unrecognized argument --bf17: did you mean --bf16?"),
    # a prefix of a real flag is a misspelling too, not a silent abbreviation (newcomer report, session 3)
    (["train", "--backbone", "tiny", "--phantom", "8", "--output_dir", "x"],
     "unrecognized argument --phantom: did you mean --phantoms?"),
    (["build-dataset", "--phantom", "8", "--out", "x"], "unrecognized argument --phantom: did you mean --phantoms?"),
    (["search", "--index", ".", "--imag", "q.png"], "unrecognized argument --imag: did you mean --image?"),
])
def test_misspelt_flags_are_named_with_their_closest_match(capsys, tmp_path, argv, expected):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err, err


# ------------------------------------------------------------------------------------------------
# Findings 1, 3, 5: checks before any model loads or work starts
# ------------------------------------------------------------------------------------------------


def test_a_missing_local_dataset_is_named_as_one(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for offline in ("1", "0"):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        monkeypatch.setenv("HF_DATASETS_OFFLINE", offline)
        start = time.perf_counter()
        code, _, err = run(["train", "--dataset", "data/nope", "--output_dir", "runs/x"], capsys)
        assert code == 2 and "--dataset data/nope: no such local folder" in err, err
        assert "build-dataset" in err and "Hub could not be reached" not in err
        assert time.perf_counter() - start < 30
    assert not (tmp_path / "runs").exists()  # nothing written


def test_training_into_an_earlier_run_is_refused_unless_resumed_or_replaced(capsys, tmp_path):
    """Two runs in one --output_dir mixed their checkpoints and `--resume_from_checkpoint last` continued the other
    run (newcomer report, session 3). Now: refused before anything loads; --overwrite_output_dir replaces it."""
    out = tmp_path / "runs" / "t"
    flags = ["train", "--backbone", "tiny", "--phantoms", "40", "--output_dir", str(out), "--max_steps", "2",
             "--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "2",
             "--eval_strategy", "no"]
    code, _, err = run(flags, capsys)
    assert code == 0, err
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    (out / "notes.txt").write_text("mine")  # a user's own file in the folder
    before = (out / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    code, _, err = run(flags, capsys)
    assert code == 2 and f"--output_dir {out}: holds an earlier run (" in err and "checkpoint-2" in err, err
    assert "--resume_from_checkpoint last" in err and "--overwrite_output_dir true" in err
    assert len(err.strip().splitlines()) == 1 and time.perf_counter() - start < 30
    assert (out / "model.safetensors").stat().st_mtime_ns == before  # untouched
    code, _, err = run([*flags, "--max_steps", "1", "--save_steps", "1", "--overwrite_output_dir"], capsys)
    assert code == 0, err
    assert not (out / "checkpoint-2").exists() and (out / "checkpoint-1").is_dir()  # only the new run's checkpoint
    assert (out / "notes.txt").read_text() == "mine"  # nothing but the run's own outputs is removed


def test_resuming_is_checked_before_it_goes_wrong(capsys, tmp_path):
    """Newcomer report 3: resume into a folder without a checkpoint failed late; resume + overwrite were both
    accepted; a misspelt flag was hidden behind the earlier-run refusal; a resume with another batch silently
    retrained most of the run (transformers resumes at the checkpoint's step)."""
    out = tmp_path / "runs" / "t"
    flags = ["train", "--backbone", "tiny", "--phantoms", "40", "--output_dir", str(out), "--max_steps", "2",
             "--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "2",
             "--eval_strategy", "no"]
    code, _, err = run([*flags[:6], str(tmp_path / "fresh"), *flags[7:], "--resume_from_checkpoint", "last"], capsys)
    assert code == 2 and "holds no checkpoint-N folder to resume" in err, err
    assert not (tmp_path / "fresh").exists()
    assert run(flags, capsys)[0] == 0
    code, _, err = run([*flags, "--resume_from_checkpoint", "last", "--overwrite_output_dir", "true"], capsys)
    assert code == 2 and "contradict each other" in err, err
    code, _, err = run([*flags, "--resume", "last"], capsys)
    assert code == 2 and "unrecognized argument --resume: did you mean --resume_from_checkpoint?" in err, err
    bigger = [*flags[:-6], "--max_steps", "4", "--per_device_train_batch_size", "4", "--save_strategy", "steps",
              "--save_steps", "2", "--eval_strategy", "no", "--resume_from_checkpoint", "last"]
    code, _, err = run(bigger, capsys)
    assert code == 2 and "trained with a batch of 8 per device, this run asks for 4" in err, err
    assert "--per_device_train_batch_size 8" in err
    code, _, err = run([*flags[:-6], "--max_steps", "4", "--per_device_train_batch_size", "8", "--save_strategy",
                        "steps", "--save_steps", "2", "--eval_strategy", "no", "--resume_from_checkpoint", "last"], capsys)
    assert code == 0, err  # the same batch resumes
    assert (out / "checkpoint-4").is_dir()


def test_a_misspelt_backbone_is_named_before_any_work(capsys, tmp_path):
    out = tmp_path / "runs" / "t"
    code, _, err = run(["train", "--backbone", "tinyy", "--phantoms", "400", "--output_dir", str(out)], capsys)
    assert code == 2 and "--backbone tinyy: not a registered architecture (biomedclip, demo, tiny" in err, err
    assert "rendering phantoms" not in err and not out.exists()


def test_a_reports_only_build_is_refused_before_the_model_is_built(capsys, tmp_path, monkeypatch):
    from cxr_mtclip.training import trainer as trainer_module

    source = write_shared_source(tmp_path / "src", n_with_images=6, n_missing=0)
    data = tmp_path / "data"
    assert run(["build-dataset", str(source), "--out", str(data), "--quiet", "--test-per-class", "1",
                "--cache-dir", str(tmp_path / "hf")], capsys)[0] == 0
    # drop the images of two training studies, as a --reports-only build holds studies without one
    from datasets import load_from_disk

    splits = load_from_disk(str(data))
    train = splits["train"]
    uids = train["uid"]
    splits["train"] = train.map(lambda row, i: {"image": None if i < 2 else row["image"]}, with_indices=True,
                                features=train.features)
    type(splits)({name: split for name, split in splits.items() if len(split)}).save_to_disk(str(tmp_path / "holes"))
    monkeypatch.setattr(trainer_module, "build_model", lambda **_: pytest.fail("the model was built"))
    out = tmp_path / "runs" / "r"
    code, _, err = run(["train", "--backbone", "tiny", "--dataset", str(tmp_path / "holes"), "--output_dir", str(out),
                        "--max_steps", "1", "--per_device_train_batch_size", "2"], capsys)
    assert code == 2, err
    assert f"2 of {len(uids)} studies in the 'train' split have no image (first: uid {uids[0]})" in err, err
    assert "--reports-only" in err and not out.exists()


def test_a_misspelt_metric_for_best_model_is_named_before_training(capsys, tmp_path, monkeypatch):
    """transformers noticed only after the first epoch, with a KeyError listing ~100 names (newcomer report 2)."""
    from cxr_mtclip.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "build_model", lambda **_: pytest.fail("the model was built"))
    for wrong, suggestion in (("cross-modal/mean_acuracy@1", "cross-modal/mean_accuracy@1"),
                              ("image_to_text/accuracy@1", "cross-modal/image_to_text/accuracy@1")):
        code, _, err = run(["train", "--backbone", "tiny", "--phantoms", "40", "--output_dir", str(tmp_path / "r"),
                            "--metric_for_best_model", wrong, "--load_best_model_at_end", "true"], capsys)
        assert code == 2, err
        assert f"--metric_for_best_model {wrong}: not a metric the evaluation reports; did you mean {suggestion}?" in err
        assert "rendering phantoms" not in err and not (tmp_path / "r").exists()
    from types import SimpleNamespace

    from cxr_mtclip.recipes.train_checks import check_metric_for_best_model, evaluation_metric_names

    assert "cross-modal/mean_accuracy@1" in evaluation_metric_names() and "clip_loss" in evaluation_metric_names()
    for fine in ("eval_cross-modal/text_to_image/precision@5", "loss", "classification/roc_auc"):
        check_metric_for_best_model(SimpleNamespace(metric_for_best_model=fine, eval_strategy="epoch"))


def test_a_misspelt_model_folder_is_named_as_a_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "imgs").mkdir()
    code, _, err = run(["index", "--images", "imgs", "--model", "runs/tyni", "--out", "idx"], capsys)
    assert code == 2 and "--model runs/tyni: no such folder" in err and "backbone" not in err, err


def test_a_dataset_id_that_is_no_folder_is_looked_up_on_the_hub_only_when_online(monkeypatch, tmp_path):
    from cxr_mtclip.preflight import check_dataset_source

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert check_dataset_source("someone/openi") == "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"no such local folder, and the Hub is offline"):
        check_dataset_source("someone/openi")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="a file, not a dataset folder"):
        check_dataset_source("file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no dataset_dict.json"):
        check_dataset_source("empty")


class _FakeHub(BaseHTTPRequestHandler):
    """The Hub's /api/whoami-v2 answering by token: ok-write, ok-read, anything else 401."""

    def do_GET(self):  # noqa: N802
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        if self.path != "/api/whoami-v2" or token not in ("ok-write", "ok-read"):
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "Invalid credentials"}')
            return
        body = {"name": "me", "orgs": [{"name": "my-lab"}],
                "auth": {"accessToken": {"role": "write" if token == "ok-write" else "read"}}}
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved token
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    yield server
    server.shutdown()


def test_hub_push_access_is_checked_first(fake_hub, monkeypatch):
    from huggingface_hub import constants

    from cxr_mtclip.preflight import PreflightError, check_hub_push

    assert check_hub_push("me/cxr", token="ok-write")["name"] == "me"
    assert check_hub_push("my-lab/cxr", token="ok-write")["name"] == "me"
    cases = [
        (dict(repo_id="me/bad name!", token="ok-write"), r"'me/bad name!' is not a valid Hub repository name"),
        (dict(repo_id="a/b/c", token="ok-write"), r"not a valid Hub repository name"),
        (dict(repo_id="me/cxr", token=None), r"no Hugging Face token; log in with `hf auth login`"),
        (dict(repo_id="me/cxr", token="expired"), r"the Hub refused the token .*hf auth login --force"),
        (dict(repo_id="me/cxr", token="ok-read"), r"the token of 'me' is read-only"),
        (dict(repo_id="someone-else/cxr", token="ok-write"), r"'me' cannot write to 'someone-else/cxr'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PreflightError, match=message):
            check_hub_push(**kwargs)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(PreflightError, match=r"could not be reached to check the token .*drop --push_to_hub"):
        check_hub_push("me/cxr", token="ok-write")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PreflightError, match=r"cannot push to me/cxr: the Hub is offline"):
        check_hub_push("me/cxr", token="ok-write")


def test_train_with_push_to_hub_offline_fails_before_any_work(capsys, tmp_path):
    start = time.perf_counter()
    code, _, err = run(["train", "--backbone", "tiny", "--phantoms", "40", "--output_dir", str(tmp_path / "run"),
                        "--push_to_hub", "--hub_model_id", "me/x"], capsys)
    assert code == 2 and "--push_to_hub: cannot push to me/x: the Hub is offline" in err, err
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - start < 30


def test_batch_larger_than_the_train_split_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import cxr_mtclip.recipes.train as recipe

    monkeypatch.setattr(recipe, "build_model", lambda **kw: pytest.fail("the model was built"))
    args = recipe.parse_training_args(["--backbone", "tiny", "--phantoms", "40", "--output_dir", str(tmp_path / "r"),
                                       "--per_device_train_batch_size", "64", "--dataloader_drop_last", "true"])
    with pytest.warns(UserWarning, match="scaled down"):
        with pytest.raises(ValueError, match=r"the 'train' split has \d+ studies, fewer than one batch of 64 .*"
                                             r"use a batch of at most \d+"):
            recipe.run_training(*args)


@dataclasses.dataclass
class _TrainingArgs:
    """The TrainingArguments fields `check_splits` reads (a dataclass, as the real one)."""

    per_device_train_batch_size: int = 4
    world_size: int = 1
    dataloader_drop_last: bool = False
    hpo_trials: int = 0
    eval_strategy: str = "epoch"
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "cross-modal/mean_accuracy@1"


def test_splits_too_small_turn_evaluation_off_or_are_refused():
    from cxr_mtclip.recipes.train_checks import check_splits

    data = SimpleNamespace(dataset="d", train_split="train", eval_split="validation", test_split="test")
    with pytest.warns(UserWarning, match=r"'validation' split has 0 studies .*evaluation during training is turned off"):
        _, eval_, _, args = check_splits([1] * 8, [], [1] * 4, _TrainingArgs(), data)
    assert eval_ is None and args.eval_strategy == "no" and args.load_best_model_at_end is False
    assert args.metric_for_best_model is None
    with pytest.warns(UserWarning, match="no validation split 'validation'"):
        assert check_splits([1] * 8, None, [1] * 4, _TrainingArgs(), data)[3].eval_strategy == "no"
    with pytest.warns(UserWarning, match="'test' split is empty"):
        assert check_splits([1] * 8, [1] * 3, [], _TrainingArgs(), data)[2] is None
    with pytest.raises(ValueError, match="'train' split is empty"):
        check_splits([], [1] * 3, [1], _TrainingArgs(), data)
    with pytest.raises(ValueError, match=r"fewer than one batch of 8 \(4 per process x 2\)"):
        check_splits([1] * 7, [1] * 3, [1], _TrainingArgs(world_size=2, dataloader_drop_last=True), data)
    with pytest.raises(ValueError, match="--hpo_trials needs a validation split of at least 2"):
        check_splits([1] * 8, [1], [1], _TrainingArgs(hpo_trials=3), data)
    kept = check_splits([1] * 8, [1] * 3, [1] * 3, _TrainingArgs(), data)
    assert kept[1] == [1] * 3 and kept[3].eval_strategy == "epoch"


def test_an_empty_validation_split_trains_with_a_warning_and_a_summary(tmp_path, capsys):
    """The issue's first run: a build whose validation split is empty, then `train --max_steps 2`."""
    source = write_shared_source(tmp_path / "src", n_with_images=6, n_missing=0)
    data = tmp_path / "data"
    with pytest.warns(UserWarning, match="scaled down"):
        code, out, err = run(["build-dataset", str(source), "--out", str(data), "--quiet",
                              "--cache-dir", str(tmp_path / "hf")], capsys)
    assert code == 0, err
    assert "warning: the validation split is empty" in out
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="evaluation during training is turned off"):
        code, out, err = run(["train", "--backbone", "tiny", "--dataset", str(data), "--max_steps", "2",
                              "--per_device_train_batch_size", "2", "--save_strategy", "steps", "--save_steps", "2",
                              "--logging_steps", "1", "--output_dir", str(run_dir)], capsys)
    assert code == 0, err
    assert "Training finished" in out and f"Saved in {run_dir}" in out and "metric" in out and "test" in out
    assert re.search(r"image->text Accuracy@1 \(cross-modal\)\s+\d", out)
    assert "{'loss'" not in out + err  # one line per log, not transformers' dicts
    checkpoint = run_dir / "checkpoint-2"
    saved = json.loads((checkpoint / "trainable_parameters.json").read_text())["trainable_parameters"]
    assert saved and all(isinstance(name, str) for name in saved)

    # Finding 6: resuming with another freeze policy names the difference (not torch's optimizer message)
    code, out, err = run(["train", "--backbone", "tiny", "--dataset", str(data), "--max_steps", "4",
                          "--per_device_train_batch_size", "2", "--output_dir", str(run_dir),
                          "--trainable_image_blocks", "2", "--resume_from_checkpoint", str(checkpoint)], capsys)
    assert code == 2
    assert "the trained parameters differ" not in err  # the names are known: they are listed
    assert re.search(r"this run trains \d+ tensor\(s\) the checkpoint froze \(.*blocks", err), err
    assert "--trainable_image_blocks" in err or "trainable_image_blocks" in err


def test_resume_from_an_older_checkpoint_compares_the_freeze_fields(tmp_path, tiny_config):
    from cxr_mtclip import CxrMtClipModel
    from cxr_mtclip.recipes.train_checks import check_resume

    model = CxrMtClipModel(tiny_config)
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"trainable_image_blocks": 2, "trainable_text_blocks":
                                                    tiny_config.trainable_text_blocks}))
    with pytest.raises(ValueError, match=r"trainable_image_blocks 2 in the checkpoint, 1 in this run"):
        check_resume(folder, model)
    (folder / "trainable_parameters.json").write_text(json.dumps({"trainable_parameters": sorted(
        n for n, p in model.named_parameters() if p.requires_grad)}))
    check_resume(folder, model)  # the same set: fine


# ------------------------------------------------------------------------------------------------
# Finding 7: launches that silently differ from what was asked
# ------------------------------------------------------------------------------------------------


def test_launch_warnings():
    from cxr_mtclip.recipes.train_checks import requested_processes, warn_about_launch

    cmd = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--num_processes", "2", "examples/train.py"]
    assert requested_processes(cmd) == 2
    assert requested_processes(["python", "-m", "accelerate.commands.launch", "--num-processes=3", "x.py"]) == 3
    assert requested_processes(["python", "examples/train.py", "--num_processes", "2"]) is None
    one = SimpleNamespace(world_size=1, gradient_accumulation_steps=1, per_device_train_batch_size=16)
    with pytest.warns(UserWarning, match=r"asked for 2 processes but started 1: .*--multi_gpu"):
        warn_about_launch(one, cmdline=cmd)
    accumulating = SimpleNamespace(world_size=2, gradient_accumulation_steps=4, per_device_train_batch_size=16)
    with pytest.warns(UserWarning, match=r"gradient_accumulation_steps=4: the optimiser sees 128 studies per step, "
                                         r"but the contrastive terms .* only the 32 of one micro-batch"):
        warn_about_launch(accumulating, cmdline=["python", "train.py"])


def test_accelerate_launch_of_two_processes_that_starts_one_is_detected(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        "import warnings, sys\nfrom types import SimpleNamespace\n"
        "from cxr_mtclip.recipes.train_checks import warn_about_launch\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    warn_about_launch(SimpleNamespace(world_size=1, gradient_accumulation_steps=1, per_device_train_batch_size=8))\n"
        "print('WARNED' if any('started 1' in str(w.message) for w in caught) else 'SILENT')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    accelerate = Path(sys.executable).with_name("accelerate")
    result = subprocess.run([str(accelerate), "launch", "--cpu", "--num_processes", "2", str(script)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("WARNED") == 1 and "SILENT" not in result.stdout  # one process, and it says so


# ------------------------------------------------------------------------------------------------
# Finding 2: build-dataset prints what it did, has the script's options, fails on 0 studies kept
# ------------------------------------------------------------------------------------------------


def test_build_dataset_prints_a_summary_and_has_the_scripts_options(tmp_path, capsys):
    source = write_shared_source(tmp_path / "src", n_with_images=24, n_missing=3)
    out = tmp_path / "built"
    code, printed, err = run(["build-dataset", str(source), "--out", str(out), "--test-per-class", "3",
                              "--val-fraction", "0.2", "--seed", "1", "--quiet", "--cache-dir", str(tmp_path / "hf")],
                             capsys)
    assert code == 0, err
    assert "studies seen: 27; kept: 24 (24 with image, 0 without)" in printed
    assert "dropped: missing_image=3" in printed and "labels: normal=12, abnormal=12" in printed
    assert re.search(r"\n\s+test\s+6\s+normal=3\s+abnormal=3\n", printed)
    assert re.search(r"\n\s+validation\s+4\s+", printed)
    assert f"saved to {out}" in printed
    # the script is the same implementation, with the same output
    script = REPO / "dataset_scripts" / "build_openi.py"
    result = subprocess.run([sys.executable, str(script), str(source), "--out", str(tmp_path / "b2"), "--test-per-class",
                             "3", "--val-fraction", "0.2", "--seed", "1", "--quiet", "--cache-dir", str(tmp_path / "hf")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.replace(str(tmp_path / "b2"), "OUT") == printed.replace(str(out), "OUT")


def test_build_dataset_prints_each_warning_once(tmp_path):
    """A small build warns that its test split is scaled down: once, not again in the summary (a real process,
    where the command prints warnings itself)."""
    source = write_shared_source(tmp_path / "src", n_with_images=8, n_missing=0)
    result = subprocess.run([sys.executable, "-m", "cxr_mtclip.cli", "build-dataset", str(source), "--out",
                             str(tmp_path / "built"), "--quiet", "--cache-dir", str(tmp_path / "hf")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout + result.stderr).count("the test split is scaled down") == 1, result.stdout + result.stderr
    assert "UserWarning" not in result.stderr


def test_build_that_keeps_no_study_fails_and_saves_nothing(tmp_path, capsys):
    empty = write_shared_source(tmp_path / "empty", header_only=True)
    code, _, err = run(["build-dataset", str(empty), "--out", str(tmp_path / "o1"), "--quiet",
                        "--cache-dir", str(tmp_path / "hf")], capsys)
    assert code == 2 and "the build kept 0 of 0 studies" in err and "holds no study" in err, err
    no_images = write_shared_source(tmp_path / "noimg", n_with_images=0, n_missing=4)
    code, _, err = run(["build-dataset", str(no_images), "--out", str(tmp_path / "o2"), "--quiet",
                        "--cache-dir", str(tmp_path / "hf")], capsys)
    assert code == 2 and "kept 0 of 4 studies (missing_image 4)" in err and "--reports-only" in err, err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_build_summary_prints_the_summarys_counts_and_warns_about_empty_splits():
    from cxr_mtclip.cli import format_build_summary
    from cxr_mtclip.data import OpenISummary

    summary = OpenISummary(layout="nlm", source="src", reports_only=False, strict=False, seed=1, studies_seen=9, kept=7,
                           kept_with_image=7, dropped={"no_report_text": 2}, label_counts={"normal": 3, "abnormal": 4},
                           splits={"train": {"normal": 2, "abnormal": 3}, "validation": {"normal": 0, "abnormal": 0},
                                   "test": {"normal": 1, "abnormal": 1}})
    text = "\n".join(format_build_summary(summary))
    assert text.startswith(summary.format())  # the summary's own format: its owner adds its fields there
    assert "kept: 7" in text and "dropped: no_report_text=2" in text
    assert text.count("warning: the validation split is empty") == 1 and "train split is empty" not in text


# ------------------------------------------------------------------------------------------------
# Finding 8: plots legible with one point or many; titles say what they show and the data note
# ------------------------------------------------------------------------------------------------


def test_loss_curves_with_one_point_are_visible_and_titled():
    from cxr_mtclip.evaluation.plots import loss_curves_figure

    figure = loss_curves_figure([{"step": 1, "loss": 2.0, "bce_loss": 0.7}, {"step": 1, "eval_loss": 1.9}],
                                data_note="data: 4 SYNTHETIC phantom studies")
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert set(lines) == {"loss (training)", "bce_loss (training)", "loss (validation)"}
    assert all(line.get_marker() not in (None, "None", "") for line in lines.values())  # one point is a marker
    legend = axes.get_legend()
    anchor = legend.get_bbox_to_anchor().transformed(axes.transAxes.inverted())
    assert anchor.x0 >= 1.0  # outside the axes: it covers no curve
    title = axes.get_title()
    assert "Training (solid) and validation (dashed)" in title and "SYNTHETIC" in title
    assert all(float(tick).is_integer() for tick in axes.get_xticks())  # steps: no 0.25-step ticks around one point
    many = loss_curves_figure([{"step": s, "loss": 1.0 / s} for s in range(1, 200)])
    assert many.axes[0].get_lines()[0].get_marker() in (None, "None", "")
    assert many.axes[0].get_title() == "Training loss per term"


def test_tsne_titles_carry_the_data_note(monkeypatch, tmp_path, tiny_config, tiny_processor):
    from cxr_mtclip import CxrMtClipModel
    from cxr_mtclip.data import make_phantom_openi
    from cxr_mtclip.evaluation import evaluate as evaluate_module
    from cxr_mtclip.evaluation.plots import tsne_figure

    figure = tsne_figure(np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 1] * 3), "fine-tuned",
                         data_note="data: 6 SYNTHETIC phantom studies (procedural images, not real X-rays)")
    assert "SYNTHETIC" in figure.axes[0].get_title()
    seen = []
    monkeypatch.setattr(evaluate_module, "plot_tsne", lambda *a, **kw: seen.append(kw) or Path(a[2]))
    studies = make_phantom_openi(12, seed=0, image_size=64)
    evaluate_module.evaluate_models({"tiny": (CxrMtClipModel(tiny_config).eval(), tiny_processor)}, studies,
                                    tmp_path / "eval", data_note="12 SYNTHETIC phantoms", ks=(1, 3), n_boot=0,
                                    show_progress=False)
    assert [kw.get("data_note") for kw in seen] == ["12 SYNTHETIC phantoms"]


# ------------------------------------------------------------------------------------------------
# Finding 11: stale temp folders of killed runs
# ------------------------------------------------------------------------------------------------


def test_stale_temporaries_of_dead_processes_are_removed_at_the_next_write(tmp_path):
    import socket

    from cxr_mtclip.atomic import atomic_directory, stale_temporaries

    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f".openi.{dead_pid}@{host}.k2j3x.tmp"
    (left / "train").mkdir(parents=True)
    (left / "train" / "data-00000.arrow").write_bytes(b"x" * 100)
    live = tmp_path / f".openi.{os.getpid()}@{host}.abcd.tmp"
    live.mkdir()
    legacy = tmp_path / ".openi.q8w7e6.tmp"
    legacy.mkdir()
    other = tmp_path / ".openi_v2.123@x.abc.tmp"
    other.mkdir()
    assert stale_temporaries(tmp_path / "openi") == ([left], [legacy])
    with pytest.warns(UserWarning) as caught:
        with atomic_directory(tmp_path / "openi") as tmp:
            (tmp / "x").write_text("new")
    messages = " ".join(str(w.message) for w in caught)
    assert "removed 1 temporary" in messages and "interrupted run" in messages
    assert "q8w7e6.tmp: left beside" in messages
    assert not left.exists() and live.exists() and legacy.exists() and other.exists()
    assert (tmp_path / "openi" / "x").read_text() == "new"


# ------------------------------------------------------------------------------------------------
# Finding 10: the README's bash blocks say what they need, name valid flags, and never write one --out twice
# ------------------------------------------------------------------------------------------------

LABELS = ("offline", "needs the hub", "needs the nlm download")


def _bash_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    blocks = []
    for match in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
        paragraph = text[: match.start()].rstrip().rsplit("\n\n", 1)[-1]  # the text just above the block
        blocks.append((" ".join(paragraph.split()), match.group(1)))
    return blocks


def _commands(block: str) -> list[list[str]]:
    import shlex

    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_bash_blocks_say_what_they_need_and_use_real_flags():
    from cxr_mtclip.argparsing import misspelt_flags
    from cxr_mtclip.evaluation.evaluate_args import build_parser as evaluate_parser
    from cxr_mtclip.recipes.train import _TrainingFlagParser  # noqa: F401  (the full training flag set)
    from cxr_mtclip.recipes.train_args import DataArguments, ModelArguments
    from cxr_mtclip.training import CxrMtClipTrainingArguments
    from transformers import HfArgumentParser

    import argparse

    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    train_flags = list(HfArgumentParser((ModelArguments, DataArguments, CxrMtClipTrainingArguments))._option_string_actions)
    outputs: dict[str, str] = {}
    blocks = _bash_blocks()
    assert len(blocks) >= 7
    for label, block in blocks:
        if block.strip() in ("bash scripts/demo.sh", "bash scripts/test.sh"):
            continue  # the two set-up commands: the section above them says what they do
        assert any(word in label.lower() for word in LABELS), f"bash block without offline/Hub/NLM label: {block[:80]}"
        for argv in _commands(block):
            if argv[0] == "accelerate":
                argv = argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):]
            if argv[0] == "python":
                argv = argv[1:]
            if argv[0] == "examples/train.py" or argv[:2] == ["cxr-mtclip", "train"]:
                known, args = train_flags, argv[1 if argv[0].endswith(".py") else 2:]
            elif argv[:2] == ["cxr-mtclip", "evaluate"]:
                known, args = list(evaluate_parser()._option_string_actions), argv[2:]
            elif argv[0] == "dataset_scripts/build_openi.py":
                known, args = list(sub["build-dataset"]._option_string_actions), argv[1:]
            elif argv[0] == "cxr-mtclip":
                known, args = list(sub[argv[1]]._option_string_actions), argv[2:]
            else:
                continue
            assert misspelt_flags(known, args) == [], f"README: {' '.join(argv)}"
            for flag in ("--out", "--output_dir", "--output-dir"):
                if flag in args:
                    target = args[args.index(flag) + 1]
                    assert target not in outputs, f"README: {target} written by `{outputs[target]}` and `{' '.join(argv)}`"
                    outputs[target] = " ".join(argv)


def test_the_readme_states_the_demo_time_it_was_measured_at():
    readme = (REPO / "README.md").read_text()
    assert "a few minutes" not in readme.split("## Usage")[0]
    measured = json.loads((REPO / "benchmarks" / "results" / "demo.json").read_text())
    default = next(run for run in measured["runs"] if run["size"] == "default")
    assert default["verdict"] == "PASS"
    minutes = re.search(r"about (\d+) minutes? on 2 CPU cores", readme)
    assert minutes and default["wall_s"] <= int(minutes.group(1)) * 60 * 1.0


def test_the_light_training_flags_match_the_real_ones():
    """`train --help` reads a light copy of the main training flags; it must say what the real parser does."""
    from transformers import HfArgumentParser

    import cxr_mtclip.recipes.train as recipe
    from cxr_mtclip.recipes.train_args import BIOMEDCLIP, TRAINING_FLAGS, DataArguments, ModelArguments, short_help_parser
    from cxr_mtclip.registry import BIOMEDCLIP_HUB_ID
    from cxr_mtclip.training import CONFIG_OVERRIDE_KEYS, CxrMtClipTrainingArguments

    assert recipe.ModelArguments is ModelArguments and recipe.DataArguments is DataArguments
    assert BIOMEDCLIP == BIOMEDCLIP_HUB_ID
    real = {f.name: f for f in dataclasses.fields(CxrMtClipTrainingArguments)}
    overrides = {f.name for f in dataclasses.fields(ModelArguments)} & set(CONFIG_OVERRIDE_KEYS)
    assert {"bce_weight", "supcon_weight", "clip_weight", "trainable_image_blocks", "train_logit_scale"} <= overrides
    for name, (_, default, _) in TRAINING_FLAGS.items():
        field = real[name]
        assert field.default == default, f"--{name}: --help says {default!r}, TrainingArguments {field.default!r}"
    full = HfArgumentParser((ModelArguments, DataArguments, CxrMtClipTrainingArguments))._option_string_actions
    light = short_help_parser()._option_string_actions
    assert set(light) - {"-h", "--help", "--help-all"} <= set(full)
    from cxr_mtclip.losses import DEFAULT_SUPCON_TEMPERATURE, PAPER_LOSS_WEIGHTS

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(ModelArguments)}
    for key, value in PAPER_LOSS_WEIGHTS.items():
        assert f"paper {value}" in helps[key]
    assert str(DEFAULT_SUPCON_TEMPERATURE) in helps["supcon_temperature"]
