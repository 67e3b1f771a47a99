"""Which reports are the same: the canonical report text behind the duplicate-aware accuracy (``accuracy_dedup@k``).

OpenI holds many word-for-word copies of normal reports; two studies whose normalised reports are equal are
equally good matches for a report query. Pure standard library + numpy; imports nothing from the package.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

__all__ = ["duplicate_ids", "normalise_report_text"]

_NON_WORD = re.compile(r"[^\w\s]|_")
_WHITESPACE = re.compile(r"\s+")


def normalise_report_text(text: str) -> str:
    """Canonical form of a report used to decide that two reports are duplicates.

    NFKC Unicode normalisation, lowercase, every character that is not a letter, digit or
    whitespace (punctuation, underscores) replaced by a space, whitespace runs collapsed to one
    space, ends stripped. De-identification tokens (``XXXX``) are kept as the word ``xxxx``: the
    words they hide differ between reports, so dropping them would merge reports that may say
    different things, while keeping them matches what the text encoder sees.

    Example: ``normalise_report_text("No acute  disease.\\nXXXX, stable.")`` returns
    ``"no acute disease xxxx stable"``.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    folded = unicodedata.normalize("NFKC", text).lower()
    return _WHITESPACE.sub(" ", _NON_WORD.sub(" ", folded)).strip()


def duplicate_ids(
    query_texts: Sequence[str] | None, gallery_texts: Sequence[str] | None, n_queries: int, n_gallery: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if gallery_texts is None:
        if query_texts is not None:
            raise ValueError("query_texts only sets the duplicate-aware target; pass gallery_texts too")
        return None, None
    vocabulary: dict[str, int] = {}
    normalised = _normalised_texts(gallery_texts, n_gallery, "gallery_texts")
    gallery_ids = np.array([vocabulary.setdefault(text, len(vocabulary)) for text in normalised], dtype=np.int64)
    if query_texts is None:
        return gallery_ids, gallery_ids[:n_queries].copy()
    # A query report absent from the gallery gets -1: only its own paired item can match it.
    target_ids = np.array(
        [vocabulary.get(text, -1) for text in _normalised_texts(query_texts, n_queries, "query_texts")],
        dtype=np.int64,
    )
    return gallery_ids, target_ids


def _normalised_texts(texts: Sequence[str], n: int, name: str) -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a sequence of report strings, not a single string")
    texts = list(texts)
    if len(texts) != n:
        raise ValueError(f"{name} has {len(texts)} entries; expected {n} (one per row)")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{i}] must be a str, got {type(text).__name__}")
        out.append(normalise_report_text(text))
    return out
