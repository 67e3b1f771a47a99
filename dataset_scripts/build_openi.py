"""Build the OpenI chest X-ray DatasetDict from an NLM / Kaggle / ../shared/openi source.

    python dataset_scripts/build_openi.py SRC --out DIR [--reports-only] [--strict] [--drop-no-indexing] [--seed N]
        [--test-per-class N] [--val-fraction F] [--format arrow|parquet] [--overwrite]
        [--push-to-hub REPO] [--public] [--cache-dir DIR] [--quiet]

SRC is a folder holding NLMCXR_reports.tgz (+ NLMCXR_png.tgz / NLMCXR_dcm.tgz) or their extracted
folders, a Kaggle folder (indiana_reports.csv, indiana_projections.csv, images/), or ../shared/openi.
DIR is written atomically (save_to_disk layout, or parquet shards) with a dataset card README.md.

This script is `cxr-mtclip build-dataset` (one implementation, the same flags, summary and exit codes:
0 on success, 2 with a one-line message on bad input).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from cxr_mtclip.cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return cli_main(["build-dataset", *args])
    except SystemExit as exit_:  # argparse's usage errors and --help
        return int(exit_.code) if isinstance(exit_.code, int) else 2


if __name__ == "__main__":
    os.environ["CXR_MTCLIP_ENTRY_POINT"] = "1"  # cxr_mtclip.ENTRY_POINT_ENV: --help without loading torch
    sys.exit(main())
