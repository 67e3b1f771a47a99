"""Retrieval: embedding columns, FAISS indexes on them, image / report / study search, index folders, the app.

- `embedding`: `embed_dataset` and friends; `model_fingerprint` ties embeddings to weights; one precision rule.
- `index`: `build_index` (flat, IVF, HNSW through `datasets`), `save_faiss_index` / `load_faiss_index`,
  `check_unit_norm`.
- `search`: `search_by_image`, `search_by_text`, `search_similar_studies` over a `datasets.Dataset`.
- `store`: the index folder on disk (rows, one FAISS file per column, manifest), written and checked.
- `filters`: query-time filters and the top-k search that honours them.
- `retrieval_index`: `RetrievalIndex` (build / save / load / search / add) and `SearchResults`.
- `app`: the Gradio search app behind ``cxr-mtclip serve`` (imported on demand: it needs gradio).
"""

from .embedding import (
    EMBEDDING_COLUMNS,
    EMBEDDING_PRECISIONS,
    FINGERPRINT_COLUMN,
    LOGITS_COLUMN,
    embed_dataset,
    embed_images,
    embed_reports,
    embed_studies,
    embedding_model_fingerprint,
    model_fingerprint,
    present_mask,
    resolve_precision,
    rows_with_embeddings,
)
from .filters import filter_mask, filterable_columns
from .index import (
    INDEX_KINDS,
    UNIT_NORM_TOLERANCE,
    IndexSpec,
    build_index,
    check_unit_norm,
    default_nlist,
    default_nprobe,
    describe_index,
    load_faiss_index,
    save_faiss_index,
    set_search_params,
)
from .retrieval_index import RetrievalIndex, SearchResults
from .search import (
    SEARCH_MODES,
    index_name_for,
    search_by_image,
    search_by_text,
    search_embeddings,
    search_similar_studies,
)

__all__ = [
    "EMBEDDING_COLUMNS",
    "EMBEDDING_PRECISIONS",
    "FINGERPRINT_COLUMN",
    "INDEX_KINDS",
    "LOGITS_COLUMN",
    "SEARCH_MODES",
    "UNIT_NORM_TOLERANCE",
    "IndexSpec",
    "RetrievalIndex",
    "SearchResults",
    "build_index",
    "check_unit_norm",
    "default_nlist",
    "default_nprobe",
    "describe_index",
    "embed_dataset",
    "embed_images",
    "embed_reports",
    "embed_studies",
    "embedding_model_fingerprint",
    "filter_mask",
    "filterable_columns",
    "index_name_for",
    "load_faiss_index",
    "model_fingerprint",
    "present_mask",
    "resolve_precision",
    "rows_with_embeddings",
    "save_faiss_index",
    "search_by_image",
    "search_by_text",
    "search_embeddings",
    "search_similar_studies",
    "set_search_params",
]
