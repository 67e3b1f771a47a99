"""DICOM display on files with real-world header quirks, compared with pydicom's own pipeline on the same image.

The files come from `cxr_mtclip.testing.dicom_files`. For a standard file the reference is pydicom's pipeline
(`apply_modality_lut` -> `apply_voi_lut` -> polarity) on the file itself; for a quirky file it is the same
pipeline on its `twin`, the header the scanner meant. Scaling to 0..255 follows the rule `dicom_to_array`
documents: the VOI output range (0..2**bits-1 for a VOI LUT, pydicom's window range, else the values' min-max),
rounded half-to-even; MONOCHROME1 or Presentation LUT Shape INVERSE -> 255 - value.
"""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import JPEGLosslessSV1

from cxr_mtclip.data import dicom
from cxr_mtclip.testing.dicom_files import (
    BAD_CASES,
    DISPLAY_CASES,
    IDENTIFYING_ELEMENTS,
    VIEW_CASES,
    DicomFile,
    encode_jpeg_lossless,
    write_dicom_files,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the quirks it reads

# files whose header pydicom cannot display as meant; each has a standard-conforming twin
QUIRKY = (
    "window_as_single_string", "window_wrong_vr_lo", "window_width_zero", "window_first_pair_unusable",
    "rescale_slope_missing", "rescale_slope_zero", "modality_lut_12_bit_descriptor", "voi_lut_agfa_12_bit_in_16",
    "voi_lut_8_bit_packed", "voi_lut_8_bit_replicated_high_byte", "voi_lut_first_mapped_unsigned_for_signed",
    "voi_lut_first_mapped_implicit_vr", "voi_lut_entry_count_mismatch", "voi_lut_bits_zero", "voi_lut_first_item_empty",
)


@pytest.fixture(scope="module")
def dicom_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DicomFile]:
    return {f.name: f for f in write_dicom_files(tmp_path_factory.mktemp("dicom_files"))}


def window_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The range pydicom's `apply_windowing` maps onto, as its documentation and PS3.3 C.11.2.1.2 give it."""
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif ds.PixelRepresentation == 0:
        low, high = 0.0, float(2**ds.BitsStored - 1)
    else:
        low, high = float(-(2 ** (ds.BitsStored - 1))), float(2 ** (ds.BitsStored - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        low = low * ds.RescaleSlope + ds.RescaleIntercept
        high = high * ds.RescaleSlope + ds.RescaleIntercept
    return low, high


def pydicom_display(path: Path) -> np.ndarray:
    """pydicom's own display pipeline on `path`, scaled to uint8 by the documented rule."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = np.round(apply_color_lut(arr, ds) / 257.0).astype(np.uint8)  # 16-bit palette entries
    if arr.ndim == 3:
        return np.asarray(Image.fromarray(arr, mode="RGB").convert("L"))
    values = apply_modality_lut(arr, ds)
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        if bits == 8:
            # pydicom 3.0's apply_voi indexes an 8-bit LUT through a uint8 array, so entries past 255 wrap;
            # the same table declared as 16-bit storage gives the LUT's own values
            ds = copy.deepcopy(ds)
            entries, first, _ = ds.VOILUTSequence[0].LUTDescriptor
            ds.VOILUTSequence[0].LUTDescriptor = [entries, first, 16]
        values = apply_voi_lut(values, ds)
        low, high = 0.0, float(2**bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(values, ds)
        low, high = window_output_range(ds)
    else:
        low, high = float(values.min()), float(values.max())
    if not high > low:  # a flat image
        out = np.zeros(np.shape(values), dtype=np.uint8)
    else:
        unit = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
        out = np.round(unit * 255.0).astype(np.uint8)
    inverse = ds.PhotometricInterpretation == "MONOCHROME1" or ds.get("PresentationLUTShape") == "INVERSE"
    return 255 - out if inverse else out


def ours(path: Path) -> np.ndarray:
    return dicom.dicom_to_array(pydicom.dcmread(path), name=str(path))


# ------------------------------------------------------------------------------------------------
# Display: equal to pydicom's pipeline
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DISPLAY_CASES)
def test_display_equals_pydicom_pipeline(dicom_files: dict[str, DicomFile], name: str) -> None:
    case = dicom_files[name]
    expected = pydicom_display(case.twin or case.path)
    got = ours(case.path)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.array_equal(got, expected), f"{name}: {np.count_nonzero(got != expected)} pixels differ"
    assert got.max() - got.min() >= 200, f"{name}: the display does not span the output range"


@pytest.mark.parametrize("name", [n for n in DISPLAY_CASES if n not in ("rgb", "jpeg_baseline_ybr", "palette_color")])
def test_display_follows_the_stored_values(dicom_files: dict[str, DicomFile], name: str) -> None:
    """Brighter stored values never display darker (darker for MONOCHROME1 / INVERSE): LUTs here are monotone."""
    ds = pydicom.dcmread(dicom_files[name].path)
    stored = ds.pixel_array[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
    out = ours(dicom_files[name].path).astype(int)
    inverse = ds.PhotometricInterpretation == "MONOCHROME1" or ds.get("PresentationLUTShape") == "INVERSE"
    slope = float(ds.get("RescaleSlope", 1) or 1)
    order = np.argsort(stored.ravel() * (1 if slope >= 0 else -1), kind="stable")
    shown = (255 - out if inverse else out).ravel()[order]
    assert np.all(np.diff(shown) >= 0)


@pytest.mark.parametrize("name", QUIRKY)
def test_each_quirk_defeats_plain_pydicom(dicom_files: dict[str, DicomFile], name: str) -> None:
    """The twin is not a formality: pydicom's pipeline on the quirky file itself fails or shows another image."""
    case = dicom_files[name]
    assert case.twin is not None
    try:
        raw = pydicom_display(case.path)
    except Exception:
        return
    assert not np.array_equal(raw, pydicom_display(case.twin))


def test_every_quirky_file_has_a_twin_and_only_those(dicom_files: dict[str, DicomFile]) -> None:
    assert {name for name, f in dicom_files.items() if f.twin is not None} == set(QUIRKY)


@pytest.mark.parametrize("name", [n for n in DISPLAY_CASES if n not in ("jpeg_baseline", "jpeg_baseline_ybr", "jpeg_2000_lossy")])
def test_stored_values_decode_exactly(dicom_files: dict[str, DicomFile], name: str) -> None:
    """Lossless encoders (ours for JPEG Lossless, pydicom's for RLE / JPEG-LS / JPEG 2000) round-trip; unused high
    bits are masked and signed values sign-extended by pydicom."""
    case = dicom_files[name]
    ds = pydicom.dcmread(case.path)
    arr = ds.pixel_array[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
    assert case.stored is not None
    assert np.array_equal(arr.astype(np.int64), case.stored)


def test_compressed_syntaxes_are_what_they_claim(dicom_files: dict[str, DicomFile]) -> None:
    expected = {
        "rle_lossless": "1.2.840.10008.1.2.5",
        "jpeg_baseline": "1.2.840.10008.1.2.4.50",
        "jpeg_baseline_ybr": "1.2.840.10008.1.2.4.50",
        "jpeg_lossless_sv1": "1.2.840.10008.1.2.4.70",
        "jpeg_ls_lossless": "1.2.840.10008.1.2.4.80",
        "jpeg_2000_lossless": "1.2.840.10008.1.2.4.90",
        "jpeg_2000_lossy": "1.2.840.10008.1.2.4.91",
        "windows_implicit_vr": "1.2.840.10008.1.2",
    }
    for name, syntax in expected.items():
        assert pydicom.dcmread(dicom_files[name].path).file_meta.TransferSyntaxUID == syntax, name
    baseline = pydicom.dcmread(dicom_files["jpeg_baseline"].path).PixelData
    assert b"\xff\xd8" in baseline and b"\xff\xc0" in baseline  # SOI and a baseline SOF0 frame header


def test_jpeg_lossless_encoder_round_trips_extremes() -> None:
    """Every difference category 0-16, through pylibjpeg-libjpeg's decoder."""
    from pydicom.encaps import encapsulate

    from cxr_mtclip.testing.dicom_files import _dataset

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 65536, (40, 33))
    pixels[3] = 65535
    pixels[4] = 0
    pixels[5, ::2] = 65535
    ds = _dataset("extremes", pixels, bits_stored=16)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([encode_jpeg_lossless(pixels, 16)])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert np.array_equal(pydicom.dcmread(io.BytesIO(buffer.getvalue())).pixel_array.astype(np.int64), pixels)


def test_eight_bit_voi_lut_with_4096_entries_is_read_entry_by_entry(dicom_files: dict[str, DicomFile]) -> None:
    """Independent of pydicom: an 8-bit LUT with more than 256 entries shows LUT[stored value] exactly."""
    for name in ("voi_lut_8_bit_in_16_bit_words", "voi_lut_8_bit_packed", "voi_lut_8_bit_replicated_high_byte"):
        case = dicom_files[name]
        lut = np.asarray(pydicom.dcmread(case.twin or case.path).VOILUTSequence[0].LUTData)
        if lut.dtype.kind not in "iu":  # OW: raw bytes, one entry per little-endian word
            lut = np.frombuffer(pydicom.dcmread(case.path).VOILUTSequence[0].LUTData, dtype="<u2")
        assert np.array_equal(ours(case.path), lut[np.clip(case.stored, 0, lut.size - 1)].astype(np.uint8)), name


def test_monochrome1_and_inverse_are_one_inversion(dicom_files: dict[str, DicomFile]) -> None:
    mono1 = ours(dicom_files["monochrome1_presentation_inverse"].path)
    ds = pydicom.dcmread(dicom_files["monochrome1_presentation_inverse"].path)
    ds.PhotometricInterpretation = "MONOCHROME2"
    del ds.PresentationLUTShape
    assert np.array_equal(mono1, 255 - dicom.dicom_to_array(ds))
    assert np.array_equal(ours(dicom_files["monochrome2_presentation_inverse"].path), 255 - ours(dicom_files["no_window"].path))


def test_display_header_is_standard_for_pydicom(dicom_files: dict[str, DicomFile]) -> None:
    """The repaired header of a quirky file says what its twin says."""
    header = dicom.display_header(pydicom.dcmread(dicom_files["voi_lut_agfa_12_bit_in_16"].path))
    assert list(header.VOILUTSequence[0].LUTDescriptor) == [4096, 0, 12]
    assert "WindowCenter" not in header
    header = dicom.display_header(pydicom.dcmread(dicom_files["voi_lut_first_mapped_implicit_vr"].path))
    assert list(header.VOILUTSequence[0].LUTDescriptor) == [4096, -1024, 16]
    header = dicom.display_header(pydicom.dcmread(dicom_files["window_first_pair_unusable"].path))
    assert (float(header.WindowCenter), float(header.WindowWidth)) == (1800.0, 2400.0)
    header = dicom.display_header(pydicom.dcmread(dicom_files["rescale_slope_missing"].path))
    assert (float(header.RescaleSlope), float(header.RescaleIntercept)) == (1.0, -1024.0)


# ------------------------------------------------------------------------------------------------
# One pixel path: every public entry of the DICOM module gives the same pixels
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DISPLAY_CASES)
def test_every_entry_gives_identical_pixels(dicom_files: dict[str, DicomFile], name: str) -> None:
    path = dicom_files[name].path
    reference = np.asarray(dicom.read_dicom(path))
    with path.open("rb") as handle:
        from_handle = dicom.read_dicom(handle, name=name)
    images = {
        "bytes": dicom.read_dicom(path.read_bytes(), name=name),
        "bytearray": dicom.read_dicom(bytearray(path.read_bytes()), name=name),
        "file object": from_handle,
        "str path": dicom.read_dicom(str(path)),
        "read_dicom_and_view": dicom.read_dicom_and_view(path)[0],
        "encode_png round trip": Image.open(io.BytesIO(dicom.encode_png(dicom.read_dicom(path)))),
    }
    for entry, image in images.items():
        assert image.mode == "L", entry
        assert np.array_equal(np.asarray(image), reference), entry
    if name == "non_square_pixels":
        assert reference.shape == (128, 48)  # rows twice as tall -> twice as many rows
    else:
        assert np.array_equal(ours(path), reference)


@pytest.mark.parametrize("name", DISPLAY_CASES)
def test_identifying_elements_never_leave_the_reader(dicom_files: dict[str, DicomFile], name: str) -> None:
    path = dicom_files[name].path
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert all(str(header.get(k)) == v for k, v in IDENTIFYING_ELEMENTS.items())  # the file does carry them
    image = dicom.read_dicom(path)
    png = dicom.encode_png(image)
    for value in IDENTIFYING_ELEMENTS.values():
        for form in {value, value.replace("^", " "), value.split("^")[0]}:
            assert form.encode() not in png
            assert all(form not in str(v) for v in image.info.values())


# ------------------------------------------------------------------------------------------------
# Views
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VIEW_CASES)
def test_view_variants(dicom_files: dict[str, DicomFile], name: str) -> None:
    case = dicom_files[name]
    assert dicom.dicom_view_position(dicom.read_dicom_header(case.path)) == case.view
    image, view = dicom.read_dicom_and_view(case.path)
    assert view == case.view and image.size == (48, 64)


# ------------------------------------------------------------------------------------------------
# Bad files: a ValueError naming the file and the problem, through every entry
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_file_error_names_file_and_problem(dicom_files: dict[str, DicomFile], name: str) -> None:
    case = dicom_files[name]
    assert case.error is not None
    with pytest.raises(ValueError, match=re.escape(str(case.path)) + ": " + case.error):
        dicom.read_dicom(case.path)
    with pytest.raises(ValueError, match=re.escape(f"upload/{name}.dcm: ") + case.error):
        dicom.read_dicom_and_view(case.path.read_bytes(), name=f"upload/{name}.dcm")
    with pytest.raises(ValueError, match=r"^<DICOM>: " + case.error):
        dicom.dicom_to_array(pydicom.dcmread(case.path, force=True))


def test_compressed_file_without_an_installed_decoder(dicom_files: dict[str, DicomFile]) -> None:
    """JPEG Lossless is decoded only by pylibjpeg-libjpeg: without that plugin the error says what to install."""
    decoder = get_decoder(JPEGLosslessSV1)
    assert decoder.available_plugins == ("pylibjpeg",)
    decoder.remove_plugin("pylibjpeg")
    try:
        path = dicom_files["jpeg_lossless_sv1"].path
        message = (
            re.escape(f"{path}: compressed pixel data (JPEG Lossless, Non-Hierarchical, First-Order Prediction "
                      "(Process 14 [Selection Value 1]), 1.2.840.10008.1.2.4.70) could not be decoded (")
            + r".*\); install a pydicom decoder plugin for it \(the 'dicom' extra installs pylibjpeg"
        )
        with pytest.raises(ValueError, match=message):
            dicom.read_dicom(path)
    finally:
        decoder.add_plugin("pylibjpeg", ("pydicom.pixels.decoders.pylibjpeg", "_decode_frame"))
    assert decoder.is_available


def test_display_transform_failure_names_the_file(dicom_files: dict[str, DicomFile]) -> None:
    ds = pydicom.dcmread(dicom_files["palette_color"].path)
    del ds.RedPaletteColorLookupTableData
    with pytest.raises(ValueError, match=r"^x\.dcm: the DICOM display transforms failed \(ValueError: No suitable Palette"):
        dicom.dicom_to_array(ds, name="x.dcm")
