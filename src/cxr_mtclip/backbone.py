"""The open_clip backbone: build it from an inline config, load open_clip weights, apply the freeze policy.

This is the only module that imports open_clip. The module tree and parameter names match open_clip's
`CustomTextCLIP` (`visual.trunk.*`, `visual.head.proj.*`, `text.transformer.*`, `text.proj.*`,
`logit_scale`), so an open_clip checkpoint such as BiomedCLIP's loads into it unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from open_clip.hf_model import HFTextEncoder
from torch import nn
from transformers import BertConfig

from .configuration_cxr_mtclip import (
    BIOMEDBERT_NAME,
    BIOMEDBERT_TEXT_CONFIG,
    BIOMEDCLIP_HUB_ID,
    CLIP_MEAN,
    CLIP_STD,
)

OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
OPEN_CLIP_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_HUB_PREFIX = "hf-hub:"

# Text-tower configs we know inline, so a backbone that names them never fetches a config.
KNOWN_TEXT_CONFIGS: dict[str, dict[str, Any]] = {BIOMEDBERT_NAME: BIOMEDBERT_TEXT_CONFIG}


class VisionTower(nn.Module):
    """A timm ViT trunk plus open_clip's linear projection head (open_clip `TimmModel` layout)."""

    def __init__(self, vision_cfg: dict[str, Any], embed_dim: int) -> None:
        super().__init__()
        pool = vision_cfg.get("timm_pool", "")
        proj = vision_cfg.get("timm_proj", "linear")
        if proj != "linear":
            raise ValueError(f"vision_cfg.timm_proj={proj!r} is not supported; expected 'linear'")
        kwargs = dict(vision_cfg.get("timm_model_kwargs") or {})
        kwargs.setdefault("img_size", vision_cfg.get("image_size", 224))
        try:
            self.trunk = timm.create_model(vision_cfg["timm_model_name"], pretrained=False, num_classes=0, **kwargs)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"vision_cfg names an image tower timm cannot build: {vision_cfg['timm_model_name']!r} "
                f"with {kwargs} ({err})"
            ) from err
        if pool:
            self.trunk.reset_classifier(0, global_pool=pool)
        if not hasattr(self.trunk, "blocks"):
            raise ValueError(
                f"timm model {vision_cfg['timm_model_name']!r} has no `blocks`; only ViT-style towers are supported"
            )
        self.head = nn.Sequential(
            OrderedDict(
                drop=nn.Dropout(float(vision_cfg.get("timm_drop", 0.0))),
                proj=nn.Linear(self.trunk.num_features, embed_dim, bias=bool(vision_cfg.get("timm_proj_bias", False))),
            )
        )

    @property
    def num_blocks(self) -> int:
        return len(self.trunk.blocks)

    def embed_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch embedding + class token + position embedding: the input of block 0."""
        trunk = self.trunk
        x = trunk.patch_embed(pixel_values)
        x = trunk._pos_embed(x)
        x = trunk.patch_drop(x)
        return trunk.norm_pre(x)

    def run_blocks(self, hidden: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        for block in self.trunk.blocks[start:end]:
            hidden = block(hidden)
        return hidden

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm, pooling and projection of the last block's tokens."""
        trunk = self.trunk
        hidden = trunk.norm(hidden)
        pooled = trunk.forward_head(hidden, pre_logits=True)
        return self.head(pooled)

    def first_trainable_block(self) -> int:
        """Index of the first block with a trainable parameter (0 if the embeddings train; len(blocks) if none)."""
        return _first_trainable(self.trunk.blocks, [self.trunk.patch_embed, self.trunk.cls_token, self.trunk.pos_embed])

    def frozen_trunk(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Run the frozen part once, without autograd: (input of the first trainable block, its index)."""
        start = self.first_trainable_block()
        if start == 0:
            return self.embed_tokens(pixel_values), 0
        with torch.no_grad(), _frozen_eval([self.trunk.patch_embed, self.trunk.pos_drop, self.trunk.patch_drop,
                                            self.trunk.norm_pre, *self.trunk.blocks[:start]]):
            hidden = self.run_blocks(self.embed_tokens(pixel_values), 0, start)
        return hidden, start

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden, start = self.frozen_trunk(pixel_values)
        return self.project(self.run_blocks(hidden, start))


class TextTower(HFTextEncoder):
    """open_clip's Hugging Face text encoder, built from an inline transformers config (never fetched)."""

    def __init__(self, text_cfg: dict[str, Any], text_config: dict[str, Any], embed_dim: int) -> None:
        config = BertConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        super().__init__(
            text_cfg.get("hf_model_name") or "inline-bert",
            output_dim=embed_dim,
            config=config,
            pooler_type=text_cfg.get("hf_pooler_type"),
            proj_type=text_cfg.get("hf_proj_type"),
            pretrained=False,
        )
        if text_cfg.get("hf_pooler_type") != "cls_pooler":
            # open_clip builds the transformer without its pooler unless it is used; match its checkpoint.
            self.transformer.pooler = None

    @property
    def num_blocks(self) -> int:
        return len(self.transformer.encoder.layer)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.transformer.embeddings(input_ids=input_ids)

    def extended_mask(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive (B, 1, 1, L) mask: 0 where attended, a large negative where padded."""
        mask = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - mask) * torch.finfo(dtype).min

    def run_blocks(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int = 0, end: int | None = None
    ) -> torch.Tensor:
        mask = self.extended_mask(attention_mask, hidden.dtype)
        for layer in self.transformer.encoder.layer[start:end]:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def project(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pooler(_LastHidden(hidden), attention_mask)
        return self.proj(pooled)

    def first_trainable_block(self) -> int:
        """Index of the first layer with a trainable parameter (0 if the embeddings train; len(layers) if none)."""
        return _first_trainable(self.transformer.encoder.layer, [self.transformer.embeddings])

    def frozen_trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Run the frozen part once, without autograd: (input of the first trainable layer, its index)."""
        start = self.first_trainable_block()
        if start == 0:
            return self.embed_tokens(input_ids), 0
        with torch.no_grad(), _frozen_eval([self.transformer.embeddings, *self.transformer.encoder.layer[:start]]):
            hidden = self.run_blocks(self.embed_tokens(input_ids), attention_mask, 0, start)
        return hidden, start

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        hidden, start = self.frozen_trunk(input_ids, attention_mask)
        return self.project(self.run_blocks(hidden, attention_mask, start), attention_mask)


@contextlib.contextmanager
def _frozen_eval(modules: list[nn.Module]):
    """Run frozen modules in eval mode (no dropout): a frozen trunk is a fixed function of its input,
    which is also what makes its output cacheable. Restores each module's mode afterwards."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def _first_trainable(blocks: nn.ModuleList, stem: list[nn.Module | nn.Parameter]) -> int:
    """Frozen blocks can run without autograd only up to the first one that trains (and only if the stem is frozen)."""
    def trains(part: nn.Module | nn.Parameter) -> bool:
        if isinstance(part, nn.Parameter):
            return part.requires_grad
        return any(p.requires_grad for p in part.parameters())

    if any(trains(part) for part in stem if part is not None):
        return 0
    for index, block in enumerate(blocks):
        if trains(block):
            return index
    return len(blocks)


@dataclass
class _LastHidden:
    """Stand-in for a transformers output so open_clip's poolers can read `last_hidden_state`."""

    last_hidden_state: torch.Tensor


class OpenClipBackbone(nn.Module):
    """Image tower, text tower and CLIP logit scale, with open_clip `CustomTextCLIP` parameter names."""

    def __init__(self, open_clip_config: dict[str, Any], text_config: dict[str, Any], init_logit_scale: float) -> None:
        super().__init__()
        embed_dim = int(open_clip_config["embed_dim"])
        self.visual = VisionTower(open_clip_config["vision_cfg"], embed_dim)
        self.text = TextTower(open_clip_config["text_cfg"], text_config, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual(pixel_values)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.text.encode(input_ids, attention_mask)


def build_backbone(open_clip_config: dict[str, Any], text_config: dict[str, Any], init_logit_scale: float) -> OpenClipBackbone:
    """Build the backbone architecture with random weights from inline configs (no network)."""
    return OpenClipBackbone(open_clip_config, text_config, init_logit_scale)


@dataclass
class BackboneSource:
    """What a backbone id or folder resolved to: the open_clip model config, preprocessing and weights."""

    name: str
    open_clip_config: dict[str, Any]
    text_config: dict[str, Any]
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    weights_path: Path | None
    tokenizer_name: str | None


def resolve_backbone(name_or_path: str | os.PathLike, *, cache_dir: str | None = None) -> BackboneSource:
    """Find the open_clip config and weights of an `hf-hub:` id or a local folder.

    A local folder must hold `open_clip_config.json` and `open_clip_model.safetensors` (preferred) or
    `open_clip_pytorch_model.bin`. A hub id downloads those two files with huggingface_hub.

    Example:
        >>> src = resolve_backbone("path/to/BiomedCLIP")  # doctest: +SKIP
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if folder.is_dir():
        config_file = folder / OPEN_CLIP_CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: missing; a local open_clip backbone folder needs {OPEN_CLIP_CONFIG_NAME}")
        weights = next((folder / w for w in OPEN_CLIP_WEIGHT_NAMES if (folder / w).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{folder}: no weights; expected one of {list(OPEN_CLIP_WEIGHT_NAMES)}")
    elif name.startswith(HF_HUB_PREFIX):
        config_file, weights = _download_from_hub(name[len(HF_HUB_PREFIX):], cache_dir)
    else:
        raise ValueError(
            f"backbone {name!r} is neither an existing folder nor an open_clip hub id "
            f"(expected e.g. {BIOMEDCLIP_HUB_ID!r})"
        )
    try:
        raw = json.loads(Path(config_file).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from err
    if "model_cfg" not in raw:
        raise ValueError(f"{config_file}: expected a top-level 'model_cfg' (open_clip hub config layout)")
    model_cfg = copy.deepcopy(raw["model_cfg"])
    preprocess = raw.get("preprocess_cfg", {})
    text_cfg = model_cfg.get("text_cfg", {})
    text_config = _text_config_for(text_cfg, folder if folder.is_dir() else None)
    return BackboneSource(
        name=name,
        open_clip_config=model_cfg,
        text_config=text_config,
        image_mean=tuple(preprocess.get("mean", CLIP_MEAN)),
        image_std=tuple(preprocess.get("std", CLIP_STD)),
        weights_path=Path(weights) if weights else None,
        tokenizer_name=text_cfg.get("hf_tokenizer_name"),
    )


def _download_from_hub(repo_id: str, cache_dir: str | None) -> tuple[str, str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    config_file = hf_hub_download(repo_id, OPEN_CLIP_CONFIG_NAME, cache_dir=cache_dir)
    last_error: Exception | None = None
    for filename in OPEN_CLIP_WEIGHT_NAMES:
        try:
            return config_file, hf_hub_download(repo_id, filename, cache_dir=cache_dir)
        except EntryNotFoundError as err:
            last_error = err
    raise FileNotFoundError(f"hub repo {repo_id!r} has none of {list(OPEN_CLIP_WEIGHT_NAMES)}") from last_error


def _text_config_for(text_cfg: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """The transformers config of the text tower: inline if known, a local file, or fetched once."""
    name = text_cfg.get("hf_model_name")
    if folder is not None and (folder / "text_config.json").is_file():
        return json.loads((folder / "text_config.json").read_text())
    if name in KNOWN_TEXT_CONFIGS:
        return copy.deepcopy(KNOWN_TEXT_CONFIGS[name])
    if not name:
        raise ValueError("open_clip text_cfg has no 'hf_model_name'; only Hugging Face text towers are supported")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name)
    if config.model_type != "bert":
        raise ValueError(f"text tower {name!r} is a {config.model_type!r} model; only BERT-family towers are supported")
    return config.to_diff_dict() | {"model_type": "bert"}


def load_open_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an open_clip checkpoint: safetensors, or a torch file read with `weights_only=True` (no code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal or a corrupt file: say which file
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({err})") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(backbone: OpenClipBackbone, path: str | os.PathLike) -> None:
    """Copy open_clip weights into `backbone`; every backbone parameter must be present in the file."""
    state = load_open_clip_state_dict(path)
    own = backbone.state_dict()
    # HF BERT keeps `position_ids`/`token_type_ids` as buffers; older checkpoints may or may not carry them.
    optional = {k for k in own if k.endswith(("position_ids", "token_type_ids"))}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(k for k in set(state) - set(own) if not k.startswith("text.transformer.pooler."))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the backbone architecture; "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the architecture expects {tuple(own[key].shape)}")
    backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def apply_freeze_policy(backbone: OpenClipBackbone, image_blocks: int, text_blocks: int) -> None:
    """Freeze each tower but its last `n` blocks and its final norm/projection (-1 keeps all trainable).

    The logit scale stays trainable. With `n == 0` the whole tower is frozen.
    """
    backbone.requires_grad_(False)
    backbone.logit_scale.requires_grad_(True)
    visual, text = backbone.visual, backbone.text
    if image_blocks == -1:
        visual.requires_grad_(True)
    elif image_blocks > 0:
        for block in visual.trunk.blocks[-image_blocks:]:
            block.requires_grad_(True)
        visual.trunk.norm.requires_grad_(True)
        visual.trunk.fc_norm.requires_grad_(True)
        visual.head.requires_grad_(True)
    if text_blocks == -1:
        text.requires_grad_(True)
    elif text_blocks > 0:
        for layer in text.transformer.encoder.layer[-text_blocks:]:
            layer.requires_grad_(True)
        text.proj.requires_grad_(True)
