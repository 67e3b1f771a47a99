"""Image / report / study search over the indexes attached to an embedded `datasets.Dataset`.

Two search modes (`SEARCH_MODES`); interactive search defaults to ``"cross-modal"``:

* ``"cross-modal"`` (default): an image query is ranked against the ``text_embeds`` index (find the reports
  for an X-ray) and a report query against the ``image_embeds`` index (find the X-rays for a report).
* ``"paper"`` (the paper's Algorithm 2): the query embedding, image or report, is ranked against the
  one index of ``fused_embeds`` (the normalised mean of each study's image and report embeddings).
  An image query is then half of its own study's fused vector, so its own study scores
  ``sqrt((1 + cos(image, report)) / 2)``, never less than the pair's cross-modal cosine, whatever the model
  learned: numbers in this mode overstate cross-modal retrieval (`cxr_mtclip.evaluation.evaluate` measures by
  how much).

`RetrievalIndex` (`retrieval_index.py`) does the same over an index folder built once and loaded anywhere.

`search_similar_studies` ranks a fused (image + report) query against the fused index in both modes.
Results are `datasets`' ``(scores, examples)``; scores are cosine similarities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from datasets.search import BatchedNearestExamplesResults, NearestExamplesResults
from PIL import Image

from ..utils import positive_int
from .embedding import embed_images, embed_reports, embed_studies
from .index import _faiss_index

__all__ = [
    "SEARCH_MODES",
    "index_name_for",
    "search_by_image",
    "search_by_text",
    "search_embeddings",
    "search_similar_studies",
]

SearchMode = Literal["cross-modal", "paper"]
SEARCH_MODES = ("cross-modal", "paper")
"""Search protocols, the default first: interactive search is cross-modal; the paper's protocol is opt-in."""


# -- search --------------------------------------------------------------------------------------


def index_name_for(query: Literal["image", "text", "study"], mode: SearchMode = "cross-modal") -> str:
    """The default index a query modality searches in a mode (index names default to column names).

    Example:
        >>> index_name_for("image", "cross-modal")
        'text_embeds'
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
    if query == "study" or mode == "paper":
        if query not in ("image", "text", "study"):
            raise ValueError(f"query must be 'image', 'text' or 'study', got {query!r}")
        return "fused_embeds"
    if query == "image":
        return "text_embeds"
    if query == "text":
        return "image_embeds"
    raise ValueError(f"query must be 'image', 'text' or 'study', got {query!r}")


def search_embeddings(
    dataset: Dataset, index_name: str, query_embeds: Any, k: int = 5
) -> NearestExamplesResults | BatchedNearestExamplesResults:
    """`(scores, examples)` for one query vector (1-D), or `(total_scores, total_examples)` for a 2-D batch.

    Example:
        >>> scores, examples = search_embeddings(embedded, "fused_embeds", query, k=3)  # doctest: +SKIP
    """
    k = positive_int(k, "k")
    index = _faiss_index(dataset, index_name)
    queries = np.asarray(query_embeds, dtype=np.float32)
    if queries.ndim not in (1, 2) or queries.shape[-1] != index.d:
        raise ValueError(
            f"query has shape {queries.shape} but index '{index_name}' holds {index.d}-d vectors; "
            f"expected ({index.d},) or (n, {index.d}) (was the index built with another model?)"
        )
    if not np.isfinite(queries).all():
        raise ValueError("query embeddings contain NaN or infinite values")
    k = min(k, int(index.ntotal))
    if queries.ndim == 1:
        return dataset.get_nearest_examples(index_name, np.ascontiguousarray(queries), k=k)
    return dataset.get_nearest_examples_batch(index_name, np.ascontiguousarray(queries), k=k)


def search_by_image(
    model: torch.nn.Module,
    processor: Any,
    dataset: Dataset,
    image: Image.Image | Sequence[Image.Image],
    k: int = 5,
    *,
    mode: SearchMode = "cross-modal",
    index_name: str | None = None,
) -> NearestExamplesResults | BatchedNearestExamplesResults:
    """Studies for an X-ray: the image embedding vs ``fused_embeds`` (paper) or ``text_embeds`` (cross-modal).

    A list of images gives `(total_scores, total_examples)`, one entry per image.

    Example:
        >>> scores, examples = search_by_image(model, processor, embedded, image, k=5, mode="cross-modal")  # doctest: +SKIP
        >>> examples["report"][0]  # doctest: +SKIP
    """
    name = index_name or index_name_for("image", mode)
    _require_index(dataset, name, "image", mode)
    embeds = embed_images(model, processor, image)
    return search_embeddings(dataset, name, embeds[0] if isinstance(image, Image.Image) else embeds, k)


def search_by_text(
    model: torch.nn.Module,
    processor: Any,
    dataset: Dataset,
    report: str | Sequence[str],
    k: int = 5,
    *,
    mode: SearchMode = "cross-modal",
    index_name: str | None = None,
) -> NearestExamplesResults | BatchedNearestExamplesResults:
    """Studies for a report: the report embedding vs ``fused_embeds`` (paper) or ``image_embeds`` (cross-modal).

    Example:
        >>> scores, examples = search_by_text(model, processor, embedded, "Cardiomegaly.", mode="cross-modal")  # doctest: +SKIP
    """
    name = index_name or index_name_for("text", mode)
    _require_index(dataset, name, "text", mode)
    embeds = embed_reports(model, processor, report)
    return search_embeddings(dataset, name, embeds[0] if isinstance(report, str) else embeds, k)


def search_similar_studies(
    model: torch.nn.Module,
    processor: Any,
    dataset: Dataset,
    image: Image.Image | Sequence[Image.Image],
    report: str | Sequence[str],
    k: int = 5,
    *,
    index_name: str = "fused_embeds",
) -> NearestExamplesResults | BatchedNearestExamplesResults:
    """Studies similar to a whole study: its fused (image + report) embedding vs the ``fused_embeds`` index.

    Example:
        >>> scores, examples = search_similar_studies(model, processor, embedded, image, report, k=5)  # doctest: +SKIP
    """
    _require_index(dataset, index_name, "study", "paper")
    single = isinstance(image, Image.Image)
    if single != isinstance(report, str):
        raise ValueError("pass one image with one report, or a list of images with a list of reports")
    embeds = embed_studies(model, processor, image, report)
    return search_embeddings(dataset, index_name, embeds[0] if single else embeds, k)


def _require_index(dataset: Dataset, index_name: str, query: str, mode: str) -> None:
    if not dataset.is_index_initialized(index_name):
        raise ValueError(
            f"{query} queries in mode '{mode}' search the index '{index_name}', which this dataset does not have "
            f"(attached: {dataset.list_indexes()}); build it with build_index(dataset, '{index_name}')"
        )

