"""Does the multi-label objective improve finding-level retrieval over the paper's binary one, and at what cost?

`run_findings_experiment` trains one model per objective ("arm") and seed on one fixed split, embeds the test
split and measures, in the cross-modal protocol (image queries vs report embeddings and back):

* finding-level retrieval (`cxr_mtclip.evaluation.finding_metrics`): per-finding precision@k and hit rate@k
  (macro and micro over findings), finding-set Jaccard@k, the templated "find images with X" queries;
* instance retrieval: Accuracy@k (the paired report / image in the top k), the paper's headline metric;
* the heads: the binary head's ROC AUC and, for arms that train it, the finding head's macro ROC AUC.

Each number is the mean over seeds with a 95 % two-level percentile bootstrap interval (seeds and test queries
resampled, `seed_query_bootstrap`); each arm also gets its difference from the binary arm with an interval
from the same paired draws. Outputs: ``findings_experiment.json`` and ``findings_experiment.md``.

Two settings: offline, the ``demo`` architecture trained from scratch on phantoms paired with real OpenI reports
(``--openi ../shared/openi``: the phantom draws what the report text says, the labels come from the MeSH terms);
on a GPU, BiomedCLIP (``--backbone biomedclip``) on a real OpenI build (``--openi data/openi``, built by
dataset_scripts/build_openi.py) with the paper's recipe. docs/results.md says what the phantoms can show.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..data.findings import FINDING_NAMES, finding_multi_hot, finding_queries
from ..evaluation.finding_metrics import finding_query_result, finding_retrieval_result, macro_rows, micro_rows
from ..evaluation.metrics import DIRECTIONS, bidirectional_retrieval_results
from ..evaluation.statistics import nanmean_rows, roc_auc_rows, seed_query_bootstrap
from ..losses import PAPER_LOSS_WEIGHTS
from ..registry import DEMO_LOSS_WEIGHTS
from ..utils import json_safe, quiet_progress_bars, select_named, torch_threads
from .findings_tables import BINARY, format_findings_experiment

__all__ = ["BINARY", "FINDING_ARMS", "PHANTOM_SIGNS", "FindingArm", "build_parser", "main", "run_findings_experiment",
           "format_findings_experiment", "short_run_warning", "summarise_finding_runs"]

QUERY = "finding_query_to_image"


@dataclass(frozen=True)
class FindingArm:
    """One objective: the multiples of the base loss weights each term gets (0 switches a term off).

    With base weights ``b`` (the demo's or the paper's), the arm's config is ``bce_weight = bce * b.bce``,
    ``supcon_weight = supcon * b.supcon``, ``clip_weight = clip * b.clip``, ``finding_bce_weight =
    finding_bce * b.bce`` and ``multilabel_supcon_weight = multilabel_supcon * b.supcon``: the multi-label terms
    take the weights of the binary terms they stand beside or replace.
    """

    name: str
    bce: float = 1.0
    supcon: float = 1.0
    clip: float = 1.0
    finding_bce: float = 0.0
    multilabel_supcon: float = 0.0
    description: str = ""

    def config_overrides(self, base: Mapping[str, float]) -> dict[str, Any]:
        overrides: dict[str, Any] = {
            "bce_weight": self.bce * base["bce_weight"], "supcon_weight": self.supcon * base["supcon_weight"],
            "clip_weight": self.clip * base["clip_weight"],
        }
        if self.finding_bce or self.multilabel_supcon:
            overrides.update(finding_names=list(FINDING_NAMES), finding_bce_weight=self.finding_bce * base["bce_weight"],
                             multilabel_supcon_weight=self.multilabel_supcon * base["supcon_weight"])
        return overrides


FINDING_ARMS: tuple[FindingArm, ...] = (
    FindingArm(BINARY, description="BCE + SupCon on normal/abnormal + CLIP: the paper's objective"),
    FindingArm("binary + finding head", finding_bce=1.0,
               description="the paper's objective plus the per-finding BCE head"),
    FindingArm("multi-label", bce=0.0, supcon=0.0, finding_bce=1.0, multilabel_supcon=1.0,
               description="per-finding BCE + label-overlap SupCon + CLIP: the binary terms replaced"),
    FindingArm("binary + multi-label", finding_bce=1.0, multilabel_supcon=1.0,
               description="all five terms"),
)

# Which phantom signs (`cxr_mtclip.data.phantoms.FINDING_KINDS`) show each finding: the renderer draws what it
# reads in the report text, so a finding's image evidence exists only where its report names one of these.
PHANTOM_SIGNS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly",), "pleural_effusion": ("effusion",), "blunted_costophrenic_angle": ("effusion",),
    "opacity": ("opacity",), "airspace_disease": ("opacity",), "pneumonia": ("opacity",),
    "nodule": ("nodule", "mass"), "granuloma": ("granuloma",), "calcification": ("granuloma",),
    "atelectasis": ("atelectasis",), "scarring": ("atelectasis",), "pulmonary_edema": ("edema",),
    "pulmonary_congestion": ("edema",), "lung_markings": ("edema",), "hyperinflation": ("hyperinflation",),
    "emphysema": ("hyperinflation",), "copd": ("hyperinflation",), "flattened_diaphragm": ("hyperinflation",),
    "hypoinflation": ("hypoinflation",), "support_devices": ("pacemaker", "line"),
    "surgical_instruments": ("sternotomy", "clips"), "spondylosis": ("degenerative",), "scoliosis": ("scoliosis",),
    "fracture": ("fracture",), "hiatal_hernia": ("hernia",), "tortuous_aorta": ("aorta",),
    "atherosclerosis": ("aorta",),
}
"""Findings with no entry (elevated_diaphragm, bone_deformity, pleural_thickening, kyphosis, osteopenia) are never drawn."""


@dataclass
class FindingRun:
    """Per-query outcomes of one trained model on the test split."""

    arm: str
    seed: int
    per_query: dict[str, np.ndarray]
    """``"<direction>/<metric>"`` -> (queries,) for instance and Jaccard metrics, (queries, findings) for
    per-finding metrics (NaN where the query does not carry the finding)."""
    per_finding_query: dict[str, np.ndarray] = field(default_factory=dict)
    """``"finding_query_to_image/<metric>"`` -> (findings,) one value per templated query."""
    labels: np.ndarray | None = None
    logits: np.ndarray | None = None
    finding_logits: np.ndarray | None = None
    finding_hot: np.ndarray | None = None
    known: np.ndarray | None = None
    train_seconds: float = 0.0


# -- per-query outcomes ------------------------------------------------------------------------------------


def run_records(arrays: Mapping[str, np.ndarray], labels: np.ndarray, hot: np.ndarray, known: np.ndarray,
                texts: Sequence[str], query_embeds: np.ndarray | None, ks: Sequence[int]) -> tuple[dict, dict]:
    """Per-query instance and finding outcomes (cross-modal) and per-finding text-query outcomes of one model."""
    image, text = arrays["image_embeds"].astype(np.float64), arrays["text_embeds"].astype(np.float64)
    per_query: dict[str, np.ndarray] = {}
    instance = bidirectional_retrieval_results(image, text, labels, ks, list(texts))
    for direction, result in instance.items():
        for k in ks:
            per_query[f"{direction}/accuracy@{k}"] = np.asarray(result.per_query[f"accuracy@{k}"], dtype=np.float64)
    scores = image @ text.T
    for direction, matrix in zip(DIRECTIONS, (scores, scores.T)):
        result = finding_retrieval_result(hot, hot, names=FINDING_NAMES, scores=matrix, query_known=known,
                                          gallery_known=known, ks=ks, direction=direction)
        for k in ks:
            for family in ("finding_precision", "finding_hit_rate"):
                per_query[f"{direction}/{family}@{k}"] = result.per_query_finding[f"{direction}/{family}@{k}"]
            per_query[f"{direction}/finding_jaccard@{k}"] = result.per_query[f"{direction}/finding_jaccard@{k}"]
    per_finding_query: dict[str, np.ndarray] = {}
    if query_embeds is not None:
        result = finding_query_result(query_embeds.astype(np.float64) @ image.T, hot, names=FINDING_NAMES,
                                      image_known=known, ks=ks, direction=QUERY)
        for key, values in result.per_query_finding.items():
            per_finding_query[key] = np.diagonal(values).copy()
    return per_query, per_finding_query


# -- summary over seeds and queries ----------------------------------------------------------------------


def _statistic(key: str):
    """(columns of one run, statistic) for a metric key: macro/micro over the finding columns, else a plain mean."""
    tail = key.rpartition("/")[2]
    if tail == "macro":
        return macro_rows
    if tail == "micro":
        return micro_rows
    return nanmean_rows


def _columns(run: FindingRun, key: str) -> list[np.ndarray] | None:
    if key.startswith("classification/"):
        if key == "classification/roc_auc":
            return [run.labels.astype(np.float64), run.logits]
        if run.finding_logits is None:
            return None
        return [*run.finding_hot.T.astype(np.float64), *np.where(run.known[:, None], run.finding_logits, np.nan).T]
    if key.startswith(QUERY):
        stem = key.rpartition("/")[0]
        return None if stem not in run.per_finding_query else [run.per_finding_query[stem]]
    stem, _, tail = key.rpartition("/")
    if tail in ("macro", "micro"):
        return list(run.per_query[stem].T)
    return [run.per_query[key]]


def _finding_auc_macro(*columns: np.ndarray) -> np.ndarray:
    """Macro ROC AUC of the finding head on each resample: columns are F label columns then F logit columns
    (NaN logits for unknown studies, which take no part)."""
    half = len(columns) // 2
    labels, scores = np.stack(columns[:half], axis=1), np.stack(columns[half:], axis=1)  # (resamples, F, queries)
    rows, n_findings, n = labels.shape
    valid = ~np.isnan(scores)
    auc = roc_auc_rows(labels.reshape(-1, n), np.nan_to_num(scores).reshape(-1, n), valid.reshape(-1, n))
    return nanmean_rows(auc.reshape(rows, n_findings))


def _stat_for(key: str):
    if key == "classification/roc_auc":
        return roc_auc_rows
    if key == "classification/finding_roc_auc/macro":
        return _finding_auc_macro
    if key.startswith(QUERY):
        return nanmean_rows  # one query per finding: the macro average is the mean over the findings' queries
    return _statistic(key)


def summary_keys(ks: Sequence[int]) -> list[str]:
    """The metric keys of the experiment's table, in table order."""
    keys = []
    for direction in DIRECTIONS:
        for k in ks:
            keys += [f"{direction}/finding_precision@{k}/macro", f"{direction}/finding_precision@{k}/micro",
                     f"{direction}/finding_hit_rate@{k}/macro", f"{direction}/finding_jaccard@{k}"]
    keys += [f"{QUERY}/precision@{k}/macro" for k in ks] + [f"{QUERY}/roc_auc/macro"]
    keys += [f"{direction}/accuracy@{k}" for direction in DIRECTIONS for k in ks]
    keys += ["classification/roc_auc", "classification/finding_roc_auc/macro"]
    return keys


def summarise_finding_runs(runs: Sequence[FindingRun], ks: Sequence[int], *, n_boot: int = 1000, alpha: float = 0.05,
                           seed: int = 0, reference: str = BINARY) -> dict[str, dict[str, Any]]:
    """``{key: {arm: {"mean", "ci_low", "ci_high", "per_seed"}, "<arm> - <reference>": {...}}}``.

    The difference of an arm from the reference arm pairs run i of each (seeds in the order given) and resamples
    seeds and queries with the same draws for both, so its interval is that of the difference itself.
    """
    by_arm: dict[str, list[FindingRun]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run)
    summary: dict[str, dict[str, Any]] = {}
    for key in summary_keys(ks):
        row: dict[str, Any] = {}
        stat = _stat_for(key)
        per_arm: dict[str, list[list[np.ndarray]]] = {}
        for arm, arm_runs in by_arm.items():
            columns = [_columns(r, key) for r in arm_runs]
            if any(c is None for c in columns):
                continue
            per_arm[arm] = columns
            mean, lo, hi, values = seed_query_bootstrap(columns, stat, n_boot=n_boot, alpha=alpha, seed=seed)
            row[arm] = {"mean": mean, "ci_low": lo, "ci_high": hi, "per_seed": values}
        if reference in per_arm:
            for arm, columns in per_arm.items():
                if arm == reference or len(columns) != len(per_arm[reference]):
                    continue
                width = len(columns[0])

                def difference(*cols, _w=width):
                    return stat(*cols[:_w]) - stat(*cols[_w:])

                paired = [[*a, *b] for a, b in zip(columns, per_arm[reference])]
                mean, lo, hi, values = seed_query_bootstrap(paired, difference, n_boot=n_boot, alpha=alpha, seed=seed)
                row[f"{arm} - {reference}"] = {"mean": mean, "ci_low": lo, "ci_high": hi, "per_seed": values}
        summary[key] = row
    return summary


# -- data, models, one run ---------------------------------------------------------------------------------


def load_experiment_data(openi: str | os.PathLike | None, n_studies: int, seed: int, image_size: int) -> tuple[Any, str]:
    """Splits and a provenance note: a saved OpenI DatasetDict, phantoms paired with a random sample of the real
    reports in ``<openi>/reports.csv``, or (``openi`` None) phantoms with templated reports."""
    from datasets import DatasetDict, load_from_disk

    from ..data import load_openi_reports, make_phantom_openi, split_openi

    if openi is not None and (Path(openi) / "dataset_dict.json").is_file():
        splits = load_from_disk(str(openi))
        if not isinstance(splits, DatasetDict) or not {"train", "test"} <= set(splits):
            raise ValueError(f"{openi}: expected a DatasetDict with train and test splits")
        if "finding_labels" not in splits["train"].column_names:
            raise ValueError(f"{openi}: no finding_labels column; rebuild it with dataset_scripts/build_openi.py")
        return splits, f"real OpenI studies from {openi}"
    if openi is not None:
        reports = load_openi_reports(openi)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(reports), size=min(n_studies, len(reports)), replace=False)
        data = make_phantom_openi(seed=seed, reports=[reports[i] for i in sorted(chosen)], image_size=image_size)
        note = (f"SYNTHETIC phantom images (not real X-rays) paired with {len(chosen)} real OpenI reports "
                f"(random sample, seed {seed}) from {openi}")
    else:
        data = make_phantom_openi(n_studies, seed=seed, image_size=image_size)
        note = f"SYNTHETIC phantom images with templated reports ({n_studies} studies; not real X-rays)"
    return split_openi(data, seed=seed, test_per_class=max(10, min(100, len(data) // 8))), note


def _model_and_processor(backbone: str, overrides: Mapping[str, Any], train_reports: Sequence[str], work: Path,
                         seed: int, processor: Any = None) -> tuple[Any, Any]:
    from transformers import set_seed

    from ..configuration_cxr_mtclip import CxrMtClipConfig
    from ..modeling_cxr_mtclip import CxrMtClipModel
    from ..processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer
    from ..registry import get_architecture, is_registered
    from ..training import build_model

    arch = get_architecture(backbone) if is_registered(backbone) else None
    if arch is not None and arch.pretrained is None:  # random towers: the tokenizer is trained on the reports
        if processor is None:
            tokenizer = build_wordpiece_tokenizer(train_reports, work / "tokenizer", vocab_size=1000)
            processor = CxrMtClipProcessor.from_config(CxrMtClipConfig.from_registry(arch.name), tokenizer)
        config = CxrMtClipConfig.from_registry(arch.name, vocab_size=len(processor.tokenizer), **overrides)
        set_seed(seed)
        return CxrMtClipModel(config), processor
    model = build_model(backbone=backbone, seed=seed, **overrides)
    if processor is None:
        processor = CxrMtClipProcessor.from_backbone(arch.pretrained if arch is not None else backbone)
    return model, processor


def _training_args(work: Path, *, backbone_is_random: bool, epochs: float, batch_size: int, learning_rate: float | None,
                   seed: int) -> Any:
    from ..training import CxrMtClipTrainingArguments
    from .demo import demo_training_arguments

    if backbone_is_random:
        return demo_training_arguments(work, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate or 3e-3,
                                       seed=seed, logging_steps=10, verbose=False)
    import torch

    extra = {} if learning_rate is None else {"learning_rate": learning_rate}
    return CxrMtClipTrainingArguments(  # the paper's recipe (two learning rates, warm-up + cosine)
        output_dir=str(work), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size, eval_strategy="no", save_strategy="no", report_to="none", seed=seed,
        data_seed=seed, dataloader_drop_last=True, disable_tqdm=True, metric_for_best_model=None,
        dataloader_pin_memory=torch.cuda.is_available(), **extra,
    )


def _embed(model: Any, processor: Any, test: Any, batch_size: int) -> dict[str, np.ndarray]:
    from ..retrieval.embedding import EMBEDDING_COLUMNS, FINDING_LOGITS_COLUMN, LOGITS_COLUMN, embed_dataset

    columns = (*EMBEDDING_COLUMNS, LOGITS_COLUMN) + ((FINDING_LOGITS_COLUMN,) if model.config.num_findings else ())
    embedded = embed_dataset(model, processor, test, batch_size=batch_size, columns=columns, show_progress=False)
    with embedded.formatted_as(type="numpy", columns=list(columns), dtype=np.float32):
        block = embedded[:]
        arrays = {c: np.asarray(block[c], dtype=np.float32) for c in columns}
    if any(np.isnan(v).any() for v in arrays.values()):
        raise ValueError("test split: some studies lack an image or a report; the experiment needs complete pairs")
    return arrays


# -- the experiment ------------------------------------------------------------------------------------------


def short_run_warning(train_studies: int, batch_size: int, epochs: float) -> str | None:
    """For the random-tower `demo` backbone: a note when the run has fewer optimiser steps than the demo needs to
    learn (`recipes.demo.MIN_DEMO_STEPS`), under which finding metrics can sit at or below chance.

    Example:
        >>> short_run_warning(540, 64, 10) is not None, short_run_warning(540, 64, 60)
        (True, None)
    """
    from .demo import MIN_DEMO_STEPS

    steps = int(max(1, train_studies // max(1, batch_size)) * epochs)
    if steps >= MIN_DEMO_STEPS:
        return None
    return (f"{steps} optimiser steps ({epochs:g} epochs of {train_studies} training studies, batch {batch_size}): "
            f"the demo's random towers need about {MIN_DEMO_STEPS} to learn, so these numbers may sit at or below "
            f"chance (a finding head's AUC under 0.5, the same top-1 for every query); use more --epochs")


def run_findings_experiment(
    output_dir: str | os.PathLike,
    *,
    arms: Sequence[FindingArm] = FINDING_ARMS,
    seeds: Sequence[int] = (0, 1, 2),
    openi: str | os.PathLike | None = None,
    n_studies: int = 1200,
    backbone: str = "demo",
    epochs: float = 30,
    batch_size: int = 64,
    learning_rate: float | None = None,
    data_seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    n_boot: int = 1000,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train every arm with every seed, evaluate on the test split, write findings_experiment.json and .md.

    Args:
        openi: a saved OpenI DatasetDict (real images), a folder with ``reports.csv`` (phantoms paired with
            ``n_studies`` of its real reports), or None (templated phantoms).
        backbone: ``demo`` (random towers, every block trained, the demo's loss weights and one learning rate,
            default 3e-3) or a pretrained backbone such as ``biomedclip`` (the paper's weights and recipe).
        seeds: training seeds (initialisation and batch order); the data and split are fixed by `data_seed`.

    Example:
        >>> results = run_findings_experiment("runs/findings", seeds=(0,), n_studies=200, epochs=2)  # doctest: +SKIP
    """
    from transformers import PrinterCallback

    from ..registry import get_architecture, is_registered
    from ..retrieval.embedding import embed_reports
    from ..training import CxrMtClipTrainer

    names = [a.name for a in arms]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"arm names must be distinct and non-empty, got {names}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    say = print if verbose else (lambda *a, **k: None)
    random_towers = is_registered(backbone) and get_architecture(backbone).pretrained is None
    base = DEMO_LOSS_WEIGHTS if random_towers else PAPER_LOSS_WEIGHTS
    image_size = get_architecture(backbone).image_size if is_registered(backbone) else 224
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    splits, note = load_experiment_data(openi, n_studies, data_seed, image_size)
    train, test = splits["train"], splits["test"]
    say(f"data: {note}; " + ", ".join(f"{name} {len(split)}" for name, split in splits.items()))
    warning = short_run_warning(len(train), batch_size, epochs) if random_towers else None
    if warning:
        say(f"warning: {warning}")
    labels = np.asarray(test["label"], dtype=np.int64)
    hot, known = finding_multi_hot(test["finding_labels"])
    hot = hot.astype(bool)
    texts = list(test["report"])
    queries = [finding_queries()[name] for name in FINDING_NAMES]

    runs: list[FindingRun] = []
    processor = None
    with tempfile.TemporaryDirectory(prefix="cxr_mtclip_findings_") as work_root:
        work = Path(work_root)
        for number, (arm, seed) in enumerate(((a, s) for a in arms for s in seeds), start=1):
            model, processor = _model_and_processor(backbone, arm.config_overrides(base), train["report"], work, seed,
                                                    processor)
            args = _training_args(work / f"run{number}", backbone_is_random=random_towers, epochs=epochs,
                                  batch_size=batch_size, learning_rate=learning_rate, seed=seed)
            trainer = CxrMtClipTrainer(model=model, args=args, train_dataset=train, processing_class=processor)
            trainer.remove_callback(PrinterCallback)
            began = time.time()
            trainer.train()
            seconds = time.time() - began
            model = trainer.model.eval()
            arrays = _embed(model, processor, test, batch_size)
            per_query, per_finding_query = run_records(arrays, labels, hot, known, texts,
                                                       embed_reports(model, processor, queries), ks)
            runs.append(FindingRun(arm.name, seed, per_query, per_finding_query, labels,
                                   arrays["logits"].astype(np.float64), arrays.get("finding_logits"), hot, known, seconds))
            macro = float(macro_rows(*per_query[f"image_to_text/finding_precision@{max(ks)}"].T[:, None, :])[0])
            say(f"[{number}/{len(arms) * len(seeds)}] {arm.name}, seed {seed}: {seconds:.0f} s; image->report "
                f"finding_precision@{max(ks)} macro {macro:.3f}, accuracy@1 "
                f"{float(np.mean(per_query['image_to_text/accuracy@1'])):.3f}")
            del model, trainer

    results = json_safe({
        "question": "Does the multi-label objective improve finding-level retrieval over the paper's binary "
                    "objective, and at what cost to instance Accuracy@k?",
        "data": {"note": note, "split_seed": data_seed, "splits": {k: len(v) for k, v in splits.items()},
                 "test_known": int(known.sum()), "test_no_finding": int((known & ~hot.any(axis=1)).sum()),
                 "test_per_finding": {n: int(v) for n, v in zip(FINDING_NAMES, (hot & known[:, None]).sum(axis=0))},
                 "test_drawn_share": _drawn_share(test, hot, known) if "synthetic" in set(test["source"]) else None},
        "backbone": backbone, "base_weights": dict(base),
        "recipe": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate or (3e-3 if random_towers else "paper"),
                   "protocol": "cross-modal (image queries vs report embeddings and back)"},
        "arms": [asdict(a) for a in arms], "seeds": seeds, "ks": list(ks),
        "interval": {"level": 0.95, "n_boot": n_boot, "method": "two-level percentile bootstrap over seeds and test "
                     "queries (cxr_mtclip.evaluation.statistics.seed_query_bootstrap), same draws for every arm"},
        "metrics": summarise_finding_runs(runs, ks, n_boot=n_boot, seed=data_seed),
        "per_finding": _per_finding(runs, max(ks)),
        "runs": [{"arm": r.arm, "seed": r.seed, "train_seconds": round(r.train_seconds, 1)} for r in runs],
        "warning": warning,
        "seconds": round(time.time() - start, 1),
    })
    table = format_findings_experiment(results)
    atomic_write_text(out / "findings_experiment.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "findings_experiment.md", table)
    say(f"wrote {out / 'findings_experiment.md'} and .json ({results['seconds']:.0f} s)")
    return results


def _drawn_share(test: Any, hot: np.ndarray, known: np.ndarray) -> dict[str, float | None]:
    """Per finding: the share of test studies with it whose phantom draws one of its signs (`PHANTOM_SIGNS`)."""
    from ..data.phantoms import findings_for_row

    kinds = [{f.kind for f in findings_for_row(row, row["label"])}
             for row in test.select_columns(["report", "mesh", "label"])]
    share: dict[str, float | None] = {}
    for f, name in enumerate(FINDING_NAMES):
        carriers = np.flatnonzero(hot[:, f] & known)
        signs = set(PHANTOM_SIGNS.get(name, ()))
        share[name] = float(np.mean([bool(kinds[i] & signs) for i in carriers])) if carriers.size else None
    return share


def _per_finding(runs: Sequence[FindingRun], k: int) -> dict[str, dict[str, float | None]]:
    """Per finding and arm: image->report finding_precision@k, mean over seeds (no interval: few test queries)."""
    out: dict[str, dict[str, float | None]] = {}
    for f, name in enumerate(FINDING_NAMES):
        row: dict[str, float | None] = {}
        for arm in dict.fromkeys(r.arm for r in runs):
            values = [np.nanmean(col) for r in runs if r.arm == arm
                      for col in [r.per_query[f"image_to_text/finding_precision@{k}"][:, f]] if not np.isnan(col).all()]
            row[arm] = float(np.mean(values)) if values else None
        out[name] = row
    return out


# -- command line ------------------------------------------------------------------------------------------


def build_parser() -> Any:
    """Flags of `examples/findings_experiment.py`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="findings_experiment.py",
        description="Train the binary (paper) and multi-label objectives with several seeds on one split; write "
        "findings_experiment.md (mean [95% CI] over seeds and test queries, differences from the binary arm) and "
        "findings_experiment.json.",
    )
    parser.add_argument("--output_dir", default="runs/findings_experiment")
    parser.add_argument("--openi", default=None, help="../shared/openi (phantoms paired with real reports) or a saved "
                        "OpenI DatasetDict (real images; build it with dataset_scripts/build_openi.py)")
    parser.add_argument("--backbone", default="demo", help="'demo' (offline, random towers) or a pretrained backbone "
                        "such as 'biomedclip' (GPU)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=None, metavar="NAME",
                        help="subset of the arms (default all): " + "; ".join(a.name for a in FINDING_ARMS))
    parser.add_argument("--n_studies", type=int, default=1200, help="phantom studies (default 1200)")
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=None,
                        help="default: 3e-3 for 'demo', the paper's 1e-5 / 1e-4 for a pretrained backbone")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run `run_findings_experiment`; returns 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        arms = select_named(FINDING_ARMS, args.arms, "arm")
    except ValueError as err:
        parser.error(str(err))
    if args.n_boot < 1:
        parser.error("--n_boot must be >= 1 (the table reports intervals)")
    with quiet_progress_bars(args.quiet), torch_threads(args.threads):
        results = run_findings_experiment(
            args.output_dir, arms=arms, seeds=args.seeds, openi=args.openi, n_studies=args.n_studies,
            backbone=args.backbone, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            data_seed=args.data_seed, ks=args.ks, n_boot=args.n_boot, verbose=not args.quiet,
        )
    if not args.quiet:
        print(format_findings_experiment(results))
    return 0
