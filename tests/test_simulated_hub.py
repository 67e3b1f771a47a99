"""The simulated Hub is faithful: huggingface_hub's own cache layout and lookups, the published file names,
bytes and formats (config, pickle with its legacy buffer, tokenizer files, vocabulary sizes)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from cxr_mtclip.testing import hub as sim

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = REPO_ROOT.parent / "shared" / "biomedclip"
TEXTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion with basilar atelectasis.",
    "Degenerative changes of the thoracic spine. Calcified granuloma in the right upper lobe.",
] * 5


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory):
    return sim.write_simulated_hub(tmp_path_factory.mktemp("hub"), variant="tiny", texts=TEXTS, clip=True)


def test_cache_layout_is_huggingface_hubs_own(tiny_hub):
    """blobs named by git sha1 (sha256 for LFS weights), relative snapshot symlinks, refs/main, .no_exist; and
    huggingface_hub's own scanner and offline lookups read it."""
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, scan_cache_dir, try_to_load_from_cache

    storage = tiny_hub.cache_dir / f"models--{tiny_hub.biomedclip_repo.replace('/', '--')}"
    commit = (storage / "refs" / "main").read_text()
    assert len(commit) == 40 and tiny_hub.biomedclip_snapshot == storage / "snapshots" / commit
    for link in tiny_hub.biomedclip_snapshot.iterdir():
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        data = link.read_bytes()
        blob = Path(os.path.realpath(link)).name
        if link.name.endswith(".bin"):
            assert blob == hashlib.sha256(data).hexdigest()
        else:
            assert blob == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert sorted(p.name for p in tiny_hub.biomedclip_snapshot.iterdir()) == sorted(
        ["README.md", "open_clip_config.json", "open_clip_pytorch_model.bin", "special_tokens_map.json",
         "tokenizer.json", "tokenizer_config.json", "vocab.txt"])

    report = scan_cache_dir(tiny_hub.cache_dir)
    assert not report.warnings
    repos = {repo.repo_id: repo for repo in report.repos}
    assert {tiny_hub.biomedclip_repo, tiny_hub.text_repo, sim.TINY_CLIP_REPO} <= set(repos)
    revision = next(iter(repos[tiny_hub.biomedclip_repo].revisions))
    assert revision.commit_hash == commit and revision.refs == frozenset({"main"})

    # offline: huggingface_hub resolves main -> commit -> symlink, and knows the safetensors file does not exist
    path = hf_hub_download(tiny_hub.biomedclip_repo, "open_clip_config.json", cache_dir=tiny_hub.cache_dir)
    assert Path(path) == tiny_hub.biomedclip_snapshot / "open_clip_config.json"
    assert try_to_load_from_cache(tiny_hub.biomedclip_repo, "open_clip_model.safetensors",
                                  cache_dir=tiny_hub.cache_dir) is _CACHED_NO_EXIST


def test_full_size_config_is_the_published_file_byte_for_byte():
    current = sim.biomedclip_open_clip_config_json("full")
    older = sim.biomedclip_open_clip_config_json("full", older_revision=True)
    assert len(current) == 707 and len(older) == 696 and not current.endswith(b"\n")
    assert b'"proj": "mlp"' in older and b'"pooler_type"' in older and b"hf_proj_type" not in older
    if (PUBLISHED / "open_clip_config.json").is_file():
        assert current == (PUBLISHED / "open_clip_config.json").read_bytes()
        assert older == (PUBLISHED / "open_clip_config.older-revision.json").read_bytes()
    tiny = json.loads(sim.biomedclip_open_clip_config_json("tiny"))
    assert set(tiny["model_cfg"]["text_cfg"]) == set(json.loads(current)["model_cfg"]["text_cfg"])
    assert tiny["model_cfg"]["vision_cfg"]["timm_model_name"] == "test_vit"


def test_text_tower_config_with_and_without_model_type():
    old = json.loads(sim.biomedbert_config_json("full", model_type=False))
    new = json.loads(sim.biomedbert_config_json("full", model_type=True))
    assert len(sim.biomedbert_config_json("full", model_type=False)) == 313  # the 2020 revision's size
    assert "model_type" not in old and new["model_type"] == "bert" and new["architectures"] == ["BertForMaskedLM"]
    for config in (old, new):
        assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
                config["intermediate_size"], config["max_position_embeddings"], config["type_vocab_size"]) == (
                    30522, 768, 12, 12, 3072, 512, 2)


def test_tokenizer_files_have_the_published_fields_and_sizes():
    vocab = sim.build_wordpiece_vocab(TEXTS, sim.PUBLISHED_VOCAB_ENTRIES)
    assert len(vocab) == 28895 == len(set(vocab)) and vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert sim.build_wordpiece_vocab(TEXTS, 500) == sim.build_wordpiece_vocab(TEXTS, 500)  # deterministic
    files = sim.tokenizer_files(vocab)
    assert len(files["tokenizer_config.json"]) == 394 and len(files["special_tokens_map.json"]) == 125
    config = json.loads(files["tokenizer_config.json"])
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert config["model_max_length"] == 1000000000000000019884624838656
    tokenizer = json.loads(files["tokenizer.json"])
    assert tokenizer["truncation"]["max_length"] == 256 and tokenizer["padding"]["strategy"] == {"Fixed": 256}
    assert tokenizer["normalizer"]["type"] == "BertNormalizer" and tokenizer["normalizer"]["lowercase"] is True
    assert tokenizer["model"]["type"] == "WordPiece" and len(tokenizer["model"]["vocab"]) == 28895
    assert [t["content"] for t in tokenizer["added_tokens"]] == vocab[:5]
    assert files["vocab.txt"].decode().splitlines() == vocab


def test_checkpoint_is_a_torch_pickle_with_open_clips_keys_and_the_legacy_buffer(tiny_hub):
    import open_clip

    path = tiny_hub.biomedclip_snapshot / "open_clip_pytorch_model.bin"
    with open(path, "rb") as handle:
        assert handle.read(2) == b"PK"  # torch.save's zip container (a pickle inside), not safetensors
    state = torch.load(path, map_location="cpu", weights_only=True)
    position_ids = state["text.transformer.embeddings.position_ids"]
    assert position_ids.dtype == torch.int64 and torch.equal(position_ids, torch.arange(512).unsqueeze(0))
    with sim.hub_cache(tiny_hub.cache_dir):
        reference = open_clip.create_model(tiny_hub.biomedclip_id, pretrained_text=False, load_weights=False)
    assert set(state) - set(reference.state_dict()) == {"text.transformer.embeddings.position_ids"}
    assert set(reference.state_dict()) <= set(state)
    assert not any(k.startswith("text.transformer.pooler.") for k in state)  # cls_last_hidden_state_pooler: no pooler


def test_only_simulated_repos_are_reported_as_simulated(tiny_hub, tmp_path):
    assert sim.is_simulated_repo(tiny_hub.biomedclip_id, tiny_hub.cache_dir)
    assert sim.is_simulated_repo(sim.TINY_CLIP_REPO, tiny_hub.cache_dir)
    sim.write_cached_repo(tmp_path, "someone/real-model", {"README.md": b"# a model card\n", "config.json": b"{}"})
    assert not sim.is_simulated_repo("someone/real-model", tmp_path)
    assert not sim.is_simulated_repo(tiny_hub.biomedclip_repo, tmp_path / "empty")


def test_hub_cache_restores_the_environment_and_constants(tmp_path):
    from huggingface_hub import constants

    before = (constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_CACHE"))
    with sim.hub_cache(tmp_path):
        assert constants.HF_HUB_CACHE == str(tmp_path.resolve()) and constants.HF_HUB_OFFLINE is True
        assert os.environ["HF_HUB_CACHE"] == str(tmp_path.resolve())
    assert (constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_CACHE")) == before


def test_a_written_hub_is_described_again_from_the_cache_alone(tiny_hub):
    again = sim.load_simulated_hub(tiny_hub.cache_dir)
    for key in ("variant", "biomedclip_repo", "text_repo", "biomedclip_snapshot", "text_snapshot", "vocab_size",
                "texts_source", "clip_model", "clip_pretrained"):
        assert getattr(again, key) == getattr(tiny_hub, key), key
    assert again.image_size == 160
    with pytest.raises(FileNotFoundError, match="no simulated BiomedCLIP repo"):
        sim.load_simulated_hub(tiny_hub.cache_dir / "nowhere")
