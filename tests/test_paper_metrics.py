"""The paper-compatible label metrics (issue 15, finding 2) on a hand-made example, and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxr_mtclip.evaluation import compute_retrieval_result, retrieval_bootstrap_cis

# Four queries (labels normal, abnormal, normal, abnormal) against a gallery of ten studies: A-E carry the
# similarities below, F-J score 0 for every query (distractors: they fill the top 10, never the top 5).
# Query i is paired with gallery item i (A-D).
#                 A     B     C     D     E
SCORES = [
    [0.60, 0.40, 0.30, 0.20, 0.10],  # q0 normal:   ranks A B C D E  -> labels 0 1 0 1 1
    [0.20, 0.30, 0.45, 0.40, 0.28],  # q1 abnormal: ranks C D B E A  -> labels 0 1 1 1 0
    [0.10, 0.55, 0.20, 0.40, 0.30],  # q2 normal:   ranks B D E C A  -> labels 1 1 1 0 0
    [0.20, 0.58, 0.10, 0.40, 0.30],  # q3 abnormal: ranks B D E A C  -> labels 1 1 1 0 0
]
QUERY_LABELS = [0, 1, 0, 1]
GALLERY_LABELS = [0, 1, 0, 1, 1, 0, 0, 1, 1, 0]  # A-E, then the distractors F-J


def hand_made_example() -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors whose dot products are exactly SCORES (an 11th coordinate pads each query to norm 1)."""
    gallery = np.eye(11)[:10]
    queries = np.zeros((4, 11))
    queries[:, :5] = SCORES
    queries[:, 10] = np.sqrt(1 - (queries**2).sum(axis=1))
    return queries, gallery


@pytest.fixture(scope="module")
def result():
    queries, gallery = hand_made_example()
    return compute_retrieval_result(queries, gallery, QUERY_LABELS, GALLERY_LABELS, ks=(1, 3, 5))


def test_label_hit_rate_is_not_the_fraction_of_the_top_k(result):
    m = result.metrics
    # top 3 relevant (same label as the query): q0 [1 0 1], q1 [0 1 1], q2 [0 0 0], q3 [1 1 1]
    assert m["precision@3"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 1) / 4)  # fraction of the top 3: 0.583
    assert m["label_hit_rate@3"] == 0.75  # at least one same-label item in the top 3: q0, q1, q3
    assert m["precision@3"] != m["label_hit_rate@3"]
    assert m["precision@1"] == m["label_hit_rate@1"] == 0.5  # at k = 1 the two readings coincide
    assert m["precision@5"] == 0.5 and m["label_hit_rate@5"] == 1.0
    assert m["accuracy@1"] == 0.25 and m["accuracy@3"] == 0.75  # pairs at ranks 1, 3, 4, 2


def test_f1_at_1_votes_with_the_top_1_label_only(result):
    m = result.metrics
    # top-1 labels 0 0 1 1 vs query labels 0 1 0 1: TP 1 (q3), FP 1 (q2), FN 1 (q1)
    assert m["f1@1"] == 0.5
    assert result.top1_labels.tolist() == [0, 0, 1, 1]
    # the standard F1 votes over the top 5 (labels 0 1 0 1 1 for every query: always abnormal)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["f1@1"] == f1_score(QUERY_LABELS, result.top1_labels)


def test_query_label_auc_and_ap_of_the_top_1_and_top_10_mean_scores(result):
    m = result.metrics
    # top-1 similarity: normal q0 0.60, q2 0.55; abnormal q1 0.45, q3 0.58 -> one of four (abnormal, normal)
    # pairs ordered abnormal-first; ranked by score: q0 (n), q3 (a), q2 (n), q1 (a) -> AP (1/2 + 2/4) / 2
    assert result.query_scores["top1"].tolist() == [0.60, 0.45, 0.55, 0.58]
    assert m["roc_auc_top1_score"] == 0.25
    assert m["map_top1_score"] == 0.5
    # mean of the top 10 (A-E plus five zeros): 0.160, 0.163, 0.155, 0.158 -> 3 of 4 pairs; AP (1 + 2/3) / 2
    np.testing.assert_allclose(result.query_scores["top10_mean"], [0.160, 0.163, 0.155, 0.158])
    assert m["roc_auc_top10_mean_score"] == pytest.approx(0.75)
    assert m["map_top10_mean_score"] == pytest.approx(5 / 6)
    for reading in ("top1", "top10_mean"):
        scores = result.query_scores[reading]
        assert m[f"roc_auc_{reading}_score"] == pytest.approx(roc_auc_score(QUERY_LABELS, scores))
        assert m[f"map_{reading}_score"] == pytest.approx(average_precision_score(QUERY_LABELS, scores))


def test_every_paper_compatible_key_sits_beside_its_standard_metric(result):
    from cxr_mtclip.evaluation.paper_metrics import PAPER_COMPATIBLE_KEYS

    for standard, paper in PAPER_COMPATIBLE_KEYS.items():
        for k in (1, 3, 5):
            assert standard.replace("@k", f"@{k}") in result.metrics
            assert paper.replace("@k", f"@{k}") in result.metrics
    cis = retrieval_bootstrap_cis(result, n_boot=200, seed=0)
    assert set(cis) == set(result.metrics)
    for key in ("f1@1", "roc_auc_top1_score", "map_top10_mean_score", "label_hit_rate@3"):
        estimate, lo, hi = cis[key]
        assert estimate == pytest.approx(result.metrics[key]) and lo <= estimate <= hi, key


def test_top10_mean_keys_need_ten_candidates():
    queries, gallery = hand_made_example()
    short = compute_retrieval_result(queries, gallery[:9], QUERY_LABELS, GALLERY_LABELS[:9], ks=(1,))
    assert "roc_auc_top1_score" in short.metrics and "roc_auc_top10_mean_score" not in short.metrics
    excluded = compute_retrieval_result(queries, gallery, QUERY_LABELS, GALLERY_LABELS, ks=(1,), exclude_self=True)
    assert "map_top10_mean_score" not in excluded.metrics  # 9 candidates once the own pair is removed


def test_one_class_of_queries_gives_nan_not_an_error():
    queries, gallery = hand_made_example()
    out = compute_retrieval_result(queries[[0, 2]], gallery, [0, 0], GALLERY_LABELS, ks=(1,)).metrics
    assert math.isnan(out["roc_auc_top1_score"]) and math.isnan(out["map_top1_score"])
    assert out["f1@1"] == 0.0 == f1_score([0, 0], [0, 1])  # q2's top-1 item is abnormal: one false positive


def test_query_score_statistic_parses_only_score_keys():
    from cxr_mtclip.evaluation.paper_metrics import query_score_statistic

    assert query_score_statistic("roc_auc_top1_score")[0] == "top1"
    assert query_score_statistic("roc_auc") is None and query_score_statistic("map_top5_score") is None


def test_average_precision_rows_is_sklearns_with_ties():
    from cxr_mtclip.evaluation.statistics import average_precision_rows

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        scores = np.round(rng.random(n), 1)  # many exact ties
        if labels.sum() == 0:
            assert math.isnan(average_precision_rows(labels, scores)[0])
            continue
        assert average_precision_rows(labels, scores)[0] == pytest.approx(average_precision_score(labels, scores))
