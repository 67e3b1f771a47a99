"""Atomic writes: every artifact (text, JSON, files, folders) is written under a temporary name beside it, then renamed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .utils import json_safe


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename it over `path`.

    Example:
        >>> atomic_write_text("results.json", "{}")  # doctest: +SKIP
    """
    with atomic_file(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any, *, allow_nan: bool = False, sort_keys: bool = False) -> Path:
    """Write `data` as indented JSON (numpy/torch scalars converted by `utils.json_safe`), atomically.

    NaN and infinities become null unless `allow_nan`, which writes them as ``NaN`` the way transformers'
    Trainer writes its result files.

    Example:
        >>> write_json("results.json", {"auc": float("nan")})  # doctest: +SKIP
    """
    text = json.dumps(json_safe(data, allow_nan=allow_nan), indent=2, sort_keys=sort_keys, allow_nan=allow_nan)
    atomic_write_text(path, text + "\n")
    return Path(path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path` (old content removed), on error it is deleted."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent)))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=str(path.parent)))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_update_directory(
    path: str | os.PathLike, *, last: Sequence[str] = (), stale: Sequence[str] = ()
) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success each entry is renamed into `path`, the `last` names last.

    Unlike `atomic_directory`, other files already in `path` (checkpoints, logs) are kept; every written
    file is replaced by a rename, so a reader sees the old or the new version of it, never a partial one.
    Files in `path` matching a `stale` glob pattern that the new content does not hold are removed before
    the `last` names land (e.g. shards of an earlier, differently sharded save). On error `path` is untouched.

    Example:
        >>> with atomic_update_directory("model", last=("config.json",)) as tmp:  # doctest: +SKIP
        ...     model.save_pretrained(tmp)
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent)))
    try:
        yield tmp
        new = {entry.name for entry in tmp.iterdir()}
        for name in sorted(new - set(last)):
            _replace_entry(tmp / name, path / name)
        for pattern in stale:
            for old in path.glob(pattern):
                if old.name not in new and old.is_file():
                    old.unlink()
        for name in last:
            if name in new:
                _replace_entry(tmp / name, path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_entry(source: Path, target: Path) -> None:
    """Rename `source` over `target`; a folder target is moved aside first (os.replace cannot overwrite one)."""
    if source.is_dir() and target.is_dir():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=str(target.parent)))
        os.replace(target, aside / "x")
        os.replace(source, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, target)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
