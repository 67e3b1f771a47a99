"""faiss-gpu search at 1M: flat and IVF inner-product indexes on the GPU, batched queries/s and recall@10.

    python benchmarks/bench_faiss_gpu.py                      # 1M x 512, needs faiss-gpu and a CUDA GPU
    python benchmarks/bench_faiss_gpu.py --rows 20000 --cpu   # the same code path on CPU (a dry run)

Synthetic clustered L2-normalised vectors (bench_faiss.py's generator). Flat (exact) and IVF (nlist =
`default_nlist`, nprobe swept) indexes are built on the GPU (`index_cpu_to_gpu`), then searched with `--queries`
queries in one batch; recall@10 is against the flat index. Writes JSON (--output). Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--cpu", action="store_true", help="run on CPU (dry run of the GPU path)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "faiss_gpu.json")
    args = parser.parse_args(argv)

    import faiss
    from bench_faiss import synthetic

    from cxr_mtclip.retrieval import default_nlist

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not args.cpu and gpus == 0:
        print("error: faiss sees no GPU (install faiss-gpu, e.g. `pip install faiss-gpu-cu12`, on a CUDA machine)",
              file=sys.stderr)
        return 3
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(16, args.rows // 1000), args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = synthetic(args.rows, args.dim, "clustered", rng, centres)
    queries = synthetic(args.queries, args.dim, "clustered", rng, centres)
    resources = None if args.cpu else faiss.StandardGpuResources()

    def to_device(index):
        return index if args.cpu else faiss.index_cpu_to_gpu(resources, 0, index)

    results = []
    start = time.perf_counter()
    flat = to_device(faiss.IndexFlatIP(args.dim))
    flat.add(data)
    build = time.perf_counter() - start
    flat.search(queries[:100], 10)  # warm-up
    start = time.perf_counter()
    _, exact = flat.search(queries, 10)
    seconds = time.perf_counter() - start
    results.append({"kind": "flat", "build_s": build, "queries_per_s": args.queries / seconds, "recall_at_10": 1.0})
    nlist = default_nlist(args.rows)
    start = time.perf_counter()
    cpu_ivf = faiss.index_factory(args.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf = to_device(cpu_ivf)
    ivf.train(data[rng.choice(args.rows, min(args.rows, 64 * nlist), replace=False)])
    ivf.add(data)
    build = time.perf_counter() - start
    for nprobe in (8, 32, 128):
        faiss.GpuParameterSpace().set_index_parameter(ivf, "nprobe", nprobe) if not args.cpu else \
            faiss.ParameterSpace().set_index_parameter(ivf, "nprobe", nprobe)
        start = time.perf_counter()
        _, found = ivf.search(queries, 10)
        seconds = time.perf_counter() - start
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), exact.tolist())]))
        results.append({"kind": "ivf", "nlist": nlist, "nprobe": nprobe, "build_s": build,
                        "queries_per_s": args.queries / seconds, "recall_at_10": recall})
    payload = {"benchmark": "faiss_gpu", "rows": args.rows, "dim": args.dim, "queries": args.queries,
               "device": "cpu" if args.cpu else "gpu", "faiss": faiss.__version__, "gpus": gpus, "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    for row in results:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
