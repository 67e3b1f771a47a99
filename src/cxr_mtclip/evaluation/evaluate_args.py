"""The flags of `cxr-mtclip evaluate` / examples/evaluate.py, importable without torch (``--help`` answers at once)."""

from __future__ import annotations

from ..argparsing import CliParser

__all__ = ["PROTOCOLS", "build_parser"]

PROTOCOLS = ("cross-modal", "paper", "both")


def build_parser() -> CliParser:
    """The argument parser of `cxr_mtclip.evaluation.evaluate.main`."""
    parser = CliParser(
        prog="cxr-mtclip evaluate",
        description="Embed a split with each model, compute every retrieval and classification metric, write "
        "results.json, results.md (a table per protocol and direction, values with their 95% bootstrap intervals) "
        "and a t-SNE PNG per model.",
    )
    parser.add_argument("--dataset", required=True, help="folder written by save_to_disk (DatasetDict or Dataset)")
    parser.add_argument("--split", default="test", help="split of a DatasetDict")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=SPEC",
                        help="repeatable; SPEC = a saved CxrMtClipModel folder, an open_clip backbone "
                        "(folder or hf-hub: id, zero-shot) or a registered architecture (cxr_mtclip.registry: "
                        "'biomedclip' zero-shot; 'tiny', 'demo' random)")
    parser.add_argument("--output-dir", required=True, help="folder for results.json, results.md and the t-SNE plots")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="both",
                        help="query against the other modality (cross-modal), the fused index (paper), or both")
    parser.add_argument("--data-note", default=None, help="data provenance for the tables (default: from the source column)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10], help="cut-offs k of the @k metrics")
    parser.add_argument("--seed", type=int, default=0, help="seed of --limit's subset and the bootstrap")
    parser.add_argument("--batch-size", type=int, default=32, help="embedding batch size")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per metric (0: no CIs)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate a seeded random subset of this many rows")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for randomly initialised architectures "
                        "('tiny', 'demo'; default: one trained on the split's reports)")
    parser.add_argument("--device", default=None, help="torch device for the models (default: cuda when available)")
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser
