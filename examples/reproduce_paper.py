"""Reproduce Tables I-III of arXiv 2601.05399 next to the published values (examples/paper_results.json).

With network: downloads the NLM OpenI tarballs and builds the paper's split, fine-tunes BiomedCLIP with the
paper's recipe (add --hpo_trials 20 for the paper's search of the loss weights), evaluates CLIP ViT-B/16
(openai), zero-shot BiomedCLIP and the fine-tuned model in both protocols:
    python examples/reproduce_paper.py --output_dir runs/reproduce --hpo_trials 20

The paper's recipe is the default. When it cannot run (no network and the models or tarballs are not cached) the
script stops with one line saying which file is missing, and exit code 2; it never switches to the stand-in by
itself. With everything cached (tarballs in <cache_dir>/NLMCXR, both model repos in the Hugging Face cache) it runs
offline too; models from a simulated Hub cache (cxr_mtclip.testing.hub, random weights) are named so in every table.

Only with --offline: the same pipeline on the tiny demo architecture and synthetic phantoms; every table says so:
    python examples/reproduce_paper.py --offline --output_dir runs/reproduce_offline
    python examples/reproduce_paper.py --offline --openi ../shared/openi   # phantoms paired with real reports

Writes paper_comparison.md / .json and eval/ (results.md, results.json, t-SNE PNGs) under --output_dir.
All flags: python examples/reproduce_paper.py --help. Documented in docs/results.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PAPER_RESULTS = Path(__file__).resolve().with_name("paper_results.json")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run `cxr_mtclip.recipes.reproduce.run_reproduction`."""
    from cxr_mtclip.recipes.reproduce import main as reproduce_main

    return reproduce_main(argv, default_paper_results=PAPER_RESULTS)


if __name__ == "__main__":
    raise SystemExit(main())
