"""Templated phantom reports: findings and impression sentences, MeSH terms, and the findings they assert."""

from __future__ import annotations

import numpy as np

from ..schema import join_report
from .findings import _SIDELESS, ZONES, PhantomFinding

__all__ = ["template_report"]

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

