"""Atomic writes: every artifact (text, JSON, files, folders) is written under a temporary name beside it, then renamed.

A temporary name carries the writer's process id and host (``.<name>.<pid>@<host>.<random>.tmp``). A run killed
before its rename (SIGKILL, power loss) leaves that entry behind; the next write to the same destination removes it
when its process is gone, and warns about leftovers it cannot attribute (names from older versions, other hosts).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
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
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=str(path.parent))
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
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=str(path.parent)))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".old", dir=str(path.parent)))
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
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=str(path.parent)))
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
        aside = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".old", dir=str(target.parent)))
        os.replace(target, aside / "x")
        os.replace(source, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, target)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}@{_host()}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def stale_temporaries(path: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """The temporary entries of interrupted writes to `path`: (those whose writer is gone, those of unknown writer).

    A writer is gone when its process id (in the name) no longer runs on this host. Entries of a live process (a
    concurrent writer) are in neither list.

    Example:
        >>> stale_temporaries("data/openi")  # doctest: +SKIP
        ([PosixPath('data/.openi.4242@box.k2j3.tmp')], [])
    """
    path = Path(path)
    if not path.parent.is_dir():
        return [], []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)@([A-Za-z0-9-]+)\.)?[^.]+\.(?:tmp|old)$")
    gone, unknown = [], []
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match is None:
            continue
        pid, host = match.group(1), match.group(2)
        if pid is None or host != _host():
            unknown.append(entry)
        elif not _process_alive(int(pid)):
            gone.append(entry)
    return sorted(gone), sorted(unknown)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete what killed writes to `path` left beside it (their process is gone); warn about entries of unknown
    writers (older versions, other hosts) without touching them. Returns the removed entries."""
    gone, unknown = stale_temporaries(path)
    for entry in gone:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    if gone:
        warnings.warn(f"removed {len(gone)} temporary file(s)/folder(s) left beside {path} by an interrupted run "
                      f"({', '.join(entry.name for entry in gone)})", UserWarning, stacklevel=3)
    if unknown:
        warnings.warn(f"{', '.join(str(entry) for entry in unknown)}: left beside {path} by an interrupted write of "
                      "another host or an older version; delete it if no other run is writing there",
                      UserWarning, stacklevel=3)
    return gone


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
