"""SIGKILL a `cxr-mtclip build-dataset` run midway: the destination holds the old artifact or nothing, and a rerun works.

Writes go to a hidden temp folder beside the destination (`.<name>.*.tmp`) that is renamed into place at
the end (cxr_mtclip.atomic). These tests kill real subprocesses while that folder is being filled.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_mtclip.cli import main

CLI = [sys.executable, "-m", "cxr_mtclip.cli"]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_DATASETS_CACHE=str(tmp_path / "hf_cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1")
    return env


def write_big_source(root: Path, n: int = 120, side: int = 1024) -> Path:
    """A ../shared/openi-style folder whose images are 1 MB uncompressed PNGs: saving them takes a while."""
    (root / "images").mkdir(parents=True)
    base = np.tile(np.arange(side, dtype=np.uint8), (side, 1))
    rows = []
    for i in range(n):
        name = f"{i:04d}.png"
        Image.fromarray(np.roll(base, i, axis=1)).save(root / "images" / name, compress_level=0)
        normal = i % 2 == 0
        rows.append({"uid": str(i), "image_file": name, "findings": "Heart size normal." if normal else "Effusion.",
                     "impression": "No acute disease." if normal else "Right effusion.",
                     "mesh": "normal" if normal else "Pleural Effusion/right", "label": int(not normal)})
    with open(root / "reports.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def temp_folders(dest: Path) -> list[Path]:
    return [p for p in dest.parent.glob(f".{dest.name}.*.tmp") if p.is_dir()]


def kill_while_writing(argv: list[str], dest: Path, env: dict[str, str], timeout: float = 120.0) -> None:
    """Start the command, wait until its temp folder beside `dest` holds data, SIGKILL it."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace")[-2000:]
                pytest.fail(f"the run ended (code {process.returncode}) before it could be killed mid-write:\n{output}")
            busy = [f for t in temp_folders(dest) for f in t.rglob("*") if f.is_file() and f.stat().st_size > 0]
            if busy:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"no temp folder beside {dest} within {timeout} s")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL


def dataset_snapshot(folder: Path) -> dict[str, list[str]]:
    from datasets import load_from_disk

    splits = load_from_disk(str(folder))
    return {name: list(split["uid"]) for name, split in splits.items()}


def test_killed_build_dataset_leaves_nothing_or_the_old_dataset(tmp_path, capsys):
    source = write_big_source(tmp_path / "source")
    dest = tmp_path / "out" / "openi_hf"
    dest.parent.mkdir()
    env = cli_env(tmp_path)

    # 1. first run killed while its temp folder fills: nothing at the destination
    kill_while_writing([*CLI, "build-dataset", str(source), "--out", str(dest)], dest, env)
    assert not dest.exists()
    assert temp_folders(dest)  # the half-written data stayed in the hidden temp folder

    # 2. a rerun succeeds and writes the complete dataset, and removes what the killed run left (its pid is gone)
    with pytest.warns(UserWarning, match="scaled down") as caught:
        assert main(["build-dataset", str(source), "--out", str(dest), "--seed", "1"]) == 0
    assert not temp_folders(dest)
    assert any("left beside" in str(w.message) and "interrupted run" in str(w.message) for w in caught)
    old = dataset_snapshot(dest)
    assert sum(len(uids) for uids in old.values()) == 120
    old_files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))

    # 3. an --overwrite run killed mid-write leaves the old dataset, complete and loadable
    kill_while_writing([*CLI, "build-dataset", str(source), "--out", str(dest), "--seed", "2", "--overwrite"], dest, env)
    assert dataset_snapshot(dest) == old
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == old_files
    assert json.loads((dest / "dataset_dict.json").read_text())["splits"] == ["train", "validation", "test"]

    # 4. rerunning the killed command succeeds and replaces it
    with pytest.warns(UserWarning, match="scaled down"):
        assert main(["build-dataset", str(source), "--out", str(dest), "--seed", "2", "--overwrite"]) == 0
    new = dataset_snapshot(dest)
    assert new != old and sorted(sum(new.values(), [])) == sorted(sum(old.values(), []))


def test_killed_phantom_build_keeps_the_old_phantoms(tmp_path, capsys):
    import psutil

    dest = tmp_path / "phantoms"
    with pytest.warns(UserWarning, match="scaled down"):
        assert main(["build-dataset", "--phantoms", "24", "--out", str(dest), "--seed", "0"]) == 0
    old = dataset_snapshot(dest)

    # a long --overwrite run, killed once it is busy (well past start-up, rendering phantoms)
    process = subprocess.Popen([*CLI, "build-dataset", "--phantoms", "5000", "--out", str(dest), "--overwrite"],
                               env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        handle = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        while handle.cpu_times().user < 4.0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert dataset_snapshot(dest) == old

    with pytest.warns(UserWarning, match="scaled down"):
        assert main(["build-dataset", "--phantoms", "30", "--out", str(dest), "--overwrite"]) == 0
    assert sum(len(uids) for uids in dataset_snapshot(dest).values()) == 30


def test_ctrl_c_is_one_line_and_leaves_nothing_behind(tmp_path):
    """Ctrl-C (SIGINT) in the middle of a build: exit 130, one line instead of a traceback, no output folder and
    no temporary folder left (newcomer report, session 3: a 25-frame KeyboardInterrupt traceback)."""
    out = tmp_path / "phantoms"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cxr_mtclip.cli", "build-dataset", "--phantoms", "20000",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = b""
    deadline = time.monotonic() + 240
    while b"rendering phantoms" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096)  # the work has started: its progress bar is drawn
    assert b"rendering phantoms" in seen, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = (seen + rest).decode(errors="replace")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.rstrip().endswith("cxr-mtclip build-dataset: interrupted")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
