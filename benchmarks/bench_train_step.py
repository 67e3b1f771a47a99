"""Train-step time of the full-size BiomedCLIP architecture: naive vs frozen (paper) vs frozen + feature cache.

Random weights (no download), synthetic studies (512 px PNGs, reports of `--text-length` tokens). Every
variant runs the same optimizer step (fused AdamW over its trainable parameters) on the same batches,
the variants taking turns step by step (so that other load on a shared machine hits them alike):

* naive:  everything trainable (trainable_image_blocks = trainable_text_blocks = -1), model(**batch)
* frozen: the paper's policy (last block of each tower trains), model(**batch)
* cache:  frozen + `forward_from_cache` on states read from a `build_feature_cache` folder through a
  DataLoader (the step time includes reading and collating the batch from the memory map); reported with
  the last block computed for every token (`cache_all_tokens`) and for the pooled token only (`cache`, the
  default of `forward_from_cache`)

Prints a table, the ratios and the projected 20-epoch time for OpenI (~3,955 studies; the cache is built
once, before epoch 1), and writes benchmarks/results/train_step.json. Per-epoch figures count model compute
only; `data_prep_s_per_study` (PNG decode + resize + tokenise) is reported beside them, since the uncached
paths pay it every epoch (the cache only once, inside its build cost).

    python benchmarks/bench_train_step.py                    # CPU, batch 8
    python benchmarks/bench_train_step.py --device cuda --batch-size 32   # bf16 autocast on GPU
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_utils as bu  # noqa: E402

OPENI_STUDIES = 3955


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8, help="studies per step (8-32)")
    parser.add_argument("--text-length", type=int, default=96, help="padded report length in tokens, [CLS]/[SEP] included")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cache-dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    parser.add_argument("--studies", type=int, default=OPENI_STUDIES, help="dataset size for the projection")
    parser.add_argument("--epochs", type=int, default=20, help="epochs for the projection")
    parser.add_argument("--skip-naive", action="store_true", help="skip the (slowest) everything-trainable variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(bu.RESULTS_DIR / "train_step.json"))
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 256:
        parser.error("--batch-size must be in 1..256")
    if args.text_length < 3:
        parser.error("--text-length must be >= 3")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipProcessor
    from cxr_mtclip.backbone import apply_freeze_policy
    from cxr_mtclip.training.cached_model import forward_from_cache
    from cxr_mtclip.training.feature_cache import CachedFeatureCollator, build_feature_cache, cache_fingerprint

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    info = bu.machine_info(args.device)
    print(f"machine: {info['processor']}, {info['cpu_count']} CPUs, torch threads {info['torch_threads']}, "
          f"load {info['load_average_at_start']}, device {args.device}{' (' + info['gpu'] + ')' if 'gpu' in info else ''}")

    start = time.perf_counter()
    config = CxrMtClipConfig()  # BiomedCLIP architecture: ViT-B/16 224 px + PubMedBERT-base, 512-d
    model = CxrMtClipModel(config).to(device)
    build_model_s = time.perf_counter() - start
    model.train()

    tmp = bu.temp_dir("bench_train_step_")
    folder = Path(tmp.name)
    processor = CxrMtClipProcessor.from_config(config, bu.word_tokenizer(bu.synthetic_words(), folder / "tokenizer"))
    n_build = 2 * args.batch_size
    studies = bu.synthetic_studies(n_build, args.text_length - 2, seed=args.seed)

    # one-off data preparation cost (decode + resize + normalise + tokenise), per study
    rows = studies[: args.batch_size]
    prep = bu.timed(lambda: processor(images=rows["image"], text=rows["report"], labels=rows["label"]), repeats=3, warmup=1)
    data_prep_s = bu.median(prep) / args.batch_size
    batches = []
    for begin in range(0, n_build, args.batch_size):
        chunk = studies[begin : begin + args.batch_size]
        encoded = processor(images=chunk["image"], text=chunk["report"], labels=chunk["label"])
        batches.append({k: v.to(device) for k, v in encoded.items()})
    assert batches[0]["input_ids"].shape[1] == args.text_length

    print(f"full-size model built in {build_model_s:.1f} s; batch {args.batch_size}, text {args.text_length} tokens")

    # the cache: built once (timed, per study), then read back through a DataLoader
    apply_freeze_policy(model.backbone, 1, 1)
    begin = time.perf_counter()
    cache_fingerprint(model, processor)
    fingerprint_s = time.perf_counter() - begin  # hashing the frozen weights: once per build and per load
    begin = time.perf_counter()
    cache = build_feature_cache(model, processor, studies, folder / "cache", dtype=getattr(torch, args.cache_dtype),
                                batch_size=args.batch_size, show_progress=False)
    if sync:
        sync()
    build_s_per_study = max(time.perf_counter() - begin - fingerprint_s, 0.0) / n_build
    cache_bytes = sum(p.stat().st_size for p in (folder / "cache").iterdir())
    loader = torch.utils.data.DataLoader(cache, batch_size=args.batch_size, shuffle=True, collate_fn=CachedFeatureCollator(),
                                         pin_memory=cuda, generator=torch.Generator().manual_seed(args.seed))

    def make_step(image_blocks: int, text_blocks: int, cached: bool, first_token_only: bool = True) -> Any:
        apply_freeze_policy(model.backbone, image_blocks, text_blocks)
        # fused AdamW (one kernel over all tensors) on CPU and GPU: the optimizer step is a fixed cost per step
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        state = {"stream": iter(()), "count": 0}

        def step() -> None:
            apply_freeze_policy(model.backbone, image_blocks, text_blocks)  # the variants take turns
            with autocast():
                if cached:
                    batch = next(state["stream"], None)
                    if batch is None:
                        state["stream"] = iter(loader)
                        batch = next(state["stream"])
                    loss = forward_from_cache(model, **batch, first_token_only=first_token_only).loss
                else:
                    loss = model(**batches[state["count"] % len(batches)]).loss
                    state["count"] += 1
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step, trainable

    variants = {
        "frozen": make_step(1, 1, cached=False),
        "cache_all_tokens": make_step(1, 1, cached=True, first_token_only=False),
        "cache": make_step(1, 1, cached=True),
    }
    if not args.skip_naive:
        variants["naive"] = make_step(-1, -1, cached=False)
    # rounds of one step per variant (cheap cache steps: 3), so that load from other processes on a
    # shared machine hits every variant alike; the first `warmup` rounds are not timed
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.warmup + args.steps):
        for name, (step, _) in variants.items():
            taken = bu.timed(step, repeats=3 if name.startswith("cache") else 1, warmup=0, sync=sync)
            if round_index >= args.warmup:
                times[name] += taken
        print(f"  round {round_index + 1}/{args.warmup + args.steps}: "
              + ", ".join(f"{name} {bu.median(t):.2f} s" for name, t in times.items() if t))
    apply_freeze_policy(model.backbone, 1, 1)
    results: dict[str, dict[str, Any]] = {
        name: {"step_s": bu.median(times[name]), "step_times_s": times[name], "trainable_params": trainable}
        for name, (_, trainable) in variants.items()
    }

    steps_per_epoch = math.ceil(args.studies / args.batch_size)
    build_total_s = fingerprint_s + build_s_per_study * args.studies
    rows_out = []
    for name in ("naive", "frozen", "cache_all_tokens", "cache"):
        if name not in results:
            continue
        r = results[name]
        r["studies_per_s"] = args.batch_size / r["step_s"]
        r["epoch_s"] = r["step_s"] * steps_per_epoch
        cached = name.startswith("cache")
        r["first_epoch_extra_s"] = build_total_s if cached else 0.0
        r["total_s"] = r["first_epoch_extra_s"] + args.epochs * r["epoch_s"]
        # what the uncached paths also pay every epoch (serially; DataLoader workers can hide it on a big box)
        r["total_with_data_prep_s"] = r["total_s"] + (0 if cached else args.epochs * args.studies * data_prep_s)
        rows_out.append([name, r["step_s"], r["studies_per_s"], r["epoch_s"] / 60, r["first_epoch_extra_s"] / 60,
                         r["total_s"] / 3600, r["total_with_data_prep_s"] / 3600])
    print()
    bu.print_table(
        ["variant", "s/step", "studies/s", "epoch min", "cache build min", f"{args.epochs} epochs h",
         f"{args.epochs} ep. + data prep h"],
        rows_out,
    )
    ratios = {
        "cache_vs_frozen_per_epoch": results["frozen"]["epoch_s"] / results["cache"]["epoch_s"],
        "cache_all_tokens_vs_frozen_per_epoch": results["frozen"]["epoch_s"] / results["cache_all_tokens"]["epoch_s"],
        "cache_vs_frozen_total": results["frozen"]["total_s"] / results["cache"]["total_s"],
        "cache_vs_frozen_total_with_data_prep": results["frozen"]["total_with_data_prep_s"] / results["cache"]["total_s"],
    }
    if "naive" in results:
        ratios["frozen_vs_naive_per_epoch"] = results["naive"]["epoch_s"] / results["frozen"]["epoch_s"]
        ratios["cache_vs_naive_total"] = results["naive"]["total_s"] / results["cache"]["total_s"]
    print()
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x")
    goal = ratios["cache_vs_frozen_per_epoch"] >= 5
    print(f"goal cache >= 5x faster per epoch than frozen (after the first): {'MET' if goal else 'NOT MET'} "
          f"({ratios['cache_vs_frozen_per_epoch']:.1f}x)")
    print(f"cache build: {build_s_per_study * 1000:.0f} ms/study ({build_total_s / 60:.1f} min for {args.studies} studies), "
          f"{cache_bytes / n_build / 1e6:.2f} MB/study on disk ({args.cache_dtype}); fingerprint {fingerprint_s:.1f} s; "
          f"data prep {data_prep_s * 1000:.0f} ms/study")

    payload = {
        "benchmark": "train_step",
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k != "output"} | {"autocast": "bfloat16" if cuda else None},
        "model_build_s": build_model_s,
        "data_prep_s_per_study": data_prep_s,
        "cache_build_s_per_study": build_s_per_study,
        "cache_fingerprint_s": fingerprint_s,
        "cache_bytes_per_study": cache_bytes / n_build,
        "steps_per_epoch": steps_per_epoch,
        "variants": results,
        "ratios": ratios,
        "goal_cache_5x_per_epoch_met": goal,
    }
    out = bu.write_json(args.output, payload)
    print(f"wrote {out}")
    tmp.cleanup()
    return payload


if __name__ == "__main__":
    main()
