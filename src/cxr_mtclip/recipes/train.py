"""The training recipe behind ``examples/train.py`` and ``cxr-mtclip train``: flags -> data -> (HPO) -> Trainer -> results.

`run_training` loads a saved DatasetDict (or generates phantoms), optionally searches the loss weights, trains with
`cxr_mtclip.training.CxrMtClipTrainer`, evaluates the validation and test splits, and writes the model, processor,
result JSONs, loss curves and the model card (README.md) into ``output_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed

from ..argparsing import DefaultsOnceFormatter, SuggestingParserMixin
from ..atomic import write_json
from ..configuration_cxr_mtclip import CxrMtClipConfig
from ..data.schema import data_note
from ..preflight import check_dataset_source, clear_earlier_run
from ..evaluation.plots import plot_loss_curves
from ..processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer
from ..registry import get_architecture, is_registered
from ..training.collator import CxrMtClipDataCollator, undecoded_images
from ..training.hpo import (
    BEST_HP_NAME,
    HP_SEARCH_RANGES,
    OBJECTIVE_DEFINITION,
    best_hyperparameters_record,
    format_trial_table,
    save_trial_table,
    trial_table,
)
from ..training.trainer import CONFIG_OVERRIDE_KEYS, CxrMtClipTrainer, build_model, make_model_init
from ..training.training_args import CxrMtClipTrainingArguments
from ..utils import json_safe
from .train_args import DataArguments, ModelArguments, short_help_parser
from .train_checks import (
    TrainableParametersCallback,
    check_resume,
    check_splits,
    preflight_run,
    warn_about_launch,
    write_run_summary,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DataArguments",
    "ModelArguments",
    "TrainingRunResult",
    "last_complete_checkpoint",
    "load_training_data",
    "main",
    "parse_training_args",
    "run_training",
]

RESULT_FILES = ("train_results.json", "eval_results.json", "test_results.json", "all_results.json")
LOSS_CURVES_NAME = "loss_curves.png"


class _TrainingFlagParser(SuggestingParserMixin, HfArgumentParser):
    """transformers' dataclass parser with the CLI's behaviour: defaults once, one-line errors, flag suggestions,
    and no silent prefix matching (`--num_train_epoch` is named as a misspelling of `--num_train_epochs`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def parse_training_args(
    argv: Sequence[str] | None = None, *, prog: str = "cxr-mtclip train",
) -> tuple[ModelArguments, DataArguments, CxrMtClipTrainingArguments]:
    """Parse `examples/train.py` flags (or one .json file) into the three argument dataclasses.

    ``--help`` lists the model, data and main training flags (`short_help_parser`); ``--help-all`` every flag,
    transformers' `TrainingArguments` included. A misspelt flag is named with its closest match.

    Example:
        >>> m, d, t = parse_training_args(["--backbone", "tiny", "--phantoms", "64", "--output_dir", "out"])
        >>> m.backbone, d.phantoms
        ('tiny', 64)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        short_help_parser(prog).print_help()
        raise SystemExit(0)
    parser = _TrainingFlagParser((ModelArguments, DataArguments, CxrMtClipTrainingArguments), prog=prog,
                                 formatter_class=DefaultsOnceFormatter)
    if "--help-all" in argv:
        parser.print_help()
        raise SystemExit(0)
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=argv[0])
    else:
        model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return model_args, data_args, training_args


@dataclass
class TrainingRunResult:
    """What `run_training` produced: all metrics (as in all_results.json), HPO outcome and the files written."""

    output_dir: Path
    metrics: dict[str, float]
    best_hyperparameters: dict[str, float] | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    model_card_path: Path | None = None
    uploaded_files: list[str] | None = None


def _limit(dataset: Any, n: int | None) -> Any:
    if n is None or dataset is None:
        return dataset
    if n <= 0:
        raise ValueError(f"max_*_samples must be > 0, got {n}")
    return dataset.select(range(min(n, len(dataset))))


def load_training_data(data_args: DataArguments, *, seed: int, image_size: int = 224) -> Any:
    """The DatasetDict to train on: `--dataset` (folder or Hub id) or `--phantoms N` synthetic studies split by seed."""
    if data_args.dataset:
        path = Path(data_args.dataset).expanduser()
        if path.exists():
            if not (path / "dataset_dict.json").is_file():
                raise FileNotFoundError(f"{path}: not a DatasetDict folder (no dataset_dict.json; write it with save_to_disk)")
            splits = datasets.load_from_disk(str(path))
        else:
            check_dataset_source(data_args.dataset)  # a missing local folder is named as one, not as a Hub failure
            try:
                splits = datasets.load_dataset(data_args.dataset, data_args.dataset_config)
            except Exception as exc:
                raise FileNotFoundError(
                    f"--dataset {data_args.dataset}: no such local folder, and loading it as a Hub dataset id failed "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
                ) from exc
        if not isinstance(splits, datasets.DatasetDict):
            raise ValueError(f"{data_args.dataset}: expected a DatasetDict with splits, got {type(splits).__name__}")
    elif data_args.phantoms:
        from ..data import make_phantom_openi, split_openi

        studies = make_phantom_openi(data_args.phantoms, seed=seed, image_size=image_size, show_progress=True)
        splits = split_openi(studies, seed=seed, test_per_class=data_args.test_per_class, val_fraction=data_args.val_fraction)
    else:
        raise ValueError("no data: pass --dataset (DatasetDict folder or Hub id) or --phantoms N")
    if data_args.train_split not in splits:
        raise ValueError(f"{data_args.dataset or 'phantoms'}: no split {data_args.train_split!r} (splits: {list(splits)})")
    for column in (data_args.image_column, data_args.text_column, data_args.label_column):
        if column not in splits[data_args.train_split].column_names:
            raise ValueError(
                f"split {data_args.train_split!r} has no column {column!r} (columns: {splits[data_args.train_split].column_names})"
            )
    _check_labels(splits, data_args.label_column, data_args.dataset or "phantoms")
    return splits


def _check_labels(splits: Any, column: str, where: str) -> None:
    """Every split's label column is 0 (normal) / 1 (abnormal), and a ClassLabel names them in that order."""
    for name, split in splits.items():
        if column not in split.column_names:
            continue
        feature = split.features[column]
        if isinstance(feature, datasets.ClassLabel) and list(feature.names) != ["normal", "abnormal"]:
            raise ValueError(
                f"{where} [{name}]: column {column!r} has class names {feature.names}; expected "
                "['normal', 'abnormal'] (0 = normal, 1 = abnormal)"
            )
        unknown = sorted({value for value in split.unique(column) if value not in (0, 1)}, key=repr)
        if unknown:
            raise ValueError(
                f"{where} [{name}]: column {column!r} holds {unknown[:5]}; expected only 0 (normal) and 1 (abnormal)"
            )


def build_processor(model_args: ModelArguments, train_reports: Sequence[str], output_dir: Path,
                    training_args: TrainingArguments) -> CxrMtClipProcessor:
    """The processor of the model: a saved folder's, the backbone's, or (a randomly initialised architecture such as
    ``tiny``) the registry's preprocessing with a WordPiece tokenizer trained on the training reports."""
    if model_args.model_name_or_path is not None:
        if model_args.tokenizer:
            config = CxrMtClipConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
            return CxrMtClipProcessor.from_config(config, model_args.tokenizer)
        return CxrMtClipProcessor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    arch = get_architecture(model_args.backbone) if is_registered(model_args.backbone) else None
    if arch is not None and arch.pretrained is None:
        config = CxrMtClipConfig.from_registry(arch.name)
        if model_args.tokenizer:
            return CxrMtClipProcessor.from_config(config, model_args.tokenizer)
        folder = output_dir / "tokenizer"
        with training_args.main_process_first(desc=f"train a WordPiece tokenizer for the {arch.name} model"):
            if not (folder / "tokenizer_config.json").is_file():
                vocab = int(config.text_config_dict["vocab_size"])
                build_wordpiece_tokenizer(train_reports, folder, vocab_size=vocab)
        return CxrMtClipProcessor.from_config(config, folder)
    processor = CxrMtClipProcessor.from_backbone(arch.pretrained if arch is not None else model_args.backbone,
                                                 cache_dir=model_args.cache_dir)
    if model_args.tokenizer:
        from transformers import AutoTokenizer

        processor.tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer)
    return processor


def _image_size_for(model_args: ModelArguments) -> int:
    if model_args.model_name_or_path is not None:
        return CxrMtClipConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir).image_size
    if is_registered(model_args.backbone):
        return get_architecture(model_args.backbone).image_size
    return 224


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest `checkpoint-N` folder the Trainer finished writing (its trainer_state.json, written last, parses).

    A run killed while saving leaves a partial newest checkpoint; transformers' `get_last_checkpoint` would pick it.

    Example:
        >>> last_complete_checkpoint("runs/tiny")  # doctest: +SKIP
        PosixPath('runs/tiny/checkpoint-20')
    """
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not (step.isdigit() and path.is_dir()):
            continue
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append((int(step), path))
    return max(found)[1] if found else None


def _resume_value(value: str | None, output_dir: str | os.PathLike | None = None) -> str | bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("true", "last", "latest"):
        last = last_complete_checkpoint(output_dir) if output_dir is not None else None
        return str(last) if last is not None else True
    if value.lower() in ("false", "none", "no"):
        return None
    if not Path(value).is_dir():
        raise FileNotFoundError(f"{value}: --resume_from_checkpoint must be a checkpoint folder or 'last'")
    return value


def hyperparameter_summary(args: CxrMtClipTrainingArguments, config: CxrMtClipConfig) -> dict[str, Any]:
    """The optimiser, schedule, batch and loss settings of a run, as the model card's hyper-parameter table."""
    return {
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "learning_rate (backbone)": args.learning_rate,
        "head_learning_rate (classifier, logit scale)": args.head_learning_rate,
        "weight_decay": args.weight_decay,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps (<1: ratio)": args.warmup_steps,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "processes": args.world_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "global batch (negatives)": args.per_device_train_batch_size * args.world_size
        if config.gather_distributed
        else args.per_device_train_batch_size,
        "seed": args.seed,
        "bce_weight": config.bce_weight,
        "supcon_weight": config.supcon_weight,
        "clip_weight": config.clip_weight,
        "supcon_temperature": config.supcon_temperature,
        "dropout": config.dropout,
        "trainable_image_blocks": config.trainable_image_blocks,
        "trainable_text_blocks": config.trainable_text_blocks,
    }


def search_tie_note(trials: Sequence[Mapping[str, Any]]) -> str | None:
    """A note when every completed trial reached the same objective: the search could not tell the weights apart,
    and the "best" is the first trial by tie (a run too short to learn, or a validation split too small).

    Example:
        >>> search_tie_note([{"objective": 0.05}, {"objective": 0.05}]) is not None
        True
    """
    values = [t.get("objective") for t in trials if t.get("objective") is not None]
    if len(values) < 2 or max(values) - min(values) > 1e-12:
        return None
    return (f"note: all {len(values)} trials reached the same objective ({values[0]:.4f}): the search could not tell "
            "the loss weights apart, so the best trial is the first by tie; train longer (or with a learning rate "
            "the model learns at) or on a larger validation split for a search that means something")


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: CxrMtClipTrainingArguments
) -> TrainingRunResult:
    """Optional HPO, then train, evaluate (validation, test), save model + processor, results, loss curves, model card.

    Writes into `output_dir`: checkpoints, the final model and processor, `train/eval/test/all_results.json`,
    `trainer_state.json`, `loss_curves.png`, the model card `README.md`, and with HPO `hpo_trials.csv/json` and
    `best_hyperparameters.json`. With `--push_to_hub` the result is uploaded by
    :func:`cxr_mtclip.hub.push_to_hub` (the Trainer's own checkpoint pushes are disabled).

    Example:
        >>> run_training(*parse_training_args(["--backbone", "tiny", "--phantoms", "64", "--output_dir", "out",
        ...                                    "--num_train_epochs", "1"]))  # doctest: +SKIP
    """
    push = bool(training_args.push_to_hub)
    if push:
        training_args = dataclasses.replace(training_args, push_to_hub=False)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(
            f"launched as {launched} processes but TrainingArguments sees world_size={training_args.world_size}: "
            "on a machine without GPUs pass --use_cpu true so the processes join one gloo group"
        )
    preflight_run(model_args, data_args, training_args, push=push)  # before anything loads or is written
    warn_about_launch(training_args)
    if training_args.dataloader_pin_memory and not torch.cuda.is_available():  # torch warns on every DataLoader
        training_args = dataclasses.replace(training_args, dataloader_pin_memory=False)
    seed = training_args.seed
    set_seed(seed)
    output_dir = Path(training_args.output_dir)
    if training_args.overwrite_output_dir and not training_args.resume_from_checkpoint and training_args.process_index == 0:
        removed = clear_earlier_run(output_dir)
        if removed:
            logger.warning("--overwrite_output_dir: removed the earlier run's %s from %s", ", ".join(removed), output_dir)
    created = not output_dir.exists()
    try:
        return _run(model_args, data_args, training_args, output_dir, push, seed)
    except BaseException:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # a run that failed before writing anything leaves no empty folder behind
        raise


def _run(model_args: ModelArguments, data_args: DataArguments, training_args: CxrMtClipTrainingArguments,
         output_dir: Path, push: bool, seed: int) -> TrainingRunResult:
    """The body of `run_training` once the preflight checks passed."""
    from ..hub import push_to_hub
    from ..model_card import DataDescription, card_provenance, render_model_card, write_model_card

    output_dir.mkdir(parents=True, exist_ok=True)

    with training_args.main_process_first(desc="load the dataset"):
        splits = load_training_data(data_args, seed=seed, image_size=_image_size_for(model_args))
    train_dataset = _limit(splits[data_args.train_split], data_args.max_train_samples)
    eval_dataset = None
    if data_args.eval_split and data_args.eval_split in splits:
        eval_dataset = _limit(splits[data_args.eval_split], data_args.max_eval_samples)
    test_dataset = None
    if data_args.test_split and data_args.test_split in splits:
        test_dataset = _limit(splits[data_args.test_split], data_args.max_eval_samples)
    train_dataset, eval_dataset, test_dataset = (
        undecoded_images(ds, data_args.image_column) for ds in (train_dataset, eval_dataset, test_dataset)
    )
    train_dataset, eval_dataset, test_dataset, training_args = check_splits(
        train_dataset, eval_dataset, test_dataset, training_args, data_args)  # before the model is built

    processor = build_processor(model_args, train_dataset[data_args.text_column], output_dir, training_args)
    collator = CxrMtClipDataCollator(processor, data_args.image_column, data_args.text_column, data_args.label_column)
    overrides = model_args.config_overrides()
    source = dict(model_name_or_path=model_args.model_name_or_path, backbone=model_args.backbone,
                  cache_dir=model_args.cache_dir)
    resume = _resume_value(training_args.resume_from_checkpoint, output_dir)

    # -- hyper-parameter search ------------------------------------------------------------------
    best_hp: dict[str, float] | None = None
    trials: list[dict[str, Any]] = []
    best_file = output_dir / BEST_HP_NAME
    if training_args.hpo_trials > 0 and resume is not None and best_file.is_file():
        best_hp = json.loads(best_file.read_text())["hyperparameters"]
        logger.info("resuming: reusing the searched loss weights of %s", best_file)
    elif training_args.hpo_trials > 0:
        if eval_dataset is None:
            raise ValueError("--hpo_trials needs a validation split (the objective is validation accuracy@1)")
        hpo_args = dataclasses.replace(
            training_args,
            output_dir=str(output_dir / "hpo"),
            save_strategy="no",
            load_best_model_at_end=False,
            eval_strategy="epoch" if training_args.eval_strategy == "no" else training_args.eval_strategy,
            resume_from_checkpoint=None,
        )
        hpo_trainer = CxrMtClipTrainer(
            args=hpo_args,
            model_init=make_model_init(**source, **overrides),
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
        )
        _labelled_progress(hpo_trainer)
        best_run = hpo_trainer.hyperparameter_search(n_trials=training_args.hpo_trials)
        payload = [best_run.hyperparameters if best_run is not None else None]
        if training_args.world_size > 1:
            torch.distributed.broadcast_object_list(payload, src=0)
        best_hp = {k: v for k, v in payload[0].items() if k in CONFIG_OVERRIDE_KEYS}
        if hpo_trainer.is_world_process_zero():
            trials = trial_table(hpo_trainer.hp_study)
            save_trial_table(trials, output_dir)
            write_json(best_file, best_hyperparameters_record(best_run.objective, int(best_run.run_id), best_hp))
            print(f"Hyper-parameter search ({len(trials)} trials, objective = {OBJECTIVE_DEFINITION}):")
            print(format_trial_table(trials))
            print(f"Best trial {best_run.run_id}: objective {best_run.objective:.4f}, {best_hp}")
            tie = search_tie_note(trials)
            if tie:
                print(tie)
        del hpo_trainer
    if best_hp:
        overrides.update(best_hp)

    # -- final run ---------------------------------------------------------------------------------
    model = build_model(**source, seed=seed, **overrides)  # seeded as the Trainer seeds a search trial's model_init
    if data_args.feature_cache:
        from ..training.cached_model import prepare_cached_training

        with training_args.main_process_first(desc="frozen-trunk feature cache"):
            decoded = [None if ds is None else ds.cast_column(data_args.image_column, datasets.Image())
                       for ds in (train_dataset, eval_dataset)]
            cached = prepare_cached_training(
                model, processor, decoded[0], data_args.feature_cache, eval_dataset=decoded[1],
                rebuild_stale=True, image_column=data_args.image_column, text_column=data_args.text_column,
                label_column=data_args.label_column, batch_size=training_args.per_device_eval_batch_size,
            )
        trainer = CxrMtClipTrainer(
            model=cached.model, args=training_args, data_collator=cached.data_collator,
            train_dataset=cached.train_dataset, eval_dataset=cached.eval_dataset, processing_class=processor,
        )
    else:
        trainer = CxrMtClipTrainer(
            model=model,
            args=training_args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
        )
    check_resume(resume, trainer.model, training_args)  # a checkpoint that trained other parameters: named, not torch's error
    _labelled_progress(trainer)
    trainer.add_callback(TrainableParametersCallback(trainer.model))
    train_output = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output_dir))
    trainer.save_state()
    metrics: dict[str, float] = dict(train_output.metrics)
    eval_metrics: dict[str, float] = {}
    test_metrics: dict[str, float] = {}
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate(metric_key_prefix="eval")
    if test_dataset is not None:
        # the test split is never cached: evaluate it through the plain model (parameters shared with the trainer's)
        tester = trainer if not data_args.feature_cache else CxrMtClipTrainer(
            model=model, args=training_args, data_collator=collator, processing_class=processor)
        test_metrics = tester.evaluate(eval_dataset=test_dataset, metric_key_prefix="test")
    all_results = {**metrics, **eval_metrics, **test_metrics}
    all_results = json_safe(all_results, allow_nan=True)

    card_path = None
    uploaded = None
    if trainer.is_world_process_zero():
        for name, values in zip(RESULT_FILES, (metrics, eval_metrics, test_metrics, all_results)):
            if values:
                write_json(output_dir / name, values, allow_nan=True, sort_keys=True)
        if any("loss" in entry for entry in trainer.state.log_history):  # a run too short to log has no curve
            plot_loss_curves(trainer.state.log_history, output_dir / LOSS_CURVES_NAME,
                             data_note=data_note(train_dataset, "training data"))
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        data = DataDescription(
            provenance=card_provenance(splits),
            name=data_args.dataset or f"synthetic phantoms (make_phantom_openi, n={data_args.phantoms}, seed={seed})",
            hub_id=data_args.dataset if data_args.dataset and not Path(data_args.dataset).exists() else None,
            split_sizes={
                name: len(ds) for name, ds in (("train", train_dataset), ("validation", eval_dataset), ("test", test_dataset))
                if ds is not None
            },
        )
        hpo_info = None
        if best_hp:
            hpo_info = {"trials": training_args.hpo_trials, "best": best_hp,
                        "objective": OBJECTIVE_DEFINITION,
                        "ranges": HP_SEARCH_RANGES}
        card = render_model_card(
            all_results,
            config=unwrapped.config,
            hyperparameters=hyperparameter_summary(training_args, unwrapped.config),
            data=data,
            model_name=training_args.hub_model_id or output_dir.name,
            # where the card's usage snippet loads from: the Hub repo it is pushed to, else this folder
            repo_id=training_args.hub_model_id or (output_dir.name if push else str(output_dir)),
            hpo=hpo_info,
        )
        card_path = write_model_card(output_dir, card)
        if push:
            repo_id = training_args.hub_model_id or output_dir.name
            uploaded = push_to_hub(output_dir, repo_id, token=training_args.hub_token,
                                   private=training_args.hub_private_repo)
        write_run_summary(output_dir, all_results, data_note=data_note(train_dataset, "training data"),
                          files=("model.safetensors", "config.json", "processor_config.json", *RESULT_FILES,
                                 LOSS_CURVES_NAME, "README.md", "trainer_state.json"),
                          uploaded_to=(training_args.hub_model_id or output_dir.name) if push else None)
    trainer.accelerator.wait_for_everyone()
    return TrainingRunResult(
        output_dir=output_dir,
        metrics=all_results,
        best_hyperparameters=best_hp,
        trials=trials,
        model_card_path=card_path,
        uploaded_files=uploaded,
    )


def _labelled_progress(trainer: Any) -> None:
    """transformers' progress bars, labelled, with one line per log (`training.progress`)."""
    from transformers.trainer_callback import ProgressCallback

    from ..training.progress import LabelledProgressCallback

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LabelledProgressCallback())


def main(argv: Sequence[str] | None = None, *, prog: str = "cxr-mtclip train") -> int:
    """`cxr-mtclip train`: parse the flags of `examples/train.py`, call :func:`run_training`, return exit code 0."""
    run_training(*parse_training_args(argv, prog=prog))
