"""OpenI studies -> a `datasets.DatasetDict` on disk: frontal-image selection, rows, splits, summary, card, Hub.

Rules applied to every source layout (`cxr_mtclip.data.openi` parses them):

* ``report`` = findings and impression (each stripped) joined by one space; an empty part is skipped, so a
  study with only an impression has ``report == impression``. Studies where both are empty are dropped
  (``no_report_text``).
* ``label`` (`label_from_mesh`): normal (0) iff the MeSH string is exactly ``normal`` after strip/casefold;
  any other MeSH string is abnormal (1), ``No Indexing`` included. An empty MeSH or a placeholder
  (``nan``, ``none``, ``unknown``, ...) is an unknown label. ``drop_no_indexing=True`` drops the ``No Indexing``
  studies instead (counted as ``no_indexing``); either way the summary reports how many there were.
* ``finding_labels`` (`cxr_mtclip.data.findings.findings_from_mesh`): the study's findings among
  `FINDING_NAMES`; None (unknown, not negative) for ``No Indexing``. The binary ``label`` does not depend on it.
* ``view`` (`select_frontal`): one frontal image per study, PA preferred over AP over an unspecified
  frontal. Views come from the projection table (Kaggle ``projection``, refined to PA/AP when the exam
  description names exactly one of them), the DICOM header (`dicom_view_position`), an NLM image caption
  naming exactly one view, and, when none of those exists (NLM PNGs alone), a documented image heuristic
  (`frontal_score`: a frontal radiograph has a bright mediastinum between two darker lung fields).
* Bad input (malformed XML, missing image, unreadable PNG/DICOM, unknown label) raises an error naming the
  file with ``strict=True``; otherwise the study is skipped and counted per reason in the `OpenISummary`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

import datasets
from datasets import Dataset, DatasetDict

from ..atomic import atomic_directory
from .cards import openi_dataset_card
from .dicom import dicom_view_position, read_dicom_header
from .findings import FINDING_NAMES, finding_counts, findings_from_mesh
from .images import is_dicom_file, read_image_file
from .openi import LAYOUTS, _read_kaggle, _read_nlm, _read_shared, detect_openi_layout
from .records import (
    DUPLICATE_UID,
    IMAGE_NOT_HELD,
    LABEL_MISMATCH,
    MISSING_IMAGE,
    NO_INDEXING,
    NO_FRONTAL_IMAGE,
    NO_REPORT_TEXT,
    UNKNOWN_LABEL,
    UNREADABLE_IMAGE,
    ImageCandidate,
    OpenIStudy,
    OpenISummary,
    _Recorder,
    progress,
)
from .schema import LABEL_NAMES, OPENI_FEATURES, SPLIT_NAMES, label_from_mesh
from .splits import split_indices

__all__ = [
    "FRONTAL_SCORE_THRESHOLD",
    "FRONTAL_VIEWS",
    "OpenIBuildResult",
    "build_openi_dataset",
    "frontal_score",
    "load_openi",
    "nothing_kept_message",
    "openi_summary",
    "push_openi_to_hub",
    "save_dataset",
    "select_frontal",
]

FRONTAL_VIEWS = ("PA", "AP", "frontal")  # preference order
FRONTAL_SCORE_THRESHOLD = 0.4
_MODULES = ("build.py", "openi.py", "images.py", "records.py", "schema.py", "dicom.py", "findings.py")


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
            if dicom is None and candidate.path.is_file() and is_dicom_file(candidate.path):
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
    for name in _MODULES:  # the code that turns a source into rows: a change rebuilds the cached dataset
        digest.update(Path(__file__).with_name(name).read_bytes())
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
    drop_no_indexing: bool = False,
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
        drop_no_indexing: drop the ``No Indexing`` studies (never indexed; the paper's rule labels them
            abnormal, and most of their impressions read normal) instead of keeping them as abnormal.
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
    summary = OpenISummary(layout=layout, source=str(src), reports_only=reports_only, strict=strict, seed=seed,
                           drop_no_indexing=bool(drop_no_indexing))
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
        rows = _select_rows(studies, recorder, reports_only=reports_only, drop_no_indexing=drop_no_indexing,
                            show=show_progress)
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
    counted = finding_counts([row["finding_labels"] for row in rows])
    summary.finding_counts = {name: counted.per_finding[name] for name in FINDING_NAMES}
    summary.finding_none, summary.finding_unknown = counted.n_no_finding, counted.n_unknown
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
    studies: list[OpenIStudy], recorder: _Recorder, *, reports_only: bool, show: bool, drop_no_indexing: bool = False
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    summary = recorder.summary
    for study in progress(studies, show, desc="selecting frontal images", unit="study"):
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
        finding_labels = findings_from_mesh(study.mesh)  # None: "No Indexing" (a known label, unknown findings)
        if finding_labels is None:
            summary.no_indexing += 1
            if drop_no_indexing:
                recorder.drop(NO_INDEXING)
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
                "finding_labels": finding_labels,
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


def save_dataset(
    splits: DatasetDict,
    out: str | os.PathLike,
    card: Any,
    *,
    output_format: str = "arrow",
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Write `splits` and their dataset `card` (as README.md) to `out` atomically; returns `out`.

    `output_format` "arrow" uses ``save_to_disk`` (reload with ``load_from_disk``); "parquet" writes
    ``data/<split>-00000-of-00001.parquet``. Both are also readable with ``load_dataset(out)`` through the
    card's ``configs``.

    Example:
        >>> save_dataset(splits, "phantoms", phantom_dataset_card(splits, seed=0))  # doctest: +SKIP
    """
    if output_format not in {"arrow", "parquet"}:
        raise ValueError(f"output_format must be 'arrow' or 'parquet', got {output_format!r}")
    out_dir = Path(out)
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
            card.save(str(tmp / "README.md"))
    finally:
        if silence:
            datasets.enable_progress_bars()
    return out_dir


_IMAGE_REASONS = (MISSING_IMAGE, IMAGE_NOT_HELD, NO_FRONTAL_IMAGE, UNREADABLE_IMAGE)


def nothing_kept_message(summary: OpenISummary) -> str:
    """Why a build kept no study, and what to do about it (one line)."""
    dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(summary.dropped.items())) or "none dropped"
    head = f"{summary.source}: the build kept 0 of {summary.studies_seen} studies ({dropped}); nothing was saved"
    if summary.studies_seen == 0:
        return f"{head}: the source holds no study (a reports table with a header only, or the wrong folder?)"
    worst = max(summary.dropped, key=summary.dropped.get) if summary.dropped else None
    if worst in _IMAGE_REASONS and not summary.reports_only:
        return f"{head}: no study has a usable frontal image; add the image files, or pass --reports-only to keep " \
               "report-only studies"
    if worst == NO_REPORT_TEXT:
        return f"{head}: no study has Findings or Impression text"
    example = summary.examples.get(worst or "", "")
    return f"{head}" + (f"; e.g. {example}" if example else "")


def build_openi_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    reports_only: bool = False,
    strict: bool = False,
    drop_no_indexing: bool = False,
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
        from ..preflight import check_hub_push

        _require_hub_online(push_to_hub)  # fail before the (long) build, not after it
        check_hub_push(push_to_hub, repo_type="dataset", flag="--push-to-hub")
    splits, summary = load_openi(
        src, reports_only=reports_only, strict=strict, drop_no_indexing=drop_no_indexing, seed=seed,
        test_per_class=test_per_class,
        val_fraction=val_fraction, cache_dir=cache_dir, show_progress=show_progress, return_summary=True,
        **load_kwargs,
    )
    if summary.kept == 0:
        raise ValueError(nothing_kept_message(summary))
    save_dataset(splits, out_dir, openi_dataset_card(summary, output_format=output_format),
                 output_format=output_format, overwrite=overwrite, show_progress=show_progress)
    if push_to_hub:
        push_openi_to_hub(splits, push_to_hub, private=private)
    return OpenIBuildResult(out_dir=out_dir, dataset=splits, summary=summary, card_path=out_dir / "README.md")


