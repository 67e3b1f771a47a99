"""OpenI MeSH terms -> a fixed list of radiological findings (multi-label study labels).

This module imports nothing from ``cxr_mtclip``. The table and its rules are documented, with
counts on the real reports, in ``docs/findings.md``.

MeSH field format (OpenI ``<MeSH><major>`` terms, the Kaggle ``MeSH`` column, ``reports.csv``'s
``mesh``): terms separated by ``;``; in each term the *head* is the part before the first ``/`` and
the *qualifiers* are the ``/``-separated parts after it (anatomy, laterality, severity, descriptor),
e.g. ``Opacity/lung/base/left/mild``. ``normal`` marks a normal study, ``No Indexing`` a study that
was never indexed.

Rules (applied to each term; heads and qualifiers compared after casefolding and collapsing runs of
whitespace):

* a term is mapped by the first rule of :data:`MESH_RULES` whose ``head`` equals the term's head and
  which either requires no qualifier or finds one of its ``qualifiers`` among the term's qualifiers;
  a term no rule matches is dropped (a head below the support threshold, or an anatomy-only term);
* severity and laterality qualifiers (``mild``, ``left``, ``borderline`` ...) never change the finding;
* a study's findings are the union over its terms, in :data:`FINDING_NAMES` order;
* ``normal`` -> ``[]``; ``No Indexing``, an empty MeSH or a placeholder (``nan``, ``none`` ...) ->
  ``None`` (unknown: the study carries no information about any finding; it is *not* negative).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_QUERY_TEMPLATE",
    "FINDING_DESCRIPTIONS",
    "FINDING_NAMES",
    "MESH_RULES",
    "MIN_SUPPORT",
    "FindingCounts",
    "MeshRule",
    "MeshTerm",
    "finding_counts",
    "finding_labels_feature",
    "finding_multi_hot",
    "finding_queries",
    "findings_from_mesh",
    "parse_mesh",
]

MIN_SUPPORT = 30
"""Studies (of the 3,826 real OpenI reports) a finding needed to be kept; see docs/findings.md."""

# Ordered by support on the 3,826 real OpenI reports (docs/findings.md), largest first. Fixed: the
# ClassLabel ids of a saved dataset depend on this order, so new findings are appended, never inserted.
FINDING_NAMES: list[str] = [
    "spondylosis",
    "opacity",
    "granuloma",
    "cardiomegaly",
    "atelectasis",
    "hypoinflation",
    "tortuous_aorta",
    "support_devices",
    "atherosclerosis",
    "calcification",
    "hyperinflation",
    "scarring",
    "lung_markings",
    "pleural_effusion",
    "airspace_disease",
    "nodule",
    "elevated_diaphragm",
    "surgical_instruments",
    "emphysema",
    "bone_deformity",
    "scoliosis",
    "fracture",
    "blunted_costophrenic_angle",
    "pulmonary_congestion",
    "flattened_diaphragm",
    "copd",
    "hiatal_hernia",
    "pleural_thickening",
    "pulmonary_edema",
    "pneumonia",
    "kyphosis",
    "osteopenia",
]

FINDING_DESCRIPTIONS: dict[str, str] = {
    "opacity": "a lung opacity",
    "cardiomegaly": "cardiomegaly",
    "granuloma": "a calcified granuloma",
    "spondylosis": "degenerative changes of the spine",
    "atelectasis": "atelectasis",
    "support_devices": "an indwelling catheter, tube or implanted device",
    "hypoinflation": "low lung volumes",
    "calcification": "calcified lymph nodes or other calcification",
    "hyperinflation": "hyperinflated lungs",
    "tortuous_aorta": "a tortuous aorta",
    "atherosclerosis": "atherosclerosis of the aorta",
    "scarring": "lung scarring",
    "lung_markings": "prominent lung markings",
    "airspace_disease": "airspace disease",
    "pleural_effusion": "pleural effusion",
    "elevated_diaphragm": "an elevated hemidiaphragm",
    "nodule": "a lung nodule or mass",
    "bone_deformity": "a bone deformity",
    "surgical_instruments": "surgical clips or wires",
    "scoliosis": "scoliosis",
    "emphysema": "emphysema",
    "fracture": "a fracture",
    "blunted_costophrenic_angle": "a blunted costophrenic angle",
    "pulmonary_congestion": "pulmonary vascular congestion",
    "flattened_diaphragm": "flattened diaphragms",
    "copd": "chronic obstructive pulmonary disease",
    "pleural_thickening": "pleural thickening",
    "hiatal_hernia": "a hiatal hernia",
    "pulmonary_edema": "pulmonary edema",
    "pneumonia": "pneumonia",
    "kyphosis": "kyphosis",
    "osteopenia": "osteopenia",
}
"""Plain-language phrase per finding, used by :func:`finding_queries` and the docs."""

DEFAULT_QUERY_TEMPLATE = "Findings consistent with {}."


@dataclass(frozen=True)
class MeshRule:
    """One row of the mapping table: MeSH ``head`` (with one of ``qualifiers`` if given) -> ``finding``."""

    head: str
    finding: str
    qualifiers: frozenset[str] = field(default_factory=frozenset)

    def matches(self, term: MeshTerm) -> bool:
        """Whether ``term`` has this head and, when the rule names qualifiers, one of them."""
        if term.head != self.head:
            return False
        return not self.qualifiers or not self.qualifiers.isdisjoint(term.qualifiers)


def _rule(head: str, finding: str, *qualifiers: str) -> MeshRule:
    return MeshRule(head, finding, frozenset(qualifiers))


_SPINE = ("thoracic vertebrae", "lumbar vertebrae", "cervical vertebrae", "spine")
_BONES = _SPINE + ("ribs", "clavicle", "humerus", "sternum", "shoulder", "scapula")

# Order matters only where one head has several rules (the first match wins): e.g. Calcinosis of the
# aorta is atherosclerotic calcification, any other Calcinosis is `calcification`.
MESH_RULES: tuple[MeshRule, ...] = (
    # Lung: the head is anatomy; the qualifier names the finding.
    _rule("lung", "hypoinflation", "hypoinflation"),
    _rule("lung", "hyperinflation", "hyperdistention"),
    # Opacity and its discouraged synonyms on radiographs (Infiltrate, lung Density).
    _rule("opacity", "opacity"),
    _rule("infiltrate", "opacity"),
    _rule("density", "opacity", "lung"),
    # Heart.
    _rule("cardiomegaly", "cardiomegaly"),
    _rule("cardiac shadow", "cardiomegaly", "enlarged", "borderline"),
    # Granulomatous disease and its calcified granulomas.
    _rule("calcified granuloma", "granuloma"),
    _rule("granuloma", "granuloma"),
    _rule("granulomatous disease", "granuloma"),
    # Degenerative spine: anatomy heads need the `degenerative` qualifier.
    *(_rule(head, "spondylosis", "degenerative") for head in _SPINE),
    _rule("spondylosis", "spondylosis"),
    _rule("osteophyte", "spondylosis", *_SPINE),
    _rule("arthritis", "spondylosis", *_SPINE),
    _rule("pulmonary atelectasis", "atelectasis"),
    # Lines, tubes and implanted devices (CheXpert's "support devices").
    _rule("catheters, indwelling", "support_devices"),
    _rule("tube, inserted", "support_devices"),
    _rule("implanted medical device", "support_devices"),
    _rule("medical device", "support_devices"),
    _rule("stents", "support_devices"),
    # Calcinosis: of the aorta -> atherosclerosis, elsewhere (mostly lymph nodes, lung) -> calcification.
    _rule("calcinosis", "atherosclerosis", "aorta", "aorta, thoracic"),
    _rule("calcinosis", "calcification"),
    _rule("atherosclerosis", "atherosclerosis"),
    _rule("aorta", "tortuous_aorta", "tortuous"),
    _rule("aorta, thoracic", "tortuous_aorta", "tortuous"),
    _rule("cicatrix", "scarring"),
    _rule("markings", "lung_markings"),
    _rule("airspace disease", "airspace_disease"),
    _rule("consolidation", "airspace_disease"),
    _rule("pleural effusion", "pleural_effusion"),
    _rule("diaphragm", "elevated_diaphragm", "elevated"),
    _rule("diaphragmatic eventration", "elevated_diaphragm"),
    _rule("diaphragm", "flattened_diaphragm", "flattened"),
    _rule("nodule", "nodule"),
    _rule("mass", "nodule"),
    _rule("deformity", "bone_deformity", *_BONES),
    _rule("surgical instruments", "surgical_instruments"),
    _rule("sutures", "surgical_instruments"),
    _rule("scoliosis", "scoliosis"),
    _rule("emphysema", "emphysema"),
    _rule("pulmonary emphysema", "emphysema"),
    _rule("bullous emphysema", "emphysema"),
    _rule("fractures, bone", "fracture"),
    _rule("costophrenic angle", "blunted_costophrenic_angle", "blunted"),
    _rule("sulcus", "blunted_costophrenic_angle", "blunted"),
    _rule("pleura", "blunted_costophrenic_angle", "blunted"),
    _rule("pulmonary congestion", "pulmonary_congestion"),
    _rule("pulmonary disease, chronic obstructive", "copd"),
    _rule("thickening", "pleural_thickening", "pleura"),
    _rule("hernia, hiatal", "hiatal_hernia"),
    _rule("pulmonary edema", "pulmonary_edema"),
    _rule("pneumonia", "pneumonia"),
    _rule("kyphosis", "kyphosis"),
    _rule("bone diseases, metabolic", "osteopenia"),
    _rule("osteoporosis", "osteopenia"),
)
"""The mapping table; every ``finding`` is in :data:`FINDING_NAMES` and every finding has a rule."""

_NORMAL = "normal"
_NO_INDEXING = "no indexing"
# Same placeholders the dataset builder treats as an unknown label (data.py's _UNKNOWN_MESH).
_PLACEHOLDERS = frozenset({"", "nan", "none", "null", "n/a", "na", "unknown", "?", "-"})
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class MeshTerm:
    """One MeSH term, normalised: ``head`` and ``qualifiers`` casefolded, whitespace collapsed."""

    head: str
    qualifiers: tuple[str, ...] = ()


def _normalise(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip().casefold()


def parse_mesh(mesh: str | None) -> list[MeshTerm] | None:
    """Split a MeSH string into normalised terms; ``None`` for an unknown (unindexed/empty) study.

    ``normal`` gives ``[MeshTerm("normal")]``; empty terms (``;;``) are skipped.

    Raises:
        ValueError: if ``mesh`` is neither a string, ``None`` nor a float NaN (pandas' missing value).

    Example:
        >>> parse_mesh("Opacity/lung/base/left;Cardiomegaly/mild")
        [MeshTerm(head='opacity', qualifiers=('lung', 'base', 'left')), MeshTerm(head='cardiomegaly', qualifiers=('mild',))]
    """
    if mesh is None or (isinstance(mesh, float) and math.isnan(mesh)):
        return None
    if not isinstance(mesh, str):
        raise ValueError(f"MeSH value must be a string such as 'Cardiomegaly/mild;Opacity/lung', got {mesh!r}")
    whole = _normalise(mesh)
    if whole in _PLACEHOLDERS or whole == _NO_INDEXING:
        return None
    terms = []
    for raw in mesh.split(";"):
        parts = [_normalise(part) for part in raw.split("/")]
        if not parts[0]:
            continue
        terms.append(MeshTerm(parts[0], tuple(p for p in parts[1:] if p)))
    return terms or None


def _finding_of(term: MeshTerm) -> str | None:
    for rule in MESH_RULES:
        if rule.matches(term):
            return rule.finding
    return None


def findings_from_mesh(mesh: str | None) -> list[str] | None:
    """Findings of one study from its MeSH string, in :data:`FINDING_NAMES` order.

    Returns ``None`` when unknown (``No Indexing``, empty or placeholder MeSH), ``[]`` for ``normal``
    or when no term maps to a listed finding (the study is indexed and negative for every finding).
    ``normal`` or ``No Indexing`` next to other terms is ignored; the other terms decide.

    Raises:
        ValueError: if ``mesh`` is not a string (``None`` and float NaN are accepted as missing).

    Example:
        >>> findings_from_mesh("Lung/hypoinflation/mild;Cardiac Shadow/enlarged;Opacity/lung/base")
        ['opacity', 'cardiomegaly', 'hypoinflation']
        >>> findings_from_mesh("normal"), findings_from_mesh("No Indexing")
        ([], None)
    """
    terms = parse_mesh(mesh)
    if terms is None:
        return None
    found = {_finding_of(term) for term in terms if term.head not in (_NORMAL, _NO_INDEXING)}
    return [name for name in FINDING_NAMES if name in found]


def finding_labels_feature(names: Sequence[str] | None = None) -> Any:
    """The ``finding_labels`` column type: ``datasets.List(datasets.ClassLabel(names=FINDING_NAMES))``.

    A study's value is a list of finding ids (``[]`` = no listed finding) or ``None`` (unknown).
    ``datasets`` >= 4 spells the old ``Sequence(ClassLabel(...))`` as ``List``.

    Example:
        >>> finding_labels_feature().feature.names[:2]
        ['spondylosis', 'opacity']
    """
    from datasets import ClassLabel, List

    return List(ClassLabel(names=list(FINDING_NAMES if names is None else names)))


def finding_multi_hot(
    finding_labels: Iterable[Sequence[str | int] | None], names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot matrix and "known" mask of a column of finding labels.

    Args:
        finding_labels: one entry per study: a list of finding names or ClassLabel ids (as the
            ``finding_labels`` column returns them), or ``None`` for an unknown study.
        names: finding names in column order (default :data:`FINDING_NAMES`).

    Returns:
        ``(multi_hot, known)``: ``multi_hot`` float32 of shape ``(n_studies, n_findings)`` with 1 where
        the study carries the finding (all-zero rows for unknown studies); ``known`` bool of shape
        ``(n_studies,)``, False for unknown studies.

    Raises:
        ValueError: for an unknown finding name or an id outside ``[0, n_findings)``.

    Example:
        >>> hot, known = finding_multi_hot([["cardiomegaly"], [], None], names=["opacity", "cardiomegaly"])
        >>> hot.tolist(), known.tolist()
        ([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], [True, True, False])
    """
    names = list(FINDING_NAMES if names is None else names)
    index = {name: i for i, name in enumerate(names)}
    rows = list(finding_labels)
    multi_hot = np.zeros((len(rows), len(names)), dtype=np.float32)
    known = np.ones(len(rows), dtype=bool)
    for row, labels in enumerate(rows):
        if labels is None:
            known[row] = False
            continue
        if isinstance(labels, (str, bytes)):
            raise ValueError(f"finding_labels[{row}] must be a list of findings, got the string {labels!r}")
        for label in labels:
            if isinstance(label, str):
                if label not in index:
                    raise ValueError(f"finding_labels[{row}] has unknown finding {label!r}; expected one of {names}")
                multi_hot[row, index[label]] = 1.0
            elif isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(names):
                multi_hot[row, int(label)] = 1.0
            else:
                raise ValueError(
                    f"finding_labels[{row}] has {label!r}; expected a finding name or an id in [0, {len(names)})"
                )
    return multi_hot, known


@dataclass(frozen=True)
class FindingCounts:
    """Studies per finding, plus how many studies are unknown and how many carry no listed finding."""

    per_finding: dict[str, int]
    n_studies: int
    n_unknown: int
    n_no_finding: int

    def to_markdown(self) -> str:
        """A two-column markdown table (finding, studies) for a dataset card, largest count first."""
        lines = ["| finding | studies |", "|---|---:|"]
        for name, count in sorted(self.per_finding.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"| {name} | {count} |")
        lines.append(f"| (no listed finding) | {self.n_no_finding} |")
        lines.append(f"| (unknown: not indexed) | {self.n_unknown} |")
        lines.append(f"| **all studies** | {self.n_studies} |")
        return "\n".join(lines) + "\n"


def finding_counts(
    finding_labels: Iterable[Sequence[str | int] | None], names: Sequence[str] | None = None
) -> FindingCounts:
    """Count studies per finding (each study counted once per finding) in a column of finding labels.

    Example:
        >>> c = finding_counts([["opacity"], ["opacity", "cardiomegaly"], [], None])
        >>> c.per_finding["opacity"], c.n_no_finding, c.n_unknown
        (2, 1, 1)
    """
    names = list(FINDING_NAMES if names is None else names)
    multi_hot, known = finding_multi_hot(finding_labels, names)
    column_totals = multi_hot.sum(axis=0).astype(np.int64)
    return FindingCounts(
        per_finding={name: int(total) for name, total in zip(names, column_totals)},
        n_studies=int(known.size),
        n_unknown=int((~known).sum()),
        n_no_finding=int((known & (multi_hot.sum(axis=1) == 0)).sum()),
    )


def finding_queries(template: str = DEFAULT_QUERY_TEMPLATE, names: Sequence[str] | None = None) -> dict[str, str]:
    """One "find images with X" text query per finding: ``template`` filled with its description.

    Raises:
        ValueError: if ``template`` has no ``{}`` slot or a name has no description.

    Example:
        >>> finding_queries()["cardiomegaly"]
        'Findings consistent with cardiomegaly.'
    """
    if "{}" not in template:
        raise ValueError(f"template must contain one '{{}}' slot for the finding, got {template!r}")
    names = list(FINDING_NAMES if names is None else names)
    missing = [name for name in names if name not in FINDING_DESCRIPTIONS]
    if missing:
        raise ValueError(f"no description for finding(s) {missing}; add them to FINDING_DESCRIPTIONS")
    return {name: template.format(FINDING_DESCRIPTIONS[name]) for name in names}

