"""The real BiomedCLIP path, end to end and offline, against the simulated Hub (tiny variant, published layout).

What a user with network would run, run here against a local cache that holds the published file names and formats:
`CxrMtClipModel.from_backbone` / `CxrMtClipProcessor.from_backbone` (config only, cache_dir honoured, clear offline
errors), `cxr-mtclip train --backbone hf-hub:... --cache_dir ...`, `accelerate launch examples/train.py --backbone
hf-hub:...` on an NLM-layout dataset, `examples/reproduce_paper.py --online` with the NLM tarballs in its cache and the
CLIP baseline simulated too, and save -> load with an empty cache.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_mtclip import CxrMtClipModel, CxrMtClipProcessor
from cxr_mtclip.cli import main as cli_main
from cxr_mtclip.testing import hub as sim
from test_data import nlm_xml, write_tar

REPO_ROOT = Path(__file__).resolve().parents[1]
NORMAL = ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
          "No acute cardiopulmonary disease.")
ABNORMAL = ("The heart is enlarged. There is a small left pleural effusion &gt; 1 cm with basilar atelectasis.",
            "Cardiomegaly with left pleural effusion.")


@pytest.fixture(autouse=True)
def _offline_constants(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE at import; the conftest sets the variable later, so set the constant."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The tiny simulated hub, or the full-size one named by $CXR_MTCLIP_SIMULATED_HUB (scripts/simulated_hub.py)."""
    return sim.simulated_hub_for_tests(tmp_path_factory.mktemp("hub"))


@pytest.fixture
def empty_default_cache(tmp_path):
    """The default Hub cache (HF_HUB_CACHE) is an empty folder: only what cache_dir points at can be found."""
    with sim.hub_cache(tmp_path / "default_cache") as cache:
        yield cache


def _frontal_png(seed: int, width: int, height: int) -> bytes:
    rng = np.random.default_rng(seed)
    columns = np.arange(width) / width
    array = np.full((height, width), 70, dtype=np.int32)
    array[:, (columns > 0.12) & (columns < 0.42)] = 30
    array[:, (columns > 0.58) & (columns < 0.88)] = 35
    array[:, (columns >= 0.42) & (columns <= 0.58)] = 200
    array = np.clip(array + rng.integers(0, 25, array.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_nlm_tarballs(folder: Path, n_studies: int = 24) -> Path:
    """NLMCXR_reports.tgz + NLMCXR_png.tgz (the NLM layout) with `n_studies` studies, half normal, odd image sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    reports, pngs = {}, {}
    for uid in range(1, n_studies + 1):
        findings, impression = NORMAL if uid % 2 else ABNORMAL
        image = f"CXR{uid}_IM-{uid:04d}-1001"
        reports[f"{uid}.xml"] = nlm_xml(uid, findings, impression, ["normal"] if uid % 2 else ["Cardiomegaly/mild"],
                                        [(image, "PA")])
        pngs[f"{image}.png"] = _frontal_png(uid, 180 + uid, 150 + 2 * uid)
    write_tar(folder / "NLMCXR_reports.tgz", {f"ecgen-radiology/{k}": v.encode() for k, v in reports.items()})
    write_tar(folder / "NLMCXR_png.tgz", pngs)
    return folder


@pytest.fixture(scope="module")
def nlm_dataset(tmp_path_factory):
    """The NLM tarballs built into a DatasetDict with `cxr-mtclip build-dataset`."""
    root = tmp_path_factory.mktemp("nlm")
    write_nlm_tarballs(root / "NLMCXR")
    with pytest.warns(UserWarning, match="scaled down"):
        assert cli_main(["build-dataset", str(root / "NLMCXR"), "--out", str(root / "data"), "--seed", "0"]) == 0
    return root / "data"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN_FLAGS = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
               "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
               "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--max_eval_samples", "8",
               "--use_cpu", "true"]


# -- loading: config only, cache_dir, clear errors --------------------------------------------------------------


def test_processor_reads_only_the_config_and_honours_cache_dir(tmp_path, empty_default_cache, monkeypatch):
    """No weights in the cache at all: the processor still loads (it never asks for them), from cache_dir."""
    import huggingface_hub

    cache = tmp_path / "config_only"
    variant = sim.write_simulated_hub(cache, variant="tiny", weights=False)
    requested = []
    real_download = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kwargs):
        requested.append(filename)
        return real_download(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    processor = CxrMtClipProcessor.from_backbone(variant.biomedclip_id, cache_dir=cache)
    # the config and BiomedCLIP's own four tokenizer files: no weights, not even the text tower's config.json
    assert sorted(requested) == ["open_clip_config.json", "special_tokens_map.json", "tokenizer.json",
                                 "tokenizer_config.json", "vocab.txt"], requested
    assert processor.image_size == 160 and processor.max_length == 256
    assert processor(text=["no acute disease"])["input_ids"][0, 0].item() == 2  # [CLS]


def test_offline_cache_misses_say_so_naming_repo_file_and_cache(tmp_path, empty_default_cache):
    cache = tmp_path / "no_weights"
    variant = sim.write_simulated_hub(cache, variant="tiny", weights=False)
    with pytest.raises(FileNotFoundError) as err:
        CxrMtClipModel.from_backbone(variant.biomedclip_id, cache_dir=cache)
    message = str(err.value)
    assert (f"open_clip_pytorch_model.bin of hub repo {variant.biomedclip_repo!r} is not in the local cache and "
            "offline mode is on") in message
    assert str(cache.resolve()) in message and "has none of" not in message
    # nothing of the repo cached (here: the default cache, which is empty)
    with pytest.raises(FileNotFoundError, match=r"open_clip_config.json of hub repo .*BiomedCLIP-PubMedBERT_256.* is "
                                                r"not in the local cache and offline mode is on") as err:
        CxrMtClipModel.from_backbone("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    assert str(empty_default_cache) in str(err.value)


def test_genuine_mismatches_are_still_rejected_naming_the_key(tmp_path):
    """The legacy position_ids buffer is accepted; a missing weight, a wrong shape or a foreign key is not."""
    hub = sim.write_simulated_hub(tmp_path / "hub", variant="tiny")
    snapshot = hub.biomedclip_snapshot
    state = torch.load(snapshot / "open_clip_pytorch_model.bin", weights_only=True)

    def folder_with(name, tensors):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "open_clip_config.json").write_bytes((snapshot / "open_clip_config.json").read_bytes())
        torch.save(tensors, folder / "open_clip_pytorch_model.bin")
        return folder

    good = CxrMtClipModel.from_backbone(folder_with("good", state), cache_dir=hub.cache_dir)
    assert torch.equal(good.backbone.state_dict()["text.proj.0.weight"], state["text.proj.0.weight"])
    vector_scale = dict(state, logit_scale=state["logit_scale"].reshape(1))  # open_clip reshapes this one too
    assert CxrMtClipModel.from_backbone(folder_with("scale", vector_scale), cache_dir=hub.cache_dir
                                        ).backbone.logit_scale.shape == torch.Size([])
    missing = dict(state)
    missing.pop("visual.head.proj.weight")
    with pytest.raises(ValueError, match=r"missing \['visual.head.proj.weight'\]"):
        CxrMtClipModel.from_backbone(folder_with("missing", missing), cache_dir=hub.cache_dir)
    shape = dict(state, **{"text.proj.0.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"text.proj.0.weight has shape \(3, 3\)"):
        CxrMtClipModel.from_backbone(folder_with("shape", shape), cache_dir=hub.cache_dir)
    foreign = dict(state, **{"text.transformer.embeddings.extra_ids": torch.zeros(1, 4, dtype=torch.int64)})
    with pytest.raises(ValueError, match=r"unexpected \['text.transformer.embeddings.extra_ids'\]"):
        CxrMtClipModel.from_backbone(folder_with("foreign", foreign), cache_dir=hub.cache_dir)


def test_save_then_load_with_an_empty_cache_gives_identical_outputs(hub, tmp_path, empty_default_cache):
    model = CxrMtClipModel.from_backbone(hub.biomedclip_id, cache_dir=hub.cache_dir, dropout=0.0).eval()
    processor = CxrMtClipProcessor.from_backbone(hub.biomedclip_id, cache_dir=hub.cache_dir)
    images = [Image.open(io.BytesIO(_frontal_png(i, 200 + 37 * i, 160))) for i in range(3)]
    texts = [NORMAL[0], ABNORMAL[0], "Lungs   clear &amp; no effusion."]
    batch = processor(images=images, text=texts, labels=[0, 1, 0])
    with torch.no_grad():
        before = model(**batch)
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    # a fresh process would see only the empty default cache: nothing is fetched from the simulated repo again
    loaded = CxrMtClipModel.from_pretrained(tmp_path / "saved").eval()
    loaded_processor = CxrMtClipProcessor.from_pretrained(tmp_path / "saved")
    again = loaded_processor(images=images, text=texts, labels=[0, 1, 0])
    for key in ("pixel_values", "input_ids", "attention_mask", "labels"):
        assert torch.equal(again[key], batch[key]), key
    with torch.no_grad():
        after = loaded(**again)
    for key in ("loss", "logits", "image_embeds", "text_embeds", "fused_embeds"):
        # equal weights; a reloaded (memory-mapped) tensor may take another SIMD path: last-bit differences only
        torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=0, msg=key)
    assert not list(empty_default_cache.glob("models--*"))


# -- the training entry points ------------------------------------------------------------------------------------


def test_cli_train_on_the_simulated_hub_with_cache_dir(hub, nlm_dataset, tmp_path, empty_default_cache):
    """`cxr-mtclip train --backbone hf-hub:... --cache_dir DIR`: model and processor both come from DIR."""
    out = tmp_path / "run"
    code = cli_main(["train", "--backbone", hub.biomedclip_id, "--cache_dir", str(hub.cache_dir), "--dataset",
                     str(nlm_dataset), "--output_dir", str(out), *TRAIN_FLAGS])
    assert code == 0
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(np.isfinite(losses))
    config = json.loads((out / "config.json").read_text())
    assert config["backbone"] == hub.biomedclip_id
    assert config["open_clip_config"]["vision_cfg"]["image_size"] == hub.image_size
    processor = CxrMtClipProcessor.from_pretrained(out)
    assert processor.image_size == hub.image_size and len(processor.tokenizer) == hub.vocab_size


@pytest.mark.slow
def test_accelerate_launch_train_script_on_the_simulated_hub(hub, nlm_dataset, tmp_path):
    """`accelerate launch examples/train.py --backbone hf-hub:...` with the simulated cache as HF_HUB_CACHE."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO_ROOT / "examples" / "train.py"),
               "--backbone", hub.biomedclip_id, "--dataset", str(nlm_dataset), "--output_dir", str(out), *TRAIN_FLAGS]
    env = {**os.environ, "HF_HUB_CACHE": str(hub.cache_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "model.safetensors").is_file()
    assert CxrMtClipModel.from_pretrained(out).config.backbone == hub.biomedclip_id


# -- the paper's recipe ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reproduce_online_runs_on_the_simulated_hub_and_says_so(hub, tmp_path):
    """--online with the NLM tarballs already in its cache folder and both model repos simulated: the whole
    pipeline runs offline, and every table names the simulated models."""
    cache = tmp_path / "cache"
    write_nlm_tarballs(cache / "NLMCXR")
    out = tmp_path / "repro"
    with sim.hub_cache(hub.cache_dir), pytest.warns(UserWarning, match="scaled down"):
        code = _example("reproduce_paper").main([
            "--online", "--backbone", hub.biomedclip_id, "--clip_model", hub.clip_model,
            *(["--clip_pretrained", hub.clip_pretrained] if hub.clip_pretrained else []), "--cache_dir", str(cache),
            "--output_dir", str(out), "--epochs", "1", "--batch_size", "8", "--n_boot", "20", "--ks", "1", "3",
            "--threads", "1", "--quiet"])
    assert code == 0
    comparison = json.loads((out / "paper_comparison.json").read_text())
    assert comparison["mode"] == "online" and "SIMULATED HUB" in comparison["banner"]
    assert all("[SIMULATED Hub repo: random weights]" in name for name in comparison["models"].values())
    markdown = (out / "paper_comparison.md").read_text()
    sections = markdown.split("\n## ")[1:]
    assert len(sections) >= 7 and all("SIMULATED HUB" in section for section in sections)
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["data_note"].startswith("OpenI (NLM) test split")
    assert len({entry["fingerprint"] for entry in results["models"].values()}) == 3
    assert sorted(p.name for p in (cache / "NLMCXR").iterdir()) == ["NLMCXR_png.tgz", "NLMCXR_reports.tgz"]


def test_reproduce_fails_with_one_line_when_the_recipe_cannot_run(tmp_path, empty_default_cache, capsys):
    """Offline with an empty cache, the default (paper) mode stops at once with one line; no stand-in run."""
    out = tmp_path / "repro"
    code = _example("reproduce_paper").main(["--output_dir", str(out), "--cache_dir", str(tmp_path / "c"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "cannot run the paper's recipe" in err[0] and "not in the local cache and offline mode is on" in err[0]
    assert "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in err[0] and "--offline" in err[0]
    assert not (out / "paper_comparison.md").exists() and not (tmp_path / "c").exists()
