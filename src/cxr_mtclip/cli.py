"""The `cxr-mtclip` command: build-dataset, train, embed, index, search, evaluate, demo, serve.

Every subcommand has `--help`. Bad arguments and missing files end with exit code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (`cxr-mtclip <cmd>: error: ...`) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


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
    from .data import build_openi_dataset

    if args.source is None and not args.phantoms:
        raise CliError("give a SOURCE folder/tarball or --phantoms N")
    if args.phantoms:
        from .data import load_openi_reports, make_phantom_openi, phantom_dataset_card, save_dataset, split_openi

        reports = load_openi_reports(args.source) if args.source is not None else None
        rows = make_phantom_openi(args.phantoms, seed=args.seed, reports=reports)
        splits = split_openi(rows, seed=args.seed)
        if Path(args.out).exists() and not args.overwrite:
            raise CliError(f"{args.out}: already exists (pass --overwrite to replace it)")
        card = phantom_dataset_card(splits, seed=args.seed, real_reports=str(args.source) if reports else None)
        save_dataset(splits, args.out, card, overwrite=True, show_progress=False)
        for name, split in splits.items():
            print(f"{name}: {len(split)} SYNTHETIC phantom studies")
        print(f"saved to {args.out}")
        return 0
    build_openi_dataset(args.source, args.out, reports_only=args.reports_only, strict=args.strict, seed=args.seed,
                        overwrite=args.overwrite)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
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


def cmd_search(args: argparse.Namespace) -> int:
    from .data.images import open_image
    from .data.schema import data_note

    if (args.image is None) == (args.text is None):
        raise CliError("give exactly one of --image PATH or --text REPORT")
    retriever = _retriever(args.model, args.dataset, args.split)
    if args.image is not None:
        if not args.image.is_file():
            raise CliError(f"{args.image}: no such file")
        image = open_image(args.image)
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
    from .evaluation.evaluate import main as evaluate_main

    return int(evaluate_main(args.rest) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    from .recipes.demo import run_demo

    result = run_demo(
        output_dir=args.output_dir, openi=args.openi, n_studies=args.n_studies, epochs=args.epochs, seed=args.seed,
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cxr-mtclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("build-dataset", cmd_build_dataset, "Build the OpenI DatasetDict (NLM tarballs, Kaggle layout, ../shared/openi) or phantoms.")
    p.add_argument("source", nargs="?", type=_existing_path, help="OpenI source folder or tarball")
    p.add_argument("--out", required=True, type=Path, help="output folder (save_to_disk)")
    p.add_argument("--reports-only", action="store_true", help="keep studies with report text but no image")
    p.add_argument("--strict", action="store_true", help="turn counted skips into errors")
    p.add_argument("--phantoms", type=_positive_int, default=0, help="build N synthetic phantom studies instead")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--seed", type=int, default=42)

    add("train", cmd_train, "Fine-tune with the composite loss (the flags of examples/train.py; see `cxr-mtclip train --help`).")

    p = add("embed", cmd_embed, "Add image/text/fused embedding columns to a dataset split.")
    p.add_argument("--model", required=True, type=_existing_dir, help="saved model folder (with its processor)")
    p.add_argument("--dataset", required=True, type=_existing_dir)
    p.add_argument("--split", default=None)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--batch-size", type=_positive_int, default=32)

    p = add("index", cmd_index, "Build and save a FAISS index on an embedded dataset's column.")
    p.add_argument("--dataset", required=True, type=_existing_dir, help="output of `cxr-mtclip embed`")
    p.add_argument("--column", default="fused_embeds", choices=["fused_embeds", "image_embeds", "text_embeds"])
    p.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"])
    p.add_argument("--out", required=True, type=Path, help="index file (a .json sidecar is written beside it)")

    p = add("search", cmd_search, "Top-k studies for an X-ray image or a report.")
    p.add_argument("--model", required=True, type=_existing_dir)
    p.add_argument("--dataset", required=True, type=_existing_dir)
    p.add_argument("--split", default=None)
    p.add_argument("--image", type=Path)
    p.add_argument("--text")
    p.add_argument("--mode", default="paper", choices=["paper", "cross-modal"])
    p.add_argument("-k", type=_positive_int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    add("evaluate", cmd_evaluate, "Embed, index and compute every metric for each model (see `cxr-mtclip evaluate --help`).")

    p = add("demo", cmd_demo, "The whole pipeline offline on phantom data: train, index, search, compare with the untrained model.")
    p.add_argument("--output-dir", type=Path, default=Path("demo_output"))
    p.add_argument("--openi", type=_existing_dir, default=None, help="pair phantoms with real OpenI reports from this folder")
    p.add_argument("--n-studies", type=_positive_int, default=None)
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)

    p = add("serve", cmd_serve, "A search web page over a saved model and dataset (binds 127.0.0.1).")
    p.add_argument("--model", required=True, type=_existing_dir)
    p.add_argument("--dataset", required=True, type=_existing_dir)
    p.add_argument("--split", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=10.0)
    return parser


_PASSTHROUGH: dict[str, Callable[[argparse.Namespace], int]] = {"train": cmd_train, "evaluate": cmd_evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cxr-mtclip` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH:
        # train/evaluate own their flags (HfArgumentParser / argparse), --help included.
        args = argparse.Namespace(command=argv[0], func=_PASSTHROUGH[argv[0]], rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
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
