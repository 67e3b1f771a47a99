"""DICOM radiographs as scanners and archives write them, header quirks included, written with pydicom.

`write_dicom_files(directory)` writes one file per case and returns a `DicomFile` for each:
- "display" cases: standard files (windows, VOI LUT items, signed data, MONOCHROME1, colour, every compressed
  transfer syntax pydicom can decode with the pylibjpeg plugins) and quirky ones seen in real archives (VOI LUT
  descriptors that lie about bits, entry count or signedness, 8-bit LUT data in 16-bit words, windows with
  width 0 or the wrong VR, a missing rescale slope...). A quirky file comes with its `twin`: the same image with
  the header the scanner meant, written to the standard, so a reader can be compared with pydicom on the twin.
- "view" cases: View Position / View Code Sequence / descriptions / Patient Orientation / Image Laterality as
  they appear in the wild, with the view a reader should report.
- "bad" cases: truncated, pixel-less or undecodable files, with a regex of the error a reader should raise.

Pixels are a synthetic radiograph (`phantom_radiograph`), never patient data. Every file carries the fake
patient-identifying elements of `IDENTIFYING_ELEMENTS`, so tests can check they never leave a reader.

Compressed files are encoded by pydicom's own encoders (RLE natively, JPEG 2000 through pylibjpeg-openjpeg,
JPEG-LS through pyjpegls), JPEG Baseline by Pillow's libjpeg, and JPEG Lossless (process 14, first-order
prediction) by `encode_jpeg_lossless` here: no installed library encodes it. JPEG Extended 12-bit (process 4)
has no offline encoder and is not simulated.

Why one module: the cases are one catalogue (each case is a header recipe plus its expected outcome), and
the encoders exist only to write them; split, a reader would have to chase a case across files.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BAD_CASES",
    "DISPLAY_CASES",
    "IDENTIFYING_ELEMENTS",
    "VIEW_CASES",
    "DicomFile",
    "encode_jpeg_lossless",
    "phantom_radiograph",
    "write_dicom_files",
]

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

IDENTIFYING_ELEMENTS: dict[str, str] = {
    "PatientName": "PHIDOE^JANE^Q",
    "PatientID": "PHI-MRN-0042137",
    "PatientBirthDate": "19610415",
    "PatientAddress": "12 Phiroad Lane, Springfield",
    "OtherPatientIDs": "PHI-OTHER-998877",
    "InstitutionName": "PHI General Hospital",
    "InstitutionAddress": "1 PHI Plaza, Springfield",
    "ReferringPhysicianName": "PHISMITH^JOHN",
    "AccessionNumber": "PHIACC4711",
    "StationName": "PHI-CR-ROOM2",
    "OperatorsName": "PHITECH^ALEX",
}
"""Fake patient / site identifiers written into every file (DICOM keyword -> value)."""

ROWS, COLUMNS = 64, 48  # portrait like a chest film; JPEG 2000 needs 32 or more each way


@dataclass(frozen=True)
class DicomFile:
    """One written case.

    Attributes:
        name: the case name (the file is `<name>.dcm`).
        kind: "display", "view" or "bad".
        path: the written file.
        description: the real-world behaviour the file simulates.
        twin: for a quirky display file, the same image written with the header the scanner meant (standard
            conforming); None when pydicom reads the file itself as intended.
        view: the view a reader should report ("PA", "AP", "LATERAL" or None).
        error: for a bad file, a regex the reader's ValueError message must match (after the file name).
        stored: the stored values (first frame) before any lossy step; None for lossy files. For a lossless
            compressed file, decoding must give exactly these.
    """

    name: str
    kind: str
    path: Path
    description: str
    twin: Path | None = None
    view: str | None = "PA"
    error: str | None = None
    stored: np.ndarray | None = None


def phantom_radiograph(
    rows: int = ROWS, columns: int = COLUMNS, *, low: int = 0, high: int = 4095, seed: int = 0
) -> np.ndarray:
    """A synthetic frontal chest radiograph (air, body, lungs, spine, noise) as int64 values in [low, high].

    Example:
        >>> int(phantom_radiograph(8, 6, high=255).max())
        255
    """
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : columns * 1j]
    image = np.full((rows, columns), 0.05)
    image[(x / 0.92) ** 2 + (y / 1.05) ** 2 < 1] = 0.55
    for side in (-1, 1):
        image[((x - side * 0.42) / 0.3) ** 2 + ((y + 0.05) / 0.62) ** 2 < 1] = 0.25
    image[(np.abs(x) < 0.09) & (np.abs(y) < 0.95)] = 0.9
    image += 0.08 * y + np.random.default_rng(seed).normal(0.0, 0.02, image.shape)
    image = (image - image.min()) / (image.max() - image.min())
    return np.round(low + image * (high - low)).astype(np.int64)


def encode_jpeg_lossless(pixels: np.ndarray, precision: int) -> bytes:
    """One frame of JPEG Lossless, process 14, selection value 1 (ITU-T T.81 H.1; DICOM 1.2.840.10008.1.2.4.70).

    Prediction from the left neighbour (from above in the first column, 2**(P-1) for the first sample);
    differences modulo 2**16 coded with one Huffman table giving every category 0-16 a 5-bit code.

    Example:
        >>> encode_jpeg_lossless(np.zeros((2, 2), dtype=np.uint16), 12)[:4]
        b'\xff\xd8\xff\xc3'
    """
    if pixels.ndim != 2 or not 2 <= precision <= 16:
        raise ValueError(f"expected a 2-D array and a precision of 2-16 bits, got {pixels.shape}, {precision}")
    values = pixels.astype(np.int64)
    prediction = np.empty_like(values)
    prediction[0, 0] = 1 << (precision - 1)
    prediction[0, 1:] = values[0, :-1]
    prediction[1:, 0] = values[:-1, 0]
    prediction[1:, 1:] = values[1:, :-1]
    differences = (values - prediction) % 65536
    differences = np.where(differences > 32768, differences - 65536, differences)

    bits: list[str] = []
    for difference in differences.ravel().tolist():
        category = abs(difference).bit_length()
        bits.append(format(category, "05b"))
        if 0 < category < 16:  # category 16 (difference 32768) has no extra bits
            extra = difference if difference > 0 else difference - 1 + (1 << category)
            bits.append(format(extra, f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # pad the last byte with 1-bits
    entropy = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        entropy.append(byte)
        if byte == 0xFF:
            entropy.append(0x00)  # byte stuffing

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    rows, columns = values.shape
    frame_header = struct.pack(">BHHB", precision, rows, columns, 1) + bytes([1, 0x11, 0])
    huffman = bytes([0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    scan_header = bytes([1, 1, 0x00, 1, 0, 0])  # 1 component, table 0; Ss = predictor 1, Se = 0, Ah/Al = 0
    return (
        b"\xff\xd8"
        + segment(0xFFC3, frame_header)
        + segment(0xFFC4, huffman)
        + segment(0xFFDA, scan_header)
        + bytes(entropy)
        + b"\xff\xd9"
    )


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def _dataset(
    name: str,
    pixels: np.ndarray,
    *,
    bits_stored: int = 12,
    bits_allocated: int = 16,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    sop_class: str = DX_FOR_PRESENTATION,
    manufacturer: str = "Simulated Medical Systems",
    view: str | None = "PA",
) -> Any:
    """An uncompressed explicit VR little endian radiograph with the identifying elements filled in."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    instance = generate_uid(entropy_srcs=["cxr_mtclip.testing.dicom_files", name])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, instance
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", name])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", name])
    ds.Modality = "CR" if sop_class == CR_STORAGE else ("OT" if sop_class == SECONDARY_CAPTURE else "DX")
    ds.Manufacturer = manufacturer
    ds.StudyDate, ds.StudyTime = "20240102", "101500"
    ds.BodyPartExamined = "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    for keyword, value in IDENTIFYING_ELEMENTS.items():
        setattr(ds, keyword, value)
    if view is not None:
        ds.ViewPosition = view
    ds.ImageLaterality = "U"
    ds.PatientOrientation = ["L", "F"]
    frames = pixels if pixels.ndim == 3 and photometric in ("MONOCHROME1", "MONOCHROME2") else pixels[None]
    if frames.shape[0] > 1:
        ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.SamplesPerPixel = 3 if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {8: np.uint8, 16: np.uint16}[bits_allocated]
    ds.PixelData = (pixels.astype(np.int64) & ((1 << bits_allocated) - 1)).astype(f"<{np.dtype(dtype).str[1:]}").tobytes()
    return ds


def _lut_item(descriptor: list[int], data: list[int] | bytes, *, data_vr: str = "US", descriptor_vr: str = "US",
              explanation: str | None = None) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, descriptor_vr, descriptor)  # LUT Descriptor
    if explanation is not None:
        item.LUTExplanation = explanation
    item.add_new(0x00283006, data_vr, data)  # LUT Data
    return item


def _curve(entries: int, top: int, gamma: float) -> list[int]:
    return [int(v) for v in np.round(top * (np.arange(entries) / (entries - 1)) ** gamma)]


def _voi_sequence(*items: Any) -> Any:
    from pydicom.sequence import Sequence

    return Sequence(list(items))


def _write(path: Path, data: bytes) -> Path:
    """Write through a temp file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _save(ds: Any, path: Path, *, implicit: bool = False, enforce_file_format: bool = True) -> Path:
    from pydicom.uid import ImplicitVRLittleEndian

    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    if enforce_file_format:
        ds.save_as(buffer, enforce_file_format=True)
    else:  # a transfer syntax pydicom does not know: say how to encode the dataset
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return _write(path, buffer.getvalue())


def _encapsulated(ds: Any, syntax: str, frame: bytes) -> Any:
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


# ------------------------------------------------------------------------------------------------
# Cases: each returns (dataset, twin dataset or None, stored values or None); `implicit` per name below
# ------------------------------------------------------------------------------------------------

Built = tuple[Any, Any, "np.ndarray | None"]
_DISPLAY: dict[str, tuple[str, Callable[[str], Built]]] = {}
_IMPLICIT = {"windows_implicit_vr", "voi_lut_first_mapped_implicit_vr"}


def _display(name: str, description: str) -> Callable[[Callable[[str], Built]], Callable[[str], Built]]:
    def register(build: Callable[[str], Built]) -> Callable[[str], Built]:
        _DISPLAY[name] = (description, build)
        return build

    return register


def _plain(name: str, **kwargs: Any) -> tuple[Any, np.ndarray]:
    pixels = phantom_radiograph()
    return _dataset(name, pixels, **kwargs), pixels


@_display("window_linear", "one LINEAR window narrower than the data (both ends clip)")
def _window_linear(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = 1800, 2400
    return ds, None, pixels


@_display("window_linear_exact", "VOI LUT Function LINEAR_EXACT")
def _window_linear_exact(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2000.5, 3000.25, "LINEAR_EXACT"
    return ds, None, pixels


@_display("window_sigmoid", "VOI LUT Function SIGMOID (Fuji / Konica style)")
def _window_sigmoid(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2048, 1500, "SIGMOID"
    return ds, None, pixels


@_display("windows_multi_valued", "three windows with explanations (NORMAL / HARDER / SOFTER): the first is shown")
def _windows_multi_valued(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = [1800, 1200, 2600], [2400, 800, 1200]
    ds.WindowCenterWidthExplanation = ["NORMAL", "HARDER", "SOFTER"]
    return ds, None, pixels


@_display("windows_implicit_vr", "implicit VR little endian (old PACS exports): window VRs come from the dictionary")
def _windows_implicit_vr(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = [1700, 1200], [2600, 800]
    return ds, None, pixels


@_display("windows_mismatched_counts", "three Window Center values and a single Window Width")
def _windows_mismatched_counts(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = [1900, 1200, 2600], 2200
    return ds, None, pixels


@_display("window_as_single_string", "windows written with VR LT: one string with backslashes ('1800\\1200')")
def _window_as_single_string(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.add_new(0x00281050, "LT", "1800\\1200")
    ds.add_new(0x00281051, "LT", "2400\\800")
    twin, _ = _plain(name)
    twin.WindowCenter, twin.WindowWidth = [1800, 1200], [2400, 800]
    return ds, twin, pixels


@_display("window_wrong_vr_lo", "windows written with VR LO: the values arrive as strings")
def _window_wrong_vr_lo(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.add_new(0x00281050, "LO", ["1900", "1200"])
    ds.add_new(0x00281051, "LO", ["2500 ", "800"])
    twin, _ = _plain(name)
    twin.WindowCenter, twin.WindowWidth = [1900, 1200], [2500, 800]
    return ds, twin, pixels


@_display("window_width_zero", "Window Width 0 (invalid for every VOI LUT Function): shown as if no window")
def _window_width_zero(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = 2048, 0
    twin, _ = _plain(name)
    return ds, twin, pixels


@_display("window_first_pair_unusable", "the first window has width 0, the second is valid: the second is shown")
def _window_first_pair_unusable(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = [2048, 1800], [0, 2400]
    twin, _ = _plain(name)
    twin.WindowCenter, twin.WindowWidth = 1800, 2400
    return ds, twin, pixels


@_display("no_window", "no VOI LUT and no window: the full range of the values is shown")
def _no_window(name: str) -> Built:
    ds, pixels = _plain(name)
    return ds, None, pixels


@_display("signed_rescale", "signed 12-bit data (PixelRepresentation 1, negative values), slope 2, intercept -1024")
def _signed_rescale(name: str) -> Built:
    pixels = phantom_radiograph(low=-2048, high=2047)
    ds = _dataset(name, pixels, signed=True)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 2, -1024, "US"
    ds.WindowCenter, ds.WindowWidth = -800, 5000
    return ds, None, pixels


@_display("rescale_slope_missing", "Rescale Intercept without Rescale Slope; the window is in rescaled units")
def _rescale_slope_missing(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.RescaleIntercept = -1024
    ds.WindowCenter, ds.WindowWidth = 800, 2400
    twin, _ = _plain(name)
    twin.RescaleSlope, twin.RescaleIntercept = 1, -1024
    twin.WindowCenter, twin.WindowWidth = 800, 2400
    return ds, twin, pixels


@_display("rescale_slope_zero", "Rescale Slope 0 (would flatten the image): treated as 1")
def _rescale_slope_zero(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.RescaleSlope, ds.RescaleIntercept = 0, 100
    twin, _ = _plain(name)
    twin.RescaleSlope, twin.RescaleIntercept = 1, 100
    return ds, twin, pixels


@_display("monochrome1", "MONOCHROME1 (CR plates): the lowest value is white")
def _monochrome1(name: str) -> Built:
    ds, pixels = _plain(name, photometric="MONOCHROME1", sop_class=CR_STORAGE)
    ds.WindowCenter, ds.WindowWidth = 2100, 3000
    return ds, None, pixels


@_display("monochrome1_presentation_inverse", "MONOCHROME1 with Presentation LUT Shape INVERSE (what DX requires): one inversion")
def _monochrome1_inverse(name: str) -> Built:
    ds, pixels = _plain(name, photometric="MONOCHROME1")
    ds.PresentationLUTShape = "INVERSE"
    ds.WindowCenter, ds.WindowWidth = 2100, 3000
    return ds, None, pixels


@_display("monochrome2_presentation_inverse", "MONOCHROME2 with Presentation LUT Shape INVERSE: shown inverted")
def _monochrome2_inverse(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.PresentationLUTShape = "INVERSE"
    return ds, None, pixels


@_display("modality_lut_sequence", "a 16-bit Modality LUT Sequence, then a window on its output")
def _modality_lut_sequence(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.ModalityLUTSequence = _voi_sequence(_lut_item([4096, 0, 16], _curve(4096, 65535, 1.3)))
    ds.WindowCenter, ds.WindowWidth = 30000, 50000
    return ds, None, pixels


@_display("modality_lut_12_bit_descriptor", "Modality LUT Descriptor bits 12 (the standard says 16): pydicom needs 8 or 16")
def _modality_lut_12_bit(name: str) -> Built:
    ds, pixels = _plain(name)
    data = _curve(4096, 4095, 1.3)
    ds.ModalityLUTSequence = _voi_sequence(_lut_item([4096, 0, 12], data))
    ds.WindowCenter, ds.WindowWidth = 2000, 3000
    twin, _ = _plain(name)
    twin.ModalityLUTSequence = _voi_sequence(_lut_item([4096, 0, 16], data))
    twin.WindowCenter, twin.WindowWidth = 2000, 3000
    return ds, twin, pixels


@_display("voi_lut_vendor_items", "three VOI LUT items (NORMAL / HARD / SOFT) and a window: the first LUT is shown")
def _voi_lut_vendor_items(name: str) -> Built:
    ds, pixels = _plain(name, sop_class=CR_STORAGE)
    ds.VOILUTSequence = _voi_sequence(*(
        _lut_item([4096, 0, 16], _curve(4096, 65535, gamma), explanation=label)
        for label, gamma in (("NORMAL", 0.7), ("HARD", 1.4), ("SOFT", 0.5))
    ))
    ds.WindowCenter, ds.WindowWidth = 100, 10  # ignored: the VOI LUT Sequence wins
    return ds, None, pixels


@_display("voi_lut_65536_entries", "LUT Descriptor first value 0, meaning 2**16 entries; LUT Data as OW")
def _voi_lut_65536(name: str) -> Built:
    pixels = phantom_radiograph(high=65535)
    ds = _dataset(name, pixels, bits_stored=16)
    data = np.asarray(_curve(65536, 65535, 0.8), dtype="<u2").tobytes()
    ds.VOILUTSequence = _voi_sequence(_lut_item([0, 0, 16], data, data_vr="OW"))
    return ds, None, pixels


@_display("voi_lut_8_bit_in_16_bit_words", "an 8-bit VOI LUT with 4096 entries, one per 16-bit OW word")
def _voi_lut_8_bit_words(name: str) -> Built:
    ds, pixels = _plain(name)
    data = np.asarray(_curve(4096, 255, 0.8), dtype="<u2").tobytes()
    ds.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 8], data, data_vr="OW"))
    return ds, None, pixels


@_display("voi_lut_agfa_12_bit_in_16", "Agfa CR: LUT Descriptor says 16 bits, the LUT Data is 12-bit (0-4095); two items")
def _voi_lut_agfa(name: str) -> Built:
    ds, pixels = _plain(name, sop_class=CR_STORAGE, manufacturer="Agfa")
    normal, soft = _curve(4096, 4095, 0.75), _curve(4096, 4095, 0.5)
    ds.VOILUTSequence = _voi_sequence(
        _lut_item([4096, 0, 16], normal, explanation="MUSICA NORMAL"),
        _lut_item([4096, 0, 16], soft, explanation="MUSICA SOFT"),
    )
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    twin, _ = _plain(name, sop_class=CR_STORAGE, manufacturer="Agfa")
    twin.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 12], normal, explanation="MUSICA NORMAL"))
    return ds, twin, pixels


@_display("voi_lut_8_bit_packed", "an 8-bit VOI LUT packed two entries to a 16-bit OW word (8 bits allocated)")
def _voi_lut_packed(name: str) -> Built:
    ds, pixels = _plain(name)
    data = _curve(4096, 255, 0.8)
    ds.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 8], bytes(data), data_vr="OW"))
    twin, _ = _plain(name)
    twin.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 8], data))
    return ds, twin, pixels


@_display("voi_lut_8_bit_replicated_high_byte", "an 8-bit VOI LUT whose 16-bit words repeat the entry in the high byte")
def _voi_lut_replicated(name: str) -> Built:
    ds, pixels = _plain(name)
    data = _curve(4096, 255, 0.8)
    ds.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 8], [v * 257 for v in data]))
    twin, _ = _plain(name)
    twin.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 8], data))
    return ds, twin, pixels


@_display("voi_lut_first_mapped_unsigned_for_signed", "signed data, first mapped value -1024 written as US 64512")
def _voi_lut_first_unsigned(name: str) -> Built:
    pixels = phantom_radiograph(low=-1024, high=3071)
    ds = _dataset(name, pixels, bits_stored=16, signed=True)
    data = _curve(4096, 65535, 0.7)
    ds.VOILUTSequence = _voi_sequence(_lut_item([4096, 65536 - 1024, 16], data))
    twin = _dataset(name, pixels, bits_stored=16, signed=True)
    twin.VOILUTSequence = _voi_sequence(_lut_item([4096, -1024, 16], data, descriptor_vr="SS"))
    return ds, twin, pixels


@_display("voi_lut_first_mapped_implicit_vr", "implicit VR, unsigned data, intercept -1024: the SS first mapped "
          "value -1024 reads back as US 64512 (the VR is 'US or SS' and follows Pixel Representation)")
def _voi_lut_first_implicit(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    data = _curve(4096, 65535, 0.7)
    ds.VOILUTSequence = _voi_sequence(_lut_item([4096, 65536 - 1024, 16], data))
    twin, _ = _plain(name)
    twin.RescaleSlope, twin.RescaleIntercept = 1, -1024
    twin.VOILUTSequence = _voi_sequence(_lut_item([4096, -1024, 16], data, descriptor_vr="SS"))
    return ds, twin, pixels


@_display("voi_lut_entry_count_mismatch", "LUT Descriptor says 4096 entries, the LUT Data holds 4000")
def _voi_lut_count(name: str) -> Built:
    ds, pixels = _plain(name)
    data = _curve(4000, 65535, 0.7)
    ds.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 16], data))
    twin, _ = _plain(name)
    twin.VOILUTSequence = _voi_sequence(_lut_item([4000, 0, 16], data))
    return ds, twin, pixels


@_display("voi_lut_bits_zero", "LUT Descriptor bits per entry 0 (out of the 8-16 range); 16-bit data")
def _voi_lut_bits_zero(name: str) -> Built:
    ds, pixels = _plain(name)
    data = _curve(4096, 65535, 0.7)
    ds.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 0], data))
    twin, _ = _plain(name)
    twin.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 16], data))
    return ds, twin, pixels


@_display("voi_lut_first_item_empty", "the first VOI LUT item has no LUT Data, the second is valid; a window too")
def _voi_lut_first_empty(name: str) -> Built:
    ds, pixels = _plain(name)
    from pydicom.dataset import Dataset

    empty = Dataset()
    empty.LUTDescriptor = [4096, 0, 16]
    data = _curve(4096, 65535, 0.6)
    ds.VOILUTSequence = _voi_sequence(empty, _lut_item([4096, 0, 16], data))
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    twin, _ = _plain(name)
    twin.VOILUTSequence = _voi_sequence(_lut_item([4096, 0, 16], data))
    return ds, twin, pixels


@_display("high_bits_garbage", "Bits Stored 12 of 16 with random values in the 4 unused high bits")
def _high_bits_garbage(name: str) -> Built:
    pixels = phantom_radiograph()
    garbage = np.random.default_rng(1).integers(0, 16, pixels.shape) << 12
    ds = _dataset(name, pixels | garbage)
    ds.WindowCenter, ds.WindowWidth = 2000, 3500
    return ds, None, pixels


@_display("eight_bits_in_sixteen", "8-bit values in 16-bit words (Bits Stored 8, Bits Allocated 16), junk high byte")
def _eight_in_sixteen(name: str) -> Built:
    pixels = phantom_radiograph(high=255)
    junk = np.random.default_rng(2).integers(0, 256, pixels.shape) << 8
    ds = _dataset(name, pixels | junk, bits_stored=8)
    return ds, None, pixels


@_display("multi_frame", "two frames: the first is the image")
def _multi_frame(name: str) -> Built:
    pixels = phantom_radiograph()
    ds = _dataset(name, np.stack([pixels, 4095 - pixels]))
    return ds, None, pixels


@_display("non_square_pixels", "Pixel Spacing 0.2 x 0.1 mm: rows twice as tall as columns are wide")
def _non_square(name: str) -> Built:
    ds, pixels = _plain(name)
    ds.PixelSpacing = [0.2, 0.1]
    return ds, None, pixels


@_display("rgb", "8-bit RGB (a screen capture of a radiograph)")
def _rgb(name: str) -> Built:
    grey = phantom_radiograph(high=255)
    pixels = np.stack([grey, np.clip(grey + 20, 0, 255), grey // 2], axis=-1)
    ds = _dataset(name, pixels, bits_stored=8, bits_allocated=8, photometric="RGB", sop_class=SECONDARY_CAPTURE)
    return ds, None, pixels


@_display("palette_color", "PALETTE COLOR with 16-bit red / green / blue palettes (a colour-mapped export)")
def _palette_color(name: str) -> Built:
    pixels = phantom_radiograph(high=255)
    ds = _dataset(name, pixels, bits_stored=8, bits_allocated=8, photometric="PALETTE COLOR", sop_class=SECONDARY_CAPTURE)
    ramp = np.arange(256)
    for colour, curve in (("Red", ramp * 257), ("Green", np.minimum(ramp * 300, 65535)), ("Blue", ramp * 128)):
        ds.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
        ds.add_new(f"{colour}PaletteColorLookupTableData", "OW", curve.astype("<u2").tobytes())
    return ds, None, pixels


@_display("rle_lossless", "RLE Lossless, 12 bits in 16 (pydicom's own RLE encoder)")
def _rle(name: str) -> Built:
    from pydicom.uid import RLELossless

    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = 1800, 2400
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    return ds, None, pixels


@_display("rle_lossless_signed_monochrome1", "RLE Lossless, signed 16-bit MONOCHROME1 with a rescale")
def _rle_signed(name: str) -> Built:
    from pydicom.uid import RLELossless

    pixels = phantom_radiograph(low=-20000, high=20000)
    ds = _dataset(name, pixels, bits_stored=16, signed=True, photometric="MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, 100
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    return ds, None, pixels


@_display("jpeg_baseline", "JPEG Baseline 8-bit greyscale (lossy, encoded by libjpeg through Pillow)")
def _jpeg_baseline(name: str) -> Built:
    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit

    pixels = phantom_radiograph(high=255)
    ds = _dataset(name, pixels, bits_stored=8, bits_allocated=8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=90)
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    return _encapsulated(ds, JPEGBaseline8Bit, buffer.getvalue()), None, None


@_display("jpeg_baseline_ybr", "JPEG Baseline colour, YBR_FULL_422 (lossy): pydicom converts to RGB")
def _jpeg_baseline_ybr(name: str) -> Built:
    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit

    grey = phantom_radiograph(high=255)
    rgb = np.stack([grey, grey, np.clip(grey + 30, 0, 255)], axis=-1).astype(np.uint8)
    ds = _dataset(name, rgb, bits_stored=8, bits_allocated=8, photometric="YBR_FULL_422", sop_class=SECONDARY_CAPTURE)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=90, subsampling=1)  # 4:2:2
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    return _encapsulated(ds, JPEGBaseline8Bit, buffer.getvalue()), None, None


@_display("jpeg_lossless_sv1", "JPEG Lossless process 14 SV1, 12 bits (the most common lossless DX syntax)")
def _jpeg_lossless(name: str) -> Built:
    from pydicom.uid import JPEGLosslessSV1

    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = 1800, 2400
    return _encapsulated(ds, JPEGLosslessSV1, encode_jpeg_lossless(pixels, 12)), None, pixels


@_display("jpeg_ls_lossless", "JPEG-LS Lossless, 12 bits (pydicom's encoder through pyjpegls)")
def _jpeg_ls(name: str) -> Built:
    from pydicom.uid import JPEGLSLossless

    ds, pixels = _plain(name, photometric="MONOCHROME1")
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    return ds, None, pixels


@_display("jpeg_2000_lossless", "JPEG 2000 Lossless, 12 bits (pydicom's encoder through pylibjpeg-openjpeg)")
def _j2k_lossless(name: str) -> Built:
    from pydicom.uid import JPEG2000Lossless

    ds, pixels = _plain(name)
    ds.WindowCenter, ds.WindowWidth = 1800, 2400
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    return ds, None, pixels


@_display("jpeg_2000_lossy", "JPEG 2000 lossy (compression ratio 10), signed 16-bit with a rescale")
def _j2k_lossy(name: str) -> Built:
    from pydicom.uid import JPEG2000

    pixels = phantom_radiograph(low=-1000, high=3000)
    ds = _dataset(name, pixels, bits_stored=16, signed=True)
    ds.RescaleSlope, ds.RescaleIntercept = 1, 1000
    ds.compress(JPEG2000, j2k_cr=[10], generate_instance_uid=False)
    ds.LossyImageCompression = "01"
    return ds, None, None


# ------------------------------------------------------------------------------------------------
# View cases: (ViewPosition or None, extra elements, expected view, description)
# ------------------------------------------------------------------------------------------------

_VIEWS: dict[str, tuple[str | None, dict[str, Any], str | None, str]] = {
    "view_pa": ("PA", {}, "PA", "View Position PA"),
    "view_ap_lowercase_padded": (" ap ", {}, "AP", "View Position in lower case with spaces (invalid CS, seen in exports)"),
    "view_ll": ("LL", {"PatientOrientation": ["A", "F"]}, "LATERAL", "View Position LL (left lateral)"),
    "view_rl": ("RL", {"ImageLaterality": "B"}, "LATERAL", "View Position RL"),
    "view_missing_series_description": (None, {"SeriesDescription": "CHEST PA ERECT"}, "PA",
                                        "no View Position; the series description names the view"),
    "view_empty_code_sequence": ("", {"ViewCodeSequence": "antero-posterior"}, "AP",
                                 "empty View Position; View Code Sequence code meaning antero-posterior"),
    "view_wrong_value_protocol": ("CHEST", {"ProtocolName": "Thorax lateral"}, "LATERAL",
                                  "View Position holds a body part; the protocol names the view"),
    "view_free_text_position": ("POSTERO-ANTERIOR", {}, "PA", "View Position as free text"),
    "view_patient_orientation_lateral": (None, {"PatientOrientation": ["P", "F"]}, "LATERAL",
                                         "no view elements; Patient Orientation rows run posterior (a lateral)"),
    "view_patient_orientation_frontal": (None, {"PatientOrientation": ["L", "F"], "ImageLaterality": "U"}, None,
                                         "no view elements; Patient Orientation L\\F cannot tell PA from AP"),
    "view_position_beats_orientation": ("PA", {"PatientOrientation": ["A", "F"]}, "PA",
                                        "View Position and Patient Orientation disagree: View Position wins"),
    "view_none": (None, {"PatientOrientation": None, "ImageLaterality": None}, None, "no view information at all"),
}


def _view_case(name: str, position: str | None, extra: dict[str, Any]) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = _dataset(name, phantom_radiograph(), view=None)
    if position is not None:
        ds.add_new(0x00185101, "CS", position)  # View Position, as written (no validation)
    for keyword, value in extra.items():
        if value is None:
            delattr(ds, keyword)
        elif keyword == "ViewCodeSequence":
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10206", "SRT", value
            ds.ViewCodeSequence = Sequence([code])
        else:
            setattr(ds, keyword, value)
    return ds


# ------------------------------------------------------------------------------------------------
# Bad files: (builder, error regex, description)
# ------------------------------------------------------------------------------------------------


def _bad_truncated_pixel_data(name: str) -> Any:
    ds, pixels = _plain(name)
    ds.PixelData = ds.PixelData[: -2 * COLUMNS]  # one row short
    return ds


def _bad_no_pixel_data(name: str) -> Any:
    ds, _ = _plain(name)
    del ds.PixelData
    return ds


def _bad_mpeg2(name: str) -> Any:
    ds, _ = _plain(name, bits_stored=8, bits_allocated=8)
    return _encapsulated(ds, "1.2.840.10008.1.2.4.100", b"\x00\x00\x01\xb3 an MPEG-2 sequence header" * 4)


def _bad_jpeg_2000_corrupt(name: str) -> Any:
    ds, _ = _plain(name)
    return _encapsulated(ds, "1.2.840.10008.1.2.4.90", b"\xff\x4f\xff\x51 a truncated codestream" * 4)


def _bad_private_syntax(name: str) -> Any:
    ds, _ = _plain(name)
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.1"
    return ds


def _bad_zero_rows(name: str) -> Any:
    ds, _ = _plain(name)
    ds.Rows = ds.Columns = 0
    ds.PixelData = b""
    return ds


_BAD: dict[str, tuple[Callable[[str], Any] | None, str, str]] = {
    "truncated_pixel_data": (_bad_truncated_pixel_data,
                             r"pixel data could not be decoded \(ValueError: The number of bytes of pixel data is less than expected",
                             "Pixel Data one row shorter than Rows x Columns x 2 bytes"),
    "truncated_file": (None,
                       r"pixel data could not be decoded \(ValueError: The number of bytes of pixel data is less than expected",
                       "a file cut off in the middle of its Pixel Data (an interrupted transfer)"),
    "no_pixel_data": (_bad_no_pixel_data, r"DICOM file has no pixel data \(PixelData element missing\)",
                      "a header-only file (Pixel Data removed)"),
    "mpeg2_no_decoder": (_bad_mpeg2, r"compressed pixel data \(MPEG2 Main Profile / Main Level, 1\.2\.840\.10008\.1\.2\.4\.100\) "
                         r"could not be decoded \(.*\); install a pydicom decoder plugin",
                         "MPEG2 video: pydicom has no decoder for it"),
    "jpeg_2000_corrupt": (_bad_jpeg_2000_corrupt, r"compressed pixel data \(JPEG 2000 Image Compression \(Lossless Only\), "
                          r"1\.2\.840\.10008\.1\.2\.4\.90\) could not be decoded \(.*\); the data is corrupt or not valid",
                          "JPEG 2000 syntax with a corrupt codestream (the decoder is installed)"),
    "private_transfer_syntax": (_bad_private_syntax, r"unsupported transfer syntax 1\.2\.826\.0\.1\.3680043\.9\.9999\.1 "
                                r"\(not a standard DICOM transfer syntax\)",
                                "a vendor's private transfer syntax UID"),
    "zero_rows": (_bad_zero_rows, r"empty image \(Rows=0, Columns=0\); expected at least 1 x 1 pixels",
                  "Rows and Columns 0"),
}


DISPLAY_CASES: tuple[str, ...] = tuple(_DISPLAY)
"""Names of the display cases, in writing order."""
VIEW_CASES: tuple[str, ...] = tuple(_VIEWS)
"""Names of the view cases."""
BAD_CASES: tuple[str, ...] = tuple(_BAD)
"""Names of the bad files."""


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def write_dicom_files(directory: str | Path, kinds: tuple[str, ...] = ("display", "view", "bad")) -> list[DicomFile]:
    """Write every case of the given kinds into `directory` (created) and describe them; twins go to `twins/`.

    Needs pydicom, pylibjpeg-openjpeg and pyjpegls (encoders), Pillow. Deterministic: same bytes every call.

    Example:
        >>> files = write_dicom_files(tmp_path, kinds=("view",))  # doctest: +SKIP
        >>> files[0].name, files[0].view  # doctest: +SKIP
        ('view_pa', 'PA')
    """
    directory = Path(directory)
    (directory / "twins").mkdir(parents=True, exist_ok=True)
    written: list[DicomFile] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values these files must carry
        if "display" in kinds:
            for name, (description, build) in _DISPLAY.items():
                ds, twin, stored = build(name)
                path = _save(ds, directory / f"{name}.dcm", implicit=name in _IMPLICIT)
                twin_path = _save(twin, directory / "twins" / f"{name}.dcm") if twin is not None else None
                written.append(DicomFile(name, "display", path, description, twin=twin_path, stored=stored))
        if "view" in kinds:
            for name, (position, extra, view, description) in _VIEWS.items():
                path = _save(_view_case(name, position, extra), directory / f"{name}.dcm")
                written.append(DicomFile(name, "view", path, description, view=view))
        if "bad" in kinds:
            for name, (build_bad, error, description) in _BAD.items():
                path = directory / f"{name}.dcm"
                if build_bad is None:  # truncated_file: a good file cut short
                    good, _ = _plain(name)
                    _write(path, _save(good, path).read_bytes()[: -COLUMNS * 10])
                else:
                    _save(build_bad(name), path, enforce_file_format=name != "private_transfer_syntax")
                written.append(DicomFile(name, "bad", path, description, error=error))
    return written
