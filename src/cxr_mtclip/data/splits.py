"""The paper's split: a balanced test draw (200 normal + 200 abnormal), the rest 90/10 train/validation, stratified."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .schema import SPLIT_NAMES

__all__ = ["split_indices", "split_openi"]


def _uid_sort_key(uid: str) -> tuple[int, int, str]:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)


def split_indices(
    uids: Sequence[str], labels: Sequence[int], *, seed: int = 42, test_per_class: int = 200, val_fraction: float = 0.1
) -> tuple[dict[str, list[int]], int]:
    """Row indices per split (train/validation/test) and the test size per class actually used.

    The test split takes `test_per_class` studies of each label (the paper's 200 + 200), drawn by a per-label
    shuffle, scaled down to half of the smaller class when a class is too small (with a warning). The rest is
    split by scikit-learn's `train_test_split` into `val_fraction` validation and the remainder train,
    stratified by label (unstratified only when a label has fewer than two remaining studies). Rows are ordered
    by uid first, so the result depends only on the set of (uid, label) pairs and `seed`.

    Example:
        >>> splits, per_class = split_indices([str(i) for i in range(40)], [i % 2 for i in range(40)], test_per_class=5)
        >>> per_class, [len(splits[name]) for name in ("train", "validation", "test")]
        (5, [27, 3, 10])
    """
    from sklearn.model_selection import train_test_split

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
    position = {index: rank for rank, index in enumerate(order)}
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
    test: list[int] = []
    rest: list[int] = []
    for c in (0, 1):
        members = np.asarray(per_label[c], dtype=np.int64)
        shuffled = members[rng.permutation(len(members))].tolist()
        test.extend(shuffled[:per_class])
        rest.extend(shuffled[per_class:])
    rest.sort(key=position.__getitem__)
    n_val = int(round(val_fraction * len(rest)))
    train, validation = rest, []
    if n_val > 0:
        rest_labels = [int(labels[i]) for i in rest]
        counts = Counter(rest_labels)
        stratified = min(counts.values()) >= 2 and len(counts) <= min(n_val, len(rest) - n_val)
        train, validation = train_test_split(
            rest, test_size=n_val, stratify=rest_labels if stratified else None,
            random_state=int(rng.integers(0, 2**32)),
        )
    splits = {"train": train, "validation": validation, "test": test}
    return {name: sorted(splits[name], key=position.__getitem__) for name in SPLIT_NAMES}, per_class


def split_openi(dataset: Any, *, seed: int = 42, test_per_class: int = 200, val_fraction: float = 0.1) -> Any:
    """Split a study-level `datasets.Dataset` into a train / validation / test `DatasetDict` (see `split_indices`).

    Example:
        >>> splits = split_openi(make_phantom_openi(1000, seed=0), seed=42)  # doctest: +SKIP
        >>> splits["test"].num_rows  # doctest: +SKIP
        400
    """
    from datasets import DatasetDict

    for column in ("uid", "label"):
        if column not in dataset.column_names:
            raise ValueError(f"dataset has no {column!r} column (columns: {dataset.column_names})")
    indices, _ = split_indices(
        dataset["uid"], dataset["label"], seed=seed, test_per_class=test_per_class, val_fraction=val_fraction
    )
    return DatasetDict({name: dataset.select(indices[name]) for name in SPLIT_NAMES})
