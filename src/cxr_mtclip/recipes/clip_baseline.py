"""General-purpose CLIP (open_clip's native architecture, e.g. ``ViT-B-16`` / ``openai``) as a retrieval baseline.

The paper compares its fine-tuned BiomedCLIP with OpenAI's CLIP ViT-B/16. That model has open_clip's own
vision and text transformers, which `CxrMtClipModel` (timm vision tower + Hugging Face text tower) cannot
hold, so this module wraps the open_clip model behind the small interface that
`cxr_mtclip.retrieval.embed_dataset` and `cxr_mtclip.evaluation.evaluate.evaluate_models` use:
``config.embed_dim``, ``get_image_features``, ``get_text_features`` and ``head_and_loss`` (an untrained,
seeded ``Linear(embed_dim, 1)`` on (image + text) / 2, like the head of a zero-shot `CxrMtClipModel`).
Besides `backbone.py`, this is the only module that imports open_clip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import BatchEncoding

from ..modeling_cxr_mtclip import CxrMtClipOutput, fuse_embeddings
from ..image_processing_cxr_mtclip import to_rgb
from ..processing_cxr_mtclip import model_inputs, report_list
from ..registry import get_architecture

__all__ = [
    "CLIP_BASELINE_MODEL",
    "CLIP_BASELINE_PRETRAINED",
    "OpenClipBaselineConfig",
    "OpenClipBaselineModel",
    "OpenClipBaselineProcessor",
    "load_open_clip_baseline",
    "open_clip_baseline_files",
    "tiny_open_clip_baseline",
]

CLIP_BASELINE_MODEL = "ViT-B-16"
CLIP_BASELINE_PRETRAINED = "openai"


@dataclass
class OpenClipBaselineConfig:
    """What the wrapped open_clip model is: architecture name, weights tag and embedding size."""

    model_name: str
    pretrained: str | None
    embed_dim: int
    head_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OpenClipBaselineModel(nn.Module):
    """An open_clip CLIP with the retrieval interface of `CxrMtClipModel` (features, fused head).

    Example:
        >>> model, processor = tiny_open_clip_baseline(seed=0)
        >>> model.get_image_features(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 32])
    """

    def __init__(self, clip_model: nn.Module, config: OpenClipBaselineConfig) -> None:
        super().__init__()
        if not callable(getattr(clip_model, "encode_image", None)) or not callable(getattr(clip_model, "encode_text", None)):
            raise ValueError(f"clip_model must be an open_clip model with encode_image/encode_text, got {type(clip_model).__name__}")
        self.config = config
        self.clip = clip_model
        self.classifier = nn.Linear(config.embed_dim, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.head_seed)
            nn.init.normal_(self.classifier.weight, std=0.02)
            nn.init.zeros_(self.classifier.bias)

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Projected image embeddings (B, embed_dim)."""
        return self.clip.encode_image(pixel_values, normalize=normalize)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Projected report embeddings (B, embed_dim); CLIP pools the end-of-text token, so the mask is unused."""
        return self.clip.encode_text(input_ids, normalize=normalize)

    def head_and_loss(
        self,
        image_raw: torch.Tensor | None,
        text_raw: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
    ) -> CxrMtClipOutput:
        """Normalised embeddings and the (untrained) head's logit; the baseline is never trained, so no loss."""
        if return_loss:
            raise ValueError("the CLIP baseline is evaluated zero-shot; it computes no loss")
        image = nn.functional.normalize(image_raw, dim=-1) if image_raw is not None else None
        text = nn.functional.normalize(text_raw, dim=-1) if text_raw is not None else None
        logits = fused = None
        if image_raw is not None and text_raw is not None:
            logits = self.classifier((image_raw + text_raw) / 2).squeeze(-1)
            fused = fuse_embeddings(image, text)
        return CxrMtClipOutput(logits=logits, image_embeds=image, text_embeds=text, fused_embeds=fused)


class OpenClipBaselineProcessor:
    """open_clip's eval image transform and tokenizer -> ``pixel_values``, ``input_ids``, ``attention_mask``."""

    def __init__(self, image_transform: Any, tokenizer: Any) -> None:
        self.image_transform = image_transform
        self.tokenizer = tokenizer

    def process_text(self, text: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Reports -> ``input_ids`` (CLIP's 77-token context: longer reports are truncated) and a padding mask."""
        input_ids = self.tokenizer(report_list(text))
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}

    def process_images(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """Images -> open_clip's eval transform of each (made RGB by `to_rgb` first), stacked."""
        batch = [images] if isinstance(images, Image.Image) else list(images)
        if not batch:
            raise ValueError("no images given")
        return torch.stack([self.image_transform(to_rgb(image)) for image in batch])

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image] | None = None,
        text: str | Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        return_tensors: str = "pt",
    ) -> BatchEncoding:
        return model_inputs(self, images, text, labels, return_tensors)


def open_clip_baseline_files(
    model_name: str = CLIP_BASELINE_MODEL,
    pretrained: str | None = CLIP_BASELINE_PRETRAINED,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The weights file open_clip will load for `model_name`/`pretrained`, from the Hub cache or downloaded.

    For a weights tag (``("ViT-B-16", "openai")``) this is the tag's Hub repo (``timm/vit_base_patch16_clip_224.openai``),
    ``open_clip_model.safetensors`` first, then ``open_clip_pytorch_model.bin``, as open_clip looks them up; for an
    ``hf-hub:`` model, that repo's open_clip weights. FileNotFoundError names the repo, the file and the cache folder
    (offline and not cached, or not downloadable); ValueError for an unknown model or tag.

    Example:
        >>> open_clip_baseline_files("ViT-B-16", "openai")  # doctest: +SKIP
    """
    from ..backbone import HF_HUB_PREFIX, hub_file, resolve_backbone_files

    if model_name.startswith(HF_HUB_PREFIX):
        if pretrained:
            raise ValueError(f"{model_name}: an hf-hub: model carries its own weights; pretrained must be None")
        files = resolve_backbone_files(model_name, cache_dir=cache_dir, weights=True)
        return Path(files.weights_file)
    tag = _pretrained_cfg(model_name, pretrained)
    if tag is None:
        raise ValueError(f"{model_name}: no pretrained weights tag given; the baseline is a pretrained CLIP")
    hub = tag.get("hf_hub", "")
    if not hub:
        raise ValueError(f"open_clip weights {pretrained!r} of {model_name!r} are not on the Hugging Face Hub ({tag.get('url')})")
    repo_id, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip's own order (pretrained._get_safe_alternatives): the safetensors twin first
    safe = ("open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin"
            else filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else filename)
    for name in dict.fromkeys((safe, filename)):
        found = hub_file(repo_id, name, cache_dir=cache_dir, optional=name != filename)
        if found is not None:
            return found
    raise FileNotFoundError(f"hub repo {repo_id!r} has no open_clip weights ({safe} or {filename})")  # pragma: no cover


def _pretrained_cfg(model_name: str, pretrained: str | None) -> dict[str, Any] | None:
    import open_clip

    if model_name not in open_clip.list_models():
        raise ValueError(f"open_clip has no model {model_name!r}; see open_clip.list_models() or use an hf-hub: id")
    if not pretrained:
        return None
    tag = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag:
        raise ValueError(
            f"open_clip has no weights {pretrained!r} for {model_name!r}; "
            f"available: {open_clip.list_pretrained_tags_by_model(model_name)}"
        )
    return tag


def load_open_clip_baseline(
    model_name: str = CLIP_BASELINE_MODEL,
    pretrained: str | None = CLIP_BASELINE_PRETRAINED,
    *,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[OpenClipBaselineModel, OpenClipBaselineProcessor]:
    """`(model, processor)` in eval mode for an open_clip architecture and weights tag, or an ``hf-hub:`` model.

    The weights must load (open_clip's ``require_pretrained``): a model never silently starts from random weights.

    Example:
        >>> model, processor = load_open_clip_baseline("ViT-B-16", "openai")  # doctest: +SKIP
    """
    import open_clip

    hub = model_name.startswith("hf-hub:")
    if hub and pretrained:
        raise ValueError(f"{model_name}: an hf-hub: model carries its own weights; pretrained must be None")
    tag = None if hub else _pretrained_cfg(model_name, pretrained)
    quick_gelu = bool(tag.get("quick_gelu", False)) if tag else False
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained, cache_dir=str(cache_dir) if cache_dir else None, force_quick_gelu=quick_gelu,
        require_pretrained=hub or bool(pretrained),
    )
    output_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    embed_dim = int(output_dim) if output_dim else int(open_clip.get_model_config(model_name)["embed_dim"])
    wrapped = OpenClipBaselineModel(model, OpenClipBaselineConfig(model_name, pretrained, embed_dim, seed))
    if device is not None:
        wrapped.to(device)
    tokenizer = open_clip.get_tokenizer(model_name, cache_dir=str(cache_dir) if cache_dir else None)
    return wrapped.eval(), OpenClipBaselineProcessor(preprocess, tokenizer)


def tiny_open_clip_baseline(
    seed: int = 0, image_size: int | None = None, *, architecture: str = "tiny"
) -> tuple[OpenClipBaselineModel, OpenClipBaselineProcessor]:
    """A random-init open_clip CLIP with the sizes of a registered tiny architecture and CLIP's real tokenizer.

    The offline stand-in for ViT-B-16: depth, width and heads of each tower, the embedding size, patch size,
    image size and normalisation come from `cxr_mtclip.registry` (``tiny``: two layers of width 32, 64 px).

    Example:
        >>> model, processor = tiny_open_clip_baseline(seed=0)
        >>> model.config.embed_dim
        32
    """
    import open_clip
    from open_clip import CLIPTextCfg, CLIPVisionCfg

    arch = get_architecture(architecture)
    vision = arch.open_clip_config["vision_cfg"].get("timm_model_kwargs") or {}
    text = arch.text_config
    embed_dim = int(arch.open_clip_config["embed_dim"])
    image_size = int(image_size or arch.image_size)
    if not {"depth", "embed_dim", "num_heads", "patch_size"} <= set(vision):
        raise ValueError(f"architecture {architecture!r} does not spell out its ViT sizes (timm_model_kwargs)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(
            embed_dim=embed_dim,
            vision_cfg=CLIPVisionCfg(layers=vision["depth"], width=vision["embed_dim"],
                                     head_width=vision["embed_dim"] // vision["num_heads"],
                                     patch_size=vision["patch_size"], image_size=image_size),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=text["hidden_size"],
                                 heads=text["num_attention_heads"], layers=text["num_hidden_layers"]),
        )
    transform = open_clip.image_transform(image_size, is_train=False, mean=arch.image_mean, std=arch.image_std)
    config = OpenClipBaselineConfig(f"{architecture}-clip-{image_size}px (random init)", None, embed_dim, seed)
    return OpenClipBaselineModel(model, config).eval(), OpenClipBaselineProcessor(transform, open_clip.SimpleTokenizer())
