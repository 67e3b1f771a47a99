"""FAISS at scale, through `datasets` and raw: build time, index bytes, batched queries/s, recall@10 vs flat.

    python benchmarks/bench_faiss.py                      # 10k and 100k vectors (a few minutes on 2 cores)
    python benchmarks/bench_faiss.py --sizes 10000        # quick
    python benchmarks/bench_faiss.py --large              # adds 1M (needs ~10 GB RAM and a while)

Vectors are synthetic, L2-normalised, 512-d (BiomedCLIP's embedding size), drawn around random
cluster centres like real embeddings (``--distribution uniform``: no structure, the hardest case for
approximate indexes). Queries come from the same distribution and are not in the index. For each
size, each index kind (flat, IVF, HNSW) is built twice, raw (`faiss.index_factory` + add) and through
`cxr_mtclip.retrieval.build_index` (`Dataset.add_faiss_index`), then searched in one batch of
``--queries`` queries, raw (`index.search`) and through `datasets` (`Dataset.search_batch`, and
`get_nearest_examples_batch` returning only an id column). IVF ``nprobe`` and HNSW ``efSearch`` are
swept at search time. Timings are the best of ``--repeats`` runs.

Reported goals (not asserted): `datasets` batched-query overhead <= 1.5x raw; at 1M an approximate
index with recall@10 >= 0.95 at >= 10x the flat index's queries/s.
Results: printed table + benchmarks/results/faiss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "faiss.json"
OVERHEAD_GOAL = 1.5
RECALL_GOAL = 0.95
SPEEDUP_GOAL = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="FAISS through datasets vs raw: build, memory, queries/s, recall@10.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--large", action="store_true", help="also run 1,000,000 vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--distribution", choices=("clustered", "uniform"), default="clustered")
    parser.add_argument("--kinds", nargs="+", choices=("flat", "ivf", "hnsw"), default=["flat", "ivf", "hnsw"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=None, help="IVF nprobe sweep (default: 1..nlist/8)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--train-per-cell", type=int, default=40, help="IVF training vectors per cell (faiss needs >= 39)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss' choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def synthetic(n: int, dim: int, distribution: str, rng: np.random.Generator, centres: np.ndarray | None) -> np.ndarray:
    """L2-normalised float32 vectors; clustered ones sit at cosine ~0.7 from one of `centres`."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = rng.standard_normal((m, dim), dtype=np.float32)
        if distribution == "clustered":
            block = centres[rng.integers(0, centres.shape[0], m)] + block / np.sqrt(dim)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def vectors_dataset(vectors: np.ndarray) -> Any:
    """A `datasets.Dataset` with an int `id` column and an `embeds` column (fixed-size float32 lists), no copy via Python."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    embeds = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({"id": pa.array(np.arange(vectors.shape[0], dtype=np.int64)), "embeds": embeds})
    return Dataset(InMemoryTable(table))


def index_bytes(index: Any) -> int:
    """Serialised size of a faiss index, counted without holding a copy."""
    import faiss

    total = [0]

    def count(chunk: bytes) -> int:
        total[0] += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total[0]


def best_times(calls: dict[str, Any], repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Best wall time of each call; the calls are interleaved so that machine load affects them alike."""
    if warm_up:
        for call in calls.values():
            call()  # page faults, thread pool start-up
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(e.tolist())) / k for a, e in zip(found, exact)]))


def build_raw(kind: str, data: np.ndarray, nlist: int, train_size: int, args: argparse.Namespace) -> tuple[Any, float]:
    import faiss

    start = time.perf_counter()
    if kind == "flat":
        index = faiss.index_factory(data.shape[1], "Flat", faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        index = faiss.index_factory(data.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(data[:train_size])  # the same first rows `datasets` trains on
    else:
        index = faiss.index_factory(data.shape[1], f"HNSW{args.hnsw_m}", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
    index.add(data)
    return index, time.perf_counter() - start


def sweep_values(kind: str, nlist: int, args: argparse.Namespace) -> list[int | None]:
    if kind == "flat":
        return [None]
    if kind == "ivf":
        values = args.nprobe or [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256) if v <= max(1, nlist // 8)]
        return sorted({min(v, nlist) for v in values})
    return list(args.ef_search)


def set_param(index: Any, kind: str, value: int | None) -> None:
    import faiss

    if kind == "ivf":
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(value))
    elif kind == "hnsw":
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", int(value))


def run_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from cxr_mtclip.retrieval import build_index, default_nlist

    centres = None
    if args.distribution == "clustered":
        centres = rng.standard_normal((max(16, n // 1000), args.dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = synthetic(n, args.dim, args.distribution, rng, centres)
    queries = synthetic(args.queries, args.dim, args.distribution, rng, centres)
    dataset = vectors_dataset(data)
    nlist = default_nlist(n)
    train_size = min(n, args.train_per_cell * nlist)
    rows: list[dict[str, Any]] = []
    exact: np.ndarray | None = None
    flat_qps: float | None = None

    for kind in tqdm(args.kinds, desc=f"n={n:,}", unit="index"):
        raw, raw_build = build_raw(kind, data, nlist, train_size, args)
        start = time.perf_counter()
        build_index(dataset, "embeds", kind, index_name=kind, nlist=nlist, train_size=train_size if kind == "ivf" else None,
                    hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, device="cpu", show_progress=False)
        ds_build = time.perf_counter() - start
        ds_index = dataset.get_index(kind).faiss_index
        size = index_bytes(raw)
        for position, value in enumerate(sweep_values(kind, nlist, args)):
            set_param(raw, kind, value)
            set_param(ds_index, kind, value)
            _, raw_ids = raw.search(queries, args.k)
            dataset.set_format(columns=["id"])  # examples = ids only: measures the lookup, not 512 floats per hit
            try:
                best = best_times({
                    "raw": lambda: raw.search(queries, args.k),
                    "search_batch": lambda: dataset.search_batch(kind, queries, k=args.k),
                    "nearest_examples": lambda: dataset.get_nearest_examples_batch(kind, queries, k=args.k),
                }, args.repeats, warm_up=position == 0)
            finally:
                dataset.reset_format()
            raw_time, ds_time, examples_time = best["raw"], best["search_batch"], best["nearest_examples"]
            _, ds_ids = dataset.search_batch(kind, queries, k=args.k)
            if kind == "flat":
                exact, flat_qps = raw_ids, args.queries / raw_time
            row = {
                "n": n, "kind": kind,
                "param": {"ivf": "nprobe", "hnsw": "ef_search"}.get(kind), "value": value,
                "nlist": nlist if kind == "ivf" else None,
                "hnsw_m": args.hnsw_m if kind == "hnsw" else None,
                "build_s_raw": raw_build, "build_s_datasets": ds_build,
                "index_bytes": size, "bytes_per_vector": size / n,
                "qps_raw": args.queries / raw_time,
                "qps_datasets_search_batch": args.queries / ds_time,
                "qps_datasets_nearest_examples": args.queries / examples_time,
                "overhead_search_batch": ds_time / raw_time,
                "overhead_nearest_examples": examples_time / raw_time,
                "recall_at_k": recall(raw_ids, exact) if exact is not None else None,
                "datasets_same_ids_as_raw": bool(np.array_equal(np.asarray(ds_ids), raw_ids)) if kind != "hnsw" else None,
            }
            row["speedup_vs_flat"] = row["qps_raw"] / flat_qps if flat_qps else None
            rows.append(row)
        raw = None  # free this index before the next kind is built (rebinding, not del: the lambdas above close over it)
        dataset.drop_index(kind)
    return rows


def goals(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    worst_batch = max(r["overhead_search_batch"] for r in rows)
    worst_examples = max(r["overhead_nearest_examples"] for r in rows)
    # the verdict uses the median over all (size, index, parameter) rows: one noisy timing on a shared
    # machine should not decide it; the worst row is reported beside it
    median_batch = float(np.median([r["overhead_search_batch"] for r in rows]))
    median_examples = float(np.median([r["overhead_nearest_examples"] for r in rows]))
    largest = max(sizes)
    candidates = [r for r in rows if r["n"] == largest and r["kind"] != "flat" and (r["recall_at_k"] or 0) >= RECALL_GOAL]
    best = max(candidates, key=lambda r: r["speedup_vs_flat"] or 0, default=None)
    at_1m = 1_000_000 in sizes
    return {
        "datasets_overhead_search_batch_median": median_batch,
        "datasets_overhead_search_batch_max": worst_batch,
        "datasets_overhead_nearest_examples_median": median_examples,
        "datasets_overhead_nearest_examples_max": worst_examples,
        "datasets_overhead_goal": f"<= {OVERHEAD_GOAL}x raw for batched queries (median over rows)",
        "datasets_overhead_met": median_batch <= OVERHEAD_GOAL,
        "datasets_overhead_with_examples_met": median_examples <= OVERHEAD_GOAL,
        "approximate_goal": f"recall@10 >= {RECALL_GOAL} at >= {SPEEDUP_GOAL}x flat queries/s, at 1M",
        "approximate_measured_at": largest,
        "approximate_best": None if best is None else {
            k: best[k] for k in ("kind", "param", "value", "recall_at_k", "speedup_vs_flat", "qps_raw")
        },
        "approximate_met": (best is not None and best["speedup_vs_flat"] >= SPEEDUP_GOAL) if at_1m else None,
        "note": None if at_1m else f"1M not run (pass --large); best shown is at n={largest:,}",
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'n':>9} {'kind':<5} {'param':>13} {'build raw/ds s':>15} {'MB':>8} {'qps raw':>9} "
              f"{'qps ds':>9} {'qps ds+ex':>9} {'ovh':>5} {'ovh+ex':>6} {'recall@k':>8} {'x flat':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        param = "" if r["param"] is None else f"{r['param']}={r['value']}"
        print(f"{r['n']:>9,} {r['kind']:<5} {param:>13} {r['build_s_raw']:>7.2f}/{r['build_s_datasets']:<7.2f} "
              f"{r['index_bytes'] / 2**20:>8.1f} {r['qps_raw']:>9.0f} {r['qps_datasets_search_batch']:>9.0f} "
              f"{r['qps_datasets_nearest_examples']:>9.0f} {r['overhead_search_batch']:>5.2f} "
              f"{r['overhead_nearest_examples']:>6.2f} {r['recall_at_k']:>8.3f} {r['speedup_vs_flat']:>7.1f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import datasets
    import faiss

    args = parse_args(argv)
    datasets.disable_progress_bars()  # one bar per size from this script is enough
    args.kinds = ["flat"] + [k for k in dict.fromkeys(args.kinds) if k != "flat"]  # flat is the recall reference
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    sizes = sorted(set(args.sizes) | ({1_000_000} if args.large else set()))
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rows.extend(run_size(n, args, rng))
    summary = goals(rows, sizes)
    print_table(rows)
    print(f"\ndatasets overhead vs raw faiss, median (worst) over rows: search_batch "
          f"{summary['datasets_overhead_search_batch_median']:.2f}x ({summary['datasets_overhead_search_batch_max']:.2f}x), "
          f"{'met' if summary['datasets_overhead_met'] else 'NOT met'}; get_nearest_examples_batch (ids only) "
          f"{summary['datasets_overhead_nearest_examples_median']:.2f}x "
          f"({summary['datasets_overhead_nearest_examples_max']:.2f}x), "
          f"{'met' if summary['datasets_overhead_with_examples_met'] else 'NOT met'} (goal {OVERHEAD_GOAL}x)")
    best = summary["approximate_best"]
    verdict = {True: "met", False: "NOT met", None: "not measured at 1M"}[summary["approximate_met"]]
    print(f"approximate index, n={summary['approximate_measured_at']:,}: "
          + (f"{best['kind']} {best['param']}={best['value']} recall@{args.k}={best['recall_at_k']:.3f} "
             f"at {best['speedup_vs_flat']:.1f}x flat" if best else f"none reaches recall {RECALL_GOAL}")
          + f" (goal {summary['approximate_goal']}: {verdict})")
    report = {
        "benchmark": "bench_faiss",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"sizes": sizes},
        "machine": {
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "datasets": datasets.__version__,
            "numpy": np.__version__, "gpus_seen_by_faiss": int(faiss.get_num_gpus()),
        },
        "goals": summary,
        "results": rows,
    }
    from cxr_mtclip.atomic import atomic_write_text

    atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
