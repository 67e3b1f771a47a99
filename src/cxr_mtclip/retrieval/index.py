"""FAISS indexes on embedding columns through `datasets` (flat, IVF, HNSW), saved with a checked JSON sidecar.

Every index uses the inner product on L2-normalised float32 vectors, so scores are cosine similarities: vectors
whose L2 norm is not 1 (within `UNIT_NORM_TOLERANCE`) are refused (`check_unit_norm`), never silently
normalised, because the embeddings would then no longer be what the model produced. A saved index records the
model fingerprint, the column's sha256 and its shape; `load_faiss_index` refuses an index that belongs to other
data or another model, naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import Dataset, List, Value

from ..atomic import atomic_file, atomic_write_text
from ..utils import positive_int, read_json
from .embedding import FINGERPRINT_COLUMN, _HASH_BLOCK_ROWS, embedding_model_fingerprint, present_mask

__all__ = [
    "INDEX_KINDS",
    "SIDECAR_FORMAT",
    "UNIT_NORM_TOLERANCE",
    "IndexSpec",
    "build_index",
    "check_unit_norm",
    "column_blocks",
    "default_nlist",
    "default_nprobe",
    "describe_faiss",
    "describe_index",
    "load_faiss_index",
    "save_faiss_index",
    "set_search_params",
]

INDEX_KINDS = ("flat", "ivf", "hnsw")
SIDECAR_FORMAT = "cxr_mtclip.faiss_index/1"
UNIT_NORM_TOLERANCE = 1e-3
"""Largest accepted | ||v|| - 1 | of an indexed or query vector (float32 normalisation leaves ~1e-7)."""
_BLOCK_ROWS = 65536


def check_unit_norm(vectors: np.ndarray, what: str = "vectors", *, first_row: int = 0) -> None:
    """Raise ValueError if any row of `vectors` (n, d) is not L2-normalised within `UNIT_NORM_TOLERANCE`.

    Inner-product scores are cosine similarities only for unit vectors; a vector of norm 30 would outrank
    every real match. The message names `what`, the first offending rows and the range of norms.

    Example:
        >>> check_unit_norm(np.eye(3, dtype=np.float32))
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    # one pass over the data: a NaN or infinite value makes its row's norm non-finite, so only rows whose norm is
    # not finite are looked at again (float32: ~1e-6 relative error, far below the tolerance)
    norms = np.sqrt(np.einsum("ij,ij->i", array, array))
    odd = np.flatnonzero(~np.isfinite(norms))
    if len(odd):
        bad = odd[~np.isfinite(array[odd]).all(axis=1)]  # not finite-but-huge rows, whose squares overflow
        if len(bad):
            raise ValueError(f"{what}: NaN or infinite values in row(s) {(bad[:5] + first_row).tolist()}")
    off = ~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE)  # an overflowing norm counts as off
    if off.any():
        rows = (np.flatnonzero(off)[:5] + first_row).tolist()
        raise ValueError(
            f"{what}: {int(off.sum())} vector(s) are not unit length (L2 norms {norms[off].min():.4g}..{norms[off].max():.4g}, "
            f"first at row(s) {rows}); inner-product scores are cosines only for L2-normalised vectors: embed with "
            "embed_dataset, or normalise them (x / np.linalg.norm(x, axis=1, keepdims=True)) before indexing"
        )


def column_blocks(dataset: Dataset, column: str, block_rows: int = _BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, present mask, float32 vectors of the present rows) per block of an embedding column.

    Reads the Arrow data without copying when it can (memory-mapped, no Python objects), so a 1M-row column
    streams at disk speed. Null rows (a study without that modality) are absent from the vectors.
    """
    import pyarrow as pa

    dimension = _column_dimension(dataset, column)
    start = 0
    for table in dataset.with_format("arrow", columns=[column]).iter(batch_size=block_rows):
        array = table.column(column).combine_chunks()
        present = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        values = array.flatten()  # FixedSizeList: honours slicing, drops null entries
        if not pa.types.is_float32(values.type):
            values = values.cast(pa.float32())
        vectors = values.to_numpy(zero_copy_only=False).reshape(-1, dimension)
        yield start, present, vectors
        start += len(array)


def _column_digest(dataset: Dataset, column: str) -> str:
    """sha256 over the float32 bytes of an embedding column, in row order."""
    digest = hashlib.sha256()
    with dataset.formatted_as(type="numpy", columns=[column], dtype=np.float32):
        for start in range(0, len(dataset), _HASH_BLOCK_ROWS):
            block = np.ascontiguousarray(dataset[start : start + _HASH_BLOCK_ROWS][column], dtype=np.float32)
            digest.update(memoryview(block).cast("B"))
    return "sha256:" + digest.hexdigest()



# -- indexes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexSpec:
    """What a FAISS index on a dataset is: kind, size, dimension, metric and search parameters."""

    kind: str
    dimension: int
    num_rows: int
    metric: str
    params: dict[str, int] = field(default_factory=dict)
    on_gpu: bool = False


def default_nlist(num_rows: int) -> int:
    """IVF cells: about 4 * sqrt(n), but at most n / 39 so k-means sees >= 39 points per centroid (faiss' minimum)."""
    return max(1, min(int(round(4 * math.sqrt(num_rows))), num_rows // 39))


def default_nprobe(nlist: int) -> int:
    """Cells visited per query: nlist / 8 (at least 1), a recall-leaning default."""
    return max(1, min(nlist, int(math.ceil(nlist / 8))))


def build_index(
    dataset: Dataset,
    column: str = "fused_embeds",
    kind: Literal["flat", "ivf", "hnsw"] = "flat",
    *,
    index_name: str | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 128,
    ef_construction: int = 80,
    device: int | Sequence[int] | Literal["cpu"] | None = None,
    batch_size: int = 10_000,
    show_progress: bool = True,
) -> Dataset:
    """Attach an inner-product FAISS index on `column` to `dataset` (in place, like `add_faiss_index`); returns it.

    Args:
        kind: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IVF<nlist>,Flat``: k-means cells, ``nprobe``
            of them visited per query) or ``hnsw`` (``HNSW<hnsw_m>`` graph, ``ef_search`` candidates).
        index_name: the name used by `get_nearest_examples`; default `column`.
        nlist / nprobe: IVF cells and cells visited (defaults `default_nlist`, `default_nprobe`).
        train_size: IVF training vectors, taken by `datasets` from the first rows (default all rows;
            faiss then samples at most 256 per cell at random). Shuffle a row-ordered dataset first
            if you lower it.
        hnsw_m / ef_construction / ef_search: HNSW links per node, build-time and search-time beam.
        device: None = GPU 0 when faiss-gpu sees a GPU (flat and IVF), else CPU; ``"cpu"`` forces
            CPU; an int or list of ints is passed to `datasets` (negative = all GPUs). HNSW is CPU only.
        batch_size: vectors per `add` call (datasets' default 1000 made HNSW builds markedly slower
            than one raw `add` in benchmarks/bench_faiss.py).
        show_progress: False hides the progress bars `datasets` draws while adding vectors.

    Raises ValueError when the column has None rows or vectors that are not unit length (`check_unit_norm`).

    Example:
        >>> build_index(embedded, "fused_embeds", "hnsw", ef_search=64)  # doctest: +SKIP
        >>> scores, examples = embedded.get_nearest_examples("fused_embeds", query, k=5)  # doctest: +SKIP
    """
    import faiss

    if kind not in INDEX_KINDS:
        raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
    dimension = _column_dimension(dataset, column)
    nulls = int((~present_mask(dataset, column)).sum())
    if nulls:
        raise ValueError(
            f"column '{column}' is None on {nulls} of {len(dataset)} rows (studies without that modality); "
            f"index only rows that have it: rows_with_embeddings(dataset, '{column}')"
        )
    for start, _, vectors in column_blocks(dataset, column):
        check_unit_norm(vectors, f"column '{column}'", first_row=start)
    n = len(dataset)
    name = index_name or column
    faiss_device = _resolve_faiss_device(kind, device)
    common = dict(column=column, index_name=name, metric_type=faiss.METRIC_INNER_PRODUCT, batch_size=batch_size)
    if kind == "ivf":
        nlist = default_nlist(n) if nlist is None else positive_int(nlist, "nlist")
        if nlist > n:
            raise ValueError(f"nlist={nlist} IVF cells need at least {nlist} rows to train on; column '{column}' has {n}")
        train = n if train_size is None else positive_int(train_size, "train_size")
        if not nlist <= train <= n:
            raise ValueError(f"train_size={train} must be between nlist={nlist} and the row count {n}")
    with _datasets_progress(show_progress):
        if kind == "flat":
            dataset.add_faiss_index(string_factory="Flat", device=faiss_device, **common)
        elif kind == "ivf":
            dataset.add_faiss_index(string_factory=f"IVF{nlist},Flat", train_size=train, device=faiss_device, **common)
            set_search_params(dataset, name, nprobe=default_nprobe(nlist) if nprobe is None else nprobe)
        else:
            # efConstruction must be set before vectors are added, which a factory string cannot express,
            # so the index is created here and handed to `datasets` to fill.
            index = faiss.index_factory(dimension, f"HNSW{positive_int(hnsw_m, 'hnsw_m')}", faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = positive_int(ef_construction, "ef_construction")
            index.hnsw.efSearch = positive_int(ef_search, "ef_search")
            dataset.add_faiss_index(custom_index=index, **common)
    return dataset


@contextlib.contextmanager
def _datasets_progress(show: bool) -> Iterator[None]:
    """Hide the progress bars `datasets` draws while adding vectors, restoring the previous setting after."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if not show and not was_disabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            datasets.enable_progress_bars()


def set_search_params(
    dataset: Dataset, index_name: str, *, nprobe: int | None = None, ef_search: int | None = None
) -> IndexSpec:
    """Set IVF ``nprobe`` and/or HNSW ``efSearch`` on an attached index (they are saved with it); returns its spec."""
    import faiss

    index = _faiss_index(dataset, index_name)
    spec = describe_index(dataset, index_name)
    space = faiss.GpuParameterSpace() if spec.on_gpu else faiss.ParameterSpace()
    if nprobe is not None:
        if spec.kind != "ivf":
            raise ValueError(f"nprobe applies to IVF indexes; index '{index_name}' is {spec.kind}")
        nprobe = positive_int(nprobe, "nprobe")
        space.set_index_parameter(index, "nprobe", min(nprobe, spec.params["nlist"]))
    if ef_search is not None:
        if spec.kind != "hnsw":
            raise ValueError(f"ef_search applies to HNSW indexes; index '{index_name}' is {spec.kind}")
        space.set_index_parameter(index, "efSearch", positive_int(ef_search, "ef_search"))
    return describe_index(dataset, index_name)


def describe_index(dataset: Dataset, index_name: str) -> IndexSpec:
    """Kind, dimension, size, metric and search parameters of an index attached to `dataset`."""
    return describe_faiss(_faiss_index(dataset, index_name))


def describe_faiss(index: Any) -> IndexSpec:
    """Kind (flat / ivf / hnsw), dimension, size, metric and search parameters of a faiss index."""
    import faiss

    on_gpu = type(index).__name__.startswith("Gpu")
    cpu_index = faiss.index_gpu_to_cpu(index) if on_gpu else index
    metric = {faiss.METRIC_INNER_PRODUCT: "inner_product", faiss.METRIC_L2: "l2"}.get(cpu_index.metric_type, str(cpu_index.metric_type))
    params: dict[str, int] = {}
    try:
        ivf = faiss.extract_index_ivf(cpu_index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        kind = "ivf"
        params = {"nlist": int(ivf.nlist), "nprobe": int(faiss.extract_index_ivf(index).nprobe if not on_gpu else index.nprobe)}
    elif hasattr(cpu_index, "hnsw"):
        kind = "hnsw"
        params = {
            "hnsw_m": int(cpu_index.hnsw.nb_neighbors(1)),
            "ef_search": int(cpu_index.hnsw.efSearch),
            "ef_construction": int(cpu_index.hnsw.efConstruction),
        }
    elif isinstance(cpu_index, faiss.IndexFlat):
        kind = "flat"
    else:
        kind = type(cpu_index).__name__
    return IndexSpec(kind=kind, dimension=int(index.d), num_rows=int(index.ntotal), metric=metric, params=params, on_gpu=on_gpu)


def save_faiss_index(
    dataset: Dataset,
    index_name: str,
    path: str | os.PathLike,
    *,
    fingerprint: str | None = None,
    column: str | None = None,
) -> Path:
    """Write the index to `path` and a JSON sidecar ``<path>.json`` (both atomically); returns the sidecar path.

    Args:
        fingerprint: `model_fingerprint` of the model that embedded the column; default the dataset's
            `FINGERPRINT_COLUMN`. With neither, the sidecar records null and loads cannot check it.
        column: the indexed column (default `index_name`); its sha256 is recorded so that loading
            onto other data fails.

    Sidecar fields: format, index_name, column, kind, params, metric, dimension, num_rows,
    model_fingerprint, dataset_fingerprint (informative), column_sha256, faiss_version.

    Example:
        >>> save_faiss_index(embedded, "fused_embeds", "out/fused_embeds.faiss", fingerprint=model_fingerprint(model))  # doctest: +SKIP
    """
    import faiss

    path = Path(path)
    column = column or index_name
    spec = describe_index(dataset, index_name)
    dimension = _column_dimension(dataset, column)
    if spec.num_rows != len(dataset) or spec.dimension != dimension:
        raise ValueError(
            f"index '{index_name}' holds {spec.num_rows} vectors of dimension {spec.dimension} but column "
            f"'{column}' has {len(dataset)} rows of dimension {dimension}; pass the column the index was built on"
        )
    stored = embedding_model_fingerprint(dataset)
    if fingerprint is not None and stored is not None and fingerprint != stored:
        raise ValueError(
            f"fingerprint={fingerprint} but the dataset's '{FINGERPRINT_COLUMN}' column says the embeddings "
            f"come from {stored}"
        )
    sidecar = {
        "format": SIDECAR_FORMAT,
        "index_file": path.name,
        "index_name": index_name,
        "column": column,
        "kind": spec.kind,
        "params": spec.params,
        "metric": spec.metric,
        "dimension": spec.dimension,
        "num_rows": spec.num_rows,
        "model_fingerprint": fingerprint or stored,
        "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
        "column_sha256": _column_digest(dataset, column),
        "faiss_version": faiss.__version__,
    }
    with atomic_file(path) as tmp:
        dataset.save_faiss_index(index_name, tmp)
    sidecar_path = _sidecar_path(path)
    atomic_write_text(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar_path


def load_faiss_index(
    dataset: Dataset,
    index_name: str,
    path: str | os.PathLike,
    *,
    fingerprint: str | None = None,
    device: int | Sequence[int] | Literal["cpu"] | None = None,
    verify_column: bool = True,
) -> IndexSpec:
    """Attach an index written by `save_faiss_index` after checking it belongs to `dataset`; returns its spec.

    Checks, each failing with a ValueError that names the file: row count; dimension of the
    indexed column; the column's sha256 (``verify_column``; catches another dataset of the same
    size); `fingerprint` (when given) and the dataset's `FINGERPRINT_COLUMN` against the model
    fingerprint recorded at save time.

    Example:
        >>> load_faiss_index(embedded, "fused_embeds", "out/fused_embeds.faiss", fingerprint=model_fingerprint(model))  # doctest: +SKIP
    """
    path = Path(path)
    sidecar_path = _sidecar_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such FAISS index file")
    if not sidecar_path.is_file():
        raise FileNotFoundError(f"{sidecar_path}: missing; an index saved by save_faiss_index has this JSON sidecar")
    meta = _read_sidecar(sidecar_path)
    if meta["num_rows"] != len(dataset):
        raise ValueError(
            f"{path}: the index holds {meta['num_rows']} rows but the dataset has {len(dataset)}; "
            "it was built for another dataset or split"
        )
    column = meta["column"]
    if column in dataset.column_names:
        dimension = _column_dimension(dataset, column)
        if dimension != meta["dimension"]:
            raise ValueError(
                f"{path}: the index has dimension {meta['dimension']} but the dataset's '{column}' column has "
                f"dimension {dimension}; it was built with another model or column"
            )
        if verify_column and _column_digest(dataset, column) != meta["column_sha256"]:
            raise ValueError(
                f"{path}: the dataset's '{column}' column differs from the vectors the index was built on "
                "(sha256 mismatch); it belongs to another dataset or embedding run: rebuild it with build_index"
            )
    recorded = meta["model_fingerprint"]
    if fingerprint is not None and recorded != fingerprint:
        raise ValueError(
            f"{path}: the index was built from embeddings of model {recorded}, not of the given model "
            f"{fingerprint}; re-embed and rebuild it with build_index"
        )
    stored = embedding_model_fingerprint(dataset)
    if stored is not None and recorded is not None and stored != recorded:
        raise ValueError(
            f"{path}: the index was built from embeddings of model {recorded} but the dataset's "
            f"'{FINGERPRINT_COLUMN}' column says {stored}"
        )
    try:
        dataset.load_faiss_index(index_name, path, device=_resolve_faiss_device(meta["kind"], device))
    except RuntimeError as err:  # faiss's reader error does not name the file
        raise ValueError(f"{path}: not a readable FAISS index, truncated or corrupt ({err})") from err
    spec = describe_index(dataset, index_name)
    if spec.dimension != meta["dimension"] or spec.num_rows != meta["num_rows"]:
        dataset.drop_index(index_name)
        raise ValueError(
            f"{path}: the index file holds {spec.num_rows} vectors of dimension {spec.dimension} but its "
            f"sidecar {sidecar_path.name} says {meta['num_rows']} x {meta['dimension']}; the files do not match"
        )
    params = meta.get("params") or {}
    if spec.kind == "ivf" and "nprobe" in params:
        spec = set_search_params(dataset, index_name, nprobe=params["nprobe"])
    elif spec.kind == "hnsw" and "ef_search" in params:
        spec = set_search_params(dataset, index_name, ef_search=params["ef_search"])
    return spec


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path) -> dict[str, Any]:
    meta = read_json(path)
    required = ("format", "column", "kind", "dimension", "num_rows", "model_fingerprint", "column_sha256")
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not a cxr_mtclip index sidecar (expected format {SIDECAR_FORMAT!r})")
    missing = [key for key in required if key not in meta]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    return meta


def _column_dimension(dataset: Dataset, column: str) -> int:
    if column not in dataset.column_names:
        raise ValueError(f"dataset has no column '{column}' (run embed_dataset first?); columns: {dataset.column_names}")
    feature = dataset.features[column]
    if not isinstance(feature, List) or not isinstance(feature.feature, Value) or "float" not in feature.feature.dtype:
        raise ValueError(f"column '{column}' must be a list of floats (an embedding), got {feature}")
    if feature.length and feature.length > 0:
        return int(feature.length)
    if len(dataset) == 0:
        raise ValueError(f"column '{column}' is empty; cannot tell its dimension")
    first = dataset[0][column]
    if first is None:
        raise ValueError(f"column '{column}' is None on row 0; index only rows that have it (rows_with_embeddings)")
    return len(first)


def _num_gpus() -> int:
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _resolve_faiss_device(kind: str, device: Any) -> Any:
    if isinstance(device, str):
        if device != "cpu":
            raise ValueError(f"device must be None, 'cpu', a GPU id or a list of GPU ids; got {device!r}")
        return None
    if device is None:
        return 0 if kind != "hnsw" and _num_gpus() > 0 else None
    if kind == "hnsw":
        raise ValueError("HNSW indexes run on CPU only (faiss-gpu has no HNSW); pass device=None or 'cpu'")
    if _num_gpus() == 0:
        raise ValueError(f"device={device!r} asks for a GPU but faiss sees none (is faiss-cpu installed?)")
    return list(device) if isinstance(device, (list, tuple)) else int(device)


def _faiss_index(dataset: Dataset, index_name: str) -> Any:
    if not dataset.is_index_initialized(index_name):
        raise ValueError(
            f"dataset has no index named '{index_name}' (attached: {dataset.list_indexes()}); "
            f"build it with build_index(dataset, '{index_name}') or load it with load_faiss_index"
        )
    index = getattr(dataset.get_index(index_name), "faiss_index", None)
    if index is None:
        raise ValueError(f"index '{index_name}' is not a FAISS index")
    return index


