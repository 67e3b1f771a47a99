"""Query-time filters over gallery rows, and a top-k search that honours them.

A filter maps a column to what its rows must hold::

    {"label": "abnormal"}                       # one value (ClassLabel columns take names or ids)
    {"view": ["PA", "AP"]}                      # any of several values
    {"finding_labels": "Cardiomegaly"}          # a sequence column: rows whose list holds the value
    {"finding_labels": {"all": ["Cardiomegaly", "Pleural Effusion"]}}   # ... all of them
    {"finding_labels": {"not": ["Pleural Effusion"]}}                    # ... none of them (null rows pass)
    {"label": "abnormal", "view": "PA"}         # several columns: every condition holds

`filter_mask` turns a filter into a boolean row mask with pyarrow compute (no Python loop over rows).
`filtered_search` then returns the k best rows among those that pass: a FAISS ID selector inside the index
search (exact for flat; for IVF and HNSW the selector keeps the index's own search), and an exact search over
the passing rows when they are few (<= `EXACT_SEARCH_ROWS`) or when the approximate search found fewer than k
of them. So k rows come back whenever at least k rows pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, List, Value

from .embedding import EMBEDDING_COLUMNS, FINGERPRINT_COLUMN, LOGITS_COLUMN

__all__ = ["EXACT_SEARCH_ROWS", "filter_mask", "filterable_columns", "filtered_search"]

EXACT_SEARCH_ROWS = 4096
"""At most this many rows passing a filter: exact brute-force search over them instead of the index."""
_NOT_FILTERABLE = {*EMBEDDING_COLUMNS, FINGERPRINT_COLUMN, LOGITS_COLUMN, "image"}
_OPERATORS = ("any", "all", "not")


def filterable_columns(rows: Dataset) -> list[str]:
    """Columns a filter may name: scalar values and lists of values (not images or embeddings)."""
    out = []
    for name, feature in rows.features.items():
        inner = feature.feature if isinstance(feature, List) else feature
        if name not in _NOT_FILTERABLE and isinstance(inner, (Value, ClassLabel)):
            out.append(name)
    return out


def filter_mask(rows: Dataset, filters: Mapping[str, Any] | None) -> np.ndarray | None:
    """Boolean mask over `rows` of the rows that pass every condition in `filters`; None for no filter.

    Raises ValueError naming the column for an unknown or unfilterable column, an unknown ClassLabel name,
    a value that does not fit the column's type, an empty list of values, or an unknown operator.

    Example:
        >>> from datasets import Dataset
        >>> filter_mask(Dataset.from_dict({"view": ["PA", "AP", "PA"]}), {"view": "PA"}).tolist()
        [True, False, True]
    """
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise ValueError(f"filters must be a mapping of column -> value(s), got {type(filters).__name__}")
    mask = np.ones(len(rows), dtype=bool)
    for column, wanted in filters.items():
        mask &= _column_mask(rows, column, wanted)
    return mask


def _column_mask(rows: Dataset, column: str, wanted: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    allowed = filterable_columns(rows)
    if column not in allowed:
        raise ValueError(f"cannot filter on {column!r}: filterable columns are {allowed}")
    operator, values = _operator_and_values(column, wanted)
    feature = rows.features[column]
    is_list = isinstance(feature, List)
    inner = feature.feature if is_list else feature
    value_set = _value_set(column, inner, values)
    data = rows.with_format("arrow", columns=[column])[:].column(column)
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    n = len(rows)
    if not is_list:
        hit = np.asarray(pc.fill_null(pc.is_in(data, value_set=value_set), False).to_numpy(zero_copy_only=False), dtype=bool)
        return ~hit & ~_nulls(data) if operator == "not" else hit
    flat = pc.list_flatten(data)
    parents = np.asarray(pc.list_parent_indices(data).to_numpy(zero_copy_only=False), dtype=np.int64)
    hit = np.asarray(pc.fill_null(pc.is_in(flat, value_set=value_set), False).to_numpy(zero_copy_only=False), dtype=bool)
    if operator == "all":
        counts = np.zeros(n, dtype=np.int64)
        for value in value_set.to_pylist():  # rows holding each wanted value, counted once per value
            has = np.zeros(n, dtype=bool)
            has[parents[np.asarray(pc.fill_null(pc.equal(flat, value), False).to_numpy(zero_copy_only=False), dtype=bool)]] = True
            counts += has
        return counts == len(value_set)
    any_hit = np.zeros(n, dtype=bool)
    any_hit[parents[hit]] = True
    return ~any_hit if operator == "not" else any_hit


def _nulls(data: Any) -> np.ndarray:
    return np.asarray(data.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _operator_and_values(column: str, wanted: Any) -> tuple[str, list[Any]]:
    operator = "any"
    if isinstance(wanted, Mapping):
        if len(wanted) != 1 or next(iter(wanted)) not in _OPERATORS:
            raise ValueError(f"filter on {column!r}: a dict must be one of {{'any'|'all'|'not': values}}, got {dict(wanted)!r}")
        operator, wanted = next(iter(wanted.items()))
    values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    if not values:
        raise ValueError(f"filter on {column!r}: an empty list of values matches nothing; leave the column out instead")
    return operator, values


def _value_set(column: str, feature: Any, values: list[Any]) -> Any:
    import pyarrow as pa

    if isinstance(feature, ClassLabel):
        ids = []
        for value in values:
            if isinstance(value, str):
                if value not in feature.names:
                    raise ValueError(f"filter on {column!r}: unknown label {value!r}{_did_you_mean(value, feature.names)}; "
                                     f"expected one of {feature.names}")
                ids.append(feature.str2int(value))
            elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < feature.num_classes:
                ids.append(int(value))
            else:
                raise ValueError(f"filter on {column!r}: {value!r} is neither a label name of {feature.names} nor an id")
        return pa.array(ids, type=pa.int64())
    try:
        return pa.array(values).cast(feature.pa_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"filter on {column!r}: {values!r} do not fit the column's type {feature.dtype} ({err})") from err


def _did_you_mean(value: str, names: list[str]) -> str:
    """" (did you mean 'pleural_effusion'?)" for 'effusion' or 'Pleural Effusion'; "" when nothing is close."""
    import difflib

    key = value.strip().lower().replace(" ", "_").replace("-", "_")
    close = [n for n in names if n.lower() == key]
    close = close or [n for n in names if key and key in n.lower()]
    close = close or difflib.get_close_matches(key, names, n=3, cutoff=0.75)
    return f" (did you mean {' or '.join(repr(n) for n in close[:3])}?)" if close else ""


def filtered_search(
    entry: Any, rows: Dataset, query: np.ndarray, k: int, row_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) of the top-k vectors of `entry` (a `store.ColumnIndex`) among rows in `row_mask`.

    Fewer than k results only when fewer than k indexed rows pass the mask. Scores are inner products
    (cosine similarities), best first.
    """
    import faiss

    query = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
    index = entry.index
    if row_mask is None:
        k_eff = min(k, int(index.ntotal))
        if k_eff == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, positions = index.search(query, k_eff)
        scores, found = _keep_found(scores[0], positions[0])
        if len(found) < k_eff:  # an HNSW beam or IVF probe reached fewer than k vectors (large k): exact instead
            return _exact(entry, rows, query[0], np.arange(int(index.ntotal)), k_eff)
        return scores, entry.rows_of(found)
    allowed = entry.positions_mask(np.asarray(row_mask, dtype=bool))
    matching = int(allowed.sum())
    k_eff = min(k, matching)
    if k_eff == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    if matching <= EXACT_SEARCH_ROWS:
        return _exact(entry, rows, query[0], np.flatnonzero(allowed), k_eff)
    bitmap = np.packbits(allowed, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
    params = _search_parameters(index, selector)
    scores, positions = index.search(query, k_eff, params=params)
    scores, found = _keep_found(scores[0], positions[0])
    if len(found) < k_eff:  # an IVF probe or HNSW beam saw too few passing vectors: fall back to exact
        return _exact(entry, rows, query[0], np.flatnonzero(allowed), k_eff)
    return scores, entry.rows_of(found)


def _search_parameters(index: Any, selector: Any) -> Any:
    import faiss

    # the index's own nprobe / efSearch are not inherited by a parameters object: copy them
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(ivf.nprobe))
    if hasattr(index, "hnsw"):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(index.hnsw.efSearch))
    return faiss.SearchParameters(sel=selector)


def _keep_found(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ids >= 0
    return scores[keep].astype(np.float32), ids[keep].astype(np.int64)


def _exact(entry: Any, rows: Dataset, query: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over the given index positions, reading their vectors from the rows' embedding column."""
    from .store import _vectors_at

    row_numbers = entry.rows_of(positions)
    vectors = _vectors_at(rows, entry.column, row_numbers)
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order].astype(np.float32), row_numbers[order]
