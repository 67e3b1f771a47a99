"""The one image opener (`open_image`) and the file reader of the dataset builder (`read_image_file`).

Every path that turns a file into model pixels (dataset decoding in the collator, `embed_dataset`, CLI queries, web
uploads and thumbnails) calls `open_image` and then the image processor's `to_rgb`, so one file gives the same
pixels for training and for search. `open_image` decodes as `datasets.Image` does (PIL, fully loaded, EXIF
orientation applied) and adds DICOM, recognised by content: pydicom's display pipeline (`data/dicom.py`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Union

from PIL import ExifTags, ImageOps
from PIL import Image as PILImage

from .dicom import encode_png, read_dicom_and_view

__all__ = ["IMAGE_SUFFIXES", "ImageSource", "is_dicom_bytes", "is_dicom_file", "is_image_name", "open_image",
           "open_image_and_view", "read_image_file"]

IMAGE_SUFFIXES = (".dcm.png", ".png", ".jpg", ".jpeg", ".dcm", ".dicom")
_DICOM_SUFFIXES = (".dcm", ".dicom")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, PILImage.Image, Mapping[str, Any]]
"""What `open_image` accepts: a path, bytes, a binary file object, a PIL image or a `datasets.Image` dict."""


def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix OpenI uses (PNG, JPEG, DICOM)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_dicom_bytes(head: bytes) -> bool:
    """Whether bytes start like a DICOM file: the ``DICM`` magic at byte 128 (PS3.10 7.1), or, for a dataset
    written without the preamble and the magic, a first element of group 0002 or 0008 (little endian): no image
    format PIL reads starts that way (PNG 0x89 'PNG', JPEG 0xFFD8, TIFF 'II'/'MM', BMP 'BM', GIF 'GIF')."""
    return head[128:132] == b"DICM" or (len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00"))


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` name, or DICOM content (`is_dicom_bytes`) for files without the suffix."""
    if Path(path).name.lower().endswith(_DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return is_dicom_bytes(head)


def _read_source(source: Any, name: str | None) -> tuple[bytes, str]:
    """(the file's bytes, the name errors use) of a path, bytes, file object or `datasets.Image` dict."""
    if isinstance(source, Mapping):
        data, path = source.get("bytes"), source.get("path")
        if data:
            return bytes(data), name or (str(path) if path else "<image bytes>")
        if path:
            return _read_source(path, name)
        raise ValueError(f"{name or 'image'}: an image dict needs 'bytes' or 'path', got {sorted(source)} both empty")
    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{label}: image file not found" if not path.exists() else f"{label}: not a file")
        return path.read_bytes(), label
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<image bytes>"
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"{name or 'image'}: file object must be opened in binary mode, got {type(data).__name__}")
        return bytes(data), name or str(getattr(source, "name", "<image file>"))
    raise ValueError(
        f"{name or 'image'}: cannot open a {type(source).__name__} as an image; expected a path, bytes, a binary "
        "file object, a PIL image or a {'bytes': ..., 'path': ...} dict"
    )


def _decode(source: ImageSource, name: str | None) -> tuple[PILImage.Image, str | None, bool]:
    """(image, DICOM view or None, whether the content was DICOM)."""
    if isinstance(source, PILImage.Image):  # PIL opens lazily: decode now, and orient as a decoded file is
        return _loaded(source, name or getattr(source, "filename", "") or "image"), None, False
    data, label = _read_source(source, name)
    if not data:
        raise ValueError(f"{label}: unreadable image (the file is empty)")
    if is_dicom_bytes(data[:132]):
        return (*read_dicom_and_view(data, name=label), True)
    try:
        image = PILImage.open(io.BytesIO(data))
    except PILImage.UnidentifiedImageError as exc:
        if label.lower().endswith(_DICOM_SUFFIXES):  # pydicom's force=True reads a dataset without any header
            return (*read_dicom_and_view(data, name=label), True)
        raise ValueError(f"{label}: unreadable image (not an image format PIL or pydicom recognises)") from exc
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
        raise ValueError(f"{label}: unreadable image ({_reason(exc)})") from exc
    return _loaded(image, label), None, False


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _loaded(image: PILImage.Image, label: str) -> PILImage.Image:
    """`image` decoded (a truncated or corrupt file fails here) and turned upright as `datasets.Image` does it."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
        raise ValueError(f"{label}: unreadable image ({_reason(exc)})") from exc
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{label}: unreadable image (0 pixels)")
    if image.getexif().get(ExifTags.Base.Orientation) is not None:  # the orientation the camera or scanner recorded
        image = ImageOps.exif_transpose(image)
    return image


def open_image_and_view(source: ImageSource, *, name: str | None = None) -> tuple[PILImage.Image, str | None]:
    """`open_image`, plus the view a DICOM file records ("PA", "AP", "LATERAL"; None otherwise).

    Example:
        >>> image, view = open_image_and_view("CXR1_1_IM-0001-4001.dcm")  # doctest: +SKIP
    """
    image, view, _ = _decode(source, name)
    return image, view


def open_image(source: ImageSource, *, name: str | None = None) -> PILImage.Image:
    """Open an image file as a fully decoded PIL image, in its own mode ("L", "I;16", "RGB", "RGBA", "P", ...).

    `source` is a path, bytes, a binary file object, a PIL image (returned as is) or a `datasets.Image` dict
    (``{"bytes": ..., "path": ...}``). PNG, JPEG and every format PIL reads are decoded as `datasets.Image` decodes
    them (EXIF orientation applied); DICOM, recognised by its content, through pydicom's display pipeline
    (`cxr_mtclip.data.dicom.read_dicom`: 8-bit "L"). Model pixels come from the image processor, whose `to_rgb`
    makes any mode 8-bit RGB. `name` labels errors when the source has no path.

    Raises FileNotFoundError for a missing path, ValueError naming the file for anything unreadable.

    Example:
        >>> from PIL import Image
        >>> buffer = io.BytesIO(); Image.new("I;16", (4, 3)).save(buffer, format="PNG")
        >>> open_image(buffer.getvalue()).size
        (4, 3)
    """
    return open_image_and_view(source, name=name)[0]


def read_image_file(path: Path) -> tuple[bytes, PILImage.Image, str | None]:
    """Read a PNG/JPEG/DICOM file -> (bytes to store, decoded image, DICOM view or None).

    PNG/JPEG bytes are stored unchanged; DICOM (by content) is decoded by `open_image` and stored as PNG, so the
    stored bytes decode to `open_image`'s pixels. Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    data = path.read_bytes()
    image, view, dicom = _decode(data, str(path))
    return (encode_png(image), image, view) if dicom else (data, image, None)
