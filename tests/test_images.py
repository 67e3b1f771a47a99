"""One image opener: the same file gives the same model pixels through every path that reads images.

Paths compared with `open_image(path)` -> processor (what `cxr-mtclip search --image` does):
the builder's stored bytes (`read_image_file`) as the collator receives them (undecoded) and as `datasets.Image`
decodes them; the file's path and bytes in a `datasets.Image` dict (a user's own dataset); `embed_dataset`'s
decoding; a PIL image opened lazily by the user. Files: 8-bit and 16-bit PNG, JPEG (one with an EXIF
orientation), RGBA, palette with transparency, LA, and every DICOM display case of `testing/dicom_files.py`
(standard files, header quirks, compressed transfer syntaxes).
"""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from cxr_mtclip.data.images import is_dicom_bytes, open_image, read_image_file
from cxr_mtclip.retrieval.embedding import embed_dataset, embed_images
from cxr_mtclip.training.collator import CxrMtClipDataCollator

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the quirks it reads


def _radiograph(mode: str, size: tuple[int, int] = (72, 90)) -> Image.Image:
    """A smooth non-symmetric image (so a rotation or a flip changes the pixels) in `mode`."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = (x / w * 0.6 + (y / h) ** 2 * 0.4)
    if mode == "I;16":
        return Image.fromarray((base * 4095).astype(np.uint16))
    grey = Image.fromarray((base * 255).astype(np.uint8), mode="L")
    if mode == "L":
        return grey
    if mode == "RGB":
        return Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey.rotate(90)))
    if mode == "RGBA":
        alpha = Image.fromarray(((y / h) * 255).astype(np.uint8), mode="L")
        return Image.merge("RGBA", (grey, grey, grey, alpha))
    if mode == "LA":
        return Image.merge("LA", (grey, grey.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    if mode == "P":
        palette = grey.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        palette.info["transparency"] = 0
        return palette
    raise ValueError(mode)


def _write(path: Path, image: Image.Image, fmt: str, **kwargs) -> Path:
    image.save(path, format=fmt, **kwargs)
    return path


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, Path]:
    from cxr_mtclip.testing.dicom_files import write_dicom_files

    folder = tmp_path_factory.mktemp("images")
    files = {
        "png_8bit": _write(folder / "l.png", _radiograph("L"), "PNG"),
        "png_16bit": _write(folder / "i16.png", _radiograph("I;16"), "PNG"),
        "jpeg": _write(folder / "rgb.jpg", _radiograph("RGB"), "JPEG", quality=90),
        "png_rgba": _write(folder / "rgba.png", _radiograph("RGBA"), "PNG"),
        "png_palette": _write(folder / "palette.png", _radiograph("P"), "PNG"),
        "png_la": _write(folder / "la.png", _radiograph("LA"), "PNG"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    files["jpeg_exif_rotated"] = _write(folder / "rotated.jpg", _radiograph("L"), "JPEG", quality=90, exif=exif)
    for case in write_dicom_files(folder / "dicom", kinds=("display",)):
        files[f"dicom_{case.name}"] = case.path
    # a DICOM file exported without the .dcm suffix is still DICOM: recognised by content
    plain = folder / "dicom" / "window_linear_no_suffix"
    plain.write_bytes(files["dicom_window_linear"].read_bytes())
    files["dicom_without_suffix"] = plain
    return files


def _pixels(processor, images) -> torch.Tensor:
    return processor(images=list(images))["pixel_values"]


def test_open_image_accepts_every_source_kind(image_files):
    path = image_files["png_16bit"]
    reference = np.asarray(open_image(path))
    assert open_image(path).mode.startswith("I")  # 16 bits kept: to_rgb scales them, nothing clips them here
    with open(path, "rb") as handle:
        from_file_object = open_image(handle)
    for image in (open_image(str(path)), open_image(path.read_bytes()), from_file_object,
                  open_image({"bytes": path.read_bytes(), "path": "ignored.png"}),
                  open_image({"bytes": None, "path": str(path)}), open_image(Image.open(path))):
        assert np.array_equal(np.asarray(image), reference)


def test_dicom_is_recognised_by_content(image_files):
    data = image_files["dicom_window_linear"].read_bytes()
    assert is_dicom_bytes(data[:132])
    assert not is_dicom_bytes(image_files["png_8bit"].read_bytes()[:132])
    by_name = open_image(image_files["dicom_window_linear"])
    for image in (open_image(data), open_image(image_files["dicom_without_suffix"]), open_image(io.BytesIO(data))):
        assert image.mode == "L" and np.array_equal(np.asarray(image), np.asarray(by_name))


def test_exif_orientation_is_applied_as_datasets_applies_it(image_files):
    path = image_files["jpeg_exif_rotated"]
    decoded = datasets.Image().decode_example({"bytes": path.read_bytes(), "path": None})
    opened = open_image(path)
    assert opened.size == (90, 72)  # stored 72 x 90, displayed rotated
    assert np.array_equal(np.asarray(opened), np.asarray(decoded))


def test_the_same_file_gives_the_same_model_pixels_on_every_path(image_files, tiny_processor):
    names = sorted(image_files)
    collator = CxrMtClipDataCollator(tiny_processor)
    stored = {name: read_image_file(image_files[name])[0] for name in names}  # what build-dataset writes
    built = datasets.Dataset.from_dict(
        {"image": [{"bytes": stored[n], "path": f"{n}.png"} for n in names], "report": ["clear"] * len(names)},
        features=datasets.Features({"image": datasets.Image(), "report": datasets.Value("string")}),
    )
    # a user's dataset of their own files: datasets keeps the path (DICOM included) and decodes nothing
    raw = datasets.Dataset.from_dict({"image": [str(image_files[n]) for n in names]},
                                     features=datasets.Features({"image": datasets.Image(decode=False)}))
    reference = _pixels(tiny_processor, [open_image(image_files[n]) for n in names])
    paths = {
        "collator, stored bytes (undecoded dataset)": collator(
            [{"image": {"bytes": stored[n], "path": None}, "report": "clear"} for n in names])["pixel_values"],
        "collator, datasets-decoded image": collator(
            [{"image": built[i]["image"], "report": "clear"} for i in range(len(names))])["pixel_values"],
        "collator, file path": collator([{"image": str(image_files[n]), "report": "clear"} for n in names])["pixel_values"],
        "collator, user's dataset (path only)": collator(
            [{"image": raw[i]["image"], "report": "clear"} for i in range(len(names))])["pixel_values"],
        "processor, PIL image opened lazily": _pixels(tiny_processor, [
            open_image(Image.open(image_files[n])) if not is_dicom_bytes(image_files[n].read_bytes()[:132])
            else open_image(image_files[n]) for n in names]),
    }
    for path_name, pixels in paths.items():
        differing = [n for i, n in enumerate(names) if not torch.equal(pixels[i], reference[i])]
        assert differing == [], f"{path_name}: different pixels for {differing}"


def test_embed_dataset_decodes_as_open_image(image_files, tiny_config, tiny_processor):
    from cxr_mtclip import CxrMtClipModel

    torch.manual_seed(0)
    model = CxrMtClipModel(tiny_config).eval()
    names = ["png_16bit", "jpeg_exif_rotated", "png_rgba", "dicom_monochrome1", "dicom_voi_lut_agfa_12_bit_in_16",
             "dicom_jpeg_2000_lossless"]
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": image_files[n].read_bytes(), "path": None} for n in names], "report": ["clear"] * len(names)},
        features=datasets.Features({"image": datasets.Image(), "report": datasets.Value("string")}),
    )
    embedded = embed_dataset(model, tiny_processor, dataset, batch_size=1, columns=["image_embeds"], show_progress=False)
    vectors = np.asarray(embedded["image_embeds"], dtype=np.float32)  # the column alone: DICOM bytes stay undecoded
    for i, name in enumerate(names):
        expected = embed_images(model, tiny_processor, open_image(image_files[name]))[0]
        np.testing.assert_array_equal(vectors[i], expected, err_msg=name)


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"scan\.png: unreadable image"):
        open_image(bad)
    with pytest.raises(ValueError, match=r"upload\.bin: unreadable image \(not an image format PIL or pydicom"):
        open_image(b"plain text, not an image", name="upload.bin")
    with pytest.raises(ValueError, match=r"query\.png: unreadable image \(the file is empty\)"):
        open_image(b"", name="query.png")
    with pytest.raises(FileNotFoundError, match=r"missing\.png: image file not found"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"cannot open a int as an image"):
        open_image(3)  # type: ignore[arg-type]
