"""The `cxr-mtclip` command: build-dataset, train, embed, index, search, evaluate, demo, serve.

Every subcommand has ``--help`` (answered without loading torch: this module and the flag definitions it reads
import only the standard library), flags with help text and their default, and close-match suggestions for a
misspelt flag. Bad arguments, missing files and a failed check end with exit code 2 and one line naming the problem
and the fix; each subcommand checks its inputs before it loads a model or starts work. Warnings print once each,
as ``warning: <message>``, without Python's source line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Sequence

from .argparsing import CliParser

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


_Parser = CliParser  # the parser class of every subcommand (kept under its old name for callers)


def _existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such folder")
    return path


def _existing_path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such file or folder")
    return path


def _positive_int(value: str) -> int:
    """argparse type: `utils.positive_int` of the parsed integer, its error as argparse's."""
    from .utils import positive_int

    try:
        return positive_int(int(value), "the value")
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer") from err


# -- loaders shared by several commands ---------------------------------------------------------


def load_saved_model(model_dir: str | os.PathLike) -> tuple[Any, Any]:
    """`hub.load_model_and_processor` on a folder that must hold a saved model (CliError naming it otherwise)."""
    from .hub import load_model_and_processor

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise CliError(f"{folder}: not a saved cxr_mtclip model (no config.json)")
    return load_model_and_processor(folder)


def load_split(dataset_dir: str | os.PathLike, split: str | None) -> Any:
    """One split of a `save_to_disk` DatasetDict (or a saved Dataset)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(dataset_dir))
    except FileNotFoundError as err:
        raise CliError(f"{dataset_dir}: not a dataset saved with save_to_disk ({err})") from err
    if isinstance(data, DatasetDict):
        name = split or ("test" if "test" in data else next(iter(data)))
        if name not in data:
            raise CliError(f"{dataset_dir}: no split {name!r}; has {sorted(data)}")
        return data[name]
    if not isinstance(data, Dataset):
        raise CliError(f"{dataset_dir}: expected a Dataset or DatasetDict saved with save_to_disk, got {type(data).__name__}")
    # a single saved Dataset has no splits; it is accepted as the requested one
    return data


# -- subcommands ----------------------------------------------------------------------------------


def cmd_build_dataset(args: argparse.Namespace) -> int:
    """`cxr-mtclip build-dataset` (and dataset_scripts/build_openi.py): OpenI or phantoms -> a saved DatasetDict."""
    from .preflight import check_hub_push

    if args.source is None and not args.phantoms:
        raise CliError("give a SOURCE folder/tarball (NLM, Kaggle or ../shared/openi layout) or --phantoms N")
    if Path(args.out).exists() and not args.overwrite:
        raise CliError(f"{args.out}: already exists (pass --overwrite to replace it, or choose another --out)")
    if not 0 < args.val_fraction < 1:
        raise CliError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.push_to_hub:
        check_hub_push(args.push_to_hub, repo_type="dataset", flag="--push-to-hub")  # before the (long) build
    with _quiet_progress(args.quiet):
        if args.phantoms:
            from .data import load_openi_reports, make_phantom_openi, phantom_dataset_card, save_dataset, split_openi

            reports = (load_openi_reports(args.source, drop_no_indexing=args.drop_no_indexing)
                       if args.source is not None else None)
            rows = make_phantom_openi(args.phantoms, seed=args.seed, reports=reports, show_progress=not args.quiet)
            splits = split_openi(rows, seed=args.seed, test_per_class=args.test_per_class,
                                 val_fraction=args.val_fraction)
            card = phantom_dataset_card(splits, seed=args.seed, real_reports=str(args.source) if reports else None)
            save_dataset(splits, args.out, card, output_format=args.format, overwrite=True, show_progress=False)
            print(f"{sum(len(split) for split in splits.values())} SYNTHETIC phantom studies (procedural images, "
                  f"not X-rays; seed {args.seed})")
            _print_split_table({name: _label_counts(split) for name, split in splits.items()})
            card_path = Path(args.out) / "README.md"
        else:
            from .data import build_openi_dataset

            result = build_openi_dataset(
                args.source, args.out, reports_only=args.reports_only, strict=args.strict,
                drop_no_indexing=args.drop_no_indexing, seed=args.seed,
                test_per_class=args.test_per_class, val_fraction=args.val_fraction, output_format=args.format,
                overwrite=args.overwrite, cache_dir=args.cache_dir, show_progress=not args.quiet,
            )
            splits, card_path = result.dataset, result.card_path
            print("\n".join(format_build_summary(result.summary)))
    print(f"saved to {args.out} ({args.format}; dataset card: {card_path})")
    if args.push_to_hub:
        from .data import push_openi_to_hub

        push_openi_to_hub(splits, args.push_to_hub, private=not args.public)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


def _label_counts(split: Any) -> dict[str, int]:
    labels = split["label"] if "label" in split.column_names else []
    return {"normal": sum(1 for x in labels if x == 0), "abnormal": sum(1 for x in labels if x == 1)}


def _print_split_table(counts: dict[str, dict[str, int]]) -> None:
    print("\n".join(_split_table(counts)))
    for name, values in counts.items():
        if sum(values.values()) == 0:
            print(f"warning: the {name} split is empty" + (
                " (`cxr-mtclip train` turns evaluation off without a validation split)" if name == "validation" else ""))


def _split_table(counts: dict[str, dict[str, int]]) -> list[str]:
    labels = list(dict.fromkeys(label for values in counts.values() for label in values))
    lines = [f"{'split':<12}{'studies':>8}" + "".join(f"{label:>{max(9, len(label) + 1)}}" for label in labels)]
    for name, values in counts.items():
        lines.append(f"{name:<12}{sum(values.values()):>8}"
                     + "".join(f"{values.get(label, 0):>{max(9, len(label) + 1)}}" for label in labels))
    return lines


def format_build_summary(summary: Any) -> list[str]:
    """The lines `build-dataset` prints for an `OpenISummary`: the summary's own `format()` (every count it holds:
    kept of seen, dropped per reason, labels, views, No Indexing and findings, split sizes per label, one example
    per drop reason), then a warning for each empty split."""
    lines = summary.format().splitlines()
    lines += [f"warning: the {name} split is empty" + (" (`cxr-mtclip train` turns evaluation off without a "
              "validation split)" if name == "validation" else "")
              for name, values in (summary.splits or {}).items() if not sum(values.values())]
    return lines


def _register_auto_classes() -> None:
    """The Auto-class registration that importing the package does outside the CLI (see `cxr_mtclip/__init__`)."""
    import cxr_mtclip

    cxr_mtclip.register_auto_classes()


def _help_requested(argv: Sequence[str]) -> bool:
    return any(token in ("-h", "--help") for token in argv[: argv.index("--") if "--" in argv else len(argv)])


def cmd_train(args: argparse.Namespace) -> int:
    """`cxr-mtclip train`: the flags of examples/train.py; ``--help`` without loading torch, checks before work."""
    from .recipes.train_args import preflight, short_help_parser

    if _help_requested(args.rest):
        short_help_parser("cxr-mtclip train").print_help()
        return 0
    if "--help-all" not in args.rest:
        preflight(args.rest)  # data source, output folder, Hub access: seconds, not after the training
    _register_auto_classes()
    from .recipes.train import main as train_main

    return int(train_main(args.rest) or 0)


def cmd_embed(args: argparse.Namespace) -> int:
    from .atomic import atomic_directory
    from .data.schema import data_note
    from .retrieval import embed_dataset

    model, processor = load_saved_model(args.model)
    split = load_split(args.dataset, args.split)
    embedded = embed_dataset(model, processor, split, batch_size=args.batch_size)
    with atomic_directory(args.out) as tmp:
        embedded.save_to_disk(str(tmp))
    print(f"embedded {len(embedded)} rows of {args.dataset} [{args.split or 'default'}] -> {args.out} ({data_note(embedded)})")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from datasets import load_from_disk

    from .retrieval import build_index, embedding_model_fingerprint, rows_with_embeddings, save_faiss_index

    embedded = load_from_disk(str(args.dataset))
    if args.column not in embedded.column_names:
        raise CliError(f"{args.dataset}: no column {args.column!r}; run `cxr-mtclip embed` first")
    embedded = rows_with_embeddings(embedded, args.column)
    build_index(embedded, args.column, args.kind)
    fingerprint = embedding_model_fingerprint(embedded)
    save_faiss_index(embedded, args.column, args.out, fingerprint=fingerprint)
    print(f"{args.kind} index on {args.column} ({len(embedded)} rows) -> {args.out}")
    return 0


def _retriever(model_dir: Path, dataset_dir: Path, split: str | None, kind: str = "flat") -> Any:
    from .retrieval import RetrievalIndex

    model, processor = load_saved_model(model_dir)
    return RetrievalIndex.build(model, processor, load_split(dataset_dir, split), kind=kind)


def _hits(scores: Any, examples: dict[str, list[Any]]) -> list[dict[str, Any]]:
    labels = ["normal", "abnormal"]
    out = []
    for i, score in enumerate(scores):
        label = examples["label"][i]
        out.append({
            "rank": i + 1,
            "uid": str(examples["uid"][i]),
            "label": labels[label] if isinstance(label, int) else str(label),
            "score": round(float(score), 6),
            "source": examples.get("source", ["?"] * len(scores))[i],
            "report": examples["report"][i],
        })
    return out


def open_query_image(path: str | os.PathLike) -> Any:
    """A query image through `open_image` (the opener every path shares); CliError naming the file otherwise."""
    from .data.images import open_image

    try:
        return open_image(path)
    except ValueError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise CliError(f"{path}: not a readable image; expected PNG, JPEG, DICOM or another format PIL reads "
                       f"({reason})") from err


def cmd_search(args: argparse.Namespace) -> int:
    from .data.schema import data_note

    if (args.image is None) == (args.text is None):
        raise CliError("give exactly one of --image PATH or --text REPORT")
    retriever = _retriever(args.model, args.dataset, args.split)
    if args.image is not None:
        if not args.image.is_file():
            raise CliError(f"{args.image}: no such file")
        image = open_query_image(args.image)
        scores, examples = retriever.search_by_image(image, k=args.k, mode=args.mode)
    else:
        scores, examples = retriever.search_by_text(args.text, k=args.k, mode=args.mode)
    hits = _hits(scores, examples)
    note = data_note(retriever.dataset)
    if args.json:
        print(json.dumps({"data": note, "mode": args.mode, "results": hits}, indent=2))
    else:
        print(f"# {note}; mode: {args.mode}")
        print(f"{'rank':>4}  {'uid':>8}  {'label':<9} {'score':>8}  report")
        for hit in hits:
            report = hit["report"] if len(hit["report"]) <= 90 else hit["report"][:87] + "..."
            print(f"{hit['rank']:>4}  {hit['uid']:>8}  {hit['label']:<9} {hit['score']:>8.4f}  {report}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`cxr-mtclip evaluate`: the flags of examples/evaluate.py (parsed here first, so --help and errors are quick)."""
    from .evaluation.evaluate_args import build_parser as evaluate_parser

    parsed = evaluate_parser().parse_args(args.rest)  # --help, unknown or missing flags: answered before any import
    for spec in parsed.model:
        _, _, value = spec.partition("=")
        if value and (os.sep in value or value.startswith(".")) and not value.startswith("hf-hub:") \
                and not Path(value).exists():
            raise CliError(f"--model {spec}: {value}: no such model folder")
    if not Path(parsed.dataset).is_dir():
        raise CliError(f"--dataset {parsed.dataset}: no such folder; build one with `cxr-mtclip build-dataset`")
    _register_auto_classes()
    from .evaluation.evaluate import main as evaluate_main

    return int(evaluate_main(args.rest) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    """`cxr-mtclip demo`: the whole pipeline offline; exit 0 when the fine-tuned model beats the untrained one."""
    from .recipes.demo import check_demo_size

    check_demo_size(args.n_studies, args.epochs)  # a size too small to pass is refused before any work
    _register_auto_classes()
    from .recipes.demo import run_demo

    result = run_demo(
        output_dir=args.output_dir, openi=args.openi, n_studies=args.n_studies, epochs=args.epochs, seed=args.seed,
        threads=args.threads,
    )
    return 0 if result.passed else 1  # the demo's own check: fine-tuned beats untrained on Accuracy@5 both ways


def cmd_serve(args: argparse.Namespace) -> int:
    from .data.schema import data_note
    from .retrieval.serve import SearchHit, make_server, thumbnail_png

    retriever = _retriever(args.model, args.dataset, args.split)
    note = data_note(retriever.dataset)

    def to_hits(result: Any) -> list[SearchHit]:
        scores, examples = result
        hits = []
        for row in _hits(scores, examples):
            index = row["rank"] - 1
            image = examples["image"][index] if "image" in examples else None
            hits.append(SearchHit(row["uid"], row["label"], row["score"], row["report"], thumbnail_png(image), row["source"]))
        return hits

    server = make_server(
        lambda image, k, mode: to_hits(retriever.search_by_image(image, k=k, mode=mode)),
        lambda text, k, mode: to_hits(retriever.search_by_text(text, k=k, mode=mode)),
        data_note=note, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
    )
    print(f"serving {len(retriever.dataset)} studies at {server.url} ({note}); Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# -- parser ---------------------------------------------------------------------------------------


def _version() -> str:
    from . import __version__

    return f"cxr-mtclip {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The `cxr-mtclip` parser: one subparser per subcommand, each with ``prog`` "cxr-mtclip <subcommand>"."""
    parser = CliParser(
        prog="cxr-mtclip", usage="cxr-mtclip <subcommand> [flags]", description=__doc__.splitlines()[0],
        epilog="`cxr-mtclip <subcommand> --help` lists the flags of a subcommand.",
    )
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CliParser, metavar="<subcommand>",
                                title="subcommands")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, prog=f"cxr-mtclip {name}", help=help_text, description=help_text, **kwargs)
        p.set_defaults(func=func)
        return p

    p = add("build-dataset", cmd_build_dataset,
            "Build the OpenI DatasetDict (NLM tarballs, Kaggle layout, ../shared/openi) or synthetic phantoms; "
            "prints what it kept and dropped.")
    p.add_argument("source", nargs="?", type=_existing_path,
                   help="OpenI source: NLM tarballs or folders, a Kaggle folder, or ../shared/openi (with --phantoms: "
                   "real reports for the phantoms)")
    p.add_argument("--out", required=True, type=Path, help="output folder, written atomically (save_to_disk layout)")
    p.add_argument("--reports-only", action="store_true", help="keep studies with report text but no image")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input instead of counting a skip")
    p.add_argument("--drop-no-indexing", action="store_true",
                   help="drop the 'No Indexing' studies (default: keep them, labelled abnormal as in the paper)")
    p.add_argument("--phantoms", type=_positive_int, default=None, metavar="N",
                   help="build N synthetic phantom studies instead of OpenI")
    p.add_argument("--seed", type=int, default=42, help="seed of the split (and of the phantoms)")
    p.add_argument("--test-per-class", type=_positive_int, default=200, help="test studies per label (paper: 200)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share of the non-test studies")
    p.add_argument("--format", choices=("arrow", "parquet"), default="arrow",
                   help="save_to_disk (load_from_disk) or parquet shards (load_dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--push-to-hub", metavar="REPO", default=None,
                   help="also push to this Hub dataset repo (Hub access is checked before the build)")
    p.add_argument("--public", action="store_true", help="make the pushed repo public (default: private)")
    p.add_argument("--cache-dir", default=None, help="datasets cache folder (default: the HF datasets cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    add("train", cmd_train, "Fine-tune with the composite loss (the flags of examples/train.py).", add_help=False) \
        .add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    p = add("embed", cmd_embed, "Add image/text/fused embedding columns to a dataset split.")
    p.add_argument("--model", required=True, type=_existing_dir, help="saved model folder (with its processor)")
    p.add_argument("--dataset", required=True, type=_existing_dir, help="DatasetDict folder from build-dataset")
    p.add_argument("--split", default=None, help="split to embed (default: test, else the first)")
    p.add_argument("--out", required=True, type=Path, help="output folder for the embedded split (save_to_disk)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="embedding batch size")

    p = add("index", cmd_index, "Build and save a FAISS index on an embedded dataset's column.")
    p.add_argument("--dataset", required=True, type=_existing_dir, help="output of `cxr-mtclip embed`")
    p.add_argument("--column", default="fused_embeds", choices=["fused_embeds", "image_embeds", "text_embeds"],
                   help="embedding column to index")
    p.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"], help="FAISS index type")
    p.add_argument("--out", required=True, type=Path, help="index file (a .json sidecar is written beside it)")

    p = add("search", cmd_search, "Top-k studies for an X-ray image or a report.")
    p.add_argument("--model", required=True, type=_existing_dir, help="saved model folder (with its processor)")
    p.add_argument("--dataset", required=True, type=_existing_dir, help="DatasetDict folder to search")
    p.add_argument("--split", default=None, help="split to search (default: test, else the first)")
    p.add_argument("--image", type=Path, help="query image: PNG, JPEG or DICOM")
    p.add_argument("--text", help="query report text")
    p.add_argument("--mode", default="paper", choices=["paper", "cross-modal"],
                   help="query against the fused index (paper) or the other modality's")
    p.add_argument("-k", type=_positive_int, default=5, help="number of results")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    add("evaluate", cmd_evaluate, "Embed, index and compute every metric for each model (the flags of "
        "examples/evaluate.py).", add_help=False).add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    p = add("demo", cmd_demo, "The whole pipeline offline on phantom data: train, index, search, compare with the "
            "untrained model; tables in OUTPUT_DIR/results.md.")
    p.add_argument("--output-dir", type=Path, default=Path("demo_output"), help="where tables, plots and the model go")
    p.add_argument("--openi", type=_existing_dir, default=None, help="pair phantoms with real OpenI reports from this folder")
    p.add_argument("--n-studies", type=_positive_int, default=None,
                   help="phantom studies before the split, 200 or more (default: 1200)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="training epochs (default: 60, more for a small --n-studies: at least 300 optimiser steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the model")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (one is fastest for the demo's tiny model on a shared CPU)")

    p = add("serve", cmd_serve, "A search web page over a saved model and dataset (binds 127.0.0.1).")
    p.add_argument("--model", required=True, type=_existing_dir, help="saved model folder (with its processor)")
    p.add_argument("--dataset", required=True, type=_existing_dir, help="DatasetDict folder to search")
    p.add_argument("--split", default=None, help="split to search (default: test, else the first)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload, in MB")
    return parser


_PASSTHROUGH: dict[str, Callable[[argparse.Namespace], int]] = {"train": cmd_train, "evaluate": cmd_evaluate}


@contextlib.contextmanager
def _quiet_progress(quiet: bool) -> Iterator[None]:
    """No `datasets` progress bars within the block when `quiet`. Without importing datasets when it is not loaded
    yet (``--help`` must not wait for it): its switch is then the environment variable it reads at import."""
    if not quiet:
        yield
        return
    if "datasets" not in sys.modules:
        previous = os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS")
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
            else:
                os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = previous
        return
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _cli_warnings() -> Iterator[None]:
    """Within the block each warning text is printed once, as ``warning: <message>`` (no source line); library
    deprecation notices are dropped. When warnings are being recorded (pytest, `catch_warnings(record=True)`), they
    are left to the recorder. Restored afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        recording = getattr(getattr(warnings, "_showwarnmsg_impl", None), "__name__", "") == "append"
        if warnings.showwarning is getattr(warnings, "_showwarning_orig", None) and not recording:
            seen: set[str] = set()

            def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
                text = " ".join(str(message).split())
                if text not in seen:
                    seen.add(text)
                    print(f"warning: {text}", file=sys.stderr, flush=True)

            warnings.showwarning = show  # type: ignore[assignment]
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cxr-mtclip` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH:
        # train/evaluate own their flags (HfArgumentParser / argparse), --help included.
        args = argparse.Namespace(command=argv[0], func=_PASSTHROUGH[argv[0]], rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        # datasets' own bars (unlabelled "0/1 it" while FAISS adds vectors, "Flattening the indices") say nothing
        # outside a build; the package's bars (embedding, training, rendering phantoms) are labelled and stay
        with _cli_warnings(), _quiet_progress(args.command != "build-dataset"):
            if args.command not in ("build-dataset", "demo", *_PASSTHROUGH):  # these register after their checks
                _register_auto_classes()
            return int(args.func(args) or 0)
    except SystemExit as exit_:
        # argparse inside a passed-through command: keep its code, 2 for usage errors
        return int(exit_.code or 0) if isinstance(exit_.code, int) else EXIT_USAGE
    except (CliError, FileNotFoundError, FileExistsError, ValueError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"cxr-mtclip {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
