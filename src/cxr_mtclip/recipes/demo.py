"""`cxr-mtclip demo`: the whole pipeline offline, on synthetic phantom X-rays, in a few minutes on a CPU.

data (phantoms, optionally paired with real OpenI reports) -> a small CxrMtClip model fine-tuned with the
composite loss under the Trainer -> FAISS indexes -> both-direction retrieval -> metrics of the untrained
and the fine-tuned model side by side, t-SNE plots, and the top-3 results of one image and one text query.

The full tables go to ``OUTPUT_DIR/results.md`` (and ``eval/results.json``); the terminal gets the headline
numbers and the verdict. The demo's own check (fine-tuned beats untrained on Accuracy@5 both ways) needs enough
optimiser steps: `check_demo_size` refuses, before any work, a size that gives fewer than `MIN_DEMO_STEPS`.
This module imports nothing heavy at load time, so the CLI can run that check at once.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_ARCHITECTURE = "demo"  # cxr_mtclip.registry: tiny random towers, mean-pooled text, every block trainable
DEMO_STUDIES = 1200
DEMO_EPOCHS = 60
DEMO_BATCH_SIZE = 64
MIN_DEMO_STEPS = 300
"""Fewest optimiser steps a demo run may have. In benchmarks/results/demo_calibration.json (before the CLIP logit
scale was frozen) the check failed at 100 steps (200 studies) and passed from 120 steps; with 300 steps it passed
at 200, 300 and 600 studies for seeds 0-2 (benchmarks/results/demo.json), for about 27 s of CPU with one thread."""
MIN_DEMO_STUDIES = 200
"""Fewest studies the demo accepts: with 120 (30 test, 81 training studies: one batch per epoch) its check failed
for two seeds in benchmarks/results/demo.json; from 200 it passed for every seed tried."""
MIN_DEMO_STUDIES_OPENI = 300
"""Fewest studies with ``--openi`` (phantoms drawn from real reports, whose findings vary more than the templates'):
at 200 the check failed for seed 0 of 0-2; at 300 it passed for seeds 0-2 (benchmarks/README.md, section 7)."""
CHECK_METRICS = ("image_to_text/accuracy@5", "text_to_image/accuracy@5")


def __getattr__(name: str) -> Any:
    if name == "DEMO_IMAGE_SIZE":  # read from the registry on first use (it loads transformers)
        from ..registry import get_architecture

        return get_architecture(DEMO_ARCHITECTURE).image_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def demo_test_per_class(n_studies: int) -> int:
    """Test studies per label for `n_studies` (an eighth of the data, 10 to 100 per label)."""
    return max(10, min(100, n_studies // 8))


def demo_steps(n_train: int, epochs: int, batch_size: int = DEMO_BATCH_SIZE) -> int:
    """Optimiser steps of a demo run: full batches only (drop_last), times the epochs."""
    return (n_train // batch_size) * epochs


def expected_train_size(n_studies: int) -> int:
    """The training split `split_openi` leaves from `n_studies` balanced phantoms (2 x test_per_class for testing,
    then 10% of the rest for validation); a random label mix moves it by a study or two."""
    rest = max(0, n_studies - 2 * demo_test_per_class(n_studies))
    return rest - max(1, round(rest * 0.1)) if rest else 0


def default_demo_epochs(n_studies: int, batch_size: int = DEMO_BATCH_SIZE) -> int:
    """`DEMO_EPOCHS`, raised for a small `n_studies` until the run has `MIN_DEMO_STEPS` steps."""
    per_epoch = max(1, expected_train_size(n_studies) // batch_size)
    return max(DEMO_EPOCHS, math.ceil(MIN_DEMO_STEPS / per_epoch))


def check_demo_size(n_studies: int | None, epochs: int | None, batch_size: int = DEMO_BATCH_SIZE, *,
                    openi: bool = False) -> None:
    """Refuse, before any work, a demo size too small for its check to pass; the message says what to pass instead.

    Example:
        >>> check_demo_size(300, 10)
        Traceback (most recent call last):
        ...
        ValueError: --n-studies 300 --epochs 10 gives 30 optimiser steps (3 batches of 64 per epoch from 203 training studies); the demo's check needs at least 300: pass --epochs 100 or more, or leave --epochs out (it is then chosen for the size)
    """
    n = n_studies or DEMO_STUDIES
    least = MIN_DEMO_STUDIES_OPENI if openi else MIN_DEMO_STUDIES
    if n < least:
        raise ValueError(f"--n-studies {n}: too few for the demo{' with --openi' if openi else ''} "
                         f"({2 * demo_test_per_class(n)} test studies and {expected_train_size(n)} training studies in "
                         f"batches of {batch_size}); pass --n-studies {least} or more")
    if epochs is None:
        return
    n_train = expected_train_size(n)
    per_epoch = n_train // batch_size
    steps = demo_steps(n_train, epochs, batch_size)
    if steps < MIN_DEMO_STEPS:
        raise ValueError(
            f"--n-studies {n} --epochs {epochs} gives {steps} optimiser steps ({per_epoch} batches of {batch_size} per "
            f"epoch from {n_train} training studies); the demo's check needs at least {MIN_DEMO_STEPS}: pass --epochs "
            f"{math.ceil(MIN_DEMO_STEPS / per_epoch)} or more, or leave --epochs out (it is then chosen for the size)"
        )


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
        dataloader_pin_memory=torch.cuda.is_available(),  # torch warns about pinning on every CPU DataLoader
        disable_tqdm=not verbose,
        metric_for_best_model=None,
    )


def load_demo_data(openi: str | os.PathLike | None, n_studies: int, seed: int, *,
                   show_progress: bool = False) -> tuple[Any, str]:
    """Phantom splits (paired with real OpenI reports when `openi` holds reports.csv) or a real OpenI build."""
    from datasets import DatasetDict, load_from_disk

    from ..data import load_openi_reports, make_phantom_openi, split_openi
    from ..registry import get_architecture

    image_size = get_architecture(DEMO_ARCHITECTURE).image_size
    test_per_class = demo_test_per_class(n_studies)
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
        dataset = make_phantom_openi(n_studies, seed=seed, reports=reports, image_size=image_size,
                                     show_progress=show_progress)
        note = (f"SYNTHETIC phantom images (not real X-rays) paired with {n_studies} real OpenI reports from {folder}")
    else:
        dataset = make_phantom_openi(n_studies, seed=seed, image_size=image_size, show_progress=show_progress)
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
    batch_size: int = DEMO_BATCH_SIZE,
    learning_rate: float = 3e-3,
    n_boot: int = 200,
    threads: int | None = 1,
    verbose: bool = True,
) -> DemoResult:
    """Run the offline demo end to end; tables go to ``output_dir/results.md``, the headline to the terminal.

    `threads`: torch CPU threads (1 by default: for this tiny model one thread is several times faster than two
    on a busy 2-core machine, see benchmarks/README.md; None leaves torch's choice).

    Example:
        >>> result = run_demo("demo_output", n_studies=200)  # doctest: +SKIP
        >>> result.passed  # doctest: +SKIP
    """
    import torch

    from ..utils import quiet_progress_bars, torch_threads

    check_demo_size(n_studies, epochs, batch_size, openi=openi is not None)  # before any work
    with torch_threads(threads if not torch.cuda.is_available() else None), _quiet_libraries(), \
            quiet_progress_bars():  # datasets' own bars (FAISS "0/1 it", Map, Saving); ours stay
        return _run_demo(Path(output_dir), openi=openi, n_studies=n_studies or DEMO_STUDIES, epochs=epochs, seed=seed,
                         batch_size=batch_size, learning_rate=learning_rate, n_boot=n_boot, verbose=verbose)


def _run_demo(out: Path, *, openi: str | os.PathLike | None, n_studies: int, epochs: int | None, seed: int,
              batch_size: int, learning_rate: float, n_boot: int, verbose: bool) -> DemoResult:
    import torch
    from transformers import set_seed

    from ..atomic import atomic_directory, atomic_write_text
    from ..configuration_cxr_mtclip import CxrMtClipConfig
    from ..evaluation.evaluate import evaluate_models
    from ..evaluation.plots import plot_loss_curves
    from ..model_card import write_model_card
    from ..modeling_cxr_mtclip import CxrMtClipModel
    from ..processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer
    from ..registry import DEMO_LOSS_WEIGHTS
    from ..retrieval import RetrievalIndex
    from ..training import CxrMtClipTrainer
    from .train import _labelled_progress

    start = time.time()
    say = print if verbose else (lambda *a, **k: None)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(seed)

    say(f"[1/6] data: building {n_studies} studies (seed {seed})")
    splits, note = load_demo_data(openi, n_studies, seed, show_progress=verbose)
    say(f"      {note}")
    say("      " + ", ".join(f"{name}: {len(split)}" for name, split in splits.items()))
    epochs = epochs or max(DEMO_EPOCHS, math.ceil(MIN_DEMO_STEPS / max(1, len(splits["train"]) // batch_size)))
    steps = demo_steps(len(splits["train"]), epochs, batch_size)
    if steps < MIN_DEMO_STEPS:  # the exact split (a real build, or an unlucky label mix) is known only now
        raise ValueError(f"{len(splits['train'])} training studies in batches of {batch_size} for {epochs} epochs give "
                         f"{steps} optimiser steps; the demo's check needs at least {MIN_DEMO_STEPS}: pass more "
                         "--epochs or --n-studies")

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

    say(f"[3/6] fine-tuning with the composite loss ({_weights_line(config)}): {epochs} epochs, {steps} steps")
    args = demo_training_arguments(out / "trainer", epochs=epochs, batch_size=batch_size,
                                   learning_rate=learning_rate, seed=seed, logging_steps=max(5, steps // 20),
                                   verbose=verbose)
    trainer = CxrMtClipTrainer(model=model, args=args, train_dataset=splits["train"], processing_class=processor)
    _labelled_progress(trainer)
    trainer.train()
    model = trainer.model.eval()
    with atomic_directory(out / "fine-tuned") as tmp:  # model + processor appear together or not at all
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    curves = plot_loss_curves(trainer.state.log_history, out / "loss_curves.png", data_note=note,
                              title="Demo: composite-loss training, loss per term")

    say(f"[4/6] evaluating untrained vs fine-tuned on the test split ({len(splits['test'])} studies)")
    results = evaluate_models(
        {"untrained": (untrained, processor), "fine-tuned": (model, processor)},
        splits["test"], out / "eval", protocol="both", data_note=note, seed=seed, n_boot=n_boot,
        batch_size=batch_size, show_progress=verbose,
    )
    table = (out / "eval" / "results.md").read_text()
    card = _fine_tuned_card(results, trainer, args, config, splits, note, out / "fine-tuned")
    write_model_card(out / "fine-tuned", card)

    say("[5/6] FAISS indexes over the test split (flat, inner product) and two example queries")
    retriever = RetrievalIndex.build(model, processor, splits["test"], kind="flat", show_progress=verbose)
    test = splits["test"]
    query_row = next(i for i in range(len(test)) if test[i]["label"] == 1)
    image_query = test[query_row]
    text_query = test[(query_row + 1) % len(test)]["report"]
    queries = []
    for title, (scores, examples) in (
        (f"image query: study {image_query['uid']} ({_label(image_query['label'])}; its report: "
         f"\"{_short(image_query['report'], 70)}\") -> reports (cross-modal)",
         retriever.search_by_image(image_query["image"], k=3, mode="cross-modal")),
        (f"text query: \"{_short(text_query, 70)}\" -> X-rays (cross-modal)",
         retriever.search_by_text(text_query, k=3, mode="cross-modal")),
    ):
        queries.append(f"  {title}")
        for rank, score in enumerate(scores):
            queries.append(f"    {rank + 1}. study {examples['uid'][rank]:<14} {_label(examples['label'][rank]):<9} "
                           f"score {float(score):.4f}  {_short(examples['report'][rank], 80)}")
    say("\n".join(queries))

    tsne_paths = sorted((out / "eval").glob("*tsne*.png"))
    metrics = results.get("models", results)
    improved, headline = {}, []
    for key in CHECK_METRICS:
        before = _metric(metrics, "untrained", key)
        after = _metric(metrics, "fine-tuned", key)
        improved[key] = after is not None and before is not None and after > before
        headline.append(f"  {key:<28} {before:>9.3f} {after:>10.3f}   {'improved' if improved[key] else 'NOT improved'}")
    seconds = time.time() - start
    report = out / "results.md"
    atomic_write_text(report, _demo_report(note, table, queries, headline, epochs, steps, n_studies, seed, seconds))
    say(f"[6/6] results (cross-modal, test split; every table: {report})")
    say(f"  {'metric':<28} {'untrained':>9} {'fine-tuned':>10}")
    say("\n".join(headline))
    say(f"      t-SNE plots: {', '.join(str(p) for p in tsne_paths)}; loss curves: {curves}")
    summary = {"data_note": note, "improved": improved, "seconds": round(seconds, 1), "epochs": epochs,
               "steps": steps, "n_studies": n_studies, "seed": seed, "loss_weights": DEMO_LOSS_WEIGHTS,
               "torch_threads": torch.get_num_threads()}
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    verdict = "PASS" if all(improved.values()) else "FAIL"
    say(f"demo {verdict}: fine-tuned vs untrained Accuracy@5 in both directions, {seconds:.0f} s, outputs in {out} [{note}]")
    return DemoResult(out, results, table, tsne_paths, improved, seconds)


def _demo_report(note: str, table: str, queries: list[str], headline: list[str], epochs: int, steps: int,
                 n_studies: int, seed: int, seconds: float) -> str:
    """results.md of a demo run: what ran, the headline check, the example queries, then every table."""
    return "\n".join([
        "# cxr-mtclip demo", "", f"Data: {note}.", "",
        f"{n_studies} studies, seed {seed}; {epochs} epochs ({steps} optimiser steps); {seconds:.0f} s.", "",
        "## The demo's check (cross-modal Accuracy@5, test split)", "", "```",
        f"  {'metric':<28} {'untrained':>9} {'fine-tuned':>10}", *headline, "```", "",
        "## Example queries", "", "```", *queries, "```", "", "## Every metric", "", table,
    ]) + "\n"


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """transformers' logger at error level within the block (its one-time tokenizer notices say nothing to a
    demo user); restored afterwards."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _fine_tuned_card(results: dict[str, Any], trainer: Any, args: Any, config: Any, splits: Any, note: str,
                     folder: Path) -> Any:
    """The model card of the demo's fine-tuned folder: its test metrics (cross-modal) and final training losses."""
    from ..model_card import DataDescription, card_provenance, render_model_card
    from .train import hyperparameter_summary

    entry = results["models"]["fine-tuned"]
    numbers = {f"test_{key}": value for key, value in {**entry["metrics"]["cross-modal"], **entry["classification"]}.items()}
    final_log = next((log for log in reversed(trainer.state.log_history) if "train_loss" in log), {})
    numbers.update({key: value for key, value in final_log.items() if key.startswith("train_") and "loss" in key})
    data = DataDescription(card_provenance(splits), note, split_sizes={name: len(split) for name, split in splits.items()})
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
    from ..losses import PAPER_LOSS_WEIGHTS

    line = f"bce {config.bce_weight}, supcon {config.supcon_weight}, clip {config.clip_weight}"
    paper = " / ".join(f"{value:g}" for value in PAPER_LOSS_WEIGHTS.values())
    if (config.bce_weight, config.supcon_weight, config.clip_weight) != tuple(PAPER_LOSS_WEIGHTS.values()):
        line += f": the demo's weights for its tiny random towers, not the paper's {paper} (docs/results.md)"
    return line


def _label(value: Any) -> str:
    return ("normal", "abnormal")[int(value)] if str(value).isdigit() else str(value)


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."
