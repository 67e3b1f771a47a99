"""Any image archive -> gallery rows: a folder of PNG/JPEG/DICOM files with optional reports and metadata.

The layout follows `datasets`' imagefolder convention (datasets 5.2 ``folder_based_builder``)::

    archive/
      metadata.csv            # or metadata.jsonl / metadata.parquet, here or in any sub-folder
      a.png
      scans/study1/IM0001     # DICOM is found by content (the DICM magic) or a .dcm/.dicom suffix
      ...

A metadata file has a ``file_name`` column, a path relative to the metadata file's folder (no absolute paths,
no ``..`` out of it, no URLs: datasets' own guard), and any other columns:

* ``report``, or ``findings`` / ``impression`` (joined as OpenI's are, `schema.join_report`);
* ``label``: ``normal`` / ``abnormal`` (or 0 / 1), else ``mesh`` with OpenI's rule (`schema.label_from_mesh`);
* ``uid`` (the study id), ``view``;
* anything else is kept as a metadata column, filterable at query time (JSONL lists become sequence columns).

Unlike ``load_dataset("imagefolder")``, which lists only files with an image extension (no DICOM) and, once a
metadata file exists, only the files it names, every file is looked at and every one left out is reported
with its reason (`SkippedFile`). Each PNG/JPEG file is one study (its bytes stored as they are). DICOM files
are grouped by StudyInstanceUID; each study keeps one frontal image chosen from the DICOM header
(`dicom.dicom_view_position`: View Position, View Code Sequence, descriptions, Patient Orientation): PA, then
AP; a study whose images record no view falls back to the OpenI builder's image rule (`build.frontal_score`);
lateral images are never chosen. The chosen DICOM is decoded (`images.open_image`: pydicom's LUT/windowing)
and stored as a PNG. Nothing else of a DICOM header is kept: no patient, institution, operator or accession
element is copied, and the study id is a hash of the StudyInstanceUID, not the UID itself. File names are
stored as given (``image_file``), so name files without patient identifiers.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from tqdm.auto import tqdm

from .build import FRONTAL_SCORE_THRESHOLD, frontal_score
from .dicom import dicom_view_position, encode_png, read_dicom_header
from .images import is_dicom_file, open_image
from .schema import LABEL_NAMES, join_report, label_from_mesh

__all__ = [
    "ARCHIVE_SOURCE",
    "IMAGE_EXTENSIONS",
    "METADATA_FILENAMES",
    "ArchiveResult",
    "SkippedFile",
    "load_archive",
]

METADATA_FILENAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # datasets' imagefolder names
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
ARCHIVE_SOURCE = "archive"
_BASE_COLUMNS = ("uid", "image", "report", "label", "view", "image_file", "source")
_META_SPECIAL = {"file_name", "report", "findings", "impression", "label", "mesh", "uid", "view"}

# skip reasons
NOT_AN_IMAGE = "not_an_image"
UNREADABLE_IMAGE = "unreadable_image"
NOT_CHOSEN = "other_image_of_study"
NO_FRONTAL_IMAGE = "no_frontal_image"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_UID = "duplicate_uid"
METADATA_WITHOUT_FILE = "metadata_without_file"


@dataclass(frozen=True)
class SkippedFile:
    """A file (or metadata row) left out of the gallery: its path relative to the archive, a reason code, why."""

    path: str
    reason: str
    detail: str


@dataclass
class ArchiveResult:
    """The gallery rows of an archive and what was left out.

    Attributes:
        dataset: one row per study: ``uid``, ``image``, ``report``, ``label`` (ClassLabel, None when unknown),
            ``view``, ``image_file``, ``source`` (``"archive"``) and the metadata columns.
        skipped: every file or metadata row not in `dataset`, with its reason.
        root: the archive folder.
    """

    dataset: Dataset
    skipped: list[SkippedFile] = field(default_factory=list)
    root: Path = Path(".")

    def summary(self) -> str:
        """One line: studies kept (and how many have no report or no label), files skipped per reason."""
        counts = Counter(s.reason for s in self.skipped)
        skipped = ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items())) or "none"
        no_report = sum(1 for r in self.dataset["report"] if not (r or "").strip()) if len(self.dataset) else 0
        no_label = sum(1 for label in self.dataset["label"] if label is None) if len(self.dataset) else 0
        details = [f"{n} {what}" for n, what in ((no_report, "without a report (image-only)"),
                                                 (no_label, "without a label")) if n]
        return f"{self.root}: " + ", ".join([f"{len(self.dataset)} studies", *details]) + f"; skipped: {skipped}"


@dataclass
class _Meta:
    where: str
    values: dict[str, Any]


@dataclass
class _Dicom:
    rel: str
    path: Path
    view: str | None  # "PA", "AP", "LATERAL" or None (not recorded)
    order: int
    study: str


def load_archive(
    folder: str | os.PathLike,
    *,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> ArchiveResult:
    """Read an image archive (see the module docstring) into gallery rows, ready for `RetrievalIndex.build`.

    Args:
        strict: raise ValueError at the first file or metadata row that would be skipped, naming it.
        cache_dir: where `datasets` writes the rows' Arrow file (default its cache).

    Raises FileNotFoundError for a missing folder and ValueError naming the metadata file for an unreadable
    one, a bad ``file_name`` (absolute, ``..``, URL, listed twice) or no study at all.

    Example:
        >>> result = load_archive("my_xrays/")  # doctest: +SKIP
        >>> print(result.summary())  # doctest: +SKIP
        my_xrays: 120 studies; skipped: not_an_image=1, other_image_of_study=31
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such archive folder")
    skipped: list[SkippedFile] = []

    def skip(rel: str, reason: str, detail: str) -> None:
        if strict:  # the reader's messages already name the file relative to the archive
            raise ValueError(f"{root}/{detail}" if detail.startswith(f"{rel}:") else f"{root / rel}: {detail}")
        skipped.append(SkippedFile(rel, reason, detail))

    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    metadata = _read_metadata(root, [p for p in files if p.name in METADATA_FILENAMES])
    images: list[tuple[str, Path]] = []
    dicoms: list[_Dicom] = []
    for order, path in enumerate(tqdm(files, desc="Scanning archive", unit="file", disable=not show_progress)):
        rel = path.relative_to(root).as_posix()
        if path.name in METADATA_FILENAMES:
            continue
        if is_dicom_file(path):
            try:
                header = read_dicom_header(path, name=rel)
            except (ValueError, FileNotFoundError) as err:
                skip(rel, UNREADABLE_IMAGE, str(err))
                continue
            if "Rows" not in header:
                skip(rel, NOT_AN_IMAGE, "a DICOM file without an image (no Rows element; a report or presentation state?)")
                continue
            study = str(header.get("StudyInstanceUID", "") or "").strip() or f"file:{rel}"
            dicoms.append(_Dicom(rel, path, dicom_view_position(header), order, study))
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            images.append((rel, path))
        else:
            skip(rel, NOT_AN_IMAGE, f"not PNG, JPEG or DICOM (suffix {path.suffix or 'none'!r}, no DICM magic)")

    used_metadata: set[str] = set()
    extra = _extra_columns(metadata)
    features = Features({
        "uid": Value("string"), "image": ImageFeature(), "report": Value("string"),
        "label": ClassLabel(names=LABEL_NAMES), "view": Value("string"), "image_file": Value("string"),
        "source": Value("string"), **extra,
    })
    seen_uids: set[str] = set()

    def row(rel: str, uid: str, image: dict[str, Any], view: str | None, meta: _Meta | None) -> dict[str, Any] | None:
        values = meta.values if meta else {}
        try:
            label = _label(values)
        except ValueError as err:
            skip(rel, UNKNOWN_LABEL, f"{meta.where if meta else rel}: {err}")
            return None
        uid = str(values.get("uid") or uid)
        if uid in seen_uids:
            skip(rel, DUPLICATE_UID, f"study id {uid!r} already used by another file")
            return None
        seen_uids.add(uid)
        report = _report(values)
        out = {"uid": uid, "image": image, "report": report, "label": label, "view": values.get("view") or view,
               "image_file": rel, "source": ARCHIVE_SOURCE}
        out.update({name: values.get(name) for name in extra})
        return out

    def generate() -> Iterator[dict[str, Any]]:
        for rel, path in tqdm(images, desc="Reading images", unit="image", disable=not show_progress):
            data = path.read_bytes()
            try:
                open_image(data, name=rel)
            except ValueError as err:
                skip(rel, UNREADABLE_IMAGE, str(err))
                continue
            meta = metadata.get(rel)
            used_metadata.add(rel)
            made = row(rel, str(PurePosixPath(rel).with_suffix("")), {"bytes": data, "path": rel}, None, meta)
            if made is not None:
                yield made
        studies: dict[str, list[_Dicom]] = {}
        for item in dicoms:
            studies.setdefault(item.study, []).append(item)
        for study, members in tqdm(studies.items(), desc="Choosing frontal DICOM images", unit="study",
                                   disable=not show_progress):
            chosen = _choose_frontal(members, skip)
            for item in members:
                used_metadata.add(item.rel)
            if chosen is None:
                continue
            item, image = chosen
            meta = metadata.get(item.rel) or next((metadata[m.rel] for m in members if m.rel in metadata), None)
            uid = "dicom-" + hashlib.sha256(study.encode("utf-8")).hexdigest()[:16]
            made = row(item.rel, uid, {"bytes": encode_png(image), "path": None}, item.view or "frontal", meta)
            if made is not None:
                yield made

    made, failures = [0], []

    def counted() -> Iterator[dict[str, Any]]:
        try:
            for item in generate():
                made[0] += 1
                yield item
        except Exception as err:  # datasets wraps it in DatasetGenerationError: keep ours to re-raise
            failures.append(err)
            raise

    try:
        dataset = Dataset.from_generator(counted, features=features, cache_dir=str(cache_dir) if cache_dir else None,
                                         fingerprint=uuid.uuid4().hex)
    except Exception:
        if failures:
            raise failures[0] from None
        if made[0]:
            raise
        dataset = None  # datasets refuses an empty generator ("corresponds to no data")
    present = {path.relative_to(root).as_posix() for path in files}
    # a row naming a file that is there but was skipped (unreadable, another image of its study...) has its reason
    for rel in sorted(set(metadata) - used_metadata - present):
        skip(rel, METADATA_WITHOUT_FILE, f"{metadata[rel].where}: names {rel}, which is not in the archive")
    if dataset is None or len(dataset) == 0:
        reasons = Counter(s.reason for s in skipped)
        raise ValueError(f"{root}: no study could be read (skipped: {dict(reasons) or 'no files'})")
    return ArchiveResult(dataset, skipped, root)


# -- DICOM studies ---------------------------------------------------------------------------------


def _choose_frontal(members: list[_Dicom], skip: Any) -> tuple[_Dicom, Any] | None:
    """The study's frontal image, decoded: PA > AP (file order within each), then, when none of those can be
    read, images with no recorded view that look frontal (`frontal_score`); never a lateral. Every other file
    of the study is reported through `skip`."""
    rank = {"PA": 0, "AP": 1}
    known = sorted((m for m in members if m.view in rank), key=lambda m: (rank[m.view], m.order))
    unknown = sorted((m for m in members if m.view is None), key=lambda m: m.order)
    reported: set[str] = set()

    def report(item: _Dicom, reason: str, detail: str) -> None:
        reported.add(item.rel)
        skip(item.rel, reason, detail)

    chosen = None
    for item in known:
        image = _decode(item, report)
        if image is not None:
            chosen = (item, image)
            break
    if chosen is None:
        for item in unknown:
            image = _decode(item, report)
            if image is None:
                continue
            if frontal_score(image) >= FRONTAL_SCORE_THRESHOLD:
                chosen = (item, image)
                break
            report(item, NOT_CHOSEN, "no view recorded and the image does not look frontal (frontal_score)")
    for item in members:
        if item.rel in reported or (chosen is not None and item is chosen[0]):
            continue
        view = "lateral" if item.view == "LATERAL" else (item.view or "unrecorded")
        if chosen is None:
            report(item, NO_FRONTAL_IMAGE, f"{view} view; its study has no readable frontal image")
        else:
            report(item, NOT_CHOSEN, f"{view} view; the study's {chosen[0].view or 'frontal'} image {chosen[0].rel} "
                   "was chosen (one image per study)")
    return chosen


def _decode(item: _Dicom, report: Any) -> Any:
    try:
        return open_image(item.path, name=item.rel)
    except ValueError as err:
        report(item, UNREADABLE_IMAGE, str(err))
        return None


# -- metadata --------------------------------------------------------------------------------------


def _read_metadata(root: Path, paths: list[Path]) -> dict[str, _Meta]:
    """Metadata rows keyed by the file's path relative to `root` (datasets' ``file_name`` rule)."""
    out: dict[str, _Meta] = {}
    for path in paths:
        rows = _metadata_rows(path)
        base = path.parent.relative_to(root)
        for number, values in enumerate(rows, 2 if path.suffix == ".csv" else 1):
            where = f"{path.relative_to(root).as_posix()} row {number}"
            name = values.get("file_name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{path}: row {number} has no file_name (every metadata row names its image)")
            if "://" in name or os.path.isabs(name) or PurePosixPath(name.replace("\\", "/")).is_absolute():
                raise ValueError(f"{path}: row {number}: file_name {name!r} must be a relative path inside {path.parent}")
            rel = os.path.normpath((base / name.replace("\\", "/")).as_posix()).replace("\\", "/")
            if rel == ".." or rel.startswith("../"):
                raise ValueError(f"{path}: row {number}: file_name {name!r} points outside the archive folder")
            if rel in out:
                raise ValueError(f"{path}: row {number}: {rel} is already described by {out[rel].where}")
            out[rel] = _Meta(where, {k: _clean(v) for k, v in values.items() if k != "file_name"})
    return out


def _metadata_rows(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".csv":
            import pandas as pd

            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # text as written
            if "file_name" not in frame.columns:
                raise ValueError(f"{path}: no file_name column (columns: {list(frame.columns)})")
            return frame.to_dict("records")
        if path.suffix == ".jsonl":
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    value = json.loads(line)
                    if not isinstance(value, dict):
                        raise ValueError(f"{path}: line {number} is not a JSON object")
                    rows.append(value)
            return rows
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as err:
        raise ValueError(f"{path}: unreadable metadata file ({type(err).__name__}: {err})") from err
    except ImportError:
        raise
    except ValueError:
        raise
    except Exception as err:  # pandas / pyarrow parser errors
        raise ValueError(f"{path}: unreadable metadata file ({type(err).__name__}: {err})") from err


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _extra_columns(metadata: dict[str, _Meta]) -> dict[str, Any]:
    """Features of the metadata columns beyond the special ones, inferred as `datasets` infers them."""
    names = sorted({k for meta in metadata.values() for k in meta.values} - _META_SPECIAL - set(_BASE_COLUMNS))
    if not names:
        return {}
    sample = Dataset.from_list([{n: meta.values.get(n) for n in names} for meta in metadata.values()])
    features = {}
    for name in names:
        feature = sample.features[name]
        features[name] = Value("string") if getattr(feature, "dtype", None) == "null" else feature
    return features


def _label(values: dict[str, Any]) -> int | None:
    label = values.get("label")
    if label is not None:
        text = str(label).strip().lower()
        if text in ("normal", "0"):
            return 0
        if text in ("abnormal", "1"):
            return 1
        raise ValueError(f"label {label!r} is neither normal/abnormal nor 0/1")
    if values.get("mesh") is not None:
        return label_from_mesh(values["mesh"])
    return None


def _report(values: dict[str, Any]) -> str | None:
    if values.get("report"):
        return str(values["report"])
    joined = join_report(values.get("findings"), values.get("impression"))
    return joined or None
