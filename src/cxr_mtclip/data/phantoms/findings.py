"""Findings a report asserts, read with a small negation-aware keyword parser (report text or OpenI MeSH terms).

The phantom generator draws what these return; see `cxr_mtclip.data.phantoms.render` for what each kind looks like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FINDING_KINDS", "SIDES", "ZONES", "PhantomFinding", "findings_from_mesh", "parse_findings"]

FINDING_KINDS = (
    "cardiomegaly", "effusion", "opacity", "nodule", "mass", "granuloma", "pneumothorax", "atelectasis",
    "edema", "hyperinflation", "hypoinflation", "pacemaker", "line", "sternotomy", "clips", "degenerative",
    "scoliosis", "fracture", "hernia", "aorta", "hilar",
)
SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "mid", "lower")


@dataclass(frozen=True)
class PhantomFinding:
    """One thing to draw: `side` is the patient's side, `zone` the lung zone; None means unspecified."""

    kind: str
    side: str | None = None
    zone: str | None = None
    severity: float = 1.0
    detail: str | None = None  # for "line": "central", "et_tube", "ng_tube"


# --------------------------------------------------------------------------------------------------
# Reading findings from report text and MeSH
# --------------------------------------------------------------------------------------------------

_PATTERNS: list[tuple[str, str]] = [
    ("cardiomegaly", r"cardiomegaly|cardiac enlargement|enlarged (?:cardiac silhouette|heart|cardiac)"
                     r"|(?:heart|cardiac silhouette|cardiac)(?: size)? (?:is |are |appears |remains |was )?"
                     r"(?:again )?(?:mildly |moderately |markedly |severely |slightly |borderline )?"
                     r"(?:enlarged|large\b)"),
    ("effusion", r"effusions?|blunt\w* of (?:the )?(?:left |right |bilateral )?costophrenic"
                 r"|costophrenic (?:angles? )?(?:is |are )?blunt\w*"),
    ("pneumothorax", r"pneumothora(?:x|ces)"),
    ("opacity", r"opacit(?:y|ies)|consolidation|infiltrates?|air ?space (?:disease|opacit\w+)|pneumonia"),
    ("granuloma", r"granulom(?:a|as|ata|atous)|calcified (?:\w+ )?(?:nodule|lymph node|node)s?|calcinosis"),
    ("mass", r"\bmass(?:es)?\b"),
    ("nodule", r"\bnodul(?:e|es|ar)\b"),
    ("atelectasis", r"atelecta\w*|\bscarring\b|\bscar\b"),
    ("edema", r"\bedema\b|vascular congestion|pulmonary congestion|interstitial (?:prominence|markings|opacit\w+)"),
    ("hyperinflation", r"hyperinflat\w*|hyperexpan\w*|emphysema\w*|\bcopd\b|flatten\w* (?:of the )?(?:hemi)?diaphragm"),
    ("hypoinflation", r"hypoinflat\w*|low lung volumes?|hypoventilat\w*|poor inspiration|shallow inspiration"),
    ("pacemaker", r"pacemaker|\bpacer\b|\baicd\b|\bicd\b|defibrillator|pacing (?:leads?|wires?)"),
    ("line", r"\bpicc\b|central (?:venous )?(?:line|catheter)|\bcatheters?\b|port-?a-?cath|\bport\b"
             r"|endotracheal tube|\bet tube\b|nasogastric tube|\bng tube\b|enteric tube|feeding tube|\bline\b"),
    ("sternotomy", r"sternotomy|sternal wires?|median sternotomy|\bcabg\b"),
    ("clips", r"surgical clips?|\bclips\b|staples|foreign bod(?:y|ies)|sutures?|suture material"),
    ("degenerative", r"degenerative|spondylosis|osteophyt\w*|\bdish\b|spondyl\w*"),
    ("scoliosis", r"scolio\w*|curvature of the (?:thoracic )?spine"),
    ("fracture", r"fractures?"),
    ("hernia", r"hiatal hernia|\bhernia\b"),
    ("aorta", r"tortuous (?:thoracic )?aorta"
              r"|aort\w*(?: \w+){0,3} (?:tortuous|ectatic|calcifi\w+|unfolded|ectasia|dilat\w+|enlarged|atheroscl\w+)"
              r"|(?:calcified|tortuous|ectatic|unfolded|atherosclerotic)(?: \w+){0,2} aort\w*"
              r"|aortic (?:calcification|atherosclerosis|ectasia)"),
    ("hilar", r"hilar (?:adenopathy|lymphadenopathy|enlargement|prominence|fullness|mass)|lymphadenopathy"
              r"|(?:enlarged|prominent) hil(?:a|um|ar)"),
]
_COMPILED = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in _PATTERNS]
_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|clear of|absence of|resolution of|resolved|removal of|"
    r"interval removal|rather than|never|nor|none)\b",
    re.IGNORECASE,
)
_POST_NEGATION = re.compile(
    r"^[^.;]{0,30}?\b(?:(?:is|are|has|have|was|were)\s+)?(?:not (?:seen|identified|present|demonstrated|"
    r"visualized|evident|appreciated)|resolved|absent|removed|ruled out|excluded)\b",
    re.IGNORECASE,
)
_PSEUDO_NEGATION = re.compile(
    r"\bno (?:significant |interval |definite )?(?:change|changes|increase|decrease)\b"
    r"|\bwithout (?:interval )?change\b|"
    r"\bno new\b(?= or (?:worsening|increas))",
    re.IGNORECASE,
)
_RESET = re.compile(r"\b(?:but|however|although|though|except|whereas)\b|[,:]\s*(?:there is|there are|with)\b",
                    re.IGNORECASE)
_SIDE_WORDS = re.compile(r"\b(left|right|bilateral(?:ly)?|both|bibasilar|bibasal|bilat)\b", re.IGNORECASE)
_ZONE_WORDS = re.compile(
    r"\b(upper|apex|apical|apices|mid|middle|lingula\w*|perihilar|hilar|lower|base|bases|basal|basilar|bibasilar|"
    r"costophrenic|retrocardiac|infrahilar)\b",
    re.IGNORECASE,
)
_SEVERITY_WORDS = re.compile(
    r"\b(minimal|trace|tiny|mild|mildly|small|slight|slightly|borderline|moderate|moderately|large|severe|"
    r"severely|marked|markedly|massive|extensive|prominent)\b",
    re.IGNORECASE,
)
_SEVERITY = {
    "minimal": 0.6, "trace": 0.6, "tiny": 0.6, "mild": 0.75, "mildly": 0.75, "small": 0.75, "slight": 0.7,
    "slightly": 0.7, "borderline": 0.6, "moderate": 1.1, "moderately": 1.1, "large": 1.4, "severe": 1.5,
    "severely": 1.5, "marked": 1.4, "markedly": 1.4, "massive": 1.6, "extensive": 1.5, "prominent": 1.2,
}
_SIDELESS = {"cardiomegaly", "edema", "hyperinflation", "hypoinflation", "sternotomy", "degenerative",
             "scoliosis", "hernia", "aorta", "pacemaker", "hilar"}


def _nearest(regex: re.Pattern[str], sentence: str, start: int, end: int, window: int = 45) -> str | None:
    best, best_distance = None, window + 1
    for match in regex.finditer(sentence):
        distance = start - match.end() if match.end() <= start else match.start() - end
        if match.start() >= start and match.end() <= end:
            distance = 0
        if 0 <= distance < best_distance or (distance < 0 and best_distance > 0):
            best, best_distance = match.group(1).lower(), max(distance, 0)
    return best


def _side_of(word: str | None) -> str | None:
    if word is None:
        return None
    if word in {"left", "right"}:
        return word
    return "bilateral"


def _zone_of(word: str | None) -> str | None:
    if word is None:
        return None
    if word in {"upper", "apex", "apical", "apices"}:
        return "upper"
    if word in {"mid", "middle", "perihilar", "hilar", "infrahilar"} or word.startswith("lingula"):
        return "mid"
    return "lower"


def _line_detail(text: str) -> str:
    lowered = text.lower()
    if re.search(r"endotracheal|\bet tube\b", lowered):
        return "et_tube"
    if re.search(r"nasogastric|\bng tube\b|enteric|feeding", lowered):
        return "ng_tube"
    return "central"


def parse_findings(text: str) -> list[PhantomFinding]:
    """Findings a report asserts (negated mentions such as "no pleural effusion" are skipped).

    Example:
        >>> [f.kind for f in parse_findings("Mild cardiomegaly. No pleural effusion. Left lower lobe opacity.")]
        ['cardiomegaly', 'opacity']
    """
    found: list[PhantomFinding] = []
    seen: set[tuple[str, str | None, str | None]] = set()
    for raw_sentence in re.split(r"(?<=[.;!?])\s+|\n+", text or ""):
        sentence = _PSEUDO_NEGATION.sub(lambda m: " " * len(m.group(0)), raw_sentence)
        for kind, regex in _COMPILED:
            for match in regex.finditer(sentence):
                before = sentence[: match.start()]
                resets = list(_RESET.finditer(before))
                scope = before[resets[-1].end():] if resets else before
                if _NEGATION.search(scope) or _POST_NEGATION.search(sentence[match.end():]):
                    continue
                if kind == "line" and re.search(r"\b(?:mid|skin|pleural|septal|kerley|fissure|hair)\s*line\b",
                                                sentence[max(0, match.start() - 8): match.end()], re.IGNORECASE):
                    continue
                side = None
                if kind not in _SIDELESS:
                    side = _side_of(_nearest(_SIDE_WORDS, sentence, match.start(), match.end()))
                zone = _zone_of(_nearest(_ZONE_WORDS, sentence, match.start(), match.end()))
                severity_word = _nearest(_SEVERITY_WORDS, sentence, match.start(), match.end(), window=25)
                severity = _SEVERITY.get(severity_word or "", 1.0)
                detail = _line_detail(match.group(0)) if kind == "line" else None
                if kind == "effusion" and side is None and match.group(0).lower().endswith("effusions"):
                    side = "bilateral"
                key = (kind, side, zone)
                if key in seen:
                    continue
                seen.add(key)
                found.append(PhantomFinding(kind, side, zone, severity, detail))
    return found


def findings_from_mesh(mesh: str | None) -> list[PhantomFinding]:
    """Findings named by OpenI MeSH terms ("Opacity/lung/base/left;Cardiomegaly/mild"); "normal" gives none.

    Example:
        >>> [(f.kind, f.side) for f in findings_from_mesh("Pleural Effusion/right;Cardiomegaly/mild")]
        [('effusion', 'right'), ('cardiomegaly', None)]
    """
    text = (mesh or "").strip()
    if not text or text.casefold() in {"normal", "no indexing"}:
        return []
    extra = {
        "lung/hypoinflation": "hypoinflation", "thoracic vertebrae/degenerative": "degenerative",
        "spine/degenerative": "degenerative", "medical device": "line", "implanted medical device": "pacemaker",
        "pulmonary disease, chronic obstructive": "hyperinflation", "pulmonary emphysema": "hyperinflation",
        "lung/hyperdistention": "hyperinflation", "diaphragm/elevated": "hypoinflation",
        "aorta/tortuous": "aorta", "aorta, thoracic/tortuous": "aorta", "aorta/calcified": "aorta",
        "lymph nodes/hilum": "hilar", "pulmonary congestion": "edema", "lung/hypoinflation/mild": "hypoinflation",
        "airspace disease": "opacity", "pulmonary atelectasis": "atelectasis", "cicatrix": "atelectasis",
        "osteophyte": "degenerative", "fractures, bone": "fracture", "hernia, hiatal": "hernia",
        "surgical instruments": "clips", "catheters, indwelling": "line", "tube, inserted": "line",
    }
    found: list[PhantomFinding] = []
    for term in text.split(";"):
        parts = [p.strip() for p in term.split("/") if p.strip()]
        if not parts:
            continue
        lowered = "/".join(parts).lower()
        kind = next((k for prefix, k in extra.items() if lowered.startswith(prefix)), None)
        words = " ".join(parts)
        if kind is None:
            hits = parse_findings(words)
            if hits:
                hit = hits[0]
                found.append(hit)
                continue
            continue
        side = None if kind in _SIDELESS else _side_of(_nearest(_SIDE_WORDS, words, 0, len(words), window=200))
        zone = _zone_of(_nearest(_ZONE_WORDS, words, 0, len(words), window=200))
        severity = _SEVERITY.get(_nearest(_SEVERITY_WORDS, words, 0, len(words), window=200) or "", 1.0)
        found.append(PhantomFinding(kind, side, zone, severity, "central" if kind == "line" else None))
    return found

