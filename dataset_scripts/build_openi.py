"""Build the OpenI chest X-ray DatasetDict from an NLM / Kaggle / ../shared/openi source.

<<<<<<< HEAD
    python dataset_scripts/build_openi.py SRC --out DIR [--reports-only] [--strict] [--seed N]
        [--test-per-class N] [--val-fraction F] [--format arrow|parquet] [--overwrite]
        [--push-to-hub REPO] [--public] [--cache-dir DIR] [--quiet]
=======
    python dataset_scripts/build_openi.py SRC --out DIR [--reports-only] [--strict] [--drop-no-indexing] [--seed N]
        [--format arrow|parquet] [--overwrite] [--push-to-hub REPO] [--cache-dir DIR]
>>>>>>> main

SRC is a folder holding NLMCXR_reports.tgz (+ NLMCXR_png.tgz / NLMCXR_dcm.tgz) or their extracted
folders, a Kaggle folder (indiana_reports.csv, indiana_projections.csv, images/), or ../shared/openi.
DIR is written atomically (save_to_disk layout, or parquet shards) with a dataset card README.md.

This script is `cxr-mtclip build-dataset` (one implementation, the same flags, summary and exit codes:
0 on success, 2 with a one-line message on bad input).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


<<<<<<< HEAD
=======
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="OpenI source: NLM tarballs/folders, Kaggle folder, or ../shared/openi")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--reports-only", action="store_true", help="keep studies with report text but no image")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad input instead of skipping it")
    parser.add_argument("--drop-no-indexing", action="store_true",
                        help="drop the 'No Indexing' studies (default: keep them, labelled abnormal as in the paper)")
    parser.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    parser.add_argument("--test-per-class", type=int, default=200, help="test studies per label (default 200)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share of the rest (default 0.1)")
    parser.add_argument("--format", choices=("arrow", "parquet"), default="arrow", help="save_to_disk or parquet")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="also push to this Hub dataset repo")
    parser.add_argument("--public", action="store_true", help="make the pushed repo public (default private)")
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder (default: the HF datasets cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


>>>>>>> main
def main(argv: Sequence[str] | None = None) -> int:
    from cxr_mtclip.cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    try:
<<<<<<< HEAD
        return cli_main(["build-dataset", *args])
    except SystemExit as exit_:  # argparse's usage errors and --help
        return int(exit_.code) if isinstance(exit_.code, int) else 2
=======
        result = build_openi_dataset(
            args.src,
            args.out,
            reports_only=args.reports_only,
            strict=args.strict,
            drop_no_indexing=args.drop_no_indexing,
            seed=args.seed,
            test_per_class=args.test_per_class,
            val_fraction=args.val_fraction,
            output_format=args.format,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
            private=not args.public,
            cache_dir=args.cache_dir,
            show_progress=not args.quiet,
        )
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.summary.format())
    print(f"{'split':<12}{'studies':>8}{'normal':>8}{'abnormal':>10}")
    for split, counts in split_label_counts(result.dataset).items():
        print(f"{split:<12}{sum(counts.values()):>8}{counts['normal']:>8}{counts['abnormal']:>10}")
    print(f"saved to {result.out_dir} (dataset card: {result.card_path})")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0
>>>>>>> main


if __name__ == "__main__":
    sys.exit(main())
