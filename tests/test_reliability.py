"""Bad inputs at every entry point, atomic artifacts and safe loading (issue 8; table in docs/reliability.md).

Every test here builds its own inputs (no OpenI data). Each bad input must end in a ValueError or
FileNotFoundError whose message names the file / row / field and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_mtclip import CxrMtClipModel, CxrMtClipProcessor
from cxr_mtclip.atomic import atomic_update_directory
from cxr_mtclip.data import load_openi, read_image_file
from cxr_mtclip.retrieval.app import UserInputError, decode_upload
from cxr_mtclip.training import CxrMtClipDataCollator

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src" / "cxr_mtclip"


# ------------------------------------------------------------------------------------------------
# Inputs made here
# ------------------------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def noise_image(mode: str = "L", size: tuple[int, int] = (80, 96), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 4096, size[::-1], dtype=np.uint16))
    return Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), mode="L").convert(mode)


PNG = encoded(noise_image(), "PNG")
JPEG = encoded(noise_image(), "JPEG", quality=90)
BAD_IMAGES = {
    "truncated.png": PNG[: len(PNG) // 2],
    "truncated.jpg": JPEG[: len(JPEG) // 2],
    "corrupt_data.png": PNG[:100] + bytes(60) + PNG[160:],  # a broken zlib stream in IDAT
    "not_an_image.png": b"just some text, not pixels" * 4,
}


@pytest.fixture
def model_dir(tmp_path_factory, tiny_config, tiny_tokenizer_dir) -> Path:
    """A freshly saved tiny model + processor (copied per test so tests can damage it)."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    torch.manual_seed(0)
    CxrMtClipModel(tiny_config).save_pretrained(folder)
    CxrMtClipProcessor.from_config(tiny_config, tiny_tokenizer_dir).save_pretrained(folder)
    return folder


def rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def write_shared_layout(root: Path, rows: list[dict], images: dict[str, bytes]) -> Path:
    """A ../shared/openi-style folder (reports.csv + images/) with invented rows."""
    (root / "images").mkdir(parents=True)
    for name, data in images.items():
        (root / "images" / name).write_bytes(data)
    columns = ["uid", "image_file", "findings", "impression", "mesh", "label"]
    with open(root / "reports.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return root


def good_rows(n: int = 3) -> tuple[list[dict], dict[str, bytes]]:
    rows, images = [], {}
    for i in range(2 * n):
        normal = i % 2 == 0
        name = f"{i}.png"
        rows.append({"uid": str(i), "image_file": name, "findings": "Heart size normal." if normal else "Large effusion.",
                     "impression": "No acute disease." if normal else "Effusion.",
                     "mesh": "normal" if normal else "Pleural Effusion/right", "label": "0" if normal else "1"})
        images[name] = encoded(noise_image(seed=i), "PNG")
    return rows, images


def load_shared(root: Path, tmp_path: Path, **kwargs):
    return load_openi(root, test_per_class=1, cache_dir=tmp_path / "hf_cache", show_progress=False, **kwargs)


# ------------------------------------------------------------------------------------------------
# Corrupt / truncated PNG and JPEG: every entry point that opens an image
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_corrupt_or_truncated_image_file_is_named(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_IMAGES[name])
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: unreadable image"):
        read_image_file(path)


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_corrupt_or_truncated_upload_is_a_user_error(name):
    with pytest.raises(UserInputError, match=rf"{re.escape(name)}: not a readable image \(expected PNG, JPEG or DICOM\)"):
        decode_upload(BAD_IMAGES[name], name)


@pytest.mark.parametrize("name", ["truncated.png", "truncated.jpg", "corrupt_data.png"])
def test_processor_names_a_lazily_opened_corrupt_file(tmp_path, tiny_processor, name):
    path = tmp_path / name
    path.write_bytes(BAD_IMAGES[name])
    image = Image.open(path)  # PIL opens lazily: the damage shows only when the pixels are read
    with pytest.raises(ValueError, match=rf"image 0: .*{re.escape(name)}: cannot decode the pixels, the file is truncated or corrupt"):
        tiny_processor(images=[image])


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_collator_names_the_row_of_a_corrupt_image(tiny_processor, name):
    collator = CxrMtClipDataCollator(tiny_processor)
    good = {"uid": "ok-1", "image": {"bytes": PNG, "path": None}, "report": "heart size normal", "label": 0}
    bad = {"uid": "bad-7", "image": {"bytes": BAD_IMAGES[name], "path": None}, "report": "lungs clear", "label": 1}
    assert collator([good])["pixel_values"].shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"row uid='bad-7': column 'image' holds an unreadable image, truncated or corrupt"):
        collator([good, bad])


def test_build_from_shared_layout_with_a_truncated_jpeg(tmp_path):
    rows, images = good_rows()
    rows.append({"uid": "99", "image_file": "99.jpg", "findings": "Nodule.", "impression": "Nodule.",
                 "mesh": "Nodule", "label": "1"})
    images["99.jpg"] = BAD_IMAGES["truncated.jpg"]
    root = write_shared_layout(tmp_path / "src", rows, images)
    splits, summary = load_shared(root, tmp_path, return_summary=True)
    assert summary.dropped == {"unreadable_image": 1}
    assert "99" not in {uid for split in splits.values() for uid in split["uid"]}
    with pytest.raises(ValueError, match=r"99\.jpg: unreadable image \(OSError: image file is truncated"):
        load_shared(root, tmp_path, strict=True)


# ------------------------------------------------------------------------------------------------
# Empty images; RGBA / 16-bit / palette images are converted, not rejected
# ------------------------------------------------------------------------------------------------


def test_empty_images_are_refused_with_a_reason(tiny_processor, tmp_path):
    with pytest.raises(ValueError, match=r"image 0: image is empty \(0 pixels wide or high\)"):
        tiny_processor(images=[Image.new("L", (0, 0))])
    with pytest.raises(UserInputError, match=r"empty\.png: the file is empty"):
        decode_upload(b"", "empty.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png: unreadable image"):
        read_image_file(empty)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16", "P", "P+transparency", "1", "CMYK", "F"])
def test_unusual_modes_are_converted_through_every_reader(tmp_path, tiny_processor, mode):
    if mode == "P+transparency":
        image = noise_image("L").convert("P")
        image.info["transparency"] = 0
    elif mode == "F":
        image = Image.fromarray(np.linspace(-3.0, 7.0, 80 * 96, dtype=np.float32).reshape(96, 80), mode="F")
    else:
        image = noise_image(mode)
    fmt = "TIFF" if mode in ("F", "CMYK") else "PNG"
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt)
    _, decoded, _ = read_image_file(path)
    uploaded = decode_upload(path.read_bytes(), path.name)
    pixels = tiny_processor(images=[decoded, uploaded])["pixel_values"]
    assert pixels.shape == (2, 3, 64, 64) and torch.isfinite(pixels).all()
    assert torch.equal(pixels[0], pixels[1])
    assert pixels[0].std() > 0  # not flattened to one value by a bad conversion


def test_sixteen_bit_png_keeps_its_dynamic_range(tiny_processor, tmp_path):
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (64, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    _, image, _ = read_image_file(path)
    assert image.mode.startswith("I")
    pixels = tiny_processor(images=[image])["pixel_values"][0, 0]
    # 12-bit data scaled to the full 8-bit range: the first column is black and the last white, not clipped
    mean, std = tiny_processor.image_mean[0], tiny_processor.image_std[0]
    assert pixels[:, 0].mean().item() == pytest.approx((0 - mean) / std, abs=0.05)
    assert pixels[:, -1].mean().item() == pytest.approx((1 - mean) / std, abs=0.05)


# ------------------------------------------------------------------------------------------------
# DICOM without pixel data / with an unsupported transfer syntax / empty
# ------------------------------------------------------------------------------------------------


def dicom_file(path: Path, *, rows: int = 4, columns: int = 4, syntax: str | None = None, pixels: bool = True) -> Path:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixels and syntax:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = encapsulate([b"\x00\x01 not a codec stream " * 4])
    elif pixels:
        ds.PixelData = np.arange(rows * columns, dtype=np.uint16).tobytes()
    if syntax and not pydicom.uid.UID(syntax).is_transfer_syntax:
        ds.save_as(path, implicit_vr=False, little_endian=True)
    else:
        ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_without_pixel_data(tmp_path):
    from cxr_mtclip.data.dicom import read_dicom

    path = dicom_file(tmp_path / "header_only.dcm", pixels=False)
    with pytest.raises(ValueError, match=r"header_only\.dcm: DICOM file has no pixel data \(PixelData element missing\)"):
        read_dicom(path)
    with pytest.raises(ValueError, match=r"header_only\.dcm: DICOM file has no pixel data"):
        read_image_file(path)
    with pytest.raises(UserInputError, match=r"upload\.dcm: not a readable DICOM image \(.*no pixel data"):
        decode_upload(path.read_bytes(), "upload.dcm")


@pytest.mark.parametrize(
    ("syntax", "message"),
    [
        ("1.2.3.4.5", r"unsupported transfer syntax 1\.2\.3\.4\.5 \(not a standard DICOM transfer syntax\)"),
        ("1.2.840.10008.1.2.4.100", r"compressed pixel data \(MPEG2 .*could not be decoded .*install a pydicom decoder"),
        ("1.2.840.10008.1.2.4.90", r"compressed pixel data \(JPEG 2000 .*could not be decoded"),
    ],
)
def test_dicom_with_an_unsupported_transfer_syntax(tmp_path, syntax, message):
    from cxr_mtclip.data.dicom import read_dicom

    path = dicom_file(tmp_path / "odd_syntax.dcm", syntax=syntax)
    with pytest.raises(ValueError, match=rf"odd_syntax\.dcm: {message}"):
        read_dicom(path)


def test_dicom_with_zero_rows_is_an_empty_image(tmp_path):
    from cxr_mtclip.data.dicom import read_dicom

    path = dicom_file(tmp_path / "zero.dcm", rows=0, columns=0)
    with pytest.raises(ValueError, match=r"zero\.dcm: empty image \(Rows=0, Columns=0\); expected at least 1 x 1 pixels"):
        read_dicom(path)


# ------------------------------------------------------------------------------------------------
# Reports empty after cleaning; labels outside the known names
# ------------------------------------------------------------------------------------------------


def test_reports_empty_after_cleaning(tmp_path, tiny_processor):
    rows, images = good_rows()
    rows.append({"uid": "50", "image_file": "0.png", "findings": "  \n\t ", "impression": "   ", "mesh": "normal",
                 "label": "0"})
    root = write_shared_layout(tmp_path / "src", rows, images)
    _, summary = load_shared(root, tmp_path, return_summary=True, strict=True)
    assert summary.dropped == {"no_report_text": 1}
    with pytest.raises(ValueError, match=r"report 1 is empty or not a string: ' \\n\\t '"):
        tiny_processor(text=["heart size normal", " \n\t "])
    from cxr_mtclip.data import make_phantom_openi

    with pytest.raises(ValueError, match=r"reports\[0\] \(uid '5'\) has no report text"):
        make_phantom_openi(1, reports=[{"uid": "5", "findings": " ", "impression": "", "label": 0}], image_size=64)


def test_label_column_outside_the_known_names(tmp_path):
    rows, images = good_rows()
    rows.append({"uid": "77", "image_file": "0.png", "findings": "Heart.", "impression": "Fine.", "mesh": "normal",
                 "label": "2"})
    root = write_shared_layout(tmp_path / "src", rows, images)
    _, summary = load_shared(root, tmp_path, return_summary=True)
    assert summary.dropped == {"unknown_label": 1}
    with pytest.raises(ValueError, match=r"reports\.csv \(row 8, uid 77\): label column is '2'; expected 0 \(normal\), 1 \(abnormal\) or empty"):
        load_shared(root, tmp_path, strict=True)


def test_mesh_placeholder_is_an_unknown_label(tmp_path):
    rows, images = good_rows()
    rows.append({"uid": "78", "image_file": "0.png", "findings": "Heart.", "impression": "Fine.", "mesh": "nan",
                 "label": ""})
    root = write_shared_layout(tmp_path / "src", rows, images)
    with pytest.raises(ValueError, match=r"uid 78\): unknown label: MeSH value 'nan' is neither 'normal' nor a MeSH term list"):
        load_shared(root, tmp_path, strict=True)


def test_collator_and_training_data_refuse_unknown_labels(tiny_processor, tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    from cxr_mtclip.recipes.train import DataArguments, load_training_data

    collator = CxrMtClipDataCollator(tiny_processor)
    with pytest.raises(ValueError, match=r"row uid='u1': column 'label' must be 0 \(normal\) or 1 \(abnormal\), got 2"):
        collator([{"uid": "u1", "image": noise_image(), "report": "heart", "label": 2}])

    def saved(label_feature, labels, name):
        features = Features({"image": ImageFeature(), "report": Value("string"), "label": label_feature})
        data = {"image": [{"bytes": PNG, "path": None}] * len(labels), "report": ["heart"] * len(labels), "label": labels}
        DatasetDict({"train": Dataset.from_dict(data, features=features)}).save_to_disk(str(tmp_path / name))
        return DataArguments(dataset=str(tmp_path / name), eval_split=None, test_split=None)

    swapped = saved(ClassLabel(names=["abnormal", "normal"]), [0, 1], "swapped")
    with pytest.raises(ValueError, match=r"swapped \[train\]: column 'label' has class names \['abnormal', 'normal'\]; expected \['normal', 'abnormal'\]"):
        load_training_data(swapped, seed=0)
    three = saved(Value("int64"), [0, 1, 3], "three")
    with pytest.raises(ValueError, match=r"three \[train\]: column 'label' holds \[3\]; expected only 0 \(normal\) and 1 \(abnormal\)"):
        load_training_data(three, seed=0)


# ------------------------------------------------------------------------------------------------
# Configs with unknown or out-of-range fields
# ------------------------------------------------------------------------------------------------


def test_model_config_json_with_unknown_or_out_of_range_fields(model_dir):
    config_file = model_dir / "config.json"
    original = json.loads(config_file.read_text())
    for change, message in (
        ({"bce_wieght": 0.5}, r"unknown field\(s\) \['bce_wieght'\]"),
        ({"dropout": 1.5}, r"CxrMtClipConfig\.dropout must be in \[0, 1\), got 1\.5"),
        ({"supcon_temperature": 0}, r"CxrMtClipConfig\.supcon_temperature must be > 0, got 0"),
    ):
        config_file.write_text(json.dumps({**original, **change}))
        with pytest.raises(ValueError, match=rf"config\.json: not a valid CxrMtClipConfig \(.*{message}"):
            CxrMtClipModel.from_pretrained(model_dir)
    config_file.write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not a valid CxrMtClipConfig \(.*not a valid JSON file"):
        CxrMtClipModel.from_pretrained(model_dir)


def test_processor_config_with_an_unknown_field(model_dir):
    path = model_dir / "processor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "image_sise": 64}))
    with pytest.raises(ValueError, match=r"processor_config\.json: unknown field\(s\) \['image_sise'\]"):
        CxrMtClipProcessor.from_pretrained(model_dir)


def test_training_arguments_out_of_range(tmp_path):
    from cxr_mtclip.recipes.train import parse_training_args

    with pytest.raises(ValueError, match=r"hpo_trials must be >= 0, got -1"):
        parse_training_args(["--backbone", "tiny", "--output_dir", str(tmp_path), "--hpo_trials", "-1"])
    with pytest.raises(ValueError, match=r"head_learning_rate must be > 0, got 0\.0"):
        parse_training_args(["--backbone", "tiny", "--output_dir", str(tmp_path), "--head_learning_rate", "0"])
    with pytest.raises(ValueError, match=r"cannot override CxrMtClipConfig field\(s\) \['embed_dim'\]"):
        from cxr_mtclip.training import build_model

        build_model(backbone="tiny", embed_dim=8)


# ------------------------------------------------------------------------------------------------
# A model folder with missing, damaged or extra weight files
# ------------------------------------------------------------------------------------------------


def test_missing_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"tiny/model\.safetensors: missing; a saved CxrMtClipModel folder holds its weights as model\.safetensors"):
        CxrMtClipModel.from_pretrained(model_dir)


def test_missing_config(model_dir):
    (model_dir / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tiny/config\.json: missing"):
        CxrMtClipModel.from_pretrained(model_dir)


@pytest.mark.parametrize("keep", [0.5, 0.999, 8])
def test_truncated_weights(model_dir, keep):
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file, truncated or corrupt"):
        CxrMtClipModel.from_pretrained(model_dir)


def test_an_extra_pickled_weight_file_is_refused(model_dir, tiny_config):
    torch.save(CxrMtClipModel(tiny_config).state_dict(), model_dir / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"extra weight file\(s\) \['pytorch_model\.bin'\] beside \['model\.safetensors'\]"):
        CxrMtClipModel.from_pretrained(model_dir)
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors: missing.*it holds \['pytorch_model\.bin'\] \(pickle-based"):
        CxrMtClipModel.from_pretrained(model_dir)


def test_trainer_files_are_not_mistaken_for_weights(model_dir):
    # a Trainer output folder also holds training_args.bin, optimizer.pt, rng_state.pth: all allowed
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (model_dir / name).write_bytes(b"not read by from_pretrained")
    assert isinstance(CxrMtClipModel.from_pretrained(model_dir), CxrMtClipModel)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.update({"extra_head.weight": torch.zeros(3)}), r"1 unexpected tensor\(s\) \['extra_head\.weight'\]"),
        (lambda t: t.pop("classifier.weight"), r"1 missing tensor\(s\) \['classifier\.weight'\]"),
        (lambda t: t.update({"classifier.weight": torch.zeros(1, 7)}),
         r"tensor classifier\.weight has shape \(1, 7\), the architecture in config\.json expects \(1, 32\)"),
    ],
)
def test_weights_that_do_not_fit_the_architecture(model_dir, change, message):
    rewrite_weights(model_dir, change)
    with pytest.raises(ValueError, match=rf"tiny/model\.safetensors: (tensors do not match the architecture in config\.json: )?{message}"):
        CxrMtClipModel.from_pretrained(model_dir)


def test_cli_reports_a_damaged_model_in_one_line(model_dir, tmp_path, capsys):
    from cxr_mtclip.cli import main

    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    from datasets import Dataset

    Dataset.from_dict({"report": ["heart"]}).save_to_disk(str(tmp_path / "data"))
    capsys.readouterr()
    code = main(["embed", "--model", str(model_dir), "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "model.safetensors: not a readable safetensors file, truncated or corrupt" in err[0]
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------------------
# Mismatched index / dataset; queries of the wrong dimension
# ------------------------------------------------------------------------------------------------


def embedded_rows(n: int, dim: int, seed: int):
    from datasets import Dataset, Features, List, Value

    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    features = Features({"uid": Value("string"), "fused_embeds": List(Value("float32"), length=dim)})
    return Dataset.from_dict({"uid": [str(i) for i in range(n)], "fused_embeds": vectors.tolist()}, features=features)


def test_index_saved_for_one_dataset_is_refused_on_another(tmp_path):
    from cxr_mtclip.retrieval import build_index, load_faiss_index, save_faiss_index

    first = embedded_rows(12, 8, seed=0)
    build_index(first, "fused_embeds", "flat")
    save_faiss_index(first, "fused_embeds", tmp_path / "fused.faiss")
    with pytest.raises(ValueError, match=r"fused\.faiss: the index holds 12 rows but the dataset has 10"):
        load_faiss_index(embedded_rows(10, 8, seed=1), "fused_embeds", tmp_path / "fused.faiss")
    with pytest.raises(ValueError, match=r"fused\.faiss: the index has dimension 8 but the dataset's 'fused_embeds' column has dimension 4"):
        load_faiss_index(embedded_rows(12, 4, seed=1), "fused_embeds", tmp_path / "fused.faiss")
    with pytest.raises(ValueError, match=r"fused\.faiss: the dataset's 'fused_embeds' column differs from the vectors the index was built on"):
        load_faiss_index(embedded_rows(12, 8, seed=2), "fused_embeds", tmp_path / "fused.faiss")
    (tmp_path / "fused.faiss.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"fused\.faiss\.json: missing"):
        load_faiss_index(first, "fused_embeds", tmp_path / "fused.faiss")


def test_query_of_the_wrong_dimension(tmp_path):
    from cxr_mtclip.retrieval import build_index, search_embeddings

    rows = embedded_rows(12, 8, seed=0)
    build_index(rows, "fused_embeds", "flat")
    with pytest.raises(ValueError, match=r"query has shape \(5,\) but index 'fused_embeds' holds 8-d vectors; expected \(8,\) or \(n, 8\)"):
        search_embeddings(rows, "fused_embeds", np.ones(5, dtype=np.float32))
    with pytest.raises(ValueError, match=r"query has shape \(2, 3, 8\)"):
        search_embeddings(rows, "fused_embeds", np.ones((2, 3, 8), dtype=np.float32))
    scores, examples = search_embeddings(rows, "fused_embeds", np.asarray(rows[3]["fused_embeds"]), k=1)
    assert examples["uid"] == ["3"]


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------


def test_failed_model_save_leaves_the_old_model(model_dir, tiny_config, monkeypatch):
    before = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    import transformers.modeling_utils

    real_save = transformers.modeling_utils.safe_save_file

    def write_half_then_fail(tensors, filename, *args, **kwargs):
        real_save(tensors, filename, *args, **kwargs)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])
        raise OSError("disk full")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", write_half_then_fail)
    torch.manual_seed(1)
    with pytest.raises(OSError, match="disk full"):
        CxrMtClipModel(tiny_config).save_pretrained(model_dir)
    after = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    assert after == before
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".tiny.")]  # temp folder cleaned up
    monkeypatch.undo()
    assert isinstance(CxrMtClipModel.from_pretrained(model_dir), CxrMtClipModel)


def test_model_save_replaces_files_and_keeps_the_rest(model_dir, tiny_config, monkeypatch):
    (model_dir / "checkpoint-3").mkdir()
    (model_dir / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of an earlier save")
    order = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(Path(b).name), real_replace(a, b)))
    torch.manual_seed(3)
    new = CxrMtClipModel(tiny_config)
    new.save_pretrained(model_dir)
    monkeypatch.undo()
    assert order[-1] == "config.json" and "model.safetensors" in order  # the config lands last
    assert (model_dir / "checkpoint-3").is_dir() and (model_dir / "processor_config.json").is_file()
    assert not (model_dir / "model-00001-of-00002.safetensors").exists()
    loaded = CxrMtClipModel.from_pretrained(model_dir)
    assert torch.equal(loaded.classifier.weight, new.classifier.weight)


def test_failed_processor_save_leaves_the_old_processor(model_dir, tiny_processor, monkeypatch):
    before = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}

    def fail(self, folder, *args, **kwargs):
        (Path(folder) / "tokenizer.json").write_text("{half")
        raise OSError("killed")

    monkeypatch.setattr(type(tiny_processor.tokenizer), "save_pretrained", fail)
    tiny_processor.max_length = 7
    with pytest.raises(OSError, match="killed"):
        tiny_processor.save_pretrained(model_dir)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()} == before


def test_resume_last_skips_a_checkpoint_the_killed_run_did_not_finish(tmp_path):
    from cxr_mtclip.recipes.train import _resume_value, last_complete_checkpoint

    for step, state in ((2, "{}"), (10, "{}"), (12, None), (14, '{"log_hist')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if state is not None:  # trainer_state.json is the last file the Trainer writes into a checkpoint
            (folder / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert _resume_value("last", tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "checkpoint-12") is None
    with pytest.raises(FileNotFoundError, match=r"nowhere: --resume_from_checkpoint must be a checkpoint folder or 'last'"):
        _resume_value(str(tmp_path / "nowhere"), tmp_path)


def test_atomic_update_directory_on_error_touches_nothing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_update_directory(target, last=("a.txt",)) as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["a.txt"] and (target / "a.txt").read_text() == "old"


def test_every_writer_in_the_package_writes_a_temp_path():
    """Static check: each call that writes a file targets a temp path from an atomic helper (`tmp`).

    In-memory buffers are fine, and so are `save_pretrained` and `save_faiss_index`: CxrMtClipModel's and
    CxrMtClipProcessor's save_pretrained are atomic themselves (tests above), save_faiss_index uses atomic_file. A new bare `Path(out).write_text(...)` in the package fails here.
    """
    writer = re.compile(
        r"\.write_text\(|\.write_bytes\(|open\([^)]*[\"'][wax]b?\+?[\"']|\.save_to_disk\(|\.savefig\(|\.to_parquet\(|"
        r"np\.save\(|torch\.save\(|json\.dump\(|\.save_faiss_index\(|faiss\.write_index\(|\.to_csv\(|\.save\("
    )
    allowed = {
        ("openi.py", "target.write_bytes(handle.read())"),  # tar members unpacked into a TemporaryDirectory, not an artifact
        # RetrievalIndex.save writes through atomic_directory (test_index_folder.py::test_a_failed_add_leaves_...)
        ("cli.py", "index.save(args.out, overwrite=args.overwrite)"),
    }
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#")[0].strip()
            if not writer.search(code) or code.startswith(("def ", '"', "'", ">>>")):
                continue
            if re.search(r"\btmp\b|\bbuffer\b", code) or (path.name, code) in allowed:
                continue
            offenders.append(f"{path.relative_to(SRC)}:{number}: {code}")
    assert offenders == [], "\n".join(offenders)


# ------------------------------------------------------------------------------------------------
# Safe loading
# ------------------------------------------------------------------------------------------------


def test_no_unsafe_deserialisation_in_the_package():
    """torch.load only with weights_only=True; no pickle/joblib/dill; no trust_remote_code; np.load without pickles."""
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth and end < len(text):  # the call's arguments, up to the matching parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[match.start():end]
            if "weights_only=True" not in call:
                problems.append(f"{path.name}: {call}")
        for pattern in (r"^\s*import (pickle|dill|joblib|cloudpickle)\b", r"^\s*from (pickle|dill|joblib) import",
                        r"trust_remote_code\s*=\s*True", r"allow_pickle\s*=\s*True", r"pickle\.loads?\("):
            problems += [f"{path.name}: {m.group(0).strip()}" for m in re.finditer(pattern, text, flags=re.MULTILINE)]
    assert problems == [], problems


def test_automodel_loads_our_classes_without_trust_remote_code(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert "auto_map" not in config  # nothing points at code to download
    script = (
        "import sys, torch\n"
        "import cxr_mtclip\n"
        "from transformers import AutoConfig, AutoModel\n"
        "model = AutoModel.from_pretrained(sys.argv[1])\n"
        "assert type(model).__name__ == 'CxrMtClipModel', type(model)\n"
        "assert type(AutoConfig.from_pretrained(sys.argv[1])).__name__ == 'CxrMtClipConfig'\n"
        "direct = cxr_mtclip.CxrMtClipModel.from_pretrained(sys.argv[1])\n"
        "assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), direct.state_dict().values()))\n"
        "print('ok', type(model).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRUST_REMOTE_CODE"}
    result = subprocess.run([sys.executable, "-c", script, str(model_dir)], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok CxrMtClipModel" in result.stdout


class _Exploit:
    """Unpickling this would create a folder: the loaders must refuse it, not run it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _malicious(path: Path, marker: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump({"python": _Exploit(str(marker))}, handle, protocol=2)  # torch.save's protocol
    return path


def test_trainer_resume_files_are_loaded_weights_only(tmp_path, tiny_config, tiny_processor):
    """transformers' Trainer reads rng_state.pth / optimizer.pt / scheduler.pt with torch.load(weights_only=True)."""
    from cxr_mtclip.training import CxrMtClipTrainer, CxrMtClipTrainingArguments

    args = CxrMtClipTrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True,
                                      eval_strategy="no", save_strategy="no")
    trainer = CxrMtClipTrainer(model=CxrMtClipModel(tiny_config), args=args, processing_class=tiny_processor)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    marker = tmp_path / "code_ran"
    for name in ("rng_state.pth", "optimizer.pt", "scheduler.pt"):
        _malicious(checkpoint / name, marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer._load_rng_state(str(checkpoint))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer._load_optimizer_and_scheduler(str(checkpoint))
    assert not marker.exists()


def test_backbone_and_model_loaders_never_unpickle_code(tmp_path, model_dir):
    from cxr_mtclip.backbone import load_open_clip_state_dict

    marker = tmp_path / "code_ran"
    with pytest.raises(ValueError, match=r"evil\.bin: cannot be read as a weights-only torch checkpoint"):
        load_open_clip_state_dict(_malicious(tmp_path / "evil.bin", marker))
    (model_dir / "model.safetensors").unlink()
    _malicious(model_dir / "pytorch_model.bin", marker)
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        CxrMtClipModel.from_pretrained(model_dir)
    assert not marker.exists()
