"""OpenI parsing, labels, views, splits and builds: NLM tarballs/folders written here, plus the real copy."""

from __future__ import annotations

import csv
import io
import contextlib
import os
import runpy
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_mtclip.data import (
    OPENI_FEATURES,
    OpenISummary,
    build_openi_dataset,
    detect_openi_layout,
    frontal_score,
    image_key,
    join_report,
    label_from_mesh,
    load_openi,
    openi_summary,
    parse_nlm_xml,
    make_phantom_openi,
    phantom_dataset_card,
    push_openi_to_hub,
    split_indices,
    split_label_counts,
    split_openi,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# Builders for small NLM-format sources (all content invented here)
# ------------------------------------------------------------------------------------------------


def nlm_xml(uid: int, findings: str | None, impression: str | None, majors: list[str], images: list) -> str:
    sections = ["<AbstractText Label=\"COMPARISON\">None.</AbstractText>",
                "<AbstractText Label=\"INDICATION\">Cough.</AbstractText>"]
    if findings is not None:
        sections.append(f"<AbstractText Label=\"FINDINGS\">{findings}</AbstractText>")
    if impression is not None:
        sections.append(f"<AbstractText Label=\"IMPRESSION\">{impression}</AbstractText>")
    mesh = "".join(f"<major>{m}</major>" for m in majors) + "<minor>ignored minor term</minor>"
    parents = []
    for entry in images:
        image_id, caption = entry if isinstance(entry, tuple) else (entry, None)
        cap = f"<caption>{caption}</caption>" if caption else ""
        parents.append(f"<parentImage id=\"{image_id}\"><figureId>F1</figureId>{cap}"
                       f"<panel type=\"single\"><url>/x/{image_id}.jpg</url></panel></parentImage>")
    return (
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<eCitation><meta type=\"rr\"/>"
        f"<uId id=\"CXR{uid}\"/><pmcId id=\"{uid}\"/><docSource>CXR</docSource><IUXRId id=\"{uid}\"/>"
        "<MedlineCitation><Article><Abstract>" + "".join(sections) + "</Abstract></Article></MedlineCitation>"
        f"<MeSH>{mesh}</MeSH>" + "".join(parents) + "</eCitation>"
    )


def frontal_png(seed: int = 0, size: int = 64) -> bytes:
    """Dark lung bands either side of a bright central band (what a frontal view looks like)."""
    rng = np.random.default_rng(seed)
    array = np.full((size, size), 70, dtype=np.uint8)
    columns = np.arange(size) / size
    array[:, (columns > 0.12) & (columns < 0.42)] = 30
    array[:, (columns > 0.58) & (columns < 0.88)] = 35
    array[:, (columns >= 0.42) & (columns <= 0.58)] = 200
    array = np.clip(array.astype(int) + rng.integers(0, 5, array.shape), 0, 255).astype(np.uint8)
    return png_bytes(array)


def lateral_png(size: int = 64) -> bytes:
    """One big field, bright on one side: no mediastinal band."""
    columns = np.linspace(220, 40, size)
    return png_bytes(np.tile(columns, (size, 1)).astype(np.uint8))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("ecgen-radiology" if path.name.startswith("NLMCXR_reports") else "png")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_dicom_bytes(pixels: np.ndarray, *, view: str, photometric: str = "MONOCHROME2",
                     window: tuple[float, float] | None = None, lut: tuple[list[int], list[int]] | None = None) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition = "DX", view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if lut:
        item = Dataset()
        item.LUTDescriptor = lut[0]
        item.add_new(0x00283006, "US", lut[1])
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


REPORTS = {
    # uid 1: normal; the lateral is listed first, no captions -> the image heuristic must pick 4001
    "1.xml": nlm_xml(1, "The heart is normal.\n      Lungs   are clear.", "No acute disease.", ["normal"],
                     ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
    # uid 2: impression only -> report == impression
    "2.xml": nlm_xml(2, "", "Mild cardiomegaly.", ["Cardiomegaly/mild", "Pleural Effusion/left"],
                     ["CXR2_1_IM-0002-1001", "CXR2_1_IM-0002-2001"]),
    # uid 3: no IMPRESSION element, views from captions, 'No Indexing' is abnormal
    "3.xml": nlm_xml(3, "Findings only.", None, ["No Indexing"],
                     [("CXR3_1_IM-0003-2001", "Lateral"), ("CXR3_1_IM-0003-1001", "PA")]),
    # uid 4: no text at all -> dropped
    "4.xml": nlm_xml(4, "", "", ["normal"], ["CXR4_1_IM-0004-1001"]),
}


def png_members() -> dict[str, bytes]:
    return {
        "CXR1_1_IM-0001-3001.png": lateral_png(),
        "CXR1_1_IM-0001-4001.png": frontal_png(1),
        "CXR2_1_IM-0002-1001.png": frontal_png(2),
        "CXR2_1_IM-0002-2001.png": lateral_png(),
        # uid 3: the lateral image looks frontal on purpose: the caption must win over the heuristic
        "CXR3_1_IM-0003-2001.png": frontal_png(30),
        "CXR3_1_IM-0003-1001.png": frontal_png(3),
        "CXR4_1_IM-0004-1001.png": frontal_png(4),
    }


def nlm_png_source(root: Path, reports: dict[str, str] | None = None, pngs: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    reports = REPORTS if reports is None else reports
    write_tar(root / "NLMCXR_reports.tgz", {f"ecgen-radiology/{k}": v.encode() for k, v in reports.items()})
    write_tar(root / "NLMCXR_png.tgz", png_members() if pngs is None else pngs)
    return root


def all_rows(splits) -> dict[str, dict]:
    rows = {}
    for split in splits.values():
        for row in split:
            assert row["uid"] not in rows
            rows[row["uid"]] = row
    return rows


def quiet_load(path, tmp_path: Path, **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "hf_cache")
    kwargs.setdefault("show_progress", False)
    expect_small = kwargs.pop("expect_small", True)
    with pytest.warns(UserWarning, match="scaled down") if expect_small else contextlib.nullcontext():
        return load_openi(path, **kwargs)


# ------------------------------------------------------------------------------------------------
# Rules
# ------------------------------------------------------------------------------------------------


def test_label_rule() -> None:
    assert label_from_mesh("normal") == 0
    assert label_from_mesh("  Normal ") == 0
    assert label_from_mesh("No Indexing") == 1
    assert label_from_mesh("Cardiomegaly/mild;Pleural Effusion/left") == 1
    assert label_from_mesh("normal;Cardiomegaly") == 1  # not *exactly* normal
    for bad in ("", "   ", None, "nan", "?", "123"):
        with pytest.raises(ValueError, match="row 7.*unknown label"):
            label_from_mesh(bad, source="row 7")


def test_report_rule() -> None:
    assert join_report(" A. ", " B. ") == "A. B."
    assert join_report("", "Impression.") == "Impression."
    assert join_report("Findings.", None) == "Findings."
    assert join_report("", "  ") == ""


def test_image_key_matches_nlm_and_kaggle_names() -> None:
    assert image_key("CXR1_1_IM-0001-4001.png") == image_key("1_IM-0001-4001.dcm.png") == "1_IM-0001-4001"
    assert image_key("some/dir/CXR5_IM-9999-1001.png") == "5_IM-9999-1001"
    assert image_key("CXR10_1_IM-0010-2001.dcm") == "10_IM-0010-2001"


def test_parse_nlm_xml_sections_mesh_images(tmp_path: Path) -> None:
    path = tmp_path / "2.xml"
    path.write_text(REPORTS["2.xml"])
    study = parse_nlm_xml(path)
    assert study.uid == "2"
    assert study.findings == "" and study.impression == "Mild cardiomegaly."
    assert study.report == "Mild cardiomegaly."
    assert study.mesh == "Cardiomegaly/mild;Pleural Effusion/left"  # majors only
    assert [c.name for c in study.candidates] == ["CXR2_1_IM-0002-1001", "CXR2_1_IM-0002-2001"]
    captioned = parse_nlm_xml(REPORTS["3.xml"].encode(), name="3.xml")
    assert [c.view for c in captioned.candidates] == ["LATERAL", "PA"]
    assert captioned.impression == ""


# ------------------------------------------------------------------------------------------------
# NLM tarballs and folders
# ------------------------------------------------------------------------------------------------


def test_nlm_png_tarballs(tmp_path: Path) -> None:
    src = nlm_png_source(tmp_path / "nlm")
    assert detect_openi_layout(src) == "nlm"
    splits, summary = quiet_load(src, tmp_path, return_summary=True)
    rows = all_rows(splits)
    assert set(rows) == {"1", "2", "3"}
    assert summary.dropped == {"no_report_text": 1}
    assert summary.studies_seen == 4 and summary.kept == 3
    one, two, three = rows["1"], rows["2"], rows["3"]
    assert one["findings"] == "The heart is normal.\n      Lungs   are clear."
    assert one["report"] == "The heart is normal.\n      Lungs   are clear. No acute disease."
    assert (one["label"], two["label"], three["label"]) == (0, 1, 1)
    assert two["report"] == "Mild cardiomegaly." and three["report"] == "Findings only."
    assert three["mesh"] == "No Indexing"
    # view choice: heuristic picks the frontal-looking image for uid 1; the caption decides for uid 3
    assert one["image_file"] == "CXR1_1_IM-0001-4001" and one["view"] == "frontal"
    assert two["image_file"] == "CXR2_1_IM-0002-1001"
    assert three["image_file"] == "CXR3_1_IM-0003-1001" and three["view"] == "PA"
    # pixels are the PNG's, unchanged
    expected = np.asarray(Image.open(io.BytesIO(frontal_png(1))))
    assert isinstance(one["image"], Image.Image)
    assert np.array_equal(np.asarray(one["image"]), expected)
    assert {r["source"] for r in rows.values()} == {"real"}
    assert splits["train"].features == OPENI_FEATURES


def test_nlm_extracted_folders_match_tarballs(tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    (folder / "ecgen-radiology").mkdir(parents=True)
    (folder / "NLMCXR_png").mkdir()
    for name, text in REPORTS.items():
        (folder / "ecgen-radiology" / name).write_text(text)
    for name, data in png_members().items():
        (folder / "NLMCXR_png" / name).write_bytes(data)
    from_folder = all_rows(quiet_load(folder, tmp_path))
    from_tar = all_rows(quiet_load(nlm_png_source(tmp_path / "tar"), tmp_path))
    assert from_folder.keys() == from_tar.keys()
    for uid in from_folder:
        for column in ("report", "label", "mesh", "view", "image_file"):
            assert from_folder[uid][column] == from_tar[uid][column]
        assert np.array_equal(np.asarray(from_folder[uid]["image"]), np.asarray(from_tar[uid]["image"]))


def test_nlm_dicom_tarball_views_and_pixels(tmp_path: Path) -> None:
    import pydicom  # noqa: F401  (the dicom extra is a test dependency)
    ramp = np.array([[0, 1000, 2000, 3000], [500, 1500, 2500, 4000]], dtype=np.uint16)
    reports = {
        "10.xml": nlm_xml(10, "Left effusion.", "Effusion.", ["Pleural Effusion/left"],
                          ["CXR10_1_IM-0010-1001", "CXR10_1_IM-0010-2001", "CXR10_1_IM-0010-3001"]),
        "11.xml": nlm_xml(11, "Clear.", "Normal.", ["normal"], ["CXR11_1_IM-0011-1001"]),
        "12.xml": nlm_xml(12, "Lateral only.", "", ["normal"], ["CXR12_1_IM-0012-1001"]),
    }
    dicoms = {
        "CXR10_1_IM-0010-1001.dcm": make_dicom_bytes(ramp, view="LL"),
        "CXR10_1_IM-0010-2001.dcm": make_dicom_bytes(ramp, view="AP", window=(2000, 1001)),
        "CXR10_1_IM-0010-3001.dcm": make_dicom_bytes(ramp, view="PA", photometric="MONOCHROME1"),
        "CXR11_1_IM-0011-1001.dcm": make_dicom_bytes(ramp, view="AP", lut=([4, 1000, 8], [10, 20, 30, 40])),
        "CXR12_1_IM-0012-1001.dcm": make_dicom_bytes(ramp, view="LL"),
    }
    root = tmp_path / "dcm"
    root.mkdir()
    write_tar(root / "NLMCXR_reports.tgz", {f"ecgen-radiology/{k}": v.encode() for k, v in reports.items()})
    write_tar(root / "NLMCXR_dcm.tgz", dicoms)
    splits, summary = quiet_load(root, tmp_path, return_summary=True)
    rows = all_rows(splits)
    assert set(rows) == {"10", "11"}
    assert summary.dropped == {"no_frontal_image": 1}
    # PA preferred over AP; MONOCHROME1 without a window: inverted min-max
    assert rows["10"]["view"] == "PA" and rows["10"]["image_file"] == "CXR10_1_IM-0010-3001"
    pa = np.asarray(rows["10"]["image"])
    expected = 255 - np.round(ramp / 4000 * 255)
    assert np.array_equal(pa, expected.astype(np.uint8))
    # VOI LUT: values below the first mapped entry take entry 0, above the last take the last entry
    assert rows["11"]["view"] == "AP"
    assert np.asarray(rows["11"]["image"]).tolist() == [[10, 10, 40, 40], [10, 40, 40, 40]]


def test_projection_table_sets_nlm_views(tmp_path: Path) -> None:
    src = nlm_png_source(tmp_path / "nlm")
    table = tmp_path / "projections.csv"
    # say uid 2's second image is the frontal one (its pixels look lateral: the table must win)
    table.write_text("uid,filename,projection\n2,2_IM-0002-1001.dcm.png,Lateral\n2,2_IM-0002-2001.dcm.png,Frontal\n")
    rows = all_rows(quiet_load(src, tmp_path, projections=table))
    assert rows["2"]["image_file"] == "CXR2_1_IM-0002-2001"


# ------------------------------------------------------------------------------------------------
# Bad input: error naming the file with strict=True, counted skip otherwise
# ------------------------------------------------------------------------------------------------

GOOD = {k: REPORTS[k] for k in ("1.xml", "2.xml")}


@pytest.mark.parametrize(
    ("case", "reason", "error", "pattern"),
    [
        ("malformed_xml", "malformed_xml", ValueError, r"9\.xml.*malformed XML"),
        ("missing_image", "missing_image", FileNotFoundError, r"CXR9_1_IM-0009-1001.*not found.*9\.xml"),
        ("unreadable_png", "unreadable_image", ValueError, r"CXR9_1_IM-0009-1001\.png.*unreadable image"),
        ("unreadable_dicom", "unreadable_image", ValueError, r"CXR9_1_IM-0009-1001\.dcm"),
        ("unknown_label", "unknown_label", ValueError, r"9\.xml.*unknown label"),
    ],
)
def test_bad_input(tmp_path: Path, case: str, reason: str, error: type, pattern: str) -> None:
    reports = dict(GOOD)
    pngs = png_members()
    bad_xml = nlm_xml(9, "Something.", "Else.", ["Nodule"], [("CXR9_1_IM-0009-1001", "PA")])
    if case == "malformed_xml":
        bad_xml = bad_xml[: len(bad_xml) // 2]
    elif case == "unreadable_png":
        pngs["CXR9_1_IM-0009-1001.png"] = b"\x89PNG\r\n\x1a\n" + b"truncated garbage" * 5
    elif case == "unreadable_dicom":
        pngs["CXR9_1_IM-0009-1001.dcm"] = b"\x00" * 128 + b"DICM" + b"garbage" * 10
    elif case == "unknown_label":
        bad_xml = nlm_xml(9, "Something.", "Else.", [], [("CXR9_1_IM-0009-1001", "PA")])
        pngs["CXR9_1_IM-0009-1001.png"] = frontal_png(9)
    reports["9.xml"] = bad_xml
    src = nlm_png_source(tmp_path / case, reports, pngs)
    splits, summary = quiet_load(src, tmp_path, return_summary=True)
    assert set(all_rows(splits)) == {"1", "2"}
    assert summary.dropped == {reason: 1}
    assert reason in summary.examples
    with pytest.raises(error, match=pattern):
        load_openi(src, strict=True, cache_dir=tmp_path / "hf_cache", show_progress=False)


def test_reports_only_keeps_studies_without_images(tmp_path: Path) -> None:
    pngs = png_members()
    del pngs["CXR2_1_IM-0002-1001.png"], pngs["CXR2_1_IM-0002-2001.png"]
    src = nlm_png_source(tmp_path / "nlm", pngs=pngs)
    with_images = all_rows(quiet_load(src, tmp_path))
    assert set(with_images) == {"1", "3"}
    splits, summary = quiet_load(src, tmp_path, reports_only=True, strict=True, return_summary=True)
    rows = all_rows(splits)
    assert set(rows) == {"1", "2", "3"}
    assert rows["2"]["image"] is None and rows["2"]["view"] is None and rows["2"]["report"] == "Mild cardiomegaly."
    assert isinstance(rows["1"]["image"], Image.Image)
    assert summary.kept_without_image == 1 and summary.images_missing_kept == {"missing_image": 1}


def test_kaggle_layout_written_here(tmp_path: Path) -> None:
    folder = tmp_path / "kaggle"
    (folder / "images").mkdir(parents=True)
    reports = [
        [1, "normal", "normal", "Xray Chest PA and Lateral", "", "", "Clear lungs.", "Normal."],
        [2, "Opacity/lung/base/left", "Opacity", "Chest AP portable", "", "", "", "Left opacity."],
        [3, "", "", "Chest, 2 views", "", "", "Text.", ""],  # unknown label
        [4, "normal", "normal", "Chest, 2 views", "", "", "Fine.", ""],
    ]

    def write_reports(rows: list) -> None:
        with open(folder / "indiana_reports.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
            writer.writerows(rows)

    write_reports(reports)
    with open(folder / "indiana_projections.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "filename", "projection"])
        for uid in (1, 2, 3, 4):
            writer.writerow([uid, f"{uid}_IM-000{uid}-2001.dcm.png", "Lateral"])
            writer.writerow([uid, f"{uid}_IM-000{uid}-1001.dcm.png", "Frontal"])
    for uid in (1, 2, 3, 4):
        (folder / "images" / f"{uid}_IM-000{uid}-1001.dcm.png").write_bytes(frontal_png(uid))
        (folder / "images" / f"{uid}_IM-000{uid}-2001.dcm.png").write_bytes(lateral_png())
    assert detect_openi_layout(folder) == "kaggle"
    splits, summary = quiet_load(folder, tmp_path, return_summary=True)
    rows = all_rows(splits)
    assert set(rows) == {"1", "2", "4"} and summary.dropped == {"unknown_label": 1}
    assert rows["1"]["view"] == "PA" and rows["2"]["view"] == "AP" and rows["4"]["view"] == "frontal"
    assert rows["1"]["image_file"] == "1_IM-0001-1001.dcm.png"
    with pytest.raises(ValueError, match=r"indiana_reports\.csv \(row 4, uid 3\).*unknown label"):
        load_openi(folder, strict=True, cache_dir=tmp_path / "hf_cache", show_progress=False)
    write_reports([row for row in reports if row[0] != 3])
    (folder / "images" / "4_IM-0004-1001.dcm.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"4_IM-0004-1001\.dcm\.png"):
        quiet_load(folder, tmp_path, strict=True, expect_small=False)


def test_unknown_layout_is_explained(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no OpenI layout"):
        detect_openi_layout(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        detect_openi_layout(tmp_path / "absent")


# ------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------


def test_split_indices_exact_stratified_deterministic() -> None:
    rng = np.random.default_rng(0)
    uids = [str(u) for u in rng.permutation(3000) + 1]
    labels = [int(u) % 3 != 0 for u in uids]  # ~1000 normal, ~2000 abnormal
    labels = [int(v) for v in labels]
    first, per_class = split_indices(uids, labels, seed=7)
    again, _ = split_indices(uids, labels, seed=7)
    other, _ = split_indices(uids, labels, seed=8)
    assert per_class == 200 and first == again and first["test"] != other["test"]
    test_labels = Counter(labels[i] for i in first["test"])
    assert test_labels == {0: 200, 1: 200}
    sets = [set(first[name]) for name in ("train", "validation", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(range(len(uids)))
    for c in (0, 1):
        rest = sum(1 for i in first["train"] + first["validation"] if labels[i] == c)
        val = sum(1 for i in first["validation"] if labels[i] == c)
        assert val == round(0.1 * rest)
    # input order does not matter, only (uid, label) pairs and the seed
    order = list(reversed(range(len(uids))))
    shuffled, _ = split_indices([uids[i] for i in order], [labels[i] for i in order], seed=7)
    assert {uids[order[i]] for i in shuffled["test"]} == {uids[i] for i in first["test"]}


def test_split_scales_down_with_warning() -> None:
    uids = [str(i) for i in range(30)]
    labels = [0] * 10 + [1] * 20
    with pytest.warns(UserWarning, match="scaled down to 5 normal \\+ 5 abnormal"):
        splits, per_class = split_indices(uids, labels, seed=0)
    assert per_class == 5 and len(splits["test"]) == 10
    with pytest.raises(ValueError, match="appears twice"):
        split_indices(["1", "1"], [0, 1])
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(uids, labels, val_fraction=1.0)


def test_split_openi_on_a_dataset() -> None:
    from datasets import Dataset

    ds = Dataset.from_dict({"uid": [str(i) for i in range(1000)], "label": [i % 2 for i in range(1000)]})
    splits = split_openi(ds, seed=3)
    assert splits["test"].num_rows == 400 and Counter(splits["test"]["label"]) == {0: 200, 1: 200}
    assert splits["validation"].num_rows == 60 and splits["train"].num_rows == 540


# ------------------------------------------------------------------------------------------------
# Build: save_to_disk round trip, card, load_dataset, CLI, push guard
# ------------------------------------------------------------------------------------------------


def test_build_save_load_round_trip(tmp_path: Path) -> None:
    from datasets import load_dataset, load_from_disk

    src = nlm_png_source(tmp_path / "nlm")
    out = tmp_path / "built"
    with pytest.warns(UserWarning, match="scaled down"):
        result = build_openi_dataset(src, out, cache_dir=tmp_path / "hf_cache", show_progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".built")]  # temp folder renamed away
    loaded = load_from_disk(str(out))
    assert set(loaded) == {"train", "validation", "test"}
    for name in loaded:
        assert loaded[name].features == OPENI_FEATURES
        original = result.dataset[name]
        assert list(loaded[name]["uid"]) == list(original["uid"])
        assert list(loaded[name]["report"]) == list(original["report"])
        for a, b in zip(loaded[name], original):
            assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    summary = openi_summary(loaded)
    assert isinstance(summary, OpenISummary) and summary.kept == 3 and summary.dropped == {"no_report_text": 1}
    card = (out / "README.md").read_text()
    assert "license: cc-by-nc-nd-4.0" in card and "Demner-Fushman" in card and "exactly `normal`" in card
    from huggingface_hub import DatasetCard

    parsed = DatasetCard.load(out / "README.md").data
    assert parsed.license == "cc-by-nc-nd-4.0" and "synthetic" not in parsed.tags
    assert {f["split"] for f in parsed.configs[0]["data_files"]} == {name for name in loaded if loaded[name].num_rows}
    via_loader = load_dataset(str(out), cache_dir=str(tmp_path / "hf_cache2"))
    assert sorted(uid for n in via_loader for uid in via_loader[n]["uid"]) == ["1", "2", "3"]
    with pytest.raises(FileExistsError, match="built"):
        build_openi_dataset(src, out, cache_dir=tmp_path / "hf_cache", show_progress=False)


def test_phantom_builds_get_a_card_saying_they_are_synthetic(tmp_path: Path) -> None:
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    from cxr_mtclip.cli import main

    out = tmp_path / "phantoms"
    assert main(["build-dataset", "--phantoms", "60", "--out", str(out), "--seed", "3"]) == 0
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "mit" and "synthetic" in card.data.tags
    assert "**These are not real X-rays.**" in card.text and "templated sentences" in card.text
    counts = split_label_counts(load_dataset(str(out), cache_dir=str(tmp_path / "cache")))  # through the card's configs
    assert sum(sum(c.values()) for c in counts.values()) == 60
    for split, c in counts.items():
        assert f"| {split} | {sum(c.values())} | {c['normal']} | {c['abnormal']} |" in card.text
    # phantoms paired with real reports carry the reports' licence
    real = phantom_dataset_card(split_openi(make_phantom_openi(40, seed=0, image_size=64), seed=0, test_per_class=5),
                                seed=0, real_reports="../shared/openi")
    assert real.data.license == "cc-by-nc-nd-4.0" and "real OpenI reports" in real.text


def test_build_parquet_format(tmp_path: Path) -> None:
    from datasets import load_dataset

    out = tmp_path / "pq"
    with pytest.warns(UserWarning):
        build_openi_dataset(nlm_png_source(tmp_path / "nlm"), out, output_format="parquet",
                            cache_dir=tmp_path / "hf_cache", show_progress=False)
    loaded = load_dataset(str(out), cache_dir=str(tmp_path / "hf_cache2"))
    rows = {row["uid"]: row for name in loaded for row in loaded[name]}
    assert set(rows) == {"1", "2", "3"}
    assert loaded["train"].features["label"].names == ["normal", "abnormal"]
    assert isinstance(rows["1"]["image"], Image.Image)


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    reports = dict(GOOD)
    reports["9.xml"] = "<eCitation><broken"
    src = nlm_png_source(tmp_path / "nlm", reports)
    with pytest.raises(ValueError, match="malformed XML"):
        build_openi_dataset(src, tmp_path / "out", strict=True, cache_dir=tmp_path / "c", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = nlm_png_source(tmp_path / "nlm")
    script = runpy.run_path(str(REPO_ROOT / "dataset_scripts" / "build_openi.py"))
    with pytest.warns(UserWarning):
        code = script["main"]([str(src), "--out", str(tmp_path / "cli_out"), "--seed", "3", "--quiet",
                               "--cache-dir", str(tmp_path / "hf_cache")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "dropped: no_report_text=1" in printed
    assert "train" in printed and "validation" in printed and "test" in printed
    assert (tmp_path / "cli_out" / "dataset_dict.json").is_file()
    # the script is `cxr-mtclip build-dataset`: a bad source is a usage error, exit code 2 as every cxr-mtclip error
    assert script["main"]([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def test_push_to_hub_refuses_offline(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    splits = DatasetDict({"train": Dataset.from_dict({"uid": ["1"], "label": [0]})})
    with pytest.raises(RuntimeError, match="offline"):
        push_openi_to_hub(splits, "someone/openi")
    # a build that would push checks first, before spending time and writing anything
    with pytest.raises(RuntimeError, match="someone/openi.*offline"):
        build_openi_dataset(nlm_png_source(tmp_path / "nlm"), tmp_path / "out", push_to_hub="someone/openi")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# The real copy (../shared/openi): read at run time only, never copied
# ------------------------------------------------------------------------------------------------


def _labels_from_reports_csv(openi_dir: Path) -> Counter:
    counts: Counter = Counter()
    with open(openi_dir / "reports.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            counts["normal" if row["mesh"].strip().lower() == "normal" else "abnormal"] += 1
    return counts


@pytest.fixture(scope="module")
def kaggle_reports_only(tmp_path_factory: pytest.TempPathFactory):
    env = os.environ.get("CXR_MTCLIP_OPENI")
    raw = (Path(env) if env else REPO_ROOT.parent / "shared" / "openi") / "raw"
    if not (raw / "indiana_reports.csv").is_file():
        pytest.skip(f"real OpenI copy not found at {raw} (set CXR_MTCLIP_OPENI or place ../shared/openi)")
    cache = tmp_path_factory.mktemp("hf_cache")
    splits, summary = load_openi(raw, reports_only=True, seed=42, cache_dir=cache, show_progress=False,
                                 return_summary=True)
    return raw, cache, splits, summary


@pytest.mark.openi
def test_real_kaggle_reports_only(openi_dir: Path, kaggle_reports_only) -> None:
    raw, cache, splits, summary = kaggle_reports_only
    expected = _labels_from_reports_csv(openi_dir)
    counts = Counter()
    for split in splits.values():
        counts.update("normal" if v == 0 else "abnormal" for v in split["label"])
    assert counts == expected
    assert summary.dropped == {"no_report_text": 25}
    assert Counter(splits["test"]["label"]) == {0: 200, 1: 200}
    uid_sets = [set(splits[name]["uid"]) for name in ("train", "validation", "test")]
    assert sum(len(s) for s in uid_sets) == len(set().union(*uid_sets))
    again = load_openi(raw, reports_only=True, seed=42, cache_dir=cache, show_progress=False)
    for name in splits:
        assert list(again[name]["uid"]) == list(splits[name]["uid"])
    with_images = [row for name in splits for row in splits[name].select_columns(["uid", "image"]) if row["image"]]
    assert len(with_images) == 6
    assert all(isinstance(row["image"], Image.Image) and row["image"].width > 100 for row in with_images)


@pytest.mark.openi
def test_real_kaggle_other_seed_changes_test_split(kaggle_reports_only) -> None:
    raw, cache, splits, _ = kaggle_reports_only
    labels = [row for name in splits for row in zip(splits[name]["uid"], splits[name]["label"])]
    first, _ = split_indices([u for u, _ in labels], [v for _, v in labels], seed=42)
    other, _ = split_indices([u for u, _ in labels], [v for _, v in labels], seed=43)
    assert {labels[i][0] for i in first["test"]} == set(splits["test"]["uid"])
    assert set(first["test"]) != set(other["test"])


@pytest.mark.openi
def test_real_shared_layout_images(openi_dir: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="scaled down"):
        splits, summary = load_openi(openi_dir, cache_dir=tmp_path / "c", show_progress=False, return_summary=True)
    rows = all_rows(splits)
    assert set(rows) == {"3", "7", "368", "383", "1900", "2843"}
    assert Counter(r["label"] for r in rows.values()) == {0: 2, 1: 4}
    assert summary.dropped["image_not_held"] + summary.dropped["no_frontal_image"] == 3826 - 6


@pytest.mark.openi
def test_frontal_heuristic_on_real_images(openi_dir: Path) -> None:
    frontal = [frontal_score(Image.open(p)) for p in sorted((openi_dir / "images").glob("*.png"))]
    lateral = [frontal_score(Image.open(p)) for p in sorted((openi_dir / "images_lateral").glob("*.png"))]
    assert len(frontal) == 6 and len(lateral) == 4
    from cxr_mtclip.data import FRONTAL_SCORE_THRESHOLD

    assert min(frontal) > FRONTAL_SCORE_THRESHOLD > max(lateral)


