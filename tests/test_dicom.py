"""DICOM reading: Modality LUT, VOI LUT / windowing, MONOCHROME1, aspect, views, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLSLossless, generate_uid  # noqa: E402

from cxr_mtclip.data.dicom import dicom_view_position, read_dicom, read_dicom_header  # noqa: E402

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    voi_lut: tuple[list[int], list[int], str] | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    view: str | None = "PA",
    spacing: tuple[float, float] | None = None,
    with_pixels: bool = True,
    voi_function: str | None = None,
) -> Dataset:
    """A minimal uncompressed 16-bit DX dataset (written by the tests, no real data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if view is not None:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        descriptor, data, vr = voi_lut
        item = Dataset()
        item.LUTDescriptor = descriptor
        if vr == "OW":
            item.add_new(0x00283006, "OW", np.asarray(data, dtype="<u2").tobytes())
        else:
            item.add_new(0x00283006, "US", data)
        ds.VOILUTSequence = Sequence([item])
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.array([[0, 1000, 1500, 1750], [2000, 2250, 2500, 4095]], dtype=np.uint16)


def test_window_linear_matches_dicom_formula(tmp_path: Path) -> None:
    path = save(make_dicom(RAMP, window=(2000, 1001)), tmp_path / "w.dcm")
    out = np.asarray(read_dicom(path))
    assert read_dicom(path).mode == "L"
    # DICOM C.11.2.1.2: below c - 0.5 - (w-1)/2 -> 0, above c - 0.5 + (w-1)/2 -> max, linear between
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, 2] == 0
    assert out[1, 2] == 255 and out[1, 3] == 255
    assert out[1, 0] == round((0.5 / 1000 + 0.5) * 255)  # 2000 -> 128
    assert out[0, 3] == round(((1750 - 1999.5) / 1000 + 0.5) * 255)  # 1750 -> 64
    assert out[1, 1] == round(((2250 - 1999.5) / 1000 + 0.5) * 255)  # 2250 -> 191


def test_modality_lut_applied_before_window(tmp_path: Path) -> None:
    # stored 1000 * 2 - 500 = 1500 -> window centre -> mid grey; stored 0 -> -500 -> black
    pixels = np.array([[0, 1000], [1250, 2000]], dtype=np.uint16)
    path = save(make_dicom(pixels, slope=2.0, intercept=-500.0, window=(1500, 1001)), tmp_path / "m.dcm")
    out = np.asarray(read_dicom(path))
    assert out[0, 0] == 0
    assert out[0, 1] == round((0.5 / 1000 + 0.5) * 255)
    assert out[1, 0] == 255  # 2000 is above the window
    assert out[1, 1] == 255


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    mono2 = np.asarray(read_dicom(save(make_dicom(RAMP, window=(2000, 1001)), tmp_path / "a.dcm")))
    mono1 = np.asarray(
        read_dicom(save(make_dicom(RAMP, window=(2000, 1001), photometric="MONOCHROME1"), tmp_path / "b.dcm"))
    )
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))
    assert mono1[0, 0] == 255  # lowest stored value is white in MONOCHROME1


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_voi_lut_sequence_used_and_preferred_over_window(tmp_path: Path, vr: str) -> None:
    pixels = np.array([[900, 1000, 1001], [1002, 1003, 3000]], dtype=np.uint16)
    lut = ([4, 1000, 8], [0, 51, 102, 255], vr)  # 4 entries, first mapped 1000, 8-bit output
    path = save(make_dicom(pixels, voi_lut=lut, window=(100, 10)), tmp_path / "lut.dcm")
    out = np.asarray(read_dicom(path))
    assert out.tolist() == [[0, 0, 51], [102, 255, 255]]


def test_no_voi_uses_min_max(tmp_path: Path) -> None:
    pixels = np.array([[100, 300], [500, 900]], dtype=np.uint16)
    out = np.asarray(read_dicom(save(make_dicom(pixels), tmp_path / "plain.dcm")))
    assert out.tolist() == [[0, round(200 / 800 * 255)], [round(400 / 800 * 255), 255]]


def test_sigmoid_window(tmp_path: Path) -> None:
    pixels = np.array([[1000, 2000, 3000]], dtype=np.uint16)
    out = np.asarray(read_dicom(save(make_dicom(pixels, window=(2000, 400), voi_function="SIGMOID"), tmp_path / "s.dcm")))
    assert out[0, 1] == 128  # sigmoid(0) = 0.5 -> 127.5 rounds to 128
    assert out[0, 0] < 5 and out[0, 2] > 250


def test_non_square_pixels_keep_physical_aspect(tmp_path: Path) -> None:
    pixels = np.tile(np.arange(20, dtype=np.uint16) * 100, (10, 1))  # 10 rows x 20 columns
    image = read_dicom(save(make_dicom(pixels, spacing=(0.2, 0.1)), tmp_path / "aspect.dcm"))
    assert image.size == (20, 20)  # rows are twice as tall as columns are wide
    square = read_dicom(save(make_dicom(pixels, spacing=(0.1, 0.1)), tmp_path / "square.dcm"))
    assert square.size == (20, 10)


def test_read_from_bytes_equals_read_from_path(tmp_path: Path) -> None:
    path = save(make_dicom(RAMP, window=(2000, 1001)), tmp_path / "bytes.dcm")
    assert np.array_equal(np.asarray(read_dicom(path.read_bytes())), np.asarray(read_dicom(path)))


def test_missing_pixel_data_names_file(tmp_path: Path) -> None:
    path = save(make_dicom(RAMP, with_pixels=False), tmp_path / "nopixels.dcm")
    with pytest.raises(ValueError, match=r"nopixels\.dcm.*no pixel data"):
        read_dicom(path)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEGBaseline8Bit])
def test_undecodable_compressed_data_names_file(tmp_path: Path, syntax: str) -> None:
    from pydicom.encaps import encapsulate

    ds = make_dicom(RAMP, with_pixels=False)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8 not really a compressed frame \xff\xd9" * 4])
    path = save(ds, tmp_path / "compressed.dcm")
    with pytest.raises(ValueError, match=r"compressed\.dcm.*compressed pixel data.*could not be decoded"):
        read_dicom(path)


def test_not_a_dicom_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x00\x01 this is not DICOM at all" * 3)
    with pytest.raises(ValueError, match=r"garbage\.dcm"):
        read_dicom(path)
    with pytest.raises(FileNotFoundError, match=r"absent\.dcm"):
        read_dicom(tmp_path / "absent.dcm")


@pytest.mark.parametrize(
    ("view", "expected"), [("PA", "PA"), ("AP", "AP"), ("LL", "LATERAL"), ("RL", "LATERAL"), ("", None), (None, None)]
)
def test_view_position(tmp_path: Path, view: str | None, expected: str | None) -> None:
    path = save(make_dicom(RAMP, view=view), tmp_path / "v.dcm")
    assert dicom_view_position(read_dicom_header(path)) == expected


def test_view_from_view_code_sequence_and_description() -> None:
    ds = Dataset()
    code = Dataset()
    code.CodeMeaning = "postero-anterior"
    ds.ViewCodeSequence = Sequence([code])
    assert dicom_view_position(ds) == "PA"
    other = Dataset()
    other.SeriesDescription = "CHEST LAT"
    assert dicom_view_position(other) == "LATERAL"
