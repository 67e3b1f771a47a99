"""Frozen-trunk feature cache: same losses and gradients as the uncached path, stale caches refused, atomic writes."""

import json
import pickle

import numpy as np
import pytest
import torch

from cxr_mtclip import CxrMtClipConfig, CxrMtClipImageProcessor, CxrMtClipModel, CxrMtClipProcessor
from cxr_mtclip.training import feature_cache as fc
from cxr_mtclip.training.cached_model import CachedCxrMtClipModel, forward_from_cache
from cxr_mtclip.training.feature_cache import (
    CachedFeatureCollator,
    build_feature_cache,
    cache_fingerprint,
    load_feature_cache,
    load_or_build_feature_cache,
)
from cxr_mtclip.data import make_phantom_openi

N_STUDIES = 10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is several times faster than two on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def studies():
    """Synthetic studies at the tiny image size; reports cut to 1-3 sentences so their token counts differ (< 64)."""
    studies = make_phantom_openi(N_STUDIES, seed=3, image_size=64)
    return studies.map(lambda row, i: {"report": ". ".join(row["report"].split(". ")[: 1 + i % 3])}, with_indices=True)


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return CxrMtClipModel(tiny_config)


def trainable_grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def uncached(model, processor, studies, rows):
    """The normal path, frozen blocks in eval mode as in the cache (a no-op here: the tiny towers have no dropout)."""
    batch = processor(images=studies[rows]["image"], text=studies[rows]["report"], labels=studies[rows]["label"])
    out = model(**batch)
    return out, trainable_grads(model, out.loss)


def cached(model, cache, rows, **kwargs):
    batch = CachedFeatureCollator()([cache[i] for i in rows])
    out = forward_from_cache(model, **batch, **kwargs)
    return out, trainable_grads(model, out.loss)


def assert_close_grads(expected, got, rtol, atol_scale):
    assert expected.keys() == got.keys()
    for name in expected:
        # atol relative to the gradient's scale: some gradients are exactly zero in theory (e.g. a key bias,
        # which shifts every attention logit of a query alike) and differ only by rounding noise.
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=max(atol_scale * scale, 1e-8), msg=name)


@pytest.mark.parametrize("first_token_only", [False, True])
def test_float32_cache_gives_the_uncached_losses_and_gradients(tmp_path, model, tiny_processor, studies, first_token_only):
    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", dtype=torch.float32,
                                batch_size=4, show_progress=False)
    assert len(cache) == N_STUDIES
    rows = [7, 0, 3, 9, 4, 1]  # spans several build batches, reports of different lengths
    assert len(set(cache.text_lengths[rows].tolist())) > 1
    expected, expected_grads = uncached(model, tiny_processor, studies, rows)
    got, got_grads = cached(model, cache, rows, first_token_only=first_token_only)
    for field in ("loss", "bce_loss", "supcon_loss", "clip_loss", "logits", "image_embeds", "text_embeds", "fused_embeds"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), rtol=1e-5, atol=1e-6, msg=field)
    assert_close_grads(expected_grads, got_grads, rtol=1e-4, atol_scale=1e-4)
    # the gradients reach the last block of both towers (the test is not vacuous)
    assert expected_grads["backbone.visual.trunk.blocks.1.mlp.fc1.weight"].abs().sum() > 0
    assert expected_grads["backbone.text.transformer.encoder.layer.1.output.dense.weight"].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_cache_is_close_to_the_uncached_path(tmp_path, model, tiny_processor, studies, dtype):
    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", dtype=dtype, show_progress=False)
    row = cache[2]
    assert row["image_hidden"].dtype == dtype and row["text_hidden"].dtype == dtype
    stored = np.load(tmp_path / "cache" / fc.IMAGE_FILE, mmap_mode="r")
    assert stored.dtype == (np.float16 if dtype == torch.float16 else np.uint16)
    rows = list(range(N_STUDIES))
    expected, expected_grads = uncached(model, tiny_processor, studies, rows)
    got, got_grads = cached(model, cache, rows)
    tol = 2e-3 if dtype == torch.float16 else 2e-2
    torch.testing.assert_close(got.loss, expected.loss, rtol=tol, atol=tol)
    torch.testing.assert_close(got.fused_embeds, expected.fused_embeds, rtol=5 * tol, atol=5 * tol)
    assert_close_grads(expected_grads, got_grads, rtol=0.1, atol_scale=0.1 if dtype == torch.float16 else 0.2)


def test_half_precision_values_are_the_rounded_float32_values(tmp_path, model, tiny_processor, studies):
    full = build_feature_cache(model, tiny_processor, studies, tmp_path / "f32", dtype=torch.float32, show_progress=False)
    bf16 = build_feature_cache(model, tiny_processor, studies, tmp_path / "bf16", dtype="bfloat16", show_progress=False)
    for i in (0, 5):
        assert torch.equal(bf16[i]["image_hidden"], full[i]["image_hidden"].to(torch.bfloat16))
        assert torch.equal(bf16[i]["text_hidden"], full[i]["text_hidden"].to(torch.bfloat16))


def test_manifest_and_ragged_report_storage(tmp_path, model, tiny_processor, studies):
    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", batch_size=3, show_progress=False)
    manifest = json.loads((tmp_path / "cache" / fc.MANIFEST_NAME).read_text())
    lengths = [int(m.sum()) for m in tiny_processor(text=studies["report"])["attention_mask"]]
    assert manifest["num_rows"] == N_STUDIES
    assert manifest["fingerprint"] == cache_fingerprint(model, tiny_processor)
    assert manifest["image"]["start_block"] == 1 and manifest["text"]["start_block"] == 1
    assert manifest["image"]["shape"] == [N_STUDIES, 17, 32]  # 4x4 patches + class token, width 32
    assert manifest["text"]["num_tokens"] == sum(lengths)  # real tokens only, no padding stored
    assert manifest["dataset_fingerprint"] == studies._fingerprint
    assert cache.text_lengths.tolist() == lengths
    assert cache.labels.tolist() == studies["label"]
    batch = CachedFeatureCollator(pad_to_multiple_of=8)([cache[i] for i in (0, 1, 2)])
    width = -(-max(lengths[:3]) // 8) * 8
    assert batch["text_hidden"].shape == (3, width, 32)
    assert batch["attention_mask"].sum(1).tolist() == lengths[:3]
    assert batch["text_hidden"][batch["attention_mask"] == 0].abs().sum() == 0
    with pytest.raises(IndexError, match="out of range"):
        cache[N_STUDIES]


def test_a_stale_cache_is_refused(tmp_path, model, tiny_processor, tiny_config, tiny_tokenizer_dir, studies):
    folder = tmp_path / "cache"
    build_feature_cache(model, tiny_processor, studies, folder, show_progress=False)
    with torch.no_grad():
        model.backbone.visual.trunk.blocks[0].attn.qkv.weight[0, 0] += 1e-3  # a frozen block
    with pytest.raises(ValueError, match=r"manifest\.json: stale feature cache.*changed: frozen_weights"):
        load_feature_cache(folder, model, tiny_processor)
    with torch.no_grad():
        model.backbone.visual.trunk.blocks[0].attn.qkv.weight[0, 0] -= 1e-3
    load_feature_cache(folder, model, tiny_processor)  # back to the weights it was built with

    resized = CxrMtClipProcessor(CxrMtClipImageProcessor(48, image_mean=tiny_processor.image_mean,
                                                         image_std=tiny_processor.image_std),
                                 tiny_processor.tokenizer, max_length=tiny_processor.max_length)
    with pytest.raises(ValueError, match=r"manifest\.json: stale.*changed: preprocessing"):
        load_feature_cache(folder, model, resized)

    with torch.no_grad():
        model.backbone.text.transformer.embeddings.word_embeddings.weight[5] += 0.1
    with pytest.raises(ValueError, match="stale"):
        load_or_build_feature_cache(model, tiny_processor, studies, folder, show_progress=False)
    rebuilt = load_or_build_feature_cache(model, tiny_processor, studies, folder, rebuild_stale=True, show_progress=False)
    assert rebuilt.fingerprint == cache_fingerprint(model, tiny_processor)


def test_training_the_last_blocks_keeps_the_fingerprint(tmp_path, model, tiny_processor, studies):
    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", show_progress=False)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5)
    assert cache_fingerprint(model, tiny_processor) == cache.fingerprint
    load_feature_cache(tmp_path / "cache", model, tiny_processor)


def test_the_freeze_policy_is_part_of_the_fingerprint(tiny_tokenizer_dir):
    torch.manual_seed(0)
    one = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0))
    torch.manual_seed(0)
    two = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, trainable_image_blocks=2))
    processor = CxrMtClipProcessor.from_config(one.config, tiny_tokenizer_dir)
    assert cache_fingerprint(one, processor) != cache_fingerprint(two, processor)


def test_nothing_to_cache_when_the_stem_trains(tmp_path, tiny_tokenizer_dir, studies):
    model = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, trainable_image_blocks=-1))
    processor = CxrMtClipProcessor.from_config(model.config, tiny_tokenizer_dir)
    with pytest.raises(ValueError, match=r"nothing frozen to cache: backbone\.visual\.trunk\."):
        build_feature_cache(model, processor, studies, tmp_path / "cache", show_progress=False)
    assert not (tmp_path / "cache").exists()


def test_an_error_midway_leaves_no_partial_cache(tmp_path, model, tiny_processor, studies, monkeypatch):
    folder = tmp_path / "cache"
    old = build_feature_cache(model, tiny_processor, studies, folder, show_progress=False)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    text = model.backbone.text
    real = text.frozen_trunk
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(text, "frozen_trunk", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        build_feature_cache(model, tiny_processor, studies, folder, batch_size=4, show_progress=False)
    assert len(calls) == 2  # it failed after writing the first batch
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the old cache is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no temp folder left
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        build_feature_cache(model, tiny_processor, studies, tmp_path / "new", batch_size=4, show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert len(old) == N_STUDIES


def test_build_validates_rows_before_the_expensive_pass(tmp_path, model, tiny_processor, studies):
    bad = studies.map(lambda row, i: {"report": "   " if i == 6 else row["report"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"rows 0\.\.9, column 'report': report 6 is empty"):
        build_feature_cache(model, tiny_processor, bad, tmp_path / "cache", show_progress=False)
    with pytest.raises(ValueError, match=r"no column\(s\) \['label'\]"):
        build_feature_cache(model, tiny_processor, studies.remove_columns("label"), tmp_path / "c", show_progress=False)
    with pytest.raises(ValueError, match="dtype"):
        build_feature_cache(model, tiny_processor, studies, tmp_path / "c", dtype=torch.int8, show_progress=False)
    assert not any(tmp_path.iterdir())


def test_the_cache_pickles_without_its_arrays(tmp_path, model, tiny_processor, studies):
    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", show_progress=False)
    cache[0]  # opens the memory maps
    blob = pickle.dumps(cache)
    assert len(blob) < 20_000  # DataLoader workers get a handle, not the arrays
    clone = pickle.loads(blob)
    assert torch.equal(clone[4]["image_hidden"], cache[4]["image_hidden"])


def test_a_few_steps_from_the_cache_lower_the_loss(tmp_path, model, tiny_processor, studies):
    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", show_progress=False)
    loader = torch.utils.data.DataLoader(cache, batch_size=N_STUDIES, collate_fn=CachedFeatureCollator())
    batch = next(iter(loader))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    frozen_before = model.backbone.visual.trunk.blocks[0].mlp.fc1.weight.clone()
    losses = []
    for _ in range(15):
        loss = forward_from_cache(model, **batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < losses[0] - 0.2, losses
    assert torch.equal(model.backbone.visual.trunk.blocks[0].mlp.fc1.weight, frozen_before)
    load_feature_cache(tmp_path / "cache", model, tiny_processor)  # still valid after training


def test_transformers_trainer_trains_from_the_cache_and_saves_the_model(tmp_path, model, tiny_processor, studies):
    from transformers import Trainer, TrainingArguments

    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", show_progress=False)
    wrapper = CachedCxrMtClipModel(model, cache=cache)
    assert wrapper.state_dict().keys() == model.state_dict().keys()
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=5, max_steps=6, learning_rate=3e-3,
        dataloader_num_workers=1, dataloader_pin_memory=False, report_to=[], save_strategy="no",
        logging_steps=1, use_cpu=True, seed=0,
    )
    before = model.backbone.text.proj[0].weight.clone()
    trainer = Trainer(model=wrapper, args=args, train_dataset=cache, data_collator=CachedFeatureCollator())
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and min(losses[-2:]) < max(losses[:2])
    assert not torch.equal(model.backbone.text.proj[0].weight, before)  # the shared parameters trained
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = CxrMtClipModel.from_pretrained(str(tmp_path / "saved"))
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["architectures"] == ["CxrMtClipModel"]
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_a_cache_for_another_freeze_policy_is_refused_by_the_wrapper(tmp_path, model, tiny_processor, studies):
    cache = build_feature_cache(model, tiny_processor, studies, tmp_path / "cache", show_progress=False)
    other = CxrMtClipModel(CxrMtClipConfig.tiny(dropout=0.0, trainable_text_blocks=2))
    with pytest.raises(ValueError, match="cached states enter block"):
        CachedCxrMtClipModel(other, cache=cache)


def test_cxr_mtclip_trainer_trains_and_evaluates_from_prepared_caches(tmp_path, model, tiny_processor, studies):
    from cxr_mtclip.training import CxrMtClipTrainer, CxrMtClipTrainingArguments, prepare_cached_training

    train, validation = studies.select(range(6)), studies.select(range(6, N_STUDIES))
    cached = prepare_cached_training(model, tiny_processor, train, tmp_path / "cache", eval_dataset=validation,
                                     show_progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["eval", "train"]
    args = CxrMtClipTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=3, per_device_eval_batch_size=4, max_steps=4,
        eval_strategy="no", save_strategy="no", report_to=[], use_cpu=True, dataloader_pin_memory=False, seed=0,
    )
    trainer = CxrMtClipTrainer(model=cached.model, args=args, train_dataset=cached.train_dataset,
                               eval_dataset=cached.eval_dataset, data_collator=cached.data_collator,
                               processing_class=tiny_processor)
    trainer.train()
    metrics = trainer.evaluate()
    # the same validation studies through the uncached model give the same loss (frozen part in eval mode)
    model.eval()
    batch = tiny_processor(images=validation["image"], text=validation["report"], labels=validation["label"])
    with torch.no_grad():
        expected = model(**batch).loss.item()
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-3)
    assert "eval_cross-modal/image_to_text/accuracy@1" in metrics
    # reusing the folder loads the caches (a second build would rewrite them)
    stamp = (tmp_path / "cache" / "train" / fc.MANIFEST_NAME).stat().st_mtime_ns
    again = prepare_cached_training(model, tiny_processor, train, tmp_path / "cache", eval_dataset=validation)
    assert (tmp_path / "cache" / "train" / fc.MANIFEST_NAME).stat().st_mtime_ns == stamp
    assert again.train_dataset.fingerprint == cached.train_dataset.fingerprint
