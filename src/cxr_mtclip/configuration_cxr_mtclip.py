"""Configuration of the multi-task cross-modal CXR retrieval model."""

from __future__ import annotations

import copy
from typing import Any

from transformers import PretrainedConfig

BIOMEDCLIP_HUB_ID = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDBERT_NAME = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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

_VISION_KEYS = {"timm_model_name", "timm_model_kwargs", "timm_model_pretrained", "timm_pool", "timm_proj",
                "timm_proj_bias", "timm_drop", "image_size"}
_TEXT_KEYS = {"hf_model_name", "hf_tokenizer_name", "hf_proj_type", "hf_pooler_type", "context_length",
              "hf_model_pretrained"}


class CxrMtClipConfig(PretrainedConfig):
    """Stores the backbone architecture, the fused head and the composite-loss hyper-parameters.

    `CxrMtClipConfig()` describes BiomedCLIP (ViT-B/16 + PubMedBERT, 512-d) entirely inline, so the
    architecture builds with no network; `CxrMtClipConfig.tiny()` is a millisecond-sized variant.

    Example:
        >>> config = CxrMtClipConfig.tiny(dropout=0.0)
        >>> config.embed_dim
        32
    """

    model_type = "cxr_mtclip"

    def __init__(
        self,
        backbone: str = BIOMEDCLIP_HUB_ID,
        open_clip_config: dict[str, Any] | None = None,
        text_config: dict[str, Any] | None = None,
        embed_dim: int | None = None,
        dropout: float = 0.1,
        bce_weight: float = 0.69,
        supcon_weight: float = 1.97,
        clip_weight: float = 0.46,
        supcon_temperature: float = 0.07,
        trainable_image_blocks: int = 1,
        trainable_text_blocks: int = 1,
        label_names: list[str] | tuple[str, ...] = ("normal", "abnormal"),
        gather_distributed: bool = True,
        init_logit_scale: float = 2.659260036932778,  # log(1 / 0.07), as open_clip
        image_mean: list[float] | tuple[float, ...] = CLIP_MEAN,
        image_std: list[float] | tuple[float, ...] = CLIP_STD,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - _base_config_keys()
        if unknown:
            raise ValueError(
                f"CxrMtClipConfig got unknown field(s) {sorted(unknown)}; expected the fields of "
                "CxrMtClipConfig (see its docstring) or of transformers.PretrainedConfig."
            )
        self.backbone = backbone
        self.open_clip_config = copy.deepcopy(open_clip_config or BIOMEDCLIP_OPEN_CLIP_CONFIG)
        self.text_config_dict = copy.deepcopy(text_config or BIOMEDBERT_TEXT_CONFIG)
        if embed_dim is None:
            embed_dim = self.open_clip_config.get("embed_dim", 512)
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.bce_weight = bce_weight
        self.supcon_weight = supcon_weight
        self.clip_weight = clip_weight
        self.supcon_temperature = supcon_temperature
        self.trainable_image_blocks = trainable_image_blocks
        self.trainable_text_blocks = trainable_text_blocks
        self.label_names = list(label_names)
        self.gather_distributed = gather_distributed
        self.init_logit_scale = init_logit_scale
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        kwargs.setdefault("id2label", dict(enumerate(self.label_names)))
        super().__init__(**kwargs)
        self.validate_fields()

    # `text_config` is a reserved sub-config name in transformers; keep the dict under our own key
    # but accept and emit it under the documented name.
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["text_config"] = out.pop("text_config_dict", self.text_config_dict)
        return out

    @property
    def image_size(self) -> int:
        return int(self.open_clip_config["vision_cfg"].get("image_size", 224))

    @property
    def context_length(self) -> int:
        return int(self.open_clip_config["text_cfg"].get("context_length", 256))

    def validate_fields(self) -> None:
        """Raise ValueError naming the first field whose value is out of range."""
        for name in ("bce_weight", "supcon_weight", "clip_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"CxrMtClipConfig.{name} must be a number >= 0, got {value!r}")
        if self.bce_weight + self.supcon_weight + self.clip_weight <= 0:
            raise ValueError("CxrMtClipConfig: at least one of bce/supcon/clip weights must be > 0")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"CxrMtClipConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not float(self.supcon_temperature) > 0:
            raise ValueError(f"CxrMtClipConfig.supcon_temperature must be > 0, got {self.supcon_temperature!r}")
        if not isinstance(self.embed_dim, int) or self.embed_dim <= 0:
            raise ValueError(f"CxrMtClipConfig.embed_dim must be a positive int, got {self.embed_dim!r}")
        if self.open_clip_config.get("embed_dim", self.embed_dim) != self.embed_dim:
            raise ValueError(
                f"CxrMtClipConfig.embed_dim={self.embed_dim} disagrees with "
                f"open_clip_config['embed_dim']={self.open_clip_config.get('embed_dim')}"
            )
        for name in ("trainable_image_blocks", "trainable_text_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < -1:
                raise ValueError(f"CxrMtClipConfig.{name} must be an int >= -1 (-1 = all), got {value!r}")
        if len(self.label_names) != 2 or len(set(self.label_names)) != 2:
            raise ValueError(f"CxrMtClipConfig.label_names must be two distinct names, got {self.label_names!r}")
        vision = self.open_clip_config.get("vision_cfg")
        text = self.open_clip_config.get("text_cfg")
        if not isinstance(vision, dict) or "timm_model_name" not in vision:
            raise ValueError(
                "CxrMtClipConfig.open_clip_config['vision_cfg'] must name a timm tower "
                f"('timm_model_name'); got {vision!r}"
            )
        if not isinstance(text, dict) or "hf_model_name" not in text:
            raise ValueError(
                "CxrMtClipConfig.open_clip_config['text_cfg'] must describe a Hugging Face text tower "
                f"('hf_model_name'); got {text!r}"
            )
        for section, allowed, values in (("vision_cfg", _VISION_KEYS, vision), ("text_cfg", _TEXT_KEYS, text)):
            extra = set(values) - allowed
            if extra:
                raise ValueError(
                    f"CxrMtClipConfig.open_clip_config['{section}'] has unsupported key(s) {sorted(extra)}; "
                    f"supported: {sorted(allowed)}"
                )
        if self.text_config_dict.get("model_type") != "bert":
            raise ValueError(
                "CxrMtClipConfig.text_config must be a BERT-family transformers config "
                f"(model_type 'bert'), got model_type={self.text_config_dict.get('model_type')!r}"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("CxrMtClipConfig.image_mean/image_std must be 3 values, std > 0")

    @classmethod
    def tiny(cls, **overrides: Any) -> "CxrMtClipConfig":
        """A tiny offline config (2-layer towers, width 32, 64 px images) for tests, demos and benchmarks."""
        params: dict[str, Any] = {
            "backbone": "tiny",
            "open_clip_config": TINY_OPEN_CLIP_CONFIG,
            "text_config": TINY_TEXT_CONFIG,
        }
        params.update(overrides)
        return cls(**params)


def _base_config_keys() -> set[str]:
    """Keyword names that transformers' PretrainedConfig itself understands or writes to config.json."""
    keys = set(PretrainedConfig().to_dict())
    keys |= {
        "text_config", "name_or_path", "_name_or_path", "transformers_version", "architectures", "auto_map",
        "model_type", "torch_dtype", "dtype", "id2label", "label2id", "num_labels", "return_dict",
        "output_hidden_states", "output_attentions", "attn_implementation", "_attn_implementation",
        "_commit_hash", "problem_type", "use_cache", "tie_word_embeddings", "chunk_size_feed_forward",
        "is_encoder_decoder", "tokenizer_class", "prefix", "pad_token_id", "bos_token_id", "eos_token_id",
        "sep_token_id", "decoder_start_token_id", "task_specific_params", "finetuning_task",
    }
    return keys
