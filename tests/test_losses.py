"""Tests for cxr_mtclip.losses: naive-loop references, composite weighting, validation, 2-process gathering."""

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
    CompositeLossOutput,
    clip_loss,
    gather_no_grad,
    gather_with_grad,
    supervised_contrastive_loss,
)

# ----------------------------------------------------------------------------------------------
# Naive per-sample references (plain Python floats, written straight from the formulas)
# ----------------------------------------------------------------------------------------------


def _unit(row: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in row))
    return [x / norm for x in row]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def naive_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    v = [_unit(r) for r in image.double().tolist()]
    t = [_unit(r) for r in text.double().tolist()]
    n = len(v)
    sim = [[scale * _dot(v[i], t[j]) for j in range(n)] for i in range(n)]
    rows = 0.0
    for i in range(n):
        denom = sum(math.exp(sim[i][j]) for j in range(n))
        rows += -math.log(math.exp(sim[i][i]) / denom)
    cols = 0.0
    for j in range(n):
        denom = sum(math.exp(sim[i][j]) for i in range(n))
        cols += -math.log(math.exp(sim[j][j]) / denom)
    return (rows / n + cols / n) / 2


def naive_supcon(features: torch.Tensor, labels: list[int], temperature: float) -> float:
    z = [_unit(r) for r in features.double().tolist()]
    n = len(z)
    anchor_losses = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(_dot(z[i], z[a]) / temperature) for a in range(n) if a != i)
        total = 0.0
        for p in positives:
            total += math.log(math.exp(_dot(z[i], z[p]) / temperature) / denom)
        anchor_losses.append(-total / len(positives))
    if not anchor_losses:
        return 0.0
    return sum(anchor_losses) / len(anchor_losses)


def naive_bce(logits: list[float], labels: list[int]) -> float:
    total = 0.0
    for x, y in zip(logits, labels):
        p = 1.0 / (1.0 + math.exp(-x))
        total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / len(logits)


LABEL_CASES = {
    "mixed": [0, 1, 1, 0, 1, 0, 0, 1],
    "singleton_class": [1, 0, 0, 0, 0, 0, 0],
    "all_equal": [1, 1, 1, 1, 1],
    "multiclass_with_singletons": [0, 1, 2, 2, 3, 0, 4, 2, 1],
    "pair": [0, 0],
}


# ----------------------------------------------------------------------------------------------
# clip_loss
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,dim,scale", [(1, 4, 10.0), (2, 3, 1.0), (7, 16, 14.285), (12, 8, 50.0)])
def test_clip_loss_matches_naive_loop(batch, dim, scale, dtype):
    gen = torch.Generator().manual_seed(batch * 100 + dim)
    image = torch.randn(batch, dim, generator=gen, dtype=dtype) * 3
    text = torch.randn(batch, dim, generator=gen, dtype=dtype) * 0.5
    expected = naive_clip_loss(image, text, scale)
    got = clip_loss(image, text, torch.tensor(scale, dtype=dtype))
    assert got.item() == pytest.approx(expected, abs=1e-5, rel=1e-6)
    assert clip_loss(image, text, scale).item() == pytest.approx(expected, abs=1e-5, rel=1e-6)


def test_clip_loss_normalises_inside_and_is_idempotent():
    gen = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    raw = clip_loss(image * 7.0, text * 0.01, 20.0)
    normed = clip_loss(F.normalize(image, dim=-1), F.normalize(text, dim=-1), 20.0)
    torch.testing.assert_close(raw, normed, atol=1e-6, rtol=1e-6)


def test_clip_loss_is_symmetric_and_low_for_aligned_pairs():
    gen = torch.Generator().manual_seed(1)
    image, text = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    torch.testing.assert_close(clip_loss(image, text, 10.0), clip_loss(text, image, 10.0))
    aligned = torch.eye(5, 8)
    assert clip_loss(aligned, aligned, 100.0).item() < 1e-6
    assert clip_loss(image, text, 100.0).item() > 1.0


def test_clip_loss_gradients_reach_embeddings_and_scale():
    gen = torch.Generator().manual_seed(2)
    image = torch.randn(4, 6, generator=gen, requires_grad=True)
    text = torch.randn(4, 6, generator=gen, requires_grad=True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    clip_loss(image, text, log_scale.exp()).backward()
    for grad in (image.grad, text.grad, log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    "image,text,scale,match",
    [
        (torch.randn(3, 4), torch.randn(4, 4), 1.0, "same shape"),
        (torch.randn(3), torch.randn(3), 1.0, r"shape \(batch, dim\)"),
        (torch.randn(0, 4), torch.randn(0, 4), 1.0, "empty batch"),
        (torch.randn(3, 4), torch.randn(3, 4), torch.ones(2), "scalar"),
        (torch.randn(3, 4), torch.randn(3, 4), -1.0, "logit_scale"),
    ],
)
def test_clip_loss_rejects_bad_inputs(image, text, scale, match):
    with pytest.raises(ValueError, match=match):
        clip_loss(image, text, scale)


# ----------------------------------------------------------------------------------------------
# supervised_contrastive_loss
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_supcon_matches_naive_loop(case, temperature, dtype):
    labels = LABEL_CASES[case]
    gen = torch.Generator().manual_seed(len(labels))
    features = torch.randn(len(labels), 6, generator=gen, dtype=dtype) * 2
    expected = naive_supcon(features, labels, temperature)
    got = supervised_contrastive_loss(features, torch.tensor(labels), temperature=temperature)
    assert got.item() == pytest.approx(expected, abs=1e-5, rel=1e-6)


def test_supcon_excludes_anchors_without_positive():
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(5, 4, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2])  # anchor 4 has no positive but is a negative for others
    full = supervised_contrastive_loss(features, labels)
    # Mean over anchors 0..3 only: equals the naive value, which skips anchor 4.
    assert full.item() == pytest.approx(naive_supcon(features, labels.tolist(), 0.07), abs=1e-5)
    # Removing the singleton changes the denominators, so it really acted as a negative.
    without = supervised_contrastive_loss(features[:4], labels[:4])
    assert abs(full.item() - without.item()) > 1e-4


@pytest.mark.parametrize("labels", [[3], [0, 1, 2, 3]])
def test_supcon_without_any_positive_is_connected_zero(labels):
    features = torch.randn(len(labels), 4, requires_grad=True)
    loss = supervised_contrastive_loss(features, torch.tensor(labels))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert features.grad is not None and torch.equal(features.grad, torch.zeros_like(features))


def test_supcon_is_stable_for_tiny_temperature_and_identical_features():
    features = torch.ones(4, 3, requires_grad=True)
    features_far = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]], requires_grad=True)
    for feats in (features, features_far):
        loss = supervised_contrastive_loss(feats, torch.tensor([0, 0, 1, 1]), temperature=1e-3)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
    # Identical features: every softmax is uniform over the 3 others, so each anchor's loss is log(3).
    uniform = supervised_contrastive_loss(torch.ones(4, 3), torch.tensor([0, 0, 1, 1]), temperature=1e-3)
    assert uniform.item() == pytest.approx(math.log(3), abs=1e-5)


def test_supcon_invariant_to_batch_permutation_and_gradients_flow():
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(9, 5, generator=gen, requires_grad=True)
    labels = torch.tensor(LABEL_CASES["multiclass_with_singletons"])
    perm = torch.randperm(9, generator=gen)
    loss = supervised_contrastive_loss(features, labels)
    torch.testing.assert_close(loss, supervised_contrastive_loss(features[perm], labels[perm]))
    loss.backward()
    assert torch.isfinite(features.grad).all()
    assert (features.grad.abs().sum(dim=1) > 0).all()  # singletons get gradient as negatives


@pytest.mark.parametrize(
    "features,labels,temperature,match",
    [
        (torch.randn(3, 4), torch.tensor([0, 1]), 0.07, "one label per row"),
        (torch.randn(3, 4), torch.tensor([0.0, 1.0, 1.0]), 0.07, "integer"),
        (torch.randn(3, 4), torch.tensor([0, 1, 1]), 0.0, "temperature"),
        (torch.randint(0, 3, (3, 4)), torch.tensor([0, 1, 1]), 0.07, "floating-point"),
    ],
)
def test_supcon_rejects_bad_inputs(features, labels, temperature, match):
    with pytest.raises(ValueError, match=match):
        supervised_contrastive_loss(features, labels, temperature=temperature)


# ----------------------------------------------------------------------------------------------
# CompositeLoss
# ----------------------------------------------------------------------------------------------


def _random_batch(batch: int, dim: int = 6, seed: int = 0, labels: list[int] | None = None, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = torch.randint(0, 2, (batch,), generator=gen).tolist()
    image = F.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=-1)
    text = F.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=-1)
    return {
        "logits": torch.randn(batch, generator=gen, dtype=dtype) * 2,
        "labels": torch.tensor(labels),
        "image_embeds": image,
        "text_embeds": text,
        "fused_embeds": F.normalize((image + text) / 2, dim=-1),
        "logit_scale": torch.tensor(1 / 0.07, dtype=dtype),
    }


def test_composite_defaults_are_the_paper_weights():
    loss_fn = CompositeLoss()
    assert (loss_fn.bce_weight, loss_fn.supcon_weight, loss_fn.clip_weight) == (0.69, 1.97, 0.46)
    assert loss_fn.supcon_temperature == 0.07
    assert loss_fn.gather_distributed is True
    assert list(loss_fn.parameters()) == []


@pytest.mark.parametrize("weights", [(0.69, 1.97, 0.46), (0.1, 2.0, 0.2), (1.0, 0.0, 0.0), (0.0, 0.0, 1.3)])
@pytest.mark.parametrize("case", ["mixed", "singleton_class", "all_equal"])
def test_composite_is_exact_weighted_sum_of_terms(weights, case):
    bce_w, supcon_w, clip_w = weights
    loss_fn = CompositeLoss(bce_weight=bce_w, supcon_weight=supcon_w, clip_weight=clip_w, supcon_temperature=0.1)
    batch = _random_batch(len(LABEL_CASES[case]), labels=LABEL_CASES[case], seed=5)
    out = loss_fn(**batch)
    assert isinstance(out, CompositeLossOutput)
    # Bitwise equality with the same float ops a caller would write.
    assert torch.equal(out.loss, bce_w * out.bce_loss + supcon_w * out.supcon_loss + clip_w * out.clip_loss)
    # Each term equals the independent reference.
    labels = LABEL_CASES[case]
    assert out.bce_loss.item() == pytest.approx(naive_bce(batch["logits"].tolist(), labels), abs=1e-5)
    assert out.supcon_loss.item() == pytest.approx(naive_supcon(batch["fused_embeds"], labels, 0.1), abs=1e-5)
    expected_clip = naive_clip_loss(batch["image_embeds"], batch["text_embeds"], batch["logit_scale"].item())
    assert out.clip_loss.item() == pytest.approx(expected_clip, abs=1e-5)


@pytest.mark.parametrize("label_dtype", [torch.long, torch.float32, torch.bool])
def test_composite_bce_matches_torch(label_dtype):
    batch = _random_batch(8, seed=6)
    labels = batch["labels"].to(label_dtype)
    out = CompositeLoss()(**{**batch, "labels": labels, "logits": batch["logits"][:, None]})
    expected = nn.BCEWithLogitsLoss()(batch["logits"], batch["labels"].float())
    torch.testing.assert_close(out.bce_loss, expected)


def test_composite_gradients_flow_to_every_input():
    batch = _random_batch(8, seed=7)
    leaves = {k: v.clone().requires_grad_(True) for k, v in batch.items() if k != "labels"}
    out = CompositeLoss()(labels=batch["labels"], **leaves)
    out.loss.backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), name
        assert leaf.grad.abs().sum() > 0, name


def test_composite_single_process_ignores_gather_flag():
    batch = _random_batch(6, seed=8)
    on = CompositeLoss(gather_distributed=True)(**batch)
    off = CompositeLoss(gather_distributed=False)(**batch)
    assert torch.equal(on.loss, off.loss)


@pytest.mark.parametrize("bad", [[0, 2, 1, 0], [0, -1, 1, 1], [0.0, 0.5, 1.0, 1.0], [0.0, float("nan"), 1.0, 1.0]])
def test_composite_rejects_non_binary_labels(bad):
    batch = _random_batch(4, seed=9)
    with pytest.raises(ValueError, match="must be 0 .normal. or 1 .abnormal."):
        CompositeLoss()(**{**batch, "labels": torch.tensor(bad)})


@pytest.mark.parametrize("field", ["logits", "labels", "image_embeds", "text_embeds", "fused_embeds"])
def test_composite_rejects_mismatched_batch_sizes(field):
    batch = _random_batch(5, seed=10)
    batch[field] = batch[field][:4]
    with pytest.raises(ValueError, match=rf"same batch size.*'{field}': 4"):
        CompositeLoss()(**batch)


def test_composite_rejects_bad_shapes_and_weights():
    batch = _random_batch(4, seed=11)
    with pytest.raises(ValueError, match="logits"):
        CompositeLoss()(**{**batch, "logits": torch.randn(4, 2)})
    for kwargs, name in [
        ({"bce_weight": -0.1}, "bce_weight"),
        ({"supcon_weight": float("nan")}, "supcon_weight"),
        ({"clip_weight": float("inf")}, "clip_weight"),
        ({"supcon_temperature": 0.0}, "supcon_temperature"),
    ]:
        with pytest.raises(ValueError, match=name):
            CompositeLoss(**kwargs)


def test_gather_helpers_are_identity_without_distributed():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    labels = torch.tensor([0, 1, 1])
    assert gather_no_grad(labels) is labels


# ----------------------------------------------------------------------------------------------
# Two processes (gloo) vs one process on the same global batch
# ----------------------------------------------------------------------------------------------

WORLD_SIZE = 2
GLOBAL_BATCH = 8
UNEVEN_SPLIT = (3, 5)  # rank 0 holds 3 rows, rank 1 holds 5
TERMS = ("loss", "bce_loss", "supcon_loss", "clip_loss")
FEATURES = ("logits", "image_embeds", "text_embeds", "fused_embeds")


class _ToyTowers(nn.Module):
    """Stand-in for the model: two projections, fused mean, a 1-logit head and a learnable scale."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1234)
        self.image = nn.Linear(7, 5)
        self.text = nn.Linear(6, 5)
        self.head = nn.Linear(5, 1)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor):
        image = F.normalize(self.image(pixels), dim=-1)
        text = F.normalize(self.text(tokens), dim=-1)
        fused = (image + text) / 2
        return {
            "logits": self.head(fused).squeeze(-1),
            "image_embeds": image,
            "text_embeds": text,
            "fused_embeds": F.normalize(fused, dim=-1),
            "logit_scale": self.log_scale.exp(),
        }


def _global_data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(99)
    batch = _random_batch(GLOBAL_BATCH, dim=6, seed=99, labels=[0, 1, 1, 0, 1, 1, 1, 0])
    batch["pixels"] = torch.randn(GLOBAL_BATCH, 7, generator=gen)
    batch["tokens"] = torch.randn(GLOBAL_BATCH, 6, generator=gen)
    return batch


def _loss_and_feature_grads(batch: dict[str, torch.Tensor], loss_fn: CompositeLoss) -> dict[str, torch.Tensor]:
    leaves = {k: batch[k].clone().requires_grad_(True) for k in FEATURES}
    out = loss_fn(labels=batch["labels"], logit_scale=batch["logit_scale"], **leaves)
    out.loss.backward()
    result = {f"value/{k}": getattr(out, k).detach().reshape(1) for k in TERMS}
    result.update({f"grad/{k}": leaf.grad for k, leaf in leaves.items()})
    return result


def _model_param_grads(
    batch: dict[str, torch.Tensor], model: nn.Module, loss_fn: CompositeLoss
) -> dict[str, torch.Tensor]:
    out = loss_fn(labels=batch["labels"], **model(batch["pixels"], batch["tokens"]))
    out.loss.backward()
    grads = {f"param/{name}": p.grad.detach().clone() for name, p in model.named_parameters()}
    grads["param_value/loss"] = out.loss.detach().reshape(1)
    return grads


def _slice(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: (v if v.ndim == 0 else v[start:stop]) for k, v in batch.items()}


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        data = _global_data()
        results: dict[str, torch.Tensor] = {}
        half = GLOBAL_BATCH // WORLD_SIZE
        even = _slice(data, rank * half, (rank + 1) * half)
        for key, value in _loss_and_feature_grads(even, CompositeLoss()).items():
            results[f"even/{key}"] = value
        for key, value in _loss_and_feature_grads(even, CompositeLoss(gather_distributed=False)).items():
            results[f"local/{key}"] = value
        start = sum(UNEVEN_SPLIT[:rank])
        uneven = _slice(data, start, start + UNEVEN_SPLIT[rank])
        for key, value in _loss_and_feature_grads(uneven, CompositeLoss()).items():
            results[f"uneven/{key}"] = value
        results["gather_no_grad"] = gather_no_grad(uneven["labels"])
        gathered = gather_with_grad(uneven["image_embeds"].clone().requires_grad_(True))
        results["gather_with_grad"] = gathered.detach()
        # Real DDP: averaged parameter gradients must equal the single-process ones.
        ddp = nn.parallel.DistributedDataParallel(_ToyTowers())
        for key, value in _model_param_grads(even, ddp, CompositeLoss()).items():
            results[f"ddp/{key.replace('module.', '')}"] = value
        tensors = {k: v.contiguous() for k, v in results.items()}
        save_file(tensors, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_distributed_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD_SIZE, join=True)
    return [load_file(str(tmp / f"rank{r}.safetensors")) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("split", ["even", "uneven"])
def test_two_process_loss_equals_single_process_on_global_batch(two_process_results, split):
    reference = _loss_and_feature_grads(_global_data(), CompositeLoss())
    sizes = [GLOBAL_BATCH // WORLD_SIZE] * WORLD_SIZE if split == "even" else list(UNEVEN_SPLIT)
    for rank, result in enumerate(two_process_results):
        for term in TERMS:
            got = result[f"{split}/value/{term}"]
            torch.testing.assert_close(got, reference[f"value/{term}"], atol=1e-5, rtol=0)
        # Local-feature gradient = world_size x the single-process gradient slice (module docstring).
        start = sum(sizes[:rank])
        for name in FEATURES:
            expected = WORLD_SIZE * reference[f"grad/{name}"][start : start + sizes[rank]]
            torch.testing.assert_close(result[f"{split}/grad/{name}"], expected, atol=1e-5, rtol=1e-4)


def test_two_process_without_gather_uses_local_batch_only(two_process_results):
    data, half = _global_data(), GLOBAL_BATCH // WORLD_SIZE
    global_loss = _loss_and_feature_grads(data, CompositeLoss())["value/loss"]
    for rank, result in enumerate(two_process_results):
        local = _loss_and_feature_grads(_slice(data, rank * half, (rank + 1) * half), CompositeLoss())
        torch.testing.assert_close(result["local/value/loss"], local["value/loss"], atol=1e-5, rtol=0)
        assert abs(result["local/value/loss"].item() - global_loss.item()) > 1e-3


def test_two_process_gather_helpers_concatenate_in_rank_order(two_process_results):
    data = _global_data()
    for result in two_process_results:
        assert torch.equal(result["gather_no_grad"], data["labels"])
        assert torch.equal(result["gather_with_grad"], data["image_embeds"])


def test_two_process_ddp_parameter_gradients_equal_single_process(two_process_results):
    data = _global_data()
    reference = _model_param_grads(data, _ToyTowers(), CompositeLoss())
    names = [k for k in reference if k.startswith("param/")]
    assert "param/log_scale" in names and "param/head.weight" in names
    for result in two_process_results:
        got = result["ddp/param_value/loss"]
        torch.testing.assert_close(got, reference["param_value/loss"], atol=1e-5, rtol=0)
        for name in names:
            assert reference[name].abs().sum() > 0, name
            torch.testing.assert_close(result[f"ddp/{name}"], reference[name], atol=1e-5, rtol=1e-4)
