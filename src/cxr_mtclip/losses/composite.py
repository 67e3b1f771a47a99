"""The paper's objective: bce_weight * BCE + supcon_weight * SupCon + clip_weight * CLIP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import _as_vector, _at_least_float32, _check_matrix, _check_positive, _check_weight
from .contrastive import DEFAULT_SUPCON_TEMPERATURE, clip_loss, supervised_contrastive_loss
from .distributed import _all_gather_cat, _gather_sizes, _gather_with_grad, _rank_and_world_size


PAPER_LOSS_WEIGHTS: dict[str, float] = {"bce_weight": 0.69, "supcon_weight": 1.97, "clip_weight": 0.46}
"""The paper's loss weights (arXiv 2601.05399: 20 trials of Bayesian optimisation over [0.1, 1] x [0.2, 2] x [0.2, 2]).

The one place these numbers live: the config defaults, the model card, the HPO and the ablations read them here."""
LOSS_TERMS = ("bce_loss", "supcon_loss", "clip_loss")
"""Names of the three unweighted terms, as `CompositeLossOutput` and `CxrMtClipOutput` fields and in logs."""



@dataclass
class CompositeLossOutput:
    """Total loss and its three (unweighted) terms, all scalar tensors in the autograd graph."""

    loss: Tensor
    bce_loss: Tensor
    supcon_loss: Tensor
    clip_loss: Tensor


class CompositeLoss(nn.Module):
    """``bce_weight * BCE + supcon_weight * SupCon + clip_weight * CLIP`` (the paper's Algorithm 1).

    - BCE: ``BCEWithLogits`` of the single abnormality logit against the 0/1 label (1 = abnormal),
      mean over the batch.
    - SupCon: :func:`supervised_contrastive_loss` on ``fused_embeds`` with the class labels.
    - CLIP: :func:`clip_loss` on ``image_embeds`` / ``text_embeds`` with ``logit_scale``.

    With ``gather_distributed=True`` and ``torch.distributed`` initialised with ``world_size > 1``,
    all inputs are gathered from every rank first (gradients kept for the local shard), so the value
    on every rank equals the single-process loss over the global batch, BCE included; see the module
    docstring for how this interacts with DDP's gradient averaging. Otherwise nothing is gathered.

    Example:
        >>> loss_fn = CompositeLoss()
        >>> out = loss_fn(
        ...     logits=torch.randn(4), labels=torch.tensor([0, 1, 1, 0]),
        ...     image_embeds=torch.randn(4, 8), text_embeds=torch.randn(4, 8),
        ...     fused_embeds=torch.randn(4, 8), logit_scale=torch.tensor(14.3),
        ... )
        >>> sorted(vars(out))
        ['bce_loss', 'clip_loss', 'loss', 'supcon_loss']
    """

    def __init__(
        self,
        bce_weight: float = PAPER_LOSS_WEIGHTS["bce_weight"],
        supcon_weight: float = PAPER_LOSS_WEIGHTS["supcon_weight"],
        clip_weight: float = PAPER_LOSS_WEIGHTS["clip_weight"],
        supcon_temperature: float = DEFAULT_SUPCON_TEMPERATURE,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.bce_weight = _check_weight("bce_weight", bce_weight)
        self.supcon_weight = _check_weight("supcon_weight", supcon_weight)
        self.clip_weight = _check_weight("clip_weight", clip_weight)
        self.supcon_temperature = _check_positive("supcon_temperature", supcon_temperature)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:
        return (
            f"bce_weight={self.bce_weight}, supcon_weight={self.supcon_weight}, "
            f"clip_weight={self.clip_weight}, supcon_temperature={self.supcon_temperature}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        image_embeds: Tensor,
        text_embeds: Tensor,
        fused_embeds: Tensor,
        logit_scale: Tensor | float,
    ) -> CompositeLossOutput:
        """Compute the weighted loss and its terms.

        Args:
            logits: (batch,) or (batch, 1) abnormality logits (before the sigmoid).
            labels: (batch,) or (batch, 1) labels, 0 = normal, 1 = abnormal (int, bool or float).
            image_embeds, text_embeds, fused_embeds: (batch, dim) embeddings.
            logit_scale: CLIP multiplier, already exponentiated.
        """
        logits = _as_vector("logits", logits)
        labels = _as_vector("labels", labels)
        if not logits.is_floating_point():
            raise ValueError(f"`logits` must be a floating-point tensor, got dtype {logits.dtype}")
        for name, embeds in (
            ("image_embeds", image_embeds),
            ("text_embeds", text_embeds),
            ("fused_embeds", fused_embeds),
        ):
            _check_matrix(name, embeds)
        batch_sizes = {
            "logits": logits.shape[0],
            "labels": labels.shape[0],
            "image_embeds": image_embeds.shape[0],
            "text_embeds": text_embeds.shape[0],
            "fused_embeds": fused_embeds.shape[0],
        }
        if len(set(batch_sizes.values())) != 1:
            raise ValueError(f"all inputs must have the same batch size, got {batch_sizes}")
        binary = (labels == 0) | (labels == 1)
        if not bool(binary.all()):
            bad = labels[~binary].unique()[:5].tolist()
            raise ValueError(
                f"`labels` must be 0 (normal) or 1 (abnormal), got other values such as {bad}"
            )

        _, world_size = _rank_and_world_size()
        if self.gather_distributed and world_size > 1:
            sizes = _gather_sizes(logits.shape[0], logits.device)
            logits = _gather_with_grad(logits, sizes)
            image_embeds = _gather_with_grad(image_embeds, sizes)
            text_embeds = _gather_with_grad(text_embeds, sizes)
            fused_embeds = _gather_with_grad(fused_embeds, sizes)
            labels = _all_gather_cat(labels, sizes)

        logits = _at_least_float32(logits)
        bce = F.binary_cross_entropy_with_logits(logits, labels.to(device=logits.device, dtype=logits.dtype))
        supcon = supervised_contrastive_loss(
            fused_embeds, labels.to(torch.long), temperature=self.supcon_temperature
        )
        contrastive = clip_loss(image_embeds, text_embeds, logit_scale)
        loss = self.bce_weight * bce + self.supcon_weight * supcon + self.clip_weight * contrastive
        return CompositeLossOutput(loss=loss, bce_loss=bce, supcon_loss=supcon, clip_loss=contrastive)


