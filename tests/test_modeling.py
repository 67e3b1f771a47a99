import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipOutput
from cxr_mtclip.losses import clip_loss, supervised_contrastive_loss


def make_batch(batch_size=8, seed=0, image_size=64, vocab=99):
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
    input_ids = torch.randint(5, vocab, (batch_size, 12), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::2, 8:] = 0
    input_ids[attention_mask == 0] = 0
    labels = torch.tensor([0, 1, 1, 0, 1, 1, 1, 0][:batch_size])
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return CxrMtClipModel(tiny_config)


def test_forward_follows_algorithm_1(model):
    batch = make_batch()
    out = model(**batch)
    assert isinstance(out, CxrMtClipOutput)
    image_raw = model.backbone.encode_image(batch["pixel_values"])
    text_raw = model.backbone.encode_text(batch["input_ids"], batch["attention_mask"])
    v, t = F.normalize(image_raw, dim=-1), F.normalize(text_raw, dim=-1)
    # classifier on dropout((V + T) / 2) of the projected embeddings (dropout is 0 in the tiny fixture)
    expected_logits = model.classifier((image_raw + text_raw) / 2).squeeze(-1)
    assert torch.allclose(out.logits, expected_logits, atol=1e-6)
    assert torch.allclose(out.image_embeds, v, atol=1e-6) and torch.allclose(out.text_embeds, t, atol=1e-6)
    fused = F.normalize((v + t) / 2, dim=-1)
    assert torch.allclose(out.fused_embeds, fused, atol=1e-6)
    assert torch.allclose(out.fused_embeds.norm(dim=-1), torch.ones(8), atol=1e-5)
    scale = model.backbone.logit_scale.exp()
    assert torch.allclose(out.logits_per_image, scale * v @ t.T, atol=1e-5)
    assert torch.allclose(out.logits_per_text, out.logits_per_image.T)
    # SupCon on the fused embeddings, CLIP on V and T, BCE on the logit
    labels = batch["labels"]
    assert torch.allclose(out.supcon_loss, supervised_contrastive_loss(fused, labels, 0.07), atol=1e-6)
    assert torch.allclose(out.clip_loss, clip_loss(v, t, scale), atol=1e-6)
    assert torch.allclose(out.bce_loss, F.binary_cross_entropy_with_logits(expected_logits, labels.float()), atol=1e-6)


def test_loss_is_exactly_the_weighted_sum(model):
    out = model(**make_batch())
    c = model.config
    weighted = c.bce_weight * out.bce_loss + c.supcon_weight * out.supcon_loss + c.clip_weight * out.clip_loss
    assert out.loss.item() == weighted.item()


def test_loss_weights_change_the_loss(tiny_config):
    batch = make_batch()
    torch.manual_seed(0)
    a = CxrMtClipModel(tiny_config)(**batch)
    torch.manual_seed(0)
    b = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, supcon_weight=0.0))(**batch)
    assert torch.allclose(a.bce_loss, b.bce_loss) and not torch.allclose(a.loss, b.loss)


def test_gradients_reach_exactly_the_trainable_parameters(model):
    out = model(**make_batch())
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == trainable
    # the policy: last block + final norm/projection of each tower and the head; the CLIP temperature is a
    # hyper-parameter in the paper, so the logit scale stays frozen unless config.train_logit_scale
    assert "classifier.weight" in trainable and "backbone.logit_scale" not in trainable
    assert any(n.startswith("backbone.visual.trunk.blocks.1.") for n in trainable)
    assert not any(n.startswith("backbone.visual.trunk.blocks.0.") for n in trainable)
    assert any(n.startswith("backbone.text.transformer.encoder.layer.1.") for n in trainable)
    assert not any(n.startswith("backbone.text.transformer.encoder.layer.0.") for n in trainable)
    assert not any("embeddings" in n or "patch_embed" in n for n in trainable)
    assert {"backbone.visual.head.proj.weight", "backbone.visual.trunk.norm.weight", "backbone.text.proj.0.weight"} <= trainable


def test_image_only_and_text_only_calls(model):
    batch = make_batch()
    image_only = model(pixel_values=batch["pixel_values"])
    text_only = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    both = model(**{k: v for k, v in batch.items() if k != "labels"})
    assert image_only.text_embeds is None and image_only.loss is None and image_only.fused_embeds is None
    assert torch.allclose(image_only.image_embeds, both.image_embeds, atol=1e-6)
    assert torch.allclose(text_only.text_embeds, both.text_embeds, atol=1e-6)
    assert torch.allclose(model.get_fused_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]),
                          both.fused_embeds, atol=1e-6)
    with pytest.raises(ValueError, match="both pixel_values and input_ids"):
        model(pixel_values=batch["pixel_values"], labels=batch["labels"])
    with pytest.raises(ValueError, match="pixel_values, input_ids"):
        model()


def test_padding_does_not_change_text_embeddings(model):
    model.eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    padded = torch.tensor([[2, 10, 11, 12, 3, 0, 0, 0]])
    a = model.get_text_features(ids, torch.ones_like(ids))
    b = model.get_text_features(padded, (padded != 0).long())
    assert torch.allclose(a, b, atol=1e-5)


def test_bad_labels_are_rejected(model):
    batch = make_batch()
    batch["labels"] = torch.tensor([0, 1, 2, 0, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="label"):
        model(**batch)


def test_full_biomedclip_architecture_builds_offline_with_the_paper_trainable_fraction():
    model = CxrMtClipModel(CxrMtClipConfig())
    d, mlp = 768, 3072
    block = 4 * d * d + 2 * d * mlp + 9 * d + mlp  # attention + MLP + two LayerNorms (ViT block == BERT layer)
    vision_extra = 2 * d + d * 512  # final LayerNorm + linear projection
    text_extra = d * 640 + 640 * 512  # open_clip's MLP projection (768 -> 640 -> 512)
    head = 512 + 1
    expected_trainable = 2 * block + vision_extra + text_extra + head  # the logit scale is frozen (paper: tau fixed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable == expected_trainable == 15_390_209
    assert 195_000_000 < total < 197_000_000
    report = model.print_trainable_parameters()
    assert "15,390,209" in report and "7.8560" in report
    with torch.device("meta"):  # no weights needed, only which parameters train
        with_scale = CxrMtClipModel(CxrMtClipConfig(train_logit_scale=True))
    assert sum(p.numel() for p in with_scale.parameters() if p.requires_grad) == expected_trainable + 1
    assert len(model.backbone.visual.trunk.blocks) == 12 and len(model.backbone.text.transformer.encoder.layer) == 12


def test_save_and_load_round_trip_in_safetensors(model, tmp_path):
    model.eval()
    batch = make_batch()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    for loaded in (CxrMtClipModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, CxrMtClipModel)
        loaded.eval()
        with torch.no_grad():
            a, b = model(**batch), loaded(**batch)
        assert torch.equal(a.fused_embeds, b.fused_embeds) and torch.equal(a.loss, b.loss)
        assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
            n for n, p in model.named_parameters() if p.requires_grad
        }
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CxrMtClipConfig)


def test_loading_a_config_with_an_unknown_backbone_is_a_clear_error(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["open_clip_config"]["vision_cfg"]["timm_model_name"] = "no_such_vit_model"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no_such_vit_model"):
        CxrMtClipModel.from_pretrained(tmp_path)
    config["open_clip_config"]["vision_cfg"]["timm_model_name"] = "vit_base_patch16_224"
    config["text_config"]["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="BERT-family"):
        CxrMtClipModel.from_pretrained(tmp_path)


def test_head_init_touches_only_the_head(tiny_config):
    torch.manual_seed(0)
    model = CxrMtClipModel(tiny_config)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.classifier.weight.data.fill_(5.0)
    model._init_weights(model.classifier)
    for module in model.backbone.modules():
        model._init_weights(module)
    assert model.classifier.weight.abs().max() < 1.0
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


def test_fully_trainable_towers_get_gradients_in_every_block():
    torch.manual_seed(0)
    model = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, trainable_image_blocks=-1, trainable_text_blocks=-1))
    assert model.backbone.visual.first_trainable_block() == 0 and model.backbone.text.first_trainable_block() == 0
    model(**make_batch()).loss.backward()
    assert model.backbone.visual.trunk.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.backbone.text.transformer.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_frozen_trunk_runs_without_autograd_and_matches_the_plain_forward(model):
    pixels = make_batch()["pixel_values"]
    hidden, start = model.backbone.visual.frozen_trunk(pixels)
    assert start == 1 and not hidden.requires_grad
    visual = model.backbone.visual
    plain = visual.project(visual.run_blocks(visual.embed_tokens(pixels)))
    assert torch.allclose(visual(pixels), plain, atol=1e-6)


def test_frozen_trunk_has_no_dropout_in_train_mode():
    torch.manual_seed(0)
    config = CxrMtClipConfig.tiny(dropout=0.0)
    config.text_config_dict["hidden_dropout_prob"] = 0.5
    model = CxrMtClipModel(config).train()
    text = model.backbone.text
    ids = torch.randint(5, 99, (2, 10))
    mask = torch.ones_like(ids)
    a, _ = text.frozen_trunk(ids, mask)
    b, _ = text.frozen_trunk(ids, mask)
    assert torch.equal(a, b)  # deterministic although dropout is 0.5 and the model is training
    assert text.transformer.embeddings.training and text.transformer.encoder.layer[0].training  # modes restored
