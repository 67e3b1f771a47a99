"""Reading image files of a study: PNG/JPEG bytes kept as they are, DICOM converted to PNG (with its view)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image as PILImage

from .dicom import encode_png, read_dicom_and_view

__all__ = ["IMAGE_SUFFIXES", "is_dicom_file", "is_image_name", "open_image", "read_image_file"]

IMAGE_SUFFIXES = (".dcm.png", ".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix OpenI uses (PNG, JPEG, DICOM)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` name, or the ``DICM`` magic at byte 128 (DICOM files without the suffix)."""
    if path.name.lower().endswith((".dcm", ".dicom")):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def read_image_file(path: Path) -> tuple[bytes, PILImage.Image, str | None]:
    """Read a PNG/JPEG/DICOM file -> (bytes to store, decoded image, DICOM view or None).

    PNG/JPEG bytes are stored unchanged; DICOM is converted with `read_dicom` and stored as PNG.
    Raises FileNotFoundError / ValueError naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    if is_dicom_file(path):
        image, view = read_dicom_and_view(path)
        return encode_png(image), image, view
    data = path.read_bytes()
    try:
        image = PILImage.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ValueError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{path}: unreadable image (0 pixels)")
    return data, image, None



# TEMPORARY stand-in written by i17 against the contract in notes/phase2_common.md, until i16's
# `open_image` lands in main (then this block is dropped in favour of i16's on merge).
def open_image(source, *, name: str | None = None) -> PILImage.Image:  # pragma: no cover - replaced by i16
    """Open a path, bytes, binary file, PIL image or `datasets` Image dict: PIL formats and DICOM (by content)."""
    if isinstance(source, PILImage.Image):
        return source
    if isinstance(source, dict):
        name = name or source.get("path") or "image"
        source = source.get("bytes") or source.get("path")
        if source is None:
            raise ValueError(f"{name}: image dict has neither bytes nor path")
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = source.read()
    name = name or "image"
    if not data:
        raise ValueError(f"{name}: the file is empty")
    if len(data) > 132 and data[128:132] == b"DICM":
        from .dicom import read_dicom

        try:
            return read_dicom(io.BytesIO(data), name=name)
        except ValueError as exc:
            raise ValueError(f"{name}: not a readable DICOM image ({exc})") from exc
    try:
        image = PILImage.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ValueError(f"{name}: not a readable image (expected PNG, JPEG or DICOM): {type(exc).__name__}") from exc
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name}: the image is empty (0 pixels)")
    return image
