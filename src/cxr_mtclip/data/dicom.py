"""DICOM chest radiographs -> 8-bit grayscale PIL images (Modality LUT, VOI LUT / window, MONOCHROME1)."""

from __future__ import annotations

import io
import os
import re
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

DicomSource = str | os.PathLike | bytes | bytearray | BinaryIO

_LATERAL_CODES = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LEFT LATERAL", "RIGHT LATERAL"}


def _require_pydicom() -> Any:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "reading DICOM files needs pydicom: install the 'dicom' extra (pip install 'cxr-mtclip[dicom]')"
        ) from exc
    return pydicom


def _source_name(source: DicomSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<DICOM bytes>"


def _dcmread(source: DicomSource, name: str, stop_before_pixels: bool = False) -> Any:
    pydicom = _require_pydicom()
    fp: Any = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else source
    try:
        # force=True accepts files without the 128-byte preamble, which some exporters omit.
        return pydicom.dcmread(fp, force=True, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: DICOM file not found") from None
    except Exception as exc:
        raise ValueError(f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def read_dicom_header(path_or_bytes: DicomSource, *, name: str | None = None) -> Any:
    """Read a DICOM header only (no pixel data); fast, for view selection.

    Example:
        >>> ds = read_dicom_header("CXR1_1_IM-0001-4001.dcm")  # doctest: +SKIP
        >>> dicom_view_position(ds)  # doctest: +SKIP
        'PA'
    """
    label = _source_name(path_or_bytes, name)
    ds = _dcmread(path_or_bytes, label, stop_before_pixels=True)
    if not hasattr(ds, "Rows") and not hasattr(ds, "SOPClassUID"):
        raise ValueError(f"{label}: not a DICOM image (no Rows / SOPClassUID element)")
    return ds


def _first_number(value: Any) -> float:
    """A DICOM DS/IS value that may be multi-valued (several windows): take the first."""
    if value is None:
        raise ValueError("missing value")
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if len(value) == 0:
            raise ValueError("empty value")
        value = value[0]
    return float(value)


def _decode_pixels(ds: Any, name: str) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError(f"{name}: DICOM file has no pixel data (PixelData element missing)")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    rows, columns = getattr(ds, "Rows", None), getattr(ds, "Columns", None)
    if rows == 0 or columns == 0:
        raise ValueError(f"{name}: empty image (Rows={rows}, Columns={columns}); expected at least 1 x 1 pixels")
    if syntax is not None and not getattr(syntax, "is_transfer_syntax", True):
        raise ValueError(
            f"{name}: unsupported transfer syntax {syntax} (not a standard DICOM transfer syntax); "
            "expected an uncompressed, RLE, JPEG, JPEG-LS or JPEG 2000 syntax"
        )
    try:
        arr = ds.pixel_array
    except Exception as exc:
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise ValueError(
                f"{name}: compressed pixel data ({syntax.name}, {syntax}) could not be decoded "
                f"({type(exc).__name__}: {exc}); install a pydicom decoder plugin for it "
                "(e.g. pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg, or python-gdcm)"
            ) from exc
        raise ValueError(f"{name}: pixel data could not be decoded ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]  # a multi-frame radiograph: the first frame is the image
    if samples == 3 and arr.ndim == 3:
        return arr
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D grayscale image, got pixel array of shape {arr.shape}")
    return arr


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1]."""
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"window width {width} < 1 is invalid for LINEAR windowing")
    if width == 1:
        return (values >= center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _voi_lut(values: np.ndarray, item: Any, name: str) -> np.ndarray:
    """Apply one VOI LUT Sequence item to [0, 1] (output range from the descriptor's bit depth)."""
    try:
        entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    except Exception as exc:
        raise ValueError(f"{name}: VOI LUT Sequence item has no valid LUTDescriptor") from exc
    entries = entries or 65536  # a descriptor value of 0 means 2**16 entries
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        lut = np.frombuffer(raw, dtype=np.uint8 if bits <= 8 and len(raw) == entries else np.uint16)
    else:
        lut = np.asarray(raw if isinstance(raw, (list, tuple)) or hasattr(raw, "__len__") else [raw])
    lut = lut.astype(np.float64)[:entries]
    if lut.size == 0:
        raise ValueError(f"{name}: VOI LUT Sequence item has empty LUTData")
    index = np.clip(np.round(values).astype(np.int64) - first_mapped, 0, lut.size - 1)
    return lut[index] / float(2**bits - 1)


def _to_unit_range(values: np.ndarray, ds: Any, name: str) -> np.ndarray:
    """VOI stage: a VOI LUT if present, else the first window, else the image's own min-max."""
    voi_seq = getattr(ds, "VOILUTSequence", None)
    if voi_seq:
        return _voi_lut(values, voi_seq[0], name)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center = _first_number(ds.WindowCenter)
            width = _first_number(ds.WindowWidth)
            function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR")
            return _window(values, center, width, function)
        except ValueError:
            pass  # an unusable window (width < 1, empty value) falls back to min-max, as viewers do
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float64)
    return (values - lo) / (hi - lo)


def _square_pixels(image: Image.Image, ds: Any) -> Image.Image:
    """Resample non-square pixels (row spacing != column spacing) so the physical aspect ratio is kept."""
    spacing = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
    ratio = None
    if spacing is not None and len(spacing) == 2:
        row, col = float(spacing[0]), float(spacing[1])
        if row > 0 and col > 0:
            ratio = row / col
    elif getattr(ds, "PixelAspectRatio", None) is not None and len(ds.PixelAspectRatio) == 2:
        vertical, horizontal = (float(v) for v in ds.PixelAspectRatio)
        if vertical > 0 and horizontal > 0:
            ratio = vertical / horizontal
    if ratio is None or abs(ratio - 1.0) < 0.01:
        return image
    width, height = image.size
    return image.resize((width, max(1, round(height * ratio))), Image.Resampling.BILINEAR)


def dicom_to_array(ds: Any, *, name: str = "<DICOM>") -> np.ndarray:
    """A decoded DICOM dataset -> uint8 display array (Modality LUT, VOI, MONOCHROME1 inverted)."""
    from pydicom.pixels import apply_modality_lut

    arr = _decode_pixels(ds, name)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour-encoded radiograph: luminance only, no grey-scale LUTs apply
        rgb = arr.astype(np.float64)
        if rgb.max() > 255:
            rgb = rgb / rgb.max() * 255.0
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.round(grey), 0, 255).astype(np.uint8)
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    unit = _to_unit_range(values, ds, name)
    out = np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)
    # inverting the 8-bit result keeps MONOCHROME1 the exact complement of the same data as MONOCHROME2
    return 255 - out if photometric == "MONOCHROME1" else out


def read_dicom(path_or_bytes: DicomSource, *, name: str | None = None) -> Image.Image:
    """Read a DICOM radiograph as an 8-bit grayscale ("L") PIL image with square pixels.

    Applies the Modality LUT (RescaleSlope / RescaleIntercept or a Modality LUT Sequence), then the
    VOI LUT Sequence if present, else the first WindowCenter / WindowWidth, else the image's min-max;
    inverts MONOCHROME1. `name` labels error messages when bytes are passed.

    Example:
        >>> read_dicom("CXR1_1_IM-0001-4001.dcm").mode  # doctest: +SKIP
        'L'
    """
    return read_dicom_and_view(path_or_bytes, name=name)[0]


def read_dicom_and_view(path_or_bytes: DicomSource, *, name: str | None = None) -> tuple[Image.Image, str | None]:
    """`read_dicom` and `dicom_view_position` from a single read of the file.

    Example:
        >>> image, view = read_dicom_and_view("CXR1_1_IM-0001-4001.dcm")  # doctest: +SKIP
    """
    label = _source_name(path_or_bytes, name)
    ds = _dcmread(path_or_bytes, label)
    image = Image.fromarray(dicom_to_array(ds, name=label), mode="L")
    return _square_pixels(image, ds), dicom_view_position(ds)


def dicom_view_position(ds: Any) -> str | None:
    """The view of a DICOM radiograph: "PA", "AP", "LATERAL" or None when not recorded.

    Looks at ViewPosition (0018,5101), then ViewCodeSequence code meanings, then series / protocol text.

    Example:
        >>> dicom_view_position(read_dicom_header("image.dcm"))  # doctest: +SKIP
        'PA'
    """
    position = str(getattr(ds, "ViewPosition", "") or "").strip().upper()
    if position in {"PA", "AP"}:
        return position
    if position in _LATERAL_CODES:
        return "LATERAL"
    texts = []
    for item in getattr(ds, "ViewCodeSequence", None) or []:
        texts.append(str(getattr(item, "CodeMeaning", "") or ""))
    for keyword in ("SeriesDescription", "ProtocolName", "StudyDescription", "ImageComments"):
        texts.append(str(getattr(ds, keyword, "") or ""))
    for text in texts:
        view = view_from_text(text)
        if view is not None:
            return view
    return None


def view_from_text(text: str) -> str | None:
    """A view named in free text ("postero-anterior", "PA chest", "lateral"): "PA", "AP", "LATERAL" or None."""
    upper = text.upper()
    if re.search(r"POSTERO[- ]?ANTERIOR|\bPA\b", upper):
        return "PA"
    if re.search(r"ANTERO[- ]?POSTERIOR|\bAP\b", upper):
        return "AP"
    if re.search(r"\bLAT(ERAL)?\b", upper):
        return "LATERAL"
    return None


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of a PIL image (fast compression; used to store decoded DICOMs in a dataset)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
