"""Tests for the multi-label loss terms in cxr_mtclip.losses: naive loops, reductions, unknown studies, 2 processes."""

from __future__ import annotations

import datetime
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from cxr_mtclip.losses import (
    CompositeLoss,
    MultiLabelLoss,
    MultiLabelLossOutput,
    finding_class_weights,
    label_overlap_weights,
    multilabel_bce_loss,
    multilabel_supervised_contrastive_loss,
    supervised_contrastive_loss,
)

# ----------------------------------------------------------------------------------------------
# Naive references (plain Python floats, straight from the formulas)
# ----------------------------------------------------------------------------------------------


def _unit(row: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in row))
    return [x / norm for x in row]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def naive_jaccard(a: list[int], b: list[int]) -> float:
    inter = sum(1 for x, y in zip(a, b) if x and y)
    union = sum(1 for x, y in zip(a, b) if x or y)
    return 1.0 if union == 0 else inter / union


def naive_multilabel_supcon(features: torch.Tensor, targets: list[list[int]], known: list[bool], t: float) -> float:
    z = [_unit(r) for r in features.double().tolist()]
    ids = [i for i in range(len(z)) if known[i]]
    losses = []
    for i in ids:
        others = [j for j in ids if j != i]
        weights = {j: naive_jaccard(targets[i], targets[j]) for j in others}
        total = sum(weights.values())
        if total == 0:
            continue
        denom = sum(math.exp(_dot(z[i], z[a]) / t) for a in others)
        acc = 0.0
        for j, w in weights.items():
            if w:
                acc += w * math.log(math.exp(_dot(z[i], z[j]) / t) / denom)
        losses.append(-acc / total)
    return sum(losses) / len(losses) if losses else 0.0


def naive_multilabel_bce(logits, targets, known, pos_w=None, neg_w=None) -> float:
    total, count = 0.0, 0
    for row, (xs, ys) in enumerate(zip(logits, targets)):
        if not known[row]:
            continue
        for f, (x, y) in enumerate(zip(xs, ys)):
            p = 1.0 / (1.0 + math.exp(-x))
            a = 1.0 if pos_w is None else pos_w[f]
            b = 1.0 if neg_w is None else neg_w[f]
            total += -(a * y * math.log(p) + b * (1 - y) * math.log(1 - p))
            count += 1
    return total / count if count else 0.0


def _random_case(batch: int, n_findings: int, seed: int, p_finding: float = 0.3, p_unknown: float = 0.2):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, 6, generator=gen, dtype=torch.float64) * 2
    targets = (torch.rand(batch, n_findings, generator=gen) < p_finding).long()
    known = torch.rand(batch, generator=gen) >= p_unknown
    return features, targets, known


# ----------------------------------------------------------------------------------------------
# label_overlap_weights
# ----------------------------------------------------------------------------------------------


def test_overlap_weights_hand_example_and_naive():
    y = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 1]])
    w = label_overlap_weights(y)
    assert w[0, 1].item() == pytest.approx(0.5)
    assert w[0, 4].item() == pytest.approx(1 / 3)
    assert w[2, 3].item() == 1.0 and w[2, 0].item() == 0.0  # two empty sets agree, empty vs non-empty do not
    rows = y.tolist()
    expected = torch.tensor([[naive_jaccard(a, b) for b in rows] for a in rows])
    torch.testing.assert_close(w, expected)
    assert torch.equal(w, w.T)


# ----------------------------------------------------------------------------------------------
# multilabel_supervised_contrastive_loss
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("seed,batch,n_findings", [(0, 9, 4), (1, 16, 6), (2, 5, 2), (3, 12, 1)])
def test_multilabel_supcon_matches_naive_loop(seed, batch, n_findings, temperature):
    features, targets, known = _random_case(batch, n_findings, seed)
    expected = naive_multilabel_supcon(features, targets.tolist(), known.tolist(), temperature)
    got = multilabel_supervised_contrastive_loss(features, targets, known, temperature=temperature)
    assert got.item() == pytest.approx(expected, abs=1e-6, rel=1e-6)
    got32 = multilabel_supervised_contrastive_loss(features.float(), targets.bool(), known, temperature=temperature)
    assert got32.item() == pytest.approx(expected, abs=1e-4, rel=1e-4)


@pytest.mark.parametrize("labels", [[0, 1, 1, 0, 2, 2, 2, 3], [0, 1, 2, 3], [4, 4, 4], [0, 0, 1, 2, 1, 0, 3, 1, 2]])
def test_equals_binary_supcon_when_every_study_has_exactly_one_finding(labels):
    gen = torch.Generator().manual_seed(len(labels))
    features = torch.randn(len(labels), 5, generator=gen)
    one_hot = F.one_hot(torch.tensor(labels), num_classes=5)
    expected = supervised_contrastive_loss(features, torch.tensor(labels), temperature=0.1)
    got = multilabel_supervised_contrastive_loss(features, one_hot, temperature=0.1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_paper_binary_labels_are_the_one_column_special_case():
    """normal = no finding, abnormal = the single finding: the same as the paper's SupCon on 0/1 labels."""
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1])
    features = torch.randn(9, 4, generator=torch.Generator().manual_seed(5))
    got = multilabel_supervised_contrastive_loss(features, labels[:, None])
    torch.testing.assert_close(got, supervised_contrastive_loss(features, labels), atol=1e-6, rtol=1e-6)


def test_partial_overlap_is_a_partial_positive_hand_example():
    """{a,b}, {a,b}, {a}, {c}: Jaccard weights 1 (0-1), 1/2 (0-2, 1-2), 0 with {c}, written out by hand."""
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.2]])
    targets = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]])
    t = 0.5
    z = F.normalize(features, dim=-1)
    s = (z @ z.T) / t

    def log_p(i: int, j: int) -> torch.Tensor:
        others = [a for a in range(4) if a != i]
        return s[i, j] - torch.logsumexp(s[i, others], 0)

    anchor0 = -(1.0 * log_p(0, 1) + 0.5 * log_p(0, 2)) / 1.5
    anchor1 = -(1.0 * log_p(1, 0) + 0.5 * log_p(1, 2)) / 1.5
    anchor2 = -(0.5 * log_p(2, 0) + 0.5 * log_p(2, 1)) / 1.0
    expected = (anchor0 + anchor1 + anchor2) / 3  # anchor 3 ({c}) has no positive
    got = multilabel_supervised_contrastive_loss(features, targets, temperature=t)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    # Treating the partial overlaps as full positives gives another value.
    full = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert abs(multilabel_supervised_contrastive_loss(features, full, temperature=t).item() - got.item()) > 1e-3


def test_unknown_studies_are_dropped_entirely():
    features, targets, _ = _random_case(10, 4, seed=7)
    features = features.float().requires_grad_(True)
    known = torch.tensor([True, False, True, True, False, True, True, True, False, True])
    loss = multilabel_supervised_contrastive_loss(features, targets, known)
    sub = multilabel_supervised_contrastive_loss(features[known], targets[known])
    torch.testing.assert_close(loss, sub)
    loss.backward()
    assert torch.equal(features.grad[~known], torch.zeros_like(features.grad[~known]))
    assert (features.grad[known].abs().sum(dim=1) > 0).all()
    # Without the mask the same rows change the loss: the mask is not a no-op.
    assert abs(multilabel_supervised_contrastive_loss(features, targets).item() - loss.item()) > 1e-4


def test_gradients_finite_for_studies_without_findings():
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(8), requires_grad=True)
    targets = torch.tensor([[0, 0], [0, 0], [1, 0], [0, 0], [1, 1], [0, 1]])
    loss = multilabel_supervised_contrastive_loss(features, targets, temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()
    assert (features.grad.abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize(
    "targets,known",
    [
        ([[0, 0], [1, 0], [0, 1]], [False, False, False]),  # all unknown
        ([[0, 0], [1, 0], [0, 1]], [True, False, False]),  # a single known study
        ([[1, 0], [0, 1], [0, 0]], [True, True, True]),  # no overlap anywhere
        ([[0, 0]], [True]),  # batch of one
    ],
)
def test_no_positive_anywhere_is_a_connected_zero(targets, known):
    features = torch.randn(len(targets), 4, requires_grad=True)
    loss = multilabel_supervised_contrastive_loss(features, torch.tensor(targets), torch.tensor(known))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(features.grad).all() and torch.equal(features.grad, torch.zeros_like(features.grad))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"targets": torch.tensor([[0, 2], [1, 0], [0, 0]])}, "0/1 multi-hot"),
        ({"targets": torch.tensor([[0.0, 0.5], [1, 0], [0, 0]])}, "0/1 multi-hot"),
        ({"targets": torch.tensor([[0, 1], [1, 0]])}, "one row per study"),
        ({"targets": torch.tensor([0, 1, 1])}, r"shape \(batch, n_findings\)"),
        ({"known": torch.tensor([True, False])}, "one per study"),
        ({"known": torch.tensor([0.0, 1.0, 1.0])}, "bool"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_multilabel_supcon_rejects_bad_inputs(kwargs, match):
    args = {"features": torch.randn(3, 4), "targets": torch.tensor([[0, 1], [1, 0], [0, 0]]), **kwargs}
    with pytest.raises(ValueError, match=match):
        multilabel_supervised_contrastive_loss(**args)


# ----------------------------------------------------------------------------------------------
# multilabel_bce_loss and finding_class_weights
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", ["none", "pos", "both"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bce_matches_naive_loop(seed, weighted):
    _, targets, known = _random_case(11, 5, seed)
    logits = torch.randn(11, 5, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64) * 3
    pos = torch.rand(5, generator=torch.Generator().manual_seed(seed + 20), dtype=torch.float64) * 4 if weighted != "none" else None
    neg = torch.rand(5, generator=torch.Generator().manual_seed(seed + 30), dtype=torch.float64) * 2 if weighted == "both" else None
    expected = naive_multilabel_bce(
        logits.tolist(), targets.tolist(), known.tolist(),
        None if pos is None else pos.tolist(), None if neg is None else neg.tolist(),
    )
    got = multilabel_bce_loss(logits, targets, known, positive_weight=pos, negative_weight=neg)
    assert got.item() == pytest.approx(expected, abs=1e-9, rel=1e-9)


def test_bce_equals_torch_bce_with_pos_weight_on_known_rows():
    _, targets, known = _random_case(20, 6, seed=3)
    logits = torch.randn(20, 6, generator=torch.Generator().manual_seed(4))
    pos_weight, neg_weight = finding_class_weights(targets, known)
    assert torch.equal(neg_weight, torch.ones(6))
    reference = nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits[known], targets[known].float())
    got = multilabel_bce_loss(logits, targets, known, positive_weight=pos_weight)
    torch.testing.assert_close(got, reference)
    torch.testing.assert_close(multilabel_bce_loss(logits, targets), nn.BCEWithLogitsLoss()(logits, targets.float()))


def test_bce_unknown_rows_get_no_gradient_and_all_unknown_is_connected_zero():
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    known = torch.tensor([True, False, True, False])
    multilabel_bce_loss(logits, targets, known).backward()
    assert torch.equal(logits.grad[~known], torch.zeros(2, 3))
    assert (logits.grad[known] != 0).all()
    logits.grad = None
    loss = multilabel_bce_loss(logits, targets, torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 3))


def test_bce_is_finite_for_extreme_logits():
    logits = torch.tensor([[200.0, -200.0], [-200.0, 200.0]], requires_grad=True)
    loss = multilabel_bce_loss(logits, torch.tensor([[1, 0], [1, 0]]))
    loss.backward()
    assert loss.item() == pytest.approx(400 / 4, rel=1e-6)  # two elements at -log sigmoid(-200) = 200
    assert torch.isfinite(logits.grad).all()


def test_bce_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one target per logit"):
        multilabel_bce_loss(torch.randn(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="floating-point"):
        multilabel_bce_loss(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        multilabel_bce_loss(torch.randn(2, 3), torch.zeros(2, 3), positive_weight=torch.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        multilabel_bce_loss(torch.randn(2, 3), torch.zeros(2, 3), negative_weight=-torch.ones(3))


def test_class_weights_pos_weight_and_effective_number_by_hand():
    targets = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
    known = torch.tensor([True, True, True, False, True])  # row 3 is not counted
    pos, neg = finding_class_weights(targets, known)
    # Known rows: finding 0 has 4 positives and 0 negatives (clamped to 1), finding 1 has 2/2, finding 2 1/3.
    torch.testing.assert_close(pos, torch.tensor([1 / 4, 1.0, 3.0]))
    torch.testing.assert_close(neg, torch.ones(3))
    beta = 0.9
    pos_e, neg_e = finding_class_weights(targets, known, method="effective_number", beta=beta)

    def inverse_effective(n: int) -> float:  # Cui et al. 2019: E_n = (1 - beta^n) / (1 - beta)
        return (1 - beta) / (1 - beta**n)

    for f, (n_pos, n_neg) in enumerate([(4, 1), (2, 2), (1, 3)]):
        a, b = inverse_effective(n_pos), inverse_effective(n_neg)
        assert pos_e[f].item() == pytest.approx(2 * a / (a + b), rel=1e-6)
        assert neg_e[f].item() == pytest.approx(2 * b / (a + b), rel=1e-6)
    torch.testing.assert_close(pos_e + neg_e, torch.full((3,), 2.0))
    # beta = 0: every class has effective number 1 -> no re-weighting.
    pos0, neg0 = finding_class_weights(targets, known, method="effective_number", beta=0.0)
    torch.testing.assert_close(pos0, torch.ones(3))
    torch.testing.assert_close(neg0, torch.ones(3))
    with pytest.raises(ValueError, match="method"):
        finding_class_weights(targets, method="focal")
    with pytest.raises(ValueError, match="beta"):
        finding_class_weights(targets, method="effective_number", beta=1.0)


# ----------------------------------------------------------------------------------------------
# MultiLabelLoss (module)
# ----------------------------------------------------------------------------------------------


def test_module_returns_the_functional_terms():
    features, targets, known = _random_case(8, 3, seed=9)
    logits = torch.randn(8, 3, dtype=torch.float64)
    pos, neg = finding_class_weights(targets, known, method="effective_number")
    out = MultiLabelLoss(temperature=0.2, positive_weight=pos, negative_weight=neg)(
        fused_embeds=features, finding_labels=targets, finding_known=known, finding_logits=logits
    )
    assert isinstance(out, MultiLabelLossOutput)
    torch.testing.assert_close(out.multilabel_supcon_loss, multilabel_supervised_contrastive_loss(features, targets, known, 0.2))
    expected_bce = multilabel_bce_loss(logits, targets, known, pos.double(), neg.double())
    torch.testing.assert_close(out.finding_bce_loss, expected_bce)
    without_head = MultiLabelLoss()(fused_embeds=features, finding_labels=targets)
    assert without_head.finding_bce_loss is None


def test_module_weights_are_non_persistent_buffers():
    loss_fn = MultiLabelLoss(positive_weight=torch.ones(3))
    assert "positive_weight" in dict(loss_fn.named_buffers())
    assert loss_fn.state_dict() == {} and list(loss_fn.parameters()) == []
    assert loss_fn.to(torch.float64).positive_weight.dtype == torch.float64
    with pytest.raises(ValueError, match="1-D"):
        MultiLabelLoss(positive_weight=torch.ones(2, 2))
    with pytest.raises(ValueError, match="finding_logits"):
        MultiLabelLoss()(fused_embeds=torch.randn(3, 4), finding_labels=torch.zeros(3, 2), finding_logits=torch.zeros(3, 3))


# ----------------------------------------------------------------------------------------------
# Two processes (gloo) vs one process on the same global batch
# ----------------------------------------------------------------------------------------------

WORLD_SIZE = 2
GLOBAL_BATCH = 9
UNEVEN_SPLIT = (4, 5)
N_FINDINGS = 3
TERMS = ("multilabel_supcon_loss", "finding_bce_loss")
FEATURES = ("fused_embeds", "finding_logits")


def _global_data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return {
        "fused_embeds": F.normalize(torch.randn(GLOBAL_BATCH, 5, generator=gen), dim=-1),
        "finding_logits": torch.randn(GLOBAL_BATCH, N_FINDINGS, generator=gen),
        # rows with no finding (0, 4), partial overlaps, and two unknown studies (3, 7)
        "finding_labels": torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0], [1, 1, 1], [1, 0, 0]]),
        "finding_known": torch.tensor([True, True, True, False, True, True, True, False, True]),
    }


def _values_and_grads(batch: dict[str, torch.Tensor], loss_fn: MultiLabelLoss) -> dict[str, torch.Tensor]:
    leaves = {k: batch[k].clone().requires_grad_(True) for k in FEATURES}
    out = loss_fn(finding_labels=batch["finding_labels"], finding_known=batch["finding_known"], **leaves)
    (out.multilabel_supcon_loss + out.finding_bce_loss).backward()
    result = {f"value/{k}": getattr(out, k).detach().reshape(1) for k in TERMS}
    result.update({f"grad/{k}": leaf.grad for k, leaf in leaves.items()})
    return result


def _loss_fn(**kwargs) -> MultiLabelLoss:
    return MultiLabelLoss(temperature=0.1, positive_weight=torch.tensor([2.0, 1.0, 0.5]), **kwargs)


COMPOSITE_SIZES = (3, 4)


def _composite_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    n = sum(COMPOSITE_SIZES)
    return {
        "logits": torch.randn(n, generator=gen),
        "image_embeds": F.normalize(torch.randn(n, 6, generator=gen), dim=-1),
        "text_embeds": F.normalize(torch.randn(n, 6, generator=gen), dim=-1),
        "fused_embeds": F.normalize(torch.randn(n, 6, generator=gen), dim=-1),
        "finding_logits": torch.randn(n, 3, generator=gen),
        "labels": torch.tensor([0, 1, 1, 0, 1, 1, 1]),
        "finding_labels": torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 1, 1], [1, 0, 1]]),
        "finding_known": torch.tensor([True, True, True, True, True, False, True]),
    }


_LEAVES = ("logits", "image_embeds", "text_embeds", "fused_embeds", "finding_logits")


def _composite_values(batch):
    leaves = {k: batch[k].clone().requires_grad_(True) for k in _LEAVES}
    loss = CompositeLoss(finding_bce_weight=0.7, multilabel_supcon_weight=1.3,
                         finding_positive_weight=torch.tensor([2.0, 1.0, 0.5]))
    out = loss(labels=batch["labels"], finding_labels=batch["finding_labels"], finding_known=batch["finding_known"],
               logit_scale=10.0, **leaves)
    out.loss.backward()
    values = {f"value/{k}": getattr(out, k).detach().reshape(1)
              for k in ("loss", "finding_bce_loss", "multilabel_supcon_loss")}
    values.update({f"grad/{k}": leaf.grad for k, leaf in leaves.items()})
    return values



def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        data = _global_data()
        results: dict[str, torch.Tensor] = {}
        for split, sizes in (("even", (5, 4)), ("uneven", UNEVEN_SPLIT)):
            start = sum(sizes[:rank])
            shard = {k: v[start : start + sizes[rank]] for k, v in data.items()}
            for key, value in _values_and_grads(shard, _loss_fn()).items():
                results[f"{split}/{key}"] = value
        shard = {k: v[:5] if rank == 0 else v[5:] for k, v in data.items()}
        for key, value in _values_and_grads(shard, _loss_fn(gather_distributed=False)).items():
            results[f"local/{key}"] = value
        # the same terms inside CompositeLoss (the model's loss), gathered with the paper's terms
        start = sum(COMPOSITE_SIZES[:rank])
        shard = {k: v[start : start + COMPOSITE_SIZES[rank]] for k, v in _composite_batch().items()}
        for key, value in _composite_values(shard).items():
            results[f"composite/{key}"] = value
        save_file({k: v.contiguous() for k, v in results.items()}, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("dist_multilabel")
    mp.spawn(_distributed_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD_SIZE, join=True)
    return [load_file(str(tmp / f"rank{r}.safetensors")) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("split,sizes", [("even", (5, 4)), ("uneven", UNEVEN_SPLIT)])
def test_two_process_loss_equals_single_process_on_global_batch(two_process_results, split, sizes):
    reference = _values_and_grads(_global_data(), _loss_fn())
    for rank, result in enumerate(two_process_results):
        for term in TERMS:
            torch.testing.assert_close(result[f"{split}/value/{term}"], reference[f"value/{term}"], atol=1e-6, rtol=0)
        start = sum(sizes[:rank])
        for name in FEATURES:
            expected = WORLD_SIZE * reference[f"grad/{name}"][start : start + sizes[rank]]
            torch.testing.assert_close(result[f"{split}/grad/{name}"], expected, atol=1e-6, rtol=1e-5)


def test_two_process_without_gather_uses_local_batch_only(two_process_results):
    data = _global_data()
    global_value = _values_and_grads(data, _loss_fn())["value/multilabel_supcon_loss"]
    for rank, result in enumerate(two_process_results):
        shard = {k: v[:5] if rank == 0 else v[5:] for k, v in data.items()}
        local = _values_and_grads(shard, _loss_fn())
        torch.testing.assert_close(result["local/value/multilabel_supcon_loss"], local["value/multilabel_supcon_loss"])
        assert abs(result["local/value/multilabel_supcon_loss"].item() - global_value.item()) > 1e-3


def test_two_process_composite_loss_with_multi_label_terms_equals_one_process(two_process_results):
    reference = _composite_values(_composite_batch())
    for rank, result in enumerate(two_process_results):
        for key in ("loss", "finding_bce_loss", "multilabel_supcon_loss"):
            torch.testing.assert_close(result[f"composite/value/{key}"], reference[f"value/{key}"], atol=1e-6, rtol=0)
        start = sum(COMPOSITE_SIZES[:rank])
        for name in _LEAVES:
            expected = WORLD_SIZE * reference[f"grad/{name}"][start : start + COMPOSITE_SIZES[rank]]
            torch.testing.assert_close(result[f"composite/grad/{name}"], expected, atol=1e-6, rtol=1e-5)
