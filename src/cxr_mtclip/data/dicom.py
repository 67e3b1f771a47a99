"""DICOM chest radiographs -> 8-bit greyscale PIL images, displayed through pydicom's own LUT functions.

The grayscale display pipeline of PS3.4 N.2: stored values -> Modality LUT (`pydicom.pixels.apply_modality_lut`:
Rescale Slope / Intercept or the Modality LUT Sequence) -> VOI LUT (`pydicom.pixels.apply_voi_lut`: the VOI LUT
Sequence, else Window Center / Width with VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID) -> scaled to 0-255 ->
polarity (MONOCHROME1 or Presentation LUT Shape INVERSE shows the lowest value white).

pydicom's functions follow the standard to the letter; scanners do not. So the elements those functions read are
first copied into a small standard-conforming dataset (`display_header`), with the header quirks found in real
archives repaired; each repair is listed on `display_header`. Everything else (decoding, masking of unused high
bits, sign extension, YBR -> RGB, palette colour) is pydicom's own.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

DicomSource = str | os.PathLike | bytes | bytearray | BinaryIO

_LATERAL_CODES = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LEFT LATERAL", "RIGHT LATERAL"}
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_LUT_BITS = (8, 10, 11, 12, 13, 14, 15, 16)  # bits per VOI LUT entry that PS3.3 C.11.2.1.1 and pydicom accept


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


def _reason(exc: BaseException) -> str:
    """`Type: message` on one line (pydicom lists each failed plugin on its own line)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _dcmread(source: DicomSource, name: str, stop_before_pixels: bool = False) -> Any:
    pydicom = _require_pydicom()
    fp: Any = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else source
    try:
        # force=True accepts files without the 128-byte preamble, which some exporters omit.
        return pydicom.dcmread(fp, force=True, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: DICOM file not found") from None
    except Exception as exc:
        raise ValueError(f"{name}: not a readable DICOM file ({_reason(exc)})") from exc


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


# ------------------------------------------------------------------------------------------------
# Decoding (pydicom's decoders and its pylibjpeg / pillow / gdcm plugins)
# ------------------------------------------------------------------------------------------------


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
            raise ValueError(_compressed_error(name, syntax, exc)) from exc
        raise ValueError(f"{name}: pixel data could not be decoded ({_reason(exc)})") from exc
    arr = np.asarray(arr)
    frames = _int(ds.get("NumberOfFrames"), 1)
    samples = _int(ds.get("SamplesPerPixel"), 1)
    if frames > 1:
        arr = arr[0]  # a multi-frame radiograph: the first frame is the image
    if samples == 3 and arr.ndim == 3:
        return arr
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D grayscale image, got pixel array of shape {arr.shape}")
    return arr


def _compressed_error(name: str, syntax: Any, exc: Exception) -> str:
    """Say whether no decoder is installed for `syntax` or the installed one failed on corrupt data."""
    from pydicom.pixels import get_decoder

    head = f"{name}: compressed pixel data ({syntax.name}, {syntax}) could not be decoded ({_reason(exc)})"
    try:
        available = get_decoder(syntax).is_available
    except Exception:  # pydicom has no decoder for this syntax at all (MPEG2, HEVC, ...)
        available = False
    if available:
        return f"{head}; the data is corrupt or not valid {syntax.name}"
    return (
        f"{head}; install a pydicom decoder plugin for it (the 'dicom' extra installs pylibjpeg with "
        "pylibjpeg-libjpeg / pylibjpeg-openjpeg / pylibjpeg-rle; python-gdcm covers more)"
    )


# ------------------------------------------------------------------------------------------------
# Header values as real files carry them
# ------------------------------------------------------------------------------------------------


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _numbers(value: Any) -> list[float]:
    """Numeric values of an element whatever VR the file gave it: DS/IS, a single backslash-joined string
    (ST/LT/UN), a list of strings (LO), bytes. Unparsable parts become NaN so positions are kept."""
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    if isinstance(value, str):
        items: list[Any] = value.split("\\")
    elif isinstance(value, (int, float)):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            items = [value]
    numbers = []
    for item in items:
        if isinstance(item, (bytes, bytearray)):
            item = bytes(item).decode("latin-1")
        try:
            numbers.append(float(str(item).strip().rstrip("\x00")))
        except (TypeError, ValueError):
            numbers.append(math.nan)
    return numbers


def _code(value: Any) -> str:
    """A code string (CS) value, first of several, stripped and upper-cased."""
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip().strip("\x00").upper()


def _little_endian(ds: Any) -> bool:
    encoding = getattr(ds, "original_encoding", (None, None))
    return encoding[1] is not False


def _lut_values(item: Any, entries: int, bits: int, little_endian: bool) -> np.ndarray | None:
    """LUT Data as unsigned integers, with 8-bit entries packed two to a 16-bit word unpacked (PS3.3 C.11.1.1.1
    allows both 8 bits allocated, packed, and 16 bits allocated per 8-bit entry; scanners use both)."""
    value = item.get("LUTData") if hasattr(item, "get") else None
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        if bits <= 8 and entries > 1 and len(raw) in (entries, entries + 1):
            return np.frombuffer(raw[:entries], dtype=np.uint8).astype(np.int64)
        words = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2" if little_endian else ">u2")
        return words.astype(np.int64)
    try:
        words = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):  # strings, a backslash-joined text: parse each value
        words = np.asarray(_numbers(value), dtype=np.float64)
    if words.size == 0 or not np.all(np.isfinite(words)):
        return None
    words = words.astype(np.int64) & 0xFFFF  # an SS-read LUT Data (negative) is still 16 unsigned bits
    if bits <= 8 and entries > 1 and words.size == (entries + 1) // 2:
        packed = struct.pack(f"{'<' if little_endian else '>'}{words.size}H", *words.tolist())
        return np.frombuffer(packed[:entries], dtype=np.uint8).astype(np.int64)
    return words


def _repaired_lut(item: Any, *, input_min: float, little_endian: bool, storage_bits: tuple[int, ...]) -> Any:
    """A LUT item (Modality or VOI) rewritten to the standard, or None when it holds no usable table.

    Repairs: entry count taken from the LUT Data when the descriptor disagrees (dcmtk does the same); the first
    mapped value read as signed when the LUT's input can be negative and as unsigned otherwise (it is "US or SS"
    and writers pick the wrong one); 8-bit entries whose high byte repeats the low byte reduced to the low byte;
    bits per entry = bit length of the largest entry (Agfa CRs declare 16 bits for 12-bit data; Horos,
    Cornerstone and dicom-rs read the data, not the descriptor).
    """
    descriptor = _numbers(item.get("LUTDescriptor") if hasattr(item, "get") else None)
    if len(descriptor) < 3 or not all(math.isfinite(v) for v in descriptor[:3]):
        return None
    entries, first, bits = (int(v) for v in descriptor[:3])
    entries = entries % 65536 or 65536  # "0" means 2**16 entries; pydicom fixes a negative count the same way
    data = _lut_values(item, entries, bits, little_endian)
    if data is None or data.size == 0:
        return None
    if bits <= 8 and data.max() > 255 and np.all((data >> 8) == (data & 0xFF)):
        data = data & 0xFF
    if input_min < 0 and first >= 32768:
        first -= 65536
    elif input_min >= 0 and first < 0:
        first += 65536
    data = data[:65536]  # the most a descriptor can count
    bits = max(8, int(data.max()).bit_length())
    bits = next(b for b in storage_bits if b >= bits)
    return _lut_item(data, first, bits)


def _lut_item(data: np.ndarray, first: int, bits: int) -> Any:
    """A standard LUT item: LUT Data as little-endian OW words (the header says little endian), which pydicom
    reads in one call; a list of 65536 US values would cost it about 0.4 s to validate."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, "SS" if first < 0 else "US", [data.size % 65536, first, bits])  # LUT Descriptor
    item.add_new(0x00283006, "OW", data.astype("<u2").tobytes())  # LUT Data
    return item


def _window_pairs(ds: Any, function: str) -> list[tuple[float, float]]:
    """(center, width) pairs that pydicom's `apply_windowing` accepts, in the file's order."""
    pairs = []
    for center, width in zip(_numbers(ds.get("WindowCenter")), _numbers(ds.get("WindowWidth"))):
        if not (math.isfinite(center) and math.isfinite(width)):
            continue
        if width >= 1 or (function != "LINEAR" and width > 0):  # PS3.3 C.11.2.1.2.1 / C.11.2.1.3
            pairs.append((center, width))
    return pairs


def display_header(ds: Any, arr: np.ndarray | None = None) -> Any:
    """The elements pydicom's display functions read, copied from `ds` into a new standard-conforming dataset.

    What is copied and how the quirks of real files are repaired:
    - Rescale Slope / Intercept: a missing, non-numeric or zero slope is 1 and a missing intercept 0 (both are
      needed by pydicom, which otherwise skips the rescale); a Modality LUT Sequence replaces them.
    - Modality LUT / VOI LUT Sequence: the first item with a usable table, repaired as `_repaired_lut` says.
    - Window Center / Width (only when no VOI LUT is usable, as pydicom prefers the LUT): the first pair that
      pydicom can apply, whatever VR the file used (DS, a backslash-joined string, strings); pairs with width 0,
      NaN or unparsable values are skipped. VOI LUT Function: LINEAR when absent or not a defined term.
    - Photometric Interpretation MONOCHROME2: polarity is applied after the LUTs (`dicom_to_array`).
    - Bits Stored (window output range only): the file's value when 1..Bits Allocated, else the array's width.

    `arr` (the decoded stored values) gives the array width when the header has no usable Bits Stored.

    Example:
        >>> header = display_header(pydicom.dcmread("cr.dcm"))  # doctest: +SKIP
        >>> apply_voi_lut(apply_modality_lut(ds.pixel_array, header), header)  # doctest: +SKIP
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut
    from pydicom.sequence import Sequence

    header = Dataset()
    header.set_original_encoding(False, True)  # the byte order of the OW LUT Data written by `_lut_item`
    header.PhotometricInterpretation = "MONOCHROME2"
    header.PixelRepresentation = 1 if _int(ds.get("PixelRepresentation"), 0) == 1 else 0
    allocated = _int(ds.get("BitsAllocated"), 0) or (arr.dtype.itemsize * 8 if arr is not None else 16)
    stored = _int(ds.get("BitsStored"), 0)
    header.BitsStored = stored if 1 <= stored <= allocated else allocated
    little_endian = _little_endian(ds)

    modality = next(
        (lut for item in ds.get("ModalityLUTSequence") or [] if (lut := _repaired_lut(
            item, input_min=-1.0 if header.PixelRepresentation else 0.0, little_endian=little_endian,
            storage_bits=(8, 16),  # pydicom's apply_modality_lut reads only uint8 / uint16 tables
        )) is not None),
        None,
    )
    if modality is not None:
        header.ModalityLUTSequence = Sequence([modality])
    elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope = (_numbers(ds.get("RescaleSlope")) or [1.0])[0]
        intercept = (_numbers(ds.get("RescaleIntercept")) or [0.0])[0]
        header.RescaleSlope = slope if math.isfinite(slope) and slope != 0 else 1.0
        header.RescaleIntercept = intercept if math.isfinite(intercept) else 0.0

    # the VOI LUT's input range: the stored range through the Modality LUT just set up
    stored_range = (
        np.array([-(2 ** (header.BitsStored - 1)), 2 ** (header.BitsStored - 1) - 1])
        if header.PixelRepresentation
        else np.array([0, 2**header.BitsStored - 1])
    )
    input_min = float(np.min(apply_modality_lut(stored_range, header)))
    voi = next(
        (lut for item in ds.get("VOILUTSequence") or [] if (lut := _repaired_lut(
            item, input_min=input_min, little_endian=little_endian, storage_bits=_LUT_BITS,
        )) is not None),
        None,
    )
    if voi is not None:
        header.VOILUTSequence = Sequence([voi])
        return header
    function = _code(ds.get("VOILUTFunction")) or "LINEAR"
    function = function if function in _VOI_FUNCTIONS else "LINEAR"
    pairs = _window_pairs(ds, function)
    if pairs:
        header.WindowCenter, header.WindowWidth = pairs[0]
        header.VOILUTFunction = function
    return header


# ------------------------------------------------------------------------------------------------
# Display
# ------------------------------------------------------------------------------------------------


def _voi_output_range(header: Any, values: np.ndarray) -> tuple[float, float]:
    """The range the VOI stage maps to: 0..2**bits-1 for a VOI LUT; pydicom's own window range (its
    `apply_windowing` maps -inf and +inf to the bottom and top); else the values' min-max (no VOI given)."""
    from pydicom.pixels import apply_windowing

    if "VOILUTSequence" in header:
        return 0.0, float(2 ** int(header.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if "WindowWidth" in header:
        low, high = apply_windowing(np.array([-np.inf, np.inf]), header)
        return float(low), float(high)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


def _pydicom_voi_header(header: Any) -> Any:
    """`header` with an 8-bit VOI LUT declared as 16-bit storage: pydicom 3.0's `apply_voi` builds its index
    array in the LUT's own dtype, so with uint8 every input 256 or more past the first mapped value wraps
    (input 256 reads entry 0). The entries, hence the output, are unchanged; the range stays 8-bit."""
    if "VOILUTSequence" not in header or int(header.VOILUTSequence[0].LUTDescriptor[2]) > 8:
        return header
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = header.VOILUTSequence[0]
    copy = Dataset()
    copy.set_original_encoding(*header.original_encoding)
    for element in header:
        if element.keyword != "VOILUTSequence":
            copy.add(element)
    copy.VOILUTSequence = Sequence([_lut_item(np.frombuffer(item.LUTData, dtype="<u2"), item.LUTDescriptor[1], 16)])
    return copy


def _colour_to_grey(arr: np.ndarray, ds: Any) -> np.ndarray:
    """RGB (YBR already converted by pydicom) -> 8-bit luminance, by PIL's ITU-R 601-2 'L' conversion."""
    if arr.dtype != np.uint8:  # 16-bit RGB: its stored range 0..2**BitsStored-1 becomes 0..255
        bits = min(max(_int(ds.get("BitsStored"), 16), 1), 16)
        arr = np.clip(np.round(arr.astype(np.float64) / (2**bits - 1) * 255.0), 0, 255)
    return np.asarray(Image.fromarray(arr.astype(np.uint8), mode="RGB").convert("L"))


def dicom_to_array(ds: Any, *, name: str = "<DICOM>") -> np.ndarray:
    """A read DICOM dataset -> (rows, columns) uint8 display array, 0 black .. 255 white.

    Greyscale: pydicom's `apply_modality_lut` then `apply_voi_lut` on `display_header(ds)`, then the VOI output
    range (`_voi_output_range`) scaled linearly to 0..255 and rounded half-to-even; MONOCHROME1, or a
    Presentation LUT Shape of INVERSE (PS3.3 C.8.11.6: the same statement for DX), gives 255 - value.
    Without a usable VOI LUT or window, the full range of the values after the Modality LUT is shown.
    Colour (RGB, YBR_*, PALETTE COLOR): pydicom's RGB, reduced to luminance.
    Raises ValueError naming `name` for missing, truncated or undecodable pixel data.

    Example:
        >>> dicom_to_array(pydicom.dcmread("cr.dcm"), name="cr.dcm").dtype  # doctest: +SKIP
        dtype('uint8')
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    arr = _decode_pixels(ds, name)
    photometric = _code(ds.get("PhotometricInterpretation")) or "MONOCHROME2"
    try:
        if arr.ndim == 2 and photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)[..., :3]
            if arr.dtype == np.uint16:  # 16-bit palette entries span 0..65535 (PS3.3 C.7.6.3.1.6)
                arr = np.round(arr / 257.0).astype(np.uint8)
        if arr.ndim == 3:
            return _colour_to_grey(arr, ds)
        header = display_header(ds, arr)
        values = apply_modality_lut(arr, header)
        if "VOILUTSequence" in header:  # a LUT is indexed by integers; pydicom warns on floats
            values = np.rint(values).astype(np.int64)
        values = np.asarray(apply_voi_lut(values, _pydicom_voi_header(header)), dtype=np.float64)
        low, high = _voi_output_range(header, values)
    except Exception as exc:
        raise ValueError(f"{name}: the DICOM display transforms failed ({_reason(exc)})") from exc
    if not high > low:
        out = np.zeros(values.shape, dtype=np.uint8)
    else:
        unit = np.clip((values - low) / (high - low), 0.0, 1.0)
        out = np.round(np.nan_to_num(unit) * 255.0).astype(np.uint8)
    inverse = photometric == "MONOCHROME1" or _code(ds.get("PresentationLUTShape")) == "INVERSE"
    return 255 - out if inverse else out


def _square_pixels(image: Image.Image, ds: Any) -> Image.Image:
    """Resample non-square pixels (row spacing != column spacing) so the physical aspect ratio is kept."""
    spacing = _numbers(ds.get("PixelSpacing")) or _numbers(ds.get("ImagerPixelSpacing"))
    aspect = _numbers(ds.get("PixelAspectRatio"))
    ratio = None
    if len(spacing) == 2 and spacing[0] > 0 and spacing[1] > 0:
        ratio = spacing[0] / spacing[1]
    elif not spacing and len(aspect) == 2 and aspect[0] > 0 and aspect[1] > 0:
        ratio = aspect[0] / aspect[1]
    if ratio is None or not math.isfinite(ratio) or abs(ratio - 1.0) < 0.01:
        return image
    width, height = image.size
    return image.resize((width, max(1, round(height * ratio))), Image.Resampling.BILINEAR)


def read_dicom(path_or_bytes: DicomSource, *, name: str | None = None) -> Image.Image:
    """Read a DICOM radiograph as an 8-bit greyscale ("L") PIL image with square pixels.

    The display pipeline is `dicom_to_array`'s (pydicom's Modality LUT and VOI LUT / window functions, then
    polarity); non-square pixels (Pixel Spacing, else Pixel Aspect Ratio) are resampled to the physical aspect.
    `name` labels error messages when bytes or a file object are passed.
    Raises FileNotFoundError or ValueError naming the file.

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

    Looks at View Position (0018,5101) (its defined terms, then its text), then View Code Sequence code meanings,
    then series / protocol / study text, then Patient Orientation (0020,0020): rows running anterior-posterior
    ("A" / "P") can only be a lateral projection.

    Example:
        >>> dicom_view_position(read_dicom_header("image.dcm"))  # doctest: +SKIP
        'PA'
    """
    position = _code(ds.get("ViewPosition"))
    if position in {"PA", "AP"}:
        return position
    if position in _LATERAL_CODES:
        return "LATERAL"
    texts = [position]
    for item in ds.get("ViewCodeSequence") or []:
        texts.append(str(getattr(item, "CodeMeaning", "") or ""))
    for keyword in ("SeriesDescription", "ProtocolName", "StudyDescription", "ImageComments"):
        texts.append(str(ds.get(keyword, "") or ""))
    for text in texts:
        view = view_from_text(text)
        if view is not None:
            return view
    orientation = ds.get("PatientOrientation")
    if orientation is not None and not isinstance(orientation, (str, bytes)) and len(orientation) == 2:
        row_direction = str(orientation[0]).strip().upper()
        if row_direction and set(row_direction) <= {"A", "P"}:
            return "LATERAL"
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
