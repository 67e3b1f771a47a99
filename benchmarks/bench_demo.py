"""`cxr-mtclip demo` at several sizes: wall time, CPU time, optimiser steps and whether its check passed.

Each size runs in a fresh `cxr-mtclip demo` process (what a user runs), one after another, so the numbers include
start-up. Sizes are ``N:EPOCHS`` or ``N:EPOCHS:SEED`` (``N:auto`` lets the demo choose the epochs for N studies;
the seed defaults to 0), plus ``default`` and ``openi`` (the default size with real OpenI reports from
../shared/openi, as `cxr-mtclip demo --openi ../shared/openi`).

    python benchmarks/bench_demo.py                          # the sizes below, ~15-25 min on 2 busy cores
    python benchmarks/bench_demo.py --sizes default 300:10   # 300:10 is refused before training (too few steps)

Writes results/demo.json. Nothing is asserted: the demo's own check (fine-tuned beats untrained on Accuracy@5
both ways) is the pass/fail recorded per size; `MIN_DEMO_STEPS` in recipes/demo.py comes from these runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_utils import RESULTS_DIR, machine_info, write_json  # noqa: E402

DEFAULT_SIZES = ["default", "120:auto", "200:auto", "300:auto", "300:10", "600:auto", "120:auto:1", "200:auto:1",
                 "300:auto:1", "600:auto:1", "200:auto:2", "300:auto:2"]


_CALIBRATE = ("import sys, cxr_mtclip.recipes.demo as demo; demo.MIN_DEMO_STEPS = 1; "
              "from cxr_mtclip.cli import main; sys.exit(main(sys.argv[1:]))")


def run_size(size: str, workdir: Path, threads: int, calibrate: bool = False) -> dict:
    label, out = size, workdir / size.replace(":", "_")
    head = [sys.executable, "-c", _CALIBRATE] if calibrate else [sys.executable, "-m", "cxr_mtclip.cli"]
    argv = [*head, "demo", "--output-dir", str(out), "--threads", str(threads)]
    if size.startswith("openi"):  # the demo with real OpenI reports: openi or openi:N:EPOCHS
        argv += ["--openi", str(Path(__file__).resolve().parents[1].parent / "shared" / "openi")]
        size = "default" if size == "openi" else size.split(":", 1)[1]
    if size != "default":
        n, epochs, *seed = size.split(":")
        argv += ["--n-studies", n] + ([] if epochs == "auto" else ["--epochs", epochs]) + (["--seed", seed[0]] if seed else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = {}
    if (out / "demo_summary.json").is_file():
        summary = json.loads((out / "demo_summary.json").read_text())
    last = (result.stderr.strip().splitlines() or [""])[-1] if result.returncode == 2 else ""
    return {
        "size": label, "exit_code": result.returncode,
        "verdict": {0: "PASS", 1: "FAIL", 2: "refused before training"}.get(result.returncode, "error"),
        "refusal": last, "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "n_studies": summary.get("n_studies"), "epochs": summary.get("epochs"), "steps": summary.get("steps"),
        "improved": summary.get("improved"), "demo_seconds": summary.get("seconds"),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="N:EPOCHS[:SEED], N:auto[:SEED] or default")
    parser.add_argument("--threads", type=int, default=1, help="the demo's --threads")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "demo.json")
    parser.add_argument("--calibrate", action="store_true",
                        help="lift the demo's minimum-steps refusal, to find where its check starts to pass")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        for size in args.sizes:
            row = run_size(size, Path(tmp), args.threads, args.calibrate)
            rows.append(row)
            print(f"{row['size']:<10} {row['verdict']:<26} steps {row['steps']!s:>5}  wall {row['wall_s']:>6} s  "
                  f"cpu {row['cpu_s']:>6} s  {row['refusal'][:120]}", flush=True)
            write_json(args.output, {"machine": machine_info(), "threads": args.threads, "calibrate": args.calibrate,
                                     "runs": rows})


if __name__ == "__main__":
    main()
