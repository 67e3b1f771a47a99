"""OpenI (Indiana University chest X-rays) -> `datasets.DatasetDict`: parsing, labels, frontal views, splits.

Three source layouts are read (`detect_openi_layout` tells them apart):

* ``"nlm"``: the NLM originals, ``NLMCXR_reports.tgz`` (``ecgen-radiology/<n>.xml``) with ``NLMCXR_png.tgz``
  and/or ``NLMCXR_dcm.tgz``, as tarballs or extracted folders (XML, PNG and DICOM files are found recursively).
* ``"kaggle"``: ``indiana_reports.csv`` + ``indiana_projections.csv`` + an images folder
  (``images/images_normalized``, ``images_normalized`` or ``images``).
* ``"openi_shared"``: the project's test copy (``../shared/openi``): ``reports.csv`` + ``images/``.

Rules applied to every layout:

* ``report`` = findings and impression (each stripped) joined by one space; an empty part is skipped, so a
  study with only an impression has ``report == impression``. Studies where both are empty are dropped
  (``no_report_text``).
* ``label`` (`label_from_mesh`): normal (0) iff the MeSH string is exactly ``normal`` after strip/casefold;
  any other MeSH string is abnormal (1), ``No Indexing`` included. An empty MeSH or a placeholder
  (``nan``, ``none``, ``unknown``, ...) is an unknown label.
* ``view`` (`select_frontal`): one frontal image per study, PA preferred over AP over an unspecified
  frontal. Views come from the projection table (Kaggle ``projection``, refined to PA/AP when the exam
  description names exactly one of them), the DICOM header (`dicom_view_position`), an NLM image caption
  naming exactly one view, and, when none of those exists (NLM PNGs alone), a documented image heuristic
  (`frontal_score`: a frontal radiograph has a bright mediastinum between two darker lung fields).
* Bad input (malformed XML, missing image, unreadable PNG/DICOM, unknown label) raises an error naming the
  file with ``strict=True``; otherwise the study is skipped and counted per reason in the `OpenISummary`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import tarfile
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image as PILImage

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from .atomic import atomic_directory
from .dicom import dicom_view_position, encode_png, read_dicom_and_view, read_dicom_header
from .phantoms import load_openi_reports, make_phantom_openi

LABEL_NAMES = ["normal", "abnormal"]
SPLIT_NAMES = ("train", "validation", "test")
LAYOUTS = ("nlm", "kaggle", "openi_shared")

OPENI_FEATURES = Features(
    {
        "uid": Value("string"),
        "image": datasets.Image(),
        "findings": Value("string"),
        "impression": Value("string"),
        "report": Value("string"),
        "label": ClassLabel(names=LABEL_NAMES),
        "mesh": Value("string"),
        "view": Value("string"),
        "image_file": Value("string"),
        "source": Value("string"),
    }
)

FRONTAL_VIEWS = ("PA", "AP", "frontal")  # preference order
FRONTAL_SCORE_THRESHOLD = 0.4
_SUMMARY_KEY = "cxr_mtclip_openi_summary"
_UNKNOWN_MESH = {"", "nan", "none", "null", "n/a", "na", "unknown", "?", "-"}
_IMAGE_SUFFIXES = (".dcm.png", ".png", ".jpg", ".jpeg", ".dcm", ".dicom")
_TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz")
_KAGGLE_REPORT_COLUMNS = ("uid", "MeSH", "findings", "impression")
_KAGGLE_PROJECTION_COLUMNS = ("uid", "filename", "projection")
_SHARED_COLUMNS = ("uid", "image_file", "findings", "impression", "mesh", "label")

# Drop / problem reasons, as counted in OpenISummary.
NO_REPORT_TEXT = "no_report_text"
UNKNOWN_LABEL = "unknown_label"
LABEL_MISMATCH = "label_mismatch"
MALFORMED_XML = "malformed_xml"
DUPLICATE_UID = "duplicate_uid"
NO_FRONTAL_IMAGE = "no_frontal_image"
IMAGE_NOT_HELD = "image_not_held"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"


# --------------------------------------------------------------------------------------------------
# Labels and report text
# --------------------------------------------------------------------------------------------------


def label_from_mesh(mesh: str | None, *, source: str | None = None) -> int:
    """0 (normal) iff the MeSH string is exactly "normal" after strip/casefold, else 1 (abnormal).

    Raises ValueError (naming `source` when given) for an empty or placeholder MeSH value.

    Example:
        >>> label_from_mesh("normal"), label_from_mesh("Cardiomegaly/mild;Pleural Effusion/left")
        (0, 1)
    """
    text = "" if mesh is None else str(mesh).strip()
    where = f"{source}: " if source else ""
    if text.casefold() in _UNKNOWN_MESH or not re.search(r"[A-Za-z]", text):
        raise ValueError(
            f"{where}unknown label: MeSH value {mesh!r} is neither 'normal' nor a MeSH term list "
            "(e.g. 'Cardiomegaly/mild;Pleural Effusion/left' or 'No Indexing')"
        )
    return 0 if text.casefold() == "normal" else 1


def join_report(findings: str | None, impression: str | None) -> str:
    """Findings and impression (stripped) joined by one space, skipping an empty part.

    Example:
        >>> join_report("Heart size normal.", ""), join_report("A.", "B.")
        ('Heart size normal.', 'A. B.')
    """
    parts = [(part or "").strip() for part in (findings, impression)]
    return " ".join(part for part in parts if part)


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
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            base = base[: -len(suffix)]
            break
    match = re.fullmatch(r"(?:CXR)?(\d+)_(?:\d+_)?(IM-.+)", base, flags=re.IGNORECASE)
    return f"{match.group(1)}_{match.group(2)}" if match else base


def _uid_sort_key(uid: str) -> tuple[int, int, str]:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)


# --------------------------------------------------------------------------------------------------
# Records and summary
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageCandidate:
    """One image a study lists; `path` None means the source does not hold it (not an error)."""

    name: str
    path: Path | None
    view: str | None = None  # "PA", "AP", "frontal", "LATERAL" or None (unknown)
    order: int = 0
    dicom_path: Path | None = None  # a DICOM twin of a PNG, read for its ViewPosition only


@dataclass
class OpenIStudy:
    """One parsed study before image selection."""

    uid: str
    findings: str
    impression: str
    mesh: str
    origin: str  # the file (and row) it came from, for error messages
    candidates: list[ImageCandidate] = field(default_factory=list)
    exam: str = ""
    label: int | None = None

    @property
    def report(self) -> str:
        return join_report(self.findings, self.impression)


@dataclass
class OpenISummary:
    """What a build kept and dropped, per reason; stored as JSON in every split's `info.description`."""

    layout: str
    source: str
    reports_only: bool
    strict: bool
    seed: int
    studies_seen: int = 0
    kept: int = 0
    kept_with_image: int = 0
    kept_without_image: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    images_missing_kept: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    test_per_class: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({_SUMMARY_KEY: asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OpenISummary:
        try:
            payload = json.loads(text)[_SUMMARY_KEY]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("description does not hold an OpenI build summary") from exc
        return cls(**payload)

    def format(self) -> str:
        """A human-readable multi-line summary (printed by dataset_scripts/build_openi.py)."""
        lines = [
            f"OpenI source: {self.source} (layout {self.layout}, reports_only={self.reports_only}, "
            f"strict={self.strict}, seed={self.seed})",
            f"studies seen: {self.studies_seen}; kept: {self.kept} "
            f"({self.kept_with_image} with image, {self.kept_without_image} without)",
            "labels: " + ", ".join(f"{k}={v}" for k, v in self.label_counts.items()),
        ]
        if self.views:
            lines.append("views: " + ", ".join(f"{k}={v}" for k, v in sorted(self.views.items())))
        lines.append("dropped: " + (", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"))
        if self.images_missing_kept:
            lines.append(
                "kept without image: " + ", ".join(f"{k}={v}" for k, v in sorted(self.images_missing_kept.items()))
            )
        for split, counts in self.splits.items():
            total = sum(counts.values())
            lines.append(f"  {split:<10} {total:>6}  " + "  ".join(f"{k}={v}" for k, v in counts.items()))
        for reason, message in sorted(self.examples.items()):
            lines.append(f"e.g. {reason}: {message}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


class _Recorder:
    """Counts skips per reason, or raises at once when strict."""

    def __init__(self, summary: OpenISummary, strict: bool) -> None:
        self.summary = summary
        self.strict = strict

    def problem(self, reason: str, message: str, error: type[Exception] = ValueError) -> None:
        if self.strict:
            raise error(message)
        self.summary.examples.setdefault(reason, message)

    def drop(self, reason: str) -> None:
        self.summary.dropped[reason] = self.summary.dropped.get(reason, 0) + 1


def _progress(iterable: Iterable, show: bool, **kwargs: Any) -> Iterable:
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


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
                if (member.isfile() and _is_image_name(name)) or number >= peek:
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
            for member in _progress(tar, show, desc=f"reading {tar_path.name}", unit="file"):
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


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


def _is_dicom_file(path: Path) -> bool:
    if path.name.lower().endswith((".dcm", ".dicom")):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _read_projection_table(path: Path) -> dict[str, str]:
    """Kaggle ``indiana_projections.csv`` -> {image_key: "Frontal"/"Lateral"}."""
    table: dict[str, str] = {}
    for row in _read_csv(path, _KAGGLE_PROJECTION_COLUMNS):
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
    for xml_path in _progress(xml_files, show, desc="parsing NLM reports", unit="report"):
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
            if path.is_file() and _is_image_name(path.name):
                add(path)
    for number, tar_path in enumerate(image_tars):
        for path in _extract_members(
            tar_path, workdir / f"img{number}", lambda n: _is_image_name(n) and image_key(n) in wanted, show
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


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
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
    reports = _read_csv(reports_path, _KAGGLE_REPORT_COLUMNS)
    projections = _read_csv(projections_path, _KAGGLE_PROJECTION_COLUMNS)
    image_folder = Path(images_dir) if images_dir else _find_kaggle_images(folder)
    by_uid: dict[str, list[dict[str, str]]] = {}
    for row in projections:
        by_uid.setdefault(row["uid"].strip(), []).append(row)
    studies = []
    for number, row in enumerate(_progress(reports, show, desc="parsing Kaggle reports", unit="report")):
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
    rows = _read_csv(reports_path, _SHARED_COLUMNS)
    studies = []
    for number, row in enumerate(_progress(rows, show, desc="parsing reports.csv", unit="report")):
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


# --------------------------------------------------------------------------------------------------
# Images and frontal selection
# --------------------------------------------------------------------------------------------------


def frontal_score(image: PILImage.Image) -> float:
    """How much brighter the central (mediastinal) band is than both lung bands, in image SDs.

    A frontal chest radiograph has a bright mediastinum between two dark lung fields (score well above
    `FRONTAL_SCORE_THRESHOLD`); a lateral one has no such pattern (score near or below 0). Used only when a
    source records no view (NLM PNGs without DICOM or projection table).
    """
    array = np.asarray(image.convert("L").resize((100, 100), PILImage.Resampling.BILINEAR), dtype=np.float64)
    spread = array.std()
    if spread == 0:
        return 0.0
    array = (array - array.mean()) / spread
    band = array[25:65]
    left, centre, right = band[:, 15:40].mean(), band[:, 43:57].mean(), band[:, 60:85].mean()
    return float(centre - max(left, right))


def read_image_file(path: Path) -> tuple[bytes, PILImage.Image, str | None]:
    """Read a PNG/JPEG/DICOM file -> (bytes to store, decoded image, DICOM view or None).

    PNG/JPEG bytes are stored unchanged; DICOM is converted with `read_dicom` and stored as PNG.
    Raises FileNotFoundError / ValueError naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    if _is_dicom_file(path):
        image, view = read_dicom_and_view(path)
        return encode_png(image), image, view
    data = path.read_bytes()
    try:
        image = PILImage.open(io.BytesIO(data))
        image.load()
    except Exception as exc:
        raise ValueError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{path}: unreadable image (0 pixels)")
    return data, image, None


@dataclass
class _Choice:
    candidate: ImageCandidate | None
    view: str | None
    reason: str | None  # why no image was chosen


def select_frontal(study: OpenIStudy, recorder: _Recorder, *, reports_only: bool) -> _Choice:
    """Pick one readable frontal image for a study (PA > AP > frontal, then source order).

    Candidates of unknown view are classified with `frontal_score` only when no candidate has a known view.
    """
    problems: list[str] = []

    def note(reason: str, message: str, error: type[Exception]) -> None:
        if not (reports_only and reason in {MISSING_IMAGE}):
            recorder.problem(reason, message, error)
        problems.append(reason)

    for candidate in study.candidates:
        if candidate.view in (None, "frontal") and candidate.path is not None:
            dicom = candidate.dicom_path
            if dicom is None and candidate.path.is_file() and _is_dicom_file(candidate.path):
                dicom = candidate.path
            if dicom is not None:
                try:
                    view = dicom_view_position(read_dicom_header(dicom))
                except (ValueError, FileNotFoundError) as exc:
                    note(UNREADABLE_IMAGE, f"{exc} (study {study.origin})", ValueError)
                    continue
                if view is not None and (candidate.view is None or view != "LATERAL"):
                    candidate.view = view

    known = [c for c in study.candidates if c.view in FRONTAL_VIEWS]
    ranked = sorted(known, key=lambda c: (FRONTAL_VIEWS.index(c.view or "frontal"), c.order))
    use_heuristic = not any(c.view is not None for c in study.candidates)
    pool = ranked if not use_heuristic else sorted(study.candidates, key=lambda c: c.order)
    if not pool:
        return _Choice(None, None, NO_FRONTAL_IMAGE)
    for candidate in pool:
        if candidate.path is None:
            problems.append(IMAGE_NOT_HELD)
            continue
        try:
            _, image, dicom_view = read_image_file(candidate.path)
        except FileNotFoundError:
            note(MISSING_IMAGE, f"{candidate.path}: image file not found (listed by {study.origin})", FileNotFoundError)
            continue
        except ValueError as exc:
            note(UNREADABLE_IMAGE, f"{exc} (listed by {study.origin})", ValueError)
            continue
        if use_heuristic:
            if dicom_view == "LATERAL" or frontal_score(image) < FRONTAL_SCORE_THRESHOLD:
                continue
            return _Choice(candidate, dicom_view if dicom_view in FRONTAL_VIEWS else "frontal", None)
        return _Choice(candidate, candidate.view, None)
    return _Choice(None, None, problems[0] if problems else NO_FRONTAL_IMAGE)


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def split_indices(
    uids: Sequence[str], labels: Sequence[int], *, seed: int = 42, test_per_class: int = 200, val_fraction: float = 0.1
) -> tuple[dict[str, list[int]], int]:
    """Row indices per split (train/validation/test) and the test size per class actually used.

    The test split takes `test_per_class` studies of each label, scaled down to half of the smaller class
    when a class is too small (with a warning); the rest is split `val_fraction` / rest into validation /
    train per label. Rows are ordered by uid before shuffling, so the result depends only on the set of
    (uid, label) pairs and `seed`.
    """
    if test_per_class < 0:
        raise ValueError(f"test_per_class must be >= 0, got {test_per_class}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(uids) != len(labels):
        raise ValueError(f"uids ({len(uids)}) and labels ({len(labels)}) differ in length")
    seen: set[str] = set()
    for uid in uids:
        if uid in seen:
            raise ValueError(f"uid {uid!r} appears twice; every study must have one row before splitting")
        seen.add(uid)
    order = sorted(range(len(uids)), key=lambda i: _uid_sort_key(str(uids[i])))
    per_label = {c: [i for i in order if int(labels[i]) == c] for c in (0, 1)}
    per_class = min(test_per_class, len(per_label[0]) // 2, len(per_label[1]) // 2)
    if per_class < test_per_class:
        warnings.warn(
            f"only {len(uids)} studies ({len(per_label[0])} normal, {len(per_label[1])} abnormal): the test split "
            f"is scaled down to {per_class} normal + {per_class} abnormal instead of "
            f"{test_per_class} + {test_per_class}",
            UserWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    splits: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    for c in (0, 1):
        members = np.asarray(per_label[c], dtype=np.int64)
        shuffled = members[rng.permutation(len(members))].tolist()
        rest = shuffled[per_class:]
        n_val = int(round(val_fraction * len(rest)))
        splits["test"].extend(shuffled[:per_class])
        splits["validation"].extend(rest[:n_val])
        splits["train"].extend(rest[n_val:])
    position = {index: rank for rank, index in enumerate(order)}
    return {name: sorted(rows, key=position.__getitem__) for name, rows in splits.items()}, per_class


def split_openi(
    dataset: Dataset, *, seed: int = 42, test_per_class: int = 200, val_fraction: float = 0.1
) -> DatasetDict:
    """Split a study-level dataset into train / validation / test as in the paper (see `split_indices`).

    Example:
        >>> splits = split_openi(make_phantom_openi(1000, seed=0), seed=42)  # doctest: +SKIP
        >>> splits["test"].num_rows  # doctest: +SKIP
        400
    """
    for column in ("uid", "label"):
        if column not in dataset.column_names:
            raise ValueError(f"dataset has no {column!r} column (columns: {dataset.column_names})")
    indices, _ = split_indices(
        dataset["uid"], dataset["label"], seed=seed, test_per_class=test_per_class, val_fraction=val_fraction
    )
    return DatasetDict({name: dataset.select(indices[name]) for name in SPLIT_NAMES})


# --------------------------------------------------------------------------------------------------
# load_openi
# --------------------------------------------------------------------------------------------------


def _file_identity(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _module_digest() -> str:
    digest = hashlib.sha256()
    for module_file in (Path(__file__), Path(__file__).with_name("dicom.py")):
        digest.update(module_file.read_bytes())
    return digest.hexdigest()[:16]


def _generate_rows(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for row in rows:
        out = dict(row)
        path = out.pop("_path")
        out.pop("_identity", None)
        if path is None:
            out["image"] = None
        else:
            data, _, _ = read_image_file(Path(path))
            out["image"] = {"bytes": data, "path": out["image_file"]}
        yield out


def load_openi(
    path: str | os.PathLike,
    *,
    reports_only: bool = False,
    seed: int = 42,
    strict: bool = False,
    test_per_class: int = 200,
    val_fraction: float = 0.1,
    layout: str | None = None,
    images: Sequence[str | os.PathLike] = (),
    projections: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    return_summary: bool = False,
) -> DatasetDict | tuple[DatasetDict, OpenISummary]:
    """Read an OpenI source (any of the three layouts) into a train / validation / test `DatasetDict`.

    Args:
        path: a folder (NLM, Kaggle or ../shared/openi layout) or an NLM reports tarball.
        reports_only: also keep studies with report text but no usable image (their `image` is None).
        strict: raise on the first bad input (naming the file) instead of counting a skip.
        images / projections / images_dir: extra NLM image sources, an ``indiana_projections.csv`` for NLM
            views, and the Kaggle images folder when it is not in a standard place.
        return_summary: also return the `OpenISummary` (it is always in each split's ``info.description``;
            read it back with `openi_summary`).

    Example:
        >>> splits = load_openi("../shared/openi/raw", reports_only=True)  # doctest: +SKIP
        >>> {name: split.num_rows for name, split in splits.items()}  # doctest: +SKIP
    """
    src = Path(path)
    layout = layout or detect_openi_layout(src)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    summary = OpenISummary(layout=layout, source=str(src), reports_only=reports_only, strict=strict, seed=seed)
    recorder = _Recorder(summary, strict)
    with tempfile.TemporaryDirectory(prefix="cxr_mtclip_openi_") as workdir:
        if layout == "nlm":
            studies = _read_nlm(
                src, Path(workdir), recorder, images=images, projections=projections,
                reports_only=reports_only, show=show_progress,
            )
        elif layout == "kaggle":
            studies = _read_kaggle(src, recorder, images_dir=images_dir, show=show_progress)
        else:
            studies = _read_shared(src, recorder, show=show_progress)
        rows = _select_rows(studies, recorder, reports_only=reports_only, show=show_progress)
        full = _rows_to_dataset(rows, cache_dir=cache_dir, show=show_progress)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        indices, per_class = split_indices(
            [r["uid"] for r in rows], [r["label"] for r in rows],
            seed=seed, test_per_class=test_per_class, val_fraction=val_fraction,
        )
    for warning in caught:
        summary.warnings.append(str(warning.message))
        warnings.warn(str(warning.message), UserWarning, stacklevel=2)
    summary.test_per_class = per_class
    summary.kept = len(rows)
    summary.kept_with_image = sum(r["_path"] is not None for r in rows)
    summary.kept_without_image = summary.kept - summary.kept_with_image
    summary.label_counts = {name: sum(r["label"] == i for r in rows) for i, name in enumerate(LABEL_NAMES)}
    for row in rows:
        if row["view"]:
            summary.views[row["view"]] = summary.views.get(row["view"], 0) + 1
    summary.splits = {
        name: {label: sum(rows[i]["label"] == k for i in indices[name]) for k, label in enumerate(LABEL_NAMES)}
        for name in SPLIT_NAMES
    }
    splits = DatasetDict({name: full.select(indices[name]) for name in SPLIT_NAMES})
    description = summary.to_json()
    for split in splits.values():
        split.info.description = description
    return (splits, summary) if return_summary else splits


def _select_rows(
    studies: list[OpenIStudy], recorder: _Recorder, *, reports_only: bool, show: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    summary = recorder.summary
    for study in _progress(studies, show, desc="selecting frontal images", unit="study"):
        if study.uid in seen:
            recorder.problem(DUPLICATE_UID, f"{study.origin}: uid {study.uid} appears more than once")
            recorder.drop(DUPLICATE_UID)
            continue
        if not study.report:
            recorder.drop(NO_REPORT_TEXT)
            continue
        try:
            label = label_from_mesh(study.mesh, source=study.origin)
        except ValueError as exc:
            recorder.problem(UNKNOWN_LABEL, str(exc))
            recorder.drop(UNKNOWN_LABEL)
            continue
        if study.label is not None and study.label != label:
            recorder.problem(
                LABEL_MISMATCH,
                f"{study.origin}: label column says {study.label} but MeSH {study.mesh!r} gives {label}",
            )
            recorder.drop(LABEL_MISMATCH)
            continue
        choice = select_frontal(study, recorder, reports_only=reports_only)
        if choice.candidate is None:
            if not reports_only:
                recorder.drop(choice.reason or NO_FRONTAL_IMAGE)
                continue
            reason = choice.reason or NO_FRONTAL_IMAGE
            summary.images_missing_kept[reason] = summary.images_missing_kept.get(reason, 0) + 1
        seen.add(study.uid)
        path = choice.candidate.path if choice.candidate is not None else None
        rows.append(
            {
                "uid": study.uid,
                "findings": study.findings,
                "impression": study.impression,
                "report": study.report,
                "label": label,
                "mesh": study.mesh,
                "view": choice.view,
                "image_file": choice.candidate.name if choice.candidate is not None else None,
                "source": "real",
                "_path": str(path) if path is not None else None,
                "_identity": _file_identity(path),
            }
        )
    return rows


def _rows_to_dataset(rows: list[dict[str, Any]], *, cache_dir: str | os.PathLike | None, show: bool) -> Dataset:
    digest = hashlib.sha256(_module_digest().encode())
    for row in rows:
        digest.update(json.dumps({k: v for k, v in row.items() if k != "_path"}, sort_keys=True).encode())
    fingerprint = "openi-" + digest.hexdigest()[:32]
    if not rows:
        return Dataset.from_dict({name: [] for name in OPENI_FEATURES}, features=OPENI_FEATURES)
    silence = not show and datasets.is_progress_bar_enabled()
    if silence:
        datasets.disable_progress_bars()
    try:
        return Dataset.from_generator(
            _generate_rows,
            features=OPENI_FEATURES,
            gen_kwargs={"rows": rows},
            cache_dir=str(cache_dir) if cache_dir else None,
            fingerprint=fingerprint,
        )
    finally:
        if silence:
            datasets.enable_progress_bars()


def openi_summary(dataset: Dataset | DatasetDict) -> OpenISummary:
    """The `OpenISummary` stored by `load_openi` (survives save_to_disk / load_from_disk).

    Example:
        >>> print(openi_summary(load_from_disk("openi_hf")).format())  # doctest: +SKIP
    """
    if isinstance(dataset, DatasetDict):
        if not dataset:
            raise ValueError("empty DatasetDict has no OpenI summary")
        dataset = next(iter(dataset.values()))
    return OpenISummary.from_json(dataset.info.description or "")


# --------------------------------------------------------------------------------------------------
# Build: save_to_disk (or parquet) + dataset card, optional push to the Hub
# --------------------------------------------------------------------------------------------------


@dataclass
class OpenIBuildResult:
    """What `build_openi_dataset` wrote."""

    out_dir: Path
    dataset: DatasetDict
    summary: OpenISummary
    card_path: Path


def split_label_counts(splits: DatasetDict) -> dict[str, dict[str, int]]:
    """{split: {"normal": n, "abnormal": n}} counted from the label column."""
    counts = {}
    for name, split in splits.items():
        labels = np.asarray(split["label"], dtype=np.int64)
        counts[name] = {label: int((labels == k).sum()) for k, label in enumerate(LABEL_NAMES)}
    return counts


def dataset_card(summary: OpenISummary, *, output_format: str = "arrow") -> str:
    """A Hugging Face dataset card (README.md) for a built OpenI dataset.

    Its ``configs`` list the non-empty splits' files so that ``load_dataset(<folder>)`` reads them.
    """
    pattern = "{split}/data-*.arrow" if output_format == "arrow" else "data/{split}-*.parquet"
    present = [split for split in SPLIT_NAMES if sum(summary.splits.get(split, {}).values()) > 0]
    data_files = "\n".join(
        f"  - split: {split}\n    path: {pattern.format(split=split)}" for split in present
    )
    rows = "\n".join(
        f"| {split} | {sum(c.values())} | {c.get('normal', 0)} | {c.get('abnormal', 0)} |"
        for split, c in summary.splits.items()
    )
    dropped = "\n".join(f"- `{k}`: {v}" for k, v in sorted(summary.dropped.items())) or "- none"
    kept_without = "\n".join(f"- `{k}`: {v}" for k, v in sorted(summary.images_missing_kept.items())) or "- none"
    if output_format == "arrow":
        loading = 'splits = load_from_disk("<this folder>")  # save_to_disk layout\n'
    else:
        loading = ""
    loading += 'splits = load_dataset("<this folder>")    # through the data_files above'
    return f"""---
license: cc-by-nc-nd-4.0
language:
- en
pretty_name: OpenI chest X-rays (Indiana University), built by cxr_mtclip
task_categories:
- zero-shot-image-classification
- image-to-text
tags:
- medical
- chest-x-ray
- radiology-reports
configs:
- config_name: default
  data_files:
{data_files}
---

# OpenI chest X-ray studies (Indiana University collection)

Built by `cxr_mtclip` (`dataset_scripts/build_openi.py`) from `{summary.source}` (layout `{summary.layout}`,
seed {summary.seed}, reports_only={summary.reports_only}, strict={summary.strict}).

## Source and licence

The radiographs and reports are the Indiana University chest X-ray collection distributed by
**Open-i, U.S. National Library of Medicine**, de-identified by its authors: Demner-Fushman D. et al.,
"Preparing a collection of radiology examinations for distribution and retrieval", JAMIA 23(2):304-310,
2016. Licence: **CC BY-NC-ND 4.0** (attribution, non-commercial, no derivatives). Keep this card
with the data; do not use it commercially; check the Open-i terms before redistributing.

## Columns

`uid` (Open-i study number), `image` (one frontal radiograph; None for report-only rows), `findings`,
`impression`, `report`, `label` (`normal` / `abnormal`), `mesh`, `view`, `image_file`, `source`
(`real` here; synthetic phantoms from `make_phantom_openi` carry `synthetic`).

## Rules

- **report**: findings and impression, each stripped, joined by one space; an empty part is skipped.
  Studies with both empty are dropped.
- **label**: `normal` iff the MeSH string is exactly `normal` (case-insensitive); every other MeSH
  string, `No Indexing` included, is `abnormal`. Studies with an empty MeSH are skipped.
- **view**: one frontal image per study, PA preferred over AP over an unspecified frontal (projection
  table, DICOM ViewPosition, NLM caption, else an image heuristic).
- **splits**: test = {summary.test_per_class} normal + {summary.test_per_class} abnormal studies; the rest
  90/10 train/validation stratified by label; deterministic given the seed; no study in two splits.

## Counts

| split | studies | normal | abnormal |
|---|---|---|---|
{rows}

Studies seen: {summary.studies_seen}; kept: {summary.kept} ({summary.kept_with_image} with image).

Dropped:
{dropped}

Kept without image (reports_only):
{kept_without}

## Loading

```python
from datasets import load_from_disk, load_dataset
{loading}
```
"""


def _require_hub_online(repo_id: str) -> None:
    from huggingface_hub import constants

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if offline or getattr(constants, "HF_HUB_OFFLINE", False):
        raise RuntimeError(
            f"cannot push to {repo_id}: the Hugging Face Hub is offline (HF_HUB_OFFLINE is set); "
            "unset it and log in (`hf auth login`) to push"
        )


def push_openi_to_hub(splits: DatasetDict, repo_id: str, *, private: bool = True, token: str | None = None) -> None:
    """Push a built dataset to the Hugging Face Hub (private by default: the licence is non-commercial)."""
    _require_hub_online(repo_id)
    try:
        splits.push_to_hub(repo_id, private=private, token=token)
    except Exception as exc:
        raise RuntimeError(
            f"push to {repo_id} failed ({type(exc).__name__}: {exc}); check the network and your Hub login"
        ) from exc


def _shard_counts(splits: DatasetDict, max_shard_bytes: float = 500e6) -> dict[str, int]:
    """~500 MB shards, and one (empty) shard for an empty split: with zero shards load_from_disk fails."""
    counts = {}
    for name, split in splits.items():
        table_rows = max(1, len(split.data))
        nbytes = split.data.nbytes * split.num_rows / table_rows
        counts[name] = max(1, math.ceil(nbytes / max_shard_bytes))
    return counts


def build_openi_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    reports_only: bool = False,
    strict: bool = False,
    seed: int = 42,
    test_per_class: int = 200,
    val_fraction: float = 0.1,
    output_format: str = "arrow",
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool = True,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    **load_kwargs: Any,
) -> OpenIBuildResult:
    """Build the OpenI `DatasetDict` and write it atomically to `out` with a dataset card.

    `output_format` "arrow" uses ``save_to_disk`` (reload with ``load_from_disk``); "parquet" writes
    ``data/<split>-00000-of-00001.parquet``. Both are also readable with ``load_dataset(out)``.

    Example:
        >>> result = build_openi_dataset("NLMCXR", "openi_hf", seed=42)  # doctest: +SKIP
        >>> print(result.summary.format())  # doctest: +SKIP
    """
    if output_format not in {"arrow", "parquet"}:
        raise ValueError(f"output_format must be 'arrow' or 'parquet', got {output_format!r}")
    out_dir = Path(out)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True / --overwrite to replace it)")
    if push_to_hub:
        _require_hub_online(push_to_hub)  # fail before the (long) build, not after it
    splits, summary = load_openi(
        src, reports_only=reports_only, strict=strict, seed=seed, test_per_class=test_per_class,
        val_fraction=val_fraction, cache_dir=cache_dir, show_progress=show_progress, return_summary=True,
        **load_kwargs,
    )
    silence = not show_progress and datasets.is_progress_bar_enabled()
    if silence:
        datasets.disable_progress_bars()
    try:
        with atomic_directory(out_dir, overwrite=overwrite) as tmp:
            if output_format == "arrow":
                splits.save_to_disk(str(tmp), num_shards=_shard_counts(splits))
            else:
                (tmp / "data").mkdir()
                for name, split in splits.items():
                    if split.num_rows:  # an empty parquet file has no row group for load_dataset to read
                        split.to_parquet(str(tmp / "data" / f"{name}-00000-of-00001.parquet"))
            (tmp / "README.md").write_text(dataset_card(summary, output_format=output_format), encoding="utf-8")
    finally:
        if silence:
            datasets.enable_progress_bars()
    if push_to_hub:
        push_openi_to_hub(splits, push_to_hub, private=private)
    return OpenIBuildResult(out_dir=out_dir, dataset=splits, summary=summary, card_path=out_dir / "README.md")


__all__ = [
    "LABEL_NAMES",
    "OPENI_FEATURES",
    "SPLIT_NAMES",
    "ImageCandidate",
    "OpenIBuildResult",
    "OpenIStudy",
    "OpenISummary",
    "build_openi_dataset",
    "dataset_card",
    "detect_openi_layout",
    "frontal_score",
    "frontal_view_from_exam",
    "image_key",
    "join_report",
    "label_from_mesh",
    "load_openi",
    "load_openi_reports",
    "make_phantom_openi",
    "openi_summary",
    "parse_nlm_xml",
    "push_openi_to_hub",
    "read_image_file",
    "select_frontal",
    "split_indices",
    "split_label_counts",
    "split_openi",
]
