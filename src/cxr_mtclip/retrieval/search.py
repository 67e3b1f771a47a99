"""Image / report / study search over the indexes of an embedded dataset, and `RetrievalIndex` that holds them.

Two search modes, both over indexes attached to a `datasets.Dataset` with `add_faiss_index`:

* ``"paper"`` (the paper's Algorithm 2): the query embedding, image or report, is ranked against the
  one index of ``fused_embeds`` (the normalised mean of each study's image and report embeddings).
  An image query is then half of its own study's fused vector, so its own study scores
  ``sqrt((1 + cos(image, report)) / 2)``, never less than the pair's cross-modal cosine: numbers in this mode
  overstate cross-modal retrieval (`cxr_mtclip.evaluation.evaluate` measures by how much).
* ``"cross-modal"``: an image query is ranked against the ``text_embeds`` index (find the reports
  for an X-ray) and a report query against the ``image_embeds`` index (find the X-rays for a report).

`search_similar_studies` ranks a fused (image + report) query against the fused index in both modes.
Results are `datasets`' ``(scores, examples)``; scores are cosine similarities.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from datasets.search import BatchedNearestExamplesResults, NearestExamplesResults
from PIL import Image

from ..utils import positive_int
from .embedding import (
    EMBEDDING_COLUMNS,
    embed_dataset,
    embed_images,
    embed_reports,
    embed_studies,
    embedding_model_fingerprint,
    model_fingerprint,
    rows_with_embeddings,
)
from .index import IndexSpec, _faiss_index, build_index, load_faiss_index, save_faiss_index

__all__ = [
    "SEARCH_MODES",
    "RetrievalIndex",
    "index_name_for",
    "search_by_image",
    "search_by_text",
    "search_embeddings",
    "search_similar_studies",
]

SearchMode = Literal["paper", "cross-modal"]
SEARCH_MODES = ("paper", "cross-modal")


# -- search --------------------------------------------------------------------------------------


def index_name_for(query: Literal["image", "text", "study"], mode: SearchMode = "paper") -> str:
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
    mode: SearchMode = "paper",
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
    mode: SearchMode = "paper",
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


class RetrievalIndex:
    """A model, its processor and an embedded dataset with its indexes: the three searches as methods.

    Example:
        >>> retriever = RetrievalIndex.build(model, processor, splits["test"], kind="hnsw")  # doctest: +SKIP
        >>> scores, examples = retriever.search_by_image(image, k=5, mode="cross-modal")  # doctest: +SKIP
        >>> retriever.save_indexes("indexes/")  # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, processor: Any, dataset: Dataset) -> None:
        self.model = model
        self.processor = processor
        self.dataset = dataset

    @classmethod
    def build(
        cls,
        model: torch.nn.Module,
        processor: Any,
        dataset: Dataset,
        *,
        kind: Literal["flat", "ivf", "hnsw"] = "flat",
        index_columns: Sequence[str] = EMBEDDING_COLUMNS,
        batch_size: int = 32,
        show_progress: bool = True,
        **index_kwargs: Any,
    ) -> "RetrievalIndex":
        """Embed `dataset` (unless it already holds this model's embeddings) and index `index_columns`.

        Rows lacking any of the indexed columns (reports-only studies) are left out of the index.
        """
        fingerprint = model_fingerprint(model)
        needed = [c for c in EMBEDDING_COLUMNS if c in index_columns]
        if not needed:
            raise ValueError(f"index_columns={list(index_columns)!r}: expected some of {list(EMBEDDING_COLUMNS)}")
        embedded = (
            dataset
            if all(c in dataset.column_names for c in needed) and embedding_model_fingerprint(dataset) == fingerprint
            else embed_dataset(model, processor, dataset, batch_size=batch_size, show_progress=show_progress)
        )
        absent = [c for c in needed if c not in embedded.column_names]
        if absent:
            raise ValueError(f"cannot index {absent}: the dataset has no rows with that modality (reports-only?)")
        embedded = rows_with_embeddings(embedded, *needed)
        retriever = cls(model, processor, embedded)
        for column in needed:
            build_index(embedded, column, kind, show_progress=show_progress, **index_kwargs)
        return retriever

    @property
    def index_names(self) -> list[str]:
        return self.dataset.list_indexes()

    def search_by_image(self, image: Any, k: int = 5, *, mode: SearchMode = "paper") -> Any:
        """See `search_by_image`."""
        return search_by_image(self.model, self.processor, self.dataset, image, k, mode=mode)

    def search_by_text(self, report: Any, k: int = 5, *, mode: SearchMode = "paper") -> Any:
        """See `search_by_text`."""
        return search_by_text(self.model, self.processor, self.dataset, report, k, mode=mode)

    def search_similar_studies(self, image: Any, report: Any, k: int = 5) -> Any:
        """See `search_similar_studies`."""
        return search_similar_studies(self.model, self.processor, self.dataset, image, report, k)

    def save_indexes(self, folder: str | os.PathLike) -> list[Path]:
        """Save every attached index as ``<folder>/<index name>.faiss`` plus its sidecar; returns the index paths."""
        folder = Path(folder)
        fingerprint = model_fingerprint(self.model)
        paths = []
        for name in self.index_names:
            path = folder / f"{name}.faiss"
            save_faiss_index(self.dataset, name, path, fingerprint=fingerprint)
            paths.append(path)
        return paths

    def load_indexes(self, folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[IndexSpec]:
        """Attach the indexes saved by `save_indexes`, checked against this model's fingerprint."""
        folder = Path(folder)
        if names is None:
            names = sorted(p.name[: -len(".faiss")] for p in folder.glob("*.faiss"))
        names = list(names)
        if not names:
            raise FileNotFoundError(f"{folder}: no *.faiss index files")
        fingerprint = model_fingerprint(self.model)
        return [load_faiss_index(self.dataset, name, folder / f"{name}.faiss", fingerprint=fingerprint) for name in names]


def _require_index(dataset: Dataset, index_name: str, query: str, mode: str) -> None:
    if not dataset.is_index_initialized(index_name):
        raise ValueError(
            f"{query} queries in mode '{mode}' search the index '{index_name}', which this dataset does not have "
            f"(attached: {dataset.list_indexes()}); build it with build_index(dataset, '{index_name}')"
        )

