"""Metrics of cxr_mtclip.evaluation against naive loops, hand-computed values, sklearn and properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxr_mtclip.evaluation import (
    SCORE_DECIMALS,
    bidirectional_retrieval_metrics,
    bidirectional_retrieval_results,
    bootstrap_ci,
    classification_metrics,
    compute_retrieval_result,
    format_paper_tables,
    metric_module_path,
    normalise_report_text,
    retrieval_bootstrap_cis,
    retrieval_metrics,
)

# ---------------------------------------------------------------------------------------------
# A naive, loop-per-query reference written straight from docs/metrics.md.
# ---------------------------------------------------------------------------------------------


def _unit(row) -> list[float]:
    norm = math.sqrt(sum(float(x) * float(x) for x in row))
    return [float(x) / norm for x in row]


def naive_retrieval(q, g, q_labels, g_labels, ks, *, texts=None, query_texts=None, exclude_self=False, f1_k=5):
    q = [_unit(r) for r in q]
    g = [_unit(r) for r in g]
    q_labels = [int(x) for x in q_labels]
    g_labels = [int(x) for x in g_labels]
    per = {name: [] for name in ("roc_auc", "map")}
    acc = {k: [] for k in ks}
    dedup = {k: [] for k in ks}
    cos = {k: [] for k in ks}
    prec = {k: [] for k in ks}
    hit = {k: [] for k in ks}
    votes, top1_labels, top1_scores, top10_means = [], [], [], []
    for i, qi in enumerate(q):
        candidates = [j for j in range(len(g)) if not (exclude_self and j == i)]
        score = {j: float(np.round(sum(a * b for a, b in zip(qi, g[j])), SCORE_DECIMALS)) for j in candidates}
        ranking = sorted(candidates, key=lambda j: (-score[j], j))
        relevant = [g_labels[j] == q_labels[i] for j in ranking]
        for k in ks:
            top = ranking[:k]
            acc[k].append(math.nan if exclude_self else float(i in top))
            if texts is not None:
                target = normalise_report_text(query_texts[i] if query_texts is not None else texts[i])
                dedup[k].append(float(any(j == i or normalise_report_text(texts[j]) == target for j in top)))
            cos[k].append(sum(score[j] for j in top) / k)
            prec[k].append(sum(relevant[:k]) / k)
            hit[k].append(float(any(relevant[:k])))
        top1_labels.append(g_labels[ranking[0]])
        top1_scores.append(score[ranking[0]])
        top10_means.append(sum(score[j] for j in ranking[:10]) / 10 if len(ranking) >= 10 else math.nan)
        n_rel = sum(relevant)
        if n_rel:
            hits, total = 0, 0.0
            for r, is_rel in enumerate(relevant, start=1):
                if is_rel:
                    hits += 1
                    total += hits / r
            per["map"].append(total / n_rel)
        else:
            per["map"].append(math.nan)
        pos = [score[j] for j in candidates if g_labels[j] == q_labels[i]]
        neg = [score[j] for j in candidates if g_labels[j] != q_labels[i]]
        if pos and neg:
            wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
            per["roc_auc"].append(wins / (len(pos) * len(neg)))
        else:
            per["roc_auc"].append(math.nan)
        top_labels = [g_labels[j] for j in ranking[:f1_k]]
        ones = sum(top_labels)
        votes.append(1 if 2 * ones > f1_k else 0 if 2 * ones < f1_k else top_labels[0])

    def mean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    out = {f"accuracy@{k}": mean(acc[k]) for k in ks}
    if texts is not None:
        out.update({f"accuracy_dedup@{k}": mean(dedup[k]) for k in ks})
    out.update({f"mean_cosine@{k}": mean(cos[k]) for k in ks})
    out.update({f"precision@{k}": mean(prec[k]) for k in ks})
    out.update({f"label_hit_rate@{k}": mean(hit[k]) for k in ks})  # paper-compatible (docs/metrics.md)
    tp = sum(1 for t, p in zip(q_labels, votes) if t == 1 and p == 1)
    fp = sum(1 for t, p in zip(q_labels, votes) if t == 0 and p == 1)
    fn = sum(1 for t, p in zip(q_labels, votes) if t == 1 and p == 0)
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan
    out["roc_auc"] = mean(per["roc_auc"])
    out["map"] = mean(per["map"])
    # paper-compatible readings (docs/metrics.md), against scikit-learn itself
    out["f1@1"] = float(f1_score(q_labels, top1_labels, pos_label=1, zero_division=np.nan))
    readings = {"top1": top1_scores} | ({"top10_mean": top10_means} if len(g) - int(exclude_self) >= 10 else {})
    for name, values in readings.items():
        both = len(set(q_labels)) == 2
        out[f"roc_auc_{name}_score"] = float(roc_auc_score(q_labels, values)) if both else math.nan
        out[f"map_{name}_score"] = float(average_precision_score(q_labels, values)) if 1 in q_labels else math.nan
    return out


def assert_metrics_equal(actual: dict, expected: dict, rel: float = 1e-9) -> None:
    assert list(actual) == list(expected)
    for key, want in expected.items():
        got = actual[key]
        if math.isnan(want):
            assert math.isnan(got), f"{key}: expected NaN, got {got}"
        else:
            assert got == pytest.approx(want, rel=rel, abs=1e-12), key


def _random_problem(seed: int, n_queries: int = 14, n_gallery: int = 17, dim: int = 5):
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(n_gallery, dim)).astype(np.float32)
    # Identical gallery rows create exact score ties, exercising the lower-index-first tie-break.
    gallery[7] = gallery[2]
    gallery[11] = gallery[2]
    gallery[9] = gallery[4]
    queries = gallery[:n_queries] + 0.8 * rng.normal(size=(n_queries, dim)).astype(np.float32)
    queries[3] = gallery[2]
    labels = rng.integers(0, 2, size=n_gallery)
    vocabulary = ["No acute disease.", "no acute  disease", "Cardiomegaly.", "XXXX opacity", "Clear lungs"]
    texts = [vocabulary[int(i)] for i in rng.integers(0, len(vocabulary), size=n_gallery)]
    return queries, gallery, labels, texts


# ---------------------------------------------------------------------------------------------
# Agreement with the naive reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("f1_k", [3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_metrics_match_naive_loop(seed, f1_k, exclude_self):
    queries, gallery, labels, texts = _random_problem(seed)
    ks = (1, 3, 5, 10)
    expected = naive_retrieval(
        queries, gallery, labels[: len(queries)], labels, ks, texts=texts, exclude_self=exclude_self, f1_k=f1_k
    )
    actual = retrieval_metrics(
        queries,
        gallery,
        labels[: len(queries)],
        labels,
        ks,
        gallery_texts=texts,
        exclude_self=exclude_self,
        f1_k=f1_k,
        chunk_size=4,
    )
    assert_metrics_equal(actual, expected)


def test_query_texts_set_the_duplicate_target():
    queries, gallery, labels, texts = _random_problem(5, n_queries=10)
    query_texts = ["Cardiomegaly"] * 5 + ["something never seen"] * 5
    expected = naive_retrieval(queries, gallery, labels[:10], labels, (1, 3), texts=texts, query_texts=query_texts)
    actual = retrieval_metrics(queries, gallery, labels[:10], labels, (1, 3), query_texts=query_texts, gallery_texts=texts)
    assert_metrics_equal(actual, expected)


def test_chunk_size_does_not_change_any_number():
    queries, gallery, labels, texts = _random_problem(3)
    reference = compute_retrieval_result(queries, gallery, labels[:14], labels, (1, 5), gallery_texts=texts)
    for chunk_size in (1, 2, 5, 1000):
        other = compute_retrieval_result(
            queries, gallery, labels[:14], labels, (1, 5), gallery_texts=texts, chunk_size=chunk_size
        )
        assert other.metrics == reference.metrics
        np.testing.assert_array_equal(other.paired_ranks, reference.paired_ranks)
        np.testing.assert_array_equal(other.vote_labels, reference.vote_labels)


def test_per_query_values_average_to_the_metrics():
    queries, gallery, labels, texts = _random_problem(4)
    result = compute_retrieval_result(queries, gallery, labels[:14], labels, (1, 3), gallery_texts=texts)
    for key, values in result.per_query.items():
        assert values.shape == (14,)
        assert result.metrics[key] == pytest.approx(np.nanmean(values))
    assert result.n_queries == 14 and result.n_gallery == 17


# ---------------------------------------------------------------------------------------------
# Hand-computed 4-item example (written out in docs-style arithmetic)
# ---------------------------------------------------------------------------------------------
#
# gallery g0=(1,0) g1=(0,1) g2=(1,0) g3=(.6,.8); queries q0=(1,0) q1=(0,1) q2=(1,0) q3=(.8,.6)
# labels (queries and gallery) [1, 0, 0, 0]; texts: g0 and g2 are the same report.
# scores      g0   g1   g2   g3        ranking (ties: lower index first)
#   q0        1    0    1    .6        0 2 3 1
#   q1        0    1    0    .8        1 3 0 2
#   q2        1    0    1    .6        0 2 3 1   <- paired g2 loses the tie to g0
#   q3        .8   .6   .8   .96       3 0 2 1
HAND_G = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
HAND_Q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
HAND_LABELS = np.array([1, 0, 0, 0])
HAND_TEXTS = ["No acute disease.", "Cardiomegaly.", "no acute disease", "XXXX opacity"]


def test_hand_computed_four_items():
    result = compute_retrieval_result(
        HAND_Q, HAND_G, HAND_LABELS, HAND_LABELS, ks=(1, 3), gallery_texts=HAND_TEXTS, f1_k=1
    )
    m = result.metrics
    np.testing.assert_array_equal(result.paired_ranks, [0, 0, 1, 0])
    assert m["accuracy@1"] == pytest.approx(3 / 4)  # q2's pair loses the tie
    assert m["accuracy@3"] == pytest.approx(1.0)
    assert m["accuracy_dedup@1"] == pytest.approx(1.0)  # q2 retrieves g0, the same report as g2
    assert m["mean_cosine@1"] == pytest.approx((1 + 1 + 1 + 0.96) / 4)
    assert m["mean_cosine@3"] == pytest.approx((2.6 + 1.8 + 2.6 + 2.56) / 12)
    # relevance along the rankings: q0 1000, q1 1101, q2 0111, q3 1011
    assert m["precision@1"] == pytest.approx(3 / 4)
    assert m["precision@3"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3 + 2 / 3) / 4)
    ap = [1.0, (1 + 1 + 3 / 4) / 3, (1 / 2 + 2 / 3 + 3 / 4) / 3, (1 + 2 / 3 + 3 / 4) / 3]
    assert m["map"] == pytest.approx(sum(ap) / 4) and m["map"] == pytest.approx(121 / 144)
    # AUC: q0 pos{1} vs neg{0, 1(tie), .6} = 2.5/3; q1 pos{1, 0(tie), .8} vs neg{0} = 2.5/3;
    # q2 pos{0, 1(tie), .6} vs neg{1} = .5/3; q3 pos{.6, .8(tie), .96} vs neg{.8} = 1.5/3
    assert m["roc_auc"] == pytest.approx((5 / 6 + 5 / 6 + 1 / 6 + 1 / 2) / 4)
    # top-1 votes: 1, 0, 1, 0 vs truth 1, 0, 0, 0 -> TP 1, FP 1, FN 0 -> F1 = 2/3
    np.testing.assert_array_equal(result.vote_labels, [1, 0, 1, 0])
    assert m["f1"] == pytest.approx(2 / 3)
    assert result.n_skipped_map == 0 and result.n_skipped_roc_auc == 0
    # top-3 majority votes are all normal -> no true positive -> F1 = 0
    assert retrieval_metrics(HAND_Q, HAND_G, HAND_LABELS, HAND_LABELS, ks=(1,), f1_k=3)["f1"] == 0.0
    # f1_k=2: an even split takes the top-1 label -> same votes as f1_k=1
    assert retrieval_metrics(HAND_Q, HAND_G, HAND_LABELS, HAND_LABELS, ks=(1,), f1_k=2)["f1"] == pytest.approx(2 / 3)


def test_hand_computed_exclude_self_with_a_query_without_relevant_item():
    # Without its own row q0 (the only abnormal study) has no relevant item: skipped in map/roc_auc.
    # rankings: q0 2 3 1 | q1 3 0 2 | q2 0 3 1 | q3 0 2 1
    result = compute_retrieval_result(
        HAND_Q, HAND_G, HAND_LABELS, HAND_LABELS, ks=(1, 3), gallery_texts=HAND_TEXTS, exclude_self=True, f1_k=1
    )
    m = result.metrics
    assert math.isnan(m["accuracy@1"]) and math.isnan(m["accuracy@3"])
    assert result.n_skipped_map == 1 and result.n_skipped_roc_auc == 1
    assert math.isnan(result.per_query["map"][0]) and math.isnan(result.per_query["roc_auc"][0])
    assert m["map"] == pytest.approx((5 / 6 + 7 / 12 + 7 / 12) / 3)
    assert m["roc_auc"] == pytest.approx((0.75 + 0.0 + 0.25) / 3)
    assert m["precision@1"] == pytest.approx(1 / 4)
    assert m["mean_cosine@1"] == pytest.approx((1 + 0.8 + 1 + 0.8) / 4)
    # top-1: q0 -> g2 (same report as g0), q1 -> g3 (no), q2 -> g0 (same as g2), q3 -> g0 (no)
    assert m["accuracy_dedup@1"] == pytest.approx(0.5)
    np.testing.assert_array_equal(result.vote_labels, [0, 0, 1, 1])
    assert m["f1"] == pytest.approx(0.0)  # TP 0, FP 2, FN 1


def test_no_relevant_item_for_any_query_gives_nan_and_counts():
    queries, gallery, _, _ = _random_problem(6)
    result = compute_retrieval_result(queries, gallery, np.ones(14, int), np.zeros(17, int), ks=(1,))
    assert result.n_skipped_map == 14 and result.n_skipped_roc_auc == 14
    assert math.isnan(result.metrics["map"]) and math.isnan(result.metrics["roc_auc"])
    assert result.metrics["precision@1"] == 0.0


# ---------------------------------------------------------------------------------------------
# Identity and shuffled pairings; protocols
# ---------------------------------------------------------------------------------------------


def test_identity_embeddings_are_perfect_and_shuffled_pairing_is_chance():
    rng = np.random.default_rng(0)
    n = 200
    images = rng.normal(size=(n, 32)).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    perfect = bidirectional_retrieval_metrics(images, images.copy(), labels, ks=(1, 10))
    assert perfect["image_to_text/accuracy@1"] == 1.0
    assert perfect["text_to_image/accuracy@1"] == 1.0
    assert perfect["image_to_text/mean_cosine@1"] == pytest.approx(1.0)
    shuffled = bidirectional_retrieval_metrics(images, images[rng.permutation(n)], labels, ks=(1, 10))
    for direction in ("image_to_text", "text_to_image"):
        assert shuffled[f"{direction}/accuracy@1"] <= 0.03  # chance is 1/200
        assert shuffled[f"{direction}/accuracy@10"] <= 0.15  # chance is 10/200
        # random embeddings carry no label information: label metrics near chance
        assert abs(shuffled[f"{direction}/roc_auc"] - 0.5) < 0.05


def test_paper_protocol_ranks_both_modalities_against_fused():
    queries, gallery, labels, texts = _random_problem(7, n_queries=17)
    fused = queries + gallery
    out = bidirectional_retrieval_metrics(queries, gallery, labels, (1, 3), texts, protocol="paper", fused_embeds=fused)
    assert_metrics_equal(
        {k.split("/", 1)[1]: v for k, v in out.items() if k.startswith("image_to_text/")},
        retrieval_metrics(queries, fused, labels, labels, (1, 3), gallery_texts=texts),
    )
    assert_metrics_equal(
        {k.split("/", 1)[1]: v for k, v in out.items() if k.startswith("text_to_image/")},
        retrieval_metrics(gallery, fused, labels, labels, (1, 3), gallery_texts=texts),
    )
    excluded = bidirectional_retrieval_results(
        queries, gallery, labels, (1,), texts, protocol="paper", fused_embeds=fused, exclude_self=True
    )
    assert math.isnan(excluded["image_to_text"].metrics["accuracy@1"])
    assert excluded["image_to_text"].metrics["mean_cosine@1"] < out["image_to_text/mean_cosine@1"]


def test_cross_modal_default_and_explicit_galleries():
    queries, gallery, labels, _ = _random_problem(8, n_queries=17)
    out = bidirectional_retrieval_metrics(queries, gallery, labels, (1, 5))
    assert out["image_to_text/map"] == pytest.approx(retrieval_metrics(queries, gallery, labels, labels, (1, 5))["map"])
    assert out["text_to_image/map"] == pytest.approx(retrieval_metrics(gallery, queries, labels, labels, (1, 5))["map"])
    other = queries[::-1].copy()
    explicit = bidirectional_retrieval_metrics(queries, gallery, labels, (1,), image_gallery=other)
    assert explicit["image_to_text/map"] == pytest.approx(retrieval_metrics(queries, other, labels, labels, (1,))["map"])
    one_direction = retrieval_metrics(queries, gallery, labels, labels, (1, 5))
    assert set(out) == {f"{d}/{m}" for d in ("image_to_text", "text_to_image") for m in one_direction}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda q, g, l: retrieval_metrics(q, g[:, :3], l, l), "dimension"),
        (lambda q, g, l: retrieval_metrics(q, g[:5], l, l[:5]), "at least as many rows"),
        (lambda q, g, l: retrieval_metrics(np.where(np.eye(17, 5) > 0, np.nan, q), g, l, l), "NaN"),
        (lambda q, g, l: retrieval_metrics(np.zeros_like(q), g, l, l), "all-zero"),
        (lambda q, g, l: retrieval_metrics(q[0], g, l, l), "shape"),
        (lambda q, g, l: retrieval_metrics(q, g, l + 1, l), "only 0"),
        (lambda q, g, l: retrieval_metrics(q, g, l[:4], l), "query_labels"),
        (lambda q, g, l: retrieval_metrics(q, g, l, l, ks=(1, 18)), "k=18"),
        (lambda q, g, l: retrieval_metrics(q, g, l, l, ks=(1, 17), exclude_self=True), "k=17"),
        (lambda q, g, l: retrieval_metrics(q, g, l, l, ks=(0,)), "positive"),
        (lambda q, g, l: retrieval_metrics(q, g, l, l, ks=()), "empty"),
        (lambda q, g, l: retrieval_metrics(q, g, l, l, gallery_texts=["a"] * 3), "gallery_texts"),
        (lambda q, g, l: retrieval_metrics(q, g, l, l, query_texts=["a"] * 17), "gallery_texts"),
        (lambda q, g, l: retrieval_metrics(q, g, l, l, chunk_size=0), "chunk_size"),
        (lambda q, g, l: bidirectional_retrieval_metrics(q, g, l, protocol="paper"), "fused_embeds"),
        (lambda q, g, l: bidirectional_retrieval_metrics(q, g, l, protocol="other"), "protocol"),
        (lambda q, g, l: bidirectional_retrieval_metrics(q, g[:9], l), "text_embeds"),
    ],
)
def test_invalid_inputs_raise_clear_value_errors(call, message):
    queries, gallery, labels, _ = _random_problem(9, n_queries=17)
    with pytest.raises(ValueError, match=message):
        call(queries, gallery, labels)


# ---------------------------------------------------------------------------------------------
# Report normalisation
# ---------------------------------------------------------------------------------------------


def test_normalise_report_text():
    assert normalise_report_text("No acute  disease.\nXXXX, stable.") == "no acute disease xxxx stable"
    assert normalise_report_text("  Heart size normal;\tlungs clear!  ") == "heart size normal lungs clear"
    assert normalise_report_text("Well-expanded lungs") == normalise_report_text("well expanded LUNGS.")
    assert normalise_report_text("1. Cardiomegaly\u00a0(stable)") == "1 cardiomegaly stable"
    assert normalise_report_text("snake_case") == "snake case"
    assert normalise_report_text("Heart enlarged") != normalise_report_text("Heart normal")
    with pytest.raises(TypeError):
        normalise_report_text(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Classification metrics vs sklearn
# ---------------------------------------------------------------------------------------------


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=300)
    logits = labels * 0.8 + rng.normal(size=300)
    probs = 1 / (1 + np.exp(-logits))
    predicted = (probs >= 0.5).astype(int)
    expected = {
        "classification/roc_auc": roc_auc_score(labels, probs),
        "classification/f1": f1_score(labels, predicted),
        "classification/accuracy": accuracy_score(labels, predicted),
    }
    two_column = np.column_stack([np.zeros(300), logits])
    for got in (
        classification_metrics(logits, labels),
        classification_metrics(logits[:, None], labels),
        classification_metrics(two_column, labels),
        classification_metrics(probs, labels, from_logits=False),
    ):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-12), key


def test_classification_metrics_edge_cases():
    single_class = classification_metrics([0.3, -2.0, 1.0], [1, 1, 1])
    assert math.isnan(single_class["classification/roc_auc"])
    assert single_class["classification/accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(classification_metrics([-1.0, -2.0], [0, 0])["classification/f1"])
    # a logit of exactly 0 is probability 0.5: predicted abnormal
    assert classification_metrics([0.0], [1])["classification/accuracy"] == 1.0
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([1.5, 0.2], [1, 0], from_logits=False)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.zeros((3, 3)), [0, 1, 0])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics([np.nan, 1.0], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        classification_metrics([0.1, 1.0], [0, 1, 1])


# ---------------------------------------------------------------------------------------------
# Bootstrap confidence intervals
# ---------------------------------------------------------------------------------------------


def test_bootstrap_ci_behaviour():
    assert bootstrap_ci(np.full(50, 0.25), n_boot=200) == (0.25, 0.25, 0.25)
    rng = np.random.default_rng(1)
    coin = rng.integers(0, 2, size=400).astype(float)
    mean, lo, hi = bootstrap_ci(coin, n_boot=2000, seed=3)
    assert mean == pytest.approx(coin.mean())
    half_width = 1.96 * math.sqrt(mean * (1 - mean) / 400)  # normal approximation
    assert lo == pytest.approx(mean - half_width, abs=0.012)
    assert hi == pytest.approx(mean + half_width, abs=0.012)
    assert bootstrap_ci(coin, n_boot=300, seed=5) == bootstrap_ci(coin, n_boot=300, seed=5)
    narrower = bootstrap_ci(coin, n_boot=300, alpha=0.5, seed=5)
    assert narrower[1] > lo and narrower[2] < hi
    with_nan = np.concatenate([coin, np.full(100, np.nan)])
    assert bootstrap_ci(with_nan, n_boot=100)[0] == pytest.approx(coin.mean())
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan, np.nan], n_boot=10))  # every query skipped
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(coin, alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(coin, n_boot=0)


def test_retrieval_bootstrap_cis_cover_every_metric():
    queries, gallery, labels, texts = _random_problem(10, n_queries=17)
    result = compute_retrieval_result(queries, gallery, labels, labels, (1, 3), gallery_texts=texts, f1_k=3)
    cis = retrieval_bootstrap_cis(result, n_boot=200, seed=0)
    assert cis.keys() == result.metrics.keys()
    for key, (estimate, lo, hi) in cis.items():
        assert estimate == pytest.approx(result.metrics[key]), key
        if not math.isnan(estimate):
            assert lo <= hi, key
            assert lo - 1e-12 <= estimate <= hi + 1e-12 or key == "f1", key


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def test_format_paper_tables_contains_note_models_and_every_metric():
    queries, gallery, labels, texts = _random_problem(11, n_queries=17)
    zero_shot = bidirectional_retrieval_metrics(queries, gallery, labels, (1, 5), texts)
    tuned = bidirectional_retrieval_metrics(gallery, gallery, labels, (1, 5), texts)
    tuned.update(classification_metrics(np.linspace(-1, 1, 17), labels))
    tuned["image_to_text/roc_auc"] = math.nan
    note = "synthetic phantom images, not patient data"
    text = format_paper_tables({"BiomedCLIP zero-shot": zero_shot, "fine-tuned": tuned}, title_note=note)
    tables = text.split("### ")[1:]
    assert len(tables) == 3  # image->text, text->image, classification
    assert tables[0].startswith("Image -> report") and tables[1].startswith("Report -> image")
    for table in tables:
        assert note in table
        assert "| Metric | BiomedCLIP zero-shot | fine-tuned |" in table
    for key, value in zero_shot.items():
        direction, metric = key.split("/")
        table = tables[0] if direction == "image_to_text" else tables[1]
        row = next(line for line in table.splitlines() if line.startswith(f"| {metric} |"))
        assert f"{value:.4f}" in row
    assert "| roc_auc | " in tables[0] and "n/a" in tables[0]
    assert "| accuracy | - | " in tables[2]  # classification only for the tuned model
    rows = [line.split("|")[1].strip() for line in tables[0].splitlines() if line.startswith("| ") and "Metric" not in line]
    assert rows == ["accuracy@1", "accuracy@5", "accuracy_dedup@1", "accuracy_dedup@5", "mean_cosine@1",
                    "mean_cosine@5", "precision@1", "precision@5", "label_hit_rate@1", "label_hit_rate@5", "f1", "f1@1",
                    "roc_auc", "map", "roc_auc_top1_score", "map_top1_score", "roc_auc_top10_mean_score",
                    "map_top10_mean_score"]
    with pytest.raises(ValueError, match="title_note"):
        format_paper_tables({"m": zero_shot}, title_note="  ")


# ---------------------------------------------------------------------------------------------
# The evaluate module, offline
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def offline_evaluate(monkeypatch):
    import evaluate
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return evaluate


def test_metric_module_path_points_at_the_script():
    folder = Path(metric_module_path())
    assert folder.is_dir() and (folder / "cxr_retrieval.py").is_file()


def test_evaluate_module_loads_offline_and_matches(offline_evaluate):
    evaluate = offline_evaluate
    queries, gallery, labels, texts = _random_problem(12, n_queries=17)
    fused = queries + gallery

    metric = evaluate.load(metric_module_path(), keep_in_memory=True)
    assert metric.name == "cxr_retrieval"
    got = metric.compute(image_embeds=queries, text_embeds=gallery, labels=labels, ks=[1, 3], texts=texts)
    want = bidirectional_retrieval_metrics(queries, gallery, labels, (1, 3), texts)
    assert_metrics_equal(got, want)
    assert {"image_to_text/label_hit_rate@3", "image_to_text/f1@1", "text_to_image/roc_auc_top1_score",
            "text_to_image/map_top10_mean_score"} <= set(got)  # the paper-compatible keys flow through evaluate

    # accumulated over batches (as in an evaluation loop) gives the same numbers
    for start in range(0, 17, 5):
        metric.add_batch(
            image_embeds=queries[start : start + 5], text_embeds=gallery[start : start + 5], labels=labels[start : start + 5]
        )
    assert_metrics_equal(metric.compute(ks=[1, 3], texts=texts), want)

    paper = evaluate.load(str(Path(metric_module_path()) / "cxr_retrieval.py"), "paper", keep_in_memory=True)
    got = paper.compute(
        image_embeds=queries, text_embeds=gallery, fused_embeds=fused, labels=labels, ks=[1], exclude_self=True
    )
    want = bidirectional_retrieval_metrics(
        queries, gallery, labels, (1,), protocol="paper", fused_embeds=fused, exclude_self=True
    )
    assert_metrics_equal(got, want)

    classification = evaluate.load(metric_module_path(), "classification", keep_in_memory=True)
    logits = np.linspace(-2, 2, 17).astype(np.float32)
    got = classification.compute(predictions=logits, references=labels)
    assert_metrics_equal(got, classification_metrics(logits, labels))

    with pytest.raises(ValueError, match="config_name"):
        evaluate.load(metric_module_path(), "nonsense", keep_in_memory=True)


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------


@st.composite
def retrieval_problems(draw):
    n_gallery = draw(st.integers(2, 12))
    n_queries = draw(st.integers(1, n_gallery))
    dim = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    discrete = draw(st.booleans())  # small integer coordinates: many exact ties
    rng = np.random.default_rng(seed)
    if discrete:
        gallery = rng.integers(-2, 3, size=(n_gallery, dim)).astype(float)
        queries = rng.integers(-2, 3, size=(n_queries, dim)).astype(float)
        gallery[np.abs(gallery).sum(axis=1) == 0, 0] = 1.0
        queries[np.abs(queries).sum(axis=1) == 0, 0] = 1.0
    else:
        gallery = rng.normal(size=(n_gallery, dim))
        queries = rng.normal(size=(n_queries, dim))
    labels = rng.integers(0, 2, size=n_gallery)
    texts = [["a", "b", "A.", "c"][int(i)] for i in rng.integers(0, 4, size=n_gallery)]
    exclude_self = draw(st.booleans()) and n_gallery >= 2
    n_candidates = n_gallery - int(exclude_self)
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, n_candidates), min_size=1, max_size=4)))))
    f1_k = draw(st.integers(1, n_candidates))
    return queries, gallery, labels[:n_queries], labels, texts, ks, exclude_self, f1_k


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(retrieval_problems())
def test_property_metric_bounds_and_monotonicity(problem):
    queries, gallery, q_labels, g_labels, texts, ks, exclude_self, f1_k = problem
    result = compute_retrieval_result(
        queries, gallery, q_labels, g_labels, ks, gallery_texts=texts, exclude_self=exclude_self, f1_k=f1_k
    )
    m = result.metrics
    for key, value in m.items():
        if math.isnan(value):
            one_number_over_queries = key in ("f1", "f1@1", "roc_auc", "map") or key.endswith("_score")
            assert one_number_over_queries or (exclude_self and key.startswith("accuracy@")), key
        elif key.startswith("mean_cosine"):
            assert -1 - 1e-9 <= value <= 1 + 1e-9, key
        else:
            assert 0.0 <= value <= 1.0, key
    for small, large in zip(ks, ks[1:]):
        assert m[f"mean_cosine@{small}"] >= m[f"mean_cosine@{large}"] - 1e-12
        assert m[f"accuracy_dedup@{small}"] <= m[f"accuracy_dedup@{large}"]
        assert m[f"label_hit_rate@{small}"] <= m[f"label_hit_rate@{large}"]
        if not exclude_self:
            assert m[f"accuracy@{small}"] <= m[f"accuracy@{large}"]
    for k in ks:
        assert m[f"label_hit_rate@{k}"] >= m[f"precision@{k}"] - 1e-12  # a hit rate bounds the fraction from above
        if not exclude_self:
            assert m[f"accuracy_dedup@{k}"] >= m[f"accuracy@{k}"]
            assert m[f"label_hit_rate@{k}"] >= m[f"accuracy@{k}"]  # the paired item has the query's label
    assert 0 <= result.n_skipped_map <= result.n_skipped_roc_auc <= len(queries)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.integers(2, 6), st.integers(0, 2**32 - 1), st.booleans())
def test_property_permuting_pairs_leaves_metrics_unchanged(n, dim, seed, exclude_self):
    rng = np.random.default_rng(seed)
    queries, gallery = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))  # continuous: no ties
    labels = rng.integers(0, 2, size=n)
    texts = [["x", "y", "z"][int(i)] for i in rng.integers(0, 3, size=n)]
    ks = tuple(range(1, n - int(exclude_self) + 1))
    perm = rng.permutation(n)
    before = retrieval_metrics(queries, gallery, labels, labels, ks, gallery_texts=texts, exclude_self=exclude_self, f1_k=1)
    after = retrieval_metrics(
        queries[perm], gallery[perm], labels[perm], labels[perm], ks,
        gallery_texts=[texts[i] for i in perm], exclude_self=exclude_self, f1_k=1,
    )
    assert_metrics_equal(after, before, rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_property_perfect_retrieval_scores_one(n, dim, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    # one direction per label plus small noise: every same-label item outscores every other
    embeds = np.concatenate([np.eye(2)[labels], 0.05 * rng.normal(size=(n, dim))], axis=1)
    m = retrieval_metrics(embeds, embeds.copy(), labels, labels, tuple(range(1, n + 1)), gallery_texts=["r"] * n, f1_k=1)
    for k in range(1, n + 1):
        assert m[f"accuracy@{k}"] == 1.0 and m[f"accuracy_dedup@{k}"] == 1.0
    assert m["mean_cosine@1"] == pytest.approx(1.0)
    assert m["precision@1"] == 1.0 and m["map"] == pytest.approx(1.0)
    if 0 < labels.sum() < n:
        assert m["roc_auc"] == 1.0
    if labels.any():
        assert m["f1"] == 1.0
