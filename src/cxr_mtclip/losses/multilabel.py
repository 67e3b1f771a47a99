"""Multi-label findings (beyond the paper): per-finding BCE and label-overlap-weighted SupCon."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import _as_vector, _at_least_float32, _check_matrix, _check_positive
from .contrastive import DEFAULT_SUPCON_TEMPERATURE
from .distributed import _all_gather_cat, _gather_sizes, _gather_with_grad, _rank_and_world_size

CLASS_BALANCE_METHODS = ("pos_weight", "effective_number")
DEFAULT_EFFECTIVE_NUMBER_BETA = 0.999


def _as_multi_hot(name: str, targets: Tensor, batch: int | None = None) -> Tensor:
    """Validate a (batch, n_findings) 0/1 matrix (bool, int or float) and return it as float."""
    if not isinstance(targets, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor of shape (batch, n_findings), got {type(targets).__name__}")
    if targets.ndim != 2:
        raise ValueError(f"`{name}` must have shape (batch, n_findings), got shape {tuple(targets.shape)}")
    if batch is not None and targets.shape[0] != batch:
        raise ValueError(f"`{name}` has {targets.shape[0]} rows; expected {batch} (one row per study)")
    if targets.is_complex():
        raise ValueError(f"`{name}` must be 0/1 (bool, int or float), got dtype {targets.dtype}")
    binary = (targets == 0) | (targets == 1)
    if not bool(binary.all()):
        bad = targets[~binary].unique()[:5].tolist()
        raise ValueError(f"`{name}` must be a 0/1 multi-hot matrix, got other values such as {bad}")
    return targets if targets.is_floating_point() else targets.float()


def _as_known(known: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """Validate the (batch,) "finding labels are known" mask; ``None`` means every study is known."""
    if known is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    known = _as_vector("known", known)
    if known.shape[0] != batch:
        raise ValueError(f"`known` has {known.shape[0]} entries; expected {batch} (one per study)")
    if known.dtype != torch.bool:
        if known.is_floating_point() or known.is_complex() or not bool(((known == 0) | (known == 1)).all()):
            raise ValueError(f"`known` must be a bool (or 0/1 integer) mask, got dtype {known.dtype}")
        known = known.to(torch.bool)
    return known.to(device)


def finding_class_weights(
    finding_labels: Tensor,
    known: Tensor | None = None,
    method: str = "pos_weight",
    beta: float = DEFAULT_EFFECTIVE_NUMBER_BETA,
) -> tuple[Tensor, Tensor]:
    """Per-finding weights of positive and negative targets, from training-set counts.

    Counts ``n_pos[f]`` / ``n_neg[f]`` are taken over the known studies; a count of 0 is treated as
    1 (the weight of a class that never occurs does not matter, and this keeps it finite).

    * ``"pos_weight"``: ``positive = n_neg / n_pos``, ``negative = 1``: the ``pos_weight`` that
      PyTorch's ``BCEWithLogitsLoss`` documentation suggests (negatives over positives), so each
      finding's positives weigh as much in total as its negatives.
    * ``"effective_number"``: class-balanced weights of Cui et al. 2019 ("Class-Balanced Loss Based
      on Effective Number of Samples", CVPR), applied to the two classes (absent/present) of each
      finding: ``E_n = (1 - beta**n) / (1 - beta)``, weight ``~ 1 / E_n``, scaled so that a
      finding's two weights sum to 2 (the number of classes, as in the paper).

    Args:
        finding_labels: (n_studies, n_findings) 0/1 multi-hot matrix of the training split.
        known: (n_studies,) bool mask; unknown studies are not counted (default: all known).
        method: one of :data:`CLASS_BALANCE_METHODS`.
        beta: ``0 <= beta < 1`` for ``"effective_number"`` (Cui et al. use 0.9 ... 0.9999).

    Returns:
        ``(positive_weight, negative_weight)``, float32 tensors of shape (n_findings,), to pass to
        :func:`multilabel_bce_loss` / :class:`MultiLabelLoss`.

    Example:
        >>> pos, neg = finding_class_weights(torch.tensor([[1, 0], [0, 0], [0, 1], [0, 1]]))
        >>> pos.tolist(), neg.tolist()
        ([3.0, 1.0], [1.0, 1.0])
    """
    targets = _as_multi_hot("finding_labels", finding_labels)
    known = _as_known(known, targets.shape[0], targets.device)
    if method not in CLASS_BALANCE_METHODS:
        raise ValueError(f"`method` must be one of {CLASS_BALANCE_METHODS}, got {method!r}")
    counted = targets[known].double()
    n_pos = counted.sum(dim=0).clamp(min=1)
    n_neg = (1 - counted).sum(dim=0).clamp(min=1)
    if method == "pos_weight":
        return (n_neg / n_pos).float(), torch.ones_like(n_pos, dtype=torch.float32)
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"`beta` must be in [0, 1), got {beta}")
    inverse_pos = (1 - beta) / (1 - beta**n_pos)
    inverse_neg = (1 - beta) / (1 - beta**n_neg)
    scale = 2 / (inverse_pos + inverse_neg)
    return (inverse_pos * scale).float(), (inverse_neg * scale).float()


def multilabel_bce_loss(
    logits: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    positive_weight: Tensor | None = None,
    negative_weight: Tensor | None = None,
) -> Tensor:
    """Binary cross-entropy per finding, averaged over the known studies and all findings.

    For study ``i`` and finding ``f`` with logit ``x``, target ``y``, weights ``p_f`` (positive) and
    ``n_f`` (negative)::

        l_if = -( p_f * y * log(sigmoid(x)) + n_f * (1 - y) * log(1 - sigmoid(x)) )

    the loss is the mean of ``l_if`` over the known studies and all findings, which with
    ``negative_weight=None`` equals ``torch.nn.BCEWithLogitsLoss(pos_weight=positive_weight)`` on
    the known rows. Unknown studies (``known`` False, e.g. OpenI's ``No Indexing``) contribute
    nothing and get zero gradient; if no study is known the result is an exact zero still connected
    to the graph. Log-sigmoids are used directly, so large logits stay finite.

    Args:
        logits: (batch, n_findings) finding logits (before the sigmoid).
        targets: (batch, n_findings) 0/1 multi-hot finding labels (bool, int or float).
        known: (batch,) bool mask of studies whose findings are known (default: all).
        positive_weight, negative_weight: (n_findings,) weights, e.g. from
            :func:`finding_class_weights` (default 1).

    Example:
        >>> round(multilabel_bce_loss(torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]])).item(), 4)  # log 2
        0.6931
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must be a floating-point tensor of shape (batch, n_findings), got {shape}")
    targets = _as_multi_hot("targets", targets, logits.shape[0])
    if targets.shape != logits.shape:
        raise ValueError(
            f"`targets` has shape {tuple(targets.shape)} but `logits` has shape {tuple(logits.shape)}; "
            "expected one target per logit"
        )
    known = _as_known(known, logits.shape[0], logits.device)
    logits = _at_least_float32(logits)
    targets = targets.to(device=logits.device, dtype=logits.dtype)
    weights = {}
    for name, weight in (("positive_weight", positive_weight), ("negative_weight", negative_weight)):
        if weight is None:
            weights[name] = None
            continue
        if not isinstance(weight, Tensor) or weight.shape != (logits.shape[1],):
            shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"`{name}` must be a tensor of shape ({logits.shape[1]},) (one per finding), got {shape}")
        if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise ValueError(f"`{name}` must be finite and >= 0")
        weights[name] = weight.to(device=logits.device, dtype=logits.dtype)
    positive_term = targets * F.logsigmoid(logits)
    negative_term = (1 - targets) * F.logsigmoid(-logits)
    if weights["positive_weight"] is not None:
        positive_term = positive_term * weights["positive_weight"]
    if weights["negative_weight"] is not None:
        negative_term = negative_term * weights["negative_weight"]
    per_element = -(positive_term + negative_term)
    per_element = per_element.masked_fill(~known[:, None], 0.0)
    return per_element.sum() / (known.sum() * logits.shape[1]).clamp(min=1)


def label_overlap_weights(targets: Tensor) -> Tensor:
    """Jaccard similarity of every pair of finding sets: ``|Y_i & Y_j| / |Y_i | Y_j|``.

    Two empty sets (two studies with no finding) have similarity 1, so normal studies are each
    other's full positives as in the binary loss.

    Args:
        targets: (batch, n_findings) 0/1 multi-hot matrix.

    Returns:
        (batch, batch) float tensor in [0, 1] with ones on the diagonal.

    Example:
        >>> label_overlap_weights(torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])).tolist()
        [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    targets = _as_multi_hot("targets", targets).float()
    intersection = targets @ targets.T
    sizes = targets.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def multilabel_supervised_contrastive_loss(
    features: Tensor,
    targets: Tensor,
    known: Tensor | None = None,
    temperature: float = DEFAULT_SUPCON_TEMPERATURE,
) -> Tensor:
    """Supervised contrastive loss whose positives are weighted by finding-set overlap (Jaccard).

    Khosla et al. 2020's ``L_out`` (see :func:`supervised_contrastive_loss`) with the 0/1
    "same label" indicator replaced by the Jaccard similarity ``w_ij`` of the two studies' finding
    sets (:func:`label_overlap_weights`), the idea of the Jaccard-similarity contrastive loss of
    Lin et al. 2023 ("An Effective Deployment of Contrastive Learning in Multi-label Text
    Classification", Findings of ACL; arXiv:2212.00552). The exact form used here: for a known
    anchor ``i`` and ``A(i)`` the known studies other than ``i``::

        L_i = -1/W_i * sum_{j in A(i)} w_ij * log( exp(z_i.z_j / t) / sum_{a in A(i)} exp(z_i.z_a / t) )
        W_i = sum_{j in A(i)} w_ij

    and the loss is the mean of ``L_i`` over anchors with ``W_i > 0``. When every study has exactly
    one finding, ``w_ij`` is 1 for the same finding and 0 otherwise and this is exactly
    :func:`supervised_contrastive_loss` with the finding as the class. Studies with no finding have
    Jaccard 1 with each other and 0 with the rest. Unknown studies (``known`` False) are dropped
    entirely (neither anchors, positives nor negatives): the loss equals the loss of the known
    sub-batch, and their features get zero gradient. No anchor with ``W_i > 0`` (e.g. one known
    study) gives an exact zero connected to the graph. Same numerics as
    :func:`supervised_contrastive_loss` (row-max shift, most-negative-finite masking).

    Args:
        features: (batch, dim) embeddings (L2-normalised here).
        targets: (batch, n_findings) 0/1 multi-hot finding labels.
        known: (batch,) bool mask of studies whose findings are known (default: all).
        temperature: softmax temperature ``t`` > 0.

    Example:
        >>> z, y = torch.randn(4, 8), torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]])
        >>> multilabel_supervised_contrastive_loss(z, y).shape
        torch.Size([])
    """
    _check_matrix("features", features)
    targets = _as_multi_hot("targets", targets, features.shape[0])
    temperature = _check_positive("temperature", temperature)
    z = F.normalize(_at_least_float32(features), dim=-1)
    known = _as_known(known, z.shape[0], z.device)

    n = z.shape[0]
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    excluded = self_mask | ~known[None, :] | ~known[:, None]
    lowest = torch.finfo(logits.dtype).min
    row_max = logits.masked_fill(excluded, lowest).amax(dim=1, keepdim=True).detach()
    logits = (logits - row_max).masked_fill(excluded, lowest)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    weights = label_overlap_weights(targets.to(z.device)).to(z.dtype).masked_fill(excluded, 0.0)
    total_weight = weights.sum(dim=1)
    has_positive = total_weight > 0
    weighted = (log_prob.masked_fill(weights == 0, 0.0) * weights).sum(dim=1)
    per_anchor = -weighted / torch.where(has_positive, total_weight, torch.ones_like(total_weight))
    per_anchor = torch.where(has_positive, per_anchor, torch.zeros_like(per_anchor))
    return per_anchor.sum() / has_positive.sum().clamp(min=1)


@dataclass
class MultiLabelLossOutput:
    """The two (unweighted) multi-label terms, scalar tensors in the autograd graph.

    ``finding_bce_loss`` is ``None`` when no finding logits were given (no multi-label head).
    """

    multilabel_supcon_loss: Tensor
    finding_bce_loss: Tensor | None = None


class MultiLabelLoss(nn.Module):
    """The multi-label terms: :func:`multilabel_bce_loss` and :func:`multilabel_supervised_contrastive_loss`.

    Returns the unweighted terms; the caller weights and adds them to the paper's loss. With
    ``gather_distributed=True`` and ``torch.distributed`` initialised with ``world_size > 1``, the
    embeddings, finding logits, finding labels and known mask are gathered from every rank first
    (gradients kept for the local shard, as in :class:`CompositeLoss`; see the module docstring), so
    every rank computes the single-process loss of the global batch.

    Args:
        temperature: SupCon temperature.
        positive_weight, negative_weight: optional (n_findings,) BCE weights
            (:func:`finding_class_weights`); stored as non-persistent buffers (they follow
            ``.to(device)`` but are not saved with the model).
        gather_distributed: gather across ranks when distributed.

    Example:
        >>> out = MultiLabelLoss()(fused_embeds=torch.randn(4, 8), finding_labels=torch.tensor(
        ...     [[1, 0], [1, 1], [0, 1], [0, 0]]), finding_logits=torch.randn(4, 2))
        >>> sorted(vars(out))
        ['finding_bce_loss', 'multilabel_supcon_loss']
    """

    def __init__(
        self,
        temperature: float = DEFAULT_SUPCON_TEMPERATURE,
        positive_weight: Tensor | None = None,
        negative_weight: Tensor | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = _check_positive("temperature", temperature)
        self.gather_distributed = bool(gather_distributed)
        for name, weight in (("positive_weight", positive_weight), ("negative_weight", negative_weight)):
            if weight is not None and (not isinstance(weight, Tensor) or weight.ndim != 1):
                raise ValueError(f"`{name}` must be a 1-D tensor (one weight per finding) or None")
            self.register_buffer(name, None if weight is None else weight.detach().float().clone(), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, class_weighted={self.positive_weight is not None or self.negative_weight is not None}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def forward(
        self,
        fused_embeds: Tensor,
        finding_labels: Tensor,
        finding_known: Tensor | None = None,
        finding_logits: Tensor | None = None,
    ) -> MultiLabelLossOutput:
        """Compute the multi-label terms.

        Args:
            fused_embeds: (batch, dim) embeddings for the contrastive term.
            finding_labels: (batch, n_findings) 0/1 multi-hot labels (rows of unknown studies ignored).
            finding_known: (batch,) bool mask of studies whose findings are known (default: all).
            finding_logits: (batch, n_findings) logits of the multi-label head, if the model has one.
        """
        _check_matrix("fused_embeds", fused_embeds)
        batch = fused_embeds.shape[0]
        finding_labels = _as_multi_hot("finding_labels", finding_labels, batch)
        finding_known = _as_known(finding_known, batch, fused_embeds.device)
        if finding_logits is not None and (
            not isinstance(finding_logits, Tensor) or finding_logits.shape != finding_labels.shape
        ):
            shape = tuple(finding_logits.shape) if isinstance(finding_logits, Tensor) else type(finding_logits).__name__
            raise ValueError(
                f"`finding_logits` must have the shape of `finding_labels` {tuple(finding_labels.shape)}, got {shape}"
            )

        _, world_size = _rank_and_world_size()
        if self.gather_distributed and world_size > 1:
            sizes = _gather_sizes(batch, fused_embeds.device)
            fused_embeds = _gather_with_grad(fused_embeds, sizes)
            if finding_logits is not None:
                finding_logits = _gather_with_grad(finding_logits, sizes)
            finding_labels = _all_gather_cat(finding_labels, sizes)
            finding_known = _all_gather_cat(finding_known, sizes)

        supcon = multilabel_supervised_contrastive_loss(
            fused_embeds, finding_labels, finding_known, temperature=self.temperature
        )
        bce = None
        if finding_logits is not None:
            bce = multilabel_bce_loss(
                finding_logits, finding_labels, finding_known, self.positive_weight, self.negative_weight
            )
        return MultiLabelLossOutput(multilabel_supcon_loss=supcon, finding_bce_loss=bce)
