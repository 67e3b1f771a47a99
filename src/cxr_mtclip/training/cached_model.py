"""Training from a frozen-trunk feature cache: the trainable blocks, head and loss run on cached hidden states.

`CachedCxrMtClipModel` wraps a `CxrMtClipModel` (sharing every parameter) so that transformers' Trainer feeds it
the batches of `cxr_mtclip.training.feature_cache.CachedFeatureCollator`; `forward_from_cache` gives the same
losses and gradients as the uncached forward (tests/test_feature_cache.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling_cxr_mtclip import CxrMtClipModel, CxrMtClipOutput, CxrMtClipPreTrainedModel
from ..utils import unwrap_model
from .feature_cache import _MODEL_PARTS, CachedFeatureCollator, FeatureCache, load_or_build_feature_cache

__all__ = [
    "CachedCxrMtClipModel",
    "CachedTrainingInputs",
    "forward_from_cache",
    "image_features_from_hidden",
    "prepare_cached_training",
    "text_features_from_hidden",
]



def _is_timm_vit_block(block: nn.Module) -> bool:
    from timm.models.vision_transformer import Attention, Block

    attn = getattr(block, "attn", None)
    return type(block) is Block and type(attn) is Attention and getattr(attn, "gate", None) is None


def _vit_block_first_token(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """A timm ViT block computed for the class token only (keys/values still from every token)."""
    attn = block.attn
    batch, tokens, _ = hidden.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    width = getattr(attn, "attn_dim", heads * head_dim)
    normed = block.norm1(hidden)
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(normed[:, :1], weight[:width], None if bias is None else bias[:width])
    kv = F.linear(normed, weight[width:], None if bias is None else bias[width:])
    q = q.reshape(batch, 1, heads, head_dim).transpose(1, 2)
    k, v = kv.reshape(batch, tokens, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(
        q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0, scale=attn.scale
    )
    scale_norm = getattr(attn, "norm", None) or nn.Identity()
    out = attn.proj_drop(attn.proj(scale_norm(out.transpose(1, 2).reshape(batch, 1, width))))
    first = hidden[:, :1] + block.drop_path1(block.ls1(out))
    return first + block.drop_path2(block.ls2(block.mlp(block.norm2(first))))


def _is_bert_layer(layer: nn.Module) -> bool:
    from transformers.models.bert.modeling_bert import BertLayer, BertSelfAttention

    attn = getattr(getattr(layer, "attention", None), "self", None)
    return (
        type(layer) is BertLayer
        and isinstance(attn, BertSelfAttention)
        and getattr(attn, "position_embedding_type", "absolute") == "absolute"
        and not getattr(attn, "is_decoder", False)
        and not getattr(layer, "add_cross_attention", False)
    )


def _bert_layer_first_token(layer: nn.Module, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
    """A BERT layer computed for the [CLS] token only (keys/values still from every unmasked token)."""
    attn = layer.attention.self
    batch, tokens, _ = hidden.shape
    heads, head_dim = attn.num_attention_heads, attn.attention_head_size
    q = attn.query(hidden[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
    k = attn.key(hidden).view(batch, tokens, heads, head_dim).transpose(1, 2)
    v = attn.value(hidden).view(batch, tokens, heads, head_dim).transpose(1, 2)
    context = F.scaled_dot_product_attention(
        q, k, v, attn_mask=additive_mask, dropout_p=attn.dropout.p if attn.training else 0.0,
        scale=getattr(attn, "scaling", head_dim**-0.5),
    )
    attended = layer.attention.output(context.transpose(1, 2).reshape(batch, 1, heads * head_dim), hidden[:, :1])
    return layer.output(layer.intermediate(attended), attended)


def image_features_from_hidden(
    model: nn.Module, image_hidden: torch.Tensor, *, start: int | None = None, first_token_only: bool = True
) -> torch.Tensor:
    """Projected (unnormalised) image features from the input of block `start` (default: first trainable).

    With `first_token_only` and class-token pooling, the last block is computed for the class token
    alone: every other token's output is discarded by the pooling, so the features and every gradient
    are the same, for a fraction of the last block's cost.
    """
    visual = unwrap_model(model, *_MODEL_PARTS).backbone.visual
    start = visual.first_trainable_block() if start is None else start
    blocks = visual.trunk.blocks
    trunk = visual.trunk
    pooled_by_first = getattr(trunk, "global_pool", None) == "token" and getattr(trunk, "attn_pool", None) is None
    if first_token_only and start < len(blocks) and pooled_by_first and _is_timm_vit_block(blocks[-1]):
        hidden = visual.run_blocks(image_hidden, start, len(blocks) - 1)
        return visual.project(_vit_block_first_token(blocks[-1], hidden))
    return visual.project(visual.run_blocks(image_hidden, start))


def text_features_from_hidden(
    model: nn.Module,
    text_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    start: int | None = None,
    first_token_only: bool = True,
) -> torch.Tensor:
    """Projected (unnormalised) report features from the input of layer `start` (default: first trainable).

    With `first_token_only` and [CLS] pooling, the last layer is computed for [CLS] alone (same
    features and gradients, a fraction of the cost).
    """
    text = unwrap_model(model, *_MODEL_PARTS).backbone.text
    start = text.first_trainable_block() if start is None else start
    layers = text.transformer.encoder.layer
    pooler = text.pooler
    cls_pooled = type(pooler).__name__ == "ClsLastHiddenStatePooler" and getattr(pooler, "cls_token_position", 0) == 0
    if first_token_only and start < len(layers) and cls_pooled and _is_bert_layer(layers[-1]):
        hidden = text.run_blocks(text_hidden, attention_mask, start, len(layers) - 1)
        mask = text.extended_mask(attention_mask, hidden.dtype)
        return text.project(_bert_layer_first_token(layers[-1], hidden, mask), attention_mask)
    return text.project(text.run_blocks(text_hidden, attention_mask, start), attention_mask)


def forward_from_cache(
    model: nn.Module,
    image_hidden: torch.Tensor,
    text_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None = None,
    return_loss: bool | None = None,
    *,
    first_token_only: bool = True,
) -> CxrMtClipOutput:
    """The model's forward from cached frozen-trunk states: trainable blocks, projections, head and loss.

    Cached states are cast to the model's dtype and moved to its device. Equals `model(...)` on the
    original inputs (frozen part in eval mode), losses and gradients alike.

    Example:
        >>> batch = CachedFeatureCollator()([cache[i] for i in range(8)])  # doctest: +SKIP
        >>> forward_from_cache(model, **batch).loss.backward()  # doctest: +SKIP
    """
    core = unwrap_model(model, *_MODEL_PARTS)
    param = core.classifier.weight
    device, dtype = param.device, param.dtype
    image_hidden = image_hidden.to(device=device, dtype=dtype, non_blocking=True)
    text_hidden = text_hidden.to(device=device, dtype=dtype, non_blocking=True)
    attention_mask = attention_mask.to(device=device, non_blocking=True)
    if labels is not None:
        labels = labels.to(device=device, non_blocking=True)
    image_raw = image_features_from_hidden(core, image_hidden, first_token_only=first_token_only)
    text_raw = text_features_from_hidden(core, text_hidden, attention_mask, first_token_only=first_token_only)
    return core.head_and_loss(image_raw, text_raw, labels=labels, return_loss=return_loss)


class CachedCxrMtClipModel(CxrMtClipPreTrainedModel):
    """A `CxrMtClipModel` whose forward takes cached frozen-trunk states, for transformers' Trainer.

    Shares every module (and so every parameter) with the wrapped model and has the same state-dict
    keys; `save_pretrained` saves the wrapped `CxrMtClipModel`, so a checkpoint reloads with
    `CxrMtClipModel.from_pretrained`.

    Example:
        >>> trainer = Trainer(model=CachedCxrMtClipModel(model, cache=cache), train_dataset=cache,
        ...                   data_collator=CachedFeatureCollator(), args=args)  # doctest: +SKIP
    """

    main_input_name = "image_hidden"

    def __init__(self, model: CxrMtClipModel, *, cache: FeatureCache | None = None, first_token_only: bool = True) -> None:
        core = unwrap_model(model, *_MODEL_PARTS)
        super().__init__(core.config)
        self.backbone = core.backbone
        self.dropout = core.dropout
        self.classifier = core.classifier
        self.__dict__["wrapped_model"] = core  # not a registered submodule: its modules are registered above
        self.first_token_only = first_token_only
        if cache is not None:
            starts = (core.backbone.visual.first_trainable_block(), core.backbone.text.first_trainable_block())
            if starts != (cache.image_start, cache.text_start):
                raise ValueError(
                    f"{cache.cache_dir}: cached states enter block image={cache.image_start}/text={cache.text_start}, "
                    f"the model's first trainable blocks are image={starts[0]}/text={starts[1]}"
                )

    def forward(
        self,
        image_hidden: torch.Tensor,
        text_hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
    ) -> CxrMtClipOutput:
        return forward_from_cache(
            self.wrapped_model, image_hidden, text_hidden, attention_mask, labels, return_loss,
            first_token_only=self.first_token_only,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Save the wrapped `CxrMtClipModel` (same weights, its class in config.json)."""
        return self.wrapped_model.save_pretrained(save_directory, *args, **kwargs)


@dataclass
class CachedTrainingInputs:
    """What a Trainer needs to train from feature caches: the wrapped model, the cached splits and the collator."""

    model: CachedCxrMtClipModel
    train_dataset: FeatureCache
    eval_dataset: FeatureCache | None
    data_collator: CachedFeatureCollator


def prepare_cached_training(
    model: CxrMtClipModel,
    processor: Any,
    train_dataset: Any,
    cache_dir: str | os.PathLike,
    *,
    eval_dataset: Any = None,
    rebuild_stale: bool = False,
    **build_kwargs: Any,
) -> CachedTrainingInputs:
    """Load or build ``<cache_dir>/train`` (and ``<cache_dir>/eval``) and wrap the model to train from them.

    Example:
        >>> cached = prepare_cached_training(model, processor, splits["train"], "cache", eval_dataset=splits["validation"])  # doctest: +SKIP
        >>> trainer = CxrMtClipTrainer(model=cached.model, train_dataset=cached.train_dataset,
        ...                            eval_dataset=cached.eval_dataset, data_collator=cached.data_collator,
        ...                            processing_class=processor, args=args)  # doctest: +SKIP
    """
    folder = Path(cache_dir)
    train = load_or_build_feature_cache(model, processor, train_dataset, folder / "train", rebuild_stale=rebuild_stale, **build_kwargs)
    evaluation = None
    if eval_dataset is not None:
        evaluation = load_or_build_feature_cache(
            model, processor, eval_dataset, folder / "eval", rebuild_stale=rebuild_stale, **build_kwargs
        )
    return CachedTrainingInputs(CachedCxrMtClipModel(model, cache=train), train, evaluation, CachedFeatureCollator())
