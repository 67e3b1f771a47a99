"""Evaluate one or more models on a split: every retrieval metric both ways, the head's classification, t-SNE.

`evaluate_models` writes into `output_dir`:

* ``results.json``: the data note, protocol, counts, and per model every metric, its bootstrap CI,
  the paper-mode self-match analysis and a FAISS-vs-numpy agreement check;
* ``results.md``: tables laid out like the paper's Tables I-III (rows metrics, columns models,
  one table per direction), each headed by the data note;
* ``tsne_<model>.png``: t-SNE of the fused embeddings coloured by label, one per model.

Protocols (see `cxr_mtclip.retrieval`): ``cross-modal`` ranks image queries against report
embeddings and report queries against image embeddings; ``paper`` ranks both against the fused
embeddings (Algorithm 2). In the paper protocol query ``i``'s own embedding is half of fused row
``i``, so a query scores its own study at ``sqrt((1 + cos(v_i, t_i)) / 2)`` (the "own-pair score"): never
below the pair's cross-modal cosine ``cos(v_i, t_i)``, 1 when the pair is aligned, 0 when it is anti-aligned.
Two measurements show what that does: the same metrics with the query's own row removed from the gallery
(``paper (own pair excluded)``: Accuracy@k is undefined there, the duplicate-aware and label metrics remain),
and ``self_match``: paper vs cross-modal Accuracy@k with the measured distribution of the own-pair scores.

Every metric in results.json sits under the name of its protocol (``metrics[protocol]``,
``bootstrap_ci[protocol]``), beside the standard and the paper-compatible definitions of each label metric
(docs/metrics.md).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature

from ..atomic import atomic_write_text
from ..data.schema import data_note
from ..hub import load_model_and_processor
from ..registry import is_registered
from ..retrieval.embedding import (
    EMBEDDING_COLUMNS,
    FINDING_LOGITS_COLUMN,
    LOGITS_COLUMN,
    embed_dataset,
    embed_reports,
    embedding_model_fingerprint,
    present_mask,
)
from ..retrieval.index import build_index
from ..utils import json_safe
from .finding_results import evaluate_findings, finding_columns, finding_query_texts, findings_markdown
from .metrics import (
    DIRECTIONS,
    PAPER_EXCLUDED,
    bidirectional_retrieval_results,
    classification_metrics,
    normalise_report_text,
    retrieval_bootstrap_cis,
)
from .evaluate_args import PROTOCOLS, build_parser
from .plots import plot_tsne
from .tables import format_number, results_markdown

__all__ = ["PROTOCOLS", "build_parser", "distribution_summary", "evaluate_models", "main", "model_slug"]

_INDEX_BY_PROTOCOL = {
    ("cross-modal", "image_to_text"): ("image_embeds", "text_embeds"),
    ("cross-modal", "text_to_image"): ("text_embeds", "image_embeds"),
    ("paper", "image_to_text"): ("image_embeds", "fused_embeds"),
    ("paper", "text_to_image"): ("text_embeds", "fused_embeds"),
}


def model_slug(name: str) -> str:
    """A file-name-safe form of a model name.

    Example:
        >>> model_slug("fine-tuned (seed 1)")
        'fine-tuned_seed_1'
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")
    return slug or "model"


def evaluate_models(
    models: Mapping[str, tuple[torch.nn.Module, Any]],
    dataset: Dataset,
    output_dir: str | os.PathLike,
    *,
    protocol: Literal["cross-modal", "paper", "both"] = "both",
    data_note: str,
    ks: Sequence[int] = (1, 3, 5, 10),
    seed: int = 0,
    batch_size: int = 32,
    n_boot: int = 1000,
    tsne: bool = True,
    image_column: str = "image",
    text_column: str = "report",
    label_column: str = "label",
    finding_column: str = "finding_labels",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Embed `dataset` with each model, compute every metric, write results.json, results.md and t-SNE PNGs.

    Args:
        models: ``{name: (model, processor)}``, e.g. ``{"zero-shot": ..., "fine-tuned": ...}``.
        dataset: one split with ``image``, ``report`` and ``label`` (0 normal / 1 abnormal) columns;
            rows without an image or report are left out and counted.
        protocol: which retrieval protocols are reported (``both`` = cross-modal and paper).
        data_note: where the data came from (e.g. "synthetic phantom images"); heads every table.
        seed: seeds the bootstrap CIs and the t-SNE.
        n_boot: bootstrap resamples per metric (0 = no confidence intervals).
        finding_column: multi-label findings; when the split has it, each model also gets a ``findings`` entry
            (`cxr_mtclip.evaluation.finding_results.evaluate_findings`) and results.md a findings section.

    Returns the content of results.json (NaN written as null).

    Example:
        >>> evaluate_models({"tiny": (model, processor)}, splits["test"], "out/", data_note="phantoms")  # doctest: +SKIP
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(data_note, str) or not data_note.strip():
        raise ValueError("data_note must be a non-empty string saying where the data came from")
    if not models:
        raise ValueError("models is empty; expected {name: (model, processor)}")
    for name, pair in models.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError(f"models[{name!r}] must be a (model, processor) tuple")
    slugs = [model_slug(name) for name in models]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"model names {list(models)} collide once made file-name safe ({slugs})")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"n_boot must be an int >= 0, got {n_boot!r}")
    for column in (image_column, text_column, label_column):
        if column not in dataset.column_names:
            raise ValueError(f"dataset has no '{column}' column; columns: {dataset.column_names}")

    protocols = ["cross-modal", "paper"] if protocol == "both" else [protocol]
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    evaluable, counts = _evaluable_rows(dataset, image_column, text_column, label_column)
    ks = tuple(sorted({int(k) for k in ks}))
    if counts["evaluated"] < 4 or (ks and ks[-1] > counts["evaluated"] - 1):
        raise ValueError(
            f"{counts['evaluated']} evaluable studies (image + report) are too few for ks={ks}: need at least "
            f"max(ks) + 1 (the paper protocol with the own pair excluded ranks n - 1 items) and at least 4"
        )
    labels = np.asarray(evaluable[label_column], dtype=np.int64)
    texts = list(evaluable[text_column])
    findings = finding_columns(evaluable, finding_column) if finding_column in evaluable.column_names else None

    per_model: dict[str, Any] = {}
    for (name, (model, processor)), slug in zip(models.items(), slugs):
        # the head's AUC when the model's findings are the split's, in the same order
        same = findings is not None and list(getattr(model.config, "finding_names", None) or []) == findings[2]
        head = (FINDING_LOGITS_COLUMN,) if same else ()
        embedded = embed_dataset(
            model, processor, evaluable, batch_size=batch_size, columns=(*EMBEDDING_COLUMNS, LOGITS_COLUMN, *head),
            image_column=image_column, text_column=text_column, show_progress=show_progress,
        )
        arrays = _numpy_columns(embedded, (*EMBEDDING_COLUMNS, LOGITS_COLUMN, *head))
        entry = _evaluate_one(arrays, labels, texts, protocols, ks, seed, n_boot)
        entry["fingerprint"] = embedding_model_fingerprint(embedded)
        entry["index_check"] = _index_agreement(embedded, arrays, protocols, show_progress)
        if findings is not None:
            queries = finding_query_texts(findings[2])
            entry["findings"] = evaluate_findings(
                arrays, *findings, ks=ks, seed=seed, n_boot=n_boot,
                query_embeds=None if queries is None else embed_reports(model, processor, queries),
                finding_logits=arrays.get(FINDING_LOGITS_COLUMN),
            )
        if tsne:
            png = output / f"tsne_{slug}.png"
            plot_tsne(arrays["fused_embeds"], labels, png, f"{name}: fused embeddings ({counts['evaluated']} studies)",
                      seed=seed, data_note=data_note)
            entry["tsne_png"] = png.name
        per_model[name] = entry

    results = json_safe({
        "data_note": data_note.strip(),
        "protocol": protocol,
        "protocols": protocols,
        "ks": list(ks),
        "seed": seed,
        "n_boot": n_boot,
        "counts": counts,
        "models": per_model,
    })
    atomic_write_text(output / "results.json", json.dumps(results, indent=2, sort_keys=False, allow_nan=False) + "\n")
    atomic_write_text(output / "results.md", results_markdown(results) + "\n" + findings_markdown(results))
    return results


def _evaluable_rows(
    dataset: Dataset, image_column: str, text_column: str, label_column: str
) -> tuple[Dataset, dict[str, Any]]:
    """Rows with an image and a non-blank report, plus counts of what was left out and why."""
    if not isinstance(dataset.features[image_column], ImageFeature):
        raise ValueError(f"column '{image_column}' must be a datasets.Image() feature, got {dataset.features[image_column]}")
    reports = dataset[text_column]
    has_image = present_mask(dataset, image_column)
    has_report = np.array([isinstance(r, str) and bool(r.strip()) for r in reports], dtype=bool)
    keep = has_image & has_report
    evaluable = dataset if keep.all() else dataset.select(np.flatnonzero(keep))
    labels = np.asarray(evaluable[label_column])
    bad = sorted({int(v) for v in np.unique(labels)} - {0, 1}) if labels.size else []
    if bad:
        raise ValueError(f"column '{label_column}' must hold 0 (normal) / 1 (abnormal); found {bad}")
    kept_reports = [r for r, k in zip(reports, keep) if k]
    counts: dict[str, Any] = {
        "rows": len(dataset),
        "evaluated": int(keep.sum()),
        "left_out_no_image": int((~has_image).sum()),
        "left_out_no_report": int((has_image & ~has_report).sum()),
        "labels": {"normal": int((labels == 0).sum()), "abnormal": int((labels == 1).sum())},
        "unique_reports": len({normalise_report_text(r) for r in kept_reports}),
    }
    if "source" in evaluable.column_names:
        counts["sources"] = dict(sorted(Counter(evaluable["source"]).items()))
    return evaluable, counts


def _numpy_columns(dataset: Dataset, columns: Sequence[str]) -> dict[str, np.ndarray]:
    with dataset.formatted_as(type="numpy", columns=list(columns), dtype=np.float32):
        block = dataset[:]
        return {column: np.asarray(block[column], dtype=np.float32) for column in columns}


def _evaluate_one(
    arrays: Mapping[str, np.ndarray],
    labels: np.ndarray,
    texts: list[str],
    protocols: list[str],
    ks: tuple[int, ...],
    seed: int,
    n_boot: int,
) -> dict[str, Any]:
    image, text, fused = arrays["image_embeds"], arrays["text_embeds"], arrays["fused_embeds"]
    runs: dict[str, Any] = {}
    needed = set(protocols) | ({"cross-modal"} if "paper" in protocols else set())
    for name in ("cross-modal", "paper"):
        if name in needed:
            runs[name] = bidirectional_retrieval_results(
                image, text, labels, ks, texts, protocol=name, fused_embeds=fused if name == "paper" else None
            )
    if "paper" in protocols:
        runs[PAPER_EXCLUDED] = bidirectional_retrieval_results(
            image, text, labels, ks, texts, protocol="paper", fused_embeds=fused, exclude_self=True
        )
    reported = [*protocols, *([PAPER_EXCLUDED] if "paper" in protocols else [])]

    entry: dict[str, Any] = {"metrics": {}, "bootstrap_ci": {}, "skipped_queries": {}}
    for name in reported:
        entry["metrics"][name] = {
            f"{direction}/{key}": value for direction, result in runs[name].items() for key, value in result.metrics.items()
        }
        entry["skipped_queries"][name] = {
            direction: {"map": result.n_skipped_map, "roc_auc": result.n_skipped_roc_auc}
            for direction, result in runs[name].items()
        }
        if n_boot:
            entry["bootstrap_ci"][name] = {
                f"{direction}/{key}": list(ci)
                for direction, result in runs[name].items()
                for key, ci in retrieval_bootstrap_cis(result, n_boot=n_boot, seed=seed).items()
            }
    entry["classification"] = classification_metrics(arrays[LOGITS_COLUMN], labels)
    if "paper" in runs:
        entry["self_match"] = _self_match(runs, image, text, fused, ks)
    return entry


def _self_match(runs: Mapping[str, Any], image: np.ndarray, text: np.ndarray, fused: np.ndarray, ks: tuple[int, ...]) -> dict[str, Any]:
    """Paper vs cross-modal Accuracy@k per direction, and the measured own-pair scores (query . its fused row)."""
    out: dict[str, Any] = {}
    pair_cosine = np.sum(image.astype(np.float64) * text.astype(np.float64), axis=1)
    for direction, queries in zip(DIRECTIONS, (image, text)):
        paper, cross = runs["paper"][direction], runs["cross-modal"][direction]
        own_scores = np.sum(_unit_rows(queries) * _unit_rows(fused), axis=1)
        paper_hit = paper.paired_ranks == 0
        cross_hit = cross.paired_ranks == 0
        out[direction] = {
            **{f"paper/accuracy@{k}": paper.metrics[f"accuracy@{k}"] for k in ks},
            **{f"cross-modal/accuracy@{k}": cross.metrics[f"accuracy@{k}"] for k in ks},
            **{f"difference/accuracy@{k}": paper.metrics[f"accuracy@{k}"] - cross.metrics[f"accuracy@{k}"] for k in ks},
            # Top-1 hits of the paper protocol that the cross-modal protocol does not reproduce.
            "paper_only_top1_fraction": float(np.mean(paper_hit & ~cross_hit)),
            "mean_own_pair_score": float(own_scores.mean()),
            "own_pair_score": distribution_summary(own_scores),
            "mean_pair_cosine": float(pair_cosine.mean()),
            "pair_cosine": distribution_summary(pair_cosine),
        }
    return out


def distribution_summary(values: Any) -> dict[str, float]:
    """Minimum, 5/25/50/75/95 % quantiles (numpy's linear interpolation), maximum and mean of `values`.

    Example:
        >>> distribution_summary([0.0, 1.0])["median"]
        0.5
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("distribution_summary needs at least one value")
    quantiles = np.quantile(array, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"min": float(array.min()), **dict(zip(("p05", "p25", "median", "p75", "p95"), map(float, quantiles))),
            "max": float(array.max()), "mean": float(array.mean())}


def _unit_rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def _index_agreement(
    embedded: Dataset, arrays: Mapping[str, np.ndarray], protocols: list[str], show_progress: bool
) -> dict[str, float]:
    """Fraction of queries whose top-1 score from a flat FAISS index equals the brute-force numpy top-1 score."""
    built: set[str] = set()
    out: dict[str, float] = {}
    for (name, direction), (query_column, gallery_column) in _INDEX_BY_PROTOCOL.items():
        if name not in protocols:
            continue
        if gallery_column not in built:
            build_index(embedded, gallery_column, "flat", device="cpu", show_progress=show_progress)
            built.add(gallery_column)
        queries = np.ascontiguousarray(arrays[query_column], dtype=np.float32)
        faiss_top, _ = embedded.search_batch(gallery_column, queries, k=1)
        numpy_top = np.concatenate([
            (queries[start : start + 1024] @ arrays[gallery_column].T).max(axis=1)
            for start in range(0, queries.shape[0], 1024)
        ])
        out[f"{name}/{direction}"] = float(np.mean(np.abs(np.asarray(faiss_top)[:, 0] - numpy_top) <= 1e-4))
    for column in built:
        embedded.drop_index(column)
    return out


# -- command line ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`cxr-mtclip evaluate` / examples/evaluate.py: parse `argv` and run `evaluate_models`; returns 0."""
    from datasets import DatasetDict, load_from_disk

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        data = load_from_disk(args.dataset)
    except FileNotFoundError as err:
        parser.error(f"{args.dataset}: not a dataset saved with save_to_disk ({err})")
    if isinstance(data, DatasetDict):
        if args.split not in data:
            parser.error(f"{args.dataset}: no split {args.split!r}; it has {sorted(data)}")
        dataset, where = data[args.split], f"{args.dataset} [{args.split}]"
    else:
        dataset, where = data, str(args.dataset)
    if args.limit is not None:
        if args.limit < 1:
            parser.error("--limit must be >= 1")
        dataset = dataset.shuffle(seed=args.seed).select(range(min(args.limit, len(dataset))))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    output = Path(args.output_dir)
    models: dict[str, tuple[torch.nn.Module, Any]] = {}
    for item in args.model:
        name, sep, spec = item.partition("=")
        if not sep:
            name, spec = Path(item).name or item, item
        if not name or not spec:
            parser.error(f"--model {item!r}: expected NAME=SPEC")
        if name in models:
            parser.error(f"--model name {name!r} given twice")
        models[name] = load_model_and_processor(
            spec, tokenizer=args.tokenizer, tokenizer_texts=dataset["report"] if is_registered(spec) else None,
            work_dir=output / f"_{model_slug(name)}", seed=args.seed, device=device,
        )
    note = args.data_note or data_note(dataset, where)
    results = evaluate_models(
        models, dataset, output, protocol=args.protocol, data_note=note, ks=args.ks, seed=args.seed,
        batch_size=args.batch_size, n_boot=args.n_boot, tsne=not args.no_tsne, show_progress=not args.quiet,
    )
    print(f"{note}: {results['counts']['evaluated']} studies, models {', '.join(models)}")
    for name, entry in results["models"].items():
        for protocol_name, metrics in entry["metrics"].items():
            keys = [k for k in ("image_to_text/accuracy@1", "text_to_image/accuracy@1", "image_to_text/precision@5") if k in metrics]
            summary = ", ".join(f"{k}={format_number(metrics[k], missing='n/a')}" for k in keys)
            print(f"  {name} [{protocol_name}]: {summary}")
        for protocol_name, metrics in entry.get("findings", {}).get("retrieval", {}).items():
            keys = [k for k in metrics if k.endswith("/macro") and "finding_precision@" in k]
            print(f"  {name} [findings, {protocol_name}]: "
                  + ", ".join(f"{k}={format_number(metrics[k], missing='n/a')}" for k in keys))
    print(f"wrote {output / 'results.json'}, {output / 'results.md'}")
    return 0
