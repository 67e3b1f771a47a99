import json

import pytest

from cxr_mtclip import CxrMtClipConfig
from cxr_mtclip.configuration_cxr_mtclip import BIOMEDCLIP_HUB_ID


def test_defaults_follow_the_paper():
    config = CxrMtClipConfig()
    assert config.backbone == BIOMEDCLIP_HUB_ID
    assert (config.bce_weight, config.supcon_weight, config.clip_weight) == (0.69, 1.97, 0.46)
    assert config.embed_dim == 512 and config.image_size == 224 and config.context_length == 256
    assert config.trainable_image_blocks == 1 and config.trainable_text_blocks == 1
    assert config.label_names == ["normal", "abnormal"]
    assert config.text_config_dict["num_hidden_layers"] == 12
    assert config.open_clip_config["vision_cfg"]["timm_model_name"] == "vit_base_patch16_224"


def test_tiny_is_small_and_overridable():
    config = CxrMtClipConfig.tiny(dropout=0.0, clip_weight=1.0)
    assert config.text_config_dict["num_hidden_layers"] == 2
    assert config.open_clip_config["vision_cfg"]["timm_model_kwargs"]["depth"] == 2
    assert config.embed_dim <= 64 and config.dropout == 0.0 and config.clip_weight == 1.0


def test_round_trip_keeps_the_inline_architecture(tmp_path):
    config = CxrMtClipConfig.tiny(supcon_temperature=0.2)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "cxr_mtclip"
    assert saved["text_config"]["hidden_size"] == 32
    loaded = CxrMtClipConfig.from_pretrained(tmp_path)
    assert loaded.open_clip_config == config.open_clip_config
    assert loaded.text_config_dict == config.text_config_dict
    assert loaded.supcon_temperature == 0.2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("bce_weight", -1.0, "bce_weight"),
        ("dropout", 1.5, "dropout"),
        ("supcon_temperature", 0.0, "supcon_temperature"),
        ("trainable_image_blocks", -3, "trainable_image_blocks"),
        ("label_names", ["normal"], "label_names"),
        ("embed_dim", 64, "embed_dim"),
    ],
)
def test_out_of_range_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        CxrMtClipConfig.tiny(**{field: value})


def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError, match="unknown field.*lambda_2"):
        CxrMtClipConfig(lambda_2=1.0)


def test_unsupported_tower_keys_are_rejected():
    bad = CxrMtClipConfig.tiny().open_clip_config
    bad["vision_cfg"]["timm_depth"] = 3
    with pytest.raises(ValueError, match="timm_depth"):
        CxrMtClipConfig.tiny(open_clip_config=bad)
