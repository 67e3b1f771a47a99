"""Embedding columns, FAISS indexes through `datasets`, and image / report / study search.

Two search modes, both over indexes attached to a `datasets.Dataset` with `add_faiss_index`:

* ``"paper"`` (the paper's Algorithm 2): the query embedding, image or report, is ranked against the
  one index of ``fused_embeds`` (the normalised mean of each study's image and report embeddings).
  An image query is then half of its own study's fused vector, so its own study scores at least
  ``sqrt(1/2)`` whatever the model learned: numbers in this mode overstate cross-modal retrieval
  (``cxr_mtclip.evaluate_retrieval`` measures by how much).
* ``"cross-modal"``: an image query is ranked against the ``text_embeds`` index (find the reports
  for an X-ray) and a report query against the ``image_embeds`` index (find the X-rays for a report).

`search_similar_studies` ranks a fused (image + report) query against the fused index in both modes.
Every embedding is float32 and L2-normalised, every index uses the inner product, so scores are
cosine similarities.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from datasets import Dataset, List, Value
from datasets import Image as ImageFeature
from datasets.search import BatchedNearestExamplesResults, NearestExamplesResults
from PIL import Image
from tqdm.auto import tqdm

from .atomic import atomic_file, atomic_write_text
from .modeling_cxr_mtclip import fuse_embeddings

__all__ = [
    "EMBEDDING_COLUMNS",
    "FINGERPRINT_COLUMN",
    "INDEX_KINDS",
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
    "load_retrieval_model",
    "model_fingerprint",
    "rows_with_embeddings",
    "save_faiss_index",
    "search_by_image",
    "search_by_text",
    "search_embeddings",
    "search_similar_studies",
    "set_search_params",
]

EMBEDDING_COLUMNS = ("image_embeds", "text_embeds", "fused_embeds")
LOGITS_COLUMN = "logits"
FINGERPRINT_COLUMN = "embeds_model"
"""Column written by `embed_dataset`: the `model_fingerprint` of the model that made the embeddings."""
INDEX_KINDS = ("flat", "ivf", "hnsw")
SIDECAR_FORMAT = "cxr_mtclip.faiss_index/1"
SearchMode = Literal["paper", "cross-modal"]
SEARCH_MODES = ("paper", "cross-modal")

# Keys that change when the same weights are saved and reloaded, or with the library version.
_VOLATILE_CONFIG_KEYS = (
    "_name_or_path", "name_or_path", "transformers_version", "_commit_hash", "architectures",
    "_attn_implementation", "_attn_implementation_autoset", "attn_implementation", "dtype", "torch_dtype",
    "output_attentions", "output_hidden_states", "return_dict", "use_return_dict", "use_cache",
)
_HASH_BLOCK_ROWS = 16384


# -- fingerprints ------------------------------------------------------------------------------


def model_fingerprint(model: torch.nn.Module) -> str:
    """``sha256:<hex>`` over the config JSON (without path/version keys) and every state-dict tensor's bytes.

    Identical weights give the same fingerprint after `save_pretrained` -> `from_pretrained`; any
    changed weight, buffer or hyper-parameter changes it.

    Example:
        >>> from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel
        >>> model_fingerprint(CxrMtClipModel(CxrMtClipConfig.tiny())).startswith("sha256:")
        True
    """
    model = getattr(model, "module", model)  # DistributedDataParallel / accelerate wrappers
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        params = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        digest.update(json.dumps(params, sort_keys=True, default=str).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"\n{name}|{value.dtype}|{tuple(value.shape)}\n".encode("utf-8"))
        digest.update(memoryview(value.reshape(-1).view(torch.uint8).numpy()))
    return "sha256:" + digest.hexdigest()


def embedding_model_fingerprint(dataset: Dataset) -> str | None:
    """The fingerprint stored by `embed_dataset` in `FINGERPRINT_COLUMN`; None when the column is absent.

    Raises ValueError when rows were embedded by different models (e.g. concatenated datasets).
    """
    if FINGERPRINT_COLUMN not in dataset.column_names or len(dataset) == 0:
        return None
    table = dataset.with_format("arrow", columns=[FINGERPRINT_COLUMN])[:]
    values = {v for v in table.column(FINGERPRINT_COLUMN).unique().to_pylist() if v is not None}
    if len(values) > 1:
        raise ValueError(
            f"column '{FINGERPRINT_COLUMN}' holds {len(values)} different model fingerprints: the rows were "
            "embedded by different models; re-embed the whole dataset with one model"
        )
    return values.pop() if values else None


def _column_digest(dataset: Dataset, column: str) -> str:
    """sha256 over the float32 bytes of an embedding column, in row order."""
    digest = hashlib.sha256()
    with dataset.formatted_as(type="numpy", columns=[column], dtype=np.float32):
        for start in range(0, len(dataset), _HASH_BLOCK_ROWS):
            block = np.ascontiguousarray(dataset[start : start + _HASH_BLOCK_ROWS][column], dtype=np.float32)
            digest.update(memoryview(block).cast("B"))
    return "sha256:" + digest.hexdigest()


# -- embedding -----------------------------------------------------------------------------------


@torch.inference_mode()
def embed_images(model: torch.nn.Module, processor: Any, images: Image.Image | Sequence[Image.Image]) -> np.ndarray:
    """L2-normalised float32 image embeddings, shape (n, embed_dim); one image gives (1, embed_dim).

    Example:
        >>> embed_images(model, processor, [image]).shape  # doctest: +SKIP
        (1, 512)
    """
    core = _unwrap(model)
    batch = [images] if isinstance(images, Image.Image) else list(images)
    pixel_values = processor(images=batch)["pixel_values"].to(_model_device(core), _model_dtype(core))
    with _eval_mode(core):
        features = core.get_image_features(pixel_values, normalize=False)
    return F.normalize(features.float(), dim=-1).cpu().numpy()


@torch.inference_mode()
def embed_reports(model: torch.nn.Module, processor: Any, reports: str | Sequence[str]) -> np.ndarray:
    """L2-normalised float32 report embeddings, shape (n, embed_dim)."""
    core = _unwrap(model)
    encoded = processor(text=reports)
    with _eval_mode(core):
        features = core.get_text_features(
            encoded["input_ids"].to(_model_device(core)), encoded["attention_mask"].to(_model_device(core)),
            normalize=False,
        )
    return F.normalize(features.float(), dim=-1).cpu().numpy()


def embed_studies(
    model: torch.nn.Module,
    processor: Any,
    images: Image.Image | Sequence[Image.Image],
    reports: str | Sequence[str],
) -> np.ndarray:
    """Fused (image + report) study embeddings, shape (n, embed_dim): what the fused index holds."""
    image = torch.from_numpy(embed_images(model, processor, images))
    text = torch.from_numpy(embed_reports(model, processor, reports))
    if image.shape[0] != text.shape[0]:
        raise ValueError(f"got {image.shape[0]} image(s) but {text.shape[0]} report(s); expected one report per image")
    return fuse_embeddings(image, text).numpy()


def embed_dataset(
    model: torch.nn.Module,
    processor: Any,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    columns: Sequence[str] = EMBEDDING_COLUMNS,
    image_column: str = "image",
    text_column: str = "report",
    accelerator: Any = None,
    device: str | torch.device | None = None,
    show_progress: bool = True,
    num_workers: int = 0,
) -> Dataset:
    """Return `dataset` with float32 L2-normalised embedding columns and the model's fingerprint column.

    Args:
        columns: any of ``image_embeds``, ``text_embeds``, ``fused_embeds`` and ``logits`` (the
            head's abnormal logit on the fused pair, for classification metrics).
        accelerator: an `accelerate.Accelerator`; with ``num_processes > 1`` each process embeds its
            contiguous shard and every process gets back the whole dataset, rows in order.
        device: where to run the model (it is moved there); default the accelerator's device, else
            the model's.
        num_workers: DataLoader workers that decode and preprocess batches ahead of the model
            (pinned memory on CUDA, where the towers also run under bf16 autocast).

    Missing modalities: a row whose image is None (a reports-only study) gets None in
    ``image_embeds``, ``fused_embeds`` and ``logits``; a row whose report is None or blank gets
    None in ``text_embeds``, ``fused_embeds`` and ``logits``. A column that would be None for
    every row is not added, so a reports-only dataset (or one without an ``image`` column) gets
    ``text_embeds`` only. Existing columns of the same names are replaced. Each embedding column
    is ``List(Value("float32"), length=embed_dim)``; ``FINGERPRINT_COLUMN`` holds
    `model_fingerprint(model)` on every row so a saved index can be checked against it.

    Example:
        >>> embedded = embed_dataset(model, processor, splits["test"], batch_size=64)  # doctest: +SKIP
        >>> embedded.features["fused_embeds"]  # doctest: +SKIP
        List(Value('float32'), length=512)
    """
    wanted = list(dict.fromkeys(columns))
    allowed = (*EMBEDDING_COLUMNS, LOGITS_COLUMN)
    unknown = [c for c in wanted if c not in allowed]
    if unknown or not wanted:
        raise ValueError(f"columns={list(columns)!r}: expected a non-empty subset of {list(allowed)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if text_column not in dataset.column_names:
        raise ValueError(f"dataset has no '{text_column}' column (report text); columns: {dataset.column_names}")
    has_images = image_column in dataset.column_names
    if has_images and not isinstance(dataset.features[image_column], ImageFeature):
        raise ValueError(
            f"dataset column '{image_column}' must be a datasets.Image() feature, got {dataset.features[image_column]}"
        )

    core = _unwrap(model if accelerator is None else accelerator.unwrap_model(model))
    if accelerator is not None:
        device = accelerator.device
    if device is not None and _model_device(core) != torch.device(device):
        core.to(device)
    view = dataset.select_columns([image_column, text_column] if has_images else [text_column])
    if has_images:  # decode row by row, so that a corrupt image is reported with its row
        view = view.cast_column(image_column, ImageFeature(decode=False))

    num_processes = int(getattr(accelerator, "num_processes", 1) or 1)
    is_main = accelerator is None or bool(getattr(accelerator, "is_local_main_process", True))
    with _eval_mode(core):
        if num_processes > 1:
            rank = int(accelerator.process_index)
            shard = view.shard(num_shards=num_processes, index=rank, contiguous=True)
            local = _embed_rows(core, processor, shard, image_column if has_images else None, text_column,
                                batch_size, LOGITS_COLUMN in wanted, show_progress and is_main, num_workers)
            arrays = _gather_shards(local, num_processes, len(dataset))
        else:
            arrays = _embed_rows(core, processor, view, image_column if has_images else None, text_column,
                                 batch_size, LOGITS_COLUMN in wanted, show_progress and is_main, num_workers)

    fingerprint = model_fingerprint(core)
    arrays["fused_embeds"] = _fuse_rows(arrays["image_embeds"], arrays["text_embeds"])
    out = dataset.remove_columns([c for c in (*allowed, FINGERPRINT_COLUMN) if c in dataset.column_names])
    for name in wanted:
        values = arrays[name]
        present = ~np.isnan(values).any(axis=1) if values.ndim == 2 else ~np.isnan(values)
        if not present.any():
            continue
        out = out.add_column(name, _to_arrow(values, present), feature=_feature_for(values))
    out = out.add_column(FINGERPRINT_COLUMN, pa.array([fingerprint] * len(out), type=pa.string()),
                         feature=Value("string"))
    return out


class _PreparedBatches(torch.utils.data.Dataset):
    """Batch `i` of a view, decoded and preprocessed: what DataLoader workers compute ahead of the model."""

    def __init__(self, view: Dataset, processor: Any, image_column: str | None, text_column: str, batch_size: int) -> None:
        self.view, self.processor = view, processor
        self.image_column, self.text_column, self.batch_size = image_column, text_column, batch_size

    def __len__(self) -> int:
        return (len(self.view) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int) -> dict[str, Any]:
        start = index * self.batch_size
        batch = self.view[start : start + self.batch_size]
        texts = batch[self.text_column]
        images = (
            [_decode_image(value, start + i) for i, value in enumerate(batch[self.image_column])]
            if self.image_column is not None else [None] * len(texts)
        )
        image_rows = [i for i, image in enumerate(images) if image is not None]
        text_rows = [i for i, text in enumerate(texts) if isinstance(text, str) and text.strip()]
        out: dict[str, Any] = {"start": start, "image_rows": image_rows, "text_rows": text_rows}
        if image_rows:
            out["pixel_values"] = self.processor(images=[images[i] for i in image_rows])["pixel_values"]
        if text_rows:
            encoded = self.processor(text=[texts[i] for i in text_rows])
            out["input_ids"], out["attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
        return out


def _decode_image(value: Any, row: int) -> Image.Image | None:
    """A row's image from an undecoded `datasets.Image` value; ValueError naming the row if unreadable."""
    if value is None or isinstance(value, Image.Image):
        return value
    source = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    if source is None:
        return None
    try:
        image = Image.open(source)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        name = value.get("path") or "embedded bytes"
        raise ValueError(f"row {row}: image ({name}) is unreadable, truncated or corrupt ({err})") from err
    return image


def _embed_rows(
    core: torch.nn.Module,
    processor: Any,
    view: Dataset,
    image_column: str | None,
    text_column: str,
    batch_size: int,
    want_logits: bool,
    show_progress: bool,
    num_workers: int = 0,
) -> dict[str, np.ndarray]:
    """Raw per-row float32 arrays (NaN rows where a modality is missing) for one process's rows.

    Decoding and preprocessing run in `num_workers` DataLoader workers (pinned memory on CUDA) while the
    model embeds the previous batch; on CUDA the towers run under bf16 autocast.
    """
    n = len(view)
    dim = int(core.config.embed_dim)
    image_out = np.full((n, dim), np.nan, dtype=np.float32)
    text_out = np.full((n, dim), np.nan, dtype=np.float32)
    logits_out = np.full(n, np.nan, dtype=np.float32)
    device, dtype = _model_device(core), _model_dtype(core)
    loader = torch.utils.data.DataLoader(
        _PreparedBatches(view, processor, image_column, text_column, batch_size), batch_size=None,
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and dtype == torch.float32
                else contextlib.nullcontext())
    for batch in tqdm(loader, desc="Embedding", unit="batch", disable=not show_progress or n == 0):
        start, image_rows, text_rows = batch["start"], batch["image_rows"], batch["text_rows"]
        with torch.inference_mode(), autocast:
            image_raw = text_raw = None
            if image_rows:
                pixel_values = batch["pixel_values"].to(device, dtype, non_blocking=True)
                image_raw = core.get_image_features(pixel_values, normalize=False)
                _check_finite(image_raw, "image", start, image_rows)
                image_out[[start + i for i in image_rows]] = F.normalize(image_raw.float(), dim=-1).cpu().numpy()
            if text_rows:
                text_raw = core.get_text_features(
                    batch["input_ids"].to(device, non_blocking=True), batch["attention_mask"].to(device, non_blocking=True),
                    normalize=False,
                )
                _check_finite(text_raw, "report", start, text_rows)
                text_out[[start + i for i in text_rows]] = F.normalize(text_raw.float(), dim=-1).cpu().numpy()
            both = sorted(set(image_rows) & set(text_rows))
            if want_logits and both:
                pick_image = torch.tensor([image_rows.index(i) for i in both], device=device)
                pick_text = torch.tensor([text_rows.index(i) for i in both], device=device)
                head = core.head_and_loss(image_raw[pick_image], text_raw[pick_text], return_loss=False)
                logits_out[[start + i for i in both]] = head.logits.float().cpu().numpy()
    return {"image_embeds": image_out, "text_embeds": text_out, "logits": logits_out}


def _check_finite(features: torch.Tensor, what: str, start: int, rows: list[int]) -> None:
    # NaN marks a missing modality in the arrays, so a model that outputs NaN must fail loudly here.
    bad = ~torch.isfinite(features).all(dim=-1)
    if bad.any():
        where = [start + rows[i] for i in torch.nonzero(bad).flatten().tolist()[:5]]
        raise ValueError(f"the model returned NaN or infinite {what} embeddings for row(s) {where} (of this process's rows)")


def _gather_shards(local: dict[str, np.ndarray], num_processes: int, total_rows: int) -> dict[str, np.ndarray]:
    """All processes' contiguous shards, concatenated in process order (every process gets the result)."""
    from accelerate.utils import gather_object

    parts = gather_object([local])
    if len(parts) != num_processes:
        raise RuntimeError(f"gathered {len(parts)} shards from {num_processes} processes")
    merged = {key: np.concatenate([part[key] for part in parts]) for key in local}
    rows = merged["text_embeds"].shape[0]
    if rows != total_rows:
        raise RuntimeError(f"gathered {rows} embedded rows but the dataset has {total_rows}")
    return merged


def _fuse_rows(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    fused = np.full_like(image, np.nan)
    both = ~np.isnan(image).any(axis=1) & ~np.isnan(text).any(axis=1)
    if both.any():
        fused[both] = fuse_embeddings(torch.from_numpy(image[both]), torch.from_numpy(text[both])).numpy()
    return fused


def _to_arrow(values: np.ndarray, present: np.ndarray) -> pa.Array:
    mask = pa.array(~present)
    if values.ndim == 1:
        return pa.array(np.where(present, values, 0).astype(np.float32), mask=~present)
    flat = pa.array(np.where(present[:, None], values, 0).astype(np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1], mask=mask)


def _feature_for(values: np.ndarray) -> Any:
    return Value("float32") if values.ndim == 1 else List(Value("float32"), length=values.shape[1])


def rows_with_embeddings(dataset: Dataset, *columns: str) -> Dataset:
    """The rows whose embedding columns are all non-None (an index needs a vector on every row).

    Example:
        >>> with_images = rows_with_embeddings(embedded, "image_embeds", "fused_embeds")  # doctest: +SKIP
    """
    columns = columns or tuple(c for c in EMBEDDING_COLUMNS if c in dataset.column_names)
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset has no column(s) {missing}; columns: {dataset.column_names}")
    keep = np.ones(len(dataset), dtype=bool)
    for column in columns:
        keep &= _present_mask(dataset, column)
    return dataset if keep.all() else dataset.select(np.flatnonzero(keep))


def _present_mask(dataset: Dataset, column: str) -> np.ndarray:
    """True where `column` is not None, read in arrow batches (no decoding, bounded memory)."""
    parts = [
        ~np.asarray(batch.column(column).is_null().to_numpy(zero_copy_only=False), dtype=bool)
        for batch in dataset.with_format("arrow", columns=[column]).iter(batch_size=_HASH_BLOCK_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


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

    Example:
        >>> build_index(embedded, "fused_embeds", "hnsw", ef_search=64)  # doctest: +SKIP
        >>> scores, examples = embedded.get_nearest_examples("fused_embeds", query, k=5)  # doctest: +SKIP
    """
    import faiss

    if kind not in INDEX_KINDS:
        raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
    dimension = _column_dimension(dataset, column)
    nulls = int((~_present_mask(dataset, column)).sum())
    if nulls:
        raise ValueError(
            f"column '{column}' is None on {nulls} of {len(dataset)} rows (studies without that modality); "
            f"index only rows that have it: rows_with_embeddings(dataset, '{column}')"
        )
    n = len(dataset)
    name = index_name or column
    faiss_device = _resolve_faiss_device(kind, device)
    common = dict(column=column, index_name=name, metric_type=faiss.METRIC_INNER_PRODUCT, batch_size=batch_size)
    if kind == "ivf":
        nlist = default_nlist(n) if nlist is None else _positive_int(nlist, "nlist")
        if nlist > n:
            raise ValueError(f"nlist={nlist} IVF cells need at least {nlist} rows to train on; column '{column}' has {n}")
        train = n if train_size is None else _positive_int(train_size, "train_size")
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
            index = faiss.index_factory(dimension, f"HNSW{_positive_int(hnsw_m, 'hnsw_m')}", faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = _positive_int(ef_construction, "ef_construction")
            index.hnsw.efSearch = _positive_int(ef_search, "ef_search")
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
        nprobe = _positive_int(nprobe, "nprobe")
        space.set_index_parameter(index, "nprobe", min(nprobe, spec.params["nlist"]))
    if ef_search is not None:
        if spec.kind != "hnsw":
            raise ValueError(f"ef_search applies to HNSW indexes; index '{index_name}' is {spec.kind}")
        space.set_index_parameter(index, "efSearch", _positive_int(ef_search, "ef_search"))
    return describe_index(dataset, index_name)


def describe_index(dataset: Dataset, index_name: str) -> IndexSpec:
    """Kind, dimension, size, metric and search parameters of an index attached to `dataset`."""
    import faiss

    index = _faiss_index(dataset, index_name)
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
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    required = ("format", "column", "kind", "dimension", "num_rows", "model_fingerprint", "column_sha256")
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not a cxr_mtclip index sidecar (expected format {SIDECAR_FORMAT!r})")
    missing = [key for key in required if key not in meta]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    return meta


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
    k = _positive_int(k, "k")
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


# -- loading a model for retrieval ---------------------------------------------------------------


def load_retrieval_model(
    spec: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    tokenizer_texts: Iterable[str] | None = None,
    work_dir: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, Any]:
    """`(model, processor)` in eval mode from a spec string.

    Specs: a folder saved with `CxrMtClipModel.save_pretrained` (processor beside it or in
    ``<folder>/processor``, else `tokenizer`); ``"tiny"``: `CxrMtClipConfig.tiny` with random
    weights drawn from `seed` and a tokenizer from `tokenizer` or trained on `tokenizer_texts`
    (saved under `work_dir`); anything else: an open_clip backbone (local folder or ``hf-hub:`` id),
    i.e. the zero-shot model with an untrained head.

    Example:
        >>> model, processor = load_retrieval_model("tiny", tokenizer_texts=["no acute disease"], work_dir="tmp")  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    from .configuration_cxr_mtclip import CxrMtClipConfig
    from .modeling_cxr_mtclip import CxrMtClipModel
    from .processing_cxr_mtclip import PROCESSOR_CONFIG_NAME, CxrMtClipProcessor, build_wordpiece_tokenizer

    name = str(spec)
    folder = Path(name).expanduser()
    if name == "tiny":
        config = CxrMtClipConfig.tiny(dropout=0.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CxrMtClipModel(config)
        if tokenizer is not None:
            processor = CxrMtClipProcessor.from_config(config, tokenizer)
        else:
            texts = [t for t in (tokenizer_texts or []) if isinstance(t, str) and t.strip()]
            if not texts or work_dir is None:
                raise ValueError("model 'tiny' needs a tokenizer folder, or tokenizer_texts and a work_dir to train one in")
            vocab = build_wordpiece_tokenizer(texts, Path(work_dir) / "tiny_tokenizer",
                                              vocab_size=int(config.text_config_dict["vocab_size"]))
            processor = CxrMtClipProcessor.from_config(config, vocab)
    elif (folder / "config.json").is_file():
        model = CxrMtClipModel.from_pretrained(str(folder))
        processor_dir = next((d for d in (folder, folder / "processor") if (d / PROCESSOR_CONFIG_NAME).is_file()), None)
        if processor_dir is not None:
            processor = CxrMtClipProcessor.from_pretrained(processor_dir)
        elif tokenizer is not None:
            processor = CxrMtClipProcessor.from_config(model.config, AutoTokenizer.from_pretrained(str(tokenizer)))
        else:
            raise FileNotFoundError(
                f"{folder}: no {PROCESSOR_CONFIG_NAME} beside the model or in {folder / 'processor'}; "
                "save the processor with the model or pass a tokenizer folder"
            )
    else:
        model = CxrMtClipModel.from_backbone(name)
        processor = CxrMtClipProcessor.from_backbone(name)
    if device is not None:
        model.to(device)
    return model.eval(), processor


# -- helpers -------------------------------------------------------------------------------------


class _eval_mode:
    """Put a module in eval mode for a block, then restore its training flag."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.was_training = module.training

    def __enter__(self) -> torch.nn.Module:
        self.module.eval()
        return self.module

    def __exit__(self, *exc: Any) -> None:
        self.module.train(self.was_training)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    core = getattr(model, "module", model)
    for method in ("get_image_features", "get_text_features"):
        if not callable(getattr(core, method, None)):
            raise ValueError(f"model {type(core).__name__} has no {method}(); expected a CxrMtClipModel")
    return core


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


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


def _require_index(dataset: Dataset, index_name: str, query: str, mode: str) -> None:
    if not dataset.is_index_initialized(index_name):
        raise ValueError(
            f"{query} queries in mode '{mode}' search the index '{index_name}', which this dataset does not have "
            f"(attached: {dataset.list_indexes()}); build it with build_index(dataset, '{index_name}')"
        )

