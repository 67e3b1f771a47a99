"""Index build only: raw faiss vs `retrieval.store.build_column_index`, interleaved, with the package's stages timed.

    python benchmarks/bench_index_build.py 1000000 flat:2,ivf:1     # rows, then kind:repeats

N x 512 synthetic clustered unit vectors (bench_faiss.synthetic) are saved with `save_to_disk` (5 shards at 1M) and
loaded back memory-mapped. Per kind and repeat, raw faiss builds from the in-memory NumPy array (IVF trained on
the same seeded sample of 40 * nlist rows) and then the package builds from the Arrow column; the package's
stages are timed by wrapping its internals: reading the Arrow blocks, the unit-norm check, the present mask, the
IVF training-sample gather, `train` and `add` (the time not in a stage is sizing the flat store). Raw faiss does
not read the data (it is already in memory) nor check norms. Results: one JSON line per build, and
benchmarks/results/index_build_<N>.json (the figures of section 8: results/index_build.json). Section 8 of benchmarks/README.md.
"""
import json, os, sys, time, tempfile
from collections import defaultdict
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
SPEC = [k.split(":") for k in (sys.argv[2] if len(sys.argv) > 2 else "flat:2,ivf:2").split(",")]
DIM = 512
import faiss
import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features, List, Value, load_from_disk
from datasets.table import InMemoryTable
from bench_faiss import synthetic
import cxr_mtclip.retrieval.store as store
from cxr_mtclip.retrieval import default_nlist

print("faiss threads", faiss.omp_get_max_threads(), "load", os.getloadavg(), flush=True)
work = Path(tempfile.mkdtemp(prefix="bench_index_build."))
rng = np.random.default_rng(0)
centres = rng.standard_normal((max(16, N // 1000), DIM), dtype=np.float32)
centres /= np.linalg.norm(centres, axis=1, keepdims=True)
t = time.perf_counter(); data = synthetic(N, DIM, "clustered", rng, centres); print(f"gen {time.perf_counter()-t:.1f}s", flush=True)
features = Features({"uid": Value("string"), "fused_embeds": List(Value("float32"), length=DIM)})
table = pa.table({"uid": pa.array([f"s{i:07d}" for i in range(N)]),
                  "fused_embeds": pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), DIM)})
t = time.perf_counter()
Dataset(InMemoryTable(table.cast(features.arrow_schema)), info=DatasetInfo(features=features)).save_to_disk(str(work / "rows"))
del table
rows = load_from_disk(str(work / "rows")); print(f"save+load {time.perf_counter()-t:.1f}s", flush=True)

nlist = default_nlist(N); train = min(N, 40 * nlist)
sample = None if train == N else np.sort(np.random.default_rng(0).choice(N, train, replace=False))

# stage timers around the package's internals
T = defaultdict(float)
def timed(name, fn):
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            T[name] += time.perf_counter() - s
    return wrapper
def timed_gen(name, fn):
    def wrapper(*a, **k):
        it = fn(*a, **k)
        while True:
            s = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                T[name] += time.perf_counter() - s
                return
            T[name] += time.perf_counter() - s
            yield item
    return wrapper
store.check_unit_norm = timed("unit_norm", store.check_unit_norm)
store.column_blocks = timed_gen("arrow_blocks", store.column_blocks)
store._vectors_at = timed("sample_gather", store._vectors_at)
store._present = timed("present_mask", store._present)
real_factory = store._index_factory
def factory(*a, **k):
    index = real_factory(*a, **k)
    return Timed(index)
class Timed:
    def __init__(self, index): self.__dict__["_i"] = index
    def train(self, x):
        s = time.perf_counter(); self._i.train(x); T["train"] += time.perf_counter() - s
    def add(self, x):
        s = time.perf_counter(); self._i.add(x); T["add"] += time.perf_counter() - s
    def __getattr__(self, name): return getattr(self._i, name)
    def __setattr__(self, name, value): setattr(self._i, name, value)
store._index_factory = factory

def raw(kind):
    s = time.perf_counter(); st = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(DIM)
    else:
        index = faiss.index_factory(DIM, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        a = time.perf_counter(); x = data if sample is None else data[sample]; st["sample_gather"] = time.perf_counter() - a
        a = time.perf_counter(); index.train(x); st["train"] = time.perf_counter() - a
    a = time.perf_counter(); index.add(data); st["add"] = time.perf_counter() - a
    return time.perf_counter() - s, st

results = []
for kind, reps in SPEC:
    for rep in range(int(reps)):
        for path in ("raw", "package"):
            la = os.getloadavg()[0]
            if path == "raw":
                took, st = raw(kind)
            else:
                T.clear(); s = time.perf_counter()
                store.build_column_index(rows, "fused_embeds", kind, nlist=nlist if kind == "ivf" else None,
                                         train_size=train if kind == "ivf" else None, seed=0, show_progress=False)
                took, st = time.perf_counter() - s, {k: round(v, 2) for k, v in T.items()}
            st = {k: round(v, 2) for k, v in st.items()}
            row = {"n": N, "kind": kind, "rep": rep, "path": path, "s": round(took, 2), "load1": la, "stages": st}
            results.append(row); print(json.dumps(row), flush=True)
(Path(__file__).resolve().parent / "results" / f"index_build_{N}.json").write_text(json.dumps(results, indent=1))
import shutil; shutil.rmtree(work)
