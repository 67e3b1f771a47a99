"""Sustained queries/s through the search app's API: `cxr-mtclip serve` in its own process, 8 `gradio_client`
clients on loopback, each sending report queries until the count or the time limit is reached.

    nice -n 10 python benchmarks/bench_app.py                       # 10k rows, 8 clients, 400 queries / 120 s max
    nice -n 10 python benchmarks/bench_app.py --rows 100000 --clients 8 --queries 800

The gallery: `--rows` synthetic studies (64 px PNG thumbnails, reports, labels, views) with random unit
embeddings stamped with the fingerprint of a saved demo-architecture model (the tiny 2-layer towers, random
weights), indexed flat. So the figure is the app's own cost (HTTP, gradio's queue, query embedding with the
tiny model, FAISS search, row lookup, thumbnail PNGs for the gallery, JSON), not BiomedCLIP's: with the
full-size text tower add its per-report time (bench_embed.py: ~0.3 s/report on this CPU).
Reported: queries/s over the whole run, client-side latency p50/p99, and the server's own search latency
(its `latency_ms` log lines). Results: benchmarks/results/app.json. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "app.json"
WORDS = ["normal", "heart", "size", "lungs", "clear", "no", "acute", "disease", "pleural", "effusion", "small", "left",
         "right", "cardiomegaly", "opacity", "lower", "lobe", "atelectasis", "edema", "pneumothorax"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queries", type=int, default=400, help="total queries (bounded count)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long (bounded time)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def make_index(root: Path, rows: int, seed: int) -> Path:
    """A saved demo model and an index folder whose vectors carry that model's fingerprint."""
    import pyarrow as pa
    import torch
    from datasets import ClassLabel, Dataset, Features, List, Value
    from datasets import Image as ImageFeature
    from PIL import Image

    from cxr_mtclip import (
        CxrMtClipConfig,
        CxrMtClipModel,
        CxrMtClipProcessor,
        build_wordpiece_tokenizer,
    )
    from cxr_mtclip.retrieval import RetrievalIndex, model_fingerprint

    tokenizer = build_wordpiece_tokenizer([" ".join(WORDS)] * 4, root / "tok", vocab_size=200)
    config = CxrMtClipConfig.from_registry("demo", vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = CxrMtClipModel(config).eval()
    model.save_pretrained(root / "model")
    CxrMtClipProcessor.from_config(config, tokenizer).save_pretrained(root / "model")
    rng = np.random.default_rng(seed)
    thumbs = []
    for _ in range(32):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, format="PNG")
        thumbs.append(buffer.getvalue())
    dim = config.embed_dim

    def unit(n: int) -> pa.Array:
        v = rng.standard_normal((n, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim)

    features = Features({
        "uid": Value("string"), "image": ImageFeature(), "report": Value("string"),
        "label": ClassLabel(names=["normal", "abnormal"]), "view": Value("string"),
        "image_embeds": List(Value("float32"), length=dim), "text_embeds": List(Value("float32"), length=dim),
        "fused_embeds": List(Value("float32"), length=dim), "embeds_model": Value("string"),
    })
    table = {
        "uid": [f"s{i:07d}" for i in range(rows)],
        "image": [{"bytes": thumbs[i % 32], "path": None} for i in range(rows)],
        "report": [" ".join(rng.choice(WORDS, 12)) for _ in range(rows)],
        "label": rng.integers(0, 2, rows).tolist(), "view": rng.choice(["PA", "AP"], rows).tolist(),
    }
    dataset = Dataset.from_dict(table, features=Features({k: features[k] for k in table}))
    for column in ("image_embeds", "text_embeds", "fused_embeds"):
        dataset = dataset.add_column(column, unit(rows), feature=features[column])
    dataset = dataset.add_column("embeds_model", [model_fingerprint(model)] * rows, feature=Value("string"))
    RetrievalIndex.build(None, None, dataset, show_progress=False, model_id=str(root / "model")).save(
        root / "index", show_progress=False)
    return root / "index"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import _bench_utils as bu

    with tempfile.TemporaryDirectory(prefix="bench_app.") as tmp:
        index = make_index(Path(tmp), args.rows, args.seed)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "cxr_mtclip.cli", "serve", "--index", str(index), "--port",
                                   str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log: list[str] = []
        reader = threading.Thread(target=lambda: log.extend(iter(server.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            deadline = time.time() + 180
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        raise RuntimeError("the app did not start:\n" + "".join(log[-40:])) from None
                    time.sleep(0.5)
            result = drive(f"http://127.0.0.1:{port}/", args)
        finally:
            server.terminate()
            server.wait(timeout=60)
            reader.join(timeout=5)
    server_ms = [float(m.group(1)) for line in log if " search " in line and "status=ok" in line
                 for m in [re.search(r"latency_ms=([\d.]+)", line)] if m]
    result["server_search_latency_ms"] = {"p50": float(np.percentile(server_ms, 50)), "p99": float(np.percentile(server_ms, 99)),
                                          "count": len(server_ms)} if server_ms else None
    bu.print_table(["rows", "clients", "queries", "errors", "seconds", "queries/s", "client p50 ms", "client p99 ms",
                    "server p50 ms"],
                   [[args.rows, args.clients, result["completed"], result["errors"], result["seconds"], result["queries_per_s"],
                     result["client_latency_ms"]["p50"], result["client_latency_ms"]["p99"],
                     (result["server_search_latency_ms"] or {}).get("p50")]])
    bu.write_json(args.output, {"benchmark": "app", "config": vars(args), "machine": bu.machine_info(), "result": result})
    print(f"-> {args.output}")
    return 0


def drive(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """`args.clients` threads, one gradio_client each, until `args.queries` are done or `args.max_seconds` pass."""
    from gradio_client import Client

    lock = threading.Lock()
    state: dict[str, Any] = {"sent": 0, "errors": 0, "messages": []}
    latencies: list[float] = []
    stop_at = time.perf_counter() + args.max_seconds
    # download_files=False: a client gets the thumbnails' URLs (what a browser fetches lazily), not the files
    clients = [Client(url, verbose=False, download_files=False) for _ in range(args.clients)]
    rng = np.random.default_rng(args.seed)
    reports = [" ".join(rng.choice(WORDS, 10)) for _ in range(64)]

    def work(client: Any, number: int) -> None:
        while True:
            with lock:
                if state["sent"] >= args.queries or time.perf_counter() > stop_at:
                    return
                state["sent"] += 1
                report = reports[state["sent"] % len(reports)]
            start = time.perf_counter()
            try:
                client.predict(None, report, "auto", args.k, "any", [], api_name="/search")
            except Exception as err:  # counted; a benchmark keeps going
                with lock:
                    state["errors"] += 1
                    state["messages"].append(f"{type(err).__name__}: {err}"[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"completed": len(latencies), "errors": state["errors"], "error_messages": sorted(set(state["messages"]))[:5],
            "seconds": seconds,
            "queries_per_s": len(latencies) / seconds,
            "client_latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}}


if __name__ == "__main__":
    sys.exit(main())
