"""CxrMtClipImageProcessor: BiomedCLIP's (open_clip's) eval transform as a transformers image processor.

Resize the short side (bicubic, torchvision's ``Resize(size)`` rule: the long side is truncated with ``int``),
centre-crop (torchvision's ``CenterCrop`` offsets), scale to [0, 1], normalise with the stored mean and std. Any
PIL mode is first made 8-bit RGB by `to_rgb` (16-bit and float greys are min-max scaled, alpha is composited on
black), which is where it departs from open_clip's transform (that one resizes first and then calls
``convert("RGB")``, which clips 16-bit greys); on RGB input the two agree to float precision.

This is the one place the image size and normalisation are stored (``preprocessor`` section of the processor's
``processor_config.json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .registry import CLIP_MEAN, CLIP_STD

__all__ = ["CxrMtClipImageProcessor", "to_rgb"]

_RESAMPLE = {int(Image.Resampling.BICUBIC): Image.Resampling.BICUBIC, int(Image.Resampling.BILINEAR): Image.Resampling.BILINEAR}
# Keys transformers itself writes into (or passes with) an image processor's dict.
_BOOKKEEPING = {"image_processor_type", "processor_class", "auto_map", "_processor_class"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit and float greys are min-max scaled, alpha is dropped onto black.

    Example:
        >>> to_rgb(Image.new("I;16", (4, 4))).mode
        'RGB'
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low) * 255.0
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _edge(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"CxrMtClipImageProcessor.{name} must be a positive int, got {value!r}")
    return int(value)


def _size_dict(size: Any) -> dict[str, int]:
    edge = size.get("shortest_edge") if isinstance(size, Mapping) else size
    if isinstance(size, Mapping) and set(size) != {"shortest_edge"}:
        raise ValueError(f"CxrMtClipImageProcessor.size must be an int or {{'shortest_edge': int}}, got {size!r}")
    return {"shortest_edge": _edge(edge, "size")}


def _crop_dict(crop_size: Any) -> dict[str, int]:
    if isinstance(crop_size, Mapping):
        if set(crop_size) != {"height", "width"}:
            raise ValueError(f"CxrMtClipImageProcessor.crop_size must be an int or {{'height', 'width'}}, got {crop_size!r}")
        return {"height": _edge(crop_size["height"], "crop_size"), "width": _edge(crop_size["width"], "crop_size")}
    edge = _edge(crop_size, "crop_size")
    return {"height": edge, "width": edge}


def _channels(values: Any, name: str, positive: bool = False) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"CxrMtClipImageProcessor.{name} must be 3 numbers, got {values!r}") from err
    if len(numbers) != 3 or (positive and min(numbers) <= 0):
        raise ValueError(f"CxrMtClipImageProcessor.{name} must be 3 numbers{' > 0' if positive else ''}, got {values!r}")
    return numbers


class CxrMtClipImageProcessor(BaseImageProcessor):
    """Image -> ``pixel_values`` (float32, (3, crop height, crop width)), as open_clip's eval transform does it.

    Args:
        size: the short side after resizing (``{"shortest_edge": n}`` or n); BiomedCLIP: 224.
        crop_size: the centre crop (``{"height": h, "width": w}`` or n); default: a square of `size`.
        resample: PIL resampling filter of the resize (bicubic, as open_clip).
        image_mean, image_std: per-channel normalisation after scaling to [0, 1] (OpenAI CLIP's by default).

    Example:
        >>> processor = CxrMtClipImageProcessor(size=64)
        >>> processor(Image.new("L", (80, 70)))["pixel_values"].shape
        torch.Size([1, 3, 64, 64])
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int | Mapping[str, int] = 224,
        crop_size: int | Mapping[str, int] | None = None,
        resample: int = int(Image.Resampling.BICUBIC),
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - _BOOKKEEPING
        if unknown:
            raise ValueError(
                f"CxrMtClipImageProcessor got unknown field(s) {sorted(unknown)}; expected size, crop_size, "
                "resample, image_mean, image_std"
            )
        super().__init__(**{k: v for k, v in kwargs.items() if k == "processor_class"})
        self.size = _size_dict(size)
        self.crop_size = _crop_dict(self.size["shortest_edge"] if crop_size is None else crop_size)
        if int(resample) not in _RESAMPLE:
            raise ValueError(f"CxrMtClipImageProcessor.resample must be bicubic (3) or bilinear (2), got {resample!r}")
        self.resample = int(resample)
        self.image_mean = _channels(image_mean, "image_mean")
        self.image_std = _channels(image_std, "image_std", positive=True)

    def resize(self, image: Image.Image) -> Image.Image:
        """Resize the short side to ``size`` with torchvision's rule (``new_long = int(size * long / short)``)."""
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size["shortest_edge"], int(self.size["shortest_edge"] * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_width, new_height) == (width, height):
            return image
        return image.resize((new_width, new_height), _RESAMPLE[self.resample])

    def center_crop(self, image: Image.Image) -> Image.Image:
        """Crop ``crop_size`` from the centre with torchvision's offsets (zero padding when the image is smaller)."""
        width, height = image.size
        crop_h, crop_w = self.crop_size["height"], self.crop_size["width"]
        top = -((crop_h - height) // 2) if crop_h > height else int(round((height - crop_h) / 2.0))
        left = -((crop_w - width) // 2) if crop_w > width else int(round((width - crop_w) / 2.0))
        return image.crop((left, top, left + crop_w, top + crop_h))

    def transform(self, image: Image.Image) -> torch.Tensor:
        """One image -> a (3, crop height, crop width) float32 tensor; ValueError for a non-image, empty or corrupt one."""
        if not isinstance(image, Image.Image):
            raise ValueError(f"expected a PIL.Image, got {type(image).__name__}")
        if image.width == 0 or image.height == 0:
            raise ValueError("image is empty (0 pixels wide or high)")
        try:
            # PIL decodes lazily: a truncated or corrupt file fails here, on first access to its pixels
            image = to_rgb(image)
        except (OSError, SyntaxError, Image.DecompressionBombError) as err:
            where = getattr(image, "filename", "") or "image"
            raise ValueError(f"{where}: cannot decode the pixels, the file is truncated or corrupt ({err})") from err
        image = self.center_crop(self.resize(image))
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1)
        return (tensor - mean) / std

    def preprocess(self, images: Image.Image | Iterable[Image.Image], return_tensors: str | None = "pt",
                   **kwargs: Any) -> BatchFeature:
        """A PIL image or a sequence of them -> ``BatchFeature(pixel_values=(n, 3, h, w) float32 tensor)``.

        Raises ValueError naming the image (its position) that is not a PIL image, empty or corrupt.
        """
        if kwargs:
            raise ValueError(f"CxrMtClipImageProcessor.preprocess got unknown argument(s) {sorted(kwargs)}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt'")
        batch = [images] if isinstance(images, Image.Image) else list(images)
        if not batch:
            raise ValueError("no images given")
        tensors = []
        for i, image in enumerate(batch):
            try:
                tensors.append(self.transform(image))
            except ValueError as err:
                raise ValueError(f"image {i}: {err}") from err
        return BatchFeature({"pixel_values": torch.stack(tensors)})

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)
