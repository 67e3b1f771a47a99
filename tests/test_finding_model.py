"""Multi-label findings in the model, the composite loss and the trainer (issue 18, part 2).

The paper's behaviour is the default (no head, no extra term, the same state dict); with the config fields on,
the head and the two terms appear as named, logged parts of the one composite loss.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel
from cxr_mtclip.data import make_phantom_openi, split_openi
from cxr_mtclip.data.findings import FINDING_NAMES, finding_multi_hot
from cxr_mtclip.losses import (
    CompositeLoss,
    finding_class_weights,
    multilabel_bce_loss,
    multilabel_supervised_contrastive_loss,
    supervised_contrastive_loss,
)
from cxr_mtclip.training import CxrMtClipDataCollator, CxrMtClipTrainer, CxrMtClipTrainingArguments
from cxr_mtclip.training.trainer import parameter_groups

MULTI = dict(finding_names=FINDING_NAMES, finding_bce_weight=0.69, multilabel_supcon_weight=1.97)


def _inputs(batch: int = 6, n_findings: int = len(FINDING_NAMES), seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 1, 1, 0, 1, 1][:batch])
    findings = torch.zeros(batch, n_findings)
    findings[1, [0, 3]] = 1
    findings[2, 3] = 1
    findings[5, 1] = 1  # study 4: abnormal with no listed finding
    return {
        "pixel_values": torch.randn(batch, 3, 64, 64, generator=gen),
        "input_ids": torch.randint(5, 99, (batch, 8), generator=gen),
        "labels": labels,
        "finding_labels": findings,
        "finding_known": torch.tensor([True, True, True, True, False, True][:batch]),
    }


def test_defaults_are_the_paper_model(tiny_config):
    assert tiny_config.finding_names is None and tiny_config.num_findings == 0
    assert tiny_config.finding_bce_weight == 0.0 and tiny_config.multilabel_supcon_weight == 0.0
    torch.manual_seed(0)
    paper = CxrMtClipModel(tiny_config).eval()
    assert paper.finding_classifier is None
    assert not any(key.startswith("finding") for key in paper.state_dict())
    inputs = _inputs()
    with_findings = paper(**inputs)
    without = paper(**{k: v for k, v in inputs.items() if not k.startswith("finding")})
    assert torch.equal(with_findings.loss, without.loss)  # the finding columns are ignored when the terms are off
    assert with_findings.finding_bce_loss is None and with_findings.multilabel_supcon_loss is None
    assert with_findings.finding_logits is None
    # the head changes the state dict by exactly its two tensors; the backbone and binary head are untouched
    torch.manual_seed(0)
    multi = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, **MULTI))
    assert set(multi.state_dict()) - set(paper.state_dict()) == {"finding_classifier.weight", "finding_classifier.bias"}
    assert multi.finding_classifier.weight.shape == (len(FINDING_NAMES), tiny_config.embed_dim)


@pytest.mark.parametrize("bad, match", [
    ({"finding_bce_weight": 1.0}, "needs finding_names"),
    ({"multilabel_supcon_weight": 0.5}, "needs finding_names"),
    ({"finding_names": ["a", "a"]}, "distinct"),
    ({"finding_names": "cardiomegaly"}, "distinct non-empty"),
    ({"finding_names": ["a"], "finding_bce_weight": -1.0}, "finding_bce_weight must be"),
    ({"finding_names": ["a"], "finding_class_balance": "inverse"}, "finding_class_balance must be None or one of"),
    ({"finding_names": ["a"], "finding_class_balance_beta": 1.0}, r"\[0, 1\)"),
    ({"multilabel_supcon_temperature": 0.0}, "multilabel_supcon_temperature must be None or > 0"),
])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        CxrMtClipConfig.tiny(**bad)


def test_loss_is_the_sum_of_its_named_terms_and_the_terms_are_the_loss_functions():
    torch.manual_seed(1)
    model = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, multilabel_supcon_temperature=0.2, **MULTI)).eval()
    inputs = _inputs()
    out = model(**inputs)
    c = model.config
    total = (c.bce_weight * out.bce_loss + c.supcon_weight * out.supcon_loss + c.clip_weight * out.clip_loss
             + c.finding_bce_weight * out.finding_bce_loss + c.multilabel_supcon_weight * out.multilabel_supcon_loss)
    torch.testing.assert_close(out.loss, total)
    known = inputs["finding_known"]
    torch.testing.assert_close(out.finding_bce_loss,
                               multilabel_bce_loss(out.finding_logits, inputs["finding_labels"], known))
    targets = torch.cat([inputs["finding_labels"], inputs["labels"][:, None].float()], dim=1)  # include_label default
    torch.testing.assert_close(out.multilabel_supcon_loss,
                               multilabel_supervised_contrastive_loss(out.fused_embeds, targets, known, temperature=0.2))
    # the finding head sees the binary head's input: dropout((V + T) / 2) of the raw projections
    image = model.backbone.encode_image(inputs["pixel_values"])
    text = model.backbone.encode_text(inputs["input_ids"], None)
    torch.testing.assert_close(out.finding_logits, model.finding_classifier((image + text) / 2))
    model.config.multilabel_supcon_include_label = False  # the config is the loss's one holder
    plain = model(**inputs)
    torch.testing.assert_close(plain.multilabel_supcon_loss, multilabel_supervised_contrastive_loss(
        plain.fused_embeds, inputs["finding_labels"], known, temperature=0.2))


def test_multilabel_term_equals_binary_supcon_with_one_finding_per_study():
    """Every study carries exactly one finding: the composite's multi-label term is the binary SupCon on it."""
    gen = torch.Generator().manual_seed(3)
    fused = F.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    classes = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    one_hot = F.one_hot(classes, 3).float()
    loss = CompositeLoss(multilabel_supcon_weight=1.0, multilabel_supcon_include_label=False, supcon_temperature=0.1)
    out = loss(logits=torch.zeros(8), labels=torch.ones(8), image_embeds=fused, text_embeds=fused, fused_embeds=fused,
               logit_scale=10.0, finding_labels=one_hot)
    torch.testing.assert_close(out.multilabel_supcon_loss, supervised_contrastive_loss(fused, classes, temperature=0.1))
    assert out.finding_bce_loss is None


def test_gradients_are_finite_and_reach_the_finding_head_for_studies_without_findings():
    torch.manual_seed(2)
    model = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, **MULTI))
    inputs = _inputs()
    inputs["finding_labels"].zero_()  # nobody has a listed finding; one study unknown
    out = model(**inputs)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["finding_classifier.weight"].abs().sum() > 0
    # the head trains at the head's learning rate
    groups = {g["name"]: g for g in parameter_groups(model, 1e-5, 1e-4, 0.01)}
    assert any(p is model.finding_classifier.weight for p in groups["head"]["params"])


def test_the_multi_label_terms_need_finding_labels():
    model = CxrMtClipModel(CxrMtClipConfig.tiny(**MULTI))
    inputs = {k: v for k, v in _inputs().items() if not k.startswith("finding")}
    with pytest.raises(ValueError, match="need `finding_labels`"):
        model(**inputs)


def test_save_and_load_keep_the_head_and_outputs(tmp_path):
    torch.manual_seed(4)
    model = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, **MULTI)).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = CxrMtClipModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.finding_names == FINDING_NAMES and loaded.config.finding_bce_weight == 0.69
    inputs = _inputs()
    a, b = model(**inputs), loaded(**inputs)
    torch.testing.assert_close(a.finding_logits, b.finding_logits)
    torch.testing.assert_close(a.loss, b.loss)


def test_class_weights_are_data_derived_buffers_not_saved(tmp_path):
    model = CxrMtClipModel(CxrMtClipConfig.tiny(finding_class_balance="pos_weight", **MULTI))
    hot = torch.zeros(10, len(FINDING_NAMES))
    hot[:2, 0] = 1
    hot[:5, 1] = 1
    known = torch.ones(10, dtype=torch.bool)
    known[9] = False
    model.set_finding_class_weights(hot, known)
    expected = finding_class_weights(hot, known, "pos_weight")
    torch.testing.assert_close(model.finding_positive_weight, expected[0])
    assert float(model.finding_positive_weight[0]) == pytest.approx(7 / 2)  # 9 known: 2 positive, 7 negative
    assert "finding_positive_weight" not in model.state_dict()
    assert model.loss_fn.finding_positive_weight is model.finding_positive_weight
    inputs = _inputs()
    weighted = model(**inputs)
    torch.testing.assert_close(weighted.finding_bce_loss, multilabel_bce_loss(
        weighted.finding_logits, inputs["finding_labels"], inputs["finding_known"], *expected))


# ----------------------------------------------------------------------------------------------
# Trainer: data checks, class weights, logged terms, eval metrics
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finding_phantoms():
    data = make_phantom_openi(48, seed=5, image_size=64)
    return split_openi(data, seed=0, test_per_class=6)


def _args(tmp_path, **kwargs):
    return CxrMtClipTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16, num_train_epochs=1,
        max_steps=2, logging_steps=1, eval_strategy="no", save_strategy="no", report_to="none", use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True, **kwargs,
    )


def test_trainer_logs_the_multi_label_terms_and_evaluates_findings(finding_phantoms, tiny_processor, tmp_path):
    torch.manual_seed(0)
    model = CxrMtClipModel(CxrMtClipConfig.tiny(finding_class_balance="effective_number", **MULTI))
    trainer = CxrMtClipTrainer(model=model, args=_args(tmp_path), processing_class=tiny_processor,
                               train_dataset=finding_phantoms["train"], eval_dataset=finding_phantoms["test"])
    hot, known = finding_multi_hot(finding_phantoms["train"]["finding_labels"])
    expected = finding_class_weights(torch.from_numpy(hot), torch.from_numpy(known), "effective_number", 0.999)
    torch.testing.assert_close(model.finding_positive_weight, expected[0])
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all("finding_bce_loss" in e and "multilabel_supcon_loss" in e for e in logged)
    final = next(e for e in trainer.state.log_history if "train_loss" in e)
    assert "train_finding_bce_loss" in final and "train_multilabel_supcon_loss" in final
    metrics = trainer.evaluate()
    for key in ("eval_cross-modal/image_to_text/finding_precision@1/macro", "eval_cross-modal/text_to_image/finding_hit_rate@5/micro",
                "eval_cross-modal/image_to_text/finding_jaccard@5", "eval_classification/finding_roc_auc/macro",
                "eval_finding_bce_loss", "eval_multilabel_supcon_loss", "eval_cross-modal/image_to_text/accuracy@1"):
        assert key in metrics, key
    assert not any(key.endswith("/cardiomegaly") for key in metrics)  # per-finding values stay out of the logs


def test_paper_model_logs_only_the_paper_terms(finding_phantoms, tiny_processor, tiny_config, tmp_path):
    trainer = CxrMtClipTrainer(model=CxrMtClipModel(tiny_config), args=_args(tmp_path), processing_class=tiny_processor,
                               train_dataset=finding_phantoms["train"])
    trainer.train()
    final = next(e for e in trainer.state.log_history if "train_loss" in e)
    assert "train_bce_loss" in final and not any("finding" in key or "multilabel" in key for key in final)


def test_trainer_refuses_data_that_cannot_feed_the_terms(finding_phantoms, tiny_processor, tmp_path):
    model = CxrMtClipModel(CxrMtClipConfig.tiny(**MULTI))
    with pytest.raises(ValueError, match="no 'finding_labels' column"):
        CxrMtClipTrainer(model=model, args=_args(tmp_path), processing_class=tiny_processor,
                         train_dataset=finding_phantoms["train"].remove_columns("finding_labels"))
    other = CxrMtClipModel(CxrMtClipConfig.tiny(**{**MULTI, "finding_names": FINDING_NAMES[::-1]}))
    with pytest.raises(ValueError, match="ClassLabel names differ"):
        CxrMtClipTrainer(model=other, args=_args(tmp_path), processing_class=tiny_processor,
                         train_dataset=finding_phantoms["train"])


def test_collator_multi_hot_from_ids_names_and_unknown(tiny_processor, finding_phantoms):
    rows = [dict(finding_phantoms["train"][i]) for i in range(3)]
    rows[0]["finding_labels"] = [FINDING_NAMES.index("opacity"), FINDING_NAMES.index("nodule")]
    rows[1]["finding_labels"] = None
    rows[2]["finding_labels"] = ["cardiomegaly"]
    batch = CxrMtClipDataCollator(tiny_processor)(rows)
    assert batch["finding_known"].tolist() == [True, False, True]
    assert batch["finding_labels"].sum(dim=1).tolist() == [2.0, 0.0, 1.0]
    assert batch["finding_labels"][2, FINDING_NAMES.index("cardiomegaly")] == 1
    rows[2]["finding_labels"] = ["no_such_finding"]
    with pytest.raises(ValueError, match="'finding_labels'.*unknown finding 'no_such_finding'"):
        CxrMtClipDataCollator(tiny_processor)(rows)
