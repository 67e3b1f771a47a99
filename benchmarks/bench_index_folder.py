"""The index folder at 10k / 100k / 1M gallery rows: build vs raw faiss, load time, peak memory, query latency, recall.

    nice -n 10 python benchmarks/bench_index_folder.py                 # 10k and 100k (a few minutes on 2 cores)
    nice -n 10 python benchmarks/bench_index_folder.py --sizes 1000000  # 1M (~45 min on 2 cores, ~8 GB RAM)

Per size, synthetic clustered L2-normalised 512-d vectors (BiomedCLIP's size; as in bench_faiss.py) become gallery
rows (uid, label, view, fused_embeds) saved with `save_to_disk` and memory-mapped back, as a real gallery is.
Per index kind (flat, IVF, HNSW), in one run:

* build: raw faiss on the NumPy array (`index_factory`, IVF trained on the same seeded sample, one `add`) vs
  `retrieval.store.build_column_index` reading the memory-mapped Arrow column; the ratio is the goal (<= 1.2x);
* the index folder is written (`RetrievalIndex.save`), then a FRESH process loads it (`RetrievalIndex.load`,
  no model) and reports the load time and its peak RSS above the RSS after imports (goal < 1.5x the raw vectors,
  n x 512 x 4 bytes), then runs `--queries` single queries through `RetrievalIndex.search` (k=10, rows looked up,
  records built) and through the bare faiss index, without and with a filter (label = abnormal, half the rows):
  p50 / p99 latency, and recall@10 against the exact (flat) top 10.

IVF and HNSW use the package's defaults (nlist = `default_nlist`, nprobe = nlist / 8; HNSW32, efSearch 128;
efConstruction `--ef-construction`, 40 here as in bench_faiss.py, for both paths). Results: a printed table and
benchmarks/results/index_folder.json (appended per size with --append). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "index_folder.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--kinds", nargs="+", choices=("flat", "ivf", "hnsw"), default=["flat", "ivf", "hnsw"])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--train-per-cell", type=int, default=40, help="IVF training vectors per cell, both paths")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the folders are written (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true", help="add these sizes to the rows already in --output")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "QUERIES_NPZ"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0), so the peak of the load alone can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    """VmHWM (the RSS high-water mark since the last reset), else getrusage's lifetime maximum."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(folder: str, queries_file: str) -> dict[str, Any]:
    """Runs in a fresh process: load the folder, then time single queries."""
    import datasets  # noqa: F401  (imported before the baseline: an import is not the folder's memory)
    import faiss  # noqa: F401

    from cxr_mtclip.retrieval import RetrievalIndex

    data = np.load(queries_file)
    queries, exact = data["queries"], data["exact"]
    reset = reset_peak()  # the imports' own transient peak is not the folder's memory
    baseline = rss_bytes()
    start = time.perf_counter()
    index = RetrievalIndex.load(folder)
    load_s = time.perf_counter() - start
    peak = peak_bytes()
    after_load = rss_bytes()
    entry = index.indexes["fused_embeds"]

    def latencies(call) -> list[float]:
        out = []
        for query in queries:
            t = time.perf_counter()
            call(query)
            out.append(time.perf_counter() - t)
        return out

    found = [index.search(query_embeds=q, index_name="fused_embeds", k=10, with_images=False).row_ids for q in queries[:5]]
    del found  # warm-up: page faults, thread pool
    package = latencies(lambda q: index.search(query_embeds=q, index_name="fused_embeds", k=10, with_images=False))
    raw = latencies(lambda q: entry.index.search(q[None], 10))
    filtered = latencies(lambda q: index.search(query_embeds=q, index_name="fused_embeds", k=10, with_images=False,
                                                filters={"label": "abnormal"}))
    hits = [index.search(query_embeds=q, index_name="fused_embeds", k=10, with_images=False).row_ids for q in queries]
    recall = float(np.mean([len(set(h.tolist()) & set(e.tolist())) / 10 for h, e in zip(hits, exact)]))
    return {
        "load_s": load_s, "rss_baseline_bytes": baseline, "rss_after_load_bytes": after_load, "peak_was_reset": reset,
        "peak_rss_above_baseline_bytes": max(peak, after_load) - baseline,
        "latency_ms_package": _percentiles(package), "latency_ms_raw_faiss": _percentiles(raw),
        "latency_ms_filtered": _percentiles(filtered), "recall_at_10": recall,
        "params": index.manifest.indexes["fused_embeds"]["params"],
    }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def gallery(n: int, dim: int, seed: int, folder: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """Rows saved with save_to_disk and loaded back memory-mapped; the vectors; 200+ queries."""
    import pyarrow as pa
    from bench_faiss import synthetic
    from datasets import ClassLabel, Dataset, Features, List, Value, load_from_disk
    from datasets.table import InMemoryTable

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 1000), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = synthetic(n, dim, "clustered", rng, centres)
    queries = synthetic(1000, dim, "clustered", rng, centres)
    features = Features({"uid": Value("string"), "label": ClassLabel(names=["normal", "abnormal"]),
                         "view": Value("string"), "fused_embeds": List(Value("float32"), length=dim),
                         "embeds_model": Value("string")})
    table = pa.table({
        "uid": pa.array([f"s{i:07d}" for i in range(n)]),
        "label": pa.array(rng.integers(0, 2, n), type=pa.int64()),
        "view": pa.array(rng.choice(["PA", "AP"], n).tolist()),
        "fused_embeds": pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), dim),
        "embeds_model": pa.array(["sha256:synthetic"] * n),
    })
    from datasets import DatasetInfo

    Dataset(InMemoryTable(table.cast(features.arrow_schema)), info=DatasetInfo(features=features)).save_to_disk(str(folder))
    return load_from_disk(str(folder)), data, queries


def raw_build(kind: str, data: np.ndarray, nlist: int, sample: np.ndarray | None, args: argparse.Namespace) -> tuple[Any, float]:
    import faiss

    start = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(data.shape[1])
    elif kind == "ivf":
        index = faiss.index_factory(data.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(data if sample is None else data[sample])
    else:
        index = faiss.index_factory(data.shape[1], "HNSW32", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
    index.add(data)
    return index, time.perf_counter() - start


def run_size(n: int, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import faiss

    from cxr_mtclip.retrieval import RetrievalIndex, default_nlist
    from cxr_mtclip.retrieval.store import IndexManifest, build_column_index

    rows, data, queries = gallery(n, args.dim, args.seed, work / f"rows-{n}")
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(data)
    exact = flat.search(queries[: args.queries], 10)[1]
    del flat
    np.savez(work / "queries.npz", queries=queries[: args.queries], exact=exact)
    out = []
    nlist = default_nlist(n)
    train = min(n, args.train_per_cell * nlist)
    # the same seeded sample build_column_index draws
    sample = None if train == n else np.sort(np.random.default_rng(args.seed).choice(n, train, replace=False))
    for kind in args.kinds:
        # raw and package take turns, best of `repeats` each (one turn at 1M), so machine load hits both alike
        raw_s = package_s = float("inf")
        for _ in range(1 if n >= 1_000_000 else 2):
            raw, took = raw_build(kind, data, nlist, sample, args)
            raw_s = min(raw_s, took)
            del raw
            start = time.perf_counter()
            entry = build_column_index(rows, "fused_embeds", kind, nlist=nlist if kind == "ivf" else None,
                                       train_size=train if kind == "ivf" else None,
                                       ef_construction=args.ef_construction, seed=args.seed, show_progress=False)
            package_s = min(package_s, time.perf_counter() - start)
        manifest = IndexManifest(model_fingerprint="sha256:synthetic", model_id=None, embed_dim=args.dim,
                                 precision="float32", data_note=f"{n} synthetic vectors", num_rows=n, images=False)
        folder = work / f"index-{n}-{kind}"
        start = time.perf_counter()
        RetrievalIndex(rows, {"fused_embeds": entry}, manifest).save(folder, overwrite=True, show_progress=False)
        save_s = time.perf_counter() - start
        del entry
        proc = subprocess.run([sys.executable, __file__, "--child", str(folder), str(work / "queries.npz")],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        measured = json.loads(proc.stdout.strip().splitlines()[-1])
        raw_vectors = n * args.dim * 4
        row = {"n": n, "kind": kind, "build_s_raw_faiss": raw_s, "build_s_package": package_s,
               "build_ratio": package_s / raw_s if raw_s > 0 else None, "save_s": save_s,
               "folder_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
               "raw_vector_bytes": raw_vectors, **measured}
        row["peak_load_x_raw"] = row["peak_rss_above_baseline_bytes"] / raw_vectors
        out.append(row)
        print(f"n={n:,} {kind:>4}: build {package_s:.2f}s vs raw {raw_s:.2f}s ({row['build_ratio']:.2f}x), "
              f"load {row['load_s']:.2f}s, peak {row['peak_load_x_raw']:.2f}x raw, "
              f"p50/p99 {row['latency_ms_package']['p50']:.2f}/{row['latency_ms_package']['p99']:.2f} ms, "
              f"recall@10 {row['recall_at_10']:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    import _bench_utils as bu
    import faiss

    rows: list[dict[str, Any]] = []
    if args.append and args.output.is_file():
        rows = [r for r in json.loads(args.output.read_text())["results"] if r["n"] not in args.sizes]
    with tempfile.TemporaryDirectory(prefix="bench_index_folder.", dir=args.workdir) as tmp:
        for n in args.sizes:
            size_dir = Path(tmp) / str(n)
            size_dir.mkdir()
            rows.extend(run_size(n, args, size_dir))
    rows.sort(key=lambda r: (r["n"], ["flat", "ivf", "hnsw"].index(r["kind"])))
    headers = ["n", "kind", "build s (pkg)", "build s (raw)", "ratio", "load s", "peak x raw", "p50 ms", "p99 ms",
               "raw p50 ms", "filtered p50/p99 ms", "recall@10"]
    bu.print_table(headers, [[r["n"], r["kind"], r["build_s_package"], r["build_s_raw_faiss"], r["build_ratio"], r["load_s"],
                              r["peak_load_x_raw"], r["latency_ms_package"]["p50"], r["latency_ms_package"]["p99"],
                              r["latency_ms_raw_faiss"]["p50"],
                              f"{r['latency_ms_filtered']['p50']:.2f}/{r['latency_ms_filtered']['p99']:.2f}",
                              r["recall_at_10"]] for r in rows])
    machine = bu.machine_info()
    machine["faiss"] = faiss.__version__
    bu.write_json(args.output, {"benchmark": "index_folder", "config": {k: v for k, v in vars(args).items() if k != "child"},
                                "machine": machine, "results": rows})
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
