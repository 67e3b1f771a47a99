"""CxrMtClipModel/CxrMtClipProcessor agree with open_clip itself on the simulated BiomedCLIP repo, offline.

Reference: `open_clip.create_model_from_pretrained(hub id)`, its preprocess and `open_clip.get_tokenizer(hub id)`,
run against the same simulated cache. Compared: every weight, pixel tensors (real OpenI images of several aspect
ratios; synthetic tall, wide, 16-bit, RGBA and palette images), token ids (all real reports, and dirty text),
normalised image and text embeddings (atol 1e-5).
"""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_mtclip import CxrMtClipModel, CxrMtClipProcessor
from cxr_mtclip.image_processing_cxr_mtclip import CxrMtClipImageProcessor, to_rgb


def image_transform(size: int, mean, std):
    """The package's image processor as a one-image function, like open_clip's preprocess."""
    processor = CxrMtClipImageProcessor(size, image_mean=mean, image_std=std)
    return lambda image: processor(image)["pixel_values"][0]
from cxr_mtclip.testing import hub as sim

ATOL = 1e-5
DIRTY_TEXTS = [
    "Heart size &gt; normal. Effusion &lt; 1 cm &amp; stable.",  # HTML entities, as in two real OpenI reports
    "cafÃ© au lait spots; no acute disease",  # mojibake ftfy repairs
    "  Lungs\tclear.\n\nNo   pneumothorax.  ",  # whitespace runs
    "Calcified granuloma &amp;gt; 5 mm",  # double-escaped
]


def _reports(openi_dir: Path) -> list[str]:
    from cxr_mtclip.data import join_report

    with open(openi_dir / "reports.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r for r in (join_report(row["findings"], row["impression"]) for row in rows) if r.strip()]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The tiny simulated hub, or the full-size one named by $CXR_MTCLIP_SIMULATED_HUB (scripts/simulated_hub.py)."""
    return sim.simulated_hub_for_tests(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def reference(hub):
    """open_clip's own model, preprocess and tokenizer for the simulated hub id (offline, from the cache)."""
    import open_clip

    with sim.hub_cache(hub.cache_dir):
        model, preprocess = open_clip.create_model_from_pretrained(hub.biomedclip_id)
        tokenizer = open_clip.get_tokenizer(hub.biomedclip_id)
    return model.eval(), preprocess, tokenizer


@pytest.fixture(scope="module")
def ours(hub):
    """Our model and processor, with the cache passed as cache_dir (not as the default cache)."""
    model = CxrMtClipModel.from_backbone(hub.biomedclip_id, cache_dir=hub.cache_dir, dropout=0.0).eval()
    processor = CxrMtClipProcessor.from_backbone(hub.biomedclip_id, cache_dir=hub.cache_dir)
    return model, processor


def odd_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (301, 97), dtype=np.uint8)
    images = {
        "tall L 97x301": Image.fromarray(grey, mode="L"),
        "wide RGB 389x120": Image.fromarray(rng.integers(0, 256, (120, 389, 3), dtype=np.uint8)),
        "odd RGB 225x224": Image.fromarray(rng.integers(0, 256, (224, 225, 3), dtype=np.uint8)),
        "16-bit grey 250x181": Image.fromarray(rng.integers(0, 4096, (181, 250), dtype=np.uint16)),
        "RGBA 200x333": Image.fromarray(rng.integers(0, 256, (333, 200, 4), dtype=np.uint8), mode="RGBA"),
        "palette 171x260": Image.fromarray(rng.integers(0, 256, (260, 171, 3), dtype=np.uint8)).convert("P"),
    }
    return images


# -- weights ----------------------------------------------------------------------------------------------------


def test_every_weight_equals_open_clips(reference, ours):
    ref_state, our_state = reference[0].state_dict(), ours[0].backbone.state_dict()
    assert set(ref_state) == set(our_state)
    for key, value in ref_state.items():
        assert torch.equal(value, our_state[key]), key


# -- pixels -----------------------------------------------------------------------------------------------------


@pytest.mark.openi
def test_pixels_of_real_openi_images_equal_open_clips(reference, ours, openi_dir):
    """The real images (512x419, 512x529, 512x613, square) through open_clip's preprocess and ours: identical."""
    import open_clip

    paths = sorted(glob.glob(str(openi_dir / "**" / "*.png"), recursive=True))
    images = [Image.open(p) for p in paths]
    assert len({im.size for im in images}) >= 3
    ours_pixels = ours[1](images=images)["pixel_values"]
    reference_pixels = torch.stack([reference[1](im) for im in images])
    torch.testing.assert_close(ours_pixels, reference_pixels, atol=ATOL, rtol=0)
    # at BiomedCLIP's published 224 px, with open_clip's own eval transform for its preprocess_cfg
    published = open_clip.image_transform(224, is_train=False, mean=sim.CLIP_MEAN, std=sim.CLIP_STD)
    ours_224 = image_transform(224, sim.CLIP_MEAN, sim.CLIP_STD)
    for path, image in zip(paths, images):
        torch.testing.assert_close(ours_224(image), published(image), atol=ATOL, rtol=0, msg=path)


@pytest.mark.parametrize("size", [160, 224])
def test_pixels_of_odd_images_equal_open_clips(size):
    """Tall, wide and off-by-one sizes: identical to open_clip; other modes: identical after the package's documented
    mode conversion (`to_rgb`: 16-bit scaled, alpha onto black), which open_clip leaves to the caller."""
    import open_clip

    reference = open_clip.image_transform(size, is_train=False, mean=sim.CLIP_MEAN, std=sim.CLIP_STD)
    ours = image_transform(size, sim.CLIP_MEAN, sim.CLIP_STD)
    for name, image in odd_images().items():
        expected = reference(image if image.mode in ("L", "RGB") else to_rgb(image))
        torch.testing.assert_close(ours(image), expected, atol=ATOL, rtol=0, msg=name)


# -- text -------------------------------------------------------------------------------------------------------


def _same_ids(reference_tokenizer, processor, texts):
    ref = reference_tokenizer(texts)  # padded to the context length (256)
    got = processor(text=texts)
    width = got["input_ids"].shape[1]
    assert torch.equal(ref[:, :width], got["input_ids"]) and not ref[:, width:].any()
    assert torch.equal(got["attention_mask"], (got["input_ids"] != 0).long())


@pytest.mark.openi
def test_token_ids_of_all_real_reports_equal_open_clips(reference, ours, openi_dir):
    reports = _reports(openi_dir)
    assert len(reports) == 3826
    assert sum("&gt;" in r or "&lt;" in r for r in reports) >= 1  # the HTML entities the cleaning must undo
    for start in range(0, len(reports), 1000):
        _same_ids(reference[2], ours[1], reports[start:start + 1000])


def test_token_ids_of_dirty_text_equal_open_clips(reference, ours):
    """HTML entities, mojibake and whitespace runs are cleaned as open_clip's HFTokenizer cleans them."""
    _same_ids(reference[2], ours[1], DIRTY_TEXTS)
    ids = ours[1](text=["cafÃ© au lait"])["input_ids"][0].tolist()
    assert ids == reference[2](["café au lait"])[0][: len(ids)].tolist()  # repaired before tokenizing
    assert ours[1](text=["a &gt; b"])["input_ids"].tolist() == ours[1](text=["a > b"])["input_ids"].tolist()


def test_the_tokenizer_comes_from_the_backbone_repo_itself(hub, ours):
    """The BiomedCLIP repo's own tokenizer files are read; the text tower repo is not needed for tokenizing."""
    tokenizer = ours[1].tokenizer
    assert Path(tokenizer.name_or_path) == hub.biomedclip_snapshot
    assert len(tokenizer) == hub.vocab_size


# -- embeddings -------------------------------------------------------------------------------------------------


def test_normalised_embeddings_equal_open_clips(reference, ours, openi_path_or_none):
    model, preprocess, tokenizer = reference
    our_model, processor = ours
    images = list(odd_images().values())
    texts = list(DIRTY_TEXTS)
    if openi_path_or_none is not None:
        images += [Image.open(p) for p in sorted(glob.glob(str(openi_path_or_none / "images" / "*.png")))]
        texts += _reports(openi_path_or_none)[:60]
    batch = processor(images=images, text=texts)
    with torch.no_grad():
        ref_image = model.encode_image(torch.stack([preprocess(to_rgb(im)) for im in images]), normalize=True)
        ref_text = model.encode_text(tokenizer(texts), normalize=True)
        got_image = our_model.get_image_features(batch["pixel_values"])
        got_text = our_model.get_text_features(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(got_image, ref_image, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_text, ref_text, atol=ATOL, rtol=0)


@pytest.fixture
def openi_path_or_none():
    from conftest import openi_path

    path = openi_path()
    return path if (path / "reports.csv").is_file() else None


# -- the repo's other published states --------------------------------------------------------------------------


def test_older_revision_and_a_text_config_without_model_type_load_the_same_model(tmp_path):
    """The older BiomedCLIP config (`proj`/`pooler_type`) and a BiomedBERT config.json without `model_type`
    (its revisions before Sept. 2021) give the same model and processor as the current files."""
    current = sim.write_simulated_hub(tmp_path / "current", variant="tiny")
    model = CxrMtClipModel.from_backbone(current.biomedclip_id, cache_dir=current.cache_dir, dropout=0.0)
    processor = CxrMtClipProcessor.from_backbone(current.biomedclip_id, cache_dir=current.cache_dir)
    for kwargs in ({"older_revision": True}, {"text_model_type": False}):
        cache = tmp_path / next(iter(kwargs))
        variant = sim.write_simulated_hub(cache, variant="tiny", **kwargs)
        if kwargs.get("older_revision"):
            assert b'"pooler_type"' in (variant.biomedclip_snapshot / "open_clip_config.json").read_bytes()
        else:
            assert "model_type" not in json.loads((variant.text_snapshot / "config.json").read_text())
        other = CxrMtClipModel.from_backbone(variant.biomedclip_id, cache_dir=cache, dropout=0.0)
        other_processor = CxrMtClipProcessor.from_backbone(variant.biomedclip_id, cache_dir=cache)
        assert other.config.open_clip_config == model.config.open_clip_config
        assert other.config.text_config_dict == model.config.text_config_dict
        for key, value in model.backbone.state_dict().items():
            assert torch.equal(other.backbone.state_dict()[key], value), (kwargs, key)
        assert other_processor(text=DIRTY_TEXTS)["input_ids"].tolist() == processor(text=DIRTY_TEXTS)["input_ids"].tolist()
