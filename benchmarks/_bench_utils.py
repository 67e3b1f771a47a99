"""Helpers shared by the benchmark scripts: synthetic studies, a word-level tokenizer, timing, machine info, JSON."""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the numbers came from: CPU, threads, load (the box may be shared), GPU if any, library versions."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def word_tokenizer(words: list[str], folder: str | os.PathLike) -> Any:
    """A BERT WordPiece tokenizer whose vocabulary holds `words` whole, so each word is exactly one token."""
    from transformers import BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + words) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    # transformers v5 builds the vocabulary through from_pretrained, not from the vocab_file argument
    return BertTokenizerFast.from_pretrained(str(folder))


def synthetic_words(count: int = 400) -> list[str]:
    rng = np.random.default_rng(12345)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, size=int(rng.integers(4, 10)))) for _ in range(count * 2)}
    return sorted(words)[:count]


def synthetic_image(rng: np.random.Generator, size: tuple[int, int] = (512, 512)) -> Any:
    """A smooth grey field with mild noise, RGB, as OpenI's 512 px PNGs are (decoding cost alike, content not)."""
    from PIL import Image

    coarse = rng.random((size[1] // 32 + 1, size[0] // 32 + 1))
    field = np.kron(coarse, np.ones((32, 32)))[: size[1], : size[0]]
    grey = np.clip(field * 180 + rng.normal(0, 6, size=(size[1], size[0])) + 30, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def synthetic_studies(n: int, words_per_report: int, seed: int = 0, image_size: tuple[int, int] = (512, 512)) -> Any:
    """A `datasets.Dataset` of `n` PNG-encoded images, reports of exactly `words_per_report` vocabulary words, labels."""
    import datasets

    rng = np.random.default_rng(seed)
    words = synthetic_words()
    images, reports = [], []
    for _ in range(n):
        buffer = io.BytesIO()
        synthetic_image(rng, image_size).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        reports.append(" ".join(rng.choice(words, size=words_per_report)))
    labels = [i % 2 for i in range(n)]
    features = datasets.Features(
        {"image": datasets.Image(), "report": datasets.Value("string"), "label": datasets.ClassLabel(names=["normal", "abnormal"])}
    )
    return datasets.Dataset.from_dict({"image": images, "report": reports, "label": labels}, features=features)


def timed(fn: Callable[[], Any], *, repeats: int, warmup: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write the results atomically (temp file beside the target, then rename)."""
    from cxr_mtclip.atomic import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
    return path


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.4f}"
    return str(value)


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)
