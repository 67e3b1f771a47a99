import numpy as np
import pytest
import torch
from PIL import Image

from cxr_mtclip import CxrMtClipProcessor
from cxr_mtclip.processing_cxr_mtclip import CxrMtClipImageTransform, to_rgb


def test_transform_matches_open_clip_eval_transform():
    from open_clip.transform import image_transform

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8))
    ours = CxrMtClipImageTransform(224)(image)
    reference = image_transform(224, is_train=False)(image)
    assert ours.shape == (3, 224, 224)
    assert torch.allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "I", "F"])
def test_any_mode_becomes_rgb(mode):
    array = (np.arange(64 * 48).reshape(48, 64) % 251).astype(np.uint8)
    if mode in ("I;16", "I"):
        image = Image.fromarray((array.astype(np.int32) * 200).astype(np.uint16 if mode == "I;16" else np.int32))
        image = image.convert(mode) if image.mode != mode else image
    elif mode == "F":
        image = Image.fromarray(array.astype(np.float32) / 7.0)
    else:
        image = Image.fromarray(array, mode="L").convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (64, 48)
    out = np.asarray(rgb)
    assert (out[..., 0] == out[..., 1]).all()
    # contrast is preserved (monotone mapping of the grey levels), not flattened
    assert out[..., 0].std() > 20


def test_sixteen_bit_is_scaled_not_clipped():
    array = np.linspace(0, 4095, 32 * 32).reshape(32, 32).astype(np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(array)))
    assert rgb.min() == 0 and rgb.max() == 255


def test_processor_batches_and_pads_to_longest(tiny_processor):
    images = [Image.new("L", (80, 70), 128), Image.new("RGB", (64, 64), (10, 20, 30))]
    batch = tiny_processor(images=images, text=["no acute disease", "heart size normal and lungs clear without effusion"],
                           labels=[0, 1])
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["input_ids"].shape[0] == 2
    assert batch["input_ids"].shape[1] < tiny_processor.max_length
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["labels"].tolist() == [0, 1]


def test_processor_truncates_to_context_length(tiny_processor):
    batch = tiny_processor(text=["normal " * 500])
    assert batch["input_ids"].shape[1] == tiny_processor.max_length


def test_processor_rejects_empty_report_and_image(tiny_processor):
    with pytest.raises(ValueError, match="report 1"):
        tiny_processor(text=["fine", "   "])
    with pytest.raises(ValueError, match="image 0"):
        tiny_processor(images=[Image.new("L", (0, 0))])


def test_save_and_load_round_trip(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    loaded = CxrMtClipProcessor.from_pretrained(tmp_path)
    image = Image.new("L", (90, 64), 200)
    a = tiny_processor(images=[image], text=["pleural effusion left"])
    b = loaded(images=[image], text=["pleural effusion left"])
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert loaded.max_length == tiny_processor.max_length


def test_from_pretrained_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        CxrMtClipProcessor.from_pretrained(tmp_path)


def test_tiny_tokenizer_knows_its_words(tiny_processor):
    ids = tiny_processor(text=["heart size normal"])["input_ids"][0].tolist()
    unk = tiny_processor.tokenizer.unk_token_id
    assert len(ids) == 5 and unk not in ids


def test_build_wordpiece_tokenizer_learns_the_corpus(tmp_path):
    from cxr_mtclip import build_wordpiece_tokenizer
    from cxr_mtclip.processing_cxr_mtclip import CxrMtClipProcessor

    corpus = ["the heart is enlarged", "small left pleural effusion", "lungs are clear"] * 5
    tokenizer = build_wordpiece_tokenizer(corpus, tmp_path / "tok", vocab_size=200)
    assert 30 < len(tokenizer) <= 200
    ids = tokenizer("left pleural effusion")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    reloaded = CxrMtClipProcessor(tokenizer).tokenizer.__class__.from_pretrained(str(tmp_path / "tok"))
    assert reloaded("left pleural effusion")["input_ids"] == ids


def test_build_wordpiece_tokenizer_replaces_an_older_one(tmp_path):
    from cxr_mtclip import build_wordpiece_tokenizer

    build_wordpiece_tokenizer(["alpha beta"], tmp_path / "tok", vocab_size=60)
    tokenizer = build_wordpiece_tokenizer(["cardiomegaly effusion"] * 3, tmp_path / "tok", vocab_size=200)
    assert tokenizer.unk_token_id not in tokenizer("cardiomegaly effusion")["input_ids"]
