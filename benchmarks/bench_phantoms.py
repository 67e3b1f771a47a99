"""Time to build a synthetic phantom OpenI dataset (the issue's budget: 1,000 studies < 1 minute on 2 cores).

    python benchmarks/bench_phantoms.py [--n 1000] [--seed 0] [--reports ../shared/openi]

Prints the wall time and writes benchmarks/results/phantoms.json. With --reports, the phantoms are
paired with the real OpenI report rows (read at run time, never stored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from cxr_mtclip.atomic import atomic_write_text
from cxr_mtclip.data import split_openi
from cxr_mtclip.data import load_openi_reports, make_phantom_openi

RESULTS = Path(__file__).resolve().parent / "results" / "phantoms.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--reports", default=None, help="OpenI folder with reports.csv to pair real reports")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    reports = load_openi_reports(args.reports) if args.reports else None
    start = time.perf_counter()
    dataset = make_phantom_openi(args.n, seed=args.seed, reports=reports, image_size=args.image_size,
                                 show_progress=True)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    splits = split_openi(dataset, seed=args.seed)
    split_s = time.perf_counter() - start
    labels = np.asarray(dataset["label"])
    result = {
        "n": args.n,
        "image_size": args.image_size,
        "seed": args.seed,
        "paired_with_real_reports": bool(reports),
        "build_seconds": round(build_s, 3),
        "ms_per_study": round(1000 * build_s / max(1, args.n), 3),
        "split_seconds": round(split_s, 3),
        "budget_seconds": 60.0,
        "within_budget": build_s < 60.0,
        "normal": int((labels == 0).sum()),
        "abnormal": int((labels == 1).sum()),
        "splits": {name: split.num_rows for name, split in splits.items()},
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"built {args.n} phantom studies in {build_s:.2f} s ({result['ms_per_study']:.2f} ms/study; "
          f"budget 60 s) on {result['affinity_cpus'] or result['cpu_count']} CPUs; splits {result['splits']}")
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
