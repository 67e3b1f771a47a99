"""Peak memory of embedding + indexing a 100k-row dataset, streamed in batches, vs the raw size of the embeddings.

The "embedding" stage is simulated: L2-normalised random 512-d float32 vectors are produced batch by
batch (as a model would) and written to an Arrow file with `datasets.Dataset.from_generator`, so at most
one batch is in Python memory. Two ways to index them (flat inner product by default; any faiss factory
string with `--index`) are measured, each in a fresh process:

* ``add_faiss_index``: write the dataset, then `Dataset.add_faiss_index` over the memory-mapped column;
* ``index_while_streaming``: add each batch to a faiss index as it is produced, save the index, attach it
  with `Dataset.load_faiss_index` (the Arrow file is never read back).

Peak resident memory is sampled every few ms (and read from the kernel's high-water mark), and reported
above the baseline taken after imports, split into anonymous memory (heap: the faiss index, batches)
and file-backed pages (the memory-mapped Arrow file: clean page cache that the kernel can drop). The
goal compares the peak *total* RSS above the baseline with 2x the raw embedding size.

    python benchmarks/bench_memory.py                    # 100k rows
    python benchmarks/bench_memory.py --rows 1000000 --index IVF1024,Flat
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STRATEGIES = ("add_faiss_index", "index_while_streaming")


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class MemorySampler:
    """Background thread recording the peak RSS (total, anonymous, file-backed) of this process, in bytes."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = {"rss": 0, "anon": 0, "file": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        now = {"rss": _status_kib("VmRSS") * 1024, "anon": _status_kib("RssAnon") * 1024, "file": _status_kib("RssFile") * 1024}
        for key, value in now.items():
            self.peak[key] = max(self.peak[key], value)
        return now

    def reset(self) -> None:
        self.peak = {"rss": 0, "anon": 0, "file": 0}
        self.sample()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per embedding batch and per index add")
    parser.add_argument("--index", default="Flat", help="faiss factory string (inner product metric)")
    parser.add_argument("--strategy", choices=["all", *STRATEGIES], default="all",
                        help="one strategy in this process, or each in a fresh subprocess (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS_DIR / "memory.json"), help="JSON file ('-': print JSON to stdout)")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One strategy, in this process: phase timings and peak memory above the post-import baseline."""
    import datasets
    import faiss

    datasets.disable_progress_bars()
    mib = 1024 * 1024
    tmp = tempfile.TemporaryDirectory(prefix="bench_memory_")
    features = datasets.Features(
        {"uid": datasets.Value("int64"), "fused_embeds": datasets.List(datasets.Value("float32"), length=args.dim)}
    )
    factory = "Flat" if args.index == "Flat" else args.index
    streaming = args.strategy == "index_while_streaming"
    live_index: list[Any] = []

    def rows():
        rng = np.random.default_rng(args.seed)
        for start in range(0, args.rows, args.batch_size):
            size = min(args.batch_size, args.rows - start)
            vectors = rng.standard_normal((size, args.dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            if streaming:
                if not live_index:
                    live_index.append(faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT))
                if not live_index[0].is_trained:  # an IVF index trains on the first batch it sees
                    live_index[0].train(vectors)
                live_index[0].add(vectors)
            for i, vector in enumerate(vectors):
                yield {"uid": start + i, "fused_embeds": vector}

    phases: dict[str, dict[str, float]] = {}
    with MemorySampler() as sampler:
        baseline = sampler.sample()

        def finish(name: str, began: float) -> None:
            sampler.sample()
            phases[name] = {
                "seconds": time.perf_counter() - began,
                "peak_rss_above_baseline_mib": (sampler.peak["rss"] - baseline["rss"]) / mib,
                "peak_anon_above_baseline_mib": (sampler.peak["anon"] - baseline["anon"]) / mib,
                "peak_file_backed_above_baseline_mib": (sampler.peak["file"] - baseline["file"]) / mib,
            }

        began = time.perf_counter()
        dataset = datasets.Dataset.from_generator(
            rows, features=features, cache_dir=os.path.join(tmp.name, "hf"), writer_batch_size=args.batch_size
        )
        finish("embed_and_write", began)

        began = time.perf_counter()
        if streaming:
            path = os.path.join(tmp.name, "fused.faiss")
            faiss.write_index(live_index.pop(), path)
            dataset.load_faiss_index("fused_embeds", path)
        else:
            dataset.add_faiss_index(
                column="fused_embeds", index_name="fused_embeds", string_factory=None if factory == "Flat" else factory,
                metric_type=faiss.METRIC_INNER_PRODUCT, batch_size=args.batch_size,
                train_size=None if factory == "Flat" else min(args.rows, 50 * 1024),
            )
        finish("index", began)

        began = time.perf_counter()
        query = np.asarray(dataset[0]["fused_embeds"], dtype=np.float32)
        _, found = dataset.get_nearest_examples("fused_embeds", query, k=10)
        if found["uid"][0] != 0:
            raise RuntimeError("row 0 is not its own nearest neighbour: the index does not match the dataset")
        finish("query", began)
        overall = {key: max(p[key] for p in phases.values()) for key in next(iter(phases.values())) if key != "seconds"}
    del dataset
    tmp.cleanup()
    return {
        "strategy": args.strategy,
        "baseline_rss_mib": baseline["rss"] / mib,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux; imports included
        "phases": phases,
        "overall": overall,
        "datasets": datasets.__version__,
        "faiss": faiss.__version__,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.strategy != "all":
        result = measure(args)
        if args.output == "-":
            print(json.dumps(result))
        return result

    raw_mib = args.rows * args.dim * 4 / 2**20
    load = [round(x, 2) for x in os.getloadavg()]
    results = {}
    for strategy in STRATEGIES:
        command = [sys.executable, __file__, "--strategy", strategy, "--output", "-", "--rows", str(args.rows),
                   "--dim", str(args.dim), "--batch-size", str(args.batch_size), "--index", args.index, "--seed", str(args.seed)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[strategy] = json.loads(done.stdout.strip().splitlines()[-1])

    print(f"rows {args.rows:,} x {args.dim} float32 = {raw_mib:.0f} MiB raw; index {args.index}; each strategy in a fresh "
          "process; memory above the RSS after imports")
    print(f"{'strategy / phase':<40}{'seconds':>9}{'peak RSS +MiB':>15}{'anon +MiB':>11}{'file-backed +MiB':>18}")
    for strategy, result in results.items():
        for name, p in result["phases"].items():
            print(f"{strategy + ' / ' + name:<40}{p['seconds']:>9.1f}{p['peak_rss_above_baseline_mib']:>15.0f}"
                  f"{p['peak_anon_above_baseline_mib']:>11.0f}{p['peak_file_backed_above_baseline_mib']:>18.0f}")
        result["ratio_peak_rss_to_raw"] = result["overall"]["peak_rss_above_baseline_mib"] / raw_mib
        result["ratio_peak_anon_to_raw"] = result["overall"]["peak_anon_above_baseline_mib"] / raw_mib
    print()
    for strategy, result in results.items():
        goal = result["ratio_peak_rss_to_raw"] < 2
        result["goal_peak_rss_below_2x_met"] = goal
        print(f"{strategy}: peak RSS {result['ratio_peak_rss_to_raw']:.2f}x raw (anonymous only "
              f"{result['ratio_peak_anon_to_raw']:.2f}x): goal < 2x {'MET' if goal else 'NOT MET'}")

    from _bench_utils import write_json

    payload = {
        "benchmark": "memory",
        "machine": {"platform": sys.platform, "cpu_count": os.cpu_count(), "load_average_at_start": load},
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "strategy")},
        "raw_embeddings_mib": raw_mib,
        "strategies": results,
    }
    print(f"wrote {write_json(args.output, payload)}")
    return payload


if __name__ == "__main__":
    main()
