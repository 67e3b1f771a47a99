"""The index folder: gallery rows, one FAISS index per searchable embedding column, and a manifest, on disk.

Layout (written by `write_index_folder`, read back and checked by `read_index_folder`)::

    FOLDER/
      manifest.json                      # written last: the folder's commit point
      rows/part-00000/                   # datasets save_to_disk: the gallery rows with their embedding columns
      rows/part-00001/                   # rows appended later (`RetrievalIndex.add`), one part per call
      indexes/fused_embeds.0001.faiss    # faiss.write_index; the number is the generation that wrote it
      indexes/text_embeds.0001.rows.npy  # index position -> row number, when the column has None rows

Every index is an inner-product index on L2-normalised float32 vectors, so scores are cosine similarities.
The manifest records what a reader needs to trust the files: the model fingerprint and id, the embedding
dimension, metric, precision, protocol (default search mode), data note, row count, creation time, each rows
part's `datasets` fingerprint and row count, and each index file's kind, parameters, size and sha256.
`read_index_folder` refuses, with one line naming the file, a missing or malformed manifest, rows that are not
the ones the manifest describes (a manifest copied from another folder), and a truncated, damaged or
mismatched index file. Appending writes new files under new names and then replaces the manifest, so a reader
sees the old folder or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from ..atomic import atomic_directory, atomic_file, atomic_write_text
from ..utils import positive_int
from .index import (
    INDEX_KINDS,
    IndexSpec,
    _column_dimension,
    check_unit_norm,
    column_blocks,
    default_nlist,
    default_nprobe,
    describe_faiss,
)

__all__ = [
    "INDEX_FOLDER_FORMAT",
    "MANIFEST_NAME",
    "ColumnIndex",
    "IndexManifest",
    "build_column_index",
    "read_index_folder",
    "write_index_folder",
]

INDEX_FOLDER_FORMAT = "cxr_mtclip.index_folder/1"
MANIFEST_NAME = "manifest.json"
_ROWS_DIR, _INDEX_DIR = "rows", "indexes"


# -- one searchable column -----------------------------------------------------------------------


@dataclass
class ColumnIndex:
    """A faiss index over one embedding column, and where each of its vectors sits in the gallery rows.

    Attributes:
        column: the embedding column (``image_embeds``, ``text_embeds`` or ``fused_embeds``).
        index: the faiss index (inner product).
        row_ids: int64 array, index position -> row number; None when position == row number.
    """

    column: str
    index: Any
    row_ids: np.ndarray | None = None

    @property
    def spec(self) -> IndexSpec:
        return describe_faiss(self.index)

    def rows_of(self, positions: np.ndarray) -> np.ndarray:
        """Row numbers of index positions (faiss' -1 for "no result" stays -1)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.row_ids is None:
            return positions
        return np.where(positions >= 0, self.row_ids[np.clip(positions, 0, None)], -1)

    def positions_mask(self, row_mask: np.ndarray) -> np.ndarray:
        """A mask over rows as a mask over this index's positions."""
        return row_mask if self.row_ids is None else row_mask[self.row_ids]


def _index_factory(kind: str, dimension: int, num_rows: int, nlist: int | None, hnsw_m: int, ef_construction: int) -> Any:
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dimension)
    if kind == "ivf":
        return faiss.index_factory(dimension, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index = faiss.index_factory(dimension, f"HNSW{positive_int(hnsw_m, 'hnsw_m')}", faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = positive_int(ef_construction, "ef_construction")  # before any vector is added
    return index


def build_column_index(
    rows: Dataset,
    column: str,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    seed: int = 0,
    show_progress: bool = True,
) -> ColumnIndex:
    """An inner-product faiss index over the non-None vectors of `column`, read straight from Arrow.

    Args:
        kind: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (``IVF<nlist>,Flat``: ``nprobe`` of ``nlist`` k-means
            cells scanned per query) or ``hnsw`` (``HNSW<hnsw_m>`` graph, ``ef_search`` candidates per query).
        nlist / nprobe: IVF cells and cells visited (defaults `default_nlist`, `default_nprobe`).
        train_size: IVF training vectors, a seeded random sample of the rows (default min(rows, 64 * nlist):
            k-means cost grows with it, and faiss wants at least 39 per cell).
        seed: the training sample's seed.

    Raises ValueError for an unknown kind, a column without any vector, or vectors that are not unit length.
    The vectors are fed to faiss in 64k-row blocks without a copy through Python objects, into flat storage
    sized once for the whole column (`_reserve_storage`), so a build costs about what raw faiss does on a NumPy
    array (benchmarks/bench_index_folder.py).
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
    dimension = _column_dimension(rows, column)
    masks = []
    index = None
    total = len(rows)
    with tqdm(total=total, desc=f"Indexing {column} ({kind})", unit="row", disable=not show_progress or total == 0) as bar:
        for start, present, vectors in column_blocks(rows, column):
            masks.append(present)
            check_unit_norm(vectors, f"column '{column}'", first_row=start)
            if index is None:
                index = _new_index(rows, column, kind, dimension, nlist, train_size, hnsw_m, ef_construction, seed)
                _reserve_storage(index, int(_present(rows, column).sum()))
            if len(vectors):
                index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            bar.update(len(present))
    present_all = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    if index is None or not present_all.any():
        raise ValueError(f"column '{column}' has no vectors (every row is None); nothing to index")
    _set_search_params(index, kind, nprobe=nprobe, ef_search=ef_search)
    row_ids = None if present_all.all() else np.flatnonzero(present_all).astype(np.int64)
    return ColumnIndex(column, index, row_ids)


def _new_index(rows: Dataset, column: str, kind: str, dimension: int, nlist: int | None, train_size: int | None,
               hnsw_m: int, ef_construction: int, seed: int) -> Any:
    """An empty index of `kind`; an IVF one is trained first on a seeded sample of the column's vectors."""
    if kind != "ivf":
        return _index_factory(kind, dimension, len(rows), None, hnsw_m, ef_construction)
    present = np.flatnonzero(_present(rows, column))
    n = len(present)
    nlist = default_nlist(n) if nlist is None else positive_int(nlist, "nlist")
    if nlist > n:
        raise ValueError(f"nlist={nlist} IVF cells need at least {nlist} vectors to train on; column '{column}' has {n}")
    train = min(n, 64 * nlist) if train_size is None else positive_int(train_size, "train_size")
    if not nlist <= train <= n:
        raise ValueError(f"train_size={train} must be between nlist={nlist} and the number of vectors {n}")
    picked = present if train == n else np.sort(np.random.default_rng(seed).choice(present, train, replace=False))
    sample = _vectors_at(rows, column, picked)
    check_unit_norm(sample, f"column '{column}'")
    index = _index_factory("ivf", dimension, n, nlist, hnsw_m, ef_construction)
    index.train(sample)
    return index


def _reserve_storage(index: Any, num_vectors: int) -> None:
    """Size a flat (or HNSW's flat) code store for `num_vectors` before blocks are added.

    `IndexFlatCodes.add` grows a std::vector: block by block that is a reallocation and a copy of everything
    added so far at each doubling, which made a 1M-row flat build 2-3x raw faiss' single `add`. Resizing the
    empty store up and back to 0 keeps the capacity (std::vector never shrinks on resize), so each block is
    written in place. IVF indexes keep their vectors in per-cell lists and are left as they are.
    """
    import faiss

    storage = faiss.downcast_index(index.storage) if hasattr(index, "hnsw") else index
    codes = getattr(storage, "codes", None)
    if codes is None or int(storage.ntotal) != 0 or not hasattr(codes, "resize"):
        return
    codes.resize(num_vectors * int(storage.code_size))
    codes.resize(0)


def _present(rows: Dataset, column: str) -> np.ndarray:
    from .embedding import present_mask

    return present_mask(rows, column)


def _vectors_at(rows: Dataset, column: str, row_numbers: np.ndarray) -> np.ndarray:
    """float32 (len(row_numbers), d) vectors of the given rows (which must all be non-None)."""
    dimension = _column_dimension(rows, column)
    if len(row_numbers) == 0:
        return np.zeros((0, dimension), dtype=np.float32)
    table = rows.with_format("arrow", columns=[column])[np.asarray(row_numbers, dtype=np.int64)]
    values = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(-1, dimension)


def _set_search_params(index: Any, kind: str, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    import faiss

    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(ivf.nlist, default_nprobe(ivf.nlist) if nprobe is None else positive_int(nprobe, "nprobe"))
    elif kind == "hnsw" and ef_search is not None:
        index.hnsw.efSearch = positive_int(ef_search, "ef_search")


# -- the manifest --------------------------------------------------------------------------------


@dataclass
class IndexManifest:
    """What an index folder holds (``manifest.json``); see the module docstring for the layout.

    Attributes:
        model_fingerprint: `model_fingerprint` of the model that embedded the gallery (None if unknown).
        model_id: how that model was named when the folder was written (a folder or Hub id), informative.
        embed_dim: the embedding dimension.
        precision: the precision the gallery was embedded in (`resolve_precision`); queries use the same.
        protocol: the default search mode (``cross-modal``).
        data_note: a one-line provenance note shown with every result.
        num_rows: gallery rows.
        images: whether the rows keep their images (thumbnails); False for a vectors-and-text index.
        rows: one entry per rows part: ``path``, ``num_rows``, ``fingerprint`` (datasets' state.json).
        indexes: per column: ``file``, ``row_ids`` (file or None), ``kind``, ``params``, ``num_vectors``,
            ``dimension``, ``bytes``, ``sha256``.
    """

    model_fingerprint: str | None
    model_id: str | None
    embed_dim: int
    precision: str
    data_note: str
    num_rows: int
    images: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: str = "cross-modal"
    metric: str = "inner_product"
    generation: int = 1
    created: str = ""
    updated: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    format: str = INDEX_FOLDER_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> IndexManifest:
        """Parse and validate ``manifest.json``; ValueError naming the file for anything malformed."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); the index folder is damaged: rebuild it") from err
        if not isinstance(data, dict) or data.get("format") != INDEX_FOLDER_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: not a cxr_mtclip index manifest (format {found!r}, expected {INDEX_FOLDER_FORMAT!r})")
        names = {f.name for f in cls.__dataclass_fields__.values()}
        required = ("model_fingerprint", "embed_dim", "precision", "data_note", "num_rows", "images", "rows", "indexes")
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(f"{path}: missing field(s) {missing}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {unknown} (written by a newer cxr_mtclip?)")
        manifest = cls(**data)
        if not manifest.indexes:
            raise ValueError(f"{path}: lists no index; nothing to search")
        return manifest


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import importlib.metadata

    import datasets
    import faiss

    try:
        package = importlib.metadata.version("cxr-mtclip")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
        package = "unknown"
    return {"cxr_mtclip": package, "datasets": datasets.__version__, "faiss": faiss.__version__}


# -- writing -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _state_fingerprint(part: Path) -> str:
    state = part / "state.json"
    try:
        return str(json.loads(state.read_text(encoding="utf-8"))["_fingerprint"])
    except FileNotFoundError:
        raise FileNotFoundError(f"{state}: missing; {part} is not a dataset saved with save_to_disk") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{state}: unreadable ({err}); the rows part is damaged") from err


def _write_rows_part(rows: Dataset, tmp: Path, name: str, show_progress: bool) -> dict[str, Any]:
    """Save `rows` as ``rows/<name>`` inside `tmp`, a staging folder that is renamed into place afterwards."""
    import datasets

    disabled = datasets.are_progress_bars_disabled()
    if not show_progress and not disabled:
        datasets.disable_progress_bars()
    try:
        rows.save_to_disk(str(tmp / _ROWS_DIR / name))
    finally:
        if not show_progress and not disabled:
            datasets.enable_progress_bars()
    return {"path": f"{_ROWS_DIR}/{name}", "num_rows": len(rows), "fingerprint": _state_fingerprint(tmp / _ROWS_DIR / name)}


def _write_index(entry: ColumnIndex, folder: Path, generation: int) -> dict[str, Any]:
    import faiss

    (folder / _INDEX_DIR).mkdir(parents=True, exist_ok=True)
    name = f"{_INDEX_DIR}/{entry.column}.{generation:04d}.faiss"
    path = folder / name
    with atomic_file(path) as tmp:
        faiss.write_index(entry.index, str(tmp))
    row_ids = None
    if entry.row_ids is not None:
        row_ids = f"{_INDEX_DIR}/{entry.column}.{generation:04d}.rows.npy"
        buffer = io.BytesIO()
        np.save(buffer, entry.row_ids.astype(np.int64), allow_pickle=False)
        with atomic_file(folder / row_ids) as tmp:
            tmp.write_bytes(buffer.getvalue())
    spec = entry.spec
    return {
        "file": name, "row_ids": row_ids, "kind": spec.kind, "params": spec.params, "num_vectors": spec.num_rows,
        "dimension": spec.dimension, "bytes": path.stat().st_size, "sha256": _sha256(path),
    }


def write_index_folder(
    folder: str | os.PathLike,
    manifest: IndexManifest,
    indexes: dict[str, ColumnIndex],
    *,
    new_rows: Dataset | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> IndexManifest:
    """Write a whole index folder (rows, indexes, manifest) into a temp folder, then rename it into place.

    Raises FileExistsError when `folder` exists and `overwrite` is False. Returns the manifest written.
    """
    folder = Path(folder)
    if new_rows is None:
        raise ValueError("write_index_folder needs the gallery rows (new_rows)")
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder}: already exists (pass overwrite=True / --overwrite to replace it)")
    with atomic_directory(folder, overwrite=True) as tmp:
        manifest.rows = [_write_rows_part(new_rows, tmp, "part-00000", show_progress)]
        manifest.indexes = {column: _write_index(entry, tmp, manifest.generation) for column, entry in indexes.items()}
        manifest.num_rows = len(new_rows)
        manifest.created = manifest.created or _now()
        manifest.updated = _now()
        manifest.versions = _versions()
        atomic_write_text(tmp / MANIFEST_NAME, manifest.to_json())
    return manifest


def append_to_index_folder(
    folder: str | os.PathLike,
    manifest: IndexManifest,
    indexes: dict[str, ColumnIndex],
    added_rows: Dataset,
    *,
    show_progress: bool = True,
) -> IndexManifest:
    """Add a rows part and a new generation of every index file, then replace the manifest (the commit).

    Files of the previous generation are deleted only after the new manifest is in place; if anything fails
    before that, the folder still reads as it was.
    """
    folder = Path(folder)
    new = IndexManifest(**{**asdict(manifest), "rows": list(manifest.rows), "indexes": dict(manifest.indexes)})
    new.generation = manifest.generation + 1
    part_name = f"part-{len(manifest.rows):05d}"
    written: list[Path] = []
    try:
        staging = Path(tempfile.mkdtemp(prefix=".append.", suffix=".tmp", dir=str(folder)))
        try:
            part = _write_rows_part(added_rows, staging, part_name, show_progress)
            os.replace(staging / _ROWS_DIR / part_name, folder / _ROWS_DIR / part_name)
            written.append(folder / _ROWS_DIR / part_name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        new.rows.append(part)
        new.indexes = {}
        for column, entry in indexes.items():
            new.indexes[column] = meta = _write_index(entry, folder, new.generation)
            written.extend(folder / meta[key] for key in ("file", "row_ids") if meta.get(key))
        new.num_rows = manifest.num_rows + len(added_rows)
        new.updated = _now()
        new.versions = _versions()
        atomic_write_text(folder / MANIFEST_NAME, new.to_json())  # the commit point
    except BaseException:
        for path in written:  # the old manifest still rules: drop what it does not know
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    keep = {entry[key] for entry in new.indexes.values() for key in ("file", "row_ids") if entry.get(key)}
    for old in (folder / _INDEX_DIR).iterdir():
        if f"{_INDEX_DIR}/{old.name}" not in keep and not old.name.startswith("."):
            old.unlink(missing_ok=True)
    return new


# -- reading -------------------------------------------------------------------------------------


def read_index_folder(
    folder: str | os.PathLike, *, verify: bool = False, columns: Sequence[str] | None = None
) -> tuple[Dataset, dict[str, ColumnIndex], IndexManifest]:
    """Load and check an index folder: (gallery rows, {column: ColumnIndex}, manifest).

    Args:
        verify: also compare each index file's sha256 with the manifest (reads every byte once; the default
            compares sizes, row counts and dimensions, which catches truncation and mismatched files).
        columns: load only these indexes (default all the manifest lists).

    Raises FileNotFoundError for a missing folder, manifest or file, and ValueError naming the file for a
    malformed manifest, rows that are not the ones it describes, and an index file that is truncated,
    damaged or does not match.
    """
    import faiss

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such index folder")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not an index folder (no {MANIFEST_NAME}); write one with `cxr-mtclip index`")
    manifest = IndexManifest.read(path)

    parts = []
    for entry in manifest.rows:
        part = folder / entry["path"]
        if not part.is_dir():
            raise FileNotFoundError(f"{part}: missing; {path} lists it as gallery rows")
        found = _state_fingerprint(part)
        if found != entry["fingerprint"]:
            raise ValueError(
                f"{path}: describes other data: {entry['path']} holds dataset {found}, the manifest expects "
                f"{entry['fingerprint']} (a manifest copied from another index folder?); rebuild the folder"
            )
        try:
            rows_part = load_from_disk(str(part))
        except Exception as err:  # datasets raises several types for damaged arrow files
            raise ValueError(f"{part}: unreadable rows ({type(err).__name__}: {err})") from err
        if len(rows_part) != entry["num_rows"]:
            raise ValueError(f"{part}: holds {len(rows_part)} rows but {path} says {entry['num_rows']}")
        parts.append(rows_part)
    if not parts:
        raise ValueError(f"{path}: lists no rows")
    rows = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    if len(rows) != manifest.num_rows:
        raise ValueError(f"{path}: says {manifest.num_rows} rows but its parts hold {len(rows)}")

    wanted = list(manifest.indexes) if columns is None else list(columns)
    indexes = {}
    for column in wanted:
        if column not in manifest.indexes:
            raise ValueError(f"{path}: has no index on {column!r}; it has {sorted(manifest.indexes)}")
        meta = manifest.indexes[column]
        if column not in rows.column_names:
            raise ValueError(f"{path}: indexes column {column!r} but the rows have no such column")
        index_path = folder / meta["file"]
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path}: missing; {path} lists it as the {column} index")
        size = index_path.stat().st_size
        if size != meta["bytes"]:
            raise ValueError(
                f"{index_path}: {size} bytes but {path} says {meta['bytes']}: the file is truncated or was "
                "replaced; rebuild the index folder"
            )
        if verify and _sha256(index_path) != meta["sha256"]:
            raise ValueError(f"{index_path}: sha256 differs from {path}: the file is damaged; rebuild the index folder")
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1][:200]
            raise ValueError(f"{index_path}: not a readable FAISS index, truncated or corrupt ({reason})") from err
        if int(index.ntotal) != meta["num_vectors"] or int(index.d) != meta["dimension"]:
            raise ValueError(
                f"{index_path}: holds {index.ntotal} vectors of dimension {index.d} but {path} says "
                f"{meta['num_vectors']} x {meta['dimension']}"
            )
        row_ids = _read_row_ids(folder, meta, len(rows), int(index.ntotal), index_path)
        if row_ids is None and int(index.ntotal) != len(rows):
            raise ValueError(f"{index_path}: holds {index.ntotal} vectors for {len(rows)} rows and no row-id file")
        entry = ColumnIndex(column, index, row_ids)
        kind = meta["kind"]
        if kind != entry.spec.kind:
            raise ValueError(f"{index_path}: is a {entry.spec.kind} index but {path} says {kind}")
        params = meta.get("params") or {}
        _set_search_params(index, kind, nprobe=params.get("nprobe"), ef_search=params.get("ef_search"))
        indexes[column] = entry
    return rows, indexes, manifest


def _read_row_ids(folder: Path, meta: dict[str, Any], num_rows: int, num_vectors: int, index_path: Path) -> np.ndarray | None:
    if not meta.get("row_ids"):
        return None
    path = folder / meta["row_ids"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; it maps {index_path.name}'s vectors to rows")
    try:
        row_ids = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: unreadable row ids ({err})") from err
    if row_ids.shape != (num_vectors,) or row_ids.dtype != np.int64 or (num_vectors and (row_ids.min() < 0 or row_ids.max() >= num_rows)):
        raise ValueError(f"{path}: expected {num_vectors} int64 row numbers below {num_rows}, got {row_ids.dtype} {row_ids.shape}")
    return row_ids
