"""Frozen-trunk feature cache: run the frozen blocks once per study, then train the rest from disk.

With the paper's freeze policy only the last block of each tower trains. Without augmentation the
input of that block is a pure function of the study, so recomputing the frozen part every epoch is
wasted work. `build_feature_cache` runs each tower's frozen part once (`torch.inference_mode`, eval
mode) and stores, per study, the hidden states at the first trainable block:

* ``image_hidden.npy``: ``(num_rows, num_tokens, width)``; every image has the same token count.
* ``text_hidden.npy``: ``(num_text_tokens, width)``, the real (unpadded) tokens of every report one after
  another; ``text_offsets.npy`` (``num_rows + 1``) says where each report starts. Padding is added back
  per batch by `CachedFeatureCollator`, to the batch's longest report.
* ``labels.npy`` (int64) and ``manifest.json`` (fingerprint, shapes, dtype, start blocks, row count,
  dataset fingerprint).

Arrays are `.npy` files opened memory-mapped, so a DataLoader worker reads only the rows it needs.
Storage dtype is float16 by default (half the size of float32, ample for hidden states of a
LayerNorm-ed transformer); bfloat16 is stored as its raw 16-bit pattern (``uint16``, numpy has no
bfloat16) and read back as `torch.bfloat16`; float32 gives bit-exact equivalence with the uncached path.

A cache is tied to the model and processor that built it by `cache_fingerprint`; `load_feature_cache`
refuses one whose fingerprint differs, naming the part that changed, so a stale cache is never used.
The weights of the trainable blocks, the head and the loss weights are not part of the fingerprint:
training changes them and the cache stays valid.

Training from a cache (`CachedCxrMtClipModel`, `prepare_cached_training`) is in `cxr_mtclip.training.cached_model`.

Example:
    >>> cache = build_feature_cache(model, processor, splits["train"], "cache/train")  # doctest: +SKIP
    >>> trainer = CxrMtClipTrainer(model=CachedCxrMtClipModel(model), train_dataset=cache,
    ...                            data_collator=CachedFeatureCollator(), args=args)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from ..atomic import atomic_directory
from ..modeling_cxr_mtclip import CxrMtClipModel
from ..utils import eval_mode, read_json, unwrap_model

CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
IMAGE_FILE = "image_hidden.npy"
TEXT_FILE = "text_hidden.npy"
OFFSETS_FILE = "text_offsets.npy"
LABELS_FILE = "labels.npy"

# torch dtype name -> (torch dtype, numpy dtype it is stored as)
STORAGE_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float16": (torch.float16, np.dtype(np.float16)),
    "bfloat16": (torch.bfloat16, np.dtype(np.uint16)),
    "float32": (torch.float32, np.dtype(np.float32)),
}

# What a model needs for its frozen trunk to be cached and trained from: a CxrMtClipModel's backbone and head.
_MODEL_PARTS = ("backbone", "head_and_loss")

# Parts of a timm ViT trunk / a BERT model that sit after the blocks: the cached states never depend on them.
_VISION_AFTER_BLOCKS = {"norm", "fc_norm", "head", "head_drop", "attn_pool"}
_TEXT_AFTER_BLOCKS = {"pooler"}


# -- fingerprint ----------------------------------------------------------------------------------


def _upstream_tensors(model: CxrMtClipModel) -> dict[str, tuple[torch.Tensor, bool]]:
    """Every parameter and buffer the cached hidden states depend on: stem + blocks before the first trainable one.

    Returns name -> (tensor, requires_grad). Errs on the side of including a tensor: only the blocks
    from the first trainable one on and the known parts after the blocks are left out.
    """
    visual, text = model.backbone.visual, model.backbone.text
    image_start, text_start = visual.first_trainable_block(), text.first_trainable_block()
    out: dict[str, tuple[torch.Tensor, bool]] = {}

    def keep(prefix: str, module: nn.Module, blocks_prefix: str, start: int, after: set[str]) -> None:
        named = list(module.named_parameters()) + list(module.named_buffers())
        for name, tensor in named:
            if name.split(".")[0] in after:
                continue
            if name.startswith(blocks_prefix):
                index = int(name[len(blocks_prefix):].split(".")[0])
                if index >= start:
                    continue
            out[f"{prefix}{name}"] = (tensor, bool(getattr(tensor, "requires_grad", False)))

    keep("backbone.visual.trunk.", visual.trunk, "blocks.", image_start, _VISION_AFTER_BLOCKS)
    keep("backbone.text.transformer.", text.transformer, "encoder.layer.", text_start, _TEXT_AFTER_BLOCKS)
    return out


def _tensor_digest(tensors: Mapping[str, tuple[torch.Tensor, bool]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name][0].detach().to("cpu").contiguous()
        digest.update(f"\n{name}|{value.dtype}|{tuple(value.shape)}\n".encode())
        digest.update(memoryview(value.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _json_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _tokenizer_digest(tokenizer: Any) -> str:
    """Vocabulary, special tokens and casing: what decides the token ids of a report."""
    init = getattr(tokenizer, "init_kwargs", {}) or {}
    return _json_digest(
        {
            "class": type(tokenizer).__name__,
            "vocab": sorted(tokenizer.get_vocab().items()),
            "special_tokens": {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())},
            "do_lower_case": init.get("do_lower_case"),
            "strip_accents": init.get("strip_accents"),
            "tokenize_chinese_chars": init.get("tokenize_chinese_chars"),
        }
    )


def fingerprint_parts(model: nn.Module, processor: Any) -> dict[str, str]:
    """The named sha256 digests `cache_fingerprint` combines (kept in the manifest to say what changed)."""
    core = unwrap_model(model, *_MODEL_PARTS)
    visual, text = core.backbone.visual, core.backbone.text
    return {
        "format_version": str(CACHE_FORMAT_VERSION),
        "frozen_weights": _tensor_digest(_upstream_tensors(core)),
        "architecture": _json_digest(
            {"open_clip_config": core.config.open_clip_config, "text_config": core.config.text_config_dict}
        ),
        "start_blocks": f"image={visual.first_trainable_block()},text={text.first_trainable_block()}",
        "preprocessing": _json_digest(
            {
                "image_processor": processor.image_processor.to_dict(),
                "max_length": int(processor.max_length),
                "clean": processor.clean,
            }
        ),
        "tokenizer": _tokenizer_digest(processor.tokenizer),
    }


def cache_fingerprint(model: nn.Module, processor: Any) -> str:
    """``sha256:<hex>`` over the frozen weights, the architecture, the start blocks and the preprocessing.

    Covers every parameter/buffer of the frozen stem and blocks before the first trainable block, the
    open_clip and BERT configs, the trainable-block indices, the image processor's settings (resize, crop,
    mean/std), the processor's max_length and text cleaning, and the tokenizer's vocabulary. Trainable weights and loss settings are not covered.

    Example:
        >>> fp = cache_fingerprint(model, processor)  # doctest: +SKIP
        >>> fp.startswith("sha256:")  # doctest: +SKIP
        True
    """
    return "sha256:" + _json_digest(fingerprint_parts(model, processor))


# -- the cache on disk ----------------------------------------------------------------------------


def _storage_name(dtype: torch.dtype | str) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in STORAGE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of torch.float16, torch.bfloat16, torch.float32")
    return name


def _to_storage(hidden: torch.Tensor, name: str) -> np.ndarray:
    torch_dtype, _ = STORAGE_DTYPES[name]
    value = hidden.detach().to("cpu", torch_dtype).contiguous()
    if name == "bfloat16":
        return value.view(torch.int16).numpy().view(np.uint16)
    return value.numpy()


def _from_storage(array: np.ndarray, name: str) -> torch.Tensor:
    array = np.array(array, copy=True)  # out of the memory map: a private, writable copy
    if name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class FeatureCache(TorchDataset):
    """A built cache: a torch Dataset of ``{"image_hidden", "text_hidden", "labels"}`` rows, memory-mapped.

    Use `load_feature_cache` (checks the fingerprint) rather than constructing it directly. Safe to
    hand to a DataLoader with workers: the memory maps are reopened in each worker, never pickled.
    """

    def __init__(self, cache_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def storage_dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.manifest["dtype"]][0]

    @property
    def image_start(self) -> int:
        return int(self.manifest["image"]["start_block"])

    @property
    def text_start(self) -> int:
        return int(self.manifest["text"]["start_block"])

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self._open()["labels"])

    @property
    def text_lengths(self) -> np.ndarray:
        return np.diff(self._open()["offsets"])

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = {}
            for key, name in (("image", IMAGE_FILE), ("text", TEXT_FILE), ("offsets", OFFSETS_FILE), ("labels", LABELS_FILE)):
                path = self.cache_dir / name
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: missing from the feature cache (rebuild it)")
                arrays[key] = np.load(path, mmap_mode="r")
            self._arrays = arrays
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return int(self.manifest["num_rows"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"row {index} out of range for a feature cache of {n} rows")
        index %= n
        arrays, name = self._open(), self.manifest["dtype"]
        begin, end = int(arrays["offsets"][index]), int(arrays["offsets"][index + 1])
        return {
            "image_hidden": _from_storage(arrays["image"][index], name),
            "text_hidden": _from_storage(arrays["text"][begin:end], name),
            "labels": torch.tensor(int(arrays["labels"][index]), dtype=torch.long),
        }

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.cache_dir)!r}, rows={len(self)}, dtype={self.manifest['dtype']}, "
            f"image={tuple(self.manifest['image']['shape'][1:])}@block{self.image_start}, "
            f"text_tokens={self.manifest['text']['num_tokens']}@block{self.text_start})"
        )


@dataclass
class CachedFeatureCollator:
    """Stack cached rows into a batch: image states stacked, report states zero-padded to the batch's longest.

    Returns ``image_hidden`` (B, T, D), ``text_hidden`` (B, L, D), ``attention_mask`` (B, L) and
    ``labels`` (B,), in the cache's storage dtype (`forward_from_cache` casts to the model's).

    Args:
        pad_to_multiple_of: round the padded report length up (e.g. 8 for tensor cores on GPU).
    """

    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("CachedFeatureCollator got an empty batch")
        lengths = [int(row["text_hidden"].shape[0]) for row in rows]
        longest = max(lengths)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        first = rows[0]["text_hidden"]
        text = first.new_zeros((len(rows), longest, first.shape[-1]))
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, (row, length) in enumerate(zip(rows, lengths)):
            text[i, :length] = row["text_hidden"]
            mask[i, :length] = 1
        batch = {
            "image_hidden": torch.stack([row["image_hidden"] for row in rows]),
            "text_hidden": text,
            "attention_mask": mask,
        }
        if all("labels" in row for row in rows):
            batch["labels"] = torch.stack([torch.as_tensor(row["labels"], dtype=torch.long) for row in rows])
        return batch


def _view(dataset: Any, columns: Sequence[str]) -> Any:
    """Only `columns` of a `datasets.Dataset` (so other columns, images above all, are never decoded)."""
    return dataset.select_columns(list(columns)) if hasattr(dataset, "select_columns") else dataset


def _rows(dataset: Any, start: int, end: int, columns: Sequence[str]) -> dict[str, list[Any]]:
    """Rows [start, end) of a `datasets.Dataset` (column-wise slice) or a sequence of dicts, as column lists."""
    if hasattr(dataset, "column_names"):
        batch = dataset[start:end]
        return {c: list(batch[c]) for c in columns}
    rows = [dataset[i] for i in range(start, end)]
    return {c: [row[c] for row in rows] for c in columns}


def _column_names(dataset: Any) -> list[str] | None:
    if hasattr(dataset, "column_names"):
        return list(dataset.column_names)
    if len(dataset) and isinstance(dataset[0], Mapping):
        return list(dataset[0].keys())
    return None


def build_feature_cache(
    model: nn.Module,
    processor: Any,
    dataset: Any,
    cache_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | str = torch.float16,
    batch_size: int = 32,
    image_column: str = "image",
    text_column: str = "report",
    label_column: str = "label",
    show_progress: bool = True,
) -> FeatureCache:
    """Run the frozen trunks once per study and write their outputs to `cache_dir` (atomically).

    Args:
        dataset: a `datasets.Dataset` (or a sequence of dicts) with PIL images, report strings and 0/1 labels.
        dtype: storage dtype: torch.float16 (default), torch.bfloat16 (stored as uint16) or torch.float32.

    The frozen part runs in eval mode under `torch.inference_mode`, in the model's dtype and on its
    device. An existing folder is replaced only once the new cache is complete; an error midway leaves
    nothing behind (and an older cache untouched).

    Example:
        >>> cache = build_feature_cache(model, processor, splits["train"], "cache/train")  # doctest: +SKIP
        >>> len(cache) == splits["train"].num_rows  # doctest: +SKIP
        True
    """
    core = unwrap_model(model, *_MODEL_PARTS)
    name = _storage_name(dtype)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    num_rows = len(dataset)
    if num_rows == 0:
        raise ValueError("dataset is empty: nothing to cache")
    columns = _column_names(dataset)
    if columns is not None:
        missing = [c for c in (image_column, text_column, label_column) if c not in columns]
        if missing:
            raise ValueError(f"dataset has no column(s) {missing} (image, report, label); columns: {columns}")
    trains = sorted(n for n, (_, grad) in _upstream_tensors(core).items() if grad)
    if trains:
        raise ValueError(
            f"nothing frozen to cache: {trains[0]} (and {len(trains) - 1} more) trains, so the input of the first "
            "trainable block changes during training; cache only with a frozen stem (trainable_*_blocks >= 0)"
        )
    parts = fingerprint_parts(core, processor)
    fingerprint = "sha256:" + _json_digest(parts)
    visual, text = core.backbone.visual, core.backbone.text
    image_start, text_start = visual.first_trainable_block(), text.first_trainable_block()
    param = next(visual.parameters())
    device, model_dtype = param.device, param.dtype

    # Reports first (cheap): validates every row before the expensive pass and sizes the token array.
    lengths = np.zeros(num_rows, dtype=np.int64)
    labels = np.zeros(num_rows, dtype=np.int64)
    text_view = _view(dataset, [text_column, label_column])
    for start in range(0, num_rows, 256):
        rows = _rows(text_view, start, min(start + 256, num_rows), [text_column, label_column])
        try:
            encoded = processor.process_text(rows[text_column])
        except ValueError as err:
            raise ValueError(f"dataset rows {start}..{start + len(rows[text_column]) - 1}, column '{text_column}': {err}") from err
        lengths[start : start + len(rows[text_column])] = encoded["attention_mask"].sum(1).numpy()
        for i, label in enumerate(rows[label_column]):
            if label not in (0, 1):
                raise ValueError(f"dataset row {start + i}, column '{label_column}': expected 0 or 1, got {label!r}")
            labels[start + i] = int(label)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    starts: Any = range(0, num_rows, batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Caching frozen features", unit="batch")
    with atomic_directory(cache_dir) as tmp, eval_mode(core), torch.inference_mode():
        image_array: np.ndarray | None = None
        text_array: np.ndarray | None = None
        view = _view(dataset, [image_column, text_column])
        for start in starts:
            end = min(start + batch_size, num_rows)
            rows = _rows(view, start, end, [image_column, text_column])
            try:
                pixel_values = processor.process_images(rows[image_column])
            except ValueError as err:
                raise ValueError(f"dataset rows {start}..{end - 1}, column '{image_column}': {err}") from err
            encoded = processor.process_text(rows[text_column])
            image_hidden, got_image_start = visual.frozen_trunk(pixel_values.to(device, model_dtype))
            input_ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
            text_hidden, got_text_start = text.frozen_trunk(input_ids, mask)
            if (got_image_start, got_text_start) != (image_start, text_start):
                raise RuntimeError("the freeze policy changed while the cache was being built")
            if image_array is None:
                image_array = np.lib.format.open_memmap(
                    tmp / IMAGE_FILE, mode="w+", dtype=STORAGE_DTYPES[name][1], shape=(num_rows, *image_hidden.shape[1:])
                )
                text_array = np.lib.format.open_memmap(
                    tmp / TEXT_FILE, mode="w+", dtype=STORAGE_DTYPES[name][1], shape=(int(offsets[-1]), text_hidden.shape[-1])
                )
            image_array[start:end] = _to_storage(image_hidden, name)
            batch_mask = mask.bool()
            if not torch.equal(batch_mask.sum(1).cpu(), torch.from_numpy(lengths[start:end])):
                raise RuntimeError("report token counts changed between the two passes over the dataset")
            text_array[offsets[start] : offsets[end]] = _to_storage(text_hidden[batch_mask], name)
        image_array.flush()
        text_array.flush()
        image_shape, text_width = list(image_array.shape), int(text_array.shape[-1])
        del image_array, text_array
        np.save(tmp / OFFSETS_FILE, offsets)
        np.save(tmp / LABELS_FILE, labels)
        manifest = {
            "format_version": CACHE_FORMAT_VERSION,
            "fingerprint": fingerprint,
            "fingerprint_parts": parts,
            "num_rows": num_rows,
            "dtype": name,
            "numpy_dtype": STORAGE_DTYPES[name][1].name,
            "image": {"file": IMAGE_FILE, "shape": image_shape, "start_block": image_start},
            "text": {
                "file": TEXT_FILE,
                "offsets_file": OFFSETS_FILE,
                "num_tokens": int(offsets[-1]),
                "width": text_width,
                "start_block": text_start,
                "max_length": int(processor.max_length),
                "max_tokens_per_report": int(lengths.max()),
            },
            "labels_file": LABELS_FILE,
            "columns": {"image": image_column, "text": text_column, "label": label_column},
            "dataset_fingerprint": getattr(dataset, "_fingerprint", None),
            "model_dtype": str(model_dtype).removeprefix("torch."),
            "torch_version": torch.__version__,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return _open_checked(Path(cache_dir), manifest)


def load_feature_cache(
    cache_dir: str | os.PathLike, model: nn.Module, processor: Any, *, dataset: Any = None
) -> FeatureCache:
    """Open a cache written by `build_feature_cache`; ValueError if it was built for another model/processor.

    Args:
        dataset: when given, its row count (and `datasets` fingerprint, when both sides have one) must
            match the dataset the cache was built from.

    Example:
        >>> cache = load_feature_cache("cache/train", model, processor)  # doctest: +SKIP
    """
    folder = Path(cache_dir)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: missing; {folder} is not a feature cache written by build_feature_cache")
    manifest = read_json(manifest_path)
    if manifest.get("format_version") != CACHE_FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r}, this version of cxr_mtclip "
            f"reads {CACHE_FORMAT_VERSION}; rebuild the cache"
        )
    parts = fingerprint_parts(model, processor)
    expected = "sha256:" + _json_digest(parts)
    if manifest.get("fingerprint") != expected:
        stored = manifest.get("fingerprint_parts") or {}
        changed = [key for key in parts if stored.get(key) != parts[key]] or ["fingerprint"]
        raise ValueError(
            f"{manifest_path}: stale feature cache: built with fingerprint {str(manifest.get('fingerprint'))[:19]}..., "
            f"the model and processor now give {expected[:19]}...; changed: {', '.join(changed)}. Rebuild it with "
            "build_feature_cache"
        )
    if manifest.get("dtype") not in STORAGE_DTYPES:
        raise ValueError(f"{manifest_path}: dtype {manifest.get('dtype')!r}, expected one of {sorted(STORAGE_DTYPES)}")
    if dataset is not None:
        if len(dataset) != manifest["num_rows"]:
            raise ValueError(f"{manifest_path}: built from {manifest['num_rows']} rows, the dataset given has {len(dataset)}")
        theirs, ours = getattr(dataset, "_fingerprint", None), manifest.get("dataset_fingerprint")
        if theirs and ours and theirs != ours:
            raise ValueError(f"{manifest_path}: built from dataset fingerprint {ours}, the dataset given has {theirs}")
    return _open_checked(folder, manifest)


def _open_checked(folder: Path, manifest: dict[str, Any]) -> FeatureCache:
    """Open the arrays and check them against the manifest (shapes, token count, dtype)."""
    cache = FeatureCache(folder, manifest)
    arrays = cache._open()
    if list(arrays["image"].shape) != list(manifest["image"]["shape"]):
        raise ValueError(f"{folder / IMAGE_FILE}: shape {list(arrays['image'].shape)}, manifest says {manifest['image']['shape']}")
    if arrays["text"].shape[0] != manifest["text"]["num_tokens"] or arrays["offsets"].shape[0] != manifest["num_rows"] + 1:
        raise ValueError(f"{folder / TEXT_FILE}: token count or offsets disagree with {folder / MANIFEST_NAME}")
    if arrays["image"].dtype != STORAGE_DTYPES[manifest["dtype"]][1]:
        raise ValueError(f"{folder / IMAGE_FILE}: dtype {arrays['image'].dtype}, manifest says {manifest['dtype']}")
    return cache


def load_or_build_feature_cache(
    model: nn.Module,
    processor: Any,
    dataset: Any,
    cache_dir: str | os.PathLike,
    *,
    rebuild_stale: bool = False,
    **build_kwargs: Any,
) -> FeatureCache:
    """Load the cache in `cache_dir` if it matches model, processor and dataset; build it if absent.

    A stale cache raises (as `load_feature_cache`) unless ``rebuild_stale=True``, which rebuilds it.
    """
    if (Path(cache_dir) / MANIFEST_NAME).is_file():
        try:
            return load_feature_cache(cache_dir, model, processor, dataset=dataset)
        except ValueError:
            if not rebuild_stale:
                raise
    return build_feature_cache(model, processor, dataset, cache_dir, **build_kwargs)



__all__ = [
    "CACHE_FORMAT_VERSION",
    "MANIFEST_NAME",
    "CachedFeatureCollator",
    "FeatureCache",
    "build_feature_cache",
    "cache_fingerprint",
    "fingerprint_parts",
    "load_feature_cache",
    "load_or_build_feature_cache",
]
