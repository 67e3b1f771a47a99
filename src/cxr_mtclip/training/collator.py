"""CxrMtClipDataCollator: dataset rows (image, report, label) -> the model's input tensors, through the processor."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.images import open_image
from ..processing_cxr_mtclip import CxrMtClipProcessor

__all__ = ["CxrMtClipDataCollator", "undecoded_images"]


@dataclass
class CxrMtClipDataCollator:
    """Turn a list of dataset rows (image, report, label) into `pixel_values`, `input_ids`, `attention_mask`, `labels`.

    Images may be PIL images, `{"bytes": ..., "path": ...}` dicts (an undecoded `datasets.Image`), file paths
    or bytes, all opened by `cxr_mtclip.data.images.open_image` (PNG, JPEG, DICOM, ...). Rows without the label column give a batch without `labels`.

    Example:
        >>> collator = CxrMtClipDataCollator(processor)  # doctest: +SKIP
        >>> batch = collator([{"image": img, "report": "Normal chest.", "label": 0}])  # doctest: +SKIP
    """

    processor: CxrMtClipProcessor
    image_column: str = "image"
    text_column: str = "report"
    label_column: str = "label"

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("CxrMtClipDataCollator got an empty batch")
        for column in (self.image_column, self.text_column):
            if column not in rows[0]:
                raise ValueError(
                    f"dataset rows have no {column!r} column (columns: {sorted(rows[0])}); "
                    "set image_column/text_column to the right names"
                )
        images = [_as_pil(row[self.image_column], row, self.image_column) for row in rows]
        texts = [row[self.text_column] for row in rows]
        labels = None
        if self.label_column in rows[0]:
            labels = [_as_label(row[self.label_column], row, self.label_column) for row in rows]
        return dict(self.processor(images=images, text=texts, labels=labels))


def _row_name(row: Mapping[str, Any]) -> str:
    return f"row uid={row['uid']!r}" if "uid" in row else "a row"


def _as_pil(value: Any, row: Mapping[str, Any], column: str) -> Image.Image:
    """A row's image through `open_image` (the opener every path shares), errors naming the row."""
    if not isinstance(value, (Image.Image, Mapping, str, os.PathLike, bytes, bytearray)):
        raise ValueError(f"{_row_name(row)} has no usable image in column {column!r} (got {type(value).__name__})")
    if isinstance(value, Mapping) and not (value.get("bytes") or value.get("path")):
        raise ValueError(f"{_row_name(row)} has no usable image in column {column!r} (empty 'bytes' and 'path')")
    try:
        return open_image(value)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (image of {_row_name(row)})") from err
    except ValueError as err:
        raise ValueError(
            f"{_row_name(row)}: column {column!r} holds an unreadable image, truncated or corrupt ({err})"
        ) from err


def undecoded_images(dataset: Any, column: str) -> Any:
    """The dataset with its image column left as bytes: the collator decodes them and names a corrupt row."""
    import datasets

    if dataset is None or column not in dataset.column_names:
        return dataset
    feature = dataset.features[column]
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _as_label(value: Any, row: Mapping[str, Any], column: str) -> int:
    if isinstance(value, (bool, np.bool_)) or value not in (0, 1):
        raise ValueError(f"{_row_name(row)}: column {column!r} must be 0 (normal) or 1 (abnormal), got {value!r}")
    return int(value)

