"""How long `cxr-mtclip <subcommand> --help` takes, in a fresh process each time (what a user waits for).

    python benchmarks/bench_cli_help.py            # ~1 min on 2 busy cores -> results/cli_help.json

For each subcommand: the median and the worst of 5 runs of ``python -m cxr_mtclip.cli <subcommand> --help``
(the console script takes the same path), next to a bare ``python -c pass`` and ``import cxr_mtclip`` outside the
CLI (which registers the Auto classes, hence loads torch and transformers). Goal: every ``--help`` under 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_utils import RESULTS_DIR, machine_info, write_json  # noqa: E402

SUBCOMMANDS = ["build-dataset", "train", "embed", "index", "search", "evaluate", "demo", "serve"]


def timed(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "cli_help.json")
    args = parser.parse_args()
    rows = []
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                "import cxr_mtclip (library use)": [sys.executable, "-c", "import cxr_mtclip"],
                "cxr-mtclip --help": [sys.executable, "-m", "cxr_mtclip.cli", "--help"],
                "cxr-mtclip --version": [sys.executable, "-m", "cxr_mtclip.cli", "--version"]}
    commands.update({f"cxr-mtclip {name} --help": [sys.executable, "-m", "cxr_mtclip.cli", name, "--help"]
                     for name in SUBCOMMANDS})
    commands["cxr-mtclip train --help-all (transformers' flags)"] = [sys.executable, "-m", "cxr_mtclip.cli", "train",
                                                                     "--help-all"]
    for label, argv in commands.items():
        times = timed(argv, args.repeats)
        row = {"command": label, "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}
        rows.append(row)
        print(f"{label:<52} median {row['median_s']:>6.3f} s   max {row['max_s']:>6.3f} s", flush=True)
    write_json(args.output, {"machine": machine_info(), "repeats": args.repeats, "runs": rows})


if __name__ == "__main__":
    main()
