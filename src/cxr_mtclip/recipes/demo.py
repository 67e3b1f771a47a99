"""`cxr-mtclip demo`: the whole pipeline offline, on synthetic phantom X-rays, in a few minutes on a CPU.

data (phantoms, optionally paired with real OpenI reports) -> a small CxrMtClip model fine-tuned with the
composite loss under the Trainer -> FAISS indexes -> both-direction retrieval -> metrics of the untrained
and the fine-tuned model side by side, t-SNE plots, and the top-3 results of one image and one text query.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import DEMO_LOSS_WEIGHTS, get_architecture

DEMO_ARCHITECTURE = "demo"  # cxr_mtclip.registry: tiny random towers, mean-pooled text, every block trainable
DEMO_IMAGE_SIZE = get_architecture(DEMO_ARCHITECTURE).image_size
DEMO_STUDIES = 1200
DEMO_EPOCHS = 60
CHECK_METRICS = ("image_to_text/accuracy@5", "text_to_image/accuracy@5")


@dataclass
class DemoResult:
    """What the demo produced: paths, the comparison table and whether fine-tuning beat the untrained model."""

    output_dir: Path
    results: dict[str, Any]
    table: str
    tsne_paths: list[Path]
    improved: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.improved) and all(self.improved.values())


def demo_training_arguments(
    output_dir: str | os.PathLike, *, epochs: int, batch_size: int, learning_rate: float, seed: int,
    logging_steps: int = 5, verbose: bool = True,
) -> Any:
    """Trainer arguments for the tiny from-scratch recipe (one learning rate, full batches, no checkpoints)."""
    import torch

    from ..training import CxrMtClipTrainingArguments

    return CxrMtClipTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        head_learning_rate=learning_rate,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=logging_steps,
        report_to="none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        dataloader_drop_last=True,  # a small tail batch would give the contrastive terms almost no negatives
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not verbose,
        metric_for_best_model=None,
    )


def load_demo_data(openi: str | os.PathLike | None, n_studies: int, seed: int) -> tuple[Any, str]:
    """Phantom splits (paired with real OpenI reports when `openi` holds reports.csv) or a real OpenI build."""
    from datasets import DatasetDict, load_from_disk

    from ..data import load_openi_reports, make_phantom_openi, split_openi

    test_per_class = max(10, min(100, n_studies // 8))
    if openi is not None:
        folder = Path(openi)
        if (folder / "dataset_dict.json").is_file():
            splits = load_from_disk(str(folder))
            if not isinstance(splits, DatasetDict) or "train" not in splits or "test" not in splits:
                raise ValueError(f"{folder}: expected a DatasetDict with train and test splits")
            if any(v is None for v in splits["train"]["image"][:1]):
                raise ValueError(f"{folder}: built with --reports-only; the demo needs images")
            return splits, f"real OpenI studies from {folder}"
        reports = load_openi_reports(folder)
        dataset = make_phantom_openi(n_studies, seed=seed, reports=reports, image_size=DEMO_IMAGE_SIZE)
        note = (f"SYNTHETIC phantom images (not real X-rays) paired with {n_studies} real OpenI reports from {folder}")
    else:
        dataset = make_phantom_openi(n_studies, seed=seed, image_size=DEMO_IMAGE_SIZE)
        note = f"SYNTHETIC phantom images with templated reports ({n_studies} studies; not real X-rays)"
    splits = split_openi(dataset, seed=seed, test_per_class=test_per_class)
    return splits, note


def run_demo(
    output_dir: str | os.PathLike = "demo_output",
    *,
    openi: str | os.PathLike | None = None,
    n_studies: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    n_boot: int = 200,
    verbose: bool = True,
) -> DemoResult:
    """Run the offline demo end to end and print its tables; returns a :class:`DemoResult`.

    Example:
        >>> result = run_demo("demo_output", n_studies=200, epochs=2)  # doctest: +SKIP
        >>> result.passed  # doctest: +SKIP
    """
    import torch
    from transformers import set_seed

    from ..atomic import atomic_directory, atomic_write_text
    from ..configuration_cxr_mtclip import CxrMtClipConfig
    from ..evaluation.evaluate import evaluate_models
    from ..modeling_cxr_mtclip import CxrMtClipModel
    from ..evaluation.plots import plot_loss_curves
    from ..model_card import write_model_card
    from ..processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer
    from ..retrieval import RetrievalIndex
    from ..training import CxrMtClipTrainer

    start = time.time()
    say = print if verbose else (lambda *a, **k: None)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_studies = n_studies or DEMO_STUDIES
    epochs = epochs or DEMO_EPOCHS
    set_seed(seed)

    say(f"[1/6] data: building {n_studies} studies (seed {seed})")
    splits, note = load_demo_data(openi, n_studies, seed)
    say(f"      {note}")
    say("      " + ", ".join(f"{name}: {len(split)}" for name, split in splits.items()))

    say("[2/6] tokenizer: WordPiece vocabulary learnt from the training reports (offline)")
    tokenizer = build_wordpiece_tokenizer(splits["train"]["report"], out / "tokenizer", vocab_size=1000)
    config = CxrMtClipConfig.from_registry(DEMO_ARCHITECTURE, vocab_size=len(tokenizer))
    processor = CxrMtClipProcessor.from_config(config, tokenizer)

    torch.manual_seed(seed)
    model = CxrMtClipModel(config)
    untrained = copy.deepcopy(model).eval()
    with atomic_directory(out / "untrained") as tmp:  # model + processor appear together or not at all
        untrained.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    say(f"      {_trainable_line(model)}")

    say(f"[3/6] fine-tuning with the composite loss ({_weights_line(config)}) for {epochs} epochs")
    args = demo_training_arguments(out / "trainer", epochs=epochs, batch_size=batch_size,
                                   learning_rate=learning_rate, seed=seed, logging_steps=5, verbose=verbose)
    trainer = CxrMtClipTrainer(model=model, args=args, train_dataset=splits["train"], processing_class=processor)
    trainer.train()
    model = trainer.model.eval()
    with atomic_directory(out / "fine-tuned") as tmp:  # model + processor appear together or not at all
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    curves = plot_loss_curves(trainer.state.log_history, out / "loss_curves.png", title="composite-loss training" + (" (SYNTHETIC phantom images)" if "SYNTHETIC" in note else ""))

    say(f"[4/6] evaluating untrained vs fine-tuned on the test split ({len(splits['test'])} studies)")
    results = evaluate_models(
        {"untrained": (untrained, processor), "fine-tuned": (model, processor)},
        splits["test"], out / "eval", protocol="both", data_note=note, seed=seed, n_boot=n_boot,
        batch_size=batch_size, show_progress=verbose,
    )
    table = (out / "eval" / "results.md").read_text()
    say(table)
    card = _fine_tuned_card(results, trainer, args, config, splits, note, out / "fine-tuned")
    write_model_card(out / "fine-tuned", card)

    say("[5/6] FAISS indexes over the test split (flat, inner product) and two example queries")
    retriever = RetrievalIndex.build(model, processor, splits["test"], kind="flat", show_progress=verbose)
    test = splits["test"]
    query_row = next(i for i in range(len(test)) if test[i]["label"] == 1)
    image_query = test[query_row]
    text_query = test[(query_row + 1) % len(test)]["report"]
    for title, (scores, examples) in (
        (f"image query: study {image_query['uid']} ({_label(image_query['label'])}; its report: "
         f"\"{_short(image_query['report'], 70)}\") -> reports (cross-modal)",
         retriever.search_by_image(image_query["image"], k=3, mode="cross-modal")),
        (f"text query: \"{_short(text_query, 70)}\" -> X-rays (cross-modal)",
         retriever.search_by_text(text_query, k=3, mode="cross-modal")),
    ):
        say(f"  {title}   [{note}]")
        for rank, score in enumerate(scores):
            say(f"    {rank + 1}. study {examples['uid'][rank]:<14} {_label(examples['label'][rank]):<9} "
                f"score {float(score):.4f}  {_short(examples['report'][rank], 80)}")

    tsne_paths = sorted((out / "eval").glob("*tsne*.png"))
    say("[6/6] pictures")
    for path in tsne_paths:
        say(f"      t-SNE of fused embeddings: {path}")
    say(f"      loss curves: {curves}")

    metrics = results.get("models", results)
    improved = {}
    for key in CHECK_METRICS:
        before = _metric(metrics, "untrained", key)
        after = _metric(metrics, "fine-tuned", key)
        improved[key] = after is not None and before is not None and after > before
        say(f"      {key} (cross-modal): untrained {before:.3f} -> fine-tuned {after:.3f} "
            f"{'improved' if improved[key] else 'NOT improved'}")
    seconds = time.time() - start
    summary = {"data_note": note, "improved": improved, "seconds": round(seconds, 1), "epochs": epochs,
               "n_studies": n_studies, "seed": seed, "loss_weights": DEMO_LOSS_WEIGHTS}
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    verdict = "PASS" if all(improved.values()) else "FAIL"
    say(f"demo {verdict}: fine-tuned vs untrained Accuracy@5 in both directions, {seconds:.0f} s, outputs in {out} [{note}]")
    return DemoResult(out, results, table, tsne_paths, improved, seconds)


def _fine_tuned_card(results: dict[str, Any], trainer: Any, args: Any, config: Any, splits: Any, note: str,
                     folder: Path) -> Any:
    """The model card of the demo's fine-tuned folder: its test metrics (cross-modal) and final training losses."""
    from ..data.schema import data_provenance
    from ..model_card import DataDescription, render_model_card
    from .train import hyperparameter_summary

    entry = results["models"]["fine-tuned"]
    numbers = {f"test_{key}": value for key, value in {**entry["metrics"]["cross-modal"], **entry["classification"]}.items()}
    final_log = next((log for log in reversed(trainer.state.log_history) if "train_loss" in log), {})
    numbers.update({key: value for key, value in final_log.items() if key.startswith("train_") and "loss" in key})
    data = DataDescription(data_provenance(splits), note, split_sizes={name: len(split) for name, split in splits.items()})
    return render_model_card(
        numbers, config=config, hyperparameters=hyperparameter_summary(args, config), data=data,
        model_name="cxr-mtclip demo (fine-tuned)", repo_id=str(folder),
        results_source="the demo's evaluation of this model on the test split (`eval/results.json`)",
    )


def _metric(results: dict[str, Any], model: str, key: str) -> float | None:
    """Read a cross-modal metric for `model` from evaluate_models' results, whatever the nesting."""
    block = results.get(model) if isinstance(results, dict) else None
    if block is None:
        return None
    for candidate in (block.get("cross-modal"), block.get("metrics", {}).get("cross-modal") if isinstance(block.get("metrics"), dict) else None, block):
        if isinstance(candidate, dict) and key in candidate and candidate[key] is not None:
            return float(candidate[key])
    return None


def _trainable_line(model: Any) -> str:
    from ..modeling_cxr_mtclip import trainable_parameter_report

    return trainable_parameter_report(model)


def _weights_line(config: Any) -> str:
    return f"bce {config.bce_weight}, supcon {config.supcon_weight}, clip {config.clip_weight}"


def _label(value: Any) -> str:
    return ("normal", "abnormal")[int(value)] if str(value).isdigit() else str(value)


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."
