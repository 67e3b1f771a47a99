"""The registry of named architectures: built-ins, run-time registration, and every place a name is accepted."""

import pytest
import torch

from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel
from cxr_mtclip.registry import (
    BIOMEDCLIP_HUB_ID,
    TINY_OPEN_CLIP_CONFIG,
    TINY_TEXT_CONFIG,
    get_architecture,
    list_configs,
    register_config,
)
from cxr_mtclip.training import build_model


def test_built_in_architectures():
    assert {"biomedclip", "tiny", "demo"} <= set(list_configs())
    default, biomedclip = CxrMtClipConfig(), CxrMtClipConfig.from_registry("biomedclip")
    assert biomedclip.backbone == default.backbone == BIOMEDCLIP_HUB_ID
    assert biomedclip.open_clip_config == default.open_clip_config and biomedclip.embed_dim == 512
    assert CxrMtClipConfig.tiny(dropout=0.0).to_dict() == CxrMtClipConfig.from_registry("tiny", dropout=0.0).to_dict()
    demo = CxrMtClipConfig.from_registry("demo", vocab_size=321)
    assert demo.backbone == "demo" and demo.text_config_dict["vocab_size"] == 321
    assert demo.open_clip_config["text_cfg"]["hf_pooler_type"] == "mean_pooler"
    assert (demo.trainable_image_blocks, demo.trainable_text_blocks, demo.clip_weight) == (-1, -1, 1.0)
    # the registry hands out copies: editing a config leaves the architecture as registered
    demo.open_clip_config["embed_dim"] = 7
    assert get_architecture("demo").open_clip_config["embed_dim"] == 32


def test_register_an_architecture_at_run_time():
    text = {**TINY_TEXT_CONFIG, "num_hidden_layers": 1}
    arch = register_config("test-one-layer", TINY_OPEN_CLIP_CONFIG, text, exist_ok=True, dropout=0.0,
                           trainable_text_blocks=-1)
    assert "test-one-layer" in list_configs() and arch.pretrained is None
    model = build_model(backbone="test-one-layer", seed=0)
    assert isinstance(model, CxrMtClipModel) and len(model.backbone.text.transformer.encoder.layer) == 1
    assert model.config.backbone == "test-one-layer" and model.config.trainable_text_blocks == -1
    assert build_model(backbone="test-one-layer", clip_weight=2.0).config.clip_weight == 2.0
    with pytest.raises(ValueError, match="already registered"):
        register_config("test-one-layer", TINY_OPEN_CLIP_CONFIG, text)
    with pytest.raises(ValueError, match=r"no architecture named 'nope'; registered: \[.*'tiny'"):
        CxrMtClipConfig.from_registry("nope")
    with pytest.raises(ValueError, match="hf-hub"):
        register_config("hf-hub:someone/model", TINY_OPEN_CLIP_CONFIG, TINY_TEXT_CONFIG)


def test_a_registered_name_with_weights_loads_them(tmp_path, tiny_config, tiny_tokenizer_dir):
    from test_backbone import write_open_clip_folder

    from cxr_mtclip.hub import load_model_and_processor

    torch.manual_seed(5)
    donor = CxrMtClipModel(tiny_config)
    folder = write_open_clip_folder(tmp_path / "weights", tiny_config, donor.backbone.state_dict())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (tiny_tokenizer_dir / name).is_file():
            (folder / name).write_bytes((tiny_tokenizer_dir / name).read_bytes())
    register_config("test-pretrained", tiny_config.open_clip_config, tiny_config.text_config_dict,
                    pretrained=str(folder), exist_ok=True, dropout=0.0)
    for model in (build_model(backbone="test-pretrained"), load_model_and_processor("test-pretrained")[0]):
        assert model.config.backbone == str(folder)  # from_backbone on the registered weights
        for key, value in donor.backbone.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[key], value), key


def test_random_init_names_load_with_a_trained_tokenizer(tmp_path):
    from cxr_mtclip.hub import load_model_and_processor

    texts = ["no acute disease", "small left pleural effusion", "heart size normal"] * 4
    model, processor = load_model_and_processor("demo", tokenizer_texts=texts, work_dir=tmp_path, seed=3)
    again, _ = load_model_and_processor("demo", tokenizer_texts=texts, work_dir=tmp_path, seed=3)
    assert model.config.backbone == "demo" and processor.image_size == get_architecture("demo").image_size
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="model 'tiny' needs a tokenizer"):
        load_model_and_processor("tiny")
