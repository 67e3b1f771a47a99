"""Shared fixtures: offline always, a tiny config, a tiny tokenizer, the real OpenI copy when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_WORDS = [
    "normal", "heart", "size", "lungs", "clear", "no", "acute", "cardiopulmonary", "disease", "pleural",
    "effusion", "pneumothorax", "focal", "consolidation", "cardiomegaly", "enlarged", "left", "right",
    "lower", "upper", "lobe", "opacity", "pacemaker", "stable", "mediastinum", "within", "limits",
    "the", "is", "are", "there", "mild", "small", "large", "airspace", "atelectasis", "degenerative",
    "changes", "spine", "granuloma", "calcified", "bilateral", "pulmonary", "edema", "silhouette",
    "contours", "unremarkable", "and", "of", "with", "without", "a", "in", "at", "base", "bases",
]


def openi_path() -> Path:
    """The real OpenI copy: $CXR_MTCLIP_OPENI, else ../shared/openi beside the checkout."""
    env = os.environ.get("CXR_MTCLIP_OPENI")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "openi"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_DISABLED", "true")


@pytest.fixture
def openi_dir() -> Path:
    path = openi_path()
    if not (path / "reports.csv").is_file():
        pytest.skip(f"real OpenI copy not found at {path} (set CXR_MTCLIP_OPENI or place ../shared/openi)")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT WordPiece tokenizer with a ~100-word vocab written to a tmp folder."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,;:0123456789")
    vocab = specials + TINY_WORDS + letters + [f"##{c}" for c in letters]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True).save_pretrained(str(folder))
    return folder


@pytest.fixture
def tiny_config():
    """A fresh tiny config per test (models and Trainers write into their config, e.g. use_cache)."""
    from cxr_mtclip import CxrMtClipConfig

    return CxrMtClipConfig.tiny(dropout=0.0)


@pytest.fixture
def tiny_processor(tiny_config, tiny_tokenizer_dir):
    from cxr_mtclip import CxrMtClipProcessor

    return CxrMtClipProcessor.from_config(tiny_config, tiny_tokenizer_dir)
