"""Configuration of the multi-task cross-modal CXR retrieval model."""

from __future__ import annotations

import copy
from typing import Any

from transformers import PretrainedConfig

from .losses import DEFAULT_SUPCON_TEMPERATURE, PAPER_LOSS_WEIGHTS
from .registry import (  # re-exported: the configs' long-standing import path
    BIOMEDBERT_NAME,
    BIOMEDBERT_TEXT_CONFIG,
    BIOMEDCLIP_HUB_ID,
    BIOMEDCLIP_OPEN_CLIP_CONFIG,
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_ARCHITECTURE,
    TINY_OPEN_CLIP_CONFIG,
    TINY_TEXT_CONFIG,
    get_architecture,
)

__all__ = [
    "BIOMEDBERT_NAME",
    "BIOMEDBERT_TEXT_CONFIG",
    "BIOMEDCLIP_HUB_ID",
    "BIOMEDCLIP_OPEN_CLIP_CONFIG",
    "CLIP_MEAN",
    "CLIP_STD",
    "TINY_OPEN_CLIP_CONFIG",
    "TINY_TEXT_CONFIG",
    "CxrMtClipConfig",
]

# Fields that configs written before the image processor existed carry; preprocessing now lives in the processor.
_LEGACY_PREPROCESSING_KEYS = ("image_mean", "image_std")

_VISION_KEYS = {"timm_model_name", "timm_model_kwargs", "timm_model_pretrained", "timm_pool", "timm_proj",
                "timm_proj_bias", "timm_drop", "image_size"}
_TEXT_KEYS = {"hf_model_name", "hf_tokenizer_name", "hf_proj_type", "hf_pooler_type", "context_length",
              "hf_model_pretrained"}


class CxrMtClipConfig(PretrainedConfig):
    """Stores the backbone architecture, the fused head and the composite-loss hyper-parameters.

    `CxrMtClipConfig()` describes BiomedCLIP (ViT-B/16 + PubMedBERT, 512-d) entirely inline, so the
    architecture builds with no network; `CxrMtClipConfig.from_registry(name)` builds any architecture of
    `cxr_mtclip.registry` (``tiny`` is a millisecond-sized variant). Image normalisation is not stored here:
    it belongs to the processor (`CxrMtClipImageProcessor`).

    The config is the one holder of the loss hyper-parameters (`bce_weight`, `supcon_weight`, `clip_weight`,
    `supcon_temperature`, `gather_distributed`): the model builds its loss from them at every call, so a value
    changed after construction is the value trained with, saved and reported.

    CLIP temperature: the paper treats it as a hyper-parameter, so by default (`train_logit_scale=False`) the
    logit scale stays frozen at its pretrained value (BiomedCLIP's checkpoint, or `init_logit_scale` for a
    randomly initialised architecture). With `train_logit_scale=True` it trains at the head's learning rate and
    `CxrMtClipTrainer` clamps it to [0, ln 100] after every optimiser step, as open_clip does.

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
        bce_weight: float = PAPER_LOSS_WEIGHTS["bce_weight"],
        supcon_weight: float = PAPER_LOSS_WEIGHTS["supcon_weight"],
        clip_weight: float = PAPER_LOSS_WEIGHTS["clip_weight"],
        supcon_temperature: float = DEFAULT_SUPCON_TEMPERATURE,
        trainable_image_blocks: int = 1,
        trainable_text_blocks: int = 1,
        label_names: list[str] | tuple[str, ...] = ("normal", "abnormal"),
        gather_distributed: bool = True,
        init_logit_scale: float = 2.659260036932778,  # log(1 / 0.07), as open_clip
        train_logit_scale: bool = False,
        **kwargs: Any,
    ) -> None:
        for key in _LEGACY_PREPROCESSING_KEYS:  # an older config.json: the processor holds these now
            kwargs.pop(key, None)
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
        self.train_logit_scale = train_logit_scale
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
        if not isinstance(self.train_logit_scale, bool):
            raise ValueError(f"CxrMtClipConfig.train_logit_scale must be True or False, got {self.train_logit_scale!r}")
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

    @classmethod
    def from_registry(
        cls, name: str = DEFAULT_ARCHITECTURE, *, vocab_size: int | None = None, **overrides: Any
    ) -> "CxrMtClipConfig":
        """The config of a registered architecture (`cxr_mtclip.registry`), with field `overrides`.

        `vocab_size` resizes the text tower's vocabulary (e.g. to a tokenizer trained on the reports).

        Example:
            >>> CxrMtClipConfig.from_registry("demo", vocab_size=500).text_config_dict["vocab_size"]
            500
        """
        return cls(**get_architecture(name).config_kwargs(vocab_size=vocab_size, **overrides))

    @classmethod
    def tiny(cls, **overrides: Any) -> "CxrMtClipConfig":
        """``from_registry("tiny")``: 2-layer towers, width 32, 64 px images, for tests, demos and benchmarks."""
        return cls.from_registry("tiny", **overrides)


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
