"""CxrMtClipModel: BiomedCLIP towers, a fused normal/abnormal head and the composite loss (paper Algorithm 1)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import CONFIG_NAME, ModelOutput

from .atomic import atomic_update_directory
from .backbone import apply_freeze_policy, build_backbone, load_backbone_weights, resolve_backbone
from .configuration_cxr_mtclip import CxrMtClipConfig
from .losses import CompositeLoss
from .registry import get_architecture

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# Files a model folder may hold that are not model weights (Trainer checkpoints write them).
_NOT_WEIGHTS = {"training_args.bin"}
# Weight files of earlier saves that a new save replaces (a sharded save leaves no model.safetensors and back).
_OWN_WEIGHT_PATTERNS = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, "model-*-of-*.safetensors")
LOGIT_SCALE_MAX = math.log(100)
"""Upper bound of the (log) CLIP logit scale when it trains: a multiplier of at most 100, as open_clip clamps it."""


@dataclass
class CxrMtClipOutput(ModelOutput):
    """Outputs of `CxrMtClipModel.forward`; every embedding is L2-normalised.

    `loss` is `bce_weight * bce_loss + supcon_weight * supcon_loss + clip_weight * clip_loss` when labels
    are given (a modality missing from the call leaves the terms that need it at zero).
    """

    loss: torch.Tensor | None = None
    bce_loss: torch.Tensor | None = None
    supcon_loss: torch.Tensor | None = None
    clip_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    fused_embeds: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None


class CxrMtClipPreTrainedModel(PreTrainedModel):
    """Owns the config class and the weight init of the parts this package adds (the head)."""

    config_class = CxrMtClipConfig
    base_model_prefix = "cxr_mtclip"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours: backbone modules keep the weights they were built or loaded with.
        if module is getattr(self, "classifier", None):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """transformers' `save_pretrained`, written to a temp folder and renamed in file by file, config.json last.

        A reader (or a killed run) never sees a half-written model.safetensors; other files in the folder
        (checkpoints, results) are kept.
        """
        if kwargs.get("push_to_hub") or not kwargs.get("is_main_process", True) or args or Path(save_directory).is_file():
            return super().save_pretrained(save_directory, *args, **kwargs)
        with atomic_update_directory(save_directory, last=(CONFIG_NAME,), stale=_OWN_WEIGHT_PATTERNS) as tmp:
            return super().save_pretrained(tmp, **kwargs)


class CxrMtClipModel(CxrMtClipPreTrainedModel):
    """BiomedCLIP (open_clip) + `Linear(embed_dim, 1)` on dropout((V + T) / 2), trained with BCE + SupCon + CLIP.

    Example:
        >>> from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel
        >>> model = CxrMtClipModel(CxrMtClipConfig.tiny())
        >>> out = model(pixel_values=torch.randn(2, 3, 64, 64), input_ids=torch.randint(5, 99, (2, 8)),
        ...             labels=torch.tensor([0, 1]))
        >>> out.loss.shape
        torch.Size([])
    """

    def __init__(self, config: CxrMtClipConfig) -> None:
        super().__init__(config)
        self.backbone = build_backbone(config.open_clip_config, config.text_config_dict, config.init_logit_scale)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.embed_dim, 1)
        self.post_init()
        _apply_config_freeze_policy(self)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "loss_fn":  # nn.Module would store a module silently where the property never reads it
            raise AttributeError(
                "CxrMtClipModel.loss_fn is built from model.config at every call; set model.config.bce_weight, "
                "supcon_weight, clip_weight, supcon_temperature or gather_distributed instead"
            )
        super().__setattr__(name, value)

    @property
    def loss_fn(self) -> CompositeLoss:
        """The composite loss as `config` describes it now (built at each call: the config is its one holder).

        Raises ValueError naming the field when a config value set after construction is out of range.
        """
        return build_loss(self.config)

    def clamp_logit_scale(self) -> None:
        """Clamp the (log) CLIP logit scale to [0, ln 100] in place, as open_clip does after every optimiser step."""
        with torch.no_grad():
            self.backbone.logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> "CxrMtClipModel":
        """transformers' loader, then the config's freeze policy (loading replaces the parameters).

        A local folder is checked first, each failure naming the file: config.json present; exactly one
        set of weights, in safetensors (model.safetensors, or shards listed by model.safetensors.index.json;
        pickle-based *.bin weights are refused); every file readable (not truncated); its tensors exactly the
        architecture's (no missing or unexpected key, no shape mismatch unless `ignore_mismatched_sizes`).
        """
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            check_saved_model_folder(Path(source), cls, **kwargs)
        model = super().from_pretrained(*args, **kwargs)
        _apply_config_freeze_policy(model[0] if isinstance(model, tuple) else model)  # tuple: output_loading_info
        return model

    @classmethod
    def from_backbone(
        cls, name_or_path: str | os.PathLike | None = None, *, cache_dir: str | None = None, **overrides: Any
    ) -> "CxrMtClipModel":
        """Build the model around pretrained open_clip weights (an `hf-hub:` id or a local folder).

        Example:
            >>> model = CxrMtClipModel.from_backbone("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")  # doctest: +SKIP
        """
        name = str(name_or_path or CxrMtClipConfig().backbone)
        source = resolve_backbone(name, cache_dir=cache_dir)
        config = CxrMtClipConfig(
            backbone=name,
            open_clip_config=source.open_clip_config,
            text_config=source.text_config,
            **overrides,
        )
        model = cls(config)
        if source.weights_path is not None:
            load_backbone_weights(model.backbone, source.weights_path)
        return model

    @classmethod
    def from_registry(cls, name: str, *, cache_dir: str | None = None, **overrides: Any) -> "CxrMtClipModel":
        """The model of a registered architecture (`cxr_mtclip.registry`), as open_clip's ``create_model(name)``.

        An architecture with open_clip weights (``biomedclip``) loads them with `from_backbone`; one without
        (``tiny``, ``demo``) starts from random weights. `overrides` set CxrMtClipConfig fields.

        Example:
            >>> CxrMtClipModel.from_registry("tiny", dropout=0.0).config.backbone
            'tiny'
        """
        arch = get_architecture(name)
        if arch.pretrained is not None:
            return cls.from_backbone(arch.pretrained, cache_dir=cache_dir, **{**arch.config_overrides, **overrides})
        return cls(CxrMtClipConfig.from_registry(name, **overrides))

    # -- features ---------------------------------------------------------------------------------

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Projected image embeddings (B, embed_dim)."""
        features = self.backbone.encode_image(pixel_values)
        return F.normalize(features, dim=-1) if normalize else features

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Projected report embeddings (B, embed_dim)."""
        features = self.backbone.encode_text(input_ids, attention_mask)
        return F.normalize(features, dim=-1) if normalize else features

    def get_fused_features(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L2-normalised mean of the L2-normalised image and text embeddings (what the FAISS index holds)."""
        image = self.get_image_features(pixel_values)
        text = self.get_text_features(input_ids, attention_mask)
        return fuse_embeddings(image, text)

    def print_trainable_parameters(self) -> str:
        """Print and return how many parameters are trainable, overall and per part."""
        line = trainable_parameter_report(self)
        print(line)
        return line

    # -- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
    ) -> CxrMtClipOutput:
        # No **kwargs on purpose: transformers' Trainer rescales the loss of models that accept loss kwargs.
        if pixel_values is None and input_ids is None:
            raise ValueError("CxrMtClipModel.forward needs pixel_values, input_ids, or both")
        image_raw = self.backbone.encode_image(pixel_values) if pixel_values is not None else None
        text_raw = self.backbone.encode_text(input_ids, attention_mask) if input_ids is not None else None
        return self.head_and_loss(image_raw, text_raw, labels=labels, return_loss=return_loss)

    def head_and_loss(
        self,
        image_raw: torch.Tensor | None,
        text_raw: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
    ) -> CxrMtClipOutput:
        """Everything after the towers: normalisation, fusion, classifier and composite loss."""
        image_embeds = F.normalize(image_raw, dim=-1) if image_raw is not None else None
        text_embeds = F.normalize(text_raw, dim=-1) if text_raw is not None else None
        fused_embeds = logits = logits_per_image = logits_per_text = None
        if image_raw is not None and text_raw is not None:
            # Algorithm 1: the classifier sees dropout((V + T) / 2) of the projected embeddings.
            logits = self.classifier(self.dropout((image_raw + text_raw) / 2)).squeeze(-1)
            fused_embeds = fuse_embeddings(image_embeds, text_embeds)
            scale = self.backbone.logit_scale.exp()
            logits_per_image = scale * image_embeds @ text_embeds.t()
            logits_per_text = logits_per_image.t()

        if return_loss is None:
            return_loss = labels is not None
        losses: dict[str, torch.Tensor | None] = {}
        if return_loss:
            if logits is None:
                raise ValueError("the composite loss needs both pixel_values and input_ids")
            if labels is None:
                raise ValueError("return_loss=True needs labels (0 = normal, 1 = abnormal)")
            out = self.loss_fn(
                logits=logits,
                labels=labels,
                image_embeds=image_embeds,
                text_embeds=text_embeds,
                fused_embeds=fused_embeds,
                logit_scale=self.backbone.logit_scale.exp(),
            )
            losses = {"loss": out.loss, "bce_loss": out.bce_loss, "supcon_loss": out.supcon_loss, "clip_loss": out.clip_loss}
        return CxrMtClipOutput(
            **losses,
            logits=logits,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            fused_embeds=fused_embeds,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
        )


def build_loss(config: CxrMtClipConfig) -> CompositeLoss:
    """The paper's composite loss with the weights, SupCon temperature and gathering of `config` (validated first).

    Example:
        >>> build_loss(CxrMtClipConfig.tiny(clip_weight=5.0)).clip_weight
        5.0
    """
    config.validate_fields()
    return CompositeLoss(
        bce_weight=config.bce_weight,
        supcon_weight=config.supcon_weight,
        clip_weight=config.clip_weight,
        supcon_temperature=config.supcon_temperature,
        gather_distributed=config.gather_distributed,
    )


def _apply_config_freeze_policy(model: "CxrMtClipModel") -> None:
    config = model.config
    apply_freeze_policy(
        model.backbone, config.trainable_image_blocks, config.trainable_text_blocks,
        train_logit_scale=config.train_logit_scale,
    )


def fuse_embeddings(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of two L2-normalised embeddings (the paper's fused study vector)."""
    return F.normalize((image_embeds + text_embeds) / 2, dim=-1)


def trainable_parameter_report(model: CxrMtClipModel) -> str:
    """One line: trainable / total parameters, overall and for each tower and the head."""
    def count(module: nn.Module) -> tuple[int, int]:
        params = list(module.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    parts = {
        "image": count(model.backbone.visual),
        "text": count(model.backbone.text),
        "head": count(model.classifier),
    }
    trainable, total = count(model)
    detail = ", ".join(f"{name} {t:,}/{n:,}" for name, (t, n) in parts.items())
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f} ({detail})"


def check_saved_model_folder(folder: Path, model_class: type[nn.Module] | None = None, **kwargs: Any) -> None:
    """Raise FileNotFoundError / ValueError naming the file when `folder` is not a loadable saved model.

    Used by `CxrMtClipModel.from_pretrained` on local folders; `kwargs` are its keyword arguments
    (`config`, `subfolder`, `ignore_mismatched_sizes`, `variant`, `state_dict` are read).

    Example:
        >>> check_saved_model_folder(Path("runs/tiny"))  # doctest: +SKIP
    """
    if kwargs.get("variant") or kwargs.get("gguf_file") or kwargs.get("state_dict") is not None:
        return  # other file layouts: left to transformers
    if kwargs.get("subfolder"):
        folder = folder / kwargs["subfolder"]
    config = kwargs.get("config")
    if not isinstance(config, CxrMtClipConfig):
        config_file = Path(config) if isinstance(config, (str, os.PathLike)) else folder / CONFIG_NAME
        if config_file.is_dir():
            config_file = config_file / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{config_file}: missing; a saved CxrMtClipModel folder holds {CONFIG_NAME} and {SAFE_WEIGHTS_NAME} "
                "(written by save_pretrained)"
            )
        try:
            config = CxrMtClipConfig.from_pretrained(str(config_file))
        except (OSError, ValueError) as err:  # transformers reports invalid JSON as an OSError
            raise ValueError(f"{config_file}: not a valid CxrMtClipConfig ({err})") from err

    single, index = folder / SAFE_WEIGHTS_NAME, folder / SAFE_WEIGHTS_INDEX_NAME
    shards: list[Path] = []
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({folder / str(name) for name in dict(weight_map).values()})
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{index}: not a safetensors index (expected JSON with a 'weight_map'; {err})") from err
        for shard in shards:
            if not shard.is_file():
                raise FileNotFoundError(f"{shard}: missing; listed as a weight shard in {index.name}")
    expected_files = set(shards) | ({single} if single.is_file() and not shards else set())
    extra = sorted(
        p.name for p in folder.iterdir()
        if p.is_file() and p not in expected_files and p.name not in _NOT_WEIGHTS
        and (p.suffix in (".bin", ".safetensors", ".h5", ".msgpack", ".ckpt") or p.name.startswith("pytorch_model"))
    )
    if not expected_files:
        found = f"; it holds {extra} (pickle-based or other weight formats are not loaded: safetensors only)" if extra else ""
        raise FileNotFoundError(
            f"{single}: missing; a saved CxrMtClipModel folder holds its weights as {SAFE_WEIGHTS_NAME} "
            f"(or {SAFE_WEIGHTS_INDEX_NAME} with shards){found}"
        )
    if extra:
        raise ValueError(
            f"{folder}: extra weight file(s) {extra} beside {sorted(p.name for p in expected_files)}; "
            "expected exactly one set of safetensors weights (remove the extra files)"
        )

    from safetensors import safe_open

    stored: dict[str, tuple[tuple[int, ...], Path]] = {}
    for path in sorted(expected_files):
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    stored[key] = (tuple(handle.get_slice(key).get_shape()), path)
        except Exception as err:  # safetensors raises its own error type for a truncated or corrupt header
            raise ValueError(f"{path}: not a readable safetensors file, truncated or corrupt ({err})") from err

    with torch.device("meta"):
        reference = (model_class or CxrMtClipModel)(config)
    wanted = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    where = ", ".join(sorted(p.name for p in expected_files))
    missing = sorted(set(wanted) - set(stored))
    unexpected = sorted(set(stored) - set(wanted))
    if missing or unexpected:
        problems = [
            f"{len(keys)} {kind} tensor(s) {keys[:5]}{' ...' if len(keys) > 5 else ''}"
            for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys
        ]
        raise ValueError(
            f"{folder / where}: tensors do not match the architecture in {CONFIG_NAME}: {'; '.join(problems)}"
        )
    if not kwargs.get("ignore_mismatched_sizes"):
        for key, shape in wanted.items():
            if stored[key][0] != shape:
                raise ValueError(
                    f"{stored[key][1]}: tensor {key} has shape {stored[key][0]}, the architecture in "
                    f"{CONFIG_NAME} expects {shape}"
                )
