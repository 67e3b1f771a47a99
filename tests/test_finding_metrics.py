"""Tests for cxr_mtclip.evaluation.finding_metrics: hand-computed examples, naive loops, sklearn as the AUC reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_mtclip.evaluation import bootstrap_ci
from cxr_mtclip.evaluation.finding_metrics import (
    FindingRetrievalResult,
    bidirectional_finding_retrieval_metrics,
    finding_bootstrap_cis,
    finding_classification_bootstrap_cis,
    finding_classification_metrics,
    finding_query_result,
    finding_retrieval_result,
)

# ----------------------------------------------------------------------------------------------
# A small example written out by hand
# ----------------------------------------------------------------------------------------------

NAMES = ["a", "b", "c", "d"]
# Gallery: g0 {a}, g1 {a,b}, g2 {} (no finding), g3 {c}, g4 unknown (its row must be ignored).
GALLERY = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
GALLERY_KNOWN = np.array([True, True, True, True, False])
# Queries: q0 {a}, q1 {b,c}, q2 {} (no positive finding), q3 unknown, q4 {a}. Nobody carries d.
QUERIES = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
QUERY_KNOWN = np.array([True, True, True, False, True])
SCORES = np.array(
    [
        [0.1, 0.9, 0.5, 0.3, 1.0],  # known ranking g1, g2, g3, g0 (g4 is unknown, skipped)
        [0.2, 0.4, 0.1, 0.8, 0.0],  # g3, g1, g0, g2
        [0.5, 0.1, 0.7, 0.2, 0.3],  # g2, g0, g3, g1
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.9, 0.1, 0.2, 0.3, 0.0],  # g0, g3, g2, g1
    ]
)
# q0@1: g1 -> a hit; @2: g1,g2 -> a 1/2.  q1@1: g3 -> b 0, c 1; @2: g3,g1 -> b 1/2, c 1/2.
# q4@1: g0 -> a 1; @2: g0,g3 -> a 1/2.
# Jaccard q0: @1 J({a},{a,b}) = 1/2, @2 (1/2 + 0)/2.  q1: @1 J({b,c},{c}) = 1/2, @2 (1/2 + 1/3)/2.
# q2 (no finding): @1 J({},{}) = 1, @2 (1 + 0)/2.  q4: @1 1, @2 (1 + 0)/2.
EXPECTED = {
    "image_to_text/finding_precision@1/a": 1.0,
    "image_to_text/finding_precision@1/b": 0.0,
    "image_to_text/finding_precision@1/c": 1.0,
    "image_to_text/finding_precision@1/macro": 2 / 3,
    "image_to_text/finding_precision@1/micro": 3 / 4,
    "image_to_text/finding_precision@2/a": 0.5,
    "image_to_text/finding_precision@2/b": 0.5,
    "image_to_text/finding_precision@2/c": 0.5,
    "image_to_text/finding_precision@2/macro": 0.5,
    "image_to_text/finding_precision@2/micro": 0.5,
    "image_to_text/finding_hit_rate@1/a": 1.0,
    "image_to_text/finding_hit_rate@1/b": 0.0,
    "image_to_text/finding_hit_rate@1/c": 1.0,
    "image_to_text/finding_hit_rate@1/macro": 2 / 3,
    "image_to_text/finding_hit_rate@1/micro": 3 / 4,
    "image_to_text/finding_hit_rate@2/a": 1.0,
    "image_to_text/finding_hit_rate@2/b": 1.0,
    "image_to_text/finding_hit_rate@2/c": 1.0,
    "image_to_text/finding_hit_rate@2/macro": 1.0,
    "image_to_text/finding_hit_rate@2/micro": 1.0,
    "image_to_text/finding_jaccard@1": (0.5 + 0.5 + 1 + 1) / 4,
    "image_to_text/finding_jaccard@2": (0.25 + (0.5 + 1 / 3) / 2 + 0.5 + 0.5) / 4,
}


def _hand_result(**kwargs) -> FindingRetrievalResult:
    return finding_retrieval_result(
        QUERIES, GALLERY, names=NAMES, query_known=QUERY_KNOWN, gallery_known=GALLERY_KNOWN, ks=(1, 2), **kwargs
    )


def test_hand_example_scores():
    result = _hand_result(scores=SCORES)
    for key, value in EXPECTED.items():
        assert result.metrics[key] == pytest.approx(value), key
    # d has no query: NaN, and left out of the macro averages above.
    assert math.isnan(result.metrics["image_to_text/finding_precision@1/d"])
    assert set(result.metrics) == set(EXPECTED) | {f"image_to_text/finding_{m}@{k}/d" for m in ("precision", "hit_rate") for k in (1, 2)}
    assert (result.n_unknown_queries, result.n_no_finding_queries) == (1, 1)
    # The query without a finding has NaN in every per-finding column but a Jaccard value.
    assert np.isnan(result.per_query_finding["image_to_text/finding_precision@1"][2]).all()
    assert result.per_query["image_to_text/finding_jaccard@1"][2] == 1.0
    assert np.isnan(result.per_query["image_to_text/finding_jaccard@1"][3])  # unknown query


def test_hand_example_ranked_indices_give_the_same_numbers():
    # FAISS-style: best first, unknown g4 included, -1 padding at the end.
    ranked = np.array([[4, 1, 2, 3, 0, -1], [3, 1, 0, 2, 4, -1], [2, 0, 4, 3, 1, -1], [0, 1, 2, 3, 4, -1], [0, 3, 2, 1, 4, -1]])
    by_scores = _hand_result(scores=SCORES).metrics
    by_ranks = _hand_result(ranked=ranked).metrics
    assert by_ranks.keys() == by_scores.keys()
    for key in by_scores:
        assert by_ranks[key] == pytest.approx(by_scores[key], nan_ok=True), key


def test_ranked_rows_that_are_too_short_are_rejected():
    ranked = np.array([[4, 1, -1], [3, 1, 0], [2, 0, 4], [0, 1, 2], [0, 3, 2]])  # row 0: only g1 is usable
    with pytest.raises(ValueError, match="ranked row 0 has 1 usable"):
        _hand_result(ranked=ranked)


def test_ties_are_broken_by_lower_gallery_index_and_exclude_self():
    hot = np.array([[1], [0], [1], [0]])
    flat = np.zeros((4, 4))
    result = finding_retrieval_result(hot, hot, names=["a"], scores=flat, ks=(1, 2))
    # Every query ranks 0, 1, 2, 3: top1 = g0 {a}, top2 = g0, g1.
    assert result.metrics["image_to_text/finding_precision@1/a"] == 1.0
    assert result.metrics["image_to_text/finding_precision@2/a"] == 0.5
    excluded = finding_retrieval_result(hot, hot, names=["a"], scores=flat, ks=(1,), exclude_self=True)
    # q0 ranks 1, 2, 3 -> top1 g1 (miss); q2 ranks 0, 1, 3 -> top1 g0 (hit).
    assert excluded.metrics["image_to_text/finding_precision@1/a"] == 0.5


# ----------------------------------------------------------------------------------------------
# Naive loops on random data
# ----------------------------------------------------------------------------------------------


def _random(n_queries, n_gallery, n_findings, seed, ties=False):
    rng = np.random.default_rng(seed)
    q = (rng.random((n_queries, n_findings)) < 0.3).astype(int)
    g = (rng.random((n_gallery, n_findings)) < 0.3).astype(int)
    qk = rng.random(n_queries) > 0.15
    gk = rng.random(n_gallery) > 0.15
    scores = rng.normal(size=(n_queries, n_gallery))
    if ties:
        scores = np.round(scores, 1)
    return q, g, qk, gk, scores


def _naive_retrieval(q, g, qk, gk, scores, k, exclude_self=False):
    n_q, n_g = scores.shape
    n_f = q.shape[1]
    per = {"precision": [[] for _ in range(n_f)], "hit": [[] for _ in range(n_f)]}
    jaccards = []
    for i in range(n_q):
        if not qk[i]:
            continue
        candidates = [j for j in range(n_g) if gk[j] and not (exclude_self and j == i)]
        candidates.sort(key=lambda j: (-scores[i, j], j))
        top = candidates[:k]
        for f in range(n_f):
            if q[i, f]:
                carried = [g[j, f] for j in top]
                per["precision"][f].append(sum(carried) / k)
                per["hit"][f].append(float(any(carried)))
        values = []
        for j in top:
            inter = sum(1 for f in range(n_f) if q[i, f] and g[j, f])
            union = sum(1 for f in range(n_f) if q[i, f] or g[j, f])
            values.append(1.0 if union == 0 else inter / union)
        jaccards.append(sum(values) / k)
    out = {}
    for family, lists in per.items():
        means = [sum(v) / len(v) if v else math.nan for v in lists]
        out[f"{family}/per"] = means
        defined = [m for m in means if not math.isnan(m)]
        out[f"{family}/macro"] = sum(defined) / len(defined) if defined else math.nan
        pooled = [x for v in lists for x in v]
        out[f"{family}/micro"] = sum(pooled) / len(pooled) if pooled else math.nan
    out["jaccard"] = sum(jaccards) / len(jaccards) if jaccards else math.nan
    return out


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False), (3, True)])
def test_retrieval_matches_naive_loop(seed, ties, exclude_self):
    q, g, qk, gk, scores = _random(23, 31, 5, seed, ties)
    names = [f"f{i}" for i in range(5)]
    result = finding_retrieval_result(
        q, g, names=names, scores=scores, query_known=qk, gallery_known=gk, ks=(1, 3, 7),
        direction="text_to_image", exclude_self=exclude_self,
    )
    for k in (1, 3, 7):
        naive = _naive_retrieval(q, g, qk, gk, scores, k, exclude_self)
        for family, key in (("precision", "finding_precision"), ("hit", "finding_hit_rate")):
            for f, name in enumerate(names):
                assert result.metrics[f"text_to_image/{key}@{k}/{name}"] == pytest.approx(naive[f"{family}/per"][f], nan_ok=True)
            for agg in ("macro", "micro"):
                assert result.metrics[f"text_to_image/{key}@{k}/{agg}"] == pytest.approx(naive[f"{family}/{agg}"])
        assert result.metrics[f"text_to_image/finding_jaccard@{k}"] == pytest.approx(naive["jaccard"])
    # The same ranking handed over as indices gives the same numbers.
    ranked = np.argsort(-scores, axis=1, kind="stable")
    again = finding_retrieval_result(
        q, g, names=names, ranked=ranked, query_known=qk, gallery_known=gk, ks=(1, 3, 7),
        direction="text_to_image", exclude_self=exclude_self,
    )
    for key, value in result.metrics.items():
        assert again.metrics[key] == pytest.approx(value, nan_ok=True), key


def test_bidirectional_uses_rows_then_columns():
    q, _, qk, _, scores = _random(12, 12, 3, seed=5)
    names = ["x", "y", "z"]
    both = bidirectional_finding_retrieval_metrics(scores, q, names=names, known=qk, ks=(1, 4))
    i2t = finding_retrieval_result(q, q, names=names, scores=scores, query_known=qk, gallery_known=qk, ks=(1, 4))
    t2i = finding_retrieval_result(
        q, q, names=names, scores=scores.T, query_known=qk, gallery_known=qk, ks=(1, 4), direction="text_to_image"
    )
    assert both == pytest.approx({**i2t.metrics, **t2i.metrics}, nan_ok=True)
    assert both["image_to_text/finding_jaccard@4"] != both["text_to_image/finding_jaccard@4"]


# ----------------------------------------------------------------------------------------------
# "Find images with X" text queries
# ----------------------------------------------------------------------------------------------


def test_text_queries_hand_example():
    # Images i0 {a}, i1 {b}, i2 {a,b}, i3 unknown, i4 {}.
    images = np.array([[1, 0], [0, 1], [1, 1], [1, 1], [0, 0]])
    known = np.array([True, True, True, False, True])
    scores = np.array(
        [
            [0.2, 0.9, 0.5, 1.0, 0.1],  # "a": known ranking i1, i2, i0, i4
            [0.5, 0.6, 0.6, 0.0, 0.3],  # "b": i1, i2 (tie, lower index first), i0, i4
        ]
    )
    result = finding_query_result(scores, images, names=["a", "b"], image_known=known, ks=(1, 2))
    m = result.metrics
    assert m["finding_query_to_image/precision@1/a"] == 0.0 and m["finding_query_to_image/precision@2/a"] == 0.5
    assert m["finding_query_to_image/hit_rate@1/a"] == 0.0 and m["finding_query_to_image/hit_rate@2/a"] == 1.0
    assert m["finding_query_to_image/precision@1/b"] == 1.0 and m["finding_query_to_image/precision@2/b"] == 1.0
    # AUC "a": positives 0.2, 0.5 vs negatives 0.9, 0.1 -> 2 of 4 pairs; "b": 0.6, 0.6 vs 0.5, 0.3 -> 1.
    assert m["finding_query_to_image/roc_auc/a"] == 0.5 and m["finding_query_to_image/roc_auc/b"] == 1.0
    assert m["finding_query_to_image/roc_auc/macro"] == 0.75
    assert m["finding_query_to_image/precision@1/macro"] == 0.5 and m["finding_query_to_image/precision@2/macro"] == 0.75
    assert not any(key.endswith("/micro") for key in m)


def test_text_queries_match_naive_loop_and_sklearn():
    rng = np.random.default_rng(11)
    images = (rng.random((40, 4)) < 0.35).astype(int)
    images[:, 3] = 0  # a finding no image carries: precision 0, AUC undefined
    known = rng.random(40) > 0.1
    scores = np.round(rng.normal(size=(4, 40)), 1)
    names = ["p", "q", "r", "s"]
    result = finding_query_result(scores, images, names=names, image_known=known, ks=(1, 5))
    for f, name in enumerate(names):
        candidates = sorted(np.flatnonzero(known), key=lambda j: (-scores[f, j], j))
        for k in (1, 5):
            top = candidates[:k]
            assert result.metrics[f"finding_query_to_image/precision@{k}/{name}"] == pytest.approx(images[top, f].mean())
            assert result.metrics[f"finding_query_to_image/hit_rate@{k}/{name}"] == float(images[top, f].any())
        y, s = images[known, f], scores[f, known]
        auc = result.metrics[f"finding_query_to_image/roc_auc/{name}"]
        if len(set(y)) == 2:
            assert auc == pytest.approx(roc_auc_score(y, s))
        else:
            assert math.isnan(auc)
    defined = [roc_auc_score(images[known, f], scores[f, known]) for f in range(3)]
    assert result.metrics["finding_query_to_image/roc_auc/macro"] == pytest.approx(np.mean(defined))


# ----------------------------------------------------------------------------------------------
# Classification: sklearn's roc_auc_score is the reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_classification_auc_matches_sklearn(ties):
    rng = np.random.default_rng(3 + ties)
    labels = (rng.random((60, 5)) < 0.3).astype(int)
    labels[0, :] = 1
    labels[1, :] = 0  # every column has both classes
    logits = rng.normal(size=(60, 5)) + labels
    if ties:
        logits = np.round(logits)
    known = rng.random(60) > 0.1
    known[:2] = True
    names = list("vwxyz")
    metrics = finding_classification_metrics(logits, labels, names=names, known=known)
    y, s = labels[known], logits[known]
    per = roc_auc_score(y, s, average=None)
    for f, name in enumerate(names):
        assert metrics[f"classification/finding_roc_auc/{name}"] == pytest.approx(per[f])
    assert metrics["classification/finding_roc_auc/macro"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert metrics["classification/finding_roc_auc/micro"] == pytest.approx(roc_auc_score(y, s, average="micro"))


def test_classification_single_class_column_is_nan_and_left_out_of_macro():
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 0]])
    logits = np.array([[2.0, 0.1, 0.3], [0.5, 0.2, 0.9], [1.0, 0.3, -1.0], [-1.0, 0.4, 0.2], [0.0, 0.5, 0.1]])
    metrics = finding_classification_metrics(logits, labels, names=["a", "b", "c"])
    assert math.isnan(metrics["classification/finding_roc_auc/b"])
    keep = [0, 2]
    assert metrics["classification/finding_roc_auc/macro"] == pytest.approx(roc_auc_score(labels[:, keep], logits[:, keep], average="macro"))
    assert metrics["classification/finding_roc_auc/micro"] == pytest.approx(roc_auc_score(labels, logits, average="micro"))
    # Hand value for "a": positives 2.0, 1.0, 0.0 vs negatives 0.5, -1.0 -> 5 of 6 pairs.
    assert metrics["classification/finding_roc_auc/a"] == pytest.approx(5 / 6)


# ----------------------------------------------------------------------------------------------
# Bootstrap intervals
# ----------------------------------------------------------------------------------------------


def test_retrieval_bootstrap_intervals():
    q, g, qk, gk, scores = _random(60, 60, 3, seed=21)
    result = finding_retrieval_result(q, g, names=["a", "b", "c"], scores=scores, query_known=qk, gallery_known=gk, ks=(5,))
    cis = finding_bootstrap_cis(result, n_boot=200, seed=4)
    assert cis.keys() == result.metrics.keys()
    for key, (estimate, lo, hi) in cis.items():
        assert estimate == pytest.approx(result.metrics[key]), key
        assert lo <= estimate <= hi and hi - lo > 0, key
    # A per-finding key is the plain bootstrap of that finding's column (NaN = query without it).
    column = result.per_query_finding["image_to_text/finding_precision@5"][:, 1]
    assert cis["image_to_text/finding_precision@5/b"] == bootstrap_ci(column, 200, 0.05, 4)
    # macro: recomputed on each resample of the queries (a naive loop with the same generator).
    matrix = result.per_query_finding["image_to_text/finding_precision@5"]
    rng = np.random.default_rng(4)
    boots = []
    for _ in range(200):
        sample = matrix[rng.integers(0, matrix.shape[0], size=matrix.shape[0])]
        means = [np.nanmean(sample[:, f]) for f in range(3) if not np.isnan(sample[:, f]).all()]
        boots.append(np.mean(means))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    assert cis["image_to_text/finding_precision@5/macro"][1:] == pytest.approx((lo, hi))
    # Same seed -> same numbers.
    assert finding_bootstrap_cis(result, n_boot=200, seed=4) == cis


def test_bootstrap_needs_two_contributing_queries():
    result = _hand_result(scores=SCORES)
    cis = finding_bootstrap_cis(result, n_boot=50)
    estimate, lo, hi = cis["image_to_text/finding_precision@1/b"]  # only q1 carries b
    assert estimate == 0.0 and math.isnan(lo) and math.isnan(hi)
    assert not math.isnan(cis["image_to_text/finding_precision@1/a"][1])  # q0 and q4 carry a
    assert math.isnan(cis["image_to_text/finding_precision@1/d"][0])


def test_text_query_bootstrap_resamples_findings_for_macro_only():
    rng = np.random.default_rng(2)
    images = (rng.random((30, 5)) < 0.4).astype(int)
    result = finding_query_result(rng.normal(size=(5, 30)), images, names=list("abcde"), ks=(3,))
    cis = finding_bootstrap_cis(result, n_boot=100, seed=1)
    assert math.isnan(cis["finding_query_to_image/precision@3/a"][1])
    per_finding = np.array([result.metrics[f"finding_query_to_image/roc_auc/{n}"] for n in "abcde"])
    assert cis["finding_query_to_image/roc_auc/macro"] == bootstrap_ci(per_finding, 100, 0.05, 1)


def test_classification_bootstrap_intervals():
    rng = np.random.default_rng(9)
    labels = (rng.random((80, 3)) < 0.4).astype(int)
    logits = rng.normal(size=(80, 3)) + 1.5 * labels
    names = ["a", "b", "c"]
    cis = finding_classification_bootstrap_cis(logits, labels, names=names, n_boot=150, seed=3)
    metrics = finding_classification_metrics(logits, labels, names=names)
    assert cis.keys() == metrics.keys()
    for key, (estimate, lo, hi) in cis.items():
        assert estimate == pytest.approx(metrics[key]) and lo < estimate < hi, key
    rows = np.column_stack([labels, logits])
    # bootstrap_ci's statistic gets one (resamples, queries) array per column: sklearn scores each resample
    expected = bootstrap_ci(rows, 150, 0.05, 3,
                            statistic=lambda *c: np.array([roc_auc_score(y, s) for y, s in zip(c[1], c[4])]))
    assert cis["classification/finding_roc_auc/b"] == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one of"),
        ({"scores": SCORES, "ranked": np.zeros((5, 2), dtype=int)}, "exactly one of"),
        ({"scores": SCORES[:, :4]}, r"shape \(n_queries, n_gallery\)"),
        ({"scores": np.where(SCORES > 0.8, np.nan, SCORES)}, "NaN"),
        ({"scores": SCORES, "ks": (5,)}, "k=5 but a query has only 4 known candidate"),
        ({"scores": SCORES, "ks": (0,)}, "positive ints"),
        ({"ranked": np.zeros((5, 6))}, "integer array"),
    ],
)
def test_retrieval_rejects_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        finding_retrieval_result(QUERIES, GALLERY, names=NAMES, query_known=QUERY_KNOWN, gallery_known=GALLERY_KNOWN, **kwargs)


def test_bad_labels_names_and_masks_are_rejected():
    with pytest.raises(ValueError, match="only 0/1"):
        finding_retrieval_result(QUERIES * 2, GALLERY, names=NAMES, scores=SCORES)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        finding_retrieval_result(QUERIES, GALLERY, names=NAMES[:3], scores=SCORES)
    with pytest.raises(ValueError, match="unique"):
        finding_retrieval_result(QUERIES, GALLERY, names=["a", "a", "b", "c"], scores=SCORES)
    with pytest.raises(ValueError, match="macro"):
        finding_retrieval_result(QUERIES, GALLERY, names=["a", "b", "c", "macro"], scores=SCORES)
    with pytest.raises(ValueError, match="one flag per study"):
        finding_retrieval_result(QUERIES, GALLERY, names=NAMES, scores=SCORES, query_known=[True])
    with pytest.raises(ValueError, match="one per finding"):
        finding_query_result(np.zeros((3, 5)), GALLERY, names=NAMES)
    with pytest.raises(ValueError, match="no study with known findings"):
        finding_classification_metrics(np.zeros((2, 1)), [[0], [1]], names=["a"], known=[False, False])
