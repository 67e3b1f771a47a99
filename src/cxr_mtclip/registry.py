"""Named architectures, as open_clip's factory keeps them: ``biomedclip`` (default), ``tiny``, ``demo``, and yours.

An architecture is the open_clip model config of the towers, the transformers config of the text tower, its image
normalisation, the open_clip weights that load into it (None: random init) and any other `CxrMtClipConfig`
fields it fixes (loss weights, freeze policy). `CxrMtClipConfig.from_registry(name)` builds its config;
``--backbone NAME`` (training) and ``--model NAME=NAME`` (evaluation) accept every registered name.

Imports nothing from `cxr_mtclip`. The registry is the package's one piece of global mutable state, on purpose:
`register_config` adds a local architecture at run time, as ``open_clip.add_model_config`` does.

Example:
    >>> from cxr_mtclip import CxrMtClipConfig
    >>> from cxr_mtclip.registry import list_configs, register_config
    >>> "tiny" in list_configs()
    True
    >>> arch = register_config("tiny-wide", TINY_OPEN_CLIP_CONFIG, {**TINY_TEXT_CONFIG, "hidden_size": 64}, exist_ok=True)
    >>> CxrMtClipConfig.from_registry("tiny-wide").text_config_dict["hidden_size"]
    64
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = [
    "BIOMEDBERT_NAME",
    "BIOMEDBERT_TEXT_CONFIG",
    "BIOMEDCLIP_HUB_ID",
    "BIOMEDCLIP_OPEN_CLIP_CONFIG",
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_ARCHITECTURE",
    "DEMO_LOSS_WEIGHTS",
    "TINY_OPEN_CLIP_CONFIG",
    "TINY_TEXT_CONFIG",
    "Architecture",
    "get_architecture",
    "is_registered",
    "list_configs",
    "register_config",
]

BIOMEDCLIP_HUB_ID = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDBERT_NAME = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
CLIP_MEAN = tuple(OPENAI_CLIP_MEAN)  # BiomedCLIP's preprocess_cfg uses OpenAI CLIP's normalisation
CLIP_STD = tuple(OPENAI_CLIP_STD)
DEFAULT_ARCHITECTURE = "biomedclip"

# BiomedCLIP's open_clip model config (the `model_cfg` of its open_clip_config.json).
BIOMEDCLIP_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {
        "timm_model_name": "vit_base_patch16_224",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 224,
    },
    "text_cfg": {
        "hf_model_name": BIOMEDBERT_NAME,
        "hf_tokenizer_name": BIOMEDBERT_NAME,
        "hf_proj_type": "mlp",
        "hf_pooler_type": "cls_last_hidden_state_pooler",
        "context_length": 256,
    },
}

# BiomedBERT (PubMedBERT, uncased, abstracts) is a BERT-base: the transformers defaults.
BIOMEDBERT_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {
        "timm_model_name": "vit_base_patch16_224",
        "timm_model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 64, "patch_size": 16},
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 64,
    },
    "text_cfg": {
        "hf_model_name": "tiny-bert",
        "hf_tokenizer_name": None,
        "hf_proj_type": "mlp",
        "hf_pooler_type": "cls_last_hidden_state_pooler",
        "context_length": 64,
    },
}

TINY_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 1000,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

# The demo trains random towers. The paper's weights (losses.PAPER_LOSS_WEIGHTS) assume a pretrained backbone: on
# towers that start from random weights, SupCon at 1.97 pulls every study of a class onto one point before the
# CLIP term has aligned anything, and instance retrieval never takes off. The demo therefore weights CLIP up.
DEMO_LOSS_WEIGHTS = {"bce_weight": 0.2, "supcon_weight": 0.3, "clip_weight": 1.0}


@dataclass(frozen=True)
class Architecture:
    """One registered architecture; `config_kwargs` turns it into `CxrMtClipConfig` keyword arguments."""

    name: str
    open_clip_config: dict[str, Any]
    text_config: dict[str, Any]
    pretrained: str | None = None
    """open_clip weights that load into it (an ``hf-hub:`` id or a folder); None: random init (tests, demos)."""
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    config_overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def image_size(self) -> int:
        return int(self.open_clip_config["vision_cfg"].get("image_size", 224))

    def config_kwargs(self, *, vocab_size: int | None = None, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of `CxrMtClipConfig` (deep copies); `vocab_size` resizes the text tower's vocabulary."""
        text_config = copy.deepcopy(self.text_config)
        if vocab_size is not None:
            if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
                raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
            text_config["vocab_size"] = vocab_size
        params: dict[str, Any] = {
            "backbone": self.pretrained or self.name,
            "open_clip_config": copy.deepcopy(self.open_clip_config),
            "text_config": text_config,
            **copy.deepcopy(self.config_overrides),
        }
        params.update(overrides)
        return params


def _demo_open_clip_config() -> dict[str, Any]:
    config = copy.deepcopy(TINY_OPEN_CLIP_CONFIG)
    # Mean pooling gives an untrained text tower report-dependent outputs; the CLS token of a random BERT
    # barely depends on its input, which slows the start of training.
    config["text_cfg"]["hf_pooler_type"] = "mean_pooler"
    return config


_REGISTRY: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "biomedclip", BIOMEDCLIP_OPEN_CLIP_CONFIG, BIOMEDBERT_TEXT_CONFIG, pretrained=BIOMEDCLIP_HUB_ID,
            description="BiomedCLIP: ViT-B/16 image tower and PubMedBERT text tower, 512-d, open_clip weights from the Hub",
        ),
        Architecture(
            "tiny", TINY_OPEN_CLIP_CONFIG, TINY_TEXT_CONFIG,
            description="a tiny randomly initialised test model (2-layer ViT and BERT towers, width 32, 64 px), "
            "not BiomedCLIP",
        ),
        Architecture(
            "demo", _demo_open_clip_config(), TINY_TEXT_CONFIG,
            config_overrides={"dropout": 0.1, "trainable_image_blocks": -1, "trainable_text_blocks": -1,
                              **DEMO_LOSS_WEIGHTS},
            description="the offline demo's tiny architecture (2-layer towers, width 32, 64 px, mean-pooled text, "
            "every block trainable, random init), not BiomedCLIP",
        ),
    )
}


def register_config(
    name: str,
    open_clip_config: dict[str, Any],
    text_config: dict[str, Any],
    *,
    pretrained: str | None = None,
    image_mean: tuple[float, ...] = CLIP_MEAN,
    image_std: tuple[float, ...] = CLIP_STD,
    description: str = "",
    exist_ok: bool = False,
    **config_overrides: Any,
) -> Architecture:
    """Register an architecture under `name` (ValueError if taken, unless `exist_ok`); returns it.

    `config_overrides` are other `CxrMtClipConfig` fields the architecture fixes (e.g. ``dropout=0.0``);
    `CxrMtClipConfig.from_registry` validates everything when it builds the config.

    Example:
        >>> register_config("tiny-frozen", TINY_OPEN_CLIP_CONFIG, TINY_TEXT_CONFIG, trainable_image_blocks=0,
        ...                 exist_ok=True).name
        'tiny-frozen'
    """
    if not isinstance(name, str) or not name.strip() or name.startswith("hf-hub:"):
        raise ValueError(f"architecture name must be a non-empty string that is not an hf-hub: id, got {name!r}")
    if not isinstance(open_clip_config, dict) or not isinstance(text_config, dict):
        raise ValueError("open_clip_config and text_config must be dicts (open_clip's model_cfg, a transformers config)")
    if name in _REGISTRY and not exist_ok:
        raise ValueError(f"architecture {name!r} is already registered (pass exist_ok=True to replace it)")
    arch = Architecture(
        name, copy.deepcopy(open_clip_config), copy.deepcopy(text_config), pretrained=pretrained,
        image_mean=tuple(image_mean), image_std=tuple(image_std), config_overrides=dict(config_overrides),
        description=description,
    )
    _REGISTRY[name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    """The architecture registered as `name`; ValueError listing the known names otherwise.

    Example:
        >>> get_architecture("tiny").image_size
        64
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"no architecture named {name!r}; registered: {list_configs()}") from None


def is_registered(name: Any) -> bool:
    """Whether `name` is a registered architecture name."""
    return isinstance(name, str) and name in _REGISTRY


def list_configs() -> list[str]:
    """Registered architecture names, sorted.

    Example:
        >>> [name for name in list_configs() if name in ("biomedclip", "demo", "tiny")]
        ['biomedclip', 'demo', 'tiny']
    """
    return sorted(_REGISTRY)
