"""Loss ablation: CLIP only, CLIP + BCE, CLIP + SupCon and all three terms (demo, paper and equal weights).

Each variant is trained from scratch with every seed on one fixed split (the tiny demo architecture on
synthetic phantoms, optionally paired with real reports), evaluated on the test split in the cross-modal and
paper protocols, and reported as mean [95% bootstrap CI over seeds and test queries] in one markdown table
(ablation.md) and one JSON (ablation.json):
    python examples/ablate.py --seeds 0 1 --n_studies 600 --epochs 30 --output_dir runs/ablation
    python examples/ablate.py --openi ../shared/openi --seeds 0 1 2

All flags: python examples/ablate.py --help. Documented in docs/results.md.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run `cxr_mtclip.recipes.ablation.run_ablation`."""
    from cxr_mtclip.recipes.ablation import main as ablate_main

    return ablate_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
