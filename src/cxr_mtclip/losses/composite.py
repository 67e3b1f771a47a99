"""The paper's objective: bce_weight * BCE + supcon_weight * SupCon + clip_weight * CLIP (+ optional multi-label terms)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import _as_vector, _at_least_float32, _check_matrix, _check_positive, _check_weight
from .contrastive import DEFAULT_SUPCON_TEMPERATURE, clip_loss, supervised_contrastive_loss
from .distributed import _all_gather_cat, _gather_sizes, _gather_with_grad, _rank_and_world_size
from .multilabel import _as_known, _as_multi_hot, multilabel_bce_loss, multilabel_supervised_contrastive_loss


PAPER_LOSS_WEIGHTS: dict[str, float] = {"bce_weight": 0.69, "supcon_weight": 1.97, "clip_weight": 0.46}
"""The paper's loss weights (arXiv 2601.05399: 20 trials of Bayesian optimisation over [0.1, 1] x [0.2, 2] x [0.2, 2]).

The one place these numbers live: the config defaults, the model card, the HPO and the ablations read them here."""
LOSS_TERMS = ("bce_loss", "supcon_loss", "clip_loss")
"""Names of the three unweighted terms, as `CompositeLossOutput` and `CxrMtClipOutput` fields and in logs."""
MULTILABEL_LOSS_TERMS = ("finding_bce_loss", "multilabel_supcon_loss")
"""The optional multi-label terms (beyond the paper): present in the outputs and logs only when their weight is > 0."""



@dataclass
class CompositeLossOutput:
    """Total loss and its three (unweighted) terms, all scalar tensors in the autograd graph."""

    loss: Tensor
    bce_loss: Tensor
    supcon_loss: Tensor
    clip_loss: Tensor
    finding_bce_loss: Tensor | None = None  # None unless finding_bce_weight > 0
    multilabel_supcon_loss: Tensor | None = None  # None unless multilabel_supcon_weight > 0


class CompositeLoss(nn.Module):
    """``bce_weight * BCE + supcon_weight * SupCon + clip_weight * CLIP`` (the paper's Algorithm 1).

    - BCE: ``BCEWithLogits`` of the single abnormality logit against the 0/1 label (1 = abnormal),
      mean over the batch.
    - SupCon: :func:`supervised_contrastive_loss` on ``fused_embeds`` with the class labels.
    - CLIP: :func:`clip_loss` on ``image_embeds`` / ``text_embeds`` with ``logit_scale``.

    Beyond the paper, two optional terms are added when their weight is > 0 (`cxr_mtclip.losses.multilabel`):
    ``finding_bce_weight * multilabel_bce_loss(finding_logits, finding_labels)`` and
    ``multilabel_supcon_weight * multilabel_supervised_contrastive_loss(fused_embeds, finding_labels)`` (with
    ``multilabel_supcon_include_label`` the binary label is appended to every finding set as one more element);
    studies whose findings are unknown (``finding_known`` False) take no part in them.

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
        finding_bce_weight: float = 0.0,
        multilabel_supcon_weight: float = 0.0,
        multilabel_supcon_temperature: float | None = None,
        multilabel_supcon_include_label: bool = True,
        finding_positive_weight: Tensor | None = None,
        finding_negative_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.bce_weight = _check_weight("bce_weight", bce_weight)
        self.supcon_weight = _check_weight("supcon_weight", supcon_weight)
        self.clip_weight = _check_weight("clip_weight", clip_weight)
        self.supcon_temperature = _check_positive("supcon_temperature", supcon_temperature)
        self.gather_distributed = bool(gather_distributed)
        self.finding_bce_weight = _check_weight("finding_bce_weight", finding_bce_weight)
        self.multilabel_supcon_weight = _check_weight("multilabel_supcon_weight", multilabel_supcon_weight)
        self.multilabel_supcon_temperature = _check_positive(
            "multilabel_supcon_temperature",
            self.supcon_temperature if multilabel_supcon_temperature is None else multilabel_supcon_temperature,
        )
        self.multilabel_supcon_include_label = bool(multilabel_supcon_include_label)
        self.finding_positive_weight = finding_positive_weight
        self.finding_negative_weight = finding_negative_weight

    def extra_repr(self) -> str:
        return (
            f"bce_weight={self.bce_weight}, supcon_weight={self.supcon_weight}, "
            f"clip_weight={self.clip_weight}, supcon_temperature={self.supcon_temperature}, "
            f"gather_distributed={self.gather_distributed}"
            + (f", finding_bce_weight={self.finding_bce_weight}, multilabel_supcon_weight="
               f"{self.multilabel_supcon_weight}" if self.finding_bce_weight or self.multilabel_supcon_weight else "")
        )

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        image_embeds: Tensor,
        text_embeds: Tensor,
        fused_embeds: Tensor,
        logit_scale: Tensor | float,
        finding_logits: Tensor | None = None,
        finding_labels: Tensor | None = None,
        finding_known: Tensor | None = None,
    ) -> CompositeLossOutput:
        """Compute the weighted loss and its terms.

        Args:
            logits: (batch,) or (batch, 1) abnormality logits (before the sigmoid).
            labels: (batch,) or (batch, 1) labels, 0 = normal, 1 = abnormal (int, bool or float).
            image_embeds, text_embeds, fused_embeds: (batch, dim) embeddings.
            logit_scale: CLIP multiplier, already exponentiated.
            finding_logits: (batch, n_findings) logits of the multi-label head (needed when finding_bce_weight > 0).
            finding_labels: (batch, n_findings) 0/1 multi-hot findings (needed when a multi-label weight is > 0).
            finding_known: (batch,) bool, False where a study's findings are unknown (default: all known).
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

        multilabel = self.finding_bce_weight > 0 or self.multilabel_supcon_weight > 0
        if multilabel:
            finding_labels, finding_known, finding_logits = self._check_findings(
                logits.shape[0], finding_labels, finding_known, finding_logits, logits.device
            )

        _, world_size = _rank_and_world_size()
        if self.gather_distributed and world_size > 1:
            sizes = _gather_sizes(logits.shape[0], logits.device)
            logits = _gather_with_grad(logits, sizes)
            image_embeds = _gather_with_grad(image_embeds, sizes)
            text_embeds = _gather_with_grad(text_embeds, sizes)
            fused_embeds = _gather_with_grad(fused_embeds, sizes)
            labels = _all_gather_cat(labels, sizes)
            if multilabel:
                finding_labels = _all_gather_cat(finding_labels, sizes)
                finding_known = _all_gather_cat(finding_known, sizes)
                if finding_logits is not None:
                    finding_logits = _gather_with_grad(finding_logits, sizes)

        logits = _at_least_float32(logits)
        bce = F.binary_cross_entropy_with_logits(logits, labels.to(device=logits.device, dtype=logits.dtype))
        supcon = supervised_contrastive_loss(
            fused_embeds, labels.to(torch.long), temperature=self.supcon_temperature
        )
        contrastive = clip_loss(image_embeds, text_embeds, logit_scale)
        loss = self.bce_weight * bce + self.supcon_weight * supcon + self.clip_weight * contrastive
        finding_bce = multilabel_supcon = None
        if self.finding_bce_weight > 0:
            finding_bce = multilabel_bce_loss(
                finding_logits, finding_labels, finding_known, self.finding_positive_weight, self.finding_negative_weight
            )
            loss = loss + self.finding_bce_weight * finding_bce
        if self.multilabel_supcon_weight > 0:
            targets = finding_labels.to(fused_embeds.device)
            if self.multilabel_supcon_include_label:
                targets = torch.cat([targets, labels.to(device=targets.device, dtype=targets.dtype)[:, None]], dim=1)
            multilabel_supcon = multilabel_supervised_contrastive_loss(
                fused_embeds, targets, finding_known, temperature=self.multilabel_supcon_temperature
            )
            loss = loss + self.multilabel_supcon_weight * multilabel_supcon
        return CompositeLossOutput(loss=loss, bce_loss=bce, supcon_loss=supcon, clip_loss=contrastive,
                                   finding_bce_loss=finding_bce, multilabel_supcon_loss=multilabel_supcon)

    def _check_findings(
        self, batch: int, finding_labels: Any, finding_known: Any, finding_logits: Any, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Validated multi-label inputs: (labels float (batch, F), known bool (batch,), logits or None)."""
        if finding_labels is None:
            raise ValueError(
                "finding_bce_weight / multilabel_supcon_weight > 0 need `finding_labels` (batch, n_findings): give the "
                "data a finding_labels column (cxr_mtclip.data.findings) and train with CxrMtClipDataCollator"
            )
        finding_labels = _as_multi_hot("finding_labels", finding_labels, batch)
        finding_known = _as_known(finding_known, batch, finding_labels.device)
        if self.finding_bce_weight > 0:
            if finding_logits is None:
                raise ValueError("finding_bce_weight > 0 needs `finding_logits` from a multi-label head (config.finding_names)")
            if not isinstance(finding_logits, Tensor) or finding_logits.shape != finding_labels.shape:
                shape = tuple(finding_logits.shape) if isinstance(finding_logits, Tensor) else type(finding_logits).__name__
                raise ValueError(
                    f"`finding_logits` must have the shape of `finding_labels` {tuple(finding_labels.shape)}, got {shape}"
                )
        return finding_labels, finding_known, finding_logits


