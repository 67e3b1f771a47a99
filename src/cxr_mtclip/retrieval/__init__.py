"""Retrieval: embedding columns, FAISS indexes on them, image / report / study search, and the search page.

- `embedding`: `embed_dataset` and friends; `model_fingerprint` ties embeddings to weights.
- `index`: `build_index` (flat, IVF, HNSW through `datasets`), `save_faiss_index` / `load_faiss_index`.
- `search`: `search_by_image`, `search_by_text`, `search_similar_studies`, `RetrievalIndex`.
- `serve`: the standard-library search page behind ``cxr-mtclip serve``.
"""

from .embedding import (
    EMBEDDING_COLUMNS,
    FINGERPRINT_COLUMN,
    LOGITS_COLUMN,
    embed_dataset,
    embed_images,
    embed_reports,
    embed_studies,
    embedding_model_fingerprint,
    model_fingerprint,
    present_mask,
    rows_with_embeddings,
)
from .index import (
    INDEX_KINDS,
    IndexSpec,
    build_index,
    default_nlist,
    default_nprobe,
    describe_index,
    load_faiss_index,
    save_faiss_index,
    set_search_params,
)
from .search import (
    SEARCH_MODES,
    RetrievalIndex,
    index_name_for,
    search_by_image,
    search_by_text,
    search_embeddings,
    search_similar_studies,
)

__all__ = [
    "EMBEDDING_COLUMNS",
    "FINGERPRINT_COLUMN",
    "INDEX_KINDS",
    "LOGITS_COLUMN",
    "SEARCH_MODES",
    "IndexSpec",
    "RetrievalIndex",
    "build_index",
    "default_nlist",
    "default_nprobe",
    "describe_index",
    "embed_dataset",
    "embed_images",
    "embed_reports",
    "embed_studies",
    "embedding_model_fingerprint",
    "index_name_for",
    "load_faiss_index",
    "model_fingerprint",
    "present_mask",
    "rows_with_embeddings",
    "save_faiss_index",
    "search_by_image",
    "search_by_text",
    "search_embeddings",
    "search_similar_studies",
    "set_search_params",
]
