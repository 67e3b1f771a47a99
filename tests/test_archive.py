"""Indexing a user's archive: PNG/JPEG/DICOM files with a CSV or JSONL of reports, as a hospital export looks.

DICOM files come from the simulated scanner files (`cxr_mtclip.testing.dicom_files`, with fake patient, site and
operator elements in every header), regrouped into studies with pydicom the way a PACS export groups them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_mtclip.data.archive import load_archive
from cxr_mtclip.testing.dicom_files import IDENTIFYING_ELEMENTS, write_dicom_files

STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"


@pytest.fixture(scope="module")
def dicom_cases(tmp_path_factory):
    return {case.name: case for case in write_dicom_files(tmp_path_factory.mktemp("dicom"))}


def write_archive(root: Path, cases: dict) -> Path:
    """A mixed archive: 8-bit and 16-bit PNG, JPEG, a DICOM study (PA + lateral, no extensions), a DICOM without
    any view, a study with a lateral only, a truncated DICOM, a text file and a metadata.csv."""
    import pydicom

    (root / "pngs").mkdir(parents=True)
    (root / "pacs" / "study1").mkdir(parents=True)
    (root / "pacs" / "study2").mkdir(parents=True)
    yy, xx = np.mgrid[0:96, 0:80]
    lungs = np.exp(-((xx - 25) ** 2 + (yy - 48) ** 2) / 300.0) + np.exp(-((xx - 55) ** 2 + (yy - 48) ** 2) / 300.0)
    Image.fromarray((1000 + 2500 * lungs).astype(np.uint16)).save(root / "pngs" / "p16.png")
    Image.fromarray((40 + 150 * lungs).astype(np.uint8)).save(root / "pngs" / "p8.png")
    Image.fromarray((40 + 150 * lungs).astype(np.uint8)).convert("RGB").save(root / "c.jpg", quality=90)
    for name, target in (("view_pa", "study1/IM0001"), ("view_ll", "study1/IM0002")):
        ds = pydicom.dcmread(cases[name].path)
        ds.StudyInstanceUID = STUDY_UID
        ds.save_as(root / "pacs" / target)
    lateral_only = pydicom.dcmread(cases["view_rl"].path)
    lateral_only.save_as(root / "pacs" / "study2" / "IM0001")
    shutil.copy(cases["view_none"].path, root / "pacs" / "noview.dcm")
    shutil.copy(cases["truncated_file"].path, root / "pacs" / "cut.dcm")
    (root / "notes.txt").write_text("export log")
    (root / "metadata.csv").write_text(
        "file_name,findings,impression,label,site\n"
        "pngs/p16.png,Heart size normal.,No acute disease.,normal,north\n"
        "pngs/p8.png,Small left pleural effusion.,,abnormal,south\n"
        "pacs/study1/IM0002,Cardiomegaly.,Enlarged heart.,abnormal,north\n"
        "gone.png,x,y,normal,east\n"
    )
    return root


def test_mixed_archive_rows_and_skipped_files(tmp_path, dicom_cases):
    root = write_archive(tmp_path / "archive", dicom_cases)
    result = load_archive(root, show_progress=False)
    rows = {row["image_file"]: row for row in result.dataset.remove_columns("image")}
    assert sorted(rows) == ["c.jpg", "pacs/noview.dcm", "pacs/study1/IM0001", "pngs/p16.png", "pngs/p8.png"]
    assert rows["pngs/p16.png"]["report"] == "Heart size normal. No acute disease." and rows["pngs/p16.png"]["label"] == 0
    assert rows["pngs/p8.png"]["report"] == "Small left pleural effusion." and rows["pngs/p8.png"]["site"] == "south"
    study = rows["pacs/study1/IM0001"]  # the PA image of the study; the CSV row named its lateral file
    assert study["view"] == "PA" and study["report"] == "Cardiomegaly. Enlarged heart." and study["label"] == 1
    assert study["uid"].startswith("dicom-") and STUDY_UID not in study["uid"]
    assert rows["pacs/noview.dcm"]["view"] == "frontal"  # no view in the header: the image rule judged it frontal
    assert rows["c.jpg"]["report"] is None and rows["c.jpg"]["label"] is None
    assert result.dataset.features["label"].names == ["normal", "abnormal"]
    skipped = {s.path: s.reason for s in result.skipped}
    assert skipped == {
        "notes.txt": "not_an_image",
        "pacs/study1/IM0002": "other_image_of_study",
        "pacs/study2/IM0001": "no_frontal_image",
        "pacs/cut.dcm": "unreadable_image",
        "gone.png": "metadata_without_file",
    }
    detail = {s.path: s.detail for s in result.skipped}
    assert "lateral view; the study's PA image pacs/study1/IM0001 was chosen" in detail["pacs/study1/IM0002"]
    assert detail["pacs/cut.dcm"].startswith("pacs/cut.dcm: pixel data could not be decoded")
    assert ("5 studies, 2 without a report (image-only), 2 without a label; skipped: metadata_without_file=1, "
            "no_frontal_image=1") in result.summary()
    # the stored 16-bit PNG is the file's own bytes; the DICOM is stored decoded, as PNG
    stored = result.dataset.cast_column("image", __import__("datasets").Image(decode=False))
    by_file = dict(zip(stored["image_file"], stored["image"]))
    assert by_file["pngs/p16.png"]["bytes"] == (root / "pngs" / "p16.png").read_bytes()
    assert by_file["pacs/study1/IM0001"]["bytes"].startswith(b"\x89PNG")


def test_strict_archive_stops_at_the_first_skip(tmp_path, dicom_cases):
    root = write_archive(tmp_path / "archive", dicom_cases)
    with pytest.raises(ValueError, match=r"notes\.txt: not PNG, JPEG or DICOM"):
        load_archive(root, strict=True, show_progress=False)
    (root / "notes.txt").unlink()
    (root / "pngs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # found while reading images
    with pytest.raises(ValueError, match=r"archive/pngs/bad\.png: unreadable image"):
        load_archive(root, strict=True, show_progress=False)


@pytest.mark.parametrize("name, message", [
    ("../outside.png", "points outside the archive folder"),
    ("/etc/passwd", "must be a relative path"),
    ("file:///etc/passwd", "must be a relative path"),
])
def test_metadata_file_names_must_stay_inside_the_archive(tmp_path, name, message):
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "metadata.csv").write_text(f"file_name,report\n{name},x\n")
    with pytest.raises(ValueError, match=rf"metadata\.csv: row 2: file_name .*{message}"):
        load_archive(tmp_path, show_progress=False)


def test_jsonl_metadata_in_a_subfolder_with_a_list_column(tmp_path):
    (tmp_path / "site_a").mkdir()
    for name in ("x.png", "y.png", "z.png"):
        Image.new("L", (16, 16), 90).save(tmp_path / "site_a" / name)
    lines = [
        {"file_name": "x.png", "report": "Cardiomegaly.", "mesh": "Cardiomegaly/mild", "findings_list": ["Cardiomegaly"]},
        {"file_name": "y.png", "report": "Normal chest.", "mesh": "normal", "findings_list": []},
        {"file_name": "z.png", "report": "Effusion.", "label": "sick", "findings_list": ["Effusion"]},
    ]
    (tmp_path / "site_a" / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = load_archive(tmp_path, show_progress=False)
    assert result.dataset["image_file"] == ["site_a/x.png", "site_a/y.png"]
    assert result.dataset["label"] == [1, 0] and result.dataset["findings_list"] == [["Cardiomegaly"], []]
    assert [(s.path, s.reason) for s in result.skipped] == [("site_a/z.png", "unknown_label")]
    from cxr_mtclip.retrieval import filter_mask

    assert filter_mask(result.dataset, {"findings_list": "Cardiomegaly"}).tolist() == [True, False]


def test_an_archive_without_a_readable_image_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=r"no study could be read \(skipped: \{'not_an_image': 1\}\)"):
        load_archive(tmp_path, show_progress=False)


def test_cli_indexes_the_archive_and_no_identifying_dicom_element_leaks(tmp_path, dicom_cases, capsys):
    """`cxr-mtclip index --images` -> search; no fake patient/site/operator value, nor the study UID, appears in
    any byte of the index folder or in the search output."""
    from cxr_mtclip import (
        CxrMtClipConfig,
        CxrMtClipModel,
        CxrMtClipProcessor,
        build_wordpiece_tokenizer,
    )
    from cxr_mtclip.cli import main

    root = write_archive(tmp_path / "archive", dicom_cases)
    tokenizer = build_wordpiece_tokenizer(["heart size normal", "small left pleural effusion", "cardiomegaly"],
                                          tmp_path / "tok", vocab_size=200)
    config = CxrMtClipConfig.from_registry("tiny", vocab_size=len(tokenizer))
    torch.manual_seed(0)
    CxrMtClipModel(config).save_pretrained(tmp_path / "model")
    CxrMtClipProcessor.from_config(config, tokenizer).save_pretrained(tmp_path / "model")

    assert main(["index", "--images", str(root), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    assert "5 studies" in out and "skipped pacs/cut.dcm: unreadable_image" in out and "skipped notes.txt: not_an_image" in out
    assert main(["search", "--index", str(tmp_path / "idx"), "--image", str(root / "pacs" / "noview.dcm"), "-k", "5",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["protocol"] == "cross-modal" and len(payload["hits"]) == 3  # the three studies with a report
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "effusion", "--filter", "site=north", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert sorted(h["image_file"] for h in hits) == ["pacs/study1/IM0001", "pngs/p16.png"]

    secrets = [value for value in IDENTIFYING_ELEMENTS.values()] + [STUDY_UID]
    secrets += [part for value in IDENTIFYING_ELEMENTS.values() for part in value.split("^") if len(part) > 4]
    blobs = {path: path.read_bytes() for path in (tmp_path / "idx").rglob("*") if path.is_file()}
    assert any(b"Cardiomegaly" in blob for blob in blobs.values())  # the scan does see the rows' text
    for secret in secrets:
        for path, blob in blobs.items():
            assert secret.encode() not in blob, f"{secret!r} found in {path}"
        assert secret not in json.dumps(payload) and secret not in json.dumps(hits)


def test_a_metadata_row_of_an_unreadable_file_is_skipped_once_for_its_real_reason(tmp_path):
    """A corrupt PNG named in metadata.csv is `unreadable_image`, not also `metadata_without_file` (the file is
    there); only a row naming an absent file is `metadata_without_file` (newcomer report, session 3)."""
    from cxr_mtclip.data.archive import load_archive

    root = tmp_path / "archive"
    root.mkdir()
    Image.fromarray(np.full((32, 32), 120, np.uint8)).save(root / "ok.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "metadata.csv").write_text("file_name,report,label\nok.png,Clear lungs.,normal\n"
                                       "corrupt.png,Effusion.,abnormal\nabsent.png,Nothing.,normal\n")
    result = load_archive(root, show_progress=False)
    reasons = sorted((item.path, item.reason) for item in result.skipped)
    assert reasons == [("absent.png", "metadata_without_file"), ("corrupt.png", "unreadable_image")]
    assert "metadata_without_file=1, unreadable_image=1" in result.summary()


def _tiny_model_folder(tmp_path: Path) -> Path:
    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipProcessor, build_wordpiece_tokenizer

    tokenizer = build_wordpiece_tokenizer(["heart size normal", "small left pleural effusion"], tmp_path / "tok",
                                          vocab_size=200)
    config = CxrMtClipConfig.from_registry("tiny", vocab_size=len(tokenizer))
    torch.manual_seed(0)
    CxrMtClipModel(config).save_pretrained(tmp_path / "model")
    CxrMtClipProcessor.from_config(config, tokenizer).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_an_archive_without_reports_finds_similar_xrays(tmp_path, capsys):
    """Images alone (no metadata file): the index says what works; the default image search names the way out;
    `--mode similar-images` (and the app's automatic choice) find the closest X-rays, the query's own file first."""
    from cxr_mtclip.cli import main
    from cxr_mtclip.retrieval import RetrievalIndex
    from cxr_mtclip.retrieval.app import resolve_mode

    root = tmp_path / "archive"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(root / f"x{i}.png")
    model = _tiny_model_folder(tmp_path)
    assert main(["index", "--images", str(root), "--model", str(model), "--out", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    assert "no study has a report" in out and "--mode similar-images" in out
    assert main(["search", "--index", str(tmp_path / "idx"), "--image", str(root / "x2.png")]) == 2
    err = capsys.readouterr().err
    assert "'text_embeds' index, which this index folder does not have" in err and "--mode similar-images" in err
    assert main(["search", "--index", str(tmp_path / "idx"), "--image", str(root / "x2.png"), "--mode",
                 "similar-images", "--json", "-k", "4"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["index"] == "image_embeds" and payload["hits"][0]["image_file"] == "x2.png"
    assert payload["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "x", "--image", str(root / "x2.png"),
                 "--mode", "similar-images"]) == 2
    assert "takes --image only" in capsys.readouterr().err
    # the app: "Automatic" with an image alone falls back to similar X-rays on a gallery without reports
    index = RetrievalIndex.load(tmp_path / "idx", model=str(model))
    assert resolve_mode("auto", True, False, index.index_names) == ("cross-modal", None, "image_embeds")
    assert resolve_mode("auto", True, False, ["image_embeds", "text_embeds"]) == ("cross-modal", None, None)
    assert resolve_mode("auto", True, True, index.index_names) == ("cross-modal", "text", "image_embeds")
    assert resolve_mode("image_to_image", True, True, index.index_names) == ("cross-modal", "text", "image_embeds")
    hits = index.search(image=root / "x1.png", k=1, index_name="image_embeds")
    assert hits.records[0]["image_file"] == "x1.png"
