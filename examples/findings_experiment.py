"""Multi-label findings vs the paper's binary objective: finding-level retrieval and its cost to Accuracy@k.

Four objectives (the paper's binary one, + a per-finding BCE head, the multi-label terms instead of the binary
ones, all five terms), each trained with every seed on one fixed split, evaluated on the test split in the
cross-modal protocol, and reported as mean [95% bootstrap CI over seeds and test queries] with each arm's
difference from the binary arm, in findings_experiment.md and findings_experiment.json.

Offline (CPU): the tiny demo architecture on phantoms paired with real OpenI reports:
    nice -n 10 python examples/findings_experiment.py --openi ../shared/openi --seeds 0 1 2 --threads 1 \\
        --output_dir runs/findings_experiment
GPU: BiomedCLIP on a real OpenI build (dataset_scripts/build_openi.py NLMCXR --out data/openi):
    python examples/findings_experiment.py --backbone biomedclip --openi data/openi --epochs 20 --batch_size 128 \\
        --seeds 0 1 2 --output_dir runs/findings_biomedclip

All flags: python examples/findings_experiment.py --help. Documented in docs/results.md and docs/findings.md.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run `cxr_mtclip.recipes.findings_experiment.run_findings_experiment`."""
    from cxr_mtclip.recipes.findings_experiment import main as experiment_main

    return experiment_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
