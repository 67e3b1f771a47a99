"""Loss ablations: the same model trained with each subset of the composite loss, several seeds, bootstrap CIs.

`run_ablation` trains the tiny demo architecture (registry name ``demo``) once per loss variant and
seed on one fixed data split, embeds the test split, and reports every retrieval metric in three protocols
(``cross-modal``, ``paper``, ``paper (own pair excluded)``), the head's classification metrics and how much
paper-protocol Accuracy@1 the cross-modal protocol does not reproduce (the query finding its own half of
the fused vector). Each number is the mean over seeds with a 95 % two-level percentile bootstrap interval
(`seed_query_bootstrap`: seeds and test queries resampled with replacement). Outputs: ``ablation.json``
and ``ablation.md`` (one table: rows metrics, columns variants).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..evaluation.metrics import DIRECTIONS, PAPER_EXCLUDED, bidirectional_retrieval_results
from ..evaluation.statistics import f1_rows, nanmean_rows, roc_auc_rows, seed_query_bootstrap
from ..evaluation.tables import escape_cell, format_number, metric_sort_key
from ..data.schema import data_provenance
from ..losses import PAPER_LOSS_WEIGHTS
from ..registry import DEMO_LOSS_WEIGHTS
from ..utils import json_safe, quiet_progress_bars, select_named, torch_threads

__all__ = [
    "ABLATION_VARIANTS",
    "PROTOCOL_NAMES",
    "AblationResult",
    "LossVariant",
    "RunRecord",
    "build_parser",
    "format_ablation_markdown",
    "main",
    "query_records",
    "run_ablation",
    "summarise_runs",
    "train_loss_variant",
]

PROTOCOL_NAMES = ("cross-modal", "paper", PAPER_EXCLUDED)
SELF_MATCH = "paper vs cross-modal"
_DATA_KINDS = {"synthetic": "synthetic (phantom images)", "real": "real", "mixed": "mixed", "unknown": "unknown"}
_CLASSIFICATION = ("roc_auc", "f1", "accuracy")


@dataclass(frozen=True)
class LossVariant:
    """One ablation arm: a name and the three loss weights (0 switches a term off)."""

    name: str
    bce_weight: float
    supcon_weight: float
    clip_weight: float
    description: str = ""

    def weights(self) -> dict[str, float]:
        return {"bce_weight": self.bce_weight, "supcon_weight": self.supcon_weight, "clip_weight": self.clip_weight}


ABLATION_VARIANTS: tuple[LossVariant, ...] = (
    LossVariant("CLIP only", **{**DEMO_LOSS_WEIGHTS, "bce_weight": 0.0, "supcon_weight": 0.0},
                description="CLIP term alone (demo weight)"),
    LossVariant("CLIP + BCE", **{**DEMO_LOSS_WEIGHTS, "supcon_weight": 0.0}, description="demo weights, SupCon off"),
    LossVariant("CLIP + SupCon", **{**DEMO_LOSS_WEIGHTS, "bce_weight": 0.0}, description="demo weights, BCE off"),
    LossVariant("all (demo weights)", **DEMO_LOSS_WEIGHTS,
                description="the offline demo's weights (cxr_mtclip.registry.DEMO_LOSS_WEIGHTS)"),
    LossVariant("all (paper weights)", **PAPER_LOSS_WEIGHTS,
                description="the paper's weights (cxr_mtclip.losses.PAPER_LOSS_WEIGHTS), tuned for a pretrained BiomedCLIP"),
    LossVariant("all (equal weights)", 1.0, 1.0, 1.0, "every term weighted 1"),
)


@dataclass
class RunRecord:
    """Per-query outcomes of one trained model on the test split, plus its final training log."""

    variant: str
    seed: int
    per_query: dict[str, np.ndarray]
    """``"<protocol>/<direction>/<metric>"`` -> one value per test query (NaN = undefined for that query)."""
    votes: dict[str, np.ndarray]
    """``"<protocol>/<direction>"`` -> the label voted by the top-``f1_k`` neighbours of each query."""
    labels: np.ndarray
    logits: np.ndarray
    train_log: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0


@dataclass
class AblationResult:
    """What `run_ablation` wrote and measured."""

    output_dir: Path
    json_path: Path
    markdown_path: Path
    table: str
    results: dict[str, Any]
    records: list[RunRecord]


# -- per-query outcomes ----------------------------------------------------------------------------


def query_records(
    image_embeds: np.ndarray,
    text_embeds: np.ndarray,
    fused_embeds: np.ndarray,
    labels: np.ndarray,
    texts: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-query metric values and label votes for the three protocols and the paper-vs-cross-modal comparison.

    Keys: ``"<protocol>/<direction>/<metric>"`` (metrics of `cxr_mtclip.evaluation.compute_retrieval_result`)
    and ``"paper vs cross-modal/<direction>/accuracy@1 difference"`` (paper hit minus cross-modal hit, per query)
    and ``".../paper-only top-1"`` (1 when the paper protocol ranks the pair first and the cross-modal one does not).

    Example:
        >>> x = np.eye(4)
        >>> per_query, votes = query_records(x, x, x, np.array([0, 1, 0, 1]), ["a", "b", "c", "d"], ks=(1,))
        >>> float(per_query["cross-modal/image_to_text/accuracy@1"].mean())
        1.0
    """
    runs = {
        "cross-modal": bidirectional_retrieval_results(image_embeds, text_embeds, labels, ks, list(texts)),
        "paper": bidirectional_retrieval_results(
            image_embeds, text_embeds, labels, ks, list(texts), protocol="paper", fused_embeds=fused_embeds
        ),
        PAPER_EXCLUDED: bidirectional_retrieval_results(
            image_embeds, text_embeds, labels, ks, list(texts), protocol="paper", fused_embeds=fused_embeds,
            exclude_self=True,
        ),
    }
    per_query: dict[str, np.ndarray] = {}
    votes: dict[str, np.ndarray] = {}
    for protocol, directions in runs.items():
        for direction, result in directions.items():
            for key, values in result.per_query.items():
                per_query[f"{protocol}/{direction}/{key}"] = np.asarray(values, dtype=np.float64)
            votes[f"{protocol}/{direction}"] = np.asarray(result.vote_labels, dtype=np.int64)
    for direction in DIRECTIONS:
        paper_hit = runs["paper"][direction].paired_ranks == 0
        cross_hit = runs["cross-modal"][direction].paired_ranks == 0
        per_query[f"{SELF_MATCH}/{direction}/accuracy@1 difference"] = paper_hit.astype(np.float64) - cross_hit
        per_query[f"{SELF_MATCH}/{direction}/paper-only top-1"] = (paper_hit & ~cross_hit).astype(np.float64)
    return per_query, votes


def _metric_order(key: str) -> tuple[int, int, int, int, str]:
    protocol, direction, metric = key.split("/", 2)
    protocols = (*PROTOCOL_NAMES, "classification", SELF_MATCH)
    return (protocols.index(protocol) if protocol in protocols else len(protocols),
            DIRECTIONS.index(direction) if direction in DIRECTIONS else len(DIRECTIONS), *metric_sort_key(metric))


def summarise_runs(
    records: Sequence[RunRecord], *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{metric key: {variant: {"mean", "ci_low", "ci_high", "per_seed"}}}`` over the runs of each variant.

    Metric keys: ``"<protocol>/<direction>/<metric>"`` for the retrieval metrics (``f1`` included: the label-vote
    F1 recomputed on every resample), ``"classification/fused head/<metric>"`` for the head, and the
    ``"paper vs cross-modal/..."`` rows of `query_records`. See `seed_query_bootstrap` for the interval.
    """
    by_variant: dict[str, list[RunRecord]] = {}
    for record in records:
        by_variant.setdefault(record.variant, []).append(record)
    if not by_variant:
        raise ValueError("no runs to summarise")
    for name, runs in by_variant.items():
        first = runs[0]
        for other in runs[1:]:
            if not np.array_equal(first.labels, other.labels):
                raise ValueError(f"variant {name!r}: seeds {first.seed} and {other.seed} were evaluated on different test sets")
    keys = sorted({key for r in records for key in r.per_query} | {
        f"{key}/f1" for r in records for key in r.votes
    } | {f"classification/fused head/{m}" for m in _CLASSIFICATION}, key=_metric_order)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for key in keys:
        row: dict[str, dict[str, Any]] = {}
        for name, runs in by_variant.items():
            columns, statistic = _columns_for(key, runs)
            if columns is None:
                continue
            mean, lo, hi, values = seed_query_bootstrap(columns, statistic, n_boot=n_boot, alpha=alpha, seed=seed)
            row[name] = {"mean": mean, "ci_low": lo, "ci_high": hi, "per_seed": values,
                         "seeds": [r.seed for r in runs]}
        summary[key] = row
    return summary


def _columns_for(key: str, runs: Sequence[RunRecord]) -> tuple[list[list[np.ndarray]] | None, Callable[..., np.ndarray]]:
    protocol, direction, metric = key.split("/", 2)
    if protocol == "classification":
        if metric == "roc_auc":
            return [[r.labels, r.logits] for r in runs], roc_auc_rows
        predicted = [(r.logits >= 0).astype(np.int64) for r in runs]
        if metric == "f1":
            return [[r.labels, p] for r, p in zip(runs, predicted)], f1_rows
        return [[(p == r.labels).astype(np.float64)] for r, p in zip(runs, predicted)], nanmean_rows
    if metric == "f1":
        vote_key = f"{protocol}/{direction}"
        if any(vote_key not in r.votes for r in runs):
            return None, f1_rows
        return [[r.labels, r.votes[vote_key]] for r in runs], f1_rows
    if any(key not in r.per_query for r in runs):
        return None, nanmean_rows
    return [[r.per_query[key]] for r in runs], nanmean_rows


# -- training and evaluation of one arm --------------------------------------------------------------


def train_loss_variant(
    variant: LossVariant,
    train_dataset: Any,
    processor: Any,
    base_config: Any,
    *,
    seed: int,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    work_dir: str | os.PathLike,
) -> tuple[Any, dict[str, float], float]:
    """Train a fresh model (init drawn from `seed`) with `variant`'s loss weights; returns (model, final log, seconds)."""
    from transformers import PrinterCallback, set_seed

    from ..modeling_cxr_mtclip import CxrMtClipModel
    from .demo import demo_training_arguments
    from ..training import CxrMtClipTrainer

    if len(train_dataset) < batch_size:
        raise ValueError(
            f"the training split has {len(train_dataset)} studies, fewer than batch_size={batch_size}: with "
            "drop_last no step would run; use more studies or a smaller batch"
        )
    config = copy.deepcopy(base_config)
    for name, value in variant.weights().items():
        setattr(config, name, value)
    config.validate_fields()
    set_seed(seed)
    model = CxrMtClipModel(config)
    args = demo_training_arguments(work_dir, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                   seed=seed, logging_steps=10, verbose=False)
    trainer = CxrMtClipTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=processor)
    trainer.remove_callback(PrinterCallback)
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    final = next((dict(entry) for entry in reversed(trainer.state.log_history) if "train_loss" in entry), {})
    log = {k: float(v) for k, v in final.items() if k.startswith("train_") and isinstance(v, (int, float))}
    return trainer.model.eval(), log, seconds


def _embed_test(model: Any, processor: Any, test: Any, batch_size: int) -> dict[str, np.ndarray]:
    from ..retrieval import EMBEDDING_COLUMNS, LOGITS_COLUMN, embed_dataset

    columns = (*EMBEDDING_COLUMNS, LOGITS_COLUMN)
    embedded = embed_dataset(model, processor, test, batch_size=batch_size, columns=columns, show_progress=False)
    with embedded.formatted_as(type="numpy", columns=list(columns), dtype=np.float32):
        block = embedded[:]
        arrays = {c: np.asarray(block[c], dtype=np.float32) for c in columns}
    for name, values in arrays.items():
        if np.isnan(values).any():
            raise ValueError(f"test split: some studies have no {name} (missing image or report); the ablation needs complete pairs")
    return arrays


# -- the whole ablation --------------------------------------------------------------------------------


def run_ablation(
    output_dir: str | os.PathLike,
    *,
    variants: Sequence[LossVariant] = ABLATION_VARIANTS,
    seeds: Sequence[int] = (0, 1),
    n_studies: int = 600,
    epochs: float = 30,
    data_seed: int = 0,
    openi: str | os.PathLike | None = None,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    ks: Sequence[int] = (1, 5, 10),
    n_boot: int = 1000,
    alpha: float = 0.05,
    verbose: bool = True,
) -> AblationResult:
    """Train every loss variant with every seed on one split, evaluate on its test split, write the table and JSON.

    Args:
        seeds: training seeds (model initialisation and batch order); the data split is fixed by `data_seed`.
        openi: as `cxr_mtclip.recipes.demo.load_demo_data`: None for phantoms with templated reports, a folder holding
            ``reports.csv`` (../shared/openi) for phantoms paired with real reports, or a saved DatasetDict.

    Example:
        >>> result = run_ablation("ablation_out", seeds=(0, 1), n_studies=160, epochs=2)  # doctest: +SKIP
        >>> print(result.table)  # doctest: +SKIP
    """
    from ..configuration_cxr_mtclip import CxrMtClipConfig
    from .demo import DEMO_ARCHITECTURE, load_demo_data
    from ..evaluation import normalise_report_text
    from ..processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer

    if not variants:
        raise ValueError("variants is empty")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be distinct, got {names}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    say = print if verbose else (lambda *a, **k: None)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    splits, note = load_demo_data(openi, n_studies, data_seed)
    train, test = splits["train"], splits["test"]
    say(f"data: {note}; " + ", ".join(f"{name} {len(split)}" for name, split in splits.items()))
    tokenizer = build_wordpiece_tokenizer(train["report"], out / "tokenizer", vocab_size=1000)
    base_config = CxrMtClipConfig.from_registry(DEMO_ARCHITECTURE, vocab_size=len(tokenizer))
    processor = CxrMtClipProcessor.from_config(base_config, tokenizer)
    labels = np.asarray(test["label"], dtype=np.int64)
    texts = list(test["report"])

    records: list[RunRecord] = []
    total = len(variants) * len(seeds)
    with tempfile.TemporaryDirectory(prefix="cxr_mtclip_ablation_") as work:
        for number, (variant, seed) in enumerate(((v, s) for v in variants for s in seeds), start=1):
            model, log, seconds = train_loss_variant(
                variant, train, processor, base_config, seed=seed, epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, work_dir=Path(work) / f"run{number}",
            )
            arrays = _embed_test(model, processor, test, batch_size)
            per_query, votes = query_records(arrays["image_embeds"], arrays["text_embeds"], arrays["fused_embeds"],
                                             labels, texts, ks)
            records.append(RunRecord(variant.name, seed, per_query, votes, labels, arrays["logits"].astype(np.float64),
                                     log, seconds))
            acc = [float(np.mean(per_query[f"cross-modal/{d}/accuracy@1"])) for d in DIRECTIONS]
            say(f"[{number}/{total}] {variant.name}, seed {seed}: trained in {seconds:.0f} s; cross-modal accuracy@1 "
                f"image->report {acc[0]:.3f}, report->image {acc[1]:.3f}")
            del model

    metrics = summarise_runs(records, n_boot=n_boot, alpha=alpha, seed=data_seed)
    split_counts = {name: {"studies": len(split),
                           "normal": int(sum(1 for v in split["label"] if v == 0)),
                           "abnormal": int(sum(1 for v in split["label"] if v == 1))}
                    for name, split in splits.items()}
    results: dict[str, Any] = {
        "data": {
            "note": note,
            "kind": _DATA_KINDS[data_provenance(test)],
            "split_seed": data_seed,
            "splits": split_counts,
            "test_distinct_reports": len({normalise_report_text(t) for t in texts}),
        },
        "model": "registry architecture 'demo': 2-layer ViT (64 px) and 2-layer BERT, width 32, random init, every block "
                 "trainable",
        "recipe": {"optimizer": "AdamW (weight decay 0.01)", "learning_rate": learning_rate,
                   "head_learning_rate": learning_rate, "schedule": "10% linear warm-up, cosine decay",
                   "epochs": epochs, "batch_size": batch_size, "drop_last": True},
        "protocols": {
            "cross-modal": "image queries vs report embeddings; report queries vs image embeddings",
            "paper": "image and report queries vs fused (image + report) embeddings (Algorithm 2)",
            PAPER_EXCLUDED: "paper protocol with the query's own fused row removed (accuracy@k undefined)",
            SELF_MATCH: "per query: paper top-1 hit minus cross-modal top-1 hit; paper-only top-1 = hit in paper, miss in cross-modal",
        },
        "accuracy": {"accuracy@k": "instance: the paired item is in the top k",
                     "accuracy_dedup@k": "duplicate-aware: any item whose normalised report equals the pair's counts"},
        "interval": {"level": 1 - alpha, "n_boot": n_boot, "bootstrap_seed": data_seed,
                     "method": "two-level percentile bootstrap: seeds and test queries resampled with replacement, "
                               "same draws for every variant (see cxr_mtclip.evaluation.statistics.seed_query_bootstrap)"},
        "ks": [int(k) for k in ks],
        "seeds": seeds,
        "variants": [asdict(v) for v in variants],
        "metrics": metrics,
        "runs": [{"variant": r.variant, "seed": r.seed, "train_seconds": round(r.train_seconds, 2), "train_log": r.train_log}
                 for r in records],
        "seconds": round(time.time() - start, 1),
    }
    results = json_safe(results)
    table = format_ablation_markdown(results)
    json_path, markdown_path = out / "ablation.json", out / "ablation.md"
    atomic_write_text(json_path, json.dumps(results, indent=2, allow_nan=False) + "\n")
    atomic_write_text(markdown_path, table)
    say(f"wrote {markdown_path} and {json_path} ({results['seconds']:.0f} s)")
    return AblationResult(out, json_path, markdown_path, table, results, records)


def format_ablation_markdown(results: Mapping[str, Any], decimals: int = 3) -> str:
    """The ablation as markdown: data, recipe, protocols and interval stated, then one table (rows metrics, columns variants)."""
    data = results["data"]
    variants = [v["name"] for v in results["variants"]]
    interval = results["interval"]
    splits = ", ".join(f"{name} {c['studies']} ({c['normal']} normal / {c['abnormal']} abnormal)"
                       for name, c in data["splits"].items())
    recipe = results["recipe"]
    lines = [
        "# Loss ablation",
        "",
        f"_Data ({data['kind']}): {data['note']}. Split (seed {data['split_seed']}): {splits}; "
        f"{data['test_distinct_reports']} distinct normalised reports among the test studies._",
        "",
        f"- **Model**: {results['model']}; trained from scratch for each run.",
        f"- **Recipe**: {recipe['optimizer']}, learning rate {recipe['learning_rate']} (backbone and head), "
        f"{recipe['schedule']}, {recipe['epochs']} epochs, batch {recipe['batch_size']} (drop_last).",
        f"- **Seeds**: {', '.join(map(str, results['seeds']))} (model initialisation and batch order; the data split is fixed).",
        "- **Variants** (bce / supcon / clip weights): "
        + "; ".join(f"{v['name']} = {v['bce_weight']:g} / {v['supcon_weight']:g} / {v['clip_weight']:g}"
                    for v in results["variants"]) + ".",
        "- **Protocols**: " + "; ".join(f"`{name}`: {text}" for name, text in results["protocols"].items()) + ".",
        "- **Accuracy**: `accuracy@k` is instance accuracy (the paired item in the top k); `accuracy_dedup@k` is "
        "duplicate-aware (a retrieved item whose normalised report equals the pair's also counts). "
        "Metric definitions: docs/metrics.md.",
        f"- **Cells**: mean over seeds [{interval['level']:.0%} CI]; {interval['method']}; {interval['n_boot']} resamples. "
        "Rows that are undefined for every variant (accuracy@k with the own pair excluded) are left out.",
        "",
        "| Protocol | Direction | Metric | " + " | ".join(escape_cell(v) for v in variants) + " |",
        "|---|---|---|" + "---:|" * len(variants),
    ]
    for key, row in results["metrics"].items():
        cells = [row.get(name) for name in variants]
        if all(c is None or c.get("mean") is None for c in cells):
            continue
        protocol, direction, metric = key.split("/", 2)
        rendered = [format_number(None if c is None else c.get("mean"), decimals, missing="n/a",
                                  ci=None if c is None else (c.get("ci_low"), c.get("ci_high"))) for c in cells]
        lines.append(f"| {protocol} | {direction.replace('_', ' ')} | {metric} | " + " | ".join(rendered) + " |")
    lines += ["", f"_Data: {data['note']}_", ""]
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------------------


def build_parser() -> Any:
    """Flags of `examples/ablate.py`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="ablate.py",
        description="Train the tiny demo model with each loss subset and several seeds on one split; write "
        "ablation.md (one table, mean [95% CI] over seeds and test queries) and ablation.json.",
    )
    parser.add_argument("--output_dir", default="runs/ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default: 0 1)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="subset of the variants, by name (default: all): " + "; ".join(v.name for v in ABLATION_VARIANTS))
    parser.add_argument("--n_studies", type=int, default=600, help="phantom studies before the split (default 600)")
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the data and its split (fixed across runs)")
    parser.add_argument("--openi", default=None,
                        help="../shared/openi (pair phantoms with real reports) or a saved DatasetDict of real studies")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is much faster on a busy shared CPU)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run `run_ablation`; returns 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        variants = select_named(ABLATION_VARIANTS, args.variants, "variant")
    except ValueError as err:
        parser.error(str(err))
    if args.n_boot < 1:
        parser.error("--n_boot must be >= 1 (the table reports intervals)")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    with quiet_progress_bars(args.quiet), torch_threads(args.threads):
        result = run_ablation(
            args.output_dir, variants=variants, seeds=args.seeds, n_studies=args.n_studies, epochs=args.epochs,
            data_seed=args.data_seed, openi=args.openi, batch_size=args.batch_size, learning_rate=args.learning_rate,
            ks=args.ks, n_boot=args.n_boot, verbose=not args.quiet,
        )
    if not args.quiet:
        print(result.table)
    return 0
