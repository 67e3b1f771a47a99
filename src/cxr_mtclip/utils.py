"""Small helpers shared across layers: JSON-safe values, eval mode for a block, model unwrapping, argument checks.

Imports nothing from `cxr_mtclip`; torch is imported only by the helpers that take a module.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["eval_mode", "json_safe", "positive_int", "quiet_progress_bars", "read_json", "select_named", "torch_threads",
           "unwrap_model"]


def json_safe(value: Any, *, allow_nan: bool = False) -> Any:
    """`value` with numpy/torch scalars as Python numbers, tuples as lists, mapping keys as str.

    Non-finite floats become None (strict JSON) unless `allow_nan`, which keeps them as floats
    (what `json.dumps(allow_nan=True)` writes as ``NaN``, as transformers' Trainer does).

    Example:
        >>> import numpy as np
        >>> json_safe({"auc": np.float32(0.5), "f1": float("nan"), "ks": (1, 5)})
        {'auc': 0.5, 'f1': None, 'ks': [1, 5]}
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, allow_nan=allow_nan) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, allow_nan=allow_nan) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    numel = getattr(value, "numel", None)
    if callable(getattr(value, "item", None)) and (getattr(value, "ndim", None) == 0 or (callable(numel) and numel() == 1)):
        value = value.item()  # numpy scalar, 0-d array or one-element tensor
    if isinstance(value, float):
        return value if allow_nan or math.isfinite(value) else None
    return value


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of `path`; ValueError naming the file when it is not valid JSON (FileNotFoundError if absent).

    Example:
        >>> read_json("results.json")["models"]  # doctest: +SKIP
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


@contextlib.contextmanager
def eval_mode(*modules: Any) -> Iterator[None]:
    """Within the block every given module is in eval mode (no dropout); each submodule's flag is restored after.

    Example:
        >>> from torch import nn
        >>> layer = nn.Dropout(0.5)
        >>> with eval_mode(layer):
        ...     layer.training
        False
        >>> layer.training
        True
    """
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def unwrap_model(model: Any, *required: str) -> Any:
    """The model inside a DDP/accelerate wrapper (``.module``) or a `CachedCxrMtClipModel` (``.wrapped_model``).

    Raises ValueError when the unwrapped model lacks one of the `required` attributes.

    Example:
        >>> unwrap_model(model, "get_image_features").config.embed_dim  # doctest: +SKIP
        512
    """
    core = getattr(model, "module", model)
    core = getattr(core, "wrapped_model", core)
    missing = [name for name in required if getattr(core, name, None) is None]
    if missing:
        raise ValueError(f"model {type(core).__name__} has no {', '.join(missing)}; expected a CxrMtClipModel")
    return core


def select_named(items: Sequence[Any], names: Sequence[str] | None, what: str) -> tuple[Any, ...]:
    """The `items` (objects with a ``name``) named in `names`, in that order; all of them when `names` is empty.

    Raises ValueError naming the unknown names and the choices.

    Example:
        >>> from types import SimpleNamespace as N
        >>> [v.name for v in select_named([N(name="a"), N(name="b")], ["b"], "variant")]
        ['b']
    """
    if not names:
        return tuple(items)
    known = {item.name: item for item in items}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; choose from {list(known)}")
    return tuple(known[name] for name in names)


def positive_int(value: Any, name: str) -> int:
    """`value` as an int, or ValueError naming `name` when it is not a positive integer (bools refused).

    Example:
        >>> positive_int(5, "k")
        5
    """
    import numpy as np

    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Within the block, torch uses `threads` CPU threads (None: unchanged); the previous count is restored.

    On a shared or oversubscribed CPU one thread is often far faster for these tiny models than one per core.
    """
    import torch

    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_progress_bars(quiet: bool = True) -> Iterator[None]:
    """Within the block, no `datasets` / transformers progress bars when `quiet`; the previous state is restored."""
    import datasets
    from transformers.utils import logging as hf_logging

    if not quiet:
        yield
        return
    datasets_on, transformers_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if transformers_on:
            hf_logging.enable_progress_bar()
