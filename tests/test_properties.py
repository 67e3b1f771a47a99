"""Property-based tests of the parsers: arbitrary input gives a result or a documented error, never a crash.

Documented errors are ValueError and FileNotFoundError (subclasses included), with a message that names
the file. Each parser sees at least 200 generated inputs per test (derandomized, so CI is repeatable).
Metric invariants (bounds, permutation invariance, perfect retrieval = 1) are the property tests in
tests/test_evaluation.py.
"""

from __future__ import annotations

import csv
import io
import tempfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from cxr_mtclip.data import label_from_mesh, load_openi, parse_nlm_xml
from cxr_mtclip.data import load_openi_reports

DOCUMENTED = (ValueError, FileNotFoundError)
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Characters XML 1.0 can carry (no controls but tab/newline, no surrogates or non-characters); \r is
# left out because XML turns it into \n.
XML_TEXT = st.lists(
    st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Co")) | st.sampled_from(["\n", "\t", " ", "&", "<", "]]>"]),
    max_size=30,
).map("".join)


def expect_documented(call):
    """Run `call`; a documented error is fine (its message must not be empty), anything else fails the test."""
    try:
        return call()
    except DOCUMENTED as err:
        assert str(err), f"{type(err).__name__} without a message"
        return None


# ------------------------------------------------------------------------------------------------
# NLM XML
# ------------------------------------------------------------------------------------------------

XML_PIECES = st.sampled_from([
    "<eCitation>", "</eCitation>", '<AbstractText Label="FINDINGS">', '<AbstractText Label="IMPRESSION">',
    "</AbstractText>", "<MeSH>", "</MeSH>", "<major>", "</major>", "<minor>", "</minor>", '<IUXRId id="',
    '<parentImage id="', '"/>', '">', "<caption>", "</caption>", "</parentImage>", '<?xml version="1.0" encoding="',
    "utf-8", "utf-16", "latin-1", "shift_jis", "ebcdic-cp-us", "no-such-codec", '"?>', '<!DOCTYPE e [<!ENTITY x "y">]>',
    '<!DOCTYPE e [<!ENTITY s SYSTEM "file:///etc/hostname">]>', "&x;", "&s;", "&amp;", "&#0;", "&#x41;", "&#xD800;",
    "<![CDATA[", "]]>", "<!--", "-->", "normal", "CXR12", "PA", "Lateral", "\x00", "\ufeff", " ", "\n",
])
XMLISH = st.lists(XML_PIECES | XML_TEXT, max_size=30).map("".join)


@PROPERTY
@given(st.binary(max_size=400))
@example(b'<?xml version="1.0" encoding="no-such-codec"?><eCitation/>')
@example('<?xml version="1.0" encoding="shift_jis"?><eCitation/>'.encode())
@example(b"\xff\xfe<\x00e\x00")
def test_parse_nlm_xml_on_arbitrary_bytes(data):
    study = expect_documented(lambda: parse_nlm_xml(data))
    if study is not None:
        assert isinstance(study.uid, str) and isinstance(study.findings, str) and isinstance(study.mesh, str)


@PROPERTY
@given(XMLISH, st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_parse_nlm_xml_on_xml_like_text(text, encoding):
    data = text.encode(encoding, errors="replace")
    study = expect_documented(lambda: parse_nlm_xml(data))
    if study is not None:
        assert all(c.view in (None, "PA", "AP", "LATERAL") for c in study.candidates)


@PROPERTY
@given(XMLISH)
def test_parse_nlm_xml_reads_files_and_names_them(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report 7.xml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            parse_nlm_xml(path)
        except DOCUMENTED as err:
            assert "report 7.xml" in str(err)


@st.composite
def nlm_reports(draw):
    """A valid NLM report with random content, and what parsing it must give back."""
    uid = draw(st.from_regex(r"(CXR)?[0-9]{1,6}", fullmatch=True))
    root = ET.Element("eCitation")
    ET.SubElement(root, "IUXRId", id=uid)
    abstract = ET.SubElement(ET.SubElement(ET.SubElement(root, "MedlineCitation"), "Article"), "Abstract")
    sections = {}
    for label in draw(st.lists(st.sampled_from(["FINDINGS", "IMPRESSION", "INDICATION", "COMPARISON"]), unique=True)):
        text = draw(XML_TEXT)
        element = ET.SubElement(abstract, "AbstractText", Label=draw(st.sampled_from([label, label.lower(), f" {label} "])))
        element.text = text
        sections[label] = text.strip()
    mesh = ET.SubElement(root, "MeSH")
    majors = draw(st.lists(XML_TEXT, max_size=4))
    for term in majors:
        ET.SubElement(mesh, "major").text = term
        if draw(st.booleans()):
            ET.SubElement(mesh, "minor").text = draw(XML_TEXT)
    names = draw(st.lists(st.from_regex(r"CXR[0-9]{1,4}_[0-9]_IM-[0-9]{4}-[0-9]{4}", fullmatch=True), max_size=4))
    for name in names:
        parent = ET.SubElement(root, "parentImage", id=name)
        ET.SubElement(parent, "caption").text = draw(st.sampled_from(["PA", "Lateral", "AP and lateral", "", "Frontal"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "us-ascii"]))
    expected = {
        "uid": uid.removeprefix("CXR"),
        "findings": sections.get("FINDINGS", ""),
        "impression": sections.get("IMPRESSION", ""),
        "mesh": ";".join(m.strip() for m in majors if m.strip()),
        "images": names,
    }
    return ET.tostring(root, encoding=encoding, xml_declaration=True), expected


@PROPERTY
@given(nlm_reports())
def test_parse_nlm_xml_round_trips_structured_reports(report):
    data, expected = report
    study = parse_nlm_xml(data)
    assert study.uid == expected["uid"]
    assert study.findings == expected["findings"] and study.impression == expected["impression"]
    assert study.mesh == expected["mesh"]
    assert [c.name for c in study.candidates] == expected["images"]


# ------------------------------------------------------------------------------------------------
# CSV: the Kaggle tables (load_openi) and ../shared/openi reports.csv (load_openi_reports)
# ------------------------------------------------------------------------------------------------

CELL = st.one_of(
    XML_TEXT,
    st.sampled_from(["normal", "Normal ", "No Indexing", "nan", "", "Cardiomegaly/mild;Pleural Effusion/left", '"',
                     '""', ",", "\n", "\r\n", "\x00", "\ufeff", "0", "1", "2", "abnormal"]),
)


@st.composite
def kaggle_tables(draw):
    """indiana_reports.csv / indiana_projections.csv text: random columns (required ones mostly present), random rows."""
    def table(required, optional):
        columns = list(required) + draw(st.lists(st.sampled_from(optional), unique=True, max_size=3))
        if draw(st.integers(0, 9)) == 0:
            columns.remove(draw(st.sampled_from(list(required))))  # sometimes a required column is missing
        columns = draw(st.permutations(columns))
        rows = draw(st.lists(st.lists(CELL, min_size=max(0, len(columns) - 2), max_size=len(columns) + 1), max_size=8))
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])))
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue()

    reports = table(["uid", "MeSH", "findings", "impression"], ["Problems", "image", "indication", "comparison"])
    projections = table(["uid", "filename", "projection"], ["extra"])
    return reports, projections


def kaggle_folder(folder: Path, reports: bytes, projections: bytes) -> Path:
    (folder / "indiana_reports.csv").write_bytes(reports)
    (folder / "indiana_projections.csv").write_bytes(projections)
    return folder


def check_kaggle_load(folder: Path, strict: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "test split scaled down" on tiny tables
        result = expect_documented(lambda: load_openi(
            folder, layout="kaggle", reports_only=True, strict=strict, show_progress=False,
            cache_dir=folder / "hf_cache", return_summary=True,
        ))
    if result is None:
        return
    splits, summary = result
    kept = sum(split.num_rows for split in splits.values())
    assert kept == summary.kept and kept + sum(summary.dropped.values()) == summary.studies_seen
    for split in splits.values():
        for row in split:
            assert row["report"].strip() and row["label"] == label_from_mesh(row["mesh"])


@PROPERTY
@given(kaggle_tables(), st.booleans())
def test_kaggle_csv_reader_on_random_tables(tables, strict):
    with tempfile.TemporaryDirectory() as folder:
        check_kaggle_load(kaggle_folder(Path(folder), tables[0].encode("utf-8", "surrogatepass"),
                                        tables[1].encode("utf-8", "surrogatepass")), strict)


@PROPERTY
@given(st.binary(max_size=300), st.booleans())
@example(b'uid,MeSH,findings,impression\n1,normal,"' + b"a" * 140_000 + b'",x\n', False)  # over csv's field limit
@example(b"uid,MeSH,findings,impression\n1,normal,\xff\xfe,x\n", True)  # not UTF-8
@example(b"\xef\xbb\xbfuid,MeSH,findings,impression\n1,normal,a,b\n", True)  # a BOM
def test_kaggle_csv_reader_on_arbitrary_bytes(data, strict):
    projections = b"uid,filename,projection\n1,1_IM-0001-1001.dcm.png,Frontal\n"
    with tempfile.TemporaryDirectory() as folder:
        check_kaggle_load(kaggle_folder(Path(folder), b"uid,MeSH,findings,impression\n" + data, projections), strict)


@st.composite
def shared_reports(draw):
    columns = draw(st.permutations(["uid", "findings", "impression", "mesh", "label"]
                                   + draw(st.lists(st.sampled_from(["image_file", "exam", "report"]), unique=True))))
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=len(columns) + 1), max_size=8))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


@PROPERTY
@given(shared_reports() | st.binary(max_size=300).map(lambda b: b"uid,findings,impression,mesh,label\n" + b))
@example(b"mesh,label,findings,impression,uid\nnormal,0,a\n")  # a short row: the last cells are missing
@example(b'uid,findings,impression,mesh,label\n1,"' + b"a" * 140_000 + b'",x,normal,0\n')
def test_shared_reports_csv_reader(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reports.csv"
        path.write_bytes(data)
        rows = expect_documented(lambda: load_openi_reports(path))
        for row in rows or []:
            assert row["report"].strip() and row["label"] in (0, 1) and row["label"] == label_from_mesh(row["mesh"])


# ------------------------------------------------------------------------------------------------
# DICOM headers and pixels
# ------------------------------------------------------------------------------------------------



def check_dicom(data: bytes) -> None:
    from cxr_mtclip.data.dicom import dicom_view_position, read_dicom_and_view, read_dicom_header

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values it tolerates
        header = expect_documented(lambda: read_dicom_header(data, name="random.dcm"))
        if header is not None:
            assert dicom_view_position(header) in (None, "PA", "AP", "LATERAL")
        decoded = expect_documented(lambda: read_dicom_and_view(data, name="random.dcm"))
    if decoded is not None:
        image, view = decoded
        assert image.mode == "L" and image.width >= 1 and image.height >= 1
        assert view in (None, "PA", "AP", "LATERAL")


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")
@PROPERTY
@given(st.binary(max_size=600), st.booleans())
def test_dicom_readers_on_random_bytes(data, preamble):
    check_dicom(b"\x00" * 128 + b"DICM" + data if preamble else data)


SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2: not decodable here
    "1.2.3.4.5.6",  # a private, unknown transfer syntax
]


@st.composite
def dicom_datasets(draw):
    """A DX dataset with random (often inconsistent) image attributes, transfer syntax and VOI/aspect elements."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, generate_uid

    syntax = UID(draw(st.sampled_from(SYNTAXES)))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    if draw(st.booleans()):
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
    rows, columns = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = draw(st.sampled_from([1, 1, 1, 3, 0]))
    ds.PhotometricInterpretation = draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "BOGUS"]))
    bits = draw(st.sampled_from([8, 16, 16, 32, 1, 12]))
    ds.BitsAllocated = bits
    ds.BitsStored = draw(st.sampled_from([bits, bits, 12, 0, 40]))
    ds.HighBit = max(0, ds.BitsStored - 1) if draw(st.booleans()) else draw(st.integers(0, 40))
    ds.PixelRepresentation = draw(st.sampled_from([0, 1, 2]))
    if draw(st.booleans()):
        ds.NumberOfFrames = draw(st.integers(0, 3))
    if draw(st.booleans()):
        ds.WindowCenter = draw(st.sampled_from(["100", "0", "-5", "1e9", "nan", "", "50\\60"]))
        ds.WindowWidth = draw(st.sampled_from(["100", "0", "-5", "1", "inf", "", "0.5", "1\\2"]))
        if draw(st.booleans()):
            ds.VOILUTFunction = draw(st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "CUBIC"]))
    if draw(st.booleans()):
        ds.RescaleSlope = draw(st.sampled_from(["1", "0", "-2", "1e30", "nan"]))
        ds.RescaleIntercept = draw(st.sampled_from(["0", "-1024", "inf"]))
    if draw(st.booleans()):
        item = Dataset()
        item.LUTDescriptor = draw(st.lists(st.integers(0, 70000), max_size=4))
        item.add_new(0x00283006, "US", draw(st.lists(st.integers(0, 65535), max_size=6)))
        ds.VOILUTSequence = Sequence([item])
    if draw(st.booleans()):
        ds.PixelSpacing = draw(st.lists(st.sampled_from(["0", "1", "0.5", "-1", "3"]), max_size=3))
    if draw(st.booleans()):
        ds.ViewPosition = draw(st.sampled_from(["PA", "AP", "LL", "", "XYZ"]))
    if draw(st.booleans()):
        ds.SeriesDescription = draw(st.sampled_from(["Chest PA", "lateral view", "", "AP portable"]))
    pixels = draw(st.sampled_from(["none", "exact", "random"]))
    if pixels != "none":
        if pixels == "exact":
            count = max(rows * columns * max(1, int(ds.SamplesPerPixel)) * max(1, bits // 8), 0)
            payload = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, count, dtype=np.uint8).tobytes()
        else:
            payload = draw(st.binary(max_size=200))
        if syntax.is_transfer_syntax and syntax.is_compressed or not syntax.is_transfer_syntax:
            payload = encapsulate([payload or b"\x00\x00"])
        elif len(payload) % 2:
            payload += b"\x00"
        ds.PixelData = payload
    buffer = io.BytesIO()
    try:
        if syntax.is_transfer_syntax:
            ds.save_as(buffer, enforce_file_format=True)
        else:
            ds.save_as(buffer, implicit_vr=False, little_endian=True)
    except (ValueError, TypeError, OSError):
        assume(False)  # pydicom itself refuses to write this combination
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")
@PROPERTY
@given(dicom_datasets())
def test_dicom_readers_on_random_datasets(data):
    check_dicom(data)
