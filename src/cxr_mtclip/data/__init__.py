"""Image/report pairs as `datasets`: the schema, OpenI parsing and builds, the paper's split, phantoms, cards.

- `schema`: `OPENI_FEATURES`, the label and report rules, data provenance (imports nothing from the package).
- `openi`: the three OpenI source layouts -> study records; `load_openi_reports`.
- `build`: records -> `DatasetDict` (`load_openi`), written with a card (`build_openi_dataset`, `save_dataset`).
- `splits`: 200 + 200 test studies, the rest 90/10 train/validation, stratified.
- `images`, `dicom`: `open_image`, the one image opener (PNG, JPEG, any PIL format, DICOM by content).
- `phantoms`: synthetic radiographs that show what their report says.
- `cards`: dataset cards through huggingface_hub's `DatasetCard`.
"""

from .build import (
    FRONTAL_SCORE_THRESHOLD,
    FRONTAL_VIEWS,
    OpenIBuildResult,
    build_openi_dataset,
    frontal_score,
    load_openi,
    openi_summary,
    push_openi_to_hub,
    save_dataset,
    select_frontal,
)
from .cards import openi_dataset_card, phantom_dataset_card, split_label_counts
from .images import open_image, read_image_file
from .openi import (
    LAYOUTS,
    detect_openi_layout,
    frontal_view_from_exam,
    image_key,
    load_openi_reports,
    parse_nlm_xml,
)
from .phantoms import make_phantom_openi
from .records import ImageCandidate, OpenIStudy, OpenISummary
from .schema import (
    LABEL_NAMES,
    OPENI_FEATURES,
    SPLIT_NAMES,
    data_note,
    data_provenance,
    join_report,
    label_from_mesh,
)
from .splits import split_indices, split_openi

__all__ = [
    "FRONTAL_SCORE_THRESHOLD",
    "FRONTAL_VIEWS",
    "LABEL_NAMES",
    "LAYOUTS",
    "OPENI_FEATURES",
    "SPLIT_NAMES",
    "ImageCandidate",
    "OpenIBuildResult",
    "OpenIStudy",
    "OpenISummary",
    "build_openi_dataset",
    "data_note",
    "data_provenance",
    "detect_openi_layout",
    "frontal_score",
    "frontal_view_from_exam",
    "image_key",
    "join_report",
    "label_from_mesh",
    "load_openi",
    "load_openi_reports",
    "make_phantom_openi",
    "openi_dataset_card",
    "openi_summary",
    "parse_nlm_xml",
    "phantom_dataset_card",
    "push_openi_to_hub",
    "open_image",
    "read_image_file",
    "save_dataset",
    "select_frontal",
    "split_indices",
    "split_label_counts",
    "split_openi",
]
