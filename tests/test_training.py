"""CxrMtClipTrainer, examples/train.py (1 and 2 processes), hyper-parameter search, model card and Hub upload."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from datasets import DatasetDict
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file
from transformers import AutoModel, EvalPrediction

from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel
from cxr_mtclip.hub import push_to_hub, upload_plan
from cxr_mtclip.model_card import DataDescription, render_model_card
from cxr_mtclip.losses import LOSS_TERMS
from cxr_mtclip.recipes.train import parse_training_args
from cxr_mtclip.training import (
    HP_SEARCH_RANGES,
    CxrMtClipDataCollator,
    CxrMtClipTrainer,
    CxrMtClipTrainingArguments,
    build_model,
    compute_retrieval_metrics,
    default_hp_space,
    default_objective,
    make_model_init,
    parameter_groups,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "examples" / "train.py"
WEIGHTS = {"bce_loss": "bce_weight", "supcon_loss": "supcon_weight", "clip_loss": "clip_weight"}
# 30 optimizer steps of 8 studies at a high learning rate, all blocks trainable: enough for the tiny model to learn.
FAST_LEARNING = [
    "--backbone", "tiny", "--trainable_image_blocks", "-1", "--trainable_text_blocks", "-1", "--dropout", "0",
    "--learning_rate", "5e-3", "--head_learning_rate", "5e-3", "--warmup_steps", "0",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
    "--disable_tqdm", "true", "--seed", "0", "--dataloader_pin_memory", "false",
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tiny model gains nothing from threads; on a shared 2-core machine they only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_train_script():
    spec = importlib.util.spec_from_file_location("cxr_mtclip_train_example", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weighted_sum(entry: dict, config: dict, prefix: str = "") -> float:
    return sum(config[w] * entry[f"{prefix}{term}"] for term, w in WEIGHTS.items())


@pytest.fixture(scope="module")
def phantom_splits() -> DatasetDict:
    """40 synthetic phantom studies (64 px): 24 train, 8 validation, 8 test, both labels in every split."""
    from cxr_mtclip.data import make_phantom_openi

    studies = make_phantom_openi(40, seed=0, image_size=64)
    normal = [i for i, y in enumerate(studies["label"]) if y == 0]
    abnormal = [i for i, y in enumerate(studies["label"]) if y == 1]
    assert len(normal) >= 8 and len(abnormal) >= 8
    val = normal[:4] + abnormal[:4]
    test = normal[4:8] + abnormal[4:8]
    train = sorted(set(range(40)) - set(val) - set(test))[:24]
    return DatasetDict({"train": studies.select(train), "validation": studies.select(val), "test": studies.select(test)})


@pytest.fixture(scope="module")
def dataset_dir(phantom_splits, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantom_dataset")
    phantom_splits.save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def trained_run(dataset_dir, tiny_tokenizer_dir, tmp_path_factory):
    """examples/train.py on the phantoms: 30 steps, eval + checkpoints every 10, then --push_to_hub stopped at HfApi."""
    out = tmp_path_factory.mktemp("run") / "tiny-cxr"
    calls: dict[str, list] = {"create_repo": [], "create_commit": []}

    def fake_create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, **kwargs})

    def fake_create_commit(self, repo_id, operations, **kwargs):
        calls["create_commit"].append({"repo_id": repo_id, "operations": list(operations), **kwargs})

    argv = FAST_LEARNING + [
        "--tokenizer", str(tiny_tokenizer_dir), "--dataset", str(dataset_dir), "--output_dir", str(out),
        "--max_steps", "30", "--logging_steps", "3", "--eval_strategy", "steps", "--eval_steps", "10",
        "--save_strategy", "steps", "--save_steps", "10", "--save_total_limit", "5",
    ]
    def fake_access_check(repo_id, **kwargs):  # the Hub's answer to the pre-training access check: "me" may write
        calls.setdefault("access_check", []).append({"repo_id": repo_id, "before_training": not out.exists()})
        return {"name": "me"}

    with pytest.MonkeyPatch.context() as patch:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            patch.setenv(name, "1")
        patch.setattr(HfApi, "create_repo", fake_create_repo)
        patch.setattr(HfApi, "create_commit", fake_create_commit)
        patch.setattr("cxr_mtclip.recipes.train_checks.check_hub_push", fake_access_check)
        result = load_train_script().main(argv + ["--push_to_hub", "true", "--hub_model_id", "me/tiny-cxr"])
    assert calls["access_check"] == [{"repo_id": "me/tiny-cxr", "before_training": True}]
    return {"out": out, "result": result, "calls": calls, "argv": argv}


# ----------------------------------------------------------------------------------------------
# Arguments, collator, parameter groups, metrics, objective
# ----------------------------------------------------------------------------------------------


def test_training_arguments_follow_the_paper(tmp_path):
    args = CxrMtClipTrainingArguments(output_dir=str(tmp_path))
    assert (args.learning_rate, args.head_learning_rate) == (1e-5, 1e-4)
    assert args.lr_scheduler_type.value == "cosine"
    assert args.get_warmup_steps(1000) == 100  # warm-up ratio 0.1 (transformers 5 spells it warmup_steps=0.1)
    assert args.num_train_epochs == 20 and args.per_device_train_batch_size == 128
    assert "adamw" in str(args.optim.value) and args.remove_unused_columns is False
    assert args.report_to in ("none", ["none"], [])
    assert args.metric_for_best_model == "cross-modal/mean_accuracy@1" and args.greater_is_better is True
    with pytest.raises(ValueError, match="head_learning_rate"):
        CxrMtClipTrainingArguments(output_dir=str(tmp_path), head_learning_rate=0)


def test_parse_training_args_reads_the_three_groups(tmp_path):
    model_args, data_args, training_args = parse_training_args(
        ["--backbone", "tiny", "--bce_weight", "0.3", "--phantoms", "16", "--output_dir", str(tmp_path),
         "--head_learning_rate", "3e-4", "--metric_for_best_model", "cross-modal/image_to_text/accuracy@1", "--hpo_trials", "2"]
    )
    assert model_args.config_overrides() == {"bce_weight": 0.3}
    assert data_args.phantoms == 16 and training_args.head_learning_rate == 3e-4 and training_args.hpo_trials == 2
    assert training_args.metric_for_best_model == "cross-modal/image_to_text/accuracy@1"


def test_collator_applies_the_processor(phantom_splits, tiny_processor):
    rows = [phantom_splits["train"][i] for i in range(3)]
    batch = CxrMtClipDataCollator(tiny_processor)(rows)
    # phantoms carry finding_labels (issue 18): the batch has their multi-hot matrix and known mask too
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "labels", "finding_labels", "finding_known"}
    assert batch["finding_labels"].shape == (3, 32) and batch["finding_known"].dtype == torch.bool
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    expected = tiny_processor(images=[r["image"] for r in rows], text=[r["report"] for r in rows])
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.allclose(batch["pixel_values"], expected["pixel_values"])
    unlabeled = CxrMtClipDataCollator(tiny_processor)([{k: v for k, v in r.items() if k != "label"} for r in rows])
    assert "labels" not in unlabeled
    with pytest.raises(ValueError, match="'findings_and_impression'"):
        CxrMtClipDataCollator(tiny_processor, text_column="findings_and_impression")(rows)
    with pytest.raises(ValueError, match="must be 0 \\(normal\\) or 1"):
        CxrMtClipDataCollator(tiny_processor)([{**rows[0], "label": 2}])


def test_parameter_groups_split_backbone_and_head(tiny_processor, tmp_path):
    torch.manual_seed(0)
    model = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, train_logit_scale=True))  # frozen by default
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in parameter_groups(model, 1e-5, 1e-4, 0.05)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    grouped = [names[id(p)] for g in groups.values() for p in g["params"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(grouped) == len(set(grouped))  # each trainable once
    assert "backbone.visual.trunk.blocks.0.attn.qkv.weight" not in grouped  # frozen block stays out
    head = {names[id(p)] for p in groups["head"]["params"]}
    head_no_decay = {names[id(p)] for p in groups["head_no_decay"]["params"]}
    assert head == {"classifier.weight"} and head_no_decay == {"classifier.bias", "backbone.logit_scale"}
    decayed = {names[id(p)] for p in groups["backbone"]["params"]}
    not_decayed = {names[id(p)] for p in groups["backbone_no_decay"]["params"]}
    assert all("norm" not in n.lower() and "bias" not in n for n in decayed)
    assert all(dict(model.named_parameters())[n].ndim >= 2 for n in decayed)
    norms_and_biases = {n for n in trainable if "norm" in n.lower() or "bias" in n}
    assert norms_and_biases - {"classifier.bias"} == not_decayed
    assert any("LayerNorm" in n for n in not_decayed) and any(".norm" in n for n in not_decayed)
    assert [(g["lr"], g["weight_decay"]) for g in groups.values()] == [(1e-5, 0.05), (1e-5, 0.0), (1e-4, 0.05), (1e-4, 0.0)]

    args = CxrMtClipTrainingArguments(output_dir=str(tmp_path), eval_strategy="no", weight_decay=0.05,
                                      learning_rate=2e-5, head_learning_rate=3e-4)
    optimizer = CxrMtClipTrainer(model=model, args=args, processing_class=tiny_processor).create_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["backbone"]["lr"] == 2e-5 and by_name["head_no_decay"]["lr"] == 3e-4
    assert by_name["backbone"]["weight_decay"] == 0.05 and by_name["backbone_no_decay"]["weight_decay"] == 0.0


def test_compute_retrieval_metrics_on_known_embeddings():
    image = torch.eye(4).numpy()
    text = image[[0, 1, 3, 2]]  # pairs 2 and 3 swapped
    pred = EvalPrediction(predictions=(torch.tensor([-1.0, 2.0, -0.5, -0.5]).numpy(), image, text),
                          label_ids=torch.tensor([0, 1, 1, 0]).numpy())
    metrics = compute_retrieval_metrics(pred, ks=(1, 5, 10))  # cut-offs above 4 are dropped
    assert metrics["cross-modal/image_to_text/accuracy@1"] == 0.5 and metrics["cross-modal/text_to_image/accuracy@1"] == 0.5
    assert "cross-modal/image_to_text/accuracy@5" not in metrics
    assert metrics["cross-modal/mean_accuracy@1"] == 0.5
    assert metrics["classification/accuracy"] == 0.75


def test_default_objective_is_mean_accuracy_at_1():
    assert default_objective({"eval_cross-modal/image_to_text/accuracy@1": 0.6, "eval_cross-modal/text_to_image/accuracy@1": 0.2}) == pytest.approx(0.4)
    assert default_objective({"cross-modal/image_to_text/accuracy@1": 1.0, "cross-modal/text_to_image/accuracy@1": 0.0}) == 0.5
    with pytest.raises(ValueError, match="eval_cross-modal/text_to_image/accuracy@1"):
        default_objective({"eval_cross-modal/image_to_text/accuracy@1": 0.6})


def test_model_init_sets_loss_weights_from_trial_params(tiny_processor, tmp_path):
    init = make_model_init(backbone="tiny", dropout=0.0)
    model = init({"bce_weight": 0.3, "supcon_weight": 1.1, "clip_weight": 0.7, "learning_rate": 1e-3})
    assert (model.config.bce_weight, model.config.supcon_weight, model.config.clip_weight) == (0.3, 1.1, 0.7)
    assert (model.loss_fn.bce_weight, model.loss_fn.supcon_weight, model.loss_fn.clip_weight) == (0.3, 1.1, 0.7)
    trial = optuna.trial.FixedTrial({"bce_weight": 0.4, "supcon_weight": 0.5, "clip_weight": 1.5})
    assert init(trial).config.clip_weight == 1.5
    with pytest.raises(ValueError, match="embed_dim"):
        build_model(backbone="tiny", embed_dim=64)
    args = CxrMtClipTrainingArguments(output_dir=str(tmp_path), eval_strategy="no", gather_distributed=False)
    trainer = CxrMtClipTrainer(model_init=init, args=args, processing_class=tiny_processor)
    rebuilt = trainer.call_model_init({"supcon_weight": 0.25})
    assert rebuilt.loss_fn.supcon_weight == 0.25 and rebuilt.loss_fn.gather_distributed is False


# ----------------------------------------------------------------------------------------------
# A full run of examples/train.py (one process)
# ----------------------------------------------------------------------------------------------


def test_training_lowers_the_loss(trained_run):
    history = json.loads((trained_run["out"] / "trainer_state.json").read_text())["log_history"]
    losses = [e["loss"] for e in history if "loss" in e]
    assert len(losses) == 10  # every 3 steps for 30 steps
    # each log averages one epoch (24 studies, 3 batches); the last epochs must be clearly lower than the first
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses


def test_loss_terms_are_logged_with_the_loss(trained_run):
    history = json.loads((trained_run["out"] / "trainer_state.json").read_text())["log_history"]
    config = json.loads((trained_run["out"] / "config.json").read_text())
    train_logs = [e for e in history if "loss" in e]
    eval_logs = [e for e in history if "eval_loss" in e]
    assert len(eval_logs) >= 3  # steps 10, 20, 30 and the final evaluation
    for entry in train_logs:
        assert all(term in entry for term in LOSS_TERMS)
        # running means are linear, so the logged loss is the weighted sum of the logged terms
        assert entry["loss"] == pytest.approx(weighted_sum(entry, config), rel=1e-4)
    for entry in eval_logs:
        assert entry["eval_loss"] == pytest.approx(weighted_sum(entry, config, "eval_"), rel=1e-4)
        assert "eval_cross-modal/image_to_text/accuracy@1" in entry and "eval_cross-modal/text_to_image/accuracy@1" in entry
    final = next(e for e in reversed(history) if "train_loss" in e)
    assert final["train_loss"] == pytest.approx(weighted_sum(final, config, "train_"), rel=1e-4)
    results = json.loads((trained_run["out"] / "all_results.json").read_text())
    assert results["test_loss"] == pytest.approx(weighted_sum(results, config, "test_"), rel=1e-4)


def test_saved_model_reloads_and_reproduces_eval_metrics(trained_run, phantom_splits, tmp_path):
    out = trained_run["out"]
    results = json.loads((out / "all_results.json").read_text())
    model = AutoModel.from_pretrained(str(out))
    assert isinstance(model, CxrMtClipModel)
    from cxr_mtclip import CxrMtClipProcessor

    processor = CxrMtClipProcessor.from_pretrained(str(out))
    args = CxrMtClipTrainingArguments(output_dir=str(tmp_path), eval_strategy="no", per_device_eval_batch_size=8,
                                      disable_tqdm=True, dataloader_pin_memory=False)
    trainer = CxrMtClipTrainer(model=model, args=args, processing_class=processor)
    for prefix, split in (("eval", "validation"), ("test", "test")):
        metrics = trainer.evaluate(eval_dataset=phantom_splits[split], metric_key_prefix=prefix)
        compared = [k for k in results if k.startswith(f"{prefix}_") and not k.endswith(
            ("runtime", "per_second", "preparation_time"))]
        assert len(compared) > 20
        for key in compared:
            assert metrics[key] == pytest.approx(results[key], abs=1e-5), key
    # the final evaluation is also what was logged
    logged = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "eval_loss" in e][-1]
    assert logged["eval_cross-modal/image_to_text/accuracy@1"] == results["eval_cross-modal/image_to_text/accuracy@1"]


def test_evaluation_uses_every_study_even_with_dataloader_drop_last(trained_run, phantom_splits, tmp_path):
    """`dataloader_drop_last` keeps contrastive training batches full; transformers applies it to the eval and test
    loaders too, which left a split smaller than one eval batch without metrics and scored the rest on a prefix
    (newcomer report, session 3). The metrics must equal those of a run that keeps every batch."""
    from cxr_mtclip import CxrMtClipProcessor

    out = trained_run["out"]
    model = AutoModel.from_pretrained(str(out))
    processor = CxrMtClipProcessor.from_pretrained(str(out))
    test = phantom_splits["test"]
    results = {}
    for drop_last, batch in ((False, 3), (True, 3), (True, 64)):  # 8 studies: a partial last batch; one too-big batch
        args = CxrMtClipTrainingArguments(output_dir=str(tmp_path), eval_strategy="no", disable_tqdm=True,
                                          per_device_eval_batch_size=batch, dataloader_drop_last=drop_last,
                                          dataloader_pin_memory=False)
        trainer = CxrMtClipTrainer(model=model, args=args, processing_class=processor)
        prediction = trainer.predict(test)
        assert prediction.predictions[1].shape[0] == len(test)  # every study embedded
        assert trainer.args.dataloader_drop_last is drop_last  # the training setting is left as it was
        results[(drop_last, batch)] = prediction.metrics
    key = "test_cross-modal/image_to_text/accuracy@1"
    assert results[(True, 3)][key] == pytest.approx(results[(False, 3)][key])
    assert results[(True, 64)][key] == pytest.approx(results[(False, 3)][key])


def test_output_dir_has_checkpoints_results_plot_and_processor(trained_run):
    out = trained_run["out"]
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-10", "checkpoint-20", "checkpoint-30"}
    assert (out / "checkpoint-10" / "processor_config.json").is_file()  # checkpoints carry the processor
    for name in ("all_results.json", "train_results.json", "eval_results.json", "test_results.json",
                 "model.safetensors", "processor_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert trained_run["result"].metrics == json.loads((out / "all_results.json").read_text())


def test_model_card_holds_the_real_numbers(trained_run):
    out = trained_run["out"]
    results = json.loads((out / "all_results.json").read_text())
    text = (out / "README.md").read_text()
    shown = [k for k in results if re.match(r"^(eval|test)_(cross-modal/)?(image_to_text|text_to_image|classification)/", k)]
    assert any(k.startswith("test_cross-modal/image_to_text/") for k in shown)  # retrieval keys name their protocol
    assert len(shown) > 30
    for key in shown:
        value = results[key]
        assert ("n/a" if math.isnan(value) else f"{value:.4f}") in text, key
    for key in ("eval_loss", "test_clip_loss", "train_supcon_loss"):
        assert f"{results[key]:.4f}" in text
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "transformers"
    assert "synthetic phantom" in text.lower() and "Not a medical device" in text and "2601.05399" in text
    assert "{{" not in text and "More Information Needed" not in text
    config = json.loads((out / "config.json").read_text())
    assert f"`{config['bce_weight']} * BCE" in text
    assert (REPO_ROOT / "model_card.md").read_text() == (
        REPO_ROOT / "src" / "cxr_mtclip" / "templates" / "model_card.md").read_text()


def test_model_card_metadata_model_index_and_usage_snippet(trained_run):
    out = trained_run["out"]
    results = json.loads((out / "all_results.json").read_text())
    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "zero-shot-image-classification"
    assert data.license == "mit" and "synthetic-data" in data.tags and "chest-x-ray" in data.tags
    assert data.base_model is None  # the tiny architecture starts from random weights
    # model-index: every finite test metric, with its value
    indexed = {entry.metric_name: entry for entry in data.eval_results}
    expected = {key.removeprefix("test_"): value for key, value in results.items()
                if re.match(r"^test_(cross-modal/)?(image_to_text|text_to_image|classification)/", key) and not math.isnan(value)}
    assert set(indexed) == set(expected) and len(expected) > 20
    for name, value in expected.items():
        assert indexed[name].metric_value == pytest.approx(value) and indexed[name].dataset_split == "test"
    assert indexed["cross-modal/image_to_text/accuracy@1"].task_type == "image-to-text-retrieval"
    # hyper-parameters are printed as given (the run's 5e-3 learning rate, not a rounded one)
    assert "| learning_rate (backbone) | 0.005 |" in card.text
    # the usage snippet runs as written, against the pushed repo's files (this folder)
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    assert 'AutoModel.from_pretrained("me/tiny-cxr")' in snippet
    exec(compile(snippet.replace('"me/tiny-cxr"', repr(str(out))), "README.md", "exec"), {})


def test_model_card_prints_small_numbers_with_their_digits():
    card = render_model_card(
        {"test_cross-modal/image_to_text/accuracy@1": 0.5, "test_classification/roc_auc": float("nan")},
        config=CxrMtClipConfig(), hyperparameters={"learning_rate (backbone)": 1e-5, "weight_decay": 0.01},
        data=DataDescription("real", "data/openi", hub_id="me/openi"), model_name="m", repo_id="me/m",
    )
    text = str(card)
    assert "| learning_rate (backbone) | 1e-05 |" in text and "| weight_decay | 0.01 |" in text
    loaded = ModelCard(text).data
    assert loaded.datasets == ["me/openi"] and loaded.base_model == "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert [e.metric_name for e in loaded.eval_results] == ["cross-modal/image_to_text/accuracy@1"]  # NaN is left out
    assert loaded.eval_results[0].dataset_type == "me/openi" and loaded.eval_results[0].metric_value == 0.5
    assert 'AutoModel.from_pretrained("me/m")' in text


def test_push_to_hub_uploads_exactly_the_model_processor_card_and_results(trained_run):
    calls = trained_run["calls"]
    out = trained_run["out"]
    assert [c["repo_id"] for c in calls["create_repo"]] == ["me/tiny-cxr"]
    assert calls["create_repo"][0]["exist_ok"] is True
    (commit,) = calls["create_commit"]
    uploaded = {op.path_in_repo: Path(op.path_or_fileobj) for op in commit["operations"]}
    assert set(uploaded) == {
        "README.md", "config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
        "tokenizer_config.json", "all_results.json", "train_results.json", "eval_results.json", "test_results.json",
        "trainer_state.json", "loss_curves.png",
    }
    assert uploaded["README.md"] == out / "README.md"
    assert all(path.parent == out for path in uploaded.values())  # nothing from checkpoints or tokenizer/
    assert trained_run["result"].uploaded_files == sorted(uploaded)


def test_push_to_hub_refuses_an_incomplete_folder(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("must not reach the network"))
    for name in ("config.json", "processor_config.json", "README.md", "tokenizer.json"):
        (tmp_path / name).write_bytes((trained_run["out"] / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="no model weights"):
        push_to_hub(tmp_path, "me/broken")
    (tmp_path / "model.safetensors").write_bytes((trained_run["out"] / "model.safetensors").read_bytes())
    assert set(upload_plan(tmp_path)) == {"README.md", "config.json", "model.safetensors", "processor_config.json",
                                          "tokenizer.json"}


def test_model_card_for_real_openi_states_the_licence():
    card = render_model_card(
        {"eval_cross-modal/image_to_text/accuracy@1": 0.3125, "eval_cross-modal/text_to_image/accuracy@1": 0.28125, "eval_loss": 2.5},
        config=CxrMtClipConfig(),
        hyperparameters={"learning_rate (backbone)": 1e-5},
        data=DataDescription("real", "data/openi", split_sizes={"train": 3000, "validation": 300, "test": 400}),
        model_name="cxr-mtclip-openi",
    )
    text = str(card)
    assert card.data.license == "cc-by-nc-nd-4.0"
    assert card.data.base_model == "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert "Real OpenI studies" in text and "CC BY-NC-ND 4.0" in text
    assert "| accuracy@1 | 0.3125 | 0.2812 |" in text
    assert "synthetic phantom images only" not in text


# ----------------------------------------------------------------------------------------------
# Resume, hyper-parameter search, two processes
# ----------------------------------------------------------------------------------------------


def test_resume_from_checkpoint_continues_the_same_loss_curve(trained_run, tmp_path):
    first = trained_run["out"]
    argv = list(trained_run["argv"])
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "resumed")
    # checkpoint-10 is mid-epoch (3 steps per epoch): the data order must be fast-forwarded, not restarted
    load_train_script().main(argv + ["--resume_from_checkpoint", str(first / "checkpoint-10")])
    full = json.loads((first / "trainer_state.json").read_text())["log_history"]
    resumed = json.loads((tmp_path / "resumed" / "trainer_state.json").read_text())["log_history"]

    def by_step(history, key):
        return {e["step"]: e for e in history if key in e}

    full_train, resumed_train = by_step(full, "loss"), by_step(resumed, "loss")
    steps = [s for s in resumed_train if s >= 15]  # the log at step 12 averages steps 11-12 only after resuming
    assert steps == [15, 18, 21, 24, 27, 30]
    for step in steps:
        for key in ("loss",) + LOSS_TERMS:
            assert resumed_train[step][key] == pytest.approx(full_train[step][key], abs=1e-5), (step, key)
    for step in (20, 30):
        assert by_step(resumed, "eval_loss")[step]["eval_loss"] == pytest.approx(
            by_step(full, "eval_loss")[step]["eval_loss"], abs=1e-5)
    a, b = load_file(str(first / "model.safetensors")), load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow
def test_hyperparameter_search_two_trials_and_final_run_uses_best_weights(dataset_dir, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "hpo"
    argv = FAST_LEARNING + [
        "--tokenizer", str(tiny_tokenizer_dir), "--dataset", str(dataset_dir), "--output_dir", str(out),
        "--max_steps", "3", "--logging_steps", "3", "--save_strategy", "no", "--hpo_trials", "2", "--seed", "7",
    ]
    result = load_train_script().main(argv)
    trials = json.loads((out / "hpo_trials.json").read_text())
    assert [t["trial"] for t in trials] == [0, 1] and all(t["state"] == "COMPLETE" for t in trials)
    for t in trials:
        for name, (low, high) in HP_SEARCH_RANGES.items():
            assert low <= t[name] <= high
        assert t["objective"] == pytest.approx(
            (t["eval_cross-modal/image_to_text/accuracy@1"] + t["eval_cross-modal/text_to_image/accuracy@1"]) / 2)
    assert (out / "hpo_trials.csv").read_text().splitlines()[0].startswith("trial,state,objective")

    # seeded TPE: the same seed proposes the same weights in a standalone study
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=7))
    study.optimize(lambda trial: sum(default_hp_space(trial).values()), n_trials=2)
    for ours, reference in zip(trials, study.trials):
        assert {k: ours[k] for k in HP_SEARCH_RANGES} == pytest.approx(reference.params)

    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["objective"] == max(t["objective"] for t in trials)
    assert best["protocol"] == "cross-modal" and best["objective_metric"] == "eval_cross-modal/mean_accuracy@1"
    best_trial = trials[best["trial"]]
    assert best["hyperparameters"] == {k: best_trial[k] for k in HP_SEARCH_RANGES}
    assert result.best_hyperparameters == best["hyperparameters"]
    final_config = json.loads((out / "config.json").read_text())
    assert {k: final_config[k] for k in HP_SEARCH_RANGES} == best["hyperparameters"]
    assert "optuna search (2 trials" in (out / "README.md").read_text()
    assert not (out / "hpo" / "run-0").exists() or not any((out / "hpo" / "run-0").glob("checkpoint-*"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(phantom_splits, tiny_tokenizer_dir, tmp_path):
    """`accelerate launch` with 2 CPU processes trains, evaluates and saves; loss, update and metrics equal 1 process.

    16 training studies = one global batch (2 x 8 vs 1 x 16); SGD without clipping so the saved weights
    after the step compare the gradients themselves.
    """
    data = DatasetDict({"train": phantom_splits["train"].select(range(16)), "validation": phantom_splits["validation"]})
    data.save_to_disk(str(tmp_path / "data"))
    common = [
        "--backbone", "tiny", "--tokenizer", str(tiny_tokenizer_dir), "--dataset", str(tmp_path / "data"),
        "--test_split", "", "--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.5",
        "--head_learning_rate", "0.5", "--lr_scheduler_type", "constant", "--warmup_steps", "0",
        "--max_grad_norm", "0", "--weight_decay", "0", "--logging_steps", "1", "--eval_strategy", "steps",
        "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--trainable_image_blocks", "-1", "--trainable_text_blocks", "-1",
        "--dropout", "0", "--disable_tqdm", "true", "--seed", "0", "--dataloader_pin_memory", "false",
    ]
    one = tmp_path / "one"
    load_train_script().main(common + ["--output_dir", str(one), "--per_device_train_batch_size", "16",
                                       "--per_device_eval_batch_size", "8"])
    two = tmp_path / "two"
    # `accelerate launch` (its module form); without GPUs only --multi_gpu starts several (gloo) processes
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(TRAIN_SCRIPT), *common, "--output_dir", str(two), "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "4",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]

    step_one = [e for e in json.loads((one / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    step_two = [e for e in json.loads((two / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(step_one) == len(step_two) == 1
    assert step_two[0]["epoch"] == 1.0  # each process saw half of the data: the global batch is the whole split
    for key in ("loss",) + LOSS_TERMS + ("grad_norm",):
        assert step_two[0][key] == pytest.approx(step_one[0][key], abs=1e-5), key
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5  # same gradient step (lr 0.5)
    r1, r2 = (json.loads((d / "all_results.json").read_text()) for d in (one, two))
    for key in r1:
        if key.startswith("eval_") and not key.endswith(("runtime", "per_second", "preparation_time")):
            assert r2[key] == pytest.approx(r1[key], abs=1e-5), key
    assert (two / "checkpoint-1" / "model.safetensors").is_file() and (two / "README.md").is_file()
    assert "| processes | 2 |" in (two / "README.md").read_text()


def test_train_script_with_feature_cache_trains_evaluates_and_reuses_the_cache(dataset_dir, tiny_tokenizer_dir, tmp_path):
    """`--feature_cache DIR`: the frozen trunk runs once per study; training, eval and test still work."""
    cache = tmp_path / "cache"
    argv = FAST_LEARNING + [
        "--tokenizer", str(tiny_tokenizer_dir), "--dataset", str(dataset_dir), "--output_dir", str(tmp_path / "run"),
        "--max_steps", "6", "--logging_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
        "--trainable_image_blocks", "1", "--trainable_text_blocks", "1", "--feature_cache", str(cache),
    ]
    result = load_train_script().main(argv)
    manifest = json.loads((cache / "train" / "manifest.json").read_text())
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert "test_cross-modal/image_to_text/accuracy@1" in results and "eval_loss" in results
    losses = [e["loss"] for e in json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) >= 2
    # a second run reuses the cache: the manifest (and its fingerprint) is unchanged
    load_train_script().main(argv[:-2] + ["--output_dir", str(tmp_path / "run2"), "--feature_cache", str(cache)])
    assert json.loads((cache / "train" / "manifest.json").read_text()) == manifest
    reloaded = CxrMtClipModel.from_pretrained(tmp_path / "run")
    assert isinstance(reloaded, CxrMtClipModel) and result is not None


def test_a_card_for_phantoms_with_real_openi_reports_states_the_reports_licence():
    """Phantom images paired with real OpenI reports (`demo --openi`, `build-dataset --phantoms N SOURCE`): the
    card said "no patient data were used" and MIT (newcomer report, session 3). The reports are OpenI's."""
    from huggingface_hub import ModelCard

    from cxr_mtclip.data import make_phantom_openi
    from cxr_mtclip.model_card import DataDescription, card_provenance, render_model_card

    reports = [{"uid": "11", "findings": "Heart size normal.", "impression": "No acute disease.", "mesh": "normal"},
               {"uid": "12", "findings": "Small left pleural effusion.", "impression": "", "mesh": "Pleural Effusion/left"}]
    paired = make_phantom_openi(4, seed=0, image_size=64, reports=reports)
    templated = make_phantom_openi(4, seed=0, image_size=64)
    assert card_provenance(templated) == "synthetic"
    assert card_provenance(DatasetDict(train=paired, test=templated)) == "synthetic-real-reports"
    card = render_model_card({"test_cross-modal/image_to_text/accuracy@1": 0.5}, config=CxrMtClipConfig(),
                             hyperparameters={}, data=DataDescription(card_provenance(paired), "phantoms + OpenI reports"),
                             model_name="m", repo_id="me/m")
    text = str(card)
    data = ModelCard(text).data
    assert data.license == "cc-by-nc-nd-4.0" and "synthetic-data" in data.tags
    assert "real OpenI reports" in text and "CC BY-NC-ND 4.0" in text
    assert "no patient data were used" not in text and "trained and evaluated on synthetic phantom images" in text


def test_a_search_whose_trials_all_tie_says_so():
    """Three trials at the same objective (a run too short to learn): the pick is a tie, and the run says so."""
    from cxr_mtclip.recipes.train import search_tie_note

    note = search_tie_note([{"trial": 0, "objective": 0.05}, {"trial": 1, "objective": 0.05},
                            {"trial": 2, "objective": 0.05}, {"trial": 3, "objective": None}])
    assert note is not None and "all 3 trials reached the same objective (0.0500)" in note and "first by tie" in note
    assert search_tie_note([{"objective": 0.05}, {"objective": 0.1}]) is None
    assert search_tie_note([{"objective": 0.05}]) is None


def test_a_card_over_a_simulated_hub_backbone_says_it_is_not_pretrained():
    """The tiny simulated Hub repos (cxr_mtclip.testing.hub) hold random weights and exist nowhere: the card must not
    link them as a base model (newcomer report 3)."""
    from huggingface_hub import ModelCard

    from cxr_mtclip.model_card import DataDescription, render_model_card
    from cxr_mtclip.testing.hub import TINY_BIOMEDCLIP_REPO

    config = CxrMtClipConfig(backbone=f"hf-hub:{TINY_BIOMEDCLIP_REPO}")
    text = str(render_model_card({}, config=config, hyperparameters={}, data=DataDescription("synthetic", "phantoms"),
                                 model_name="m", repo_id="me/m"))
    assert "random weights written by `cxr_mtclip.testing.hub`" in text and "not a pretrained model" in text
    assert f"https://huggingface.co/{TINY_BIOMEDCLIP_REPO}" not in text
    assert ModelCard(text).data.base_model is None
