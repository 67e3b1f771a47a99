"""Embedding columns on a `datasets.Dataset`: image, report and fused (study) embeddings, and the model's fingerprint.

Every embedding is float32 and L2-normalised; a row lacking a modality gets None in the columns that need it.
`model_fingerprint` ties a column (and any index built on it) to the exact weights that produced it.

Precision: gallery (`embed_dataset`) and query (`embed_images`, `embed_reports`) embeddings follow one rule,
`resolve_precision`: ``"auto"`` runs float32 weights under bf16 autocast on CUDA and in float32 elsewhere;
``"float32"`` / ``"bfloat16"`` force one. An index folder records the precision of its gallery and embeds its
queries with the same one. bf16 autocast and float32 agree to a cosine of at least 0.999 per embedding on the
tiny test model (tests/test_index_folder.py::test_float32_and_bf16_autocast_embeddings_agree).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from datasets import Dataset, List, Value
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

from ..data.images import open_image
from ..modeling_cxr_mtclip import fuse_embeddings
from ..utils import eval_mode, positive_int, unwrap_model

__all__ = [
    "EMBEDDING_COLUMNS",
    "FINDING_LOGITS_COLUMN",
    "EMBEDDING_PRECISIONS",
    "FINGERPRINT_COLUMN",
    "LOGITS_COLUMN",
    "embed_dataset",
    "embed_images",
    "embed_reports",
    "embed_studies",
    "embedding_model_fingerprint",
    "model_fingerprint",
    "embedding_autocast",
    "present_mask",
    "report_token_count",
    "resolve_precision",
    "rows_with_embeddings",
]

EMBEDDING_COLUMNS = ("image_embeds", "text_embeds", "fused_embeds")
LOGITS_COLUMN = "logits"
FINDING_LOGITS_COLUMN = "finding_logits"
"""Per-finding logits of the multi-label head (models whose config has `finding_names`), for the head's AUC."""
FINGERPRINT_COLUMN = "embeds_model"
"""Column written by `embed_dataset`: the `model_fingerprint` of the model that made the embeddings."""
# Keys that change when the same weights are saved and reloaded, or with the library version.
_VOLATILE_CONFIG_KEYS = (
    "_name_or_path", "name_or_path", "transformers_version", "_commit_hash", "architectures",
    "_attn_implementation", "_attn_implementation_autoset", "attn_implementation", "dtype", "torch_dtype",
    "output_attentions", "output_hidden_states", "return_dict", "use_return_dict", "use_cache",
)
_HASH_BLOCK_ROWS = 16384
EMBEDDING_PRECISIONS = ("auto", "float32", "bfloat16")


# -- precision -----------------------------------------------------------------------------------


def resolve_precision(device: torch.device | str, dtype: torch.dtype = torch.float32, precision: str = "auto") -> str:
    """The precision embeddings are computed in: ``"bfloat16"`` or the weights' dtype name (``"float32"``...).

    ``"auto"``: bf16 autocast for float32 weights on CUDA, the weights' own dtype otherwise (CPU stays float32).

    Example:
        >>> resolve_precision("cpu"), resolve_precision("cuda")
        ('float32', 'bfloat16')
    """
    if precision not in EMBEDDING_PRECISIONS:
        raise ValueError(f"precision must be one of {EMBEDDING_PRECISIONS}, got {precision!r}")
    device_type = torch.device(device).type
    if precision == "auto":
        return "bfloat16" if device_type == "cuda" and dtype == torch.float32 else str(dtype).removeprefix("torch.")
    if precision == "float32" and dtype != torch.float32:
        raise ValueError(f"precision='float32' but the model's weights are {dtype}; cast the model with .float()")
    return precision


def embedding_autocast(device: torch.device | str, dtype: torch.dtype = torch.float32, precision: str = "auto") -> Any:
    """The autocast context of `resolve_precision` (bf16 autocast on float32 weights, else no autocast).

    Used by `embed_dataset` for the gallery and by `embed_images` / `embed_reports` for queries, so both
    sides of a search are computed alike.
    """
    device = torch.device(device)
    if resolve_precision(device, dtype, precision) == "bfloat16" and dtype == torch.float32:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def report_token_count(processor: Any, report: str) -> int:
    """Tokens of a report as the model's tokenizer counts them (cleaned, with [CLS]/[SEP]), before truncation.

    A report longer than ``processor.max_length`` tokens is cut there when embedded.
    """
    from ..processing_cxr_mtclip import clean_report

    text = clean_report(report, getattr(processor, "clean", "whitespace"))
    return len(processor.tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"])


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
    model = unwrap_model(model)  # DistributedDataParallel / accelerate wrappers
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



# -- embedding -----------------------------------------------------------------------------------


@torch.inference_mode()
def embed_images(
    model: torch.nn.Module, processor: Any, images: Image.Image | Sequence[Image.Image], *, precision: str = "auto"
) -> np.ndarray:
    """L2-normalised float32 image embeddings, shape (n, embed_dim); one image gives (1, embed_dim).

    `precision` follows `resolve_precision` (the rule `embed_dataset` applies to the gallery).

    Example:
        >>> embed_images(model, processor, [image]).shape  # doctest: +SKIP
        (1, 512)
    """
    core = unwrap_model(model, "get_image_features", "get_text_features")
    batch = [images] if isinstance(images, Image.Image) else list(images)
    device, dtype = _model_device(core), _model_dtype(core)
    pixel_values = processor(images=batch)["pixel_values"].to(device, dtype)
    with eval_mode(core), embedding_autocast(device, dtype, precision):
        features = core.get_image_features(pixel_values, normalize=False)
    return F.normalize(features.float(), dim=-1).cpu().numpy()


@torch.inference_mode()
def embed_reports(
    model: torch.nn.Module, processor: Any, reports: str | Sequence[str], *, precision: str = "auto"
) -> np.ndarray:
    """L2-normalised float32 report embeddings, shape (n, embed_dim); `precision` as in `embed_images`."""
    core = unwrap_model(model, "get_image_features", "get_text_features")
    encoded = processor(text=reports)
    with eval_mode(core), embedding_autocast(_model_device(core), _model_dtype(core), precision):
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
    *,
    precision: str = "auto",
) -> np.ndarray:
    """Fused (image + report) study embeddings, shape (n, embed_dim): what the fused index holds."""
    image = torch.from_numpy(embed_images(model, processor, images, precision=precision))
    text = torch.from_numpy(embed_reports(model, processor, reports, precision=precision))
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
    precision: str = "auto",
) -> Dataset:
    """Return `dataset` with float32 L2-normalised embedding columns and the model's fingerprint column.

    Args:
        columns: any of ``image_embeds``, ``text_embeds``, ``fused_embeds`` and ``logits`` (the
            head's abnormal logit on the fused pair, for classification metrics), and ``finding_logits``
            (the multi-label head's per-finding logits; only for a model that has that head).
        accelerator: an `accelerate.Accelerator`; with ``num_processes > 1`` each process embeds its
            contiguous shard and every process gets back the whole dataset, rows in order.
        device: where to run the model (it is moved there); default the accelerator's device, else
            the model's.
        num_workers: DataLoader workers that decode and preprocess batches ahead of the model
            (pinned memory on CUDA).
        precision: `resolve_precision`'s rule (default: bf16 autocast on CUDA, float32 on CPU); queries
            embedded with `embed_images` / `embed_reports` follow the same rule.

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
    allowed = (*EMBEDDING_COLUMNS, LOGITS_COLUMN, FINDING_LOGITS_COLUMN)
    unknown = [c for c in wanted if c not in allowed]
    if unknown or not wanted:
        raise ValueError(f"columns={list(columns)!r}: expected a non-empty subset of {list(allowed)}")
    batch_size = positive_int(batch_size, "batch_size")
    if text_column not in dataset.column_names:
        raise ValueError(f"dataset has no '{text_column}' column (report text); columns: {dataset.column_names}")
    has_images = image_column in dataset.column_names
    if has_images and not isinstance(dataset.features[image_column], ImageFeature):
        raise ValueError(
            f"dataset column '{image_column}' must be a datasets.Image() feature, got {dataset.features[image_column]}"
        )

    wrapped = model if accelerator is None else accelerator.unwrap_model(model)
    core = unwrap_model(wrapped, "get_image_features", "get_text_features")
    if FINDING_LOGITS_COLUMN in wanted and not int(getattr(getattr(core, "config", None), "num_findings", 0) or 0):
        raise ValueError(f"column '{FINDING_LOGITS_COLUMN}' needs a model with a multi-label head (config.finding_names)")
    if accelerator is not None:
        device = accelerator.device
    if device is not None and _model_device(core) != torch.device(device):
        core.to(device)
    view = dataset.select_columns([image_column, text_column] if has_images else [text_column])
    if has_images:  # decode row by row, so that a corrupt image is reported with its row
        view = view.cast_column(image_column, ImageFeature(decode=False))

    num_processes = int(getattr(accelerator, "num_processes", 1) or 1)
    is_main = accelerator is None or bool(getattr(accelerator, "is_local_main_process", True))
    with eval_mode(core):
        if num_processes > 1:
            rank = int(accelerator.process_index)
            shard = view.shard(num_shards=num_processes, index=rank, contiguous=True)
            local = _embed_rows(core, processor, shard, image_column if has_images else None, text_column,
                                batch_size, LOGITS_COLUMN in wanted, show_progress and is_main, num_workers, precision,
                                FINDING_LOGITS_COLUMN in wanted)
            arrays = _gather_shards(local, num_processes, len(dataset))
        else:
            arrays = _embed_rows(core, processor, view, image_column if has_images else None, text_column,
                                 batch_size, LOGITS_COLUMN in wanted, show_progress and is_main, num_workers, precision,
                                 FINDING_LOGITS_COLUMN in wanted)

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
    """A row's image (an undecoded `datasets.Image` value) through `open_image`; ValueError naming the row."""
    if value is None or (isinstance(value, Mapping) and not (value.get("bytes") or value.get("path"))):
        return None
    name = (value.get("path") if isinstance(value, Mapping) else None) or "embedded bytes"
    try:
        return open_image(value, name=name)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"row {row}: image ({name}) is unreadable, truncated or corrupt ({err})") from err


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
    precision: str = "auto",
    want_finding_logits: bool = False,
) -> dict[str, np.ndarray]:
    """Raw per-row float32 arrays (NaN rows where a modality is missing) for one process's rows.

    Decoding and preprocessing run in `num_workers` DataLoader workers (pinned memory on CUDA) while the
    model embeds the previous batch; the towers run under `embedding_autocast(precision)`.
    """
    n = len(view)
    dim = int(core.config.embed_dim)
    image_out = np.full((n, dim), np.nan, dtype=np.float32)
    text_out = np.full((n, dim), np.nan, dtype=np.float32)
    logits_out = np.full(n, np.nan, dtype=np.float32)
    finding_out = np.full((n, int(getattr(core.config, "num_findings", 0) or 0)), np.nan, dtype=np.float32)
    device, dtype = _model_device(core), _model_dtype(core)
    loader = torch.utils.data.DataLoader(
        _PreparedBatches(view, processor, image_column, text_column, batch_size), batch_size=None,
        num_workers=num_workers, pin_memory=device.type == "cuda",
    )
    autocast = embedding_autocast(device, dtype, precision)
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
            if (want_logits or want_finding_logits) and both:
                pick_image = torch.tensor([image_rows.index(i) for i in both], device=device)
                pick_text = torch.tensor([text_rows.index(i) for i in both], device=device)
                head = core.head_and_loss(image_raw[pick_image], text_raw[pick_text], return_loss=False)
                logits_out[[start + i for i in both]] = head.logits.float().cpu().numpy()
                if want_finding_logits:
                    finding_out[[start + i for i in both]] = head.finding_logits.float().cpu().numpy()
    out = {"image_embeds": image_out, "text_embeds": text_out, "logits": logits_out}
    if want_finding_logits:
        out[FINDING_LOGITS_COLUMN] = finding_out
    return out


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
        keep &= present_mask(dataset, column)
    return dataset if keep.all() else dataset.select(np.flatnonzero(keep))


def present_mask(dataset: Dataset, column: str) -> np.ndarray:
    """True where `column` is not None, read in arrow batches (no decoding, bounded memory)."""
    parts = [
        ~np.asarray(batch.column(column).is_null().to_numpy(zero_copy_only=False), dtype=bool)
        for batch in dataset.with_format("arrow", columns=[column]).iter(batch_size=_HASH_BLOCK_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)



def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


