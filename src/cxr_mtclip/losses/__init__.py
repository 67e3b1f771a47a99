"""Loss functions of the multi-task objective: BCE + supervised contrastive + CLIP (tensors only).

This package knows nothing about models: every function takes tensors and returns a scalar tensor.

- `contrastive`: `clip_loss`, `supervised_contrastive_loss`.
- `composite`: `CompositeLoss`, the paper's weighted sum (plus the optional multi-label terms), and `PAPER_LOSS_WEIGHTS`.
- `multilabel`: per-finding BCE and label-overlap-weighted SupCon (beyond the paper).
- `distributed`: the all-gathers behind global-batch negatives.

Global-batch negatives
----------------------
With ``torch.distributed`` initialised and ``world_size = N > 1``, :class:`CompositeLoss` (with
``gather_distributed=True``) all-gathers the logits, labels and the three embeddings from every rank
before computing *any* term, so every rank computes the identical loss over the ``N x B`` global
batch, equal to the single-process loss on the same examples. BCE is gathered too (not kept local):
otherwise the total loss would be a mix of a global contrastive mean and a local BCE mean and could
not equal the single-process value.

Gradient scaling and DDP. The gathered copies of other ranks' shards are constants; only the local
shard stays in the autograd graph. Because every rank computes the same global loss ``L``, the
gradient a rank receives for its local shard is ``world_size * dL/d(local shard)``: exactly what a
differentiable all-gather would give (it sums the identical contributions of all ``N`` ranks), but
without the extra reduce-scatter. DDP then *averages* parameter gradients over the ``N`` ranks, which
divides by ``N`` again, so after ``backward`` every parameter gradient (towers, head and also the
shared ``logit_scale``, which enters the loss directly and is not rescaled) equals the single-process
gradient of ``L`` on the global batch. Without the factor, per-sample parameters would get ``1/N`` of
it while ``logit_scale`` would get all of it. Consequence: use the gathered tensors only in a loss
that every rank computes identically (as here); do not multiply the loss by ``world_size`` yourself.
"""

from .composite import LOSS_TERMS, MULTILABEL_LOSS_TERMS, PAPER_LOSS_WEIGHTS, CompositeLoss, CompositeLossOutput
from .contrastive import DEFAULT_SUPCON_TEMPERATURE, clip_loss, supervised_contrastive_loss
from .distributed import gather_no_grad, gather_with_grad
from .multilabel import (
    CLASS_BALANCE_METHODS,
    MultiLabelLoss,
    MultiLabelLossOutput,
    finding_class_weights,
    label_overlap_weights,
    multilabel_bce_loss,
    multilabel_supervised_contrastive_loss,
)

__all__ = [
    "CLASS_BALANCE_METHODS",
    "DEFAULT_SUPCON_TEMPERATURE",
    "LOSS_TERMS",
    "MULTILABEL_LOSS_TERMS",
    "PAPER_LOSS_WEIGHTS",
    "CompositeLoss",
    "CompositeLossOutput",
    "MultiLabelLoss",
    "MultiLabelLossOutput",
    "clip_loss",
    "finding_class_weights",
    "gather_no_grad",
    "gather_with_grad",
    "label_overlap_weights",
    "multilabel_bce_loss",
    "multilabel_supervised_contrastive_loss",
    "supervised_contrastive_loss",
]
