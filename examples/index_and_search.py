"""Build (or load) FAISS indexes on a saved split and run the three searches, printing the top k.

    python examples/index_and_search.py --dataset data/openi --split test --model runs/best \\
        --index-dir indexes/test --kind hnsw --query-row 0 --k 5

The query is row `--query-row` of the split (its image and its report), or `--query-image` /
`--query-report`. The index folder (rows, one FAISS file per embedding column, manifest) is written to
--index-dir; a later run loads it without embedding the split again, after checking the model's fingerprint
against the manifest, and rebuilds it when it does not match (`--rebuild` always rebuilds).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LABEL_NAMES = ("normal", "abnormal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="folder written by save_to_disk (DatasetDict or Dataset)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", required=True, help="saved CxrMtClipModel folder, open_clip backbone, or 'tiny'")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for --model tiny")
    parser.add_argument("--index-dir", default=None, help="where indexes are saved/loaded (default: ./indexes/<split>)")
    parser.add_argument("--kind", choices=("flat", "ivf", "hnsw"), default="flat")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--query-row", type=int, default=0, help="row of the split used as the query study")
    parser.add_argument("--query-image", default=None, help="image file used instead of the row's image")
    parser.add_argument("--query-report", default=None, help="report text used instead of the row's report")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the indexes even if saved ones match")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=90, help="report text is truncated to this many characters")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns {search name: list of hits} (also printed)."""
    from datasets import DatasetDict, load_from_disk

    from cxr_mtclip.data.images import open_image
    from cxr_mtclip.hub import load_model_and_processor

    args = build_parser().parse_args(argv)
    data = load_from_disk(args.dataset)
    dataset = data[args.split] if isinstance(data, DatasetDict) else data
    index_dir = Path(args.index_dir or Path("indexes") / args.split)
    model, processor = load_model_and_processor(
        args.model, tokenizer=args.tokenizer, tokenizer_texts=dataset["report"] if args.model == "tiny" else None,
        work_dir=index_dir, seed=args.seed,
    )

    if not 0 <= args.query_row < len(dataset):
        raise SystemExit(f"--query-row {args.query_row} is outside the split (0..{len(dataset) - 1})")
    row = dataset[args.query_row]
    image = open_image(args.query_image) if args.query_image else row["image"]
    report = args.query_report or row["report"]
    own_uid = None if (args.query_image or args.query_report) else row.get("uid")
    if image is None:
        raise SystemExit(f"row {args.query_row} has no image; pick another --query-row or pass --query-image")

    retriever = _retriever(model, processor, dataset, index_dir, args)
    print(f"{len(retriever.dataset)} indexed studies; indexes {retriever.index_names} ({args.kind}) in {index_dir}")
    print(f"query: row {args.query_row} uid={own_uid}  report: {_truncate(report, args.width)}")
    results = {
        "image -> studies (paper: image vs fused)": retriever.search_by_image(image, args.k, mode="paper"),
        "image -> reports (cross-modal: image vs text)": retriever.search_by_image(image, args.k, mode="cross-modal"),
        "report -> studies (paper: report vs fused)": retriever.search_by_text(report, args.k, mode="paper"),
        "report -> images (cross-modal: report vs image)": retriever.search_by_text(report, args.k, mode="cross-modal"),
        "study -> similar studies (fused vs fused)": retriever.search_similar_studies(image, report, args.k),
    }
    out: dict[str, Any] = {}
    for title, (scores, examples) in results.items():
        hits = _hits(scores, examples)
        out[title] = hits
        width = max([3, *(len(hit["uid"]) + 2 for hit in hits)])
        print(f"\n## {title}")
        print(f"{'rank':>4}  {'score':>7}  {'uid':<{width}} {'label':<9} report")
        for hit in hits:
            mark = " *" if own_uid is not None and hit["uid"] == own_uid else ""
            print(f"{hit['rank']:>4}  {hit['score']:>7.4f}  {hit['uid'] + mark:<{width}} {hit['label']:<9} "
                  f"{_truncate(hit['report'], args.width)}")
    if own_uid is not None:
        print("\n* = the query's own study")
    return out


def _retriever(model: Any, processor: Any, dataset: Any, index_dir: Path, args: argparse.Namespace) -> Any:
    """Load the index folder when it was built by this model with this kind, else build and save it."""
    from cxr_mtclip.retrieval import RetrievalIndex

    if not args.rebuild and (index_dir / "manifest.json").is_file():
        try:
            retriever = RetrievalIndex.load(index_dir, model, processor)
            kinds = {meta["kind"] for meta in retriever.manifest.indexes.values()}
            if kinds == {args.kind}:
                print(f"loaded saved indexes from {index_dir}")
                return retriever
            print(f"saved indexes are {sorted(kinds)}, not {args.kind}: rebuilding")
        except (ValueError, FileNotFoundError) as err:
            print(f"saved indexes do not match, rebuilding: {err}")
    retriever = RetrievalIndex.build(model, processor, dataset, kind=args.kind, batch_size=args.batch_size)
    retriever.save(index_dir, overwrite=True)
    print(f"built and saved indexes to {index_dir}")
    return retriever


def _hits(scores: Any, examples: dict[str, list[Any]]) -> list[dict[str, Any]]:
    hits = []
    for i, score in enumerate(scores):
        label = examples["label"][i] if "label" in examples else None
        hits.append({
            "rank": i + 1,
            "score": float(score),
            "uid": str(examples["uid"][i]) if "uid" in examples else str(i),
            "label": LABEL_NAMES[label] if isinstance(label, int) and 0 <= label < 2 else str(label),
            "report": examples["report"][i],
        })
    return hits


def _truncate(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


if __name__ == "__main__":
    main()
