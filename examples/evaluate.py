"""Evaluate models on a saved split: every retrieval metric both ways, paper-style tables, t-SNE per model.

    python examples/evaluate.py --dataset data/openi --split test \\
        --model zero-shot=hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 \\
        --model fine-tuned=runs/best --output-dir results/ --protocol both

    # offline smoke run on phantoms with a random tiny model
    python examples/evaluate.py --dataset data/phantoms --model tiny=tiny --output-dir /tmp/eval

Writes results.json, results.md and tsne_<model>.png into --output-dir (same as `cxr-mtclip evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run `cxr_mtclip.evaluation.evaluate.evaluate_models`."""
    from cxr_mtclip.evaluation.evaluate import main as evaluate_main

    return evaluate_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
