"""Synthetic chest radiograph phantoms whose image shows what their report says (offline demos, benchmarks).

Every row carries ``source="synthetic"``; the schema is `cxr_mtclip.data.OPENI_FEATURES`.

Reports are either built-in templates (several phrasings; normal reports <-> label 0) or real report rows
(e.g. from `load_openi_reports`); findings are read from the text with a small negation-aware keyword
parser (`parse_findings`), falling back to the MeSH terms, and drawn as distinct, fairly large signs:

=================  ============================================================================
finding            what is drawn
=================  ============================================================================
cardiomegaly       heart silhouette 1.35-1.75x wider (cardiothoracic ratio > 0.5)
effusion           fluid filling the lung base with a lateral meniscus, costophrenic angle gone
opacity            irregular airspace density at the named side / zone
nodule, mass       round sharp density (mass: larger, lobulated)
granuloma          small calcified (very bright) dot
pneumothorax       lucent rim without lung markings around a collapsed lung with a pleural line
atelectasis        plate-like linear density at the named side / zone
edema              bilateral perihilar haze
hyperinflation     tall dark lungs, flat diaphragm, narrow heart
hypoinflation      short lungs, high diaphragm, crowded bases
pacemaker          bright generator in the upper chest with leads to the heart
line               catheter / tube course (central line, PICC, endotracheal or nasogastric tube)
sternotomy         wire loops along the midline
clips              clusters of small metallic clips
degenerative       spine osteophytes (bright spurs)
scoliosis          curved spine and mediastinum
fracture           rib callus at the lateral chest wall
hernia             retrocardiac air-fluid bubble
aorta              enlarged, calcified aortic knob
hilar              enlarged lobulated hila
=================  ============================================================================

Nuisance variation (patient size and position, rotation, exposure, gamma, noise, rib phase, breast
shadows, side markers) keeps the task from being trivial. Left/right are the patient's: the patient's
left is on the image's right, as on a PA radiograph.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _ellipse_depth(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Approximate signed distance inside an ellipse (positive inside), in image-width units."""
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    return (1.0 - r) * min(a, b)


def _soft(depth: np.ndarray, width: float) -> np.ndarray:
    return np.clip(0.5 + depth / width, 0.0, 1.0)


def _blend(image: np.ndarray, alpha: np.ndarray, value: float | np.ndarray) -> None:
    image *= 1.0 - alpha
    image += alpha * value


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC))


class _Renderer:
    """Draws one phantom radiograph on a fixed pixel grid (float32, then 8-bit grey)."""

    def __init__(self, size: int) -> None:
        if size < 64:
            raise ValueError(f"image_size must be >= 64 so findings stay visible, got {size}")
        self.size = size
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.y0, self.x0 = np.meshgrid(axis, axis, indexing="ij")

    def render(self, findings: Sequence[PhantomFinding], rng: np.random.Generator) -> Image.Image:
        size = self.size
        kinds = {f.kind for f in findings}
        scale = rng.uniform(0.88, 1.05)
        cx = 0.5 + rng.normal(0, 0.012)
        tilt = math.radians(rng.uniform(-3.0, 3.0))
        dx_shift, dy_shift = rng.normal(0, 0.01), rng.normal(0, 0.015)
        cos_t, sin_t = math.cos(tilt), math.sin(tilt)
        xc, yc = self.x0 - 0.5, self.y0 - 0.5
        x = 0.5 + cos_t * xc - sin_t * yc - dx_shift
        y = 0.5 + sin_t * xc + cos_t * yc - dy_shift

        lung_height = rng.uniform(0.95, 1.05)
        dome = 0.05
        heart_factor = 1.0
        lung_darkness = 0.30
        if "hyperinflation" in kinds:
            lung_height *= 1.16
            dome = 0.008
            heart_factor *= 0.82
            lung_darkness = 0.36
        if "hypoinflation" in kinds:
            lung_height *= 0.78
            dome = 0.07
        for f in findings:
            if f.kind == "cardiomegaly":
                heart_factor = max(heart_factor, 1.25 + 0.3 * min(f.severity, 1.6))
        scoliosis = next((f for f in findings if f.kind == "scoliosis"), None)
        spine_amp = 0.0 if scoliosis is None else rng.choice([-1, 1]) * (0.035 + 0.015 * scoliosis.severity)
        spine_x = cx + spine_amp * np.sin(np.pi * np.clip((y - 0.12) / 0.75, 0, 1))

        image = 0.05 + 0.02 * _smooth_noise(rng, size, 6)
        body = _soft(_ellipse_depth(x, y, cx, 0.6, 0.45 * scale, 0.62), 0.03)
        _blend(image, body, 0.40 + 0.02 * _smooth_noise(rng, size, 8))
        # neck and shoulders: the body narrows above the apices
        shoulders = _soft(0.2 - y, 0.04) * _soft(np.abs(x - cx) - 0.12, 0.04)
        image -= 0.2 * shoulders * body

        # lungs: right lung on the image's left
        lungs = np.zeros_like(x)
        lung_info = {}
        for side, sign, width in (("right", -1.0, 0.135), ("left", 1.0, 0.125)):
            lx = cx + sign * 0.19 * scale
            a = width * scale
            b = 0.27 * lung_height
            ly = 0.2 + b
            base = ly + 0.92 * b - (0.025 if side == "right" else 0.0)
            u = (x - lx) / a
            superellipse = np.abs(u) ** 2.4 + np.abs((y - ly) / b) ** 2.2
            dome_y = base - dome * np.clip(1.0 - u**2, 0, 1)
            depth = np.minimum((1.0 - superellipse) * 0.6 * a, dome_y - y)
            mask = _soft(depth, 0.012)
            lung_info[side] = (lx, ly, a, b, base, sign, mask)
            lungs = np.maximum(lungs, mask)
        markings = 0.045 * _smooth_noise(rng, size, 20) + 0.03 * _smooth_noise(rng, size, 40)
        for side, (lx, ly, a, b, base, sign, mask) in lung_info.items():
            hilum = np.exp(-(((x - (cx + sign * 0.09 * scale)) ** 2 + (y - (ly + 0.1 * b)) ** 2) / 0.006))
            markings = markings + 0.12 * hilum * mask
        rib_phase = rng.uniform(0, 1)
        ribs = 0.5 + 0.5 * np.cos(2 * np.pi * ((y - 0.9 * (x - cx) ** 2) / 0.075 + rib_phase))
        ribs = ribs**6
        lung_value = image - lung_darkness + markings + 0.07 * ribs
        _blend(image, lungs, lung_value)

        if "pneumothorax" in kinds:
            for f in findings:
                if f.kind != "pneumothorax":
                    continue
                for side in self._sides(f, rng):
                    lx, ly, a, b, base, sign, mask = lung_info[side]
                    shrink = 0.78 - 0.08 * (f.severity - 1.0)
                    inner_x = lx - sign * a * (1 - shrink) * 0.6
                    inner_y = ly + b * (1 - shrink) * 0.5
                    inner = _ellipse_depth(x, y, inner_x, inner_y, a * shrink, b * shrink)
                    rim = mask * _soft(-inner, 0.01)
                    _blend(image, rim, 0.07)
                    _blend(image, mask * np.clip(1.0 - np.abs(inner) / 0.006, 0, 1), 0.38)

        # spine and mediastinum
        spine = _soft(0.032 - np.abs(x - spine_x), 0.01) * body
        vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * (y / 0.048))
        image += spine * (0.1 + 0.05 * vertebrae) * (1 - lungs)
        # heart
        heart_w = 0.125 * scale * heart_factor
        heart_cx = cx + 0.04 * scale + 0.35 * (heart_w - 0.125 * scale)
        heart_cy = 0.2 + 1.6 * 0.27 * lung_height - 0.02
        heart = _soft(_ellipse_depth(x, y, heart_cx, heart_cy, heart_w, 0.105), 0.015)
        _blend(image, heart, 0.52 + 0.02 * rng.standard_normal())
        # aortic knob
        knob_r = 0.03
        if "aorta" in kinds:
            knob_r = 0.05
        knob = _soft(_ellipse_depth(x, y, cx + 0.05 * scale + (knob_r - 0.03), 0.33, knob_r, knob_r), 0.012)
        _blend(image, knob, 0.5)
        # gastric bubble under the left hemidiaphragm
        bubble_y = lung_info["left"][4] + 0.05
        bubble = _soft(_ellipse_depth(x, y, cx + 0.17 * scale, bubble_y, 0.04, 0.025), 0.01) * (1 - lungs)
        _blend(image, bubble, 0.18)
        # clavicles
        for sign in (-1.0, 1.0):
            image += 0.16 * self._segment(x, y, cx + sign * 0.04, 0.21, cx + sign * 0.34 * scale, 0.13, 0.012)
        if rng.random() < 0.4:  # breast shadows (symmetric nuisance)
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                shadow = _soft(_ellipse_depth(x, y, lx + sign * 0.03, base - 0.02, a * 1.1, 0.09), 0.03)
                image += 0.06 * shadow * mask

        overlay = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(overlay)
        for f in findings:
            self._draw_finding(f, image, draw, rng, x, y, cx, scale, lung_info, lungs, spine_x, heart_cx, heart_cy,
                               heart_w)
        if rng.random() < 0.5:  # side marker in a top corner
            px = int(rng.uniform(0.04, 0.12) * size) if rng.random() < 0.5 else int(rng.uniform(0.82, 0.9) * size)
            py = int(rng.uniform(0.03, 0.1) * size)
            draw.rectangle([px, py, px + size // 28, py + size // 22], fill=200)
        image += np.asarray(overlay, dtype=np.float32) / 255.0

        # exposure, gamma and noise
        image = np.clip(image, 0.0, 1.2) / 1.2
        gain = rng.uniform(0.85, 1.15)
        gamma = rng.uniform(0.8, 1.25)
        image = np.clip(image * gain + rng.normal(0, 0.02), 0, 1) ** gamma
        image = image + rng.normal(0, rng.uniform(0.008, 0.025), image.shape).astype(np.float32)
        return Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")

    def _sides(self, finding: PhantomFinding, rng: np.random.Generator) -> list[str]:
        side = finding.side or ("right" if rng.random() < 0.5 else "left")
        return ["right", "left"] if side == "bilateral" else [side]

    def _zone_y(self, zone: str | None, ly: float, b: float, rng: np.random.Generator) -> float:
        zone = zone or ZONES[int(rng.integers(0, 3))]
        return {"upper": ly - 0.5 * b, "mid": ly + 0.05 * b, "lower": ly + 0.5 * b}[zone]

    @staticmethod
    def _segment(x: np.ndarray, y: np.ndarray, x1: float, y1: float, x2: float, y2: float, width: float) -> np.ndarray:
        vx, vy = x2 - x1, y2 - y1
        t = np.clip(((x - x1) * vx + (y - y1) * vy) / (vx * vx + vy * vy), 0, 1)
        distance = np.sqrt((x - x1 - t * vx) ** 2 + (y - y1 - t * vy) ** 2)
        return _soft(width / 2 - distance, 0.006)

    def _px(self, value: float) -> float:
        return value * self.size

    def _draw_finding(self, f: PhantomFinding, image: np.ndarray, draw: ImageDraw.ImageDraw,
                      rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cx: float, scale: float,
                      lung_info: dict, lungs: np.ndarray, spine_x: np.ndarray, heart_cx: float, heart_cy: float,
                      heart_w: float) -> None:
        s, kind = self.size, f.kind
        if kind == "effusion":
            for side in self._sides(f, rng):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                level = base - (0.3 + 0.22 * min(f.severity, 1.6)) * b
                lateral = np.clip(sign * (x - lx) / a * 0.5 + 0.5, 0, 1)
                fluid = _soft(y - (level - 0.12 * lateral**2), 0.025)
                _blend(image, fluid * mask, 0.46)
        elif kind in {"opacity", "nodule", "mass", "granuloma", "atelectasis", "fracture"}:
            for side in self._sides(f, rng):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                oy = self._zone_y(f.zone, ly, b, rng)
                ox = lx + sign * rng.uniform(-0.25, 0.35) * a
                if kind == "opacity":
                    r = (0.055 + 0.025 * min(f.severity, 1.6)) * scale
                    wobble = 0.35 * _smooth_noise(rng, s, 10)
                    depth = (1.0 - np.sqrt(((x - ox) / r) ** 2 + ((y - oy) / (0.85 * r)) ** 2)) + wobble * 0.5
                    _blend(image, np.clip(depth * 2.5, 0, 0.95) * mask, 0.5)
                elif kind in {"nodule", "mass"}:
                    r = (0.03 if kind == "nodule" else 0.06) * (0.85 + 0.15 * f.severity)
                    angle = np.arctan2(y - oy, x - ox)
                    lobes = 1.0 + (0.15 * np.cos(3 * angle + rng.uniform(0, 6)) if kind == "mass" else 0.0)
                    depth = (r * lobes - np.sqrt((x - ox) ** 2 + (y - oy) ** 2))
                    _blend(image, _soft(depth, 0.008) * 0.95, 0.56)
                elif kind == "granuloma":
                    r = 0.016
                    depth = r - np.sqrt((x - ox) ** 2 + (y - oy) ** 2)
                    _blend(image, _soft(depth, 0.006), 0.9)
                elif kind == "atelectasis":
                    half = (0.07 + 0.03 * f.severity) * scale
                    slope = rng.uniform(-0.15, 0.15)
                    band = self._segment(x, y, ox - half, oy - slope * half, ox + half, oy + slope * half, 0.02)
                    _blend(image, band * mask * 0.9, 0.5)
                else:  # fracture: callus on a lateral rib
                    fx = lx + sign * 0.92 * a
                    callus = _soft(0.022 - np.sqrt(((x - fx) / 1.3) ** 2 + (y - oy) ** 2), 0.006)
                    _blend(image, callus, 0.78)
        elif kind == "edema":
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                hx, hy = cx + sign * 0.11 * scale, ly + 0.1 * b
                haze = np.exp(-(((x - hx) / 0.13) ** 2 + ((y - hy) / 0.2) ** 2)) * (0.65 + 0.2 * f.severity)
                _blend(image, np.clip(haze, 0, 0.85) * mask, 0.45)
        elif kind == "hilar":
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                hx, hy = cx + sign * 0.1 * scale, ly + 0.08 * b
                for k in range(3):
                    bx, by = hx + sign * rng.uniform(0, 0.03), hy + rng.uniform(-0.04, 0.04)
                    _blend(image, _soft(0.03 - np.sqrt((x - bx) ** 2 + (y - by) ** 2), 0.01), 0.55)
        elif kind == "hypoinflation":
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                image += 0.08 * mask * _soft(y - (base - 0.35 * b), 0.05)
        elif kind == "hernia":
            hx, hy, r = heart_cx - 0.02, heart_cy + 0.03, 0.055
            distance = np.sqrt((x - hx) ** 2 + (y - hy) ** 2)
            air = _soft(r - distance, 0.006) * _soft(hy + 0.01 - y, 0.004)
            _blend(image, air, 0.15)
            _blend(image, np.clip(1.0 - np.abs(distance - r) / 0.006, 0, 1), 0.7)
        elif kind == "aorta":
            kx, ky, r = cx + 0.07 * scale, 0.33, 0.05
            arc = np.clip(1.0 - np.abs(np.sqrt((x - kx) ** 2 + (y - ky) ** 2) - r) / 0.007, 0, 1) * (x > kx)
            _blend(image, arc, 0.85)
        elif kind == "degenerative":
            rows = (np.arange(0.3, 0.8, 0.048) * s).astype(int)
            for row in rows:
                sx = float(spine_x[min(row, s - 1), s // 2]) * s
                for sign in (-1, 1):
                    if rng.random() < 0.75:
                        tip = sx + sign * (0.032 * s + rng.uniform(0.015, 0.03) * s)
                        draw.polygon([(sx + sign * 0.028 * s, row - 0.012 * s), (tip, row),
                                      (sx + sign * 0.028 * s, row + 0.012 * s)], fill=150)
        elif kind == "pacemaker":
            side = f.side if f.side in {"right", "left"} else "left"
            sign = 1 if side == "left" else -1
            gx, gy = (cx + sign * rng.uniform(0.22, 0.28) * scale) * s, rng.uniform(0.17, 0.23) * s
            w, h = 0.05 * s, 0.035 * s
            draw.rounded_rectangle([gx - w, gy - h, gx + w, gy + h], radius=int(0.015 * s), fill=215)
            draw.rectangle([gx - w * 0.5, gy - h - 0.012 * s, gx + w * 0.4, gy - h], fill=180)
            for k in range(int(rng.integers(1, 3))):
                tx, ty = (heart_cx + rng.uniform(-0.04, 0.05)) * s, (heart_cy + rng.uniform(0.0, 0.06)) * s
                self._curve(draw, [(gx, gy - h), ((cx + 0.02 * sign) * s, 0.2 * s), ((cx - 0.01) * s, 0.38 * s),
                                   (tx, ty)], 190, 2)
        elif kind == "line":
            detail = f.detail or "central"
            if detail == "et_tube":
                tx = float(spine_x[int(0.2 * s), s // 2]) * s
                draw.line([(tx, 0), (tx, rng.uniform(0.26, 0.3) * s)], fill=185, width=max(2, s // 80))
            elif detail == "ng_tube":
                tx = float(spine_x[int(0.2 * s), s // 2]) * s
                self._curve(draw, [(tx, 0), (tx + 0.01 * s, 0.45 * s), (tx + 0.04 * s, 0.75 * s),
                                   ((cx + 0.17 * scale) * s, 0.86 * s)], 185, 2)
            else:
                side = f.side if f.side in {"right", "left"} else ("right" if rng.random() < 0.6 else "left")
                sign = 1 if side == "left" else -1
                start = ((cx + sign * 0.4 * scale) * s, rng.uniform(0.1, 0.16) * s)
                self._curve(draw, [start, ((cx + sign * 0.15 * scale) * s, 0.2 * s),
                                   ((cx - 0.035) * s, 0.3 * s), ((cx - 0.03) * s, rng.uniform(0.42, 0.48) * s)],
                            185, 2)
        elif kind == "sternotomy":
            sx = cx * s
            for k in range(int(rng.integers(5, 8))):
                wy = (0.3 + 0.045 * k) * s
                draw.ellipse([sx - 0.018 * s, wy - 0.01 * s, sx + 0.018 * s, wy + 0.01 * s], outline=220,
                             width=max(2, s // 110))
        elif kind == "clips":
            side = f.side if f.side in {"right", "left"} else ("right" if rng.random() < 0.5 else "left")
            sign = 1 if side == "left" else -1
            lx, ly, a, b, base, _, _ = lung_info[side]
            bx, by = (lx + sign * 0.3 * a) * s, (base + 0.07) * s if rng.random() < 0.5 else (ly - 0.2 * b) * s
            for k in range(int(rng.integers(3, 6))):
                px, py = bx + rng.uniform(-0.04, 0.04) * s, by + rng.uniform(-0.03, 0.03) * s
                angle = rng.uniform(0, math.pi)
                length = 0.022 * s
                draw.line([(px, py), (px + length * math.cos(angle), py + length * math.sin(angle))], fill=220,
                          width=max(2, s // 110))

    @staticmethod
    def _curve(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill: int, width: int) -> None:
        """A cubic Bezier through 4 control points, drawn as a polyline."""
        t = np.linspace(0.0, 1.0, 40)[:, None]
        p = np.asarray(points, dtype=np.float64)
        curve = ((1 - t) ** 3) * p[0] + 3 * ((1 - t) ** 2) * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]
        draw.line([tuple(point) for point in curve], fill=fill, width=width, joint="curve")


def render_phantom(findings: Sequence[PhantomFinding], *, seed: int = 0, image_size: int = 224) -> Image.Image:
    """Render one phantom radiograph ("L" mode) showing `findings`; an empty list gives a normal chest.

    Example:
        >>> render_phantom([PhantomFinding("effusion", side="left")], seed=1).size
        (224, 224)
    """
    for f in findings:
        if f.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {f.kind!r}; expected one of {FINDING_KINDS}")
    return _Renderer(image_size).render(findings, np.random.default_rng(seed))


# --------------------------------------------------------------------------------------------------
# Template reports
# --------------------------------------------------------------------------------------------------

_NORMAL_SENTENCES = {
    "heart": ["The heart is normal in size.", "Heart size is within normal limits.",
              "The cardiomediastinal silhouette is within normal limits.", "Normal heart size."],
    "mediastinum": ["The mediastinum is unremarkable.", "Mediastinal contours are normal.",
                    "Normal mediastinal contour."],
    "lungs": ["The lungs are clear.", "Lungs are clear bilaterally.", "There is no focal airspace disease.",
              "No focal consolidation is seen."],
    "pleura": ["No pleural effusion or pneumothorax.", "There is no pneumothorax or pleural effusion.",
               "No effusion or pneumothorax is identified."],
    "bones": ["The osseous structures are intact.", "No acute bony abnormality.",
              "Visualized osseous structures are normal."],
}
_NORMAL_IMPRESSIONS = ["No acute cardiopulmonary abnormality.", "Normal chest.", "No active disease.",
                       "No acute cardiopulmonary process.", "Normal chest radiograph."]
_TEMPLATE_KINDS = {  # kind: (sampling weight, structures whose normal sentence it replaces)
    "cardiomegaly": (3.0, {"heart"}), "effusion": (3.0, {"pleura"}), "opacity": (3.0, {"lungs"}),
    "nodule": (1.5, {"lungs"}), "mass": (0.8, {"lungs"}), "granuloma": (1.5, set()),
    "pneumothorax": (1.5, {"pleura"}), "atelectasis": (2.0, {"lungs"}), "edema": (1.5, {"lungs"}),
    "hyperinflation": (1.2, set()), "hypoinflation": (1.2, set()), "pacemaker": (1.5, set()),
    "line": (1.2, set()), "sternotomy": (1.2, set()), "clips": (0.6, set()), "degenerative": (1.5, {"bones"}),
    "scoliosis": (1.0, {"bones"}), "fracture": (0.8, {"bones"}), "hernia": (0.6, set()),
    "aorta": (1.0, {"mediastinum"}), "hilar": (0.8, {"mediastinum"}),
}
_SEVERITY_NAMES = [(0.75, "mild"), (1.1, "moderate"), (1.4, "large")]
_ZONE_PHRASES = {"upper": ["upper lobe", "upper lung zone", "apex"],
                 "mid": ["mid lung zone", "perihilar region", "midlung"],
                 "lower": ["lower lobe", "lung base", "base"]}


def _template_sentences(f: PhantomFinding, rng: np.random.Generator) -> tuple[str, str, str]:
    """(findings sentence, impression phrase, MeSH term) for one templated finding."""
    sev = next(name for value, name in _SEVERITY_NAMES if f.severity <= value + 1e-9) if f.severity <= 1.4 else "large"
    side = f.side or "right"
    sides = "bilateral" if side == "bilateral" else side
    zone = _ZONE_PHRASES[f.zone or "lower"][int(rng.integers(0, 3))]
    pick = lambda options: options[int(rng.integers(0, len(options)))]  # noqa: E731
    kind = f.kind
    if kind == "cardiomegaly":
        word = {"mild": "mildly", "moderate": "moderately", "large": "markedly"}[sev]
        degree = {"mild": "Mild", "moderate": "Moderate", "large": "Marked"}[sev]
        sentence = pick([f"The heart is {word} enlarged.", f"{degree} cardiomegaly.",
                         f"The cardiac silhouette is {word} enlarged."])
        return sentence, "Cardiomegaly.", f"Cardiomegaly/{sev}"
    if kind == "effusion":
        size = {"mild": "small", "moderate": "moderate", "large": "large"}[sev]
        if side == "bilateral":
            sentence = pick([f"{size.capitalize()} bilateral pleural effusions.",
                             f"There are {size} bilateral pleural effusions."])
            return sentence, "Bilateral pleural effusions.", "Pleural Effusion/bilateral"
        sentence = pick([f"{size.capitalize()} {side} pleural effusion.",
                         f"There is a {size} {side} pleural effusion.",
                         f"Blunting of the {side} costophrenic angle consistent with {size} effusion."])
        return sentence, f"{side.capitalize()} pleural effusion.", f"Pleural Effusion/{side}"
    if kind == "opacity":
        sentence = pick([f"Focal airspace opacity in the {sides} {zone}.",
                         f"There is consolidation in the {sides} {zone}.",
                         f"Patchy opacity in the {sides} {zone} concerning for pneumonia."])
        return sentence, f"{sides.capitalize()} {zone} pneumonia." if rng.random() < 0.5 else \
            f"{sides.capitalize()} {zone} airspace disease.", f"Opacity/lung/{f.zone or 'lower'}/{sides}"
    if kind == "nodule":
        sentence = pick([f"There is a {sides} {zone} nodule.", f"Nodular density in the {sides} {zone}.",
                         f"A {sev} pulmonary nodule projects over the {sides} {zone}."])
        return sentence, f"{sides.capitalize()} pulmonary nodule.", f"Nodule/lung/{sides}"
    if kind == "mass":
        sentence = pick([f"Large mass in the {sides} {zone}.", f"There is a lobulated {sides} {zone} mass."])
        return sentence, f"{sides.capitalize()} lung mass.", f"Mass/lung/{sides}"
    if kind == "granuloma":
        sentence = pick([f"Calcified granuloma in the {sides} {zone}.",
                         f"There is a {sides} {zone} calcified granuloma."])
        return sentence, "Calcified granuloma.", f"Calcified Granuloma/lung/{sides}"
    if kind == "pneumothorax":
        size = {"mild": "small", "moderate": "moderate", "large": "large"}[sev]
        sentence = pick([f"{size.capitalize()} {sides} pneumothorax.", f"There is a {size} {sides} pneumothorax."])
        return sentence, f"{sides.capitalize()} pneumothorax.", f"Pneumothorax/{sides}"
    if kind == "atelectasis":
        sentence = pick([f"Linear atelectasis in the {sides} {zone}.",
                         f"Subsegmental atelectasis at the {sides} {zone}.",
                         f"Streaky {sides} {zone} atelectasis."])
        return sentence, f"{sides.capitalize()} atelectasis.", f"Pulmonary Atelectasis/{sides}"
    if kind == "edema":
        degree = {"mild": "Mild", "moderate": "Moderate", "large": "Severe"}[sev]
        sentence = pick([f"{degree} pulmonary edema.", "Perihilar haziness consistent with pulmonary edema.",
                         "Pulmonary vascular congestion with interstitial edema."])
        return sentence, "Pulmonary edema.", "Pulmonary Edema"
    if kind == "hyperinflation":
        sentence = pick(["The lungs are hyperinflated with flattening of the diaphragm.",
                         "Hyperinflation consistent with emphysema.",
                         "Hyperexpanded lungs."])
        return sentence, "Hyperinflation, compatible with COPD.", "Pulmonary Emphysema"
    if kind == "hypoinflation":
        sentence = pick(["Low lung volumes.", "The lungs are hypoinflated.",
                         "Lung volumes are low with bibasilar crowding."])
        return sentence, "Low lung volumes.", "Lung/hypoinflation"
    if kind == "pacemaker":
        sentence = pick(["Left-sided pacemaker with leads in place.", "A left chest wall pacemaker is present.",
                         "Dual lead pacemaker in place."])
        return sentence, "Pacemaker in place.", "Pacemaker, Artificial"
    if kind == "line":
        if f.detail == "et_tube":
            return "Endotracheal tube in place.", "Endotracheal tube in satisfactory position.", "Tube, Inserted"
        if f.detail == "ng_tube":
            return "Nasogastric tube courses into the stomach.", "Nasogastric tube in place.", "Tube, Inserted"
        sentence = pick([f"{sides.capitalize()} central venous catheter tip in the SVC.",
                         f"{sides.capitalize()} PICC line with tip in the SVC.",
                         f"{sides.capitalize()} central line in place."])
        return sentence, "Central line in place.", "Catheters, Indwelling"
    if kind == "sternotomy":
        return pick(["Median sternotomy wires.", "Postsurgical changes of median sternotomy.",
                     "Intact sternotomy wires."]), "Prior sternotomy.", "Sternotomy"
    if kind == "clips":
        return pick([f"Surgical clips in the {sides} upper quadrant.", f"{sides.capitalize()} surgical clips."]), \
            "Postsurgical clips.", "Surgical Instruments"
    if kind == "degenerative":
        return pick(["Degenerative changes of the thoracic spine.", "Osteophytes of the thoracic spine.",
                     "Thoracic spondylosis."]), "Degenerative spine disease.", "Thoracic Vertebrae/degenerative"
    if kind == "scoliosis":
        sentence = pick(["Scoliosis of the thoracic spine.", "There is thoracic scoliosis."])
        return sentence, "Scoliosis.", "Scoliosis/thoracic"
    if kind == "fracture":
        return pick([f"Healing {sides} rib fracture.", f"Old {sides} rib fracture."]), \
            f"{sides.capitalize()} rib fracture.", f"Fractures, Bone/ribs/{sides}"
    if kind == "hernia":
        return pick(["Hiatal hernia.", "Retrocardiac hiatal hernia."]), "Hiatal hernia.", "Hernia, Hiatal"
    if kind == "aorta":
        return pick(["The aorta is tortuous and calcified.", "Tortuous calcified thoracic aorta.",
                     "Atherosclerotic calcification of the aortic knob."]), "Tortuous aorta.", "Aorta/tortuous"
    return pick(["Bilateral hilar enlargement.", "Prominent hila suggesting lymphadenopathy."]), \
        "Hilar lymphadenopathy.", "Lymph Nodes/hilum/bilateral"


def template_report(abnormal: bool, rng: np.random.Generator) -> tuple[dict[str, str], list[PhantomFinding]]:
    """A templated report row (findings, impression, report, mesh) and the findings it asserts."""
    from .data import join_report

    pick = lambda options: options[int(rng.integers(0, len(options)))]  # noqa: E731
    findings: list[PhantomFinding] = []
    if abnormal:
        kinds = list(_TEMPLATE_KINDS)
        weights = np.array([_TEMPLATE_KINDS[k][0] for k in kinds])
        count = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        chosen = rng.choice(len(kinds), size=count, replace=False, p=weights / weights.sum())
        for index in sorted(chosen):
            kind = kinds[index]
            side = None if kind in _SIDELESS else str(rng.choice(["right", "left", "bilateral"], p=[0.42, 0.42, 0.16]))
            if kind in {"line", "clips", "nodule", "mass", "pneumothorax", "fracture"} and side == "bilateral":
                side = "right" if rng.random() < 0.5 else "left"
            zoned = {"opacity", "nodule", "mass", "granuloma", "atelectasis", "fracture"}
            zone = str(rng.choice(ZONES)) if kind in zoned else None
            if kind == "atelectasis" and zone == "upper":
                zone = "lower"
            severity = float(rng.choice([0.75, 1.1, 1.4]))
            detail = str(rng.choice(["central", "central", "et_tube", "ng_tube"])) if kind == "line" else None
            if detail in {"et_tube", "ng_tube"}:
                side = None  # midline tubes have no side
            findings.append(PhantomFinding(kind, side, zone, severity, detail))
    covered: set[str] = set()
    sentences, impressions, mesh = [], [], []
    for f in findings:
        sentence, impression, term = _template_sentences(f, rng)
        sentences.append(sentence)
        impressions.append(impression)
        mesh.append(term)
        covered |= _TEMPLATE_KINDS[f.kind][1]
    normal = [pick(options) for part, options in _NORMAL_SENTENCES.items() if part not in covered]
    keep = normal if not abnormal else [s for s in normal if rng.random() < 0.7]
    body = sentences + keep if rng.random() < 0.5 else keep[:1] + sentences + keep[1:]
    findings_text = " ".join(body)
    impression_text = " ".join(impressions) if abnormal else pick(_NORMAL_IMPRESSIONS)
    row = {
        "findings": findings_text,
        "impression": impression_text,
        "report": join_report(findings_text, impression_text),
        "mesh": ";".join(mesh) if abnormal else "normal",
    }
    return row, findings


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def findings_for_row(row: dict[str, Any], label: int) -> list[PhantomFinding]:
    """What to draw for a real report row: its text's findings, else its MeSH terms; none when normal.

    An abnormal row whose text and MeSH name nothing drawable gets one small granuloma-like density, so the
    image still carries the label (documented limitation: that sign is not in the text).
    """
    if label == 0:
        return []
    text = row.get("report") or " ".join(str(row.get(k) or "") for k in ("findings", "impression"))
    found = parse_findings(text)
    if not found:
        found = findings_from_mesh(row.get("mesh"))
    if not found:
        found = [PhantomFinding("granuloma")]
    return found


def make_phantom_openi(
    n: int | None = None,
    seed: int = 0,
    reports: Sequence[dict[str, Any]] | None = None,
    image_size: int = 224,
    *,
    normal_fraction: float = 0.5,
    show_progress: bool = False,
) -> Any:
    """A `datasets.Dataset` of `n` synthetic studies (schema `OPENI_FEATURES`, ``source="synthetic"``).

    Args:
        n: number of studies; defaults to ``len(reports)`` when reports are given (row i uses
            ``reports[i % len(reports)]``).
        reports: real report rows (dicts with report / findings / impression / label / mesh / uid), e.g.
            `load_openi_reports`; None uses built-in templates with `normal_fraction` normal studies.

    Example:
        >>> ds = make_phantom_openi(8, seed=0)
        >>> ds.num_rows, ds[0]["source"]
        (8, 'synthetic')
    """
    from datasets import Dataset

    from .data import OPENI_FEATURES, join_report, label_from_mesh

    if n is None:
        if reports is None:
            raise ValueError("pass n, or reports to take n from")
        n = len(reports)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if reports is not None and len(reports) == 0:
        raise ValueError("reports is empty")
    if not 0.0 <= normal_fraction <= 1.0:
        raise ValueError(f"normal_fraction must be in [0, 1], got {normal_fraction}")
    renderer = _Renderer(image_size)
    columns: dict[str, list[Any]] = {name: [] for name in OPENI_FEATURES}
    iterator: Any = range(n)
    if show_progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="rendering phantoms", unit="study")
    for i in iterator:
        rng = np.random.default_rng([seed, i])
        if reports is None:
            abnormal = bool(rng.random() >= normal_fraction)
            row, findings = template_report(abnormal, rng)
            label = int(abnormal)
            uid, image_file = f"phantom-{i:05d}", f"phantom-{i:05d}.png"
        else:
            source_row = reports[i % len(reports)]
            findings_text = str(source_row.get("findings") or "").strip()
            impression_text = str(source_row.get("impression") or "").strip()
            report = str(source_row.get("report") or join_report(findings_text, impression_text)).strip()
            if not report:
                raise ValueError(f"reports[{i % len(reports)}] (uid {source_row.get('uid')!r}) has no report text")
            mesh = str(source_row.get("mesh") or "").strip()
            if source_row.get("label") is not None and str(source_row.get("label")).strip() != "":
                label = int(source_row["label"])
                if label not in (0, 1):
                    raise ValueError(f"reports[{i % len(reports)}]: label must be 0 or 1, got {label}")
            elif mesh:
                label = label_from_mesh(mesh, source=f"reports[{i % len(reports)}]")
            else:
                label = int(bool(parse_findings(report)))
            row = {"findings": findings_text, "impression": impression_text, "report": report,
                   "mesh": mesh or ("normal" if label == 0 else "")}
            findings = findings_for_row({**source_row, "report": report}, label)
            real_uid = str(source_row.get("uid") or i)
            uid, image_file = f"phantom-{i:05d}", f"phantom-{i:05d}_openi-{real_uid}.png"
        image = renderer.render(findings, rng)
        values = {**row, "uid": uid, "image": {"bytes": _png_bytes(image), "path": image_file}, "label": label,
                  "view": "PA", "image_file": image_file, "source": "synthetic"}
        for name in OPENI_FEATURES:
            columns[name].append(values[name])
    return Dataset.from_dict(columns, features=OPENI_FEATURES)


def load_openi_reports(openi_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Real report rows from ``<openi_dir>/reports.csv`` (the ../shared/openi copy), for phantom pairing.

    Rows are read at run time only (the data is CC BY-NC-ND: never copy it into the repository). Each dict
    has uid, findings, impression, report, mesh, label; labels are re-derived with `label_from_mesh` and
    must agree with the file's label column.

    Example:
        >>> rows = load_openi_reports("../shared/openi")  # doctest: +SKIP
        >>> ds = make_phantom_openi(reports=rows[:100])  # doctest: +SKIP
    """
    from .data import join_report, label_from_mesh

    path = Path(openi_dir)
    if path.is_dir():
        path = path / "reports.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OpenI reports.csv not found (see ../shared/openi/PROVENANCE.md)")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's BOM is not part of "uid"
            reader = csv.DictReader(handle)
            required = {"uid", "findings", "impression", "mesh", "label"}
            missing = required - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
            for number, record in enumerate(reader, start=2):
                # a short row leaves its last cells None: treat them as empty
                cell = {key: (record.get(key) or "").strip() for key in required}
                findings, impression = cell["findings"], cell["impression"]
                report = join_report(findings, impression)
                if not report:
                    continue
                where = f"{path} (row {number}, uid {cell['uid']})"
                label = label_from_mesh(cell["mesh"], source=where)
                declared = cell["label"]
                if declared and declared != str(label):
                    raise ValueError(f"{where}: label column {declared} disagrees with MeSH {cell['mesh']!r} ({label})")
                rows.append({"uid": cell["uid"], "findings": findings, "impression": impression,
                             "report": report, "mesh": cell["mesh"], "label": label})
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a readable UTF-8 CSV ({type(exc).__name__}: {exc})") from exc
    return rows


__all__ = [
    "FINDING_KINDS",
    "PhantomFinding",
    "findings_for_row",
    "findings_from_mesh",
    "load_openi_reports",
    "make_phantom_openi",
    "parse_findings",
    "render_phantom",
    "template_report",
]
