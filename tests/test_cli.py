"""Every `cxr-mtclip` subcommand: one success and one bad input (exit code 2, one-line message)."""

import json
import subprocess
import sys

import pytest
import torch

from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel
from cxr_mtclip.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small phantom DatasetDict and a saved tiny model + processor sized for its images."""
    from cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer

    root = tmp_path_factory.mktemp("cli")
    assert main(["build-dataset", "--phantoms", "48", "--out", str(root / "data"), "--seed", "1"]) == 0
    from datasets import load_from_disk

    splits = load_from_disk(str(root / "data"))
    tokenizer = build_wordpiece_tokenizer(splits["train"]["report"], root / "tok", vocab_size=300)
    config = CxrMtClipConfig.from_registry("demo", vocab_size=len(tokenizer))
    torch.manual_seed(0)
    model = CxrMtClipModel(config)
    model.save_pretrained(root / "model")
    CxrMtClipProcessor.from_config(config, tokenizer).save_pretrained(root / "model")
    return root


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_for_every_subcommand(capsys):
    for command in ["build-dataset", "train", "embed", "index", "search", "evaluate", "demo", "serve"]:
        try:
            code = main([command, "--help"])
        except SystemExit as exit_:
            code = exit_.code
        out = capsys.readouterr().out
        assert code == 0, command
        assert "usage" in out.lower(), command
    # the installed console script itself
    result = subprocess.run([sys.executable, "-m", "cxr_mtclip.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "build-dataset" in result.stdout


def test_bad_arguments_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--index", "/no/such/index", "--text", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/no/such/index: no such folder" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_build_dataset(workspace, capsys, tmp_path):
    code, out, err = run(["build-dataset", "--phantoms", "20", "--out", str(tmp_path / "d")], capsys)
    assert code == 0 and "SYNTHETIC" in out
    code, out, err = run(["build-dataset", "--phantoms", "20", "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(["build-dataset", "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and "SOURCE" in err


def test_build_dataset_from_real_openi(openi_dir, tmp_path, capsys):
    code, out, err = run(["build-dataset", str(openi_dir / "raw"), "--reports-only", "--out", str(tmp_path / "real")], capsys)
    assert code == 0, err
    from datasets import load_from_disk

    test = load_from_disk(str(tmp_path / "real"))["test"]
    assert sorted(test["label"]).count(0) == 200 and sorted(test["label"]).count(1) == 200


def test_embed_and_index(workspace, capsys, tmp_path):
    code, out, err = run(["embed", "--model", str(workspace / "model"), "--dataset", str(workspace / "data"),
                          "--split", "test", "--out", str(tmp_path / "emb")], capsys)
    assert code == 0, err
    assert "SYNTHETIC" in out
    # embed + index: the saved embeddings are indexed as they are (no model needed)
    code, out, err = run(["index", "--dataset", str(tmp_path / "emb"), "--kind", "hnsw", "--out", str(tmp_path / "idx")], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert {meta["kind"] for meta in manifest["indexes"].values()} == {"hnsw"} and manifest["images"] is True
    code, out, err = run(["index", "--dataset", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")], capsys)
    assert code == 2 and "already exists (pass --overwrite" in err
    code, out, err = run(["embed", "--model", str(workspace / "model"), "--dataset", str(workspace / "data"),
                          "--split", "nope", "--out", str(tmp_path / "emb2")], capsys)
    assert code == 2 and "no split 'nope'" in err
    code, out, err = run(["index", "--dataset", str(workspace / "data"), "--split", "test", "--out", str(tmp_path / "i2")], capsys)
    assert code == 2 and "embed_dataset" in err  # raw rows need --model


@pytest.fixture(scope="module")
def index_folder(workspace):
    """`cxr-mtclip index` on the raw test split, embedding it with the model (images kept)."""
    folder = workspace / "index"
    if not folder.exists():
        assert main(["index", "--dataset", str(workspace / "data"), "--split", "test", "--model", str(workspace / "model"),
                     "--out", str(folder)]) == 0
    return folder


def test_search_text_and_image(workspace, index_folder, capsys, tmp_path):
    from datasets import load_from_disk

    test = load_from_disk(str(workspace / "data"))["test"]
    code, out, err = run(["search", "--index", str(index_folder), "--text", test[0]["report"], "-k", "3", "--json"],
                         capsys)  # the model comes from the manifest
    assert code == 0, err
    payload = json.loads(out)
    assert len(payload["hits"]) == 3 and "SYNTHETIC" in payload["data"]
    assert payload["protocol"] == "cross-modal" and payload["index"] == "image_embeds"
    assert {"uid", "label", "score", "report"} <= set(payload["hits"][0])
    image_path = tmp_path / "query.png"
    test[0]["image"].save(image_path)
    code, out, err = run(["search", "--index", str(index_folder), "--model", str(workspace / "model"),
                          "--image", str(image_path), "--text", test[0]["report"], "--filter", "label=abnormal",
                          "--mode", "paper"], capsys)
    assert code == 0, err
    assert "rank" in out and "SYNTHETIC" in out and "protocol: paper (study query vs fused_embeds)" in out
    code, out, err = run(["search", "--index", str(index_folder), "--text", "effusion", "--filter", "label=normal",
                          "-k", "50", "--json"], capsys)
    hits = json.loads(out)["hits"]
    assert code == 0 and len(hits) == test["label"].count(0) and {h["label"] for h in hits} == {"normal"}
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    code, out, err = run(["search", "--index", str(index_folder), "--image", str(bad)], capsys)
    assert code == 2 and "not_an_image.png: unreadable image" in err  # open_image's message, naming the file
    code, out, err = run(["search", "--index", str(index_folder), "--text", "x", "--filter", "label"], capsys)
    assert code == 2 and "expected COLUMN=VALUE" in err


def test_search_by_finding_embeds_only_the_query(workspace, index_folder, capsys, monkeypatch):
    """`--filter finding_labels=NAME` returns exactly the studies carrying that finding (unknown findings, None, never
    match); the gallery's vectors come from the folder: one report is embedded, no image; a near-miss name is one
    line suggesting the right one."""
    from collections import Counter

    from datasets import load_from_disk

    test = load_from_disk(str(workspace / "data"))["test"]
    names = test.features["finding_labels"].feature.names
    labels = test["finding_labels"]
    finding = Counter(names[i] for v in labels if v for i in v).most_common(1)[0][0]
    carriers = {uid for uid, v in zip(test["uid"], labels) if v and names.index(finding) in v}
    assert 0 < len(carriers) < len(test)
    seen = {"images": 0, "reports": 0}
    image_fn, text_fn = CxrMtClipModel.get_image_features, CxrMtClipModel.get_text_features

    def count_image(model, pixel_values, *a, **k):
        seen["images"] += int(pixel_values.shape[0])
        return image_fn(model, pixel_values, *a, **k)

    def count_text(model, input_ids, *a, **k):
        seen["reports"] += int(input_ids.shape[0])
        return text_fn(model, input_ids, *a, **k)

    monkeypatch.setattr(CxrMtClipModel, "get_image_features", count_image)
    monkeypatch.setattr(CxrMtClipModel, "get_text_features", count_text)
    code, out, err = run(["search", "--index", str(index_folder), "--text", "effusion", "--filter",
                          f"finding_labels={finding}", "-k", "50", "--json"], capsys)
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert {h["uid"] for h in hits} == carriers and all(finding in h["finding_labels"] for h in hits)
    assert seen == {"images": 0, "reports": 1}
    code, out, err = run(["search", "--index", str(index_folder), "--text", "effusion", "--filter",
                          "finding_labels=effusion"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("cxr-mtclip")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "unknown label 'effusion' (did you mean 'pleural_effusion'?)" in errors[0]


def test_evaluate(workspace, capsys, tmp_path):
    code, out, err = run(["evaluate", "--dataset", str(workspace / "data"), "--split", "test",
                          "--model", f"tiny={workspace / 'model'}", "--output-dir", str(tmp_path / "ev"),
                          "--data-note", "synthetic phantoms", "--ks", "1", "3"], capsys)
    assert code == 0, err
    assert (tmp_path / "ev" / "results.json").is_file()
    code, out, err = run(["evaluate", "--dataset", str(tmp_path / "missing"), "--model", f"x={workspace / 'model'}",
                          "--output-dir", str(tmp_path / "ev2")], capsys)
    assert code == 2


def test_train(workspace, capsys, tmp_path):
    code, out, err = run(["train", "--backbone", "tiny", "--dataset", str(workspace / "data"), "--output_dir",
                          str(tmp_path / "run"), "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                          "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "all_results.json").is_file()
    code, out, err = run(["train", "--backbone", "tiny", "--dataset", str(tmp_path / "missing"),
                          "--output_dir", str(tmp_path / "run2")], capsys)
    assert code == 2


def test_demo_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--n-studies", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--openi", str(tmp_path / "missing")])
    assert exc.value.code == 2


def test_serve_bad_input(capsys, tmp_path, index_folder):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--index", str(tmp_path / "nope")])
    assert exc.value.code == 2
    code, out, err = run(["serve", "--index", str(tmp_path), "--model", str(tmp_path)], capsys)
    assert code == 2 and "not an index folder" in err  # the index folder is checked before the model loads
    code, out, err = run(["serve", "--index", str(index_folder), "--model", str(tmp_path)], capsys)
    assert code == 2 and "not a saved cxr_mtclip model" in err
    code, out, err = run(["serve", "--index", str(tmp_path), "--port", "70000"], capsys)
    assert code == 2 and err.strip() == "cxr-mtclip serve: error: --port 70000 is not a TCP port (1-65535)"


def test_serve_subcommand_answers_on_loopback(workspace, index_folder):
    import socket
    import time
    import urllib.request

    from gradio_client import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "cxr_mtclip.cli", "serve", "--index", str(index_folder), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        page = None
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert page is not None, process.stdout.read() if process.poll() is not None else "server did not answer"
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        *_, results = client.predict(None, "pleural effusion", "auto", 3, "any", [], api_name="/search")
        assert results["protocol"] == "cross-modal" and len(results["hits"]) == 3 and "SYNTHETIC" in results["data"]
    finally:
        process.terminate()
        process.wait(timeout=30)
