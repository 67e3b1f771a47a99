"""`RetrievalIndex`: build an index folder once, load it anywhere, search it by image, report or both.

    >>> index = RetrievalIndex.load("indexes/openi-test", model="runs/biomedclip")  # doctest: +SKIP
    >>> scores, examples = index.search(text="Small left pleural effusion.", k=5)  # doctest: +SKIP

Loading reads the folder (`store.read_index_folder`) and checks the model's fingerprint against the manifest;
searching embeds only the query. Modes (`SEARCH_MODES`), default ``"cross-modal"``:

* ``"cross-modal"``: an image finds reports (the ``text_embeds`` index), a report finds images
  (``image_embeds``), an image with its report finds similar studies (``fused_embeds``).
* ``"paper"``: the paper's Algorithm 2, image or report against the fused index. An image query is then half
  of its own study's fused vector, so these scores overstate cross-modal retrieval (see docs/metrics.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, List, concatenate_datasets
from datasets import Image as ImageFeature
from PIL import Image

from ..utils import positive_int
from .embedding import (
    EMBEDDING_COLUMNS,
    FINGERPRINT_COLUMN,
    LOGITS_COLUMN,
    embed_dataset,
    embed_images,
    embed_reports,
    embedding_model_fingerprint,
    model_fingerprint,
    present_mask,
    report_token_count,
    resolve_precision,
)
from .filters import filter_mask, filterable_columns, filtered_search
from .index import _column_dimension, check_unit_norm, column_blocks
from .search import SEARCH_MODES, index_name_for
from .store import (
    ColumnIndex,
    IndexManifest,
    append_to_index_folder,
    build_column_index,
    read_index_folder,
    write_index_folder,
)

__all__ = ["RetrievalIndex", "SearchResults"]

_HIDDEN_COLUMNS = (*EMBEDDING_COLUMNS, FINGERPRINT_COLUMN, LOGITS_COLUMN)


@dataclass(frozen=True)
class SearchResults:
    """The hits of one search, best first. Unpacks like `datasets`' results: ``scores, examples = results``.

    Attributes:
        scores: float32 (n,), cosine similarities in [-1, 1] (inner products of unit vectors).
        examples: the hit rows as `datasets` returns them (dict of column -> list; ClassLabel ids as ints;
            ``image`` as PIL images when asked for); embedding columns left out.
        records: one JSON-ready dict per hit: ``rank``, ``row``, ``score`` and the row's columns (label names
            instead of ids, no image).
        row_ids: int64 (n,), row numbers in the gallery.
        mode: the search mode; query: ``image``, ``text``, ``study`` or ``embedding``; index_name: the
            embedding column searched.
        truncated: the report was longer than the model's context and was cut (`query_tokens` > `max_tokens`).
        num_candidates: gallery rows that passed the filters (all indexed rows without filters).
    """

    scores: np.ndarray
    examples: dict[str, list[Any]]
    records: list[dict[str, Any]]
    row_ids: np.ndarray
    mode: str
    query: str
    index_name: str
    truncated: bool = False
    query_tokens: int | None = None
    max_tokens: int | None = None
    num_candidates: int = 0
    filters: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.scores, self.examples))

    def __len__(self) -> int:
        return len(self.scores)


class RetrievalIndex:
    """Gallery rows, one FAISS index per searchable embedding column, and (optionally) the model for queries.

    Make one with `build` (embeds a dataset) and `save` it, or `load` a folder written before.

    Example:
        >>> index = RetrievalIndex.build(model, processor, splits["test"], kind="hnsw")  # doctest: +SKIP
        >>> index.save("indexes/openi-test")  # doctest: +SKIP
        >>> results = index.search(image="cxr.png", k=5, filters={"label": "abnormal"})  # doctest: +SKIP
    """

    def __init__(
        self,
        rows: Dataset,
        indexes: Mapping[str, ColumnIndex],
        manifest: IndexManifest,
        *,
        model: torch.nn.Module | None = None,
        processor: Any = None,
        folder: str | os.PathLike | None = None,
    ) -> None:
        if model is not None and processor is None:
            raise ValueError("a model needs its processor to embed queries: pass processor=")
        self.rows = rows
        self.indexes = dict(indexes)
        self.manifest = manifest
        self.model = model
        self.processor = processor
        self.folder = Path(folder) if folder is not None else None
        self._view: Dataset | None = None

    # -- making one ---------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: torch.nn.Module | None,
        processor: Any,
        dataset: Dataset,
        *,
        kind: str = "flat",
        index_columns: Sequence[str] = EMBEDDING_COLUMNS,
        store_images: bool = True,
        batch_size: int = 32,
        precision: str = "auto",
        model_id: str | None = None,
        data_note: str | None = None,
        num_workers: int = 0,
        show_progress: bool = True,
        **index_params: Any,
    ) -> RetrievalIndex:
        """Embed `dataset` (unless it already holds this model's embeddings) and index `index_columns`.

        Args:
            model: the model, or None when `dataset` already has embedding columns and the fingerprint column
                of `embed_dataset` (``cxr-mtclip embed`` output).
            kind / index_params: see `store.build_column_index` (``nlist``, ``nprobe``, ``hnsw_m``,
                ``ef_search``, ``ef_construction``, ``train_size``, ``seed``).
            store_images: keep the images in the rows (thumbnails in results); False keeps text and vectors.
            precision: `embedding.resolve_precision`; recorded in the manifest and used for queries.
            model_id: how to name the model in the manifest (default its ``name_or_path``; a folder is stored as
                its absolute path).

        A column that no row has (reports-only data has no image embeddings) is not indexed; rows with none
        of the indexed embeddings are left out. Raises ValueError for vectors that are not unit length.
        """
        wanted = [c for c in EMBEDDING_COLUMNS if c in index_columns]
        if not wanted or set(index_columns) - set(EMBEDDING_COLUMNS):
            raise ValueError(f"index_columns={list(index_columns)!r}: expected some of {list(EMBEDDING_COLUMNS)}")
        if model is None:
            fingerprint = embedding_model_fingerprint(dataset)
            if fingerprint is None or not any(c in dataset.column_names for c in wanted):
                raise ValueError(
                    "without a model the dataset must already hold embeddings and their fingerprint column "
                    f"'{FINGERPRINT_COLUMN}' (the output of `cxr-mtclip embed` / embed_dataset)"
                )
            embedded, resolved = dataset, "auto"
        else:
            fingerprint = model_fingerprint(model)
            core = model
            resolved = resolve_precision(next(core.parameters()).device, next(core.parameters()).dtype, precision)
            reuse = all(c in dataset.column_names for c in wanted) and embedding_model_fingerprint(dataset) == fingerprint
            embedded = dataset if reuse else embed_dataset(
                model, processor, dataset, batch_size=batch_size, columns=wanted, show_progress=show_progress,
                num_workers=num_workers, precision=precision,
            )
        columns = [c for c in wanted if c in embedded.column_names and present_mask(embedded, c).any()]
        if not columns:
            raise ValueError(f"no row has any of {wanted}: nothing to index")
        keep = np.zeros(len(embedded), dtype=bool)
        for column in columns:
            keep |= present_mask(embedded, column)
        rows = embedded if keep.all() else embedded.select(np.flatnonzero(keep))
        drop = [c for c in rows.column_names if c in (*EMBEDDING_COLUMNS, LOGITS_COLUMN) and c not in columns]
        if not store_images and "image" in rows.column_names:
            drop.append("image")
        if drop:
            rows = rows.remove_columns(drop)
        indexes = {c: build_column_index(rows, c, kind, show_progress=show_progress, **index_params) for c in columns}
        from ..data.schema import data_note as make_note

        config = getattr(model, "config", None)
        named = model_id or (getattr(config, "_name_or_path", None) or None)
        if named and Path(named).is_dir():
            named = str(Path(named).resolve())  # loadable from any working directory
        manifest = IndexManifest(
            model_fingerprint=fingerprint,
            model_id=named,
            embed_dim=_column_dimension(rows, columns[0]),
            precision=resolved,
            data_note=data_note or make_note(rows, "gallery"),
            num_rows=len(rows),
            images="image" in rows.column_names,
        )
        return cls(rows, indexes, manifest, model=model, processor=processor if model is not None else None)

    def save(self, folder: str | os.PathLike, *, overwrite: bool = False, show_progress: bool = True) -> Path:
        """Write the index folder (rows, one ``.faiss`` per column, ``manifest.json``) atomically; returns it.

        Raises FileExistsError when `folder` exists and `overwrite` is False.
        """
        self.manifest = write_index_folder(folder, self.manifest, self.indexes, new_rows=self.rows,
                                           overwrite=overwrite, show_progress=show_progress)
        self.folder = Path(folder)
        return self.folder

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        model: torch.nn.Module | str | os.PathLike | None = None,
        processor: Any = None,
        *,
        verify: bool = False,
        index_columns: Sequence[str] | None = None,
    ) -> RetrievalIndex:
        """Load an index folder; with a model (object, saved folder or Hub id) queries can be images or reports.

        Nothing in the gallery is embedded again. Raises ValueError with one line naming the folder when the
        model's fingerprint differs from the manifest's, and the errors of `store.read_index_folder` for a
        damaged or mismatched folder. ``verify=True`` also checks every index file's sha256.
        """
        rows, indexes, manifest = read_index_folder(folder, verify=verify, columns=index_columns)
        index = cls(rows, indexes, manifest, folder=folder)
        return index.with_model(model, processor) if model is not None else index

    def with_model(self, model: torch.nn.Module | str | os.PathLike, processor: Any = None) -> RetrievalIndex:
        """This index with a model to embed queries (object, saved folder or Hub id); the gallery is shared.

        Raises ValueError with one line naming the folder when the model's fingerprint differs from the manifest's.
        """
        if isinstance(model, (str, os.PathLike)):
            from ..hub import load_model_and_processor

            model, loaded = load_model_and_processor(model)
            processor = processor if processor is not None else loaded
        found = model_fingerprint(model)
        expected = self.manifest.model_fingerprint
        if expected is not None and found != expected:
            raise ValueError(
                f"{self.folder}: built with model {expected[:19]}... ({self.manifest.model_id or 'unnamed'}), not with "
                f"this model {found[:19]}...; search it with that model or rebuild it with `cxr-mtclip index`"
            )
        return type(self)(self.rows, self.indexes, self.manifest, model=model, processor=processor, folder=self.folder)

    # -- searching ------------------------------------------------------------------------------------

    @property
    def dataset(self) -> Dataset:
        """The gallery rows (alias of `rows`)."""
        return self.rows

    @property
    def index_names(self) -> list[str]:
        return list(self.indexes)

    @property
    def filterable_columns(self) -> list[str]:
        return filterable_columns(self.rows)

    def search(
        self,
        image: Any = None,
        text: str | None = None,
        *,
        k: int = 5,
        mode: str = "cross-modal",
        filters: Mapping[str, Any] | None = None,
        index_name: str | None = None,
        query_embeds: Any = None,
        with_images: bool = True,
    ) -> SearchResults:
        """Top-k gallery rows for an image, a report, both (a fused study query), or a ready query vector.

        Args:
            image: a PIL image, a path, bytes or a `datasets` Image dict (opened by `data.images.open_image`:
                PNG, JPEG, DICOM...).
            text: a report.
            mode: ``"cross-modal"`` (default) or ``"paper"``; see the module docstring.
            filters: column -> value(s) the hits must hold (`filters.filter_mask`); k hits come back whenever
                k rows pass.
            index_name: search this embedding column's index instead of the mode's (e.g. ``image_embeds`` for
                image -> similar images).
            query_embeds: an L2-normalised (d,) vector instead of image/text (needs `index_name`).
            with_images: decode the hits' images into ``examples["image"]``.

        Raises ValueError for no query, an unknown mode or column, a mode whose index this folder lacks, a
        model-less index asked to embed, or a query vector that is not unit length.
        """
        k = positive_int(k, "k")
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        has_text = text is not None and bool(str(text).strip())
        tokens = max_tokens = None
        if query_embeds is not None:
            if image is not None or has_text:
                raise ValueError("pass query_embeds, or an image and/or a report, not both")
            if index_name is None:
                raise ValueError(f"query_embeds needs index_name= (one of {self.index_names})")
            query, kind = np.asarray(query_embeds, dtype=np.float32).reshape(-1), "embedding"
        else:
            if image is None and not has_text:
                raise ValueError("give an image, a report, or both to search")
            kind = "study" if image is not None and has_text else ("image" if image is not None else "text")
            index_name = index_name or index_name_for(kind, mode)
            self._require_index(index_name, kind, mode)
            query = self._embed_query(image, text if has_text else None, kind)
            if has_text:
                tokens, max_tokens = report_token_count(self.processor, str(text)), int(self.processor.max_length)
        self._require_index(index_name, kind, mode)
        entry = self.indexes[index_name]
        if query.shape != (entry.index.d,):
            raise ValueError(f"query has shape {query.shape} but index '{index_name}' holds {entry.index.d}-d vectors")
        check_unit_norm(query, "query embedding")
        mask = filter_mask(self.rows, filters)
        candidates = int(entry.index.ntotal) if mask is None else int(entry.positions_mask(mask).sum())
        scores, row_ids = filtered_search(entry, self.rows, query, k, mask)
        examples, records = self._hits(row_ids, scores, with_images)
        return SearchResults(
            scores=scores, examples=examples, records=records, row_ids=row_ids, mode=mode, query=kind,
            index_name=index_name, truncated=bool(tokens is not None and tokens > max_tokens), query_tokens=tokens,
            max_tokens=max_tokens, num_candidates=candidates, filters=dict(filters or {}),
        )

    def search_by_image(self, image: Any, k: int = 5, *, mode: str = "cross-modal", **kwargs: Any) -> SearchResults:
        """`search(image=...)`: reports for an X-ray (cross-modal) or studies (paper)."""
        return self.search(image=image, k=k, mode=mode, **kwargs)

    def search_by_text(self, report: str, k: int = 5, *, mode: str = "cross-modal", **kwargs: Any) -> SearchResults:
        """`search(text=...)`: X-rays for a report (cross-modal) or studies (paper)."""
        return self.search(text=report, k=k, mode=mode, **kwargs)

    def search_similar_studies(self, image: Any, report: str, k: int = 5, **kwargs: Any) -> SearchResults:
        """`search(image=..., text=...)`: the fused study query against the fused index."""
        return self.search(image=image, text=report, k=k, **kwargs)

    def _require_index(self, name: str, kind: str, mode: str) -> None:
        if name in self.indexes:
            return
        if kind == "image" and name != "image_embeds" and "image_embeds" in self.indexes:
            # an archive without reports: image queries can still find similar images
            fix = ("search similar X-rays with index_name='image_embeds' (CLI: --mode similar-images; app: "
                   "'Find similar X-rays')")
        else:
            needs = {"text_embeds": "reports", "image_embeds": "images", "fused_embeds": "an image and a report"}
            fix = f"it needs studies with {needs.get(name, name)}: rebuild it with that column, or search another way"
        raise ValueError(f"{kind} queries in mode '{mode}' search the '{name}' index, which this index folder does "
                         f"not have (it has {self.index_names}); {fix}")

    def _embed_query(self, image: Any, text: str | None, kind: str) -> np.ndarray:
        if self.model is None:
            raise ValueError("this index was loaded without a model: RetrievalIndex.load(folder, model=...) to embed queries")
        from ..data.images import open_image
        from ..modeling_cxr_mtclip import fuse_embeddings

        precision = self._query_precision()
        vectors = []
        if image is not None:
            picture = image if isinstance(image, Image.Image) else open_image(image)
            vectors.append(embed_images(self.model, self.processor, [picture], precision=precision)[0])
        if text is not None:
            vectors.append(embed_reports(self.model, self.processor, [text], precision=precision)[0])
        if kind == "study":
            return fuse_embeddings(torch.from_numpy(vectors[0][None]), torch.from_numpy(vectors[1][None])).numpy()[0]
        return vectors[0]

    def _query_precision(self) -> str:
        """The gallery's recorded precision (queries are embedded alike), or "auto" when it was not recorded."""
        recorded = self.manifest.precision
        if recorded not in ("float32", "bfloat16"):
            return "auto"
        parameter = next(self.model.parameters())
        try:
            return resolve_precision(parameter.device, parameter.dtype, recorded)
        except ValueError:  # float32 recorded, model now in half precision: its own dtype is all it can do
            return "auto"

    def _hits(self, row_ids: np.ndarray, scores: np.ndarray, with_images: bool) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
        if self._view is None:
            view = self.rows.select_columns([c for c in self.rows.column_names if c not in _HIDDEN_COLUMNS])
            if "image" in view.column_names:
                view = view.cast_column("image", ImageFeature(decode=False))
            self._view = view
        view = self._view
        batch = view[row_ids.tolist()] if len(row_ids) else {c: [] for c in view.column_names}
        examples = dict(batch)
        if "image" in examples:
            if with_images:
                from ..data.images import open_image

                names = examples.get("uid") or [f"row {r}" for r in row_ids]
                examples["image"] = [None if v is None else open_image(v, name=str(n)) for v, n in zip(examples["image"], names)]
            else:
                del examples["image"]
        records = []
        for rank, (row, score) in enumerate(zip(row_ids.tolist(), scores.tolist()), 1):
            record: dict[str, Any] = {"rank": rank, "row": int(row), "score": round(float(score), 6)}
            for column in view.column_names:
                if column != "image":
                    record[column] = _readable(view.features[column], batch[column][rank - 1])
            records.append(record)
        return examples, records

    # -- growing --------------------------------------------------------------------------------------

    def add(self, dataset: Dataset, *, batch_size: int = 32, num_workers: int = 0, show_progress: bool = True) -> int:
        """Embed `dataset`'s studies and append them to the rows and every index, without a rebuild.

        Flat and HNSW indexes take the new vectors as they are; an IVF index files them into its trained
        cells. A loaded or saved index also updates its folder: a new rows part and new index files, then the
        manifest (the commit point), so the folder is the old one or the new one, never a mix. Returns the
        number of rows added (studies with none of the indexed modalities are left out).

        Raises ValueError without changing anything for columns the gallery lacks, vectors that are not unit
        length, or an index without a model.
        """
        if self.model is None:
            raise ValueError("add() embeds new studies: load the index with its model (RetrievalIndex.load(folder, model=...))")
        wanted = [c for c in EMBEDDING_COLUMNS if c in self.rows.column_names]
        embedded = embed_dataset(self.model, self.processor, dataset, batch_size=batch_size, columns=wanted,
                                 show_progress=show_progress, num_workers=num_workers, precision=self._query_precision())
        new = self._aligned(embedded)
        keep = np.zeros(len(new), dtype=bool)
        for column in self.indexes:
            keep |= present_mask(new, column)
        if not keep.all():
            new = new.select(np.flatnonzero(keep))
        if len(new) == 0:
            return 0
        blocks = {}
        for column in self.indexes:  # read and check every vector before any index changes
            parts = list(column_blocks(new, column))
            present = np.concatenate([p for _, p, _ in parts])
            vectors = np.concatenate([v for _, _, v in parts]) if parts else np.zeros((0, self.manifest.embed_dim), np.float32)
            check_unit_norm(vectors, f"new rows' '{column}'")
            blocks[column] = (present, vectors)
        from ..data.schema import data_note as make_note

        auto_note = self.manifest.data_note == make_note(self.rows, "gallery")  # else the caller's own note stays
        offset = len(self.rows)
        for column, (present, vectors) in blocks.items():
            entry = self.indexes[column]
            if entry.row_ids is not None or not present.all():
                existing = entry.row_ids if entry.row_ids is not None else np.arange(entry.index.ntotal, dtype=np.int64)
                entry.row_ids = np.concatenate([existing, offset + np.flatnonzero(present)]).astype(np.int64)
            if len(vectors):
                entry.index.add(np.ascontiguousarray(vectors))
        self.rows = concatenate_datasets([self.rows, new])
        self._view = None
        if auto_note:
            self.manifest.data_note = make_note(self.rows, "gallery")
        if self.folder is not None:
            self.manifest = append_to_index_folder(self.folder, self.manifest, self.indexes, new, show_progress=show_progress)
        else:
            self.manifest.num_rows = len(self.rows)
        return len(new)

    def _aligned(self, embedded: Dataset) -> Dataset:
        """New rows with exactly the gallery's columns and features (missing metadata -> None)."""
        features = self.rows.features
        if "image" in embedded.column_names and "image" not in features:
            embedded = embedded.remove_columns("image")
        extra = [c for c in embedded.column_names if c not in features and c != LOGITS_COLUMN]
        if extra:
            raise ValueError(f"new rows have column(s) {extra} that the gallery lacks; gallery columns: {list(features)}")
        embedded = embedded.remove_columns([c for c in embedded.column_names if c not in features])
        for name, feature in features.items():
            if name not in embedded.column_names:
                embedded = embedded.add_column(name, [None] * len(embedded), feature=feature)
        try:
            return embedded.select_columns(list(features)).cast(features)
        except (ValueError, TypeError) as err:
            raise ValueError(f"new rows do not fit the gallery's columns ({err})") from err


def _readable(feature: Any, value: Any) -> Any:
    """A value as a person reads it: ClassLabel names instead of ids."""
    if value is None:
        return None
    if isinstance(feature, ClassLabel):
        return feature.int2str(int(value))
    if isinstance(feature, List) and isinstance(feature.feature, ClassLabel):
        return [feature.feature.int2str(int(v)) for v in value]
    return value
