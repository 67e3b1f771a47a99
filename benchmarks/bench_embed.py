"""Embedding throughput of `cxr_mtclip.retrieval.embed_dataset` vs raw loops over the same studies.

Three ways to embed the same synthetic studies (512 px PNG images as in OpenI, reports of `--words` words),
same batch size, `torch.inference_mode`, eval mode:

* ``embed_dataset``: the library call, returning a `datasets.Dataset` with image/text/fused embedding columns;
* ``raw_pipeline``: a hand-written loop doing the same work with no library around it: slice rows, run the
  processor (decode, resize, tokenise), open_clip-style ``encode_image`` / ``encode_text`` on the towers,
  L2-normalise, fuse, copy to numpy;
* ``raw_towers``: the towers alone on inputs preprocessed beforehand (compute ceiling), timed per modality
  to give images/s and reports/s.

The methods are timed in turns (one pass of each, then again, `--repeats` times; medians reported), so
that load from other processes on a shared machine affects them alike. Goal: ``embed_dataset`` within 1.2x
of ``raw_pipeline``. Default: the tiny architecture; ``--full``: the
full-size BiomedCLIP architecture (random weights). Writes benchmarks/results/embed.json (embed_full.json
with --full).

    python benchmarks/bench_embed.py
    python benchmarks/bench_embed.py --full --studies 32
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_utils as bu  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size BiomedCLIP architecture instead of the tiny one")
    parser.add_argument("--studies", type=int, default=None, help="studies to embed (default 256 tiny, 32 full)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 tiny, 16 full")
    parser.add_argument("--words", type=int, default=60, help="words (= tokens) per synthetic report")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per method, median (default 3 tiny, 1 full)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default 1 for the tiny model, whose ops are too small to share; "
                             "torch's default with --full)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    args.studies = args.studies or (32 if args.full else 256)
    args.batch_size = args.batch_size or (16 if args.full else 32)
    args.repeats = args.repeats or (2 if args.full else 5)
    if args.threads is None and not args.full:
        args.threads = 1
    args.output = args.output or str(bu.RESULTS_DIR / ("embed_full.json" if args.full else "embed.json"))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import datasets

    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipProcessor, fuse_embeddings
    from cxr_mtclip.retrieval import embed_dataset

    datasets.disable_progress_bars()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    info = bu.machine_info(args.device)  # after set_num_threads: records the threads used
    config = CxrMtClipConfig() if args.full else CxrMtClipConfig.tiny()
    model = CxrMtClipModel(config).to(device).eval()
    tmp = bu.temp_dir("bench_embed_")
    processor = CxrMtClipProcessor.from_config(config, bu.word_tokenizer(bu.synthetic_words(), Path(tmp.name) / "tok"))
    studies = bu.synthetic_studies(args.studies, args.words, seed=args.seed)
    n, b = args.studies, args.batch_size
    print(f"{'full-size' if args.full else 'tiny'} architecture, {n} studies, batch {b}, device {args.device}, "
          f"load {info['load_average_at_start']}")

    def library() -> Any:
        with autocast():
            return embed_dataset(model, processor, studies, batch_size=b, show_progress=False)

    def raw_pipeline() -> dict[str, np.ndarray]:
        backbone = model.backbone
        out = {k: np.empty((n, config.embed_dim), np.float32) for k in ("image_embeds", "text_embeds", "fused_embeds")}
        with torch.inference_mode(), autocast():
            for start in range(0, n, b):
                rows = studies[start : start + b]
                batch = processor(images=rows["image"], text=rows["report"])
                image = F.normalize(backbone.encode_image(batch["pixel_values"].to(device)).float(), dim=-1)
                report = F.normalize(
                    backbone.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float(), dim=-1
                )
                out["image_embeds"][start : start + b] = image.cpu().numpy()
                out["text_embeds"][start : start + b] = report.cpu().numpy()
                out["fused_embeds"][start : start + b] = fuse_embeddings(image, report).cpu().numpy()
        return out

    prepared = []
    for start in range(0, n, b):
        rows = studies[start : start + b]
        batch = processor(images=rows["image"], text=rows["report"])
        prepared.append({k: v.to(device) for k, v in batch.items()})

    def towers(modality: str) -> None:
        with torch.inference_mode(), autocast():
            for batch in prepared:
                if modality == "image":
                    model.backbone.encode_image(batch["pixel_values"])
                else:
                    model.backbone.encode_text(batch["input_ids"], batch["attention_mask"])

    # same numbers from both paths (a throughput comparison of different work would mean nothing);
    # these first passes are also the warm-up
    embedded, raw = library(), raw_pipeline()
    towers("image"), towers("text")
    for column in ("image_embeds", "text_embeds", "fused_embeds"):
        got = np.asarray(embedded.with_format("numpy")[column], dtype=np.float32)
        if not np.allclose(got, raw[column], atol=2e-2 if cuda else 1e-4):
            raise RuntimeError(f"embed_dataset and the raw loop disagree on {column}")

    methods = {
        "embed_dataset": library,
        "raw_pipeline": raw_pipeline,
        "raw_towers_image": lambda: towers("image"),
        "raw_towers_text": lambda: towers("text"),
    }
    runs: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # in turns: a load spike hits every method, not one
        for name, fn in methods.items():
            runs[name] += bu.timed(fn, repeats=1, warmup=0, sync=sync)
    seconds = {name: bu.median(times) for name, times in runs.items()}
    begin = time.perf_counter()
    from cxr_mtclip.retrieval import model_fingerprint

    model_fingerprint(model)
    seconds["model_fingerprint"] = time.perf_counter() - begin
    rows_out = [
        ["embed_dataset", seconds["embed_dataset"], n / seconds["embed_dataset"], "image + report"],
        ["raw_pipeline", seconds["raw_pipeline"], n / seconds["raw_pipeline"], "image + report"],
        ["raw_towers (images)", seconds["raw_towers_image"], n / seconds["raw_towers_image"], "images/s"],
        ["raw_towers (reports)", seconds["raw_towers_text"], n / seconds["raw_towers_text"], "reports/s"],
    ]
    print()
    bu.print_table(["method", "seconds", "studies/s", "per"], rows_out)
    ratio = seconds["embed_dataset"] / seconds["raw_pipeline"]
    goal = ratio <= 1.2
    print(f"\nembed_dataset / raw_pipeline time: {ratio:.2f}x; goal <= 1.2x: {'MET' if goal else 'NOT MET'}")
    print(f"(embed_dataset includes hashing the weights for its fingerprint column: {seconds['model_fingerprint']:.2f} s)")
    payload = {
        "benchmark": "embed",
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "seconds": seconds,
        "all_runs_s": runs,
        "studies_per_s": {k: n / v for k, v in seconds.items() if k != "model_fingerprint"},
        "ratio_embed_dataset_to_raw_pipeline": ratio,
        "goal_within_1_2x_met": goal,
    }
    print(f"wrote {bu.write_json(args.output, payload)}")
    tmp.cleanup()
    return payload


if __name__ == "__main__":
    main()
