"""The `cxr-mtclip` command: build-dataset, train, embed, index, search, evaluate, demo, serve.

Every subcommand has ``--help`` (answered without loading torch: this module and the flag definitions it reads
import only the standard library), flags with help text and their default, and close-match suggestions for a
misspelt flag. Bad arguments, missing files and a failed check end with exit code 2 and one line naming the problem
and the fix; each subcommand checks its inputs before it loads a model or starts work. Warnings print once each,
as ``warning: <message>``, without Python's source line.

Why one module: every subcommand's flags and its thin body (checks, then one call into the library) sit together,
so ``--help`` reads one light file and a reader finds a command's flags beside what they do; the work itself lives
in data/, recipes/, retrieval/ and evaluation/.
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
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


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


_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _file_size(value: str) -> str:
    """argparse type of --max-file-size: digits and a unit as gradio's ``max_file_size`` reads them (10mb, 500kb);
    refused here, before the index or the model loads, rather than by gradio after."""
    text = value.replace(" ", "")
    digits = len(text) - len(text.lstrip("0123456789"))
    if not digits or text[digits:].upper() not in _SIZE_UNITS or int(text[:digits]) == 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a file size; give a whole number and a unit: b, kb, mb, gb or tb (e.g. 10mb, 500kb)")
    return text


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
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise CliError(f"{folder}: not a saved cxr_mtclip model (no config.json)")
    _register_auto_classes()
    from .hub import load_model_and_processor

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
            from .data import (load_openi_reports, make_phantom_openi, phantom_dataset_card, save_dataset,
                               split_label_counts, split_openi)

            reports = (load_openi_reports(args.source, drop_no_indexing=args.drop_no_indexing)
                       if args.source is not None else None)
            rows = make_phantom_openi(args.phantoms, seed=args.seed, reports=reports, show_progress=not args.quiet)
            splits = split_openi(rows, seed=args.seed, test_per_class=args.test_per_class,
                                 val_fraction=args.val_fraction)
            card = phantom_dataset_card(splits, seed=args.seed, real_reports=str(args.source) if reports else None)
            save_dataset(splits, args.out, card, output_format=args.format, overwrite=True, show_progress=False)
            print(f"{sum(len(split) for split in splits.values())} SYNTHETIC phantom studies (procedural images, "
                  f"not X-rays; seed {args.seed})")
            _print_split_table(split_label_counts(splits))
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
    # a warning the command already printed when it was raised (`_cli_warnings`) is not printed again
    lines = [line for line in summary.format().splitlines()
             if not (line.startswith("warning: ") and " ".join(line.removeprefix("warning: ").split()) in _SHOWN_WARNINGS)]
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

    prog = getattr(args, "prog", None) or "cxr-mtclip train"
    if _help_requested(args.rest):
        short_help_parser(prog).print_help()
        return 0
    if "--help-all" not in args.rest:
        preflight(args.rest)  # data source, output folder, Hub access: seconds, not after the training
    _register_auto_classes()
    from .recipes.train import main as train_main

    return int(train_main(args.rest, prog=prog) or 0)


def cmd_embed(args: argparse.Namespace) -> int:
    from .atomic import atomic_directory
    from .data.schema import data_note
    from .retrieval import embed_dataset

    split = load_split(args.dataset, args.split)  # a wrong folder or split is named before the model loads
    model, processor = load_saved_model(args.model)
    embedded = embed_dataset(model, processor, split, batch_size=args.batch_size)
    with atomic_directory(args.out) as tmp:
        embedded.save_to_disk(str(tmp))
    print(f"embedded {len(embedded)} rows of {args.dataset} [{args.split or 'default'}] -> {args.out} ({data_note(embedded)})")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from .retrieval import RetrievalIndex

    if (args.dataset is None) == (args.images is None):
        raise CliError("give exactly one of --dataset SAVED_DATASET or --images ARCHIVE_FOLDER")
    if args.out.exists() and not args.overwrite:
        raise CliError(f"{args.out}: already exists (pass --overwrite to replace it)")
    if args.model is None and args.images is not None:
        raise CliError("--images needs --model MODEL to embed the archive")
    check_model_name(args.model)
    skipped: list[Any] = []
    note = None
    if args.images is not None:
        from .data.archive import load_archive

        archive = load_archive(args.images, strict=args.strict)
        dataset, skipped = archive.dataset, archive.skipped
        note = f"gallery: {len(dataset)} studies from the image archive {args.images.resolve().name}/ (provenance: your files)"
        print(archive.summary())
    else:
        dataset = load_split(args.dataset, args.split)
    model = processor = None
    if args.model is not None:  # after the data is read: a bad folder is named before the model loads
        model, processor = _load_model(args.model)
    index = RetrievalIndex.build(
        model, processor, dataset, kind=args.kind, index_columns=args.columns, store_images=not args.no_images,
        batch_size=args.batch_size, model_id=_model_id(args.model), data_note=note,
    )
    index.save(args.out, overwrite=args.overwrite)
    for item in skipped[:_SHOW_SKIPPED]:
        print(f"skipped {item.path}: {item.reason}: {item.detail}")
    if len(skipped) > _SHOW_SKIPPED:
        print(f"... and {len(skipped) - _SHOW_SKIPPED} more skipped files")
    kinds = ", ".join(f"{name} ({meta['kind']}, {meta['num_vectors']} vectors)" for name, meta in index.manifest.indexes.items())
    print(f"index folder {args.out}: {len(index.rows)} rows; indexes: {kinds}; {index.manifest.data_note}")
    names = index.index_names
    if "image_embeds" in names and "text_embeds" not in names:
        print("note: no study has a report, so there are no reports to find: a report query finds X-rays, and an "
              "image query finds similar X-rays with `search --mode similar-images` (or 'Find similar X-rays' in "
              "the app)")
    elif "text_embeds" in names and "image_embeds" not in names:
        print("note: no study has an image, so only image queries (finding reports) work on this index")
    return 0


_SHOW_SKIPPED = 50


def _model_id(model: str | None) -> str | None:
    """How the manifest names the model: a folder as its absolute path (so any working directory can load it)."""
    if model is None:
        return None
    return str(Path(model).resolve()) if Path(model).is_dir() else str(model)


def check_model_name(model: str | os.PathLike | None) -> None:
    """Without loading anything: `model` is not a path that does not exist (a misspelt folder is named as one)."""
    from .preflight import looks_local

    name = str(model) if model is not None else ""
    if (name and not Path(name).exists() and not name.startswith("hf-hub:")
            and ("/" in name or name.startswith((".", "~"))) and looks_local(name)):
        raise CliError(f"--model {model}: no such folder; give a saved model folder (from `cxr-mtclip train`), a "
                       "registered architecture name or a Hub id")


def _load_model(model: str | os.PathLike) -> tuple[Any, Any]:
    """A saved model folder, or a registered architecture / Hub id through `hub.load_model_and_processor`."""
    if Path(model).is_dir():
        return load_saved_model(model)
    check_model_name(model)
    _register_auto_classes()
    from .hub import load_model_and_processor

    try:
        return load_model_and_processor(str(model))
    except OSError as err:
        raise CliError(f"{model}: not a model folder, registered name or reachable Hub id ({str(err).splitlines()[0]})") from err


def _open_index(folder: Path, model: str | None, filters: dict[str, Any] | None = None) -> Any:
    """`RetrievalIndex.load` with the given model, or the one the manifest names; nothing is re-embedded.

    The folder (manifest, rows, index files) and the `filters` are checked before the model loads."""
    if not (folder / "manifest.json").is_file():  # = retrieval.store.MANIFEST_NAME; checked before any heavy import
        if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():
            raise CliError(f"{folder}: a dataset folder, not an index folder (no manifest.json); make an index folder "
                           f"from it with `cxr-mtclip index --dataset {folder} --model MODEL --out FOLDER`")
        raise CliError(f"{folder}: not an index folder (no manifest.json); write one with `cxr-mtclip index`")
    from .retrieval import RetrievalIndex
    from .retrieval.filters import filter_mask

    index = RetrievalIndex.load(folder)  # FileNotFoundError / ValueError naming the folder: not an index folder
    filter_mask(index.rows, filters)  # ValueError naming an unknown column or value
    model = model or index.manifest.model_id
    if not model:
        raise CliError(f"{folder}: the manifest names no model; pass --model MODEL")
    loaded_model, processor = _load_model(model)
    return index.with_model(loaded_model, processor)


def _parse_filters(items: Sequence[str] | None) -> dict[str, Any]:
    """``COLUMN=VALUE`` flags -> a filters mapping; a column given twice matches any of its values."""
    filters: dict[str, list[str]] = {}
    for item in items or []:
        column, sep, value = item.partition("=")
        if not sep or not column.strip() or not value.strip():
            raise CliError(f"--filter {item!r}: expected COLUMN=VALUE, e.g. --filter label=abnormal")
        filters.setdefault(column.strip(), []).append(value.strip())
    return {column: values[0] if len(values) == 1 else values for column, values in filters.items()}


def cmd_search(args: argparse.Namespace) -> int:
    if args.image is None and args.text is None:
        raise CliError("give --image PATH, --text REPORT, or both")
    if args.image is not None and not args.image.is_file():
        raise CliError(f"{args.image}: no such file")
    if args.image is not None:  # an unreadable image is named before the index and the model load
        from .data.images import open_image

        try:
            open_image(args.image)
        except ValueError as err:
            raise CliError(f"{err}; --image takes a PNG, JPEG or DICOM file") from None
    filters = _parse_filters(args.filter)
    index = _open_index(args.index, args.model, filters)
    mode, index_name = args.mode, None
    if mode == "similar-images":  # an X-ray against the gallery's X-rays (an archive indexed without reports)
        if args.image is None or args.text is not None:
            raise CliError("--mode similar-images takes --image only (it finds the X-rays closest to it)")
        mode, index_name = "cross-modal", "image_embeds"
    results = index.search(image=args.image, text=args.text, k=args.k, mode=mode, filters=filters,
                           with_images=False, index_name=index_name)
    note = index.manifest.data_note
    if args.json:
        # the app's JSON (retrieval/app.py), plus the folder and what the score is
        print(json.dumps({
            "mode": results.mode, "protocol": results.mode, "query": results.query, "index": results.index_name,
            "k": args.k, "filters": filters, "truncated": results.truncated, "data": note,
            "index_folder": str(args.index), "score": "cosine similarity (-1..1)", "hits": results.records,
        }, indent=2))
        return 0
    print(f"# {note}; protocol: {results.mode} ({results.query} query vs {results.index_name}); "
          "score = cosine similarity")
    if results.truncated:
        print(f"# the report has {results.query_tokens} tokens; the model read only the first {results.max_tokens}")
    uids = [str(hit.get("uid", hit["row"])) for hit in results.records]
    width = max([12, *map(len, uids)])  # long archive uids keep the columns aligned
    print(f"{'rank':>4}  {'uid':<{width}}  {'label':<9} {'score':>8}  report")
    for hit, uid in zip(results.records, uids):
        report = str(hit.get("report") or "(no report)")
        report = report if len(report) <= 90 else report[:87] + "..."
        label = "-" if hit.get("label") is None else str(hit["label"])
        print(f"{hit['rank']:>4}  {uid:<{width}}  {label:<9} {hit['score']:>8.4f}  {report}")
    if len(results) < args.k:
        print(f"# only {len(results)} {'row matches' if len(results) == 1 else 'rows match'}"
              + (f" the filters {filters}" if filters else ""))
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

    check_demo_size(args.n_studies, args.epochs, openi=args.openi is not None)  # too small to pass: refused first
    _register_auto_classes()
    from .recipes.demo import run_demo

    result = run_demo(
        output_dir=args.output_dir, openi=args.openi, n_studies=args.n_studies, epochs=args.epochs, seed=args.seed,
        threads=args.threads,
    )
    return 0 if result.passed else 1  # the demo's own check: fine-tuned beats untrained on Accuracy@5 both ways


def check_port(host: str, port: int) -> None:
    """CliError (one line) unless `host:port` can be listened on; standard library only, so it runs before gradio,
    the model or the index is loaded."""
    import errno
    import socket

    if not 0 < port < 65536:
        raise CliError(f"--port {port} is not a TCP port (1-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise CliError(f"--host {host!r} is not an address of this machine ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "busy"
        try:
            probe.bind(address)
        except OSError as err:
            why = "already in use (another server? pass --port N)" if err.errno == errno.EADDRINUSE else err.strerror
            raise CliError(f"cannot listen on {host}:{port}: {why}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    check_port(args.host, args.port)  # before the app, the model or the index is loaded
    index = _open_index(args.index, args.model)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # the app's access log
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    logging.getLogger("faiss").setLevel(logging.WARNING)  # "could not load library with AVX512 support": normal
    from .retrieval.app import build_demo, launch_kwargs

    demo = build_demo(index)
    try:
        demo.launch(**launch_kwargs(host=args.host, port=args.port, max_file_size=args.max_file_size),
                    prevent_thread_lock=True)
    except (OSError, OverflowError) as err:  # the port was taken while the index loaded
        raise CliError(f"cannot listen on {args.host}:{args.port}: {str(err).splitlines()[0]}") from None
    print(f"serving {len(index.rows)} studies at {demo.local_url} ({index.manifest.data_note}); Ctrl-C to stop",
          flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
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

    p = add("index", cmd_index, "Write an index folder (gallery rows, one FAISS index per embedding, manifest) once, "
            "from a saved dataset or a folder of PNG/JPEG/DICOM images; `search` and `serve` read it.")
    p.add_argument("--dataset", type=_existing_dir, help="a dataset saved with save_to_disk (raw, or `cxr-mtclip embed` output)")
    p.add_argument("--split", default=None, help="--dataset: the split to index (default: test, else the first)")
    p.add_argument("--images", type=_existing_dir,
                   help="an image archive: PNG/JPEG/DICOM files, optional metadata.csv/.jsonl (file_name, report, label, ...)")
    p.add_argument("--model", default=None,
                   help="saved model folder (or registered name / Hub id); optional when --dataset already holds embeddings")
    p.add_argument("--out", required=True, type=Path, help="the index folder to write")
    p.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"],
                   help="FAISS index type: exact, or approximate for large galleries")
    p.add_argument("--columns", nargs="+", default=["image_embeds", "text_embeds", "fused_embeds"],
                   choices=["image_embeds", "text_embeds", "fused_embeds"], help="embedding columns to index")
    p.add_argument("--no-images", action="store_true", help="leave the images out of the folder (no thumbnails)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="embedding batch size")
    p.add_argument("--strict", action="store_true", help="--images: stop at the first file that would be skipped")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index folder")

    p = add("search", cmd_search, "Top-k studies for an X-ray image, a report, or both, from an index folder.")
    p.add_argument("--index", required=True, type=_existing_dir, help="an index folder written by `cxr-mtclip index`")
    p.add_argument("--model", default=None, help="the model the index was built with (default: the one its manifest names)")
    p.add_argument("--image", type=Path, help="PNG, JPEG or DICOM file")
    p.add_argument("--text", help="a report")
    p.add_argument("--mode", default="cross-modal", choices=["cross-modal", "paper", "similar-images"],
                   help="cross-modal (default): image -> reports, report -> images; paper: against whole studies; "
                        "similar-images: image -> the closest X-rays (works without reports)")
    p.add_argument("-k", type=_positive_int, default=5, help="number of results")
    p.add_argument("--filter", action="append", metavar="COLUMN=VALUE",
                   help="only rows with this value, e.g. label=abnormal, view=PA or finding_labels=pleural_effusion "
                        "(a list column: rows holding the value; repeat a column for any of several)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    add("evaluate", cmd_evaluate, "Embed, index and compute every metric for each model (the flags of "
        "examples/evaluate.py).", add_help=False).add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    p = add("demo", cmd_demo, "The whole pipeline offline on phantom data: train, index, search, compare with the "
            "untrained model; tables in OUTPUT_DIR/results.md.")
    p.add_argument("--output-dir", type=Path, default=Path("demo_output"), help="where tables, plots and the model go")
    p.add_argument("--openi", type=_existing_dir, default=None, help="pair phantoms with real OpenI reports from this folder")
    p.add_argument("--n-studies", type=_positive_int, default=None,
                   help="phantom studies before the split, 200 or more (300 with --openi; default: 1200)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="training epochs (default: 60, more for a small --n-studies: at least 300 optimiser steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the split and the model")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (one is fastest for the demo's tiny model on a shared CPU)")

    p = add("serve", cmd_serve, "The search app (Gradio) over an index folder; binds 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--index", required=True, type=_existing_dir, help="an index folder written by `cxr-mtclip index`")
    p.add_argument("--model", default=None, help="the model the index was built with (default: the one its manifest names)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the app to the network)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--max-file-size", type=_file_size, default="10mb", help="largest upload, e.g. 10mb or 500kb (refused above it)")
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


_SHOWN_WARNINGS: set[str] = set()
"""The warning texts `_cli_warnings` has printed in this command (so a summary does not repeat them)."""


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
            seen = _SHOWN_WARNINGS
            seen.clear()

            def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
                text = " ".join(str(message).split())
                if text not in seen:
                    seen.add(text)
                    print(f"warning: {text}", file=sys.stderr, flush=True)

            warnings.showwarning = show  # type: ignore[assignment]
        yield


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Entry point of the `cxr-mtclip` console script; `prog` names a script that runs a subcommand (e.g.
    ``examples/train.py`` runs ``train``) in its usage and error lines."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH:
        # train/evaluate own their flags (HfArgumentParser / argparse), --help included.
        args = argparse.Namespace(command=argv[0], func=_PASSTHROUGH[argv[0]], rest=argv[1:], prog=prog)
    else:
        args = build_parser().parse_args(argv)
    try:
        # datasets' own bars (unlabelled "0/1 it" while FAISS adds vectors, "Flattening the indices") say nothing
        # outside a build; the package's bars (embedding, training, rendering phantoms) are labelled and stay
        with _cli_warnings(), _quiet_progress(args.command != "build-dataset"):
            # no subcommand registers the Auto classes (torch + transformers, seconds) before its checks:
            # build-dataset never needs them, the others register when they load a model
            return int(args.func(args) or 0)
    except SystemExit as exit_:
        # argparse inside a passed-through command: keep its code, 2 for usage errors
        return int(exit_.code or 0) if isinstance(exit_.code, int) else EXIT_USAGE
    except (CliError, FileNotFoundError, FileExistsError, ValueError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{prog or 'cxr-mtclip ' + args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # folders and files are written under temporary names and renamed when complete: nothing half-written
        # stays behind (a training run keeps the checkpoints it had finished)
        print(f"\n{prog or 'cxr-mtclip ' + args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
