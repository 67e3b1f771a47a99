"""The open_clip backbone: build it from an inline config, load open_clip weights, apply the freeze policy.

This is the only module that imports open_clip. The module tree and parameter names match open_clip's
`CustomTextCLIP` (`visual.trunk.*`, `visual.head.proj.*`, `text.transformer.*`, `text.proj.*`,
`logit_scale`), so an open_clip checkpoint such as BiomedCLIP's loads into it unchanged.
"""

from __future__ import annotations

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
from .utils import eval_mode

OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
OPEN_CLIP_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_HUB_PREFIX = "hf-hub:"
# The tokenizer files a backbone repo may carry (BiomedCLIP's has all four); the first one marks a tokenizer folder.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "vocab.txt")
# Buffers older checkpoints carry and open_clip's `load_checkpoint` drops when the model does not register them.
LEGACY_CHECKPOINT_KEYS = ("text.transformer.embeddings.position_ids",)
# text_cfg keys of open_clip configs written before open_clip 2.2x renamed them.
LEGACY_TEXT_CFG_KEYS = {"proj": "hf_proj_type", "pooler_type": "hf_pooler_type"}
# BiomedBERT's name before Microsoft renamed the repo (2023); older BiomedCLIP snapshots still say it.
PUBMEDBERT_NAME = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract"

# Text-tower configs we know inline, so a backbone that names them never fetches a config.
KNOWN_TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    BIOMEDBERT_NAME: BIOMEDBERT_TEXT_CONFIG,
    PUBMEDBERT_NAME: BIOMEDBERT_TEXT_CONFIG,
}


class VisionTower(nn.Module):
    """A timm ViT trunk plus open_clip's linear projection head (open_clip `TimmModel` layout)."""

    def __init__(self, vision_cfg: dict[str, Any], embed_dim: int) -> None:
        super().__init__()
        pool = vision_cfg.get("timm_pool", "")
        proj = vision_cfg.get("timm_proj", "linear")
        if proj != "linear":
            raise ValueError(f"vision_cfg.timm_proj={proj!r} is not supported; expected 'linear'")
        # as open_clip's TimmModel: the trunk is built at timm's default size (image_size only sizes the
        # preprocessing); `timm_model_kwargs` is this package's extension for inline test towers
        kwargs = dict(vision_cfg.get("timm_model_kwargs") or {})
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
        # frozen modules run in eval mode (no dropout): a fixed function of the input, hence cacheable
        with torch.no_grad(), eval_mode(self.trunk.patch_embed, self.trunk.pos_drop, self.trunk.patch_drop,
                                        self.trunk.norm_pre, *self.trunk.blocks[:start]):
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
        with torch.no_grad(), eval_mode(self.transformer.embeddings, *self.transformer.encoder.layer[:start]):
            hidden = self.run_blocks(self.embed_tokens(input_ids), attention_mask, 0, start)
        return hidden, start

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        hidden, start = self.frozen_trunk(input_ids, attention_mask)
        return self.project(self.run_blocks(hidden, attention_mask, start), attention_mask)


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
class BackboneFiles:
    """Where a backbone's files are: its ``open_clip_config.json`` and (when asked for) its weights file."""

    name: str
    config_file: Path
    weights_file: Path | None
    folder: Path
    repo_id: str | None = None


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
    config_file: Path | None = None


def hub_cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The huggingface_hub cache folder in use: `cache_dir`, else ``HF_HUB_CACHE`` (as huggingface_hub resolved it)."""
    from huggingface_hub import constants

    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser().resolve()


def hub_file(
    repo_id: str, filename: str, *, cache_dir: str | os.PathLike | None = None, optional: bool = False
) -> Path | None:
    """Path of `filename` of Hub repo `repo_id`, from the cache or downloaded (huggingface_hub's `hf_hub_download`).

    Returns None for an `optional` file the repo does not have (the Hub says so, or the cache recorded it). Raises
    FileNotFoundError naming the repo, the file and the cache folder when the file is missing: "not in the local
    cache and offline mode is on" under ``HF_HUB_OFFLINE=1``, "could not be downloaded" when the Hub is unreachable,
    "has no file" when the repo lacks it; an optional file that is neither cached nor known absent offline gives None.

    Example:
        >>> hub_file("microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "open_clip_config.json")  # doctest: +SKIP
    """
    import huggingface_hub
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = str(cache_dir) if cache_dir is not None else None
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=cache))
    except LocalEntryNotFoundError as err:
        known_absent = try_to_load_from_cache(repo_id, filename, cache_dir=cache) is huggingface_hub._CACHED_NO_EXIST
        if known_absent or (optional and constants.HF_HUB_OFFLINE):
            if optional:
                return None
            raise FileNotFoundError(f"hub repo {repo_id!r} has no file {filename!r} (recorded in the cache "
                                    f"{hub_cache_folder(cache_dir)})") from err
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(
                f"{filename} of hub repo {repo_id!r} is not in the local cache and offline mode is on "
                f"(HF_HUB_OFFLINE=1); cache folder: {hub_cache_folder(cache_dir)}"
            ) from err
        raise FileNotFoundError(
            f"{filename} of hub repo {repo_id!r} could not be downloaded (is the Hub reachable?) and is not in the "
            f"local cache {hub_cache_folder(cache_dir)}"
        ) from err
    except EntryNotFoundError as err:  # the Hub answered: the repo has no such file
        if optional:
            return None
        raise FileNotFoundError(f"hub repo {repo_id!r} has no file {filename!r}") from err
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise FileNotFoundError(f"hub repo {repo_id!r} was not found on the Hub (or is private/gated)") from err


def resolve_backbone_files(
    name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, weights: bool = True
) -> BackboneFiles:
    """Find (or download) the ``open_clip_config.json`` of an ``hf-hub:`` id or local folder, and its weights.

    With ``weights=False`` only the config is read: nothing else is fetched. Weights are looked up as open_clip does:
    ``open_clip_model.safetensors`` first, then ``open_clip_pytorch_model.bin``. Errors name the file, the repo and
    the cache folder (`hub_file`).

    Example:
        >>> resolve_backbone_files("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", weights=False)  # doctest: +SKIP
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if folder.is_dir():
        config_file = folder / OPEN_CLIP_CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: missing; a local open_clip backbone folder needs {OPEN_CLIP_CONFIG_NAME}")
        weights_file = None
        if weights:
            weights_file = next((folder / w for w in OPEN_CLIP_WEIGHT_NAMES if (folder / w).is_file()), None)
            if weights_file is None:
                raise FileNotFoundError(f"{folder}: no weights; expected one of {list(OPEN_CLIP_WEIGHT_NAMES)}")
        return BackboneFiles(name, config_file, weights_file, folder)
    if not name.startswith(HF_HUB_PREFIX):
        raise ValueError(
            f"backbone {name!r} is neither an existing folder nor an open_clip hub id "
            f"(expected e.g. {BIOMEDCLIP_HUB_ID!r})"
        )
    repo_id = name[len(HF_HUB_PREFIX):]
    config_file = hub_file(repo_id, OPEN_CLIP_CONFIG_NAME, cache_dir=cache_dir)
    weights_file = None
    if weights:
        safe, pickled = OPEN_CLIP_WEIGHT_NAMES
        weights_file = hub_file(repo_id, safe, cache_dir=cache_dir, optional=True)
        if weights_file is None:
            weights_file = hub_file(repo_id, pickled, cache_dir=cache_dir, optional=True)
        if weights_file is None:
            _raise_no_weights(repo_id, cache_dir)
    return BackboneFiles(name, Path(config_file), weights_file, Path(config_file).parent, repo_id)


def _raise_no_weights(repo_id: str, cache_dir: str | os.PathLike | None) -> None:
    import huggingface_hub
    from huggingface_hub import constants, try_to_load_from_cache

    cache = str(cache_dir) if cache_dir is not None else None
    absent = [w for w in OPEN_CLIP_WEIGHT_NAMES
              if try_to_load_from_cache(repo_id, w, cache_dir=cache) is huggingface_hub._CACHED_NO_EXIST]
    if len(absent) == len(OPEN_CLIP_WEIGHT_NAMES) or not constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"hub repo {repo_id!r} has none of the open_clip weight files {list(OPEN_CLIP_WEIGHT_NAMES)}")
    wanted = [w for w in OPEN_CLIP_WEIGHT_NAMES if w not in absent]
    what = (f"{wanted[0]} of hub repo {repo_id!r} is" if len(wanted) == 1
            else f"the weights of hub repo {repo_id!r} ({' or '.join(wanted)}) are")
    raise FileNotFoundError(f"{what} not in the local cache and offline mode is on (HF_HUB_OFFLINE=1); "
                            f"cache folder: {hub_cache_folder(cache_dir)}")


def read_open_clip_config(config_file: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` of an ``open_clip_config.json``, the text keys of older revisions renamed.

    BiomedCLIP's config before the rename says ``proj``/``pooler_type`` where open_clip >= 2.2x says
    ``hf_proj_type``/``hf_pooler_type``; both spellings are read (the same key in both spellings with two values is
    an error).
    """
    config_file = Path(config_file)
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("model_cfg"), dict):
        raise ValueError(f"{config_file}: expected a top-level 'model_cfg' (open_clip hub config layout)")
    model_cfg = copy.deepcopy(raw["model_cfg"])
    text_cfg = model_cfg.get("text_cfg")
    if isinstance(text_cfg, dict):
        for old, new in LEGACY_TEXT_CFG_KEYS.items():
            if old in text_cfg:
                value = text_cfg.pop(old)
                if text_cfg.setdefault(new, value) != value:
                    raise ValueError(f"{config_file}: text_cfg has both {old!r}={value!r} and {new!r}={text_cfg[new]!r}")
    preprocess = raw.get("preprocess_cfg") or {}
    return model_cfg, preprocess


def resolve_backbone(
    name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, weights: bool = True
) -> BackboneSource:
    """Find the open_clip config (and, unless ``weights=False``, the weights) of an `hf-hub:` id or a local folder.

    A local folder must hold `open_clip_config.json` and `open_clip_model.safetensors` (preferred) or
    `open_clip_pytorch_model.bin`. A hub id reads those files from the huggingface_hub cache in `cache_dir`
    (default ``HF_HUB_CACHE``), downloading what is missing unless offline mode is on.

    Example:
        >>> src = resolve_backbone("path/to/BiomedCLIP")  # doctest: +SKIP
    """
    files = resolve_backbone_files(name_or_path, cache_dir=cache_dir, weights=weights)
    model_cfg, preprocess = read_open_clip_config(files.config_file)
    text_cfg = model_cfg.get("text_cfg", {})
    local = files.folder if files.repo_id is None else None
    text_config = _text_config_for(text_cfg, local, cache_dir)
    return BackboneSource(
        name=files.name,
        open_clip_config=model_cfg,
        text_config=text_config,
        image_mean=tuple(preprocess.get("mean", CLIP_MEAN)),
        image_std=tuple(preprocess.get("std", CLIP_STD)),
        weights_path=files.weights_file,
        tokenizer_name=text_cfg.get("hf_tokenizer_name"),
        config_file=files.config_file,
    )


@dataclass
class BackboneProcessorConfig:
    """What a processor needs from a backbone: preprocessing, context length and where its tokenizer is."""

    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    context_length: int
    tokenizer_folder: Path | None
    tokenizer_name: str | None


def backbone_processor_config(
    name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
) -> BackboneProcessorConfig:
    """Read a backbone's ``open_clip_config.json`` and tokenizer files only (never its weights or text tower config).

    Example:
        >>> backbone_processor_config("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224").image_size  # doctest: +SKIP
        224
    """
    files = resolve_backbone_files(name_or_path, cache_dir=cache_dir, weights=False)
    model_cfg, preprocess = read_open_clip_config(files.config_file)
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    return BackboneProcessorConfig(
        image_size=int(vision.get("image_size", 224)),
        image_mean=tuple(preprocess.get("mean", CLIP_MEAN)),
        image_std=tuple(preprocess.get("std", CLIP_STD)),
        context_length=int(text.get("context_length", 256)),
        tokenizer_folder=backbone_tokenizer_folder(name_or_path, cache_dir=cache_dir),
        tokenizer_name=text.get("hf_tokenizer_name"),
    )


def backbone_tokenizer_folder(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the backbone repo's own tokenizer files, or None if it ships none.

    BiomedCLIP's repo carries ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json`` and
    ``vocab.txt`` next to its weights; they are fetched (never the weights) into the same snapshot folder. A local
    folder is returned as is when it has a ``tokenizer_config.json``.

    Example:
        >>> backbone_tokenizer_folder("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")  # doctest: +SKIP
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder if (folder / TOKENIZER_FILES[0]).is_file() else None
    if not name.startswith(HF_HUB_PREFIX):
        raise ValueError(f"backbone {name!r} is neither an existing folder nor an open_clip hub id")
    repo_id = name[len(HF_HUB_PREFIX):]
    config = hub_file(repo_id, TOKENIZER_FILES[0], cache_dir=cache_dir, optional=True)
    if config is None:
        return None
    for filename in TOKENIZER_FILES[1:]:
        hub_file(repo_id, filename, cache_dir=cache_dir, optional=filename != "vocab.txt")
    return config.parent


def _text_config_for(
    text_cfg: dict[str, Any], folder: Path | None, cache_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The transformers config of the text tower: a local file, inline if known, or its repo's ``config.json``."""
    name = text_cfg.get("hf_model_name")
    if folder is not None and (folder / "text_config.json").is_file():
        return json.loads((folder / "text_config.json").read_text())
    if name in KNOWN_TEXT_CONFIGS:
        return copy.deepcopy(KNOWN_TEXT_CONFIGS[name])
    if not name:
        raise ValueError("open_clip text_cfg has no 'hf_model_name'; only Hugging Face text towers are supported")
    local = Path(name).expanduser() / "config.json"
    config_file = local if local.is_file() else hub_file(name, "config.json", cache_dir=cache_dir)
    try:
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from err
    model_type = config.get("model_type")
    if model_type is None:
        # BiomedBERT's config.json had no model_type before Sept. 2021; BERT's own keys identify it
        unknown = set(config) - set(BertConfig().to_dict()) - {"architectures"}
        if unknown or "hidden_size" not in config:
            raise ValueError(
                f"{config_file}: text tower {name!r} has no 'model_type' and keys {sorted(unknown)[:5]} that a BERT "
                "config does not have; only BERT-family towers are supported"
            )
        model_type = "bert"
    if model_type != "bert":
        raise ValueError(f"{config_file}: text tower {name!r} is a {model_type!r} model; only BERT-family towers are supported")
    known = set(BertConfig().to_dict())
    return {k: v for k, v in config.items() if k in known and k != "architectures"} | {"model_type": "bert"}


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
    """Copy open_clip weights into `backbone`, accepting what open_clip's own `load_checkpoint` accepts.

    As open_clip 3.x does: BERT's legacy ``text.transformer.embeddings.position_ids`` buffer (saved by
    transformers < 4.31, e.g. in BiomedCLIP's published checkpoint) is dropped when the tower does not register it,
    and a ``logit_scale`` saved as a 1-element vector is reshaped. Anything else must match exactly: a missing or
    unexpected key, or a tensor of another shape, raises ValueError naming the file and the key(s).
    """
    state = load_open_clip_state_dict(path)
    own = backbone.state_dict()
    for key in LEGACY_CHECKPOINT_KEYS:
        if key in state and key not in own:
            del state[key]
    scale = state.get("logit_scale")
    if scale is not None and scale.ndim != own["logit_scale"].ndim and scale.numel() == own["logit_scale"].numel():
        state["logit_scale"] = scale.reshape(own["logit_scale"].shape)
    # HF BERT keeps `position_ids`/`token_type_ids` as buffers; checkpoints may or may not carry them.
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


def apply_freeze_policy(
    backbone: OpenClipBackbone, image_blocks: int, text_blocks: int, *, train_logit_scale: bool = False
) -> None:
    """Freeze each tower but its last `n` blocks and its final norm/projection (-1 keeps all trainable).

    With `n == 0` the whole tower is frozen. The CLIP logit scale trains only with `train_logit_scale`
    (the paper keeps the temperature as a hyper-parameter: frozen at its pretrained value).
    """
    backbone.requires_grad_(False)
    backbone.logit_scale.requires_grad_(bool(train_logit_scale))
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
