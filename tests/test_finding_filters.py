"""Filtering retrieval by finding (issue 18, part 3) through the generic metadata filters of RetrievalIndex and the app.

`finding_labels` is a sequence of ClassLabel: a filter names findings, and the hits are exactly the top-k rows,
by brute force, among the studies that carry them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_mtclip import CxrMtClipModel
from cxr_mtclip.data import make_phantom_openi
from cxr_mtclip.data.findings import FINDING_NAMES, finding_multi_hot
from cxr_mtclip.retrieval import RetrievalIndex
from cxr_mtclip.retrieval.embedding import embed_reports


@pytest.fixture(scope="module")
def gallery():
    return make_phantom_openi(60, seed=2, image_size=64)


@pytest.fixture
def index(tiny_config, tiny_processor, gallery):
    torch.manual_seed(0)
    model = CxrMtClipModel(tiny_config).eval()
    return RetrievalIndex.build(model, tiny_processor, gallery, kind="flat", show_progress=False)


def _carriers(gallery, *names):
    hot, known = finding_multi_hot(gallery["finding_labels"])
    columns = [FINDING_NAMES.index(n) for n in names]
    return known & (hot[:, columns] > 0).all(axis=1)


@pytest.mark.parametrize("filters, names", [
    ({"finding_labels": "cardiomegaly"}, ("cardiomegaly",)),
    ({"finding_labels": {"all": ["opacity"]}, "label": "abnormal"}, ("opacity",)),
])
def test_a_finding_filter_returns_the_brute_force_top_k_among_its_carriers(index, gallery, tiny_processor, filters,
                                                                           names):
    mask = _carriers(gallery, *names)
    assert 0 < mask.sum() < len(gallery)
    query = "Findings consistent with cardiomegaly."
    results = index.search(text=query, k=3, filters=filters)
    assert len(results) == min(3, int(mask.sum()))
    hit_names = [[FINDING_NAMES[i] for i in labels] for labels in index.rows.select(results.row_ids)["finding_labels"]]
    assert all(set(names) <= set(found) for found in hit_names)
    # brute force: the report query against the image embeddings (cross-modal), restricted to the carriers
    vector = embed_reports(index.model, tiny_processor, [query])[0]
    images = np.asarray(index.rows["image_embeds"], dtype=np.float32)
    scores = np.where(mask, images @ vector, -np.inf)
    expected = np.argsort(-scores, kind="stable")[: len(results)]
    assert sorted(results.row_ids.tolist()) == sorted(expected.tolist())
    np.testing.assert_allclose(np.sort(results.scores)[::-1], np.sort(scores[expected])[::-1], atol=1e-5)


def test_an_unknown_finding_is_named(index):
    with pytest.raises(ValueError, match="finding_labels.*unknown label 'Cardiomegaly'"):
        index.search(text="Cardiomegaly.", k=3, filters={"finding_labels": "Cardiomegaly"})


def test_the_app_offers_the_findings_as_a_filter(index, gallery):
    from cxr_mtclip.retrieval.app import filter_boxes

    boxes = filter_boxes(index)
    hot, known = finding_multi_hot(gallery["finding_labels"])
    present = {FINDING_NAMES[f] for f in np.flatnonzero(hot[known].any(axis=0))}
    assert set(boxes["finding_labels"]) == present
