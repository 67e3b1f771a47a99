"""Parsing the OpenI sources into study records: NLM XML (+ PNG/DICOM), the Kaggle tables, ../shared/openi.

Three source layouts are read (`detect_openi_layout` tells them apart):

* ``"nlm"``: the NLM originals, ``NLMCXR_reports.tgz`` (``ecgen-radiology/<n>.xml``) with ``NLMCXR_png.tgz``
  and/or ``NLMCXR_dcm.tgz``, as tarballs or extracted folders (XML, PNG and DICOM files are found recursively).
* ``"kaggle"``: ``indiana_reports.csv`` + ``indiana_projections.csv`` + an images folder
  (``images/images_normalized``, ``images_normalized`` or ``images``).
* ``"openi_shared"``: the project's test copy (``../shared/openi``): ``reports.csv`` + ``images/``.

Each reader returns `OpenIStudy` records (text, MeSH, the images a study lists with what is known of their
view); `cxr_mtclip.data.build.load_openi` turns them into a `DatasetDict`. Every CSV goes through one
reader (`read_csv`), ``reports.csv`` included (`load_openi_reports`).
"""

from __future__ import annotations

import csv
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .findings import findings_from_mesh
from .images import IMAGE_SUFFIXES, is_image_name
from .records import MALFORMED_XML, UNKNOWN_LABEL, ImageCandidate, OpenIStudy, _Recorder, progress
from .schema import join_report, label_from_mesh

__all__ = [
    "LAYOUTS",
    "REPORT_COLUMNS",
    "detect_openi_layout",
    "frontal_view_from_exam",
    "image_key",
    "load_openi_reports",
    "parse_nlm_xml",
    "read_csv",
]

LAYOUTS = ("nlm", "kaggle", "openi_shared")
_TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz")
_KAGGLE_REPORT_COLUMNS = ("uid", "MeSH", "findings", "impression")
_KAGGLE_PROJECTION_COLUMNS = ("uid", "filename", "projection")
REPORT_COLUMNS = ("uid", "findings", "impression", "mesh", "label")
"""Columns of ../shared/openi ``reports.csv`` that `load_openi_reports` needs."""
_SHARED_COLUMNS = ("uid", "image_file", "findings", "impression", "mesh", "label")


def _views_in_text(text: str) -> set[str]:
    upper = (text or "").upper()
    found = set()
    if re.search(r"POSTERO[- ]?ANTERIOR|\bPA\b", upper):
        found.add("PA")
    if re.search(r"ANTERO[- ]?POSTERIOR|\bAP\b|PORTABLE", upper):
        found.add("AP")
    if re.search(r"\bLAT(ERAL)?\b", upper):
        found.add("LATERAL")
    return found


def frontal_view_from_exam(exam: str) -> str:
    """The frontal projection an exam description names: "PA" or "AP" when exactly one is named, else "frontal".

    Example:
        >>> frontal_view_from_exam("Xray Chest PA and Lateral"), frontal_view_from_exam("Chest, 2 views")
        ('PA', 'frontal')
    """
    views = _views_in_text(exam) & {"PA", "AP"}
    return views.pop() if len(views) == 1 else "frontal"


def image_key(name: str) -> str:
    """A canonical id for an OpenI image name, shared by NLM and Kaggle spellings.

    Example:
        >>> image_key("CXR1_1_IM-0001-3001.png"), image_key("1_IM-0001-3001.dcm.png")
        ('1_IM-0001-3001', '1_IM-0001-3001')
    """
    base = PureWindowsPath(PurePosixPath(str(name)).name).name
    lower = base.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            base = base[: -len(suffix)]
            break
    match = re.fullmatch(r"(?:CXR)?(\d+)_(?:\d+_)?(IM-.+)", base, flags=re.IGNORECASE)
    return f"{match.group(1)}_{match.group(2)}" if match else base




# --------------------------------------------------------------------------------------------------
# Layout 1: NLM XML (+ PNG / DICOM), tarballs or folders
# --------------------------------------------------------------------------------------------------


def parse_nlm_xml(source: str | os.PathLike | bytes, *, name: str | None = None) -> OpenIStudy:
    """Parse one NLM ``ecgen-radiology/<n>.xml`` report (sections, MeSH majors, parentImage ids).

    `mesh` is the ``<MeSH><major>`` terms joined by ";" (the Kaggle tables' spelling); minor terms are
    ignored. Raises ValueError naming the file for malformed XML or a root other than ``eCitation``.

    Example:
        >>> study = parse_nlm_xml(b'<eCitation><IUXRId id="1"/><MeSH><major>normal</major></MeSH></eCitation>')
        >>> study.uid, study.mesh
        ('1', 'normal')
    """
    label = name or (os.fspath(source) if not isinstance(source, bytes) else "<XML bytes>")
    try:
        root = ET.fromstring(source) if isinstance(source, bytes) else ET.parse(os.fspath(source)).getroot()
    except (ET.ParseError, LookupError, ValueError) as exc:
        # LookupError: an unknown encoding declaration; ValueError: e.g. a multi-byte encoding expat refuses
        detail = str(exc) if isinstance(exc, ET.ParseError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{label}: malformed XML ({detail})") from exc
    except OSError as exc:
        raise FileNotFoundError(f"{label}: cannot read report XML ({exc})") from exc
    if root.tag != "eCitation":
        raise ValueError(f"{label}: expected an NLM report with root <eCitation>, found <{root.tag}>")
    uid = None
    for tag in ("IUXRId", "uId", "pmcId"):
        element = root.find(f".//{tag}")
        if element is not None and element.get("id"):
            uid = re.sub(r"^CXR", "", element.get("id", "").strip(), flags=re.IGNORECASE)
            break
    if not uid:
        uid = Path(label).stem
    sections: dict[str, str] = {}
    for element in root.iter("AbstractText"):
        section = (element.get("Label") or "").strip().upper()
        if section:
            sections[section] = "".join(element.itertext()).strip()
    mesh_element = root.find(".//MeSH")
    majors = []
    if mesh_element is not None:
        majors = [" ".join(m.itertext()).strip() for m in mesh_element.iter("major")]
    candidates = []
    for order, element in enumerate(root.iter("parentImage")):
        image_id = (element.get("id") or "").strip()
        if not image_id:
            continue
        caption = " ".join((element.findtext("caption") or "").split())
        views = _views_in_text(caption)
        view = views.pop() if len(views) == 1 else None
        candidates.append(ImageCandidate(name=image_id, path=None, view=view, order=order))
    return OpenIStudy(
        uid=str(uid),
        findings=sections.get("FINDINGS", ""),
        impression=sections.get("IMPRESSION", ""),
        mesh=";".join(m for m in majors if m),
        origin=label,
        candidates=candidates,
    )


def _is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_TAR_SUFFIXES)


def _tar_holds_reports(path: Path, peek: int = 50) -> bool:
    """Whether a tarball holds XML reports, judged from its first files with a known suffix (cheap peek)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for number, member in enumerate(tar):
                name = member.name.lower()
                if member.isfile() and name.endswith(".xml"):
                    return True
                if (member.isfile() and is_image_name(name)) or number >= peek:
                    return False
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable tar archive ({exc})") from exc
    return False


def _extract_members(tar_path: Path, dest: Path, wanted: Callable[[str], bool], show: bool) -> list[Path]:
    """Stream a (possibly huge) tarball once, writing the wanted regular files flat into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in progress(tar, show, desc=f"reading {tar_path.name}", unit="file"):
                if not member.isfile():
                    continue
                base = PurePosixPath(member.name).name
                if not base or base.startswith(".") or not wanted(base):
                    continue  # basename only: member paths never escape `dest`
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                target = dest / base
                if target.exists():  # same basename in two folders: keep the name (image_key relies on it)
                    target = dest / f"dup{len(written)}" / base
                    target.parent.mkdir()
                target.write_bytes(handle.read())
                written.append(target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{tar_path}: tar archive could not be read ({exc})") from exc
    return written




def _read_projection_table(path: Path) -> dict[str, str]:
    """Kaggle ``indiana_projections.csv`` -> {image_key: "Frontal"/"Lateral"}."""
    table: dict[str, str] = {}
    for row in read_csv(path, _KAGGLE_PROJECTION_COLUMNS):
        table[image_key(row["filename"])] = row["projection"].strip()
    return table


def _projection_view(projection: str, exam: str = "") -> str | None:
    text = projection.strip().lower()
    if text in {"frontal", "pa", "ap", "front"}:
        return projection.strip().upper() if text in {"pa", "ap"} else frontal_view_from_exam(exam)
    if text.startswith("lat"):
        return "LATERAL"
    return None


def _read_nlm(
    src: Path,
    workdir: Path,
    recorder: _Recorder,
    *,
    images: Sequence[str | os.PathLike] = (),
    projections: str | os.PathLike | None = None,
    reports_only: bool,
    show: bool,
) -> list[OpenIStudy]:
    search_dirs = [src] if src.is_dir() else []
    extra = [Path(p) for p in images]
    report_tars: list[Path] = []
    image_tars: list[Path] = []
    if src.is_file():
        report_tars.append(src)
        siblings = [p for p in src.parent.iterdir() if _is_tarball(p) and p != src]
        image_tars.extend(p for p in siblings if re.search(r"png|dcm|dicom|image", p.name, re.IGNORECASE))
        search_dirs.extend(
            p for p in src.parent.iterdir() if p.is_dir() and re.search(r"png|dcm|dicom", p.name, re.IGNORECASE)
        )
    else:
        for path in sorted(src.rglob("*")):
            if _is_tarball(path):
                (report_tars if _tar_holds_reports(path) else image_tars).append(path)
    for path in extra:
        if _is_tarball(path):
            image_tars.append(path)
        elif path.is_dir():
            search_dirs.append(path)
        else:
            raise FileNotFoundError(f"{path}: image source is neither a folder nor a tar archive")

    xml_files: list[Path] = sorted(p for p in src.rglob("*.xml") if p.is_file()) if src.is_dir() else []
    for index, tar_path in enumerate(report_tars):
        xml_files.extend(
            sorted(_extract_members(tar_path, workdir / f"xml{index}", lambda n: n.lower().endswith(".xml"), show))
        )
    if not xml_files:
        raise ValueError(f"{src}: no NLM report XML found (expected ecgen-radiology/<n>.xml or NLMCXR_reports.tgz)")

    studies: list[OpenIStudy] = []
    for xml_path in progress(xml_files, show, desc="parsing NLM reports", unit="report"):
        recorder.summary.studies_seen += 1
        try:
            study = parse_nlm_xml(xml_path, name=str(xml_path))
        except ValueError as exc:
            recorder.problem(MALFORMED_XML, str(exc))
            recorder.drop(MALFORMED_XML)
            continue
        studies.append(study)

    wanted = {image_key(c.name) for s in studies for c in s.candidates}
    index: dict[str, dict[str, Path]] = {}

    def add(path: Path) -> None:
        kind = "dicom" if path.name.lower().endswith((".dcm", ".dicom")) else "pixels"
        index.setdefault(image_key(path.name), {}).setdefault(kind, path)

    for directory in search_dirs:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and is_image_name(path.name):
                add(path)
    for number, tar_path in enumerate(image_tars):
        for path in _extract_members(
            tar_path, workdir / f"img{number}", lambda n: is_image_name(n) and image_key(n) in wanted, show
        ):
            add(path)
    if not index and not reports_only:
        raise ValueError(
            f"{src}: no image source found (expected NLMCXR_png.tgz / NLMCXR_dcm.tgz or folders of .png/.dcm); "
            "pass images=[...] or use reports_only=True"
        )

    table: dict[str, str] = {}
    projection_path = Path(projections) if projections else None
    if projection_path is None:
        for directory in ([src] if src.is_dir() else [src.parent]):
            found = directory / "indiana_projections.csv"
            if found.is_file():
                projection_path = found
    if projection_path is not None:
        table = _read_projection_table(projection_path)

    for study in studies:
        for candidate in study.candidates:
            key = image_key(candidate.name)
            files = index.get(key, {})
            candidate.path = files.get("pixels") or files.get("dicom") or Path(f"<{candidate.name}: not found>")
            candidate.dicom_path = files.get("dicom")
            if key in table:
                candidate.view = _projection_view(table[key]) or candidate.view
    return studies


# --------------------------------------------------------------------------------------------------
# Layout 2: Kaggle CSVs; layout 3: ../shared/openi/reports.csv
# --------------------------------------------------------------------------------------------------


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; expected at least {list(required)}")
            return [{k: (v if v is not None else "") for k, v in row.items() if k is not None} for row in reader]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: CSV file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a readable UTF-8 CSV ({exc})") from exc


def _find_kaggle_images(folder: Path) -> Path | None:
    for candidate in (folder / "images" / "images_normalized", folder / "images_normalized", folder / "images"):
        if candidate.is_dir():
            return candidate
    return None


def _read_kaggle(
    folder: Path, recorder: _Recorder, *, images_dir: str | os.PathLike | None, show: bool
) -> list[OpenIStudy]:
    reports_path = folder / "indiana_reports.csv"
    projections_path = folder / "indiana_projections.csv"
    reports = read_csv(reports_path, _KAGGLE_REPORT_COLUMNS)
    projections = read_csv(projections_path, _KAGGLE_PROJECTION_COLUMNS)
    image_folder = Path(images_dir) if images_dir else _find_kaggle_images(folder)
    by_uid: dict[str, list[dict[str, str]]] = {}
    for row in projections:
        by_uid.setdefault(row["uid"].strip(), []).append(row)
    studies = []
    for number, row in enumerate(progress(reports, show, desc="parsing Kaggle reports", unit="report")):
        uid = row["uid"].strip()
        exam = (row.get("image") or "").strip()
        candidates = []
        for order, image_row in enumerate(by_uid.get(uid, [])):
            filename = image_row["filename"].strip()
            path = (image_folder / filename) if image_folder else Path(f"<{filename}: no images folder in {folder}>")
            view = _projection_view(image_row["projection"], exam)
            candidates.append(ImageCandidate(name=filename, path=path, view=view, order=order))
        studies.append(
            OpenIStudy(
                uid=uid,
                findings=(row.get("findings") or "").strip(),
                impression=(row.get("impression") or "").strip(),
                mesh=(row.get("MeSH") or "").strip(),
                origin=f"{reports_path} (row {number + 2}, uid {uid})",
                candidates=candidates,
                exam=exam,
            )
        )
    recorder.summary.studies_seen += len(studies)
    return studies


def _read_shared(folder: Path, recorder: _Recorder, *, show: bool) -> list[OpenIStudy]:
    reports_path = folder / "reports.csv"
    rows = read_csv(reports_path, _SHARED_COLUMNS)
    studies = []
    for number, row in enumerate(progress(rows, show, desc="parsing reports.csv", unit="report")):
        uid = row["uid"].strip()
        exam = (row.get("exam") or "").strip()
        image_file = (row.get("image_file") or "").strip()
        candidates = []
        view = frontal_view_from_exam(exam)
        if image_file:
            candidates.append(ImageCandidate(name=image_file, path=folder / "images" / image_file, view=view))
        elif (row.get("has_frontal") or "0").strip() == "1":
            # listed upstream but not held in this copy: not an error, counted as image_not_held
            candidates.append(ImageCandidate(name=(row.get("frontal_filename") or "").strip(), path=None, view=view))
        study = OpenIStudy(
            uid=uid,
            findings=(row.get("findings") or "").strip(),
            impression=(row.get("impression") or "").strip(),
            mesh=(row.get("mesh") or "").strip(),
            origin=f"{reports_path} (row {number + 2}, uid {uid})",
            candidates=candidates,
            exam=exam,
        )
        declared = (row.get("label") or "").strip()
        if declared not in {"", "0", "1"}:
            recorder.problem(
                UNKNOWN_LABEL,
                f"{study.origin}: label column is {declared!r}; expected 0 (normal), 1 (abnormal) or empty",
            )
            recorder.drop(UNKNOWN_LABEL)
            continue
        study.label = int(declared) if declared else None
        studies.append(study)
    recorder.summary.studies_seen += len(rows)
    return studies


def detect_openi_layout(path: str | os.PathLike) -> str:
    """Which source layout `path` holds: "openi_shared", "kaggle" or "nlm" (ValueError if none).

    Example:
        >>> detect_openi_layout("../shared/openi"), detect_openi_layout("../shared/openi/raw")  # doctest: +SKIP
        ('openi_shared', 'kaggle')
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: OpenI source not found")
    if path.is_file():
        if _is_tarball(path):
            return "nlm"
        raise ValueError(f"{path}: expected a folder or an NLM reports tarball (NLMCXR_reports.tgz)")
    if (path / "reports.csv").is_file():
        return "openi_shared"
    if (path / "indiana_reports.csv").is_file():
        return "kaggle"
    if any(path.rglob("*.xml")) or any(_is_tarball(p) for p in path.rglob("*")):
        return "nlm"
    raise ValueError(
        f"{path}: no OpenI layout found; expected reports.csv (../shared/openi), indiana_reports.csv + "
        "indiana_projections.csv (Kaggle) or NLM XML reports / NLMCXR_*.tgz tarballs"
    )




def load_openi_reports(openi_dir: str | os.PathLike, *, drop_no_indexing: bool = False) -> list[dict[str, Any]]:
    """Real report rows from ``<openi_dir>/reports.csv`` (the ../shared/openi copy), for phantom pairing.

    Rows are read at run time only (the data is CC BY-NC-ND: never copy it into the repository). Each dict
    has uid, findings, impression, report, mesh, label; rows without report text are skipped; labels are
    re-derived with `label_from_mesh` and must agree with the file's label column (ValueError naming the row).
    ``drop_no_indexing`` also skips the ``No Indexing`` rows (as `load_openi`'s option of the same name).

    Example:
        >>> rows = load_openi_reports("../shared/openi")  # doctest: +SKIP
        >>> ds = make_phantom_openi(reports=rows[:100])  # doctest: +SKIP
    """
    path = Path(openi_dir)
    if path.is_dir():
        path = path / "reports.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OpenI reports.csv not found (see ../shared/openi/PROVENANCE.md)")
    rows = []
    for number, record in enumerate(read_csv(path, REPORT_COLUMNS), start=2):
        cell = {key: record[key].strip() for key in REPORT_COLUMNS}
        report = join_report(cell["findings"], cell["impression"])
        if not report:
            continue
        where = f"{path} (row {number}, uid {cell['uid']})"
        label = label_from_mesh(cell["mesh"], source=where)
        if cell["label"] and cell["label"] != str(label):
            raise ValueError(f"{where}: label column {cell['label']} disagrees with MeSH {cell['mesh']!r} ({label})")
        if drop_no_indexing and findings_from_mesh(cell["mesh"]) is None:
            continue
        rows.append({"uid": cell["uid"], "findings": cell["findings"], "impression": cell["impression"],
                     "report": report, "mesh": cell["mesh"], "label": label})
    return rows
