"""The two contrastive terms: CLIP's symmetric InfoNCE and supervised contrastive (SupCon)."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import _as_vector, _at_least_float32, _check_matrix, _check_positive

DEFAULT_SUPCON_TEMPERATURE = 0.07
"""SupCon softmax temperature (Khosla et al. 2020's default; the paper does not state another)."""




def clip_loss(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE over the in-batch image/text similarity matrix (CLIP, Radford et al. 2021).

    Both embeddings are L2-normalised here (so already normalised inputs are fine); pair ``i`` is the
    positive of row ``i`` and column ``i``. The loss is the mean of the image->text (row) and
    text->image (column) cross-entropies.

    Args:
        image_embeds: (batch, dim) image embeddings.
        text_embeds: (batch, dim) text embeddings of the paired reports.
        logit_scale: the multiplier itself (already exponentiated, as open_clip passes it), a float
            or a one-element tensor.

    Example:
        >>> v, t = torch.randn(4, 8), torch.randn(4, 8)
        >>> clip_loss(v, t, logit_scale=100.0).shape
        torch.Size([])
    """
    _check_matrix("image_embeds", image_embeds)
    _check_matrix("text_embeds", text_embeds)
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            "`image_embeds` and `text_embeds` must have the same shape (batch, dim), got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"`logit_scale` must be a scalar, got shape {tuple(logit_scale.shape)}")
        logit_scale = logit_scale.reshape(())
    else:
        logit_scale = _check_positive("logit_scale", logit_scale)

    image = F.normalize(_at_least_float32(image_embeds), dim=-1)
    text = F.normalize(_at_least_float32(text_embeds), dim=-1)
    logits_per_image = logit_scale * (image @ text.T)
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    image_to_text = F.cross_entropy(logits_per_image, targets)
    text_to_image = F.cross_entropy(logits_per_image.T, targets)
    return (image_to_text + text_to_image) / 2


def supervised_contrastive_loss(
    features: Tensor, labels: Tensor, temperature: float = DEFAULT_SUPCON_TEMPERATURE
) -> Tensor:
    """Supervised contrastive loss, Khosla et al. 2020 ("L_out"), one view per sample.

    Features are L2-normalised here. For anchor ``i`` with positives ``P(i)`` (the *other* samples
    with the same label) and ``A(i)`` all samples but ``i``::

        L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a in A(i)} exp(z_i.z_a / t) )

    The loss is the mean of ``L_i`` over anchors with at least one positive. Anchors whose label
    occurs once in the batch have no positive and are **excluded** from the mean (they still serve as
    negatives for the others). If no anchor has a positive (e.g. a batch of one, or all labels
    distinct) the result is an exact zero that is still connected to the autograd graph, so
    ``backward`` works and gives zero gradients. Unlike the authors' reference code there is no
    ``temperature / base_temperature`` factor. Each row is shifted by its maximum over ``a != i``
    before the log-softmax, and self-similarity is masked with the dtype's most negative finite value
    (not ``-inf``, so a row with nothing to compare to gives no NaN in the backward pass).

    Args:
        features: (batch, dim) embeddings (any scale).
        labels: (batch,) integer class labels (any values; equality defines positives).
        temperature: softmax temperature ``t`` > 0.

    Example:
        >>> z, y = torch.randn(6, 8), torch.tensor([0, 1, 0, 1, 1, 0])
        >>> supervised_contrastive_loss(z, y, temperature=0.07).shape
        torch.Size([])
    """
    _check_matrix("features", features)
    labels = _as_vector("labels", labels)
    if labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"`labels` has {labels.shape[0]} entries but `features` has {features.shape[0]} rows; "
            "expected one label per row"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"`labels` must be an integer or bool tensor, got dtype {labels.dtype}")
    temperature = _check_positive("temperature", temperature)

    z = F.normalize(_at_least_float32(features), dim=-1)
    n = z.shape[0]
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    lowest = torch.finfo(logits.dtype).min
    # Shift by the row max over a != i first: with small temperatures the logits reach 1/t and
    # `x - logsumexp(x)` would cancel catastrophically; the shift is a constant (no gradient).
    row_max = logits.masked_fill(self_mask, lowest).amax(dim=1, keepdim=True).detach()
    logits = (logits - row_max).masked_fill(self_mask, lowest)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    labels = labels.to(z.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    num_positives = positives.sum(dim=1)
    has_positive = num_positives > 0
    # masked_fill (not multiplication) so the huge-negative diagonal never meets a zero weight.
    positive_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    per_anchor = -positive_log_prob / num_positives.clamp(min=1)
    per_anchor = torch.where(has_positive, per_anchor, torch.zeros_like(per_anchor))
    # Dividing by max(count, 1) keeps this free of host syncs and yields a connected 0 when count==0.
    return per_anchor.sum() / has_positive.sum().clamp(min=1)


