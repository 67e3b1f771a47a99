import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipProcessor
from cxr_mtclip import backbone as backbone_mod
from cxr_mtclip.configuration_cxr_mtclip import BIOMEDCLIP_OPEN_CLIP_CONFIG, BIOMEDBERT_TEXT_CONFIG


def write_open_clip_folder(folder, config, state, fmt="safetensors"):
    """An open_clip hub-style folder: open_clip_config.json + weights (+ the text tower's config)."""
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config.open_clip_config, "preprocess_cfg": preprocess}))
    (folder / "text_config.json").write_text(json.dumps(config.text_config_dict))
    state = {k: v.contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        save_file(state, str(folder / "open_clip_model.safetensors"))
    else:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.fixture
def pretrained_tiny(tiny_config):
    torch.manual_seed(123)
    donor = CxrMtClipModel(tiny_config)
    return donor


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_from_backbone_loads_a_local_open_clip_folder(tmp_path, tiny_config, pretrained_tiny, tiny_tokenizer_dir, fmt):
    folder = write_open_clip_folder(tmp_path / "ckpt", tiny_config, pretrained_tiny.backbone.state_dict(), fmt)
    shutil.copytree(tiny_tokenizer_dir, folder, dirs_exist_ok=True)  # the processor reads the folder's tokenizer
    torch.manual_seed(999)  # a different seed: only loaded weights can make the towers agree
    model = CxrMtClipModel.from_backbone(folder, dropout=0.0)
    assert model.config.backbone == str(folder)
    # the folder's preprocess_cfg reaches the processor, the one place normalisation is stored
    assert CxrMtClipProcessor.from_backbone(folder).image_mean == [0.5, 0.5, 0.5]
    for key, value in pretrained_tiny.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    # the head is new (not in an open_clip checkpoint) and the freeze policy holds after loading
    assert sum(p.requires_grad for p in model.backbone.visual.trunk.blocks[0].parameters()) == 0
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_from_backbone_errors_name_the_file(tmp_path, tiny_config, pretrained_tiny):
    with pytest.raises(ValueError, match="neither an existing folder"):
        CxrMtClipModel.from_backbone(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        CxrMtClipModel.from_backbone(empty)
    state = dict(pretrained_tiny.backbone.state_dict())
    state.pop("visual.head.proj.weight")
    state["text.extra_layer.weight"] = torch.zeros(2)
    folder = write_open_clip_folder(tmp_path / "bad", tiny_config, state)
    with pytest.raises(ValueError, match=r"open_clip_model.safetensors.*missing \['visual.head.proj.weight'\].*unexpected \['text.extra_layer.weight'\]"):
        CxrMtClipModel.from_backbone(folder)


def test_pickled_code_in_a_bin_checkpoint_is_refused(tmp_path, tiny_config):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "evil"
    write_open_clip_folder(folder, tiny_config, {"logit_scale": torch.tensor(1.0)}, fmt="bin")
    torch.save({"logit_scale": Evil()}, folder / "open_clip_pytorch_model.bin", _use_new_zipfile_serialization=True)
    with pytest.raises(ValueError, match="weights-only"):
        CxrMtClipModel.from_backbone(folder)


def test_hub_id_downloads_config_and_weights_through_huggingface_hub(tmp_path, tiny_config, pretrained_tiny, monkeypatch):
    folder = write_open_clip_folder(tmp_path / "hub", tiny_config, pretrained_tiny.backbone.state_dict())
    calls = []

    def fake_download(repo_id, filename, cache_dir=None, **kwargs):
        calls.append((repo_id, filename))
        path = folder / filename
        if not path.is_file():
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(filename)
        return str(path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    (folder / "text_config.json").unlink()  # a hub repo carries no text_config.json
    # the text tower's transformers config is known inline for the named model: nothing else is fetched
    monkeypatch.setitem(backbone_mod.KNOWN_TEXT_CONFIGS, "tiny-bert", tiny_config.text_config_dict)
    model = CxrMtClipModel.from_backbone("hf-hub:someone/tiny-clip")
    assert calls == [("someone/tiny-clip", "open_clip_config.json"), ("someone/tiny-clip", "open_clip_model.safetensors")]
    for key, value in pretrained_tiny.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_hub_id_offline_fails_at_the_network_boundary():
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises((LocalEntryNotFoundError, OSError)):
        CxrMtClipModel.from_backbone("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")


def test_matches_open_clip_custom_text_clip_for_biomedclip(tmp_path):
    """Same parameter names and shapes as open_clip's own BiomedCLIP model, and the same outputs."""
    import open_clip
    from transformers import BertConfig

    text_dir = tmp_path / "biomedbert"
    BertConfig(**{k: v for k, v in BIOMEDBERT_TEXT_CONFIG.items() if k != "model_type"}).save_pretrained(text_dir)
    cfg = json.loads(json.dumps(BIOMEDCLIP_OPEN_CLIP_CONFIG))
    cfg["text_cfg"]["hf_model_name"] = str(text_dir)
    cfg["text_cfg"]["hf_model_pretrained"] = False
    torch.manual_seed(0)
    reference = open_clip.model.CustomTextCLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]).eval()
    ours = CxrMtClipModel(CxrMtClipConfig(dropout=0.0)).eval()
    ref_state, our_state = reference.state_dict(), ours.backbone.state_dict()
    assert set(ref_state) == set(our_state)
    assert all(ref_state[k].shape == our_state[k].shape for k in ref_state)
    ours.backbone.load_state_dict(ref_state)
    pixels = torch.randn(2, 3, 224, 224)
    ids = torch.randint(1000, 5000, (2, 16))
    ids[1, 10:] = 0
    with torch.no_grad():
        assert torch.allclose(ours.get_image_features(pixels, normalize=False), reference.encode_image(pixels), atol=1e-4)
        assert torch.allclose(ours.get_text_features(ids, normalize=False), reference.encode_text(ids), atol=1e-4)
