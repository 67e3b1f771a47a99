import numpy as np
import pytest
import torch
from PIL import Image

from cxr_mtclip import CxrMtClipProcessor
from cxr_mtclip.image_processing_cxr_mtclip import CxrMtClipImageProcessor, to_rgb


def test_transform_matches_open_clip_eval_transform():
    from open_clip.transform import image_transform

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8))
    ours = CxrMtClipImageProcessor(224).transform(image)
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
    reloaded = CxrMtClipProcessor(tokenizer=tokenizer).tokenizer.__class__.from_pretrained(str(tmp_path / "tok"))
    assert reloaded("left pleural effusion")["input_ids"] == ids


def test_build_wordpiece_tokenizer_replaces_an_older_one(tmp_path):
    from cxr_mtclip import build_wordpiece_tokenizer

    build_wordpiece_tokenizer(["alpha beta"], tmp_path / "tok", vocab_size=60)
    tokenizer = build_wordpiece_tokenizer(["cardiomegaly effusion"] * 3, tmp_path / "tok", vocab_size=200)
    assert tokenizer.unk_token_id not in tokenizer("cardiomegaly effusion")["input_ids"]


# ------------------------------------------------------------------------------------------------
# open_clip's eval transform and tokenizer, on the same inputs
# ------------------------------------------------------------------------------------------------


def _open_clip_eval(size):
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.transform import image_transform

    return image_transform(size, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)


def _test_image(mode, width, height, seed=0):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 4096, (height, width), dtype=np.uint16))
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), mode="RGBA")
    if mode == "P":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert("P")
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# (161, 301): the long side becomes 224 * 301 / 161 = 418.8 -> torchvision truncates to 418, round() gave 419
@pytest.mark.parametrize("width, height", [(161, 301), (301, 161), (225, 224), (224, 225), (97, 503), (640, 227)])
@pytest.mark.parametrize("mode", ["RGB", "I;16", "RGBA", "P"])
def test_image_processor_matches_open_clip_on_odd_shapes_and_modes(mode, width, height):
    image = _test_image(mode, width, height)
    ours = CxrMtClipImageProcessor(224).transform(image)
    # open_clip converts with convert("RGB") after resizing; ours converts first with to_rgb (16-bit greys scaled,
    # alpha on black): on the same RGB input every step after the conversion must agree
    reference = _open_clip_eval(224)(to_rgb(image))
    assert ours.shape == reference.shape == (3, 224, 224)
    assert torch.allclose(ours, reference, atol=1e-5)
    if mode == "RGB":
        assert torch.allclose(ours, _open_clip_eval(224)(image), atol=1e-5)


def test_processor_tokens_equal_open_clip_hf_tokenizer(tiny_processor, tiny_tokenizer_dir):
    from open_clip.tokenizer import HFTokenizer

    reports = [
        "Heart size &gt; normal; no effusion.",
        "&lt;5 mm nodule in the left lower lobe &amp;amp; stable",
        "The caf\u00c3\u00a9 heart is normal",  # mojibake of "café"
        "  lungs   are\n\n clear\t\twithout   effusion  ",
    ]
    reference = HFTokenizer(str(tiny_tokenizer_dir), context_length=tiny_processor.max_length)(reports)
    ours = tiny_processor(text=reports)["input_ids"]
    width = ours.shape[1]
    assert torch.equal(ours, reference[:, :width])
    assert (reference[:, width:] == tiny_processor.tokenizer.pad_token_id).all()
    # without the cleaning the ids differ: the test sees what the cleaning does
    raw = tiny_processor.tokenizer(reports, padding="max_length", truncation=True,
                                   max_length=tiny_processor.max_length, return_tensors="pt")["input_ids"]
    assert not torch.equal(raw, reference)


# ------------------------------------------------------------------------------------------------
# Hugging Face conventions: Auto classes, saved folders old and new
# ------------------------------------------------------------------------------------------------


def test_saved_folder_round_trips_through_every_auto_class(tiny_config, tiny_processor, tmp_path):
    import json

    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel

    model = CxrMtClipModel(tiny_config).eval()
    model.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is CxrMtClipProcessor and type(image_processor) is CxrMtClipImageProcessor
    assert type(AutoConfig.from_pretrained(tmp_path)) is CxrMtClipConfig
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is CxrMtClipModel

    image = Image.new("L", (90, 70), 120)
    expected = tiny_processor(images=[image], text=["heart size normal"])
    batch = processor(images=[image], text=["heart size normal"])
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])
    assert torch.equal(image_processor(image)["pixel_values"], expected["pixel_values"])
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).fused_embeds, model(**expected).fused_embeds, atol=1e-6)
    # normalisation is stored once, in the processor's file, not in config.json
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["image_processor"]["image_mean"] == tiny_processor.image_mean
    assert "image_mean" not in json.loads((tmp_path / "config.json").read_text())


def test_folder_saved_the_old_way_still_loads(tiny_config, tiny_tokenizer_dir, tmp_path):
    """Before the ProcessorMixin: a flat processor_config.json, and image_mean/image_std in config.json."""
    import json
    import shutil

    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel

    CxrMtClipModel(tiny_config).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (tiny_tokenizer_dir / name).is_file():
            shutil.copy(tiny_tokenizer_dir / name, tmp_path / name)
    (tmp_path / "processor_config.json").write_text(json.dumps({
        "processor_class": "CxrMtClipProcessor", "image_size": 64, "image_mean": [0.5] * 3, "image_std": [0.25] * 3,
        "max_length": 48,
    }))
    for loader in (CxrMtClipProcessor.from_pretrained, AutoProcessor.from_pretrained):
        processor = loader(tmp_path)
        assert type(processor) is CxrMtClipProcessor
        assert (processor.image_size, processor.image_mean, processor.image_std, processor.max_length) == (
            64, [0.5] * 3, [0.25] * 3, 48)
        white = processor(images=[Image.new("RGB", (64, 64), (255, 255, 255))])["pixel_values"]
        assert torch.allclose(white, torch.full_like(white, (1 - 0.5) / 0.25))
    assert type(AutoConfig.from_pretrained(tmp_path)) is CxrMtClipConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is CxrMtClipModel
    with pytest.raises(OSError):  # an old folder has no image processor file: transformers says so
        AutoImageProcessor.from_pretrained(tmp_path)
    # saving it again writes the new layout, which every Auto class reads
    CxrMtClipProcessor.from_pretrained(tmp_path).save_pretrained(tmp_path)
    assert AutoImageProcessor.from_pretrained(tmp_path).image_mean == [0.5] * 3


def test_image_processor_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"size must be a positive int"):
        CxrMtClipImageProcessor(0)
    with pytest.raises(ValueError, match=r"image_std must be 3 numbers > 0"):
        CxrMtClipImageProcessor(64, image_std=[0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['image_sise'\]"):
        CxrMtClipImageProcessor(64, image_sise=32)
    processor = CxrMtClipImageProcessor(size=64, crop_size={"height": 48, "width": 32})
    assert processor(Image.new("L", (100, 80)))["pixel_values"].shape == (1, 3, 48, 32)
