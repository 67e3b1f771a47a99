"""Bad inputs of the retrieval entry points (issue 16): one line, exit 2, before any model loads; and
docs/reliability.md quotes, word for word, what the commands print today.

Every case runs `cxr-mtclip` in-process from a scratch folder with relative paths, so the message it prints is the
one the documentation shows. The model loader and the Auto-class registration are replaced by a tripwire: a case
that reaches them (i.e. would load a model before naming the bad input) fails.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import cxr_mtclip.cli as cli

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"


class ModelLoaded(AssertionError):
    """Raised by the tripwire: the command loaded (or prepared to load) a model before its checks failed."""


def _tripwire(*args, **kwargs):
    raise ModelLoaded("a model (or the Auto classes) was loaded before the bad input was named")


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_config, tiny_processor):
    """idx/ (an index folder of 8 phantoms, manifest naming models/tiny), data/openi (a DatasetDict), bad.png."""
    from datasets import DatasetDict

    from cxr_mtclip import CxrMtClipModel
    from cxr_mtclip.data import make_phantom_openi
    from cxr_mtclip.retrieval import RetrievalIndex

    monkeypatch.chdir(tmp_path)
    studies = make_phantom_openi(8, seed=0, image_size=64)
    model = CxrMtClipModel(tiny_config).eval()
    RetrievalIndex.build(model, tiny_processor, studies, model_id="models/tiny", show_progress=False).save(
        "idx", show_progress=False)
    DatasetDict({"test": studies}).save_to_disk("data/openi")
    Path("bad.png").write_text("garbage")
    monkeypatch.setattr(cli, "_load_model", _tripwire)
    monkeypatch.setattr(cli, "load_saved_model", _tripwire)
    monkeypatch.setattr(cli, "_register_auto_classes", _tripwire)
    return tmp_path


def _busy_port() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def _error_line(argv: list[str], capsys) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    lines = err.splitlines()
    assert len(lines) == 1, (argv, err)
    prefix = f"cxr-mtclip {argv[0]}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


# (argv, the message as docs/reliability.md quotes it); {port} is a port some other socket holds, {free} one free
RETRIEVAL_CASES = [
    (["search", "--index", "nope", "--text", "effusion"],
     "argument --index: nope: no such folder (see cxr-mtclip search --help)"),
    (["search", "--index", "data/openi", "--text", "effusion"],
     "data/openi: a dataset folder, not an index folder (no manifest.json); make an index folder from it with "
     "`cxr-mtclip index --dataset data/openi --model MODEL --out FOLDER`"),
    (["serve", "--index", "data", "--port", "{free}", "--max-file-size", "2gb"],
     "data: not an index folder (no manifest.json); write one with `cxr-mtclip index`"),
    (["search", "--index", "idx"], "give --image PATH, --text REPORT, or both"),
    (["search", "--index", "idx", "--image", "missing.png"], "missing.png: no such file"),
    (["search", "--index", "idx", "--image", "bad.png"],
     "bad.png: unreadable image (not an image format PIL or pydicom recognises); --image takes a PNG, JPEG or DICOM "
     "file"),
    (["search", "--index", "idx", "--text", "effusion", "--filter", "label"],
     "--filter 'label': expected COLUMN=VALUE, e.g. --filter label=abnormal"),
    (["search", "--index", "idx", "--text", "effusion", "--filter", "labl=normal"],
     "cannot filter on 'labl': filterable columns are ['uid', 'findings', 'impression', 'report', 'label', 'mesh', "
     "'view', 'image_file', 'source', 'finding_labels']"),
    (["search", "--index", "idx", "--text", "effusion", "--filter", "label=weird"],
     "filter on 'label': unknown label 'weird'; expected one of ['normal', 'abnormal']"),
    (["serve", "--index", "idx", "--port", "70000"], "--port 70000 is not a TCP port (1-65535)"),
    (["serve", "--index", "idx", "--port", "{port}"], "cannot listen on 127.0.0.1:{port}: already in use (another server? pass --port N)"),
    (["serve", "--index", "idx", "--max-file-size", "junk"],
     "argument --max-file-size: 'junk' is not a file size; give a whole number and a unit: b, kb, mb, gb or tb "
     "(e.g. 10mb, 500kb) (see cxr-mtclip serve --help)"),
    (["index", "--images", "data", "--out", "gallery"], "--images needs --model MODEL to embed the archive"),
    (["index", "--dataset", "data/openi", "--split", "nope", "--model", "models/tiny", "--out", "gallery"],
     "data/openi: no split 'nope'; has ['test']"),
    (["embed", "--model", "data", "--dataset", "data/openi", "--split", "nope", "--out", "emb"],
     "data/openi: no split 'nope'; has ['test']"),
]


def test_retrieval_entry_points_name_bad_input_before_any_model_loads(workspace, capsys):
    """Was: a dataset as --index said 'the manifest names no model'; with --model, or with a bad --filter or
    --image, the model loaded first (15-20 s here); --max-file-size junk failed inside gradio after the index and
    the model had loaded, with `invalid literal for int() with base 10: ''`."""
    doc = DOC.read_text(encoding="utf-8")
    with _busy_port() as probe:
        free = str(probe.getsockname()[1])  # closed again: free for the cases that must get past the port check
    server = _busy_port()
    port = str(server.getsockname()[1])
    try:
        for argv, expected in RETRIEVAL_CASES:
            argv = [token.replace("{port}", port).replace("{free}", free) for token in argv]
            message = _error_line(argv, capsys)
            assert message == expected.replace("{port}", port), argv
            assert expected.replace("{port}", "<port>") in doc, f"docs/reliability.md does not quote: {expected}"
    finally:
        server.close()


# The rest of the entry-point table: commands that fail at once, run as the documentation shows them.
OTHER_CASES = [
    (["train", "--dataset", "data/nope", "--output_dir", "runs/x"],
     "--dataset data/nope: no such local folder; build it with `cxr-mtclip build-dataset SOURCE --out data/nope` or "
     "`--phantoms N`"),
    (["train", "--backbone", "tiny", "--phantoms", "40", "--output_dir", "runs/push", "--push_to_hub",
      "--hub_model_id", "me/x"],
     "--push_to_hub: cannot push to me/x: the Hub is offline (HF_HUB_OFFLINE is set); unset it to push, or drop "
     "--push_to_hub"),
    (["build-dataset", "--out", "e"], "give a SOURCE folder/tarball (NLM, Kaggle or ../shared/openi layout) or --phantoms N"),
    (["build-dataset", "--phantoms", "4", "--out", "data/openi"],
     "data/openi: already exists (pass --overwrite to replace it, or choose another --out)"),
    (["build-dataset", "--phantoms", "40", "--out", "d2", "--val-fraction", "1.5"],
     "--val-fraction must be between 0 and 1, got 1.5"),
    (["build-dataset", "--phantoms", "40", "--out", "d3", "--push-to-hub", "me/x"],
     "--push-to-hub: cannot push to me/x: the Hub is offline (HF_HUB_OFFLINE is set); unset it to push, or drop "
     "--push-to-hub"),
    (["demo", "--n-studies", "300", "--epochs", "10"],
     "--n-studies 300 --epochs 10 gives 30 optimiser steps (3 batches of 64 per epoch from 203 training studies); "
     "the demo's check needs at least 300: pass --epochs 100 or more, or leave --epochs out (it is then chosen for "
     "the size)"),
    (["demo", "--n-studies", "100"],
     "--n-studies 100: too few for the demo (24 test studies and 68 training studies in batches of 64); pass "
     "--n-studies 200 or more"),
    (["evaluate", "--model", "a=./nomodel", "--dataset", "data/openi", "--output-dir", "ev"], "--model a=./nomodel: ./nomodel: no such model folder"),
    (["search", "--index", "idx", "--k", "3", "--text", "x"],
     "unrecognized argument --k: did you mean -k? (see cxr-mtclip search --help)"),
]


def test_the_entry_point_table_quotes_what_the_commands_print(workspace, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    doc = DOC.read_text(encoding="utf-8")
    for argv, expected in OTHER_CASES:
        message = _error_line(argv, capsys)
        assert message == expected, argv
        assert expected in doc, f"docs/reliability.md does not quote: {expected}"



def test_the_example_scripts_fail_in_one_line_before_any_work(tmp_path):
    """Finding 1 (`examples/reproduce_paper.py --offline --n_studies 40`: the data and the untrained model were
    written, then a traceback ending in "args.max_steps must be set to a positive value") and finding 3
    (`examples/train.py` ended its early checks in a traceback, not the command's one line)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    cases = [
        ([str(REPO / "examples" / "reproduce_paper.py"), "--offline", "--n_studies", "40", "--output_dir", "rp"],
         "reproduce_paper.py: error: --n_studies 40 leaves about 18 training studies, fewer than one batch of 64 (full "
         "batches only): no training step would run; pass --n_studies 93 or more, or --batch_size 18 or less"),
        ([str(REPO / "examples" / "train.py"), "--dataset", "data/nope", "--output_dir", "rp"],
         "examples/train.py: error: --dataset data/nope: no such local folder; build it with `cxr-mtclip build-dataset "
         "SOURCE --out data/nope` or `--phantoms N`"),
    ]
    doc = DOC.read_text(encoding="utf-8")
    (tmp_path / "data").mkdir()  # data/ exists, data/nope does not: a local folder, not a Hub id
    for argv, expected in cases:
        result = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert lines[0].startswith(expected), lines[0]
        assert not (tmp_path / "rp").exists()  # nothing written
        assert expected.split(": error: ", 1)[1] in doc, f"docs/reliability.md does not quote: {expected}"
